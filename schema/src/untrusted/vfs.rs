//! A read-only SQLite VFS for a database whose folder the container writes.
//!
//! SQLite's own Unix VFS opens files by path: the database when the connection opens, the
//! `-journal` later (to look for a hot journal, reading its first byte with `O_RDONLY`, which
//! blocks forever on a FIFO), and a `-wal` next to it (whose mere existence switches the
//! connection to WAL mode). Every one of those names is the container's to choose. This VFS
//! never resolves a name by path:
//!
//! - the database is a descriptor the opener already opened and checked (see
//!   [`super::fs::UntrustedDir`]), handed over through a registry entry named by a token in
//!   the URI path (`/sessionbus-untrusted/<token>/<leaf>`);
//! - the journal is reached with `openat(dirfd, O_NOFOLLOW | O_NONBLOCK)` relative to the
//!   folder descriptor, and anything but a regular file is refused (SQLite then treats the
//!   journal as hot, and a read-only connection stops with `SQLITE_READONLY_ROLLBACK`);
//! - a `-wal` never exists, nothing is ever deleted, and no file is opened for writing;
//! - temporary files (sorts, temp tables) live in memory, each capped at [`TEMP_FILE_CAP`]:
//!   past it a write fails with `SQLITE_FULL` instead of filling a disk;
//! - locks are taken with open-file-description locks (`F_OFD_SETLK`) on the same bytes the
//!   Unix VFS uses, so on one kernel a read never sees a commit in progress, and a lock never
//!   waits (SQLite's busy handler, bounded by the busy timeout, does the waiting).
//!
//! Everything here is called by SQLite through `extern "C"` function pointers: no function
//! may panic, and every pointer SQLite hands over is checked before use.

use libsqlite3_sys as ffi;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;

/// The VFS's registered name (`vfs=` in the URI).
pub(crate) const VFS_NAME: &CStr = c"sessionbus-untrusted";

/// The path prefix of every file this VFS serves: `/sessionbus-untrusted/<token>/<leaf>`.
pub(crate) const PATH_PREFIX: &str = "/sessionbus-untrusted/";

/// The largest temporary file (a sort spilling, a transient index) one connection may write.
pub const TEMP_FILE_CAP: usize = 8 * 1024 * 1024;

// SQLite's lock bytes (os_unix.c): one page at 1 GiB that no database page uses.
const PENDING_BYTE: i64 = 0x4000_0000;
const RESERVED_BYTE: i64 = PENDING_BYTE + 1;
const SHARED_FIRST: i64 = PENDING_BYTE + 2;
const SHARED_SIZE: i64 = 510;

/// What the opener hands the VFS for one connection: the folder and the database, both
/// already open and checked, and the operation's deadline.
pub(crate) struct Entry {
    pub(crate) dir: OwnedFd,
    pub(crate) main: OwnedFd,
    /// The database's name in its folder (`outbound.db`).
    pub(crate) leaf: Vec<u8>,
    /// Past this instant the progress handler interrupts whatever the connection runs.
    pub(crate) deadline: Instant,
    /// How many more progress calls (each [`super::harden::PROGRESS_EVERY`] virtual-machine
    /// steps) the operation may make: a bound on its work that no machine load changes.
    pub(crate) steps_left: std::sync::atomic::AtomicI64,
}

type Registry = Mutex<HashMap<u64, Weak<Entry>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers `entry` and returns its token. The registry holds it weakly: the connection's
/// main file holds it strongly, so it lives exactly as long as the connection.
pub(crate) fn register(entry: &Arc<Entry>) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let token = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    // Forget entries whose connection is gone (an open that failed before its main file was
    // opened leaves one behind).
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(token, Arc::downgrade(entry));
    token
}

/// Removes `token` from the registry.
pub(crate) fn unregister(token: u64) {
    let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.remove(&token);
}

/// The live entry for `token`.
pub(crate) fn lookup(token: u64) -> Option<Arc<Entry>> {
    let map = registry().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&token).and_then(Weak::upgrade)
}

