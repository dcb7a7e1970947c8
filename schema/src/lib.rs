//! # sessionbus-schema
//!
//! The file format of a session's two SQLite files, `inbound.db` (the host writes, the
//! container reads) and `outbound.db` (the container writes, the host reads):
//!
//! - [`inbound`] and [`outbound`]: diesel `table!` definitions, one module per file, so that a
//!   query can never mix the two files;
//! - [`migrate`]: one embedded migration set per file, adoption of the unversioned legacy files
//!   of every generation (G0 to G8), dry-run plans, and the read-only schema check the other
//!   side uses;
//! - [`conn`]: opening a file as its writer or as a reader with the cross-mount pragmas
//!   (`journal_mode = DELETE`, `mmap_size = 0`, `mode=ro`, busy timeout);
//! - [`error`]: [`DbError`], which names the file, the role and the operation;
//! - [`time`] and [`types`]: timestamps in both upstream formats, the clock, [`Seq`].
//!
//! ```
//! use sessionbus_schema::{conn::DbFile, migrate, FileKind, Role, SystemClock, Clock};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let host_view = DbFile::in_session(dir.path(), FileKind::Inbound, Role::Host);
//! let outcome = migrate::migrate(&host_view, SystemClock.now(), migrate::IfMissing::Create).unwrap();
//! assert!(outcome.created);
//!
//! // The container checks the schema through a read-only handle, writing nothing.
//! let container_view = host_view.clone().as_role(Role::Container);
//! let mut conn = container_view.open_reader("check schema").unwrap();
//! migrate::check_schema(&mut conn, &container_view, migrate::Access::Read, "check schema").unwrap();
//! ```
// Library code must not panic on input or on what the filesystem does: no unwrap, expect,
// panic or unchecked indexing outside tests (clippy enforces it; CI denies warnings).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
#![warn(missing_docs)]

pub mod conn;
pub mod error;
pub mod inbound;
mod journal_probe;
pub mod migrate;
pub mod outbound;
pub mod time;
pub mod types;
pub mod untrusted;

pub use conn::DbFile;
pub use error::{At, DbError};
pub use time::{Clock, SystemClock, Timestamp, TimestampError};
pub use types::{FileKind, Role, Seq, SeqError, SeqOwner};
