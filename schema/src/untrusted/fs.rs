//! Reaching names inside a folder the container can write, without following or blocking.
//!
//! Every name in such a folder is the attacker's choice: a symlink to a host file, a FIFO that
//! blocks an `open(O_RDONLY)` forever, a device, a socket, a directory, or a name that is
//! renamed between a check and a use. So nothing here checks a path and then opens it again by
//! path. A folder is opened once as a descriptor ([`UntrustedDir`]), and each name is reached
//! relative to it with `openat(O_NOFOLLOW | O_NONBLOCK)`; the opened descriptor itself is then
//! checked with `fstat`, so what is read is exactly what was checked.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a name in an untrusted folder turned out to be (from `lstat`/`fstat`, never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe: an open for reading would block until a writer comes.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Something `st_mode` does not name.
    Other,
}

impl NodeKind {
    fn from_mode(mode: libc::mode_t) -> NodeKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => NodeKind::Regular,
            libc::S_IFDIR => NodeKind::Directory,
            libc::S_IFLNK => NodeKind::Symlink,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            _ => NodeKind::Other,
        }
    }

    /// How the kind reads in an error message ("a FIFO", "a symbolic link").
    pub fn describe(self) -> &'static str {
        match self {
            NodeKind::Regular => "a regular file",
            NodeKind::Directory => "a directory",
            NodeKind::Symlink => "a symbolic link",
            NodeKind::Fifo => "a FIFO",
            NodeKind::Socket => "a socket",
            NodeKind::CharDevice => "a character device",
            NodeKind::BlockDevice => "a block device",
            NodeKind::Other => "not a regular file",
        }
    }
}

/// What `lstat` says about one name, the fields the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// What the name is.
    pub kind: NodeKind,
    /// `st_size` in bytes: the apparent size, which is what a sparse file costs to read.
    pub size: u64,
    /// `st_mtime` in milliseconds since the Unix epoch (negative before it).
    pub mtime_ms: i64,
}

/// Why a name in an untrusted folder could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UntrustedFsError {
    /// The name is something other than what the caller needs (a FIFO or a symlink where a
    /// regular file belongs, say). Nothing was read through it.
    #[error("{path}: refusing it: it is {}", found.describe())]
    WrongKind {
        /// The full path, for messages.
        path: PathBuf,
        /// What it is.
        found: NodeKind,
    },
    /// The name cannot be a single entry of a folder (empty, `.`, `..`, a `/` or a NUL in it).
    #[error("{path}: refusing it: {reason}")]
    BadName {
        /// The full path, for messages.
        path: PathBuf,
        /// Which rule the name breaks.
        reason: &'static str,
    },
    /// The system refused an operation (missing, permission, I/O).
    #[error("{path}: {source}")]
    Io {
        /// The full path, for messages.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

impl UntrustedFsError {
    /// True when the name does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, UntrustedFsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            UntrustedFsError::WrongKind { path, .. }
            | UntrustedFsError::BadName { path, .. }
            | UntrustedFsError::Io { path, .. } => path,
        }
    }
}

/// A folder the container can write, held open as a descriptor. Names inside it are reached
/// relative to the descriptor, so renaming or replacing the folder's own path afterwards does
/// not redirect anything; the folder itself is opened with `O_NOFOLLOW`, so it cannot be a
/// planted symlink either.
#[derive(Debug)]
pub struct UntrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Flags for every descriptor opened here: never follow the last component, never block on a
/// FIFO or a device, never leak into a child process, never become a controlling terminal.
const SAFE_OPEN: libc::c_int =
    libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;

fn cstring(path: &Path, bytes: &[u8]) -> Result<CString, UntrustedFsError> {
    CString::new(bytes).map_err(|_| UntrustedFsError::BadName {
        path: path.to_path_buf(),
        reason: "it contains a NUL byte",
    })
}

fn last_os_error(path: &Path) -> UntrustedFsError {
    UntrustedFsError::Io {
        path: path.to_path_buf(),
        source: io::Error::last_os_error(),
    }
}

