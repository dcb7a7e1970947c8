//! Attachment files: the host writes `inbox/<message_id>/<name>` for the agent and reads
//! `outbox/<message_id>/<name>` the agent produced.
//!
//! In the split layout `inbox/` is in the host's folder and `outbox/` in the container's area;
//! in the single layout (an older host's folder) both are in a folder the container writes.
//! So every step walks from a folder descriptor with `openat` and `O_NOFOLLOW`, never through
//! a path that could have been swapped for a link, refuses names that could escape the
//! message folder, never overwrites an existing file, never blocks on a FIFO, and bounds what
//! it reads. The host cannot be made to write or read outside the session folder.

use crate::error::{Result, StoreError};
use crate::validate::check_id;
use sessionbus_schema::{At, DbError, Role};
use std::ffi::CString;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Largest attachment read from an outbox (32 MiB).
pub const MAX_ATTACHMENT_BYTES: u64 = 32 * 1024 * 1024;

/// Most files one message's outbox folder may hold.
pub const MAX_ATTACHMENT_FILES: usize = 32;

/// Most bytes one message's attachments may hold together (64 MiB).
pub const MAX_ATTACHMENTS_TOTAL_BYTES: u64 = 64 * 1024 * 1024;

/// One attachment read from an outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// File name inside `outbox/<message_id>/`.
    pub name: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

fn at(path: &Path, op: &'static str) -> At {
    At::new(path, Role::Host, op)
}

fn io(path: &Path, op: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Db(DbError::Io {
        at: at(path, op),
        source,
    })
}

fn cstr(path: &Path, op: &'static str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| StoreError::InvalidId {
        at: at(path, op),
        id: String::from_utf8_lossy(s).into_owned(),
        reason: "it contains NUL",
    })
}

/// Opens a directory with `O_NOFOLLOW`: a symlink in its place is refused.
fn open_dir(
    parent: Option<&OwnedFd>,
    name: &Path,
    shown: &Path,
    op: &'static str,
) -> Result<OwnedFd> {
    let c = cstr(shown, op, name.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is NUL-terminated; the fd (if any) is open for the duration of the call.
    let fd = unsafe {
        match parent {
            Some(p) => libc::openat(p.as_raw_fd(), c.as_ptr(), flags),
            None => libc::open(c.as_ptr(), flags),
        }
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => StoreError::Db(DbError::UnsafePath {
                at: at(shown, op),
                detail: "expected a folder, found a symbolic link or a file".into(),
            }),
            _ => io(shown, op, e),
        });
    }
    // SAFETY: `fd` is a freshly opened descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens (creating when missing) the folder `name` under `parent`, refusing links.
fn open_or_create_dir(
    parent: &OwnedFd,
    name: &str,
    shown: &Path,
    op: &'static str,
) -> Result<OwnedFd> {
    let c = cstr(shown, op, name.as_bytes())?;
    // SAFETY: valid fd and NUL-terminated name.
    let r = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(io(shown, op, e));
        }
    }
    open_dir(Some(parent), Path::new(name), shown, op)
}

fn check_name(path: &Path, op: &'static str, name: &str) -> Result<()> {
    check_id(|| at(path, op), name)
}

/// A file name must be one plain path component: not empty, not `.` or `..`, no `/`, NUL or
/// control characters (`report..v2.pdf` is fine, unlike in ids).
fn check_file_name(path: &Path, op: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a parent-folder reference")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.chars().any(|c| c.is_control()) {
        Some("it contains NUL or a control character")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::InvalidId {
            at: at(path, op),
            id: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Writes an attachment for the agent at `inbox/<message_id>/<name>` under `session_dir`.
/// Refuses a name or id that could escape its folder, a symlink anywhere on the way, and an
/// existing file (nothing is overwritten). Returns the file's path.
pub fn write_inbox(
    session_dir: &Path,
    message_id: &str,
    name: &str,
    bytes: &[u8],
) -> Result<PathBuf> {
    const OP: &str = "write inbox attachment";
    let target = session_dir.join("inbox").join(message_id).join(name);
    check_name(&target, OP, message_id)?;
    check_file_name(&target, OP, name)?;
    let session = open_dir(None, session_dir, session_dir, OP)?;
    let inbox = open_or_create_dir(&session, "inbox", &session_dir.join("inbox"), OP)?;
    let folder = open_or_create_dir(&inbox, message_id, &target, OP)?;
    let c = cstr(&target, OP, name.as_bytes())?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: valid fd and NUL-terminated name; mode is a plain integer.
    let fd = unsafe { libc::openat(folder.as_raw_fd(), c.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ELOOP) => StoreError::Db(DbError::UnsafePath {
                at: at(&target, OP),
                detail: "a file or link already exists there; attachments are never overwritten"
                    .into(),
            }),
            _ => io(&target, OP, e),
        });
    }
    // SAFETY: freshly opened descriptor we own.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes).map_err(|e| io(&target, OP, e))?;
    file.sync_all().map_err(|e| io(&target, OP, e))?;
    Ok(target)
}

