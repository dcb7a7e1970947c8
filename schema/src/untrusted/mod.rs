//! Opening what the container wrote, as a host that must survive anything in it.
//!
//! The container may be compromised (a prompt-injected agent), and the host runs as root. So
//! a file in a folder the container can write is attacker input, and so is every *name* in
//! that folder. This module is the one way the host reads such things:
//!
//! - [`fs`]: names in a container-writable folder are reached relative to a folder
//!   descriptor, never followed (`O_NOFOLLOW`), never blocked on (`O_NONBLOCK`), and the
//!   opened descriptor is checked to be a regular file;
//! - a read-only SQLite VFS (private) that serves the database from such a descriptor and its
//!   journal the same way, never deletes, never writes, never sees a `-wal`, and keeps temp
//!   files in capped memory;
//! - hardening inside SQLite's open (private): defensive mode, triggers and views off,
//!   `trusted_schema` off, value and statement limits, and a per-operation deadline;
//! - [`shape`]: the schema is compared with what the host reads before any other statement.
//!
//! The result: a symlink, FIFO, socket, device or folder where a file belongs is a typed error
//! within milliseconds; a hot journal is reported, never rolled back (a rollback deletes
//! whatever its super-journal field names, and replays pages the container chose); a planted
//! view or trigger never runs; a huge row is an error, not an allocation; a slow query stops
//! at its deadline.

pub mod fs;
mod harden;
mod schema_pages;
pub mod shape;
mod vfs;

pub use fs::{NodeInfo, NodeKind, UntrustedDir, UntrustedFsError};
pub use harden::{MAX_VALUE_BYTES, MAX_VM_STEPS};
pub use schema_pages::MAX_SCHEMA_PAGES;
pub use shape::{ExpectedTable, HOST_READS_OUTBOUND, MAX_SCHEMA_ENTRIES};
pub use vfs::TEMP_FILE_CAP;

use crate::conn::{FileHeader, URI_PATH};
use crate::error::{At, DbError};
use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use percent_encoding::percent_encode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest file of the container's the host opens: everything below SQLite's lock page
/// (1 GiB), which no real session file comes near.
pub const MAX_UNTRUSTED_DB_BYTES: u64 = 1 << 30;

/// The page cache of a connection to the container's file, in KiB (`cache_size = -N`).
pub const CACHE_KIB: i64 = 2048;

/// How a connection to a file of the container's is opened.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenUntrusted<'a> {
    /// The file's path (its folder is the container's).
    pub path: &'a Path,
    /// How long the whole operation may run before SQLite interrupts it.
    pub budget: Duration,
    /// How long a lock held by the container is waited for.
    pub busy_timeout: Duration,
    /// Read without locks or journal (a frozen snapshot, for inspection).
    pub immutable: bool,
    /// The tables the caller will read, checked before it gets the connection.
    pub tables: &'a [ExpectedTable],
}

/// Maps a failure to reach a name in an untrusted folder to the error a caller gets.
pub fn fs_error(at: At, e: UntrustedFsError) -> DbError {
    match e {
        UntrustedFsError::WrongKind { path, found } => DbError::UnsafePath {
            at,
            detail: format!("{} is {}", path.display(), found.describe()),
        },
        UntrustedFsError::BadName { path, reason } => DbError::UnsafePath {
            at,
            detail: format!("{}: {reason}", path.display()),
        },
        UntrustedFsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            DbError::NotFound { at }
        }
        UntrustedFsError::Io { source, .. } => DbError::Io { at, source },
    }
}

/// Reads the first bytes of an open database file without SQLite.
fn header_of(fd: &OwnedFd, size: u64) -> std::io::Result<FileHeader> {
    if size == 0 {
        return Ok(FileHeader::Empty);
    }
    let mut buf = [0u8; 20];
    let mut n = 0usize;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        let at = i64::try_from(n).unwrap_or(i64::MAX);
        // SAFETY: `rest` is a writable buffer of its length; `fd` is open.
        let k = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        if k < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if k == 0 {
            break;
        }
        n += usize::try_from(k).unwrap_or(0);
    }
    Ok(crate::conn::classify_header(&buf, n))
}