fn fstat_fd(fd: RawFd, path: &Path) -> Result<libc::stat, UntrustedFsError> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor owned by the caller; `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(last_os_error(path));
    }
    Ok(st)
}

fn info_of(st: &libc::stat) -> NodeInfo {
    NodeInfo {
        kind: NodeKind::from_mode(st.st_mode),
        size: u64::try_from(st.st_size).unwrap_or(0),
        mtime_ms: st
            .st_mtime
            .saturating_mul(1000)
            .saturating_add(st.st_mtime_nsec / 1_000_000),
    }
}

/// Checks that `name` is one entry of a folder: no separator, not `.` or `..`, no NUL.
pub fn check_entry_name(dir: &Path, name: &OsStr) -> Result<(), UntrustedFsError> {
    let bytes = name.as_bytes();
    let reason = if bytes.is_empty() {
        Some("the name is empty")
    } else if bytes == b"." || bytes == b".." {
        Some("the name refers to a folder, not an entry")
    } else if bytes.contains(&b'/') {
        Some("the name contains a path separator")
    } else if bytes.contains(&0) {
        Some("the name contains a NUL byte")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(UntrustedFsError::BadName {
            path: dir.join(name),
            reason,
        }),
        None => Ok(()),
    }
}

impl UntrustedDir {
    /// Opens the folder at `path` (the last component must be a real folder, not a link).
    /// The components before it are the host's own folders, trusted by the caller.
    pub fn open(path: &Path) -> Result<UntrustedDir, UntrustedFsError> {
        let c = cstring(path, path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated path.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | SAFE_OPEN) };
        if fd < 0 {
            return Err(Self::classify_open_failure(
                path,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` was just returned by open() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(UntrustedDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// `O_DIRECTORY | O_NOFOLLOW` fails with `ENOTDIR` or `ELOOP` for anything but a real
    /// folder: say what it was instead.
    fn classify_open_failure(path: &Path, e: io::Error) -> UntrustedFsError {
        if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) {
            if let Ok(m) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::MetadataExt;
                return UntrustedFsError::WrongKind {
                    path: path.to_path_buf(),
                    found: NodeKind::from_mode(m.mode() as libc::mode_t),
                };
            }
        }
        UntrustedFsError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }

    /// The folder's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder's descriptor, taken out of this value.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The descriptor of the folder.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A new descriptor for the same folder (for an owner that outlives this value).
    pub fn try_clone(&self) -> Result<UntrustedDir, UntrustedFsError> {
        Ok(UntrustedDir {
            fd: self.fd.try_clone().map_err(|source| UntrustedFsError::Io {
                path: self.path.clone(),
                source,
            })?,
            path: self.path.clone(),
        })
    }

    /// `lstat` of `name` in this folder: `None` when it does not exist. Never follows a link
    /// and never opens the name, so a FIFO cannot block it.
    pub fn entry(&self, name: &OsStr) -> Result<Option<NodeInfo>, UntrustedFsError> {
        check_entry_name(&self.path, name)?;
        let full = self.path.join(name);
        let c = cstring(&full, name.as_bytes())?;
        // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open, `c` is NUL-terminated, `st` is a valid out-pointer.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(UntrustedFsError::Io {
                path: full,
                source: e,
            });
        }
        Ok(Some(info_of(&st)))
    }

    /// Opens `name` for reading, refusing anything but a regular file: the open does not
    /// follow a link and does not block on a FIFO, and the opened descriptor is checked with
    /// `fstat`. Returns the file (in blocking mode again) and what it is.
    pub fn open_regular(&self, name: &OsStr) -> Result<(File, NodeInfo), UntrustedFsError> {
        let (fd, info) = self.open_at(name, libc::O_RDONLY)?;
        if info.kind != NodeKind::Regular {
            return Err(UntrustedFsError::WrongKind {
                path: self.path.join(name),
                found: info.kind,
            });
        }
        clear_nonblock(&fd, &self.path.join(name))?;
        Ok((File::from(fd), info))
    }

    /// Opens the sub-folder `name` (a real folder, not a link to one).
    pub fn open_subdir(&self, name: &OsStr) -> Result<UntrustedDir, UntrustedFsError> {
        let full = self.path.join(name);
        match self.open_at(name, libc::O_RDONLY | libc::O_DIRECTORY) {
            Ok((fd, _)) => Ok(UntrustedDir { fd, path: full }),
            Err(UntrustedFsError::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) =>
            {
                let found = self.entry(name)?.map_or(NodeKind::Other, |info| info.kind);
                Err(UntrustedFsError::WrongKind { path: full, found })
            }
            Err(e) => Err(e),
        }
    }

    fn open_at(
        &self,
        name: &OsStr,
        flags: libc::c_int,
    ) -> Result<(OwnedFd, NodeInfo), UntrustedFsError> {
        check_entry_name(&self.path, name)?;
        let full = self.path.join(name);
        let c = cstring(&full, name.as_bytes())?;
        // SAFETY: the folder descriptor is open and `c` is NUL-terminated.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c.as_ptr(), flags | SAFE_OPEN) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // O_NOFOLLOW on a symlink fails with ELOOP: name the link for what it is.
            if e.raw_os_error() == Some(libc::ELOOP) {
                return Err(UntrustedFsError::WrongKind {
                    path: full,
                    found: NodeKind::Symlink,
                });
            }
            return Err(UntrustedFsError::Io {
                path: full,
                source: e,
            });
        }
        // SAFETY: `fd` was just returned by openat() and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat_fd(fd.as_raw_fd(), &full)?;
        Ok((fd, info_of(&st)))
    }

    /// The names in this folder, at most `limit` of them (`.` and `..` left out). Returns
    /// `None` when the folder holds more than `limit` names: a caller that must bound its work
    /// refuses such a folder instead of reading a million names.
    pub fn names(&self, limit: usize) -> Result<Option<Vec<std::ffi::OsString>>, UntrustedFsError> {
        // fdopendir takes ownership of its descriptor: give it a new open of the folder
        // (`.` relative to ours), so the listing has its own offset and starts at the top.
        // SAFETY: the folder descriptor is open and the name is a NUL-terminated literal.
        let raw = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(last_os_error(&self.path));
        }
        // SAFETY: `raw` is an open directory descriptor we own; fdopendir takes it over.
        let dirp = unsafe { libc::fdopendir(raw) };
        if dirp.is_null() {
            let e = last_os_error(&self.path);
            // SAFETY: fdopendir failed, so `raw` is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        let mut out = Vec::new();
        let result = loop {
            // SAFETY: `dirp` is a valid DIR* until closedir below.
            let ent = unsafe { libc::readdir(dirp) };
            if ent.is_null() {
                break Ok(Some(out));
            }
            // SAFETY: readdir returned a valid dirent whose d_name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            if out.len() >= limit {
                break Ok(None);
            }
            out.push(OsStr::from_bytes(bytes).to_os_string());
        };
        // SAFETY: `dirp` is valid and closed exactly once (this also closes `raw`).
        unsafe { libc::closedir(dirp) };
        result
    }
}