/// Reads every regular file in `outbox/<message_id>/` under `container_dir` (the container's
/// writable area), sorted by name.
///
/// Everything there is the container's to plant, so the walk goes through folder descriptors
/// with `O_NOFOLLOW | O_NONBLOCK` (see `sessionbus_schema::untrusted::fs`) and is bounded
/// before anything is read: at most [`MAX_ATTACHMENT_FILES`] names, each a regular file of at
/// most [`MAX_ATTACHMENT_BYTES`], together at most [`MAX_ATTACHMENTS_TOTAL_BYTES`], sizes
/// taken from `st_size` (a sparse file costs what it claims to hold). A symlink, FIFO, socket,
/// device or folder among them, or a limit crossed, is an error naming it; a missing folder
/// means no attachments.
pub fn read_outbox(container_dir: &Path, message_id: &str) -> Result<Vec<Attachment>> {
    use sessionbus_schema::untrusted::{fs_error, UntrustedDir};
    const OP: &str = "read outbox attachments";
    let folder_path = container_dir.join("outbox").join(message_id);
    check_name(&folder_path, OP, message_id)?;
    let fs_err = |e| StoreError::Db(fs_error(at(&folder_path, OP), e));
    let area = UntrustedDir::open(container_dir).map_err(fs_err)?;
    let folder = match area
        .open_subdir(OsStr::new("outbox"))
        .and_then(|outbox| outbox.open_subdir(OsStr::new(message_id)))
    {
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        other => other.map_err(fs_err)?,
    };
    let mut names = folder
        .names(MAX_ATTACHMENT_FILES)
        .map_err(fs_err)?
        .ok_or_else(|| StoreError::AttachmentsTooLarge {
            at: at(&folder_path, OP),
            detail: format!("more than {MAX_ATTACHMENT_FILES} files"),
        })?;
    names.sort();
    let mut opened = Vec::with_capacity(names.len());
    let mut total: u64 = 0;
    for name in names {
        let path = folder_path.join(&name);
        let text = name.to_str().ok_or_else(|| {
            StoreError::Db(DbError::UnsafePath {
                at: at(&path, OP),
                detail: "the file name is not UTF-8".into(),
            })
        })?;
        check_file_name(&path, OP, text)?;
        let (file, info) = folder
            .open_regular(&name)
            .map_err(|e| StoreError::Db(fs_error(at(&path, OP), e)))?;
        if info.size > MAX_ATTACHMENT_BYTES {
            return Err(StoreError::AttachmentsTooLarge {
                at: at(&path, OP),
                detail: format!(
                    "{} bytes, over the {MAX_ATTACHMENT_BYTES}-byte limit per file",
                    info.size
                ),
            });
        }
        total = total.saturating_add(info.size);
        if total > MAX_ATTACHMENTS_TOTAL_BYTES {
            return Err(StoreError::AttachmentsTooLarge {
                at: at(&folder_path, OP),
                detail: format!("over {MAX_ATTACHMENTS_TOTAL_BYTES} bytes in all"),
            });
        }
        opened.push((text.to_owned(), file, info.size));
    }
    let mut out = Vec::with_capacity(opened.len());
    for (name, file, size) in opened {
        let path = folder_path.join(&name);
        // Read at most what fstat promised (the file may grow meanwhile: the rest is ignored).
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| io(&path, OP, e))?;
        out.push(Attachment { name, bytes });
    }
    Ok(out)
}
