//! The error every file operation returns: it names the file, the role and the operation.

use crate::types::{FileKind, Role};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where an error happened: which file, acting as which role, doing what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    /// The database file (or folder) concerned.
    pub path: PathBuf,
    /// Who was acting.
    pub role: Role,
    /// What was being done, e.g. `"poll pending messages"`.
    pub op: &'static str,
}

impl At {
    /// Builds a location.
    pub fn new(path: impl Into<PathBuf>, role: Role, op: &'static str) -> Self {
        At {
            path: path.into(),
            role,
            op,
        }
    }
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} as {})", self.path.display(), self.op, self.role)
    }
}

/// What went wrong with a session database file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The file (or its folder) does not exist; nothing was created.
    #[error("{at}: no such file")]
    NotFound {
        /// Where.
        at: At,
    },
    /// The path is a symlink or not a regular file; refused so that a planted link cannot
    /// redirect a read or a write elsewhere.
    #[error("{at}: refusing to open: {detail}")]
    UnsafePath {
        /// Where.
        at: At,
        /// What is wrong with the path.
        detail: String,
    },
    /// The file exists but is not an SQLite database.
    #[error("{at}: not an SQLite database ({detail})")]
    NotADatabase {
        /// Where.
        at: At,
        /// What was found instead.
        detail: String,
    },
    /// SQLite reports the file as corrupt.
    #[error("{at}: the database file is corrupt: {detail}")]
    Corrupt {
        /// Where.
        at: At,
        /// SQLite's message.
        detail: String,
    },
    /// The file or its folder cannot be written by this process (or the handle is a reader).
    #[error("{at}: read-only: {detail}")]
    ReadOnly {
        /// Where.
        at: At,
        /// SQLite's or the OS's message.
        detail: String,
    },
    /// The file stayed locked by another connection for longer than the busy timeout.
    /// Retryable.
    #[error("{at}: still locked after the busy timeout of {timeout_ms} ms")]
    Locked {
        /// Where.
        at: At,
        /// The busy timeout that passed.
        timeout_ms: u64,
    },
    /// A writer died inside a transaction and left a hot journal that a read-only handle
    /// cannot roll back. Retryable: the file's writer rolls it back when it next opens it.
    #[error(
        "{at}: hot journal {journal} left by a writer that died mid-transaction; \
         the file's writer rolls it back on its next open (retry)"
    )]
    HotJournal {
        /// Where.
        at: At,
        /// The journal file.
        journal: PathBuf,
    },
    /// The file is in WAL mode, which cannot work across the container mount.
    #[error(
        "{at}: journal mode is {mode}, not delete; WAL cannot work across the container mount. \
         Its writer switches it back on open, or run `sessionbus migrate`"
    )]
    WalMode {
        /// Where.
        at: At,
        /// The journal mode found.
        mode: String,
    },
    /// A write would have exceeded the disk or file-size limit.
    #[error("{at}: disk full or file too large: {detail}")]
    DiskFull {
        /// Where.
        at: At,
        /// SQLite's or the OS's message.
        detail: String,
    },
    /// The file carries migrations this build does not know: it is newer than the code.
    #[error(
        "{at}: the file's schema is newer than this build (file has migration {file_version}, \
         this build knows up to {code_version}); refusing to write it, upgrade this binary"
    )]
    NewerThanCode {
        /// Where.
        at: At,
        /// The newest migration recorded in the file.
        file_version: String,
        /// The newest migration this build knows.
        code_version: String,
    },
    /// The file has never been migrated by this library (a legacy or empty file).
    #[error("{at}: the file has not been migrated to this library's schema; run `{hint}`")]
    NotMigrated {
        /// Where.
        at: At,
        /// The command that fixes it.
        hint: String,
    },
    /// The file's schema is older than this build needs.
    #[error(
        "{at}: the file's schema is too old (has {file_version}, needs {required}); run `{hint}`"
    )]
    TooOld {
        /// Where.
        at: At,
        /// The newest migration recorded in the file (`none` if none).
        file_version: String,
        /// The migration this build needs.
        required: String,
        /// The command that fixes it.
        hint: String,
    },
    /// The file holds the other file's tables or migrations (inbound.db and outbound.db
    /// swapped).
    #[error("{at}: this is not an {expected} file: {detail}")]
    WrongFile {
        /// Where.
        at: At,
        /// The file kind that was expected.
        expected: FileKind,
        /// What was found.
        detail: String,
    },
    /// The tables are not of any known generation, so adoption would guess.
    #[error("{at}: unrecognised table shape: {detail}")]
    UnrecognisedShape {
        /// Where.
        at: At,
        /// Which table or column does not fit.
        detail: String,
    },
    /// A migration failed; the file was left as it was.
    #[error("{at}: migration failed, file left unchanged: {detail}")]
    Migration {
        /// Where.
        at: At,
        /// The harness's message.
        detail: String,
    },
    /// A limit that bounds what one host operation may cost was reached on a file the
    /// container wrote: a value longer than the limit, a file too large, too many entries.
    /// Nothing past the limit was loaded.
    #[error("{at}: over a limit for what the host reads from the container: {detail}")]
    LimitExceeded {
        /// Where.
        at: At,
        /// Which limit, and by how much.
        detail: String,
    },
    /// The operation used up its budget (its steps, or its wall-clock backstop) and SQLite
    /// interrupted it (only operations on a file the container wrote have one).
    #[error("{at}: interrupted: over its budget of work (or of {budget_ms} ms)")]
    OverBudget {
        /// Where.
        at: At,
        /// The budget it exceeded.
        budget_ms: u64,
    },
    /// The container's file has a schema the host refuses to read (a view, a virtual table, a
    /// generated column, a missing table): it is never queried further.
    #[error("{at}: refusing the file's schema: {detail}")]
    RefusedSchema {
        /// Where.
        at: At,
        /// What is wrong with it.
        detail: String,
    },
    /// The operation is not one this role may do to this file (the host writing the
    /// container's file, say).
    #[error("{at}: not permitted: {detail}")]
    NotPermitted {
        /// Where.
        at: At,
        /// Why.
        detail: String,
    },
    /// A file-system operation failed.
    #[error("{at}: {source}")]
    Io {
        /// Where.
        at: At,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused to open the file.
    #[error("{at}: cannot open: {source}")]
    Open {
        /// Where.
        at: At,
        /// Diesel's connection error.
        #[source]
        source: diesel::ConnectionError,
    },
    /// Any other SQLite failure.
    #[error("{at}: {source}")]
    Query {
        /// Where.
        at: At,
        /// Diesel's error.
        #[source]
        source: diesel::result::Error,
    },
}

