//! The default Unix VFS with one change: whether a rollback journal exists is asked of the
//! file server, not of the kernel's cache of names.
//!
//! Before each read transaction SQLite checks for a hot journal by `stat`-ing `<db>-journal`.
//! Across a FUSE mount (bindfs, virtiofs, Docker Desktop's file sharing) the kernel keeps each
//! looked-up name for the mount's entry timeout (1 s by default). The host's commit creates
//! the journal and deletes it a few milliseconds later, on its side of the mount: a container
//! that looked during the commit keeps seeing the journal after it is gone. SQLite then tries
//! to open it, fails, takes that for a hot journal ("assume hot, recovery will sort it out")
//! and a read-only connection stops with `SQLITE_READONLY_ROLLBACK`, poll after poll, until
//! the cached name expires: that second was the p99 of a message's wait across the mount.
//!
//! Here, when the Unix VFS's check says a journal is there, the journal is opened to confirm it
//! (`O_RDONLY | O_NONBLOCK | O_NOFOLLOW`). An open goes to the file server even through a cached
//! name, and the server answers from the real folder: `ENOENT` means the journal is gone,
//! whatever the cache says. Any other failure (a link, no permission) leaves the Unix VFS's
//! answer as it was, and so does the usual case of no journal at all, at the usual cost. A
//! journal that is really there still counts, so a writer that died mid-commit is still
//! reported. On a local folder the answer is the same as `stat`'s.
//!
//! Every other method is the Unix VFS's own: the struct is a copy of it with another name and
//! one function pointer replaced, so its `pAppData` (which the Unix methods read) is the same.

use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int, CStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

/// The VFS's registered name (`vfs=` in a reader's URI).
pub(crate) const VFS_NAME: &CStr = c"sessionbus-journal-probe";

/// The Unix VFS's own existence check, which this one falls back to.
type AccessFn =
    unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int, *mut c_int) -> c_int;

struct Registered {
    default_access: AccessFn,
}

static VFS: OnceLock<Option<Registered>> = OnceLock::new();

/// Registers the VFS on first use; false when SQLite has no default VFS or refused this one
/// (the caller then opens with the default VFS, as before).
pub(crate) fn available() -> bool {
    VFS.get_or_init(register).is_some()
}

fn register() -> Option<Registered> {
    // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS or NULL; no preconditions.
    let default = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
    if default.is_null() {
        return None;
    }
    // SAFETY: non-null, and SQLite's registered VFS structs live for the process.
    let mut copy: ffi::sqlite3_vfs = unsafe { *default };
    let default_access = copy.xAccess?;
    copy.pNext = std::ptr::null_mut();
    copy.zName = VFS_NAME.as_ptr();
    copy.xAccess = Some(x_access);
    let ptr: *mut ffi::sqlite3_vfs = Box::leak(Box::new(copy));
    // The function pointer must be in place before SQLite can call x_access.
    let registered = Registered { default_access };
    // SAFETY: `ptr` points to a valid, 'static VFS struct; 0 = not the default VFS.
    let rc = unsafe { ffi::sqlite3_vfs_register(ptr, 0) };
    (rc == ffi::SQLITE_OK).then_some(registered)
}

/// What the existence check found by opening the name.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// The server says the name is not there.
    Absent,
    /// Opened: there, with this many bytes (a regular file) or not a regular file.
    Present { regular: bool, len: u64 },
    /// Anything else: the Unix VFS decides.
    Undecided,
}

fn probe(path: &CStr) -> Probe {
    let name = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(name);
    match opened {
        Ok(file) => match file.metadata() {
            Ok(meta) => Probe::Present {
                regular: meta.is_file(),
                len: meta.len(),
            },
            Err(_) => Probe::Undecided,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::Absent,
        Err(_) => Probe::Undecided,
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let Some(Some(reg)) = VFS.get() else {
        return ffi::SQLITE_ERROR;
    };
    let fallback = || {
        // SAFETY: the arguments are SQLite's own, passed on unchanged to the function this
        // VFS was copied from.
        unsafe { (reg.default_access)(vfs, name, flags, out) }
    };
    if flags != ffi::SQLITE_ACCESS_EXISTS || name.is_null() || out.is_null() {
        return fallback();
    }
    // SAFETY: SQLite passes a NUL-terminated path (checked non-null above).
    let path = unsafe { CStr::from_ptr(name) };
    if !path.to_bytes().ends_with(b"-journal") {
        return fallback();
    }
    // The Unix VFS's own answer first: when it finds no journal (the usual case) that stands,
    // and the check costs what it always did.
    let rc = fallback();
    // SAFETY: `out` is SQLite's result slot, checked non-null above.
    if rc != ffi::SQLITE_OK || unsafe { *out } == 0 {
        return rc;
    }
    let exists = match probe(path) {
        Probe::Absent => false,
        // The Unix VFS's rule: an empty regular file is not there.
        Probe::Present { regular, len } => !regular || len > 0,
        Probe::Undecided => return rc,
    };
    // SAFETY: as above.
    unsafe { *out = c_int::from(exists) };
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpath(p: &std::path::Path) -> std::ffi::CString {
        std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
    }

    #[test]
    fn the_probe_tells_missing_from_present_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("x.db-journal");
        assert_eq!(probe(&cpath(&j)), Probe::Absent);
        std::fs::write(&j, b"abc").unwrap();
        assert_eq!(
            probe(&cpath(&j)),
            Probe::Present {
                regular: true,
                len: 3
            }
        );
        std::fs::remove_file(&j).unwrap();
        let c = cpath(&j);
        // SAFETY: a valid path; mkfifo has no other precondition.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(probe(&c), Probe::Present { regular: false, .. }));
        std::fs::remove_file(&j).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &j).unwrap();
        assert_eq!(probe(&c), Probe::Undecided);
    }

    #[test]
    fn the_vfs_registers_under_its_name() {
        assert!(available());
        // SAFETY: a NUL-terminated name.
        let found = unsafe { ffi::sqlite3_vfs_find(VFS_NAME.as_ptr()) };
        assert!(!found.is_null());
    }
}
