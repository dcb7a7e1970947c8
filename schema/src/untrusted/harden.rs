//! The defensive settings of every connection to a file the container wrote, applied inside
//! SQLite's own open (an automatic extension) before the schema is read, so that no caller can
//! run a statement on such a connection without them.
//!
//! Following SQLite's "Defense Against the Dark Arts" page, for a database someone else wrote:
//! `SQLITE_DBCONFIG_DEFENSIVE`, triggers and views off (`SQLITE_DBCONFIG_ENABLE_TRIGGER`,
//! `SQLITE_DBCONFIG_ENABLE_VIEW`: a view or trigger the container planted never runs in the
//! host), `trusted_schema` off (functions in the schema restricted to innocuous ones),
//! extension loading off, `ATTACH` unable to create or write files, tight `sqlite3_limit`s
//! (no value longer than [`MAX_VALUE_BYTES`], so a huge row is an error and never an
//! allocation), and a progress handler that interrupts the connection once its operation has
//! done [`MAX_VM_STEPS`] of work (a bound no machine load changes) or passed its wall-clock
//! deadline (a backstop for work SQLite does not count in steps).

use super::vfs;
use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// The longest string or blob a connection to the container's file may produce (2 MiB). Any
/// longer value fails its statement with "string or blob too big" instead of being loaded.
pub const MAX_VALUE_BYTES: c_int = 2 * 1024 * 1024;

/// The limits set on each connection: (limit, value). Generous for the host's own fixed
/// statements, tight for anything else.
const LIMITS: &[(c_int, c_int)] = &[
    (ffi::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES),
    (ffi::SQLITE_LIMIT_SQL_LENGTH, 100_000),
    (ffi::SQLITE_LIMIT_COLUMN, 100),
    (ffi::SQLITE_LIMIT_EXPR_DEPTH, 100),
    (ffi::SQLITE_LIMIT_COMPOUND_SELECT, 4),
    (ffi::SQLITE_LIMIT_VDBE_OP, 100_000),
    (ffi::SQLITE_LIMIT_FUNCTION_ARG, 8),
    (ffi::SQLITE_LIMIT_ATTACHED, 0),
    (ffi::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 100),
    (ffi::SQLITE_LIMIT_TRIGGER_DEPTH, 1),
    (ffi::SQLITE_LIMIT_WORKER_THREADS, 0),
];

/// The on/off switches (`sqlite3_db_config` op, value).
const SWITCHES: &[(c_int, c_int)] = &[
    (ffi::SQLITE_DBCONFIG_DEFENSIVE, 1),
    (ffi::SQLITE_DBCONFIG_ENABLE_TRIGGER, 0),
    (ffi::SQLITE_DBCONFIG_ENABLE_VIEW, 0),
    (ffi::SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0),
    (ffi::SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0),
    (ffi::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, 0),
    (ffi::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, 0),
    (ffi::SQLITE_DBCONFIG_WRITABLE_SCHEMA, 0),
];

/// How many virtual-machine steps between two calls of the progress handler.
pub(crate) const PROGRESS_EVERY: c_int = 1000;

/// The work one operation on the container's file may do: 2,000 progress calls, two million
/// virtual-machine steps. The host's own reads of a real session take a few hundred thousand
/// at most (a window of a thousand rows, acks of thousands of pending messages); a file built
/// to make them expensive (no index, a million rows to scan) stops here, on any machine
/// whatever its load, in some tens of milliseconds of CPU.
pub const MAX_VM_STEPS: i64 = 2_000_000;

/// Name under which the connection keeps its deadline (freed by SQLite on close).
const CLIENT_DATA: &std::ffi::CStr = c"sessionbus-untrusted-entry";

/// Registers the VFS and the automatic extension that hardens its connections, once per
/// process. False when SQLite refused either: then no connection to a container's file may be
/// opened at all.
pub(crate) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        if vfs::vfs().is_none() {
            return false;
        }
        // SAFETY: SQLite stores the pointer and calls it on every new connection, with the
        // signature the binding declares.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(harden_if_untrusted)) };
        rc == ffi::SQLITE_OK
    })
}