impl DbError {
    /// Where the error happened.
    pub fn at(&self) -> &At {
        match self {
            DbError::NotFound { at }
            | DbError::UnsafePath { at, .. }
            | DbError::NotADatabase { at, .. }
            | DbError::Corrupt { at, .. }
            | DbError::ReadOnly { at, .. }
            | DbError::Locked { at, .. }
            | DbError::HotJournal { at, .. }
            | DbError::WalMode { at, .. }
            | DbError::DiskFull { at, .. }
            | DbError::NewerThanCode { at, .. }
            | DbError::NotMigrated { at, .. }
            | DbError::TooOld { at, .. }
            | DbError::WrongFile { at, .. }
            | DbError::UnrecognisedShape { at, .. }
            | DbError::Migration { at, .. }
            | DbError::LimitExceeded { at, .. }
            | DbError::OverBudget { at, .. }
            | DbError::RefusedSchema { at, .. }
            | DbError::NotPermitted { at, .. }
            | DbError::Io { at, .. }
            | DbError::Open { at, .. }
            | DbError::Query { at, .. } => at,
        }
    }

    /// True for conditions that go away by themselves (a lock, a hot journal awaiting its
    /// writer): the caller should retry the operation later rather than give up.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DbError::Locked { .. } | DbError::HotJournal { .. })
    }

    /// Classifies a diesel error from an operation on `at`, turning SQLite's messages into
    /// the typed variants.
    pub fn from_diesel(at: At, source: diesel::result::Error, limits: Limits) -> Self {
        use diesel::result::Error as E;
        let msg = match &source {
            E::DatabaseError(_, info) => info.message().to_owned(),
            _ => return DbError::Query { at, source },
        };
        match classify_message(at.clone(), &msg, limits) {
            Some(typed) => typed,
            None => DbError::Query { at, source },
        }
    }
}