/// Splits a path this VFS serves into its token and leaf name.
pub(crate) fn parse_path(path: &[u8]) -> Option<(u64, &[u8])> {
    let rest = path.strip_prefix(PATH_PREFIX.as_bytes())?;
    let slash = rest.iter().position(|b| *b == b'/')?;
    let (token, leaf) = rest.split_at(slash);
    let token: u64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    let leaf = leaf.get(1..)?;
    (!leaf.is_empty() && !leaf.contains(&b'/')).then_some((token, leaf))
}

/// The path of `leaf` under `token`, as the URI's path.
pub(crate) fn path_for(token: u64, leaf: &str) -> String {
    format!("{PATH_PREFIX}{token}/{leaf}")
}

/// The registered VFS (registering it on first use). `None` when SQLite refused it.
pub(crate) fn vfs() -> Option<*mut ffi::sqlite3_vfs> {
    struct VfsPtr(*mut ffi::sqlite3_vfs);
    // SAFETY: the pointer refers to a leaked, never-mutated-after-registration struct that
    // SQLite itself shares between threads.
    unsafe impl Send for VfsPtr {}
    unsafe impl Sync for VfsPtr {}
    static VFS: OnceLock<Option<VfsPtr>> = OnceLock::new();
    VFS.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS or NULL; no preconditions.
        let default = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
        if default.is_null() {
            return None;
        }
        let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: c_int::try_from(std::mem::size_of::<GuardFile>()).ok()?,
            mxPathname: 512,
            pNext: std::ptr::null_mut(),
            zName: VFS_NAME.as_ptr(),
            pAppData: default.cast(),
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: Some(x_dl_open),
            xDlError: Some(x_dl_error),
            xDlSym: Some(x_dl_sym),
            xDlClose: Some(x_dl_close),
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        }));
        let ptr: *mut ffi::sqlite3_vfs = vfs;
        // SAFETY: `ptr` points to a valid, 'static VFS struct; 0 = not the default VFS.
        let rc = unsafe { ffi::sqlite3_vfs_register(ptr, 0) };
        (rc == ffi::SQLITE_OK).then_some(VfsPtr(ptr))
    })
    .as_ref()
    .map(|p| p.0)
}

fn default_vfs(vfs: *mut ffi::sqlite3_vfs) -> Option<*mut ffi::sqlite3_vfs> {
    if vfs.is_null() {
        return None;
    }
    // SAFETY: SQLite passes back the VFS we registered, whose pAppData is the default VFS.
    let d = unsafe { (*vfs).pAppData }.cast::<ffi::sqlite3_vfs>();
    (!d.is_null()).then_some(d)
}

/// What one open file of this VFS is.
enum Inner {
    /// The database: read-only, with SQLite's lock protocol on OFD locks.
    Main {
        fd: OwnedFd,
        /// Held so the registry entry (and the folder descriptor) outlive every journal open.
        _entry: Arc<Entry>,
        token: u64,
        lock: c_int,
    },
    /// The journal, opened to read its first byte.
    Journal { fd: OwnedFd },
    /// A temporary file, in memory and capped.
    Temp { buf: Vec<u8> },
}