/// Puts a descriptor opened with `O_NONBLOCK` back into blocking mode (regular files ignore
/// the flag, but a caller handed the `File` should not have to know it was ever set).
fn clear_nonblock(fd: &OwnedFd, path: &Path) -> Result<(), UntrustedFsError> {
    // SAFETY: `fd` is an open descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(last_os_error(path));
    }
    // SAFETY: as above; only the O_NONBLOCK bit changes.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(last_os_error(path));
    }
    Ok(())
}

/// The parent folder and the last component of `path`, for reaching a file in an untrusted
/// folder through [`UntrustedDir`].
pub fn split_parent(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some((parent, name))
}

/// Opens the regular file at `path`, whose folder the container may write: the folder and the
/// file are reached without following links and without blocking (see [`UntrustedDir`]).
pub fn open_regular_file(path: &Path) -> Result<(File, NodeInfo), UntrustedFsError> {
    let (parent, name) = split_parent(path).ok_or_else(|| UntrustedFsError::BadName {
        path: path.to_path_buf(),
        reason: "the path has no file name",
    })?;
    UntrustedDir::open(parent)?.open_regular(name)
}

/// Reads up to `buf.len()` bytes from the start of the regular file at `path`, reached as
/// [`open_regular_file`] reaches it (no link followed, no FIFO blocked on, checked with
/// `fstat`), and returns how many were read. The descriptor stays non-blocking, which a regular
/// file ignores: two system calls fewer than [`open_regular_file`] for callers that read a
/// header and close (the host's sweep reads two per session per pass).
pub fn read_regular_prefix(path: &Path, buf: &mut [u8]) -> Result<usize, UntrustedFsError> {
    let (parent, name) = split_parent(path).ok_or_else(|| UntrustedFsError::BadName {
        path: path.to_path_buf(),
        reason: "the path has no file name",
    })?;
    let dir = UntrustedDir::open(parent)?;
    let (fd, info) = dir.open_at(name, libc::O_RDONLY)?;
    if info.kind != NodeKind::Regular {
        return Err(UntrustedFsError::WrongKind {
            path: path.to_path_buf(),
            found: info.kind,
        });
    }
    let mut file = File::from(fd);
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match io::Read::read(&mut file, rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(UntrustedFsError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(n)
}

/// `lstat` of `path` (never followed, never opened): `None` when it does not exist.
pub fn entry_info(path: &Path) -> Result<Option<NodeInfo>, UntrustedFsError> {
    let (parent, name) = split_parent(path).ok_or_else(|| UntrustedFsError::BadName {
        path: path.to_path_buf(),
        reason: "the path has no file name",
    })?;
    match UntrustedDir::open(parent) {
        Ok(dir) => dir.entry(name),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn a_prefix_is_read_from_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello world").unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(
            read_regular_prefix(&dir.path().join("f"), &mut buf).unwrap(),
            5
        );
        assert_eq!(&buf, b"hello");
        let mut big = [0u8; 64];
        assert_eq!(
            read_regular_prefix(&dir.path().join("f"), &mut big).unwrap(),
            11
        );
        mkfifo(&dir.path().join("p"));
        assert!(matches!(
            read_regular_prefix(&dir.path().join("p"), &mut buf),
            Err(UntrustedFsError::WrongKind {
                found: NodeKind::Fifo,
                ..
            })
        ));
        std::os::unix::fs::symlink(dir.path().join("f"), dir.path().join("l")).unwrap();
        assert!(matches!(
            read_regular_prefix(&dir.path().join("l"), &mut buf),
            Err(UntrustedFsError::WrongKind {
                found: NodeKind::Symlink,
                ..
            })
        ));
        assert!(read_regular_prefix(&dir.path().join("missing"), &mut buf)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn a_regular_file_opens_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"hello").unwrap();
        let d = UntrustedDir::open(dir.path()).unwrap();
        let (mut f, info) = d.open_regular(OsStr::new("f")).unwrap();
        assert_eq!(info.kind, NodeKind::Regular);
        assert_eq!(info.size, 5);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn fifos_symlinks_and_folders_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join("fifo"));
        std::fs::write(dir.path().join("target"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let d = UntrustedDir::open(dir.path()).unwrap();
        for (name, kind) in [
            ("fifo", NodeKind::Fifo),
            ("link", NodeKind::Symlink),
            ("sub", NodeKind::Directory),
        ] {
            match d.open_regular(OsStr::new(name)) {
                Err(UntrustedFsError::WrongKind { found, .. }) => assert_eq!(found, kind, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(
            d.entry(OsStr::new("link")).unwrap().unwrap().kind,
            NodeKind::Symlink
        );
        assert_eq!(d.entry(OsStr::new("missing")).unwrap(), None);
    }

    #[test]
    fn a_symlinked_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("alias")).unwrap();
        match UntrustedDir::open(&dir.path().join("alias")) {
            Err(UntrustedFsError::WrongKind { found, .. }) => assert_eq!(found, NodeKind::Symlink),
            other => panic!("{other:?}"),
        }
        let d = UntrustedDir::open(dir.path()).unwrap();
        assert!(matches!(
            d.open_subdir(OsStr::new("alias")),
            Err(UntrustedFsError::WrongKind {
                found: NodeKind::Symlink,
                ..
            })
        ));
        assert!(d.open_subdir(OsStr::new("real")).is_ok());
    }

    #[test]
    fn names_that_are_not_one_entry_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = UntrustedDir::open(dir.path()).unwrap();
        for bad in ["", ".", "..", "a/b"] {
            assert!(
                matches!(
                    d.open_regular(OsStr::new(bad)),
                    Err(UntrustedFsError::BadName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn listing_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        }
        let d = UntrustedDir::open(dir.path()).unwrap();
        assert_eq!(d.names(10).unwrap().unwrap().len(), 5);
        assert_eq!(d.names(5).unwrap().unwrap().len(), 5);
        assert_eq!(d.names(4).unwrap(), None);
        // A second listing starts over.
        assert_eq!(d.names(10).unwrap().unwrap().len(), 5);
    }
}