/// Maps one of SQLite's error messages to a typed error, or `None` when it is not one of the
/// conditions callers act on.
/// The waits and budgets in force on a connection, for the errors that name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The busy timeout, in milliseconds.
    pub busy_timeout_ms: u64,
    /// The operation's time budget, in milliseconds.
    pub budget_ms: u64,
}

pub(crate) fn classify_message(at: At, msg: &str, limits: Limits) -> Option<DbError> {
    let m = msg.to_ascii_lowercase();
    let detail = msg.to_owned();
    Some(
        if m.contains("database is locked") || m.contains("database table is locked") {
            DbError::Locked {
                at,
                timeout_ms: limits.busy_timeout_ms,
            }
        } else if m == "interrupted" {
            DbError::OverBudget {
                at,
                budget_ms: limits.budget_ms,
            }
        } else if m.contains("string or blob too big") || m.contains("out of memory") {
            DbError::LimitExceeded { at, detail }
        } else if m.contains("prohibited") || m.contains("unsafe use of") {
            DbError::RefusedSchema { at, detail }
        } else if m.contains("file is not a database") {
            DbError::NotADatabase { at, detail }
        } else if m.contains("malformed") || m.contains("corrupt") {
            DbError::Corrupt { at, detail }
        } else if m.contains("readonly database") || m.contains("read-only") {
            match hot_journal(&at.path) {
                Some(journal) => DbError::HotJournal { at, journal },
                None => DbError::ReadOnly { at, detail },
            }
        } else if m.contains("database or disk is full") || m.contains("too big") {
            DbError::DiskFull { at, detail }
        } else if m.contains("disk i/o error") {
            // SQLite reports a write past the file-size limit (EFBIG) as a plain I/O error.
            match file_size_limit_reached(&at.path) {
                Some(why) => DbError::DiskFull {
                    detail: format!("{detail} ({why})"),
                    at,
                },
                None => return None,
            }
        } else {
            return None;
        },
    )
}

/// Why a write to `db` that SQLite reported as a plain "disk I/O error" was most likely a write
/// past this process's file-size limit (`RLIMIT_FSIZE`, EFBIG): the limit is set and `db` or its
/// journal is within one write (a page of at most 64 KiB plus a journal record header) of it.
fn file_size_limit_reached(db: &Path) -> Option<String> {
    const ONE_WRITE: u64 = 65_536 + 8;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    let limit = lim.rlim_cur;
    let mut journal = db.as_os_str().to_owned();
    journal.push("-journal");
    [db.to_path_buf(), PathBuf::from(journal)]
        .into_iter()
        .find_map(|f| {
            let len = std::fs::metadata(&f).ok()?.len();
            (len.saturating_add(ONE_WRITE) >= limit).then(|| {
                format!(
                    "{} is {len} bytes and this process may not write files past {limit} bytes \
                     (RLIMIT_FSIZE)",
                    f.display()
                )
            })
        })
}

/// The rollback journal next to `db`, if one is there (a hot journal when no writer holds the
/// file).
pub fn hot_journal(db: &Path) -> Option<PathBuf> {
    let mut name = db.as_os_str().to_owned();
    name.push("-journal");
    let journal = PathBuf::from(name);
    match std::fs::metadata(&journal) {
        Ok(m) if m.len() > 0 => Some(journal),
        _ => None,
    }
}