/// SQLite allocates `szOsFile` bytes per open file; ours start with `sqlite3_file` as SQLite
/// requires, followed by a pointer to the Rust side.
#[repr(C)]
struct GuardFile {
    base: ffi::sqlite3_file,
    inner: *mut Inner,
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(io_close),
    xRead: Some(io_read),
    xWrite: Some(io_write),
    xTruncate: Some(io_truncate),
    xSync: Some(io_sync),
    xFileSize: Some(io_file_size),
    xLock: Some(io_lock),
    xUnlock: Some(io_unlock),
    xCheckReservedLock: Some(io_check_reserved_lock),
    xFileControl: Some(io_file_control),
    xSectorSize: Some(io_sector_size),
    xDeviceCharacteristics: Some(io_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

fn c_bytes<'a>(z: *const c_char) -> Option<&'a [u8]> {
    if z.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated names that live for the duration of the call.
    Some(unsafe { CStr::from_ptr(z) }.to_bytes())
}

/// The journal's leaf name for a database leaf.
fn journal_leaf(main: &[u8]) -> Vec<u8> {
    let mut j = main.to_vec();
    j.extend_from_slice(b"-journal");
    j
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    if file.is_null() {
        return ffi::SQLITE_CANTOPEN;
    }
    let gf = file.cast::<GuardFile>();
    // SAFETY: SQLite hands us `szOsFile` writable bytes; a null pMethods tells SQLite that
    // nothing needs closing if we fail below.
    unsafe {
        (*gf).base.pMethods = std::ptr::null();
        (*gf).inner = std::ptr::null_mut();
    }
    let inner = match open_inner(z_name, flags) {
        Some(inner) => inner,
        None => return ffi::SQLITE_CANTOPEN,
    };
    let read_only = !matches!(inner, Inner::Temp { .. });
    // SAFETY: as above; the methods table is 'static.
    unsafe {
        (*gf).inner = Box::into_raw(Box::new(inner));
        (*gf).base.pMethods = &IO_METHODS;
        if !out_flags.is_null() {
            *out_flags = if read_only {
                ffi::SQLITE_OPEN_READONLY
            } else {
                flags
            };
        }
    }
    ffi::SQLITE_OK
}

fn open_inner(z_name: ffi::sqlite3_filename, flags: c_int) -> Option<Inner> {
    const TEMP_KINDS: c_int = ffi::SQLITE_OPEN_TEMP_DB
        | ffi::SQLITE_OPEN_TEMP_JOURNAL
        | ffi::SQLITE_OPEN_TRANSIENT_DB
        | ffi::SQLITE_OPEN_SUBJOURNAL;
    let name = c_bytes(z_name);
    if flags & TEMP_KINDS != 0 && (name.is_none() || flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0) {
        return Some(Inner::Temp { buf: Vec::new() });
    }
    // Nothing of the container's is ever opened for writing.
    if flags & ffi::SQLITE_OPEN_READWRITE != 0 {
        return None;
    }
    let (token, leaf) = parse_path(name?)?;
    let entry = lookup(token)?;
    if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && leaf == entry.leaf.as_slice() {
        let fd = entry.main.try_clone().ok()?;
        return Some(Inner::Main {
            fd,
            _entry: entry,
            token,
            lock: ffi::SQLITE_LOCK_NONE,
        });
    }
    if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 && leaf == journal_leaf(&entry.leaf).as_slice() {
        return open_journal(&entry, leaf).map(|fd| Inner::Journal { fd });
    }
    None
}

/// Opens the journal relative to the folder descriptor: no link followed, no blocking, and a
/// regular file or nothing.
fn open_journal(entry: &Entry, leaf: &[u8]) -> Option<OwnedFd> {
    let c = std::ffi::CString::new(leaf).ok()?;
    // SAFETY: the folder descriptor is open; `c` is NUL-terminated.
    let fd = unsafe {
        libc::openat(
            entry.dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: freshly returned by openat, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    is_regular(fd.as_raw_fd()).then_some(fd)
}

fn is_regular(fd: RawFd) -> bool {
    // SAFETY: an all-zero `stat` is valid; `fd` is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    (unsafe { libc::fstat(fd, &mut st) } == 0) && (st.st_mode & libc::S_IFMT == libc::S_IFREG)
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    _z_name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    // The host never deletes anything in the container's folder (a hot journal's rollback
    // would delete a super-journal whose name the container wrote).
    ffi::SQLITE_IOERR_DELETE
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    flags: c_int,
    res_out: *mut c_int,
) -> c_int {
    if res_out.is_null() {
        return ffi::SQLITE_IOERR_ACCESS;
    }
    let exists = flags == ffi::SQLITE_ACCESS_EXISTS && journal_exists(z_name);
    // SAFETY: checked non-null above.
    unsafe { *res_out = c_int::from(exists) };
    ffi::SQLITE_OK
}

/// Only the journal can exist for SQLite's purposes: a `-wal` is never reported (its mere
/// presence would switch the connection to WAL and map a `-shm` the container wrote).
fn journal_exists(z_name: *const c_char) -> bool {
    let Some((token, leaf)) = c_bytes(z_name).and_then(parse_path) else {
        return false;
    };
    let Some(entry) = lookup(token) else {
        return false;
    };
    if leaf != journal_leaf(&entry.leaf).as_slice() {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(leaf) else {
        return false;
    };
    // SAFETY: an all-zero `stat` is valid; the folder descriptor is open; `c` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe {
        libc::fstatat(
            entry.dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ) == 0
    }
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    z_name: *const c_char,
    n_out: c_int,
    z_out: *mut c_char,
) -> c_int {
    let Some(name) = c_bytes(z_name) else {
        return ffi::SQLITE_CANTOPEN;
    };
    let cap = usize::try_from(n_out).unwrap_or(0);
    if z_out.is_null() || name.len() + 1 > cap {
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: `z_out` has room for `cap` bytes, and `name.len() + 1 <= cap`.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), z_out.cast::<u8>(), name.len());
        *z_out.add(name.len()) = 0;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _z: *const c_char) -> *mut c_void {
    // No extension is ever loaded on a connection to the container's file.
    std::ptr::null_mut()
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, z: *mut c_char) {
    const MSG: &[u8] = b"extensions are disabled\0";
    if z.is_null() || n <= 0 {
        return;
    }
    let len = MSG.len().min(usize::try_from(n).unwrap_or(0));
    // SAFETY: `z` has room for `n >= len` bytes; the copy ends with a NUL.
    unsafe {
        std::ptr::copy_nonoverlapping(MSG.as_ptr(), z.cast::<u8>(), len);
        *z.add(len - 1) = 0;
    }
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    _h: *mut c_void,
    _z: *const c_char,
) -> Option<DlSym> {
    None
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _h: *mut c_void) {}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, z: *mut c_char) -> c_int {
    match default_vfs(vfs) {
        // SAFETY: the default VFS's methods are valid for its lifetime (the process).
        Some(d) => match unsafe { (*d).xRandomness } {
            Some(f) => unsafe { f(d, n, z) },
            None => 0,
        },
        None => 0,
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    match default_vfs(vfs) {
        // SAFETY: as in x_randomness.
        Some(d) => match unsafe { (*d).xSleep } {
            Some(f) => unsafe { f(d, micros) },
            None => 0,
        },
        None => 0,
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    match default_vfs(vfs) {
        // SAFETY: as in x_randomness.
        Some(d) => match unsafe { (*d).xCurrentTime } {
            Some(f) => unsafe { f(d, out) },
            None => ffi::SQLITE_ERROR,
        },
        None => ffi::SQLITE_ERROR,
    }
}

unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    match default_vfs(vfs) {
        // SAFETY: as in x_randomness.
        Some(d) => match unsafe { (*d).xCurrentTimeInt64 } {
            Some(f) => unsafe { f(d, out) },
            None => ffi::SQLITE_ERROR,
        },
        None => ffi::SQLITE_ERROR,
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    z: *mut c_char,
) -> c_int {
    match default_vfs(vfs) {
        // SAFETY: as in x_randomness.
        Some(d) => match unsafe { (*d).xGetLastError } {
            Some(f) => unsafe { f(d, n, z) },
            None => 0,
        },
        None => 0,
    }
}

/// The Rust side of an open file, or `None` for a pointer SQLite should never pass.
///
/// # Safety
/// `file` must be a file this VFS opened and has not closed yet.
unsafe fn inner<'a>(file: *mut ffi::sqlite3_file) -> Option<&'a mut Inner> {
    if file.is_null() {
        return None;
    }
    // SAFETY: per the contract, `file` is one of our GuardFiles; `inner` is null or a live Box.
    unsafe { (*file.cast::<GuardFile>()).inner.as_mut() }
}

unsafe extern "C" fn io_close(file: *mut ffi::sqlite3_file) -> c_int {
    if file.is_null() {
        return ffi::SQLITE_OK;
    }
    let gf = file.cast::<GuardFile>();
    // SAFETY: SQLite closes each file it opened once; `inner` came from Box::into_raw.
    let boxed = unsafe {
        let p = (*gf).inner;
        (*gf).inner = std::ptr::null_mut();
        (*gf).base.pMethods = std::ptr::null();
        (!p.is_null()).then(|| Box::from_raw(p))
    };
    if let Some(b) = boxed {
        if let Inner::Main {
            fd, token, lock, ..
        } = b.as_ref()
        {
            if *lock != ffi::SQLITE_LOCK_NONE {
                let _ = ofd_lock(
                    fd.as_raw_fd(),
                    libc::F_UNLCK,
                    PENDING_BYTE,
                    SHARED_FIRST + SHARED_SIZE - PENDING_BYTE,
                );
            }
            unregister(*token);
        }
    }
    ffi::SQLITE_OK
}

/// Reads `amt` bytes at `offset` from `fd`, filling what is past the end with zeroes.
fn pread_full(fd: RawFd, out: &mut [u8], offset: i64) -> c_int {
    let mut done = 0usize;
    while done < out.len() {
        let Some(rest) = out.get_mut(done..) else {
            break;
        };
        let Ok(at) = i64::try_from(done).map(|d| offset.saturating_add(d)) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes; `fd` is open.
        let n = unsafe { libc::pread(fd, rest.as_mut_ptr().cast(), rest.len(), at) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return ffi::SQLITE_IOERR_READ;
        }
        if n == 0 {
            break;
        }
        done += usize::try_from(n).unwrap_or(0);
    }
    if done < out.len() {
        if let Some(tail) = out.get_mut(done..) {
            tail.fill(0);
        }
        return ffi::SQLITE_IOERR_SHORT_READ;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (Some(inner), Ok(len)) = (unsafe { inner(file) }, usize::try_from(amt)) else {
        return ffi::SQLITE_IOERR_READ;
    };
    if buf.is_null() || offset < 0 {
        return ffi::SQLITE_IOERR_READ;
    }
    // SAFETY: SQLite passes a buffer of `amt` writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    match inner {
        Inner::Main { fd, .. } | Inner::Journal { fd } => pread_full(fd.as_raw_fd(), out, offset),
        Inner::Temp { buf } => {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(buf.len());
            let end = start.saturating_add(len).min(buf.len());
            let src = buf.get(start..end).unwrap_or(&[]);
            let (head, tail) = out.split_at_mut(src.len());
            head.copy_from_slice(src);
            if tail.is_empty() {
                ffi::SQLITE_OK
            } else {
                tail.fill(0);
                ffi::SQLITE_IOERR_SHORT_READ
            }
        }
    }
}

unsafe extern "C" fn io_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (Some(inner), Ok(len)) = (unsafe { inner(file) }, usize::try_from(amt)) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let Inner::Temp { buf: data } = inner else {
        return ffi::SQLITE_READONLY;
    };
    let Ok(start) = usize::try_from(offset) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let end = start.saturating_add(len);
    if end > TEMP_FILE_CAP {
        return ffi::SQLITE_FULL;
    }
    if buf.is_null() {
        return ffi::SQLITE_IOERR_WRITE;
    }
    if data.len() < end {
        data.resize(end, 0);
    }
    // SAFETY: SQLite passes `amt` readable bytes.
    let src = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    match data.get_mut(start..end) {
        Some(dst) => {
            dst.copy_from_slice(src);
            ffi::SQLITE_OK
        }
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn io_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    match unsafe { inner(file) } {
        Some(Inner::Temp { buf }) => {
            buf.truncate(usize::try_from(size).unwrap_or(0));
            ffi::SQLITE_OK
        }
        _ => ffi::SQLITE_READONLY,
    }
}

unsafe extern "C" fn io_sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    if out.is_null() {
        return ffi::SQLITE_IOERR_FSTAT;
    }
    let size = match unsafe { inner(file) } {
        Some(Inner::Main { fd, .. } | Inner::Journal { fd }) => {
            // SAFETY: an all-zero `stat` is valid; `fd` is open.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
                return ffi::SQLITE_IOERR_FSTAT;
            }
            st.st_size
        }
        Some(Inner::Temp { buf }) => i64::try_from(buf.len()).unwrap_or(i64::MAX),
        None => return ffi::SQLITE_IOERR_FSTAT,
    };
    // SAFETY: checked non-null above.
    unsafe { *out = size };
    ffi::SQLITE_OK
}

/// Takes (`F_RDLCK`) or releases (`F_UNLCK`) an open-file-description lock on a byte range
/// without waiting. False when another process holds a conflicting lock.
fn ofd_lock(fd: RawFd, kind: c_int, start: i64, len: i64) -> bool {
    // SAFETY: an all-zero `flock` is valid; OFD locks need l_pid = 0.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: `fd` is open and `fl` is a valid flock.
    unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) == 0 }
}