/// Called by SQLite for every connection it opens in this process: returns at once for
/// connections that are not on the untrusted VFS, hardens the others. An error return makes
/// the open fail, so a connection is never left half-hardened.
unsafe extern "C" fn harden_if_untrusted(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    if db.is_null() {
        return ffi::SQLITE_OK;
    }
    let Some(ours) = vfs::vfs() else {
        return ffi::SQLITE_OK;
    };
    let mut used: *mut ffi::sqlite3_vfs = std::ptr::null_mut();
    // SAFETY: `db` is the connection being opened; SQLITE_FCNTL_VFS_POINTER writes the main
    // database's VFS pointer into `used` and is answered by SQLite's core.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_VFS_POINTER,
            (&mut used as *mut *mut ffi::sqlite3_vfs).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || used != ours {
        return ffi::SQLITE_OK;
    }
    // SAFETY: `db` is valid for the whole call (it is being opened).
    unsafe { harden(db) }
}

/// Applies every switch and limit, then the deadline.
///
/// # Safety
/// `db` must be a valid connection.
unsafe fn harden(db: *mut ffi::sqlite3) -> c_int {
    for &(op, on) in SWITCHES {
        let mut now: c_int = -1;
        // SAFETY: these ops take (int, int*), as their documentation states.
        let rc = unsafe { ffi::sqlite3_db_config(db, op, on, &mut now as *mut c_int) };
        if rc != ffi::SQLITE_OK || now != on {
            return ffi::SQLITE_ERROR;
        }
    }
    for &(limit, value) in LIMITS {
        // SAFETY: `db` is valid; sqlite3_limit only lowers (never raises past the build's
        // maximum).
        unsafe { ffi::sqlite3_limit(db, limit, value) };
    }
    // The deadline of the operation that opened this connection, from its registry entry.
    // SAFETY: `db` is valid; "main" always exists.
    let name = unsafe { ffi::sqlite3_db_filename(db, c"main".as_ptr()) };
    let entry = if name.is_null() {
        None
    } else {
        // SAFETY: non-null, NUL-terminated, owned by the connection.
        let bytes = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        vfs::parse_path(bytes).and_then(|(token, _)| vfs::lookup(token))
    };
    let Some(entry) = entry else {
        return ffi::SQLITE_ERROR;
    };
    let ctx = Arc::into_raw(entry).cast_mut().cast::<c_void>();
    // SAFETY: `ctx` is an Arc<Entry> leaked above; SQLite calls `drop_entry` exactly once,
    // when the connection closes (or right away if this call fails).
    let rc =
        unsafe { ffi::sqlite3_set_clientdata(db, CLIENT_DATA.as_ptr(), ctx, Some(drop_entry)) };
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    // SAFETY: `ctx` stays valid until the connection closes (kept by the client data).
    unsafe { ffi::sqlite3_progress_handler(db, PROGRESS_EVERY, Some(past_deadline), ctx) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn drop_entry(p: *mut c_void) {
    if !p.is_null() {
        // SAFETY: `p` came from Arc::into_raw in `harden`, released exactly once here.
        drop(unsafe { Arc::from_raw(p.cast_const().cast::<vfs::Entry>()) });
    }
}

/// The progress handler: non-zero interrupts the statement (`SQLITE_INTERRUPT`), once the
/// operation has used up its steps or passed its wall-clock deadline.
unsafe extern "C" fn past_deadline(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 1;
    }
    // SAFETY: `p` is the live Arc<Entry> pointer installed in `harden`.
    let entry = unsafe { &*p.cast_const().cast::<vfs::Entry>() };
    let left = entry
        .steps_left
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    c_int::from(left <= 0 || Instant::now() > entry.deadline)
}