/// Opens a read-only, hardened connection to the container's database at `opts.path`.
/// `at(op)` names the file, role and operation in errors; `err` classifies diesel errors.
pub(crate) fn open(
    opts: OpenUntrusted<'_>,
    at: &dyn Fn() -> At,
    err: &dyn Fn(diesel::result::Error) -> DbError,
) -> Result<SqliteConnection, DbError> {
    if !harden::install() {
        return Err(DbError::UnsafePath {
            at: at(),
            detail: "SQLite refused the untrusted-file VFS; nothing of the container's is opened"
                .into(),
        });
    }
    let (parent, leaf) = fs::split_parent(opts.path).ok_or_else(|| DbError::UnsafePath {
        at: at(),
        detail: "the path has no file name".into(),
    })?;
    let dir = UntrustedDir::open(parent).map_err(|e| fs_error(at(), e))?;
    let (file, info) = dir.open_regular(leaf).map_err(|e| fs_error(at(), e))?;
    if info.size >= MAX_UNTRUSTED_DB_BYTES {
        return Err(DbError::LimitExceeded {
            at: at(),
            detail: format!(
                "the file is {} bytes, over the {MAX_UNTRUSTED_DB_BYTES}-byte limit",
                info.size
            ),
        });
    }
    let main = OwnedFd::from(file);
    match header_of(&main, info.size).map_err(|source| DbError::Io { at: at(), source })? {
        FileHeader::NotSqlite => {
            return Err(DbError::NotADatabase {
                at: at(),
                detail: "the header is not \"SQLite format 3\"".into(),
            })
        }
        FileHeader::Sqlite { wal: true } => {
            return Err(DbError::WalMode {
                at: at(),
                mode: "wal".into(),
            })
        }
        _ => {}
    }
    if let Some(detail) =
        schema_pages::too_large(&main).map_err(|source| DbError::Io { at: at(), source })?
    {
        return Err(DbError::RefusedSchema { at: at(), detail });
    }
    let mut journal = leaf.to_os_string();
    journal.push("-journal");
    if let Some(j) = dir.entry(&journal).map_err(|e| fs_error(at(), e))? {
        if j.kind != NodeKind::Regular {
            return Err(DbError::UnsafePath {
                at: at(),
                detail: format!(
                    "{} is {}",
                    parent.join(&journal).display(),
                    j.kind.describe()
                ),
            });
        }
    }
    let entry = Arc::new(vfs::Entry {
        dir: dir.into_fd(),
        main,
        leaf: leaf.as_bytes().to_vec(),
        // The lock wait has its own bound (the busy timeout): the deadline starts after it.
        deadline: Instant::now() + opts.budget + opts.busy_timeout,
        steps_left: std::sync::atomic::AtomicI64::new(
            harden::MAX_VM_STEPS / i64::from(harden::PROGRESS_EVERY),
        ),
    });
    let token = vfs::register(&entry);
    let uri = format!(
        "file:{}?vfs={}&mode=ro{}",
        vfs::path_for(
            token,
            &percent_encode(leaf.as_bytes(), URI_PATH).to_string()
        ),
        vfs::VFS_NAME.to_string_lossy(),
        if opts.immutable { "&immutable=1" } else { "" },
    );
    let conn = SqliteConnection::establish(&uri);
    // From here the connection's main file holds the entry (or the open failed).
    drop(entry);
    let mut conn = conn.map_err(|source| {
        vfs::unregister(token);
        DbError::Open { at: at(), source }
    })?;
    crate::conn::one_shot(&mut conn);
    let pragmas = format!(
        "PRAGMA busy_timeout = {}; PRAGMA query_only = ON; PRAGMA mmap_size = 0; \
         PRAGMA cache_size = -{CACHE_KIB}; PRAGMA temp_store = FILE; \
         PRAGMA cell_size_check = ON; PRAGMA trusted_schema = OFF;",
        opts.busy_timeout.as_millis()
    );
    conn.batch_execute(&pragmas).map_err(err)?;
    shape::check(&mut conn, opts.tables).map_err(|e| match e {
        shape::ShapeError::Refused(detail) => DbError::RefusedSchema { at: at(), detail },
        shape::ShapeError::Query(e) => err(e),
    })?;
    Ok(conn)
}