unsafe extern "C" fn io_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let Some(inner) = (unsafe { inner(file) }) else {
        return ffi::SQLITE_IOERR_LOCK;
    };
    let Inner::Main { fd, lock, .. } = inner else {
        return ffi::SQLITE_OK;
    };
    if level <= *lock {
        return ffi::SQLITE_OK;
    }
    if level != ffi::SQLITE_LOCK_SHARED {
        // Reserved, pending and exclusive locks are for writers; this VFS never writes.
        return ffi::SQLITE_READONLY;
    }
    let fd = fd.as_raw_fd();
    // As the Unix VFS does: a read lock on PENDING_BYTE first (refused while a writer is
    // waiting to commit), then the shared range (refused while a writer commits).
    if !ofd_lock(fd, libc::F_RDLCK, PENDING_BYTE, 1) {
        return ffi::SQLITE_BUSY;
    }
    let shared = ofd_lock(fd, libc::F_RDLCK, SHARED_FIRST, SHARED_SIZE);
    let _ = ofd_lock(fd, libc::F_UNLCK, PENDING_BYTE, 1);
    if !shared {
        return ffi::SQLITE_BUSY;
    }
    *lock = ffi::SQLITE_LOCK_SHARED;
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let Some(inner) = (unsafe { inner(file) }) else {
        return ffi::SQLITE_IOERR_UNLOCK;
    };
    if let Inner::Main { fd, lock, .. } = inner {
        if level == ffi::SQLITE_LOCK_NONE && *lock != ffi::SQLITE_LOCK_NONE {
            if !ofd_lock(
                fd.as_raw_fd(),
                libc::F_UNLCK,
                PENDING_BYTE,
                SHARED_FIRST + SHARED_SIZE - PENDING_BYTE,
            ) {
                return ffi::SQLITE_IOERR_UNLOCK;
            }
            *lock = ffi::SQLITE_LOCK_NONE;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    if out.is_null() {
        return ffi::SQLITE_IOERR_CHECKRESERVEDLOCK;
    }
    let held = match unsafe { inner(file) } {
        Some(Inner::Main { fd, .. }) => {
            // SAFETY: an all-zero `flock` is valid; OFD queries need l_pid = 0.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            fl.l_start = RESERVED_BYTE;
            fl.l_len = 1;
            // SAFETY: `fd` is open and `fl` is valid.
            if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
                return ffi::SQLITE_IOERR_CHECKRESERVEDLOCK;
            }
            fl.l_type != libc::F_UNLCK as libc::c_short
        }
        Some(_) => false,
        None => return ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
    };
    // SAFETY: checked non-null above.
    unsafe { *out = c_int::from(held) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_file_control(
    _file: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn io_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn io_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_back_to_their_token_and_leaf() {
        let p = path_for(42, "outbound.db");
        assert_eq!(parse_path(p.as_bytes()), Some((42, &b"outbound.db"[..])));
        assert_eq!(
            parse_path(b"/sessionbus-untrusted/42/outbound.db-journal"),
            Some((42, &b"outbound.db-journal"[..]))
        );
        for bad in [
            &b"/elsewhere/42/outbound.db"[..],
            b"/sessionbus-untrusted/x/outbound.db",
            b"/sessionbus-untrusted/42/",
            b"/sessionbus-untrusted/42/a/b",
            b"/sessionbus-untrusted/42",
        ] {
            assert_eq!(parse_path(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
