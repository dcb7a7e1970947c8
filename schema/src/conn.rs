//! Opening a session file as its writer or as a reader, with the cross-mount pragmas.
//!
//! The rules of docs/format.md §2 live here, so that no caller can forget one:
//! - writers set `busy_timeout`, `journal_mode = DELETE` (checked, which also converts a WAL
//!   file back), `synchronous = FULL` and `foreign_keys = ON`, and are opened per operation;
//! - readers open the file with the URI `mode=ro` (SQLite itself refuses every write), set
//!   `mmap_size = 0` and `query_only`, and refuse a WAL-mode file;
//! - paths are percent-encoded into the URI (an unencoded `#` silently dropped `?mode=ro`),
//!   existence is checked first (SQLite would create an empty file), and symlinks are refused.

use crate::error::{At, DbError};
use crate::types::{FileKind, Role};
use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Busy timeout used upstream: how long a connection waits for another one's lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// How long the host waits for a lock the container holds on its own file before giving up on
/// that session for this pass: short, so a container frozen while holding its lock delays the
/// other sessions of a sweep by this much, not by [`DEFAULT_BUSY_TIMEOUT`].
pub const UNTRUSTED_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// The wall-clock backstop of one host operation on the container's file (see
/// [`crate::untrusted`]): its work is bounded in steps ([`crate::untrusted::MAX_VM_STEPS`]),
/// a bound no load changes; this catches what SQLite does not count in steps. Generous, so a
/// busy machine never interrupts an honest read.
pub const UNTRUSTED_BUDGET: Duration = Duration::from_secs(5);

/// Characters kept as they are in a `file:` URI path; everything else is percent-encoded.
pub(crate) const URI_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where a database lives: a real file, or a named in-memory database shared inside this
/// process (`vfs=memdb`, for fast test fixtures).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    File(PathBuf),
    MemDb(String),
}

/// One session file as seen by one role: everything needed to open it correctly.
///
/// Cheap to clone; it holds no connection. Each operation opens, works and closes.
#[derive(Debug, Clone)]
pub struct DbFile {
    location: Location,
    display: PathBuf,
    kind: FileKind,
    role: Role,
    /// `None`: the default for this role and file ([`DbFile::busy_timeout`]).
    busy_timeout: Option<Duration>,
    budget: Duration,
}

/// What opening a writer found and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterOpenInfo {
    /// The file did not exist (or was empty) and this open created it.
    pub created: bool,
    /// The journal mode before this open switched it to `delete`, when it was another one
    /// (`wal`, say).
    pub switched_from: Option<String>,
}

/// The first bytes of a file, read without SQLite (so without creating or locking anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileHeader {
    /// Zero bytes: SQLite treats it as an empty database.
    Empty,
    /// An SQLite database; `wal` when its header says WAL mode.
    Sqlite {
        /// The header's read/write version bytes say WAL.
        wal: bool,
    },
    /// Anything else.
    NotSqlite,
}

/// Reads the header of the database at `path`.
pub fn sniff_header(path: &Path) -> std::io::Result<FileHeader> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = [0u8; 20];
    let mut n = 0;
    while let Some(rest) = buf.get_mut(n..).filter(|r| !r.is_empty()) {
        match f.read(rest)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(classify_header(&buf, n))
}

/// What the first `n` bytes of a file (`buf` holds at least 20 when `n` is 20) say it is.
pub(crate) fn classify_header(buf: &[u8; 20], n: usize) -> FileHeader {
    match n {
        0 => FileHeader::Empty,
        20 if buf.starts_with(b"SQLite format 3\0") => FileHeader::Sqlite {
            wal: buf[18] == 2 || buf[19] == 2,
        },
        _ => FileHeader::NotSqlite,
    }
}

#[derive(QueryableByName)]
struct JournalModeRow {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[derive(QueryableByName)]
#[allow(dead_code)] // read only to force SQLite to touch the file
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl DbFile {
    /// A session file at `path`, of the given kind, opened by `role`.
    pub fn new(path: impl Into<PathBuf>, kind: FileKind, role: Role) -> Self {
        let path = path.into();
        DbFile {
            display: path.clone(),
            location: Location::File(path),
            kind,
            role,
            busy_timeout: None,
            budget: UNTRUSTED_BUDGET,
        }
    }

    /// The session file `kind` inside the session folder `dir`.
    pub fn in_session(dir: &Path, kind: FileKind, role: Role) -> Self {
        DbFile::new(dir.join(kind.file_name()), kind, role)
    }

    /// A named in-memory database shared by every connection of this process that uses the
    /// same name (SQLite's `memdb` VFS). It lives while at least one connection is open, so a
    /// fixture keeps one open. Readers get `mode=ro` exactly as with files.
    pub fn memdb(name: &str, kind: FileKind, role: Role) -> Self {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        DbFile {
            display: PathBuf::from(format!("memdb:{clean}")),
            location: Location::MemDb(clean),
            kind,
            role,
            busy_timeout: None,
            budget: UNTRUSTED_BUDGET,
        }
    }

    /// The same file with another busy timeout.
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = Some(timeout);
        self
    }

    /// The same file with another time budget per operation (only the host's reads of the
    /// container's file have one; see [`crate::untrusted`]).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// How long a connection waits for another one's lock: [`UNTRUSTED_BUSY_TIMEOUT`] for the
    /// host reading the container's file, [`DEFAULT_BUSY_TIMEOUT`] otherwise, unless set.
    pub fn busy_timeout(&self) -> Duration {
        self.busy_timeout.unwrap_or(if self.is_untrusted() {
            UNTRUSTED_BUSY_TIMEOUT
        } else {
            DEFAULT_BUSY_TIMEOUT
        })
    }

    /// The time budget of one operation on the container's file.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether this is the host side's view of the container's file (`outbound.db` opened by
    /// the host or an operator tool, both of which run as root next to the container): written
    /// by a party the host does not trust, so opened only through [`crate::untrusted`].
    pub fn is_untrusted(&self) -> bool {
        self.role != Role::Container && self.kind == FileKind::Outbound && self.is_file()
    }

    /// The same file, opened by another role.
    pub fn as_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The path (or `memdb:<name>`) used in messages.
    pub fn path(&self) -> &Path {
        &self.display
    }

    /// Which file of the pair this is.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// Who opens it.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The busy timeout in milliseconds.
    pub fn busy_timeout_ms(&self) -> u64 {
        u64::try_from(self.busy_timeout().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether this is a real file (not an in-memory fixture).
    pub fn is_file(&self) -> bool {
        matches!(self.location, Location::File(_))
    }

    /// A location for errors about operation `op` on this file.
    pub fn at(&self, op: &'static str) -> At {
        At::new(self.display.clone(), self.role, op)
    }

    /// Classifies a diesel error from operation `op` on this file.
    pub fn err(&self, op: &'static str, e: diesel::result::Error) -> DbError {
        DbError::from_diesel(self.at(op), e, self.limits())
    }

    /// The waits and budgets that classify an error of this file.
    pub(crate) fn limits(&self) -> crate::error::Limits {
        crate::error::Limits {
            busy_timeout_ms: self.busy_timeout_ms(),
            budget_ms: u64::try_from(self.budget.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Opens the file as its writer; the file must exist.
    pub fn open_writer(&self, op: &'static str) -> Result<SqliteConnection, DbError> {
        self.open_writer_with(op, false).map(|(c, _)| c)
    }

    /// Opens the file as its writer, creating it when `create` is set, and says what the open
    /// found and changed.
    pub fn open_writer_with(
        &self,
        op: &'static str,
        create: bool,
    ) -> Result<(SqliteConnection, WriterOpenInfo), DbError> {
        if self.role == Role::Host && self.kind == FileKind::Outbound {
            return Err(DbError::NotPermitted {
                at: self.at(op),
                detail: "the host never writes the container's file".into(),
            });
        }
        let mut info = WriterOpenInfo::default();
        let uri = match &self.location {
            Location::File(path) => {
                match self.check_path(op, path)? {
                    None if !create => return Err(DbError::NotFound { at: self.at(op) }),
                    None => {
                        let parent = parent_dir(path);
                        if !parent.is_dir() {
                            return Err(DbError::NotFound {
                                at: At::new(parent, self.role, op),
                            });
                        }
                        info.created = true;
                    }
                    Some(FileHeader::Empty) => info.created = true,
                    Some(_) => {}
                }
                file_uri(path, if create { "rwc" } else { "rw" }).map_err(|source| DbError::Io {
                    at: self.at(op),
                    source,
                })?
            }
            Location::MemDb(name) => format!("file:/{name}?vfs=memdb"),
        };
        let mut conn = self.establish(op, &uri)?;
        self.pragma(
            &mut conn,
            op,
            &format!("PRAGMA busy_timeout = {}", self.busy_timeout_ms()),
        )?;
        let before = self.journal_mode(&mut conn, op)?;
        if before != "delete"
            && !(matches!(self.location, Location::MemDb(_)) && before == "memory")
        {
            let after: String = diesel::sql_query("PRAGMA journal_mode = DELETE")
                .get_result::<JournalModeRow>(&mut conn)
                .map_err(|e| self.err(op, e))?
                .journal_mode
                .to_ascii_lowercase();
            if after != "delete" {
                return Err(DbError::WalMode {
                    at: self.at(op),
                    mode: after,
                });
            }
            info.switched_from = Some(before);
        }
        self.pragma(&mut conn, op, "PRAGMA synchronous = FULL")?;
        self.pragma(&mut conn, op, "PRAGMA foreign_keys = ON")?;
        Ok((conn, info))
    }

    /// Opens the file read-only: SQLite refuses every write through this connection, and a
    /// WAL-mode file is refused with [`DbError::WalMode`]. Creates nothing next to the file.
    pub fn open_reader(&self, op: &'static str) -> Result<SqliteConnection, DbError> {
        if self.is_untrusted() {
            return self.open_untrusted(op, false);
        }
        let uri = match &self.location {
            Location::File(path) => {
                match self.check_path(op, path)? {
                    None => return Err(DbError::NotFound { at: self.at(op) }),
                    // Refused from the header, before SQLite opens it: even a `mode=ro`
                    // connection to a WAL file creates `-wal` and `-shm` next to it on its
                    // first read, which is exactly what must not happen across the mount.
                    Some(FileHeader::Sqlite { wal: true }) => {
                        return Err(DbError::WalMode {
                            at: self.at(op),
                            mode: "wal".into(),
                        })
                    }
                    Some(_) => {}
                }
                let mut uri = file_uri(path, "ro").map_err(|source| DbError::Io {
                    at: self.at(op),
                    source,
                })?;
                // Across a FUSE mount a journal the writer already deleted can stay visible
                // for a second and stop every read as "hot": ask the file server instead.
                if crate::journal_probe::available() {
                    uri.push_str("&vfs=");
                    uri.push_str(&crate::journal_probe::VFS_NAME.to_string_lossy());
                }
                uri
            }
            Location::MemDb(name) => format!("file:/{name}?vfs=memdb&mode=ro"),
        };
        let mut conn = self.establish(op, &uri)?;
        // A reader lives for one poll and runs each statement once: see `one_shot`.
        one_shot(&mut conn);
        self.pragma(
            &mut conn,
            op,
            &format!("PRAGMA busy_timeout = {}", self.busy_timeout_ms()),
        )?;
        self.pragma(&mut conn, op, "PRAGMA mmap_size = 0")?;
        self.pragma(&mut conn, op, "PRAGMA query_only = ON")?;
        // First real read: surfaces a hot journal, a corrupt header or a non-database now.
        diesel::sql_query("SELECT count(*) AS n FROM sqlite_master")
            .get_result::<CountRow>(&mut conn)
            .map_err(|e| self.err(op, e))?;
        let mode = self.journal_mode(&mut conn, op)?;
        if mode == "wal" {
            return Err(DbError::WalMode {
                at: self.at(op),
                mode,
            });
        }
        Ok(conn)
    }

    /// Opens a read-only, lock-free snapshot of the main file (`immutable=1`), ignoring any
    /// WAL or journal next to it. Only for inspecting a file that a reader must not open
    /// normally (a WAL-mode file during a dry run): it never creates or changes anything.
    pub fn open_snapshot(&self, op: &'static str) -> Result<SqliteConnection, DbError> {
        if self.is_untrusted() {
            return self.open_untrusted(op, true);
        }
        let uri = match &self.location {
            Location::File(path) => {
                if self.check_path(op, path)?.is_none() {
                    return Err(DbError::NotFound { at: self.at(op) });
                }
                let mut uri = file_uri(path, "ro").map_err(|source| DbError::Io {
                    at: self.at(op),
                    source,
                })?;
                uri.push_str("&immutable=1");
                uri
            }
            Location::MemDb(name) => format!("file:/{name}?vfs=memdb&mode=ro"),
        };
        let mut conn = self.establish(op, &uri)?;
        self.pragma(&mut conn, op, "PRAGMA query_only = ON")?;
        Ok(conn)
    }

    /// The host's hardened, read-only connection to the container's file (see
    /// [`crate::untrusted`]), its schema checked against what the host reads.
    fn open_untrusted(
        &self,
        op: &'static str,
        immutable: bool,
    ) -> Result<SqliteConnection, DbError> {
        self.open_untrusted_reader(op, crate::untrusted::HOST_READS_OUTBOUND, immutable)
    }

    /// Opens this file read-only through [`crate::untrusted`] whatever its kind and role, its
    /// schema checked against `tables` only (no view, each listed table an ordinary table with
    /// those columns and no generated one). For a file that sits in a folder the container can
    /// write although it is not the container's file: the older host's single-layout folder
    /// holds inbound.db there, and an operator tool reads it as attacker input. `immutable`
    /// reads without locks (a frozen snapshot). The folder and file are reached without
    /// following links or blocking; a hot journal is reported, never rolled back.
    pub fn open_untrusted_reader(
        &self,
        op: &'static str,
        tables: &[crate::untrusted::ExpectedTable],
        immutable: bool,
    ) -> Result<SqliteConnection, DbError> {
        let Location::File(path) = &self.location else {
            return Err(DbError::NotPermitted {
                at: self.at(op),
                detail: "an untrusted file must be a real file".into(),
            });
        };
        crate::untrusted::open(
            crate::untrusted::OpenUntrusted {
                path,
                budget: self.budget,
                busy_timeout: self.busy_timeout(),
                immutable,
                tables,
            },
            &|| self.at(op),
            &|e| self.err(op, e),
        )
    }

    /// Refuses symlinks and non-files, and tells a missing file (`None`) from a header.
    fn check_path(&self, op: &'static str, path: &Path) -> Result<Option<FileHeader>, DbError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DbError::Io {
                    at: self.at(op),
                    source,
                })
            }
        };
        if meta.file_type().is_symlink() {
            return Err(DbError::UnsafePath {
                at: self.at(op),
                detail: "it is a symbolic link".into(),
            });
        }
        if !meta.is_file() {
            return Err(DbError::UnsafePath {
                at: self.at(op),
                detail: "it is not a regular file".into(),
            });
        }
        let header = sniff_header(path).map_err(|source| DbError::Io {
            at: self.at(op),
            source,
        })?;
        if header == FileHeader::NotSqlite {
            return Err(DbError::NotADatabase {
                at: self.at(op),
                detail: "the header is not \"SQLite format 3\"".into(),
            });
        }
        Ok(Some(header))
    }

    fn establish(&self, op: &'static str, uri: &str) -> Result<SqliteConnection, DbError> {
        SqliteConnection::establish(uri).map_err(|source| {
            let text = source.to_string();
            match crate::error::classify_message(self.at(op), &text, self.limits()) {
                Some(typed) => typed,
                None => DbError::Open {
                    at: self.at(op),
                    source,
                },
            }
        })
    }

    fn pragma(
        &self,
        conn: &mut SqliteConnection,
        op: &'static str,
        sql: &str,
    ) -> Result<(), DbError> {
        conn.batch_execute(sql).map_err(|e| self.err(op, e))
    }

    fn journal_mode(
        &self,
        conn: &mut SqliteConnection,
        op: &'static str,
    ) -> Result<String, DbError> {
        diesel::sql_query("PRAGMA journal_mode")
            .get_result::<JournalModeRow>(conn)
            .map(|r| r.journal_mode.to_ascii_lowercase())
            .map_err(|e| self.err(op, e))
    }
}

/// Turns off diesel's prepared-statement cache on a connection that runs each statement once
/// and is then closed (every reader, and a writer used only to read its own file). Diesel
/// prepares cached statements with `SQLITE_PREPARE_PERSISTENT`, which keeps SQLite from using
/// its lookaside allocator while compiling them: on a connection that never reuses a
/// statement that roughly doubles the cost of each query (measured by `cargo xtask bench`).
/// Write transactions keep the cache: their loops run the same statement per row.
#[doc(hidden)] // for the store crate's own-file reads; not part of the API
pub fn one_shot(conn: &mut SqliteConnection) {
    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `file:` URI for `path` with `mode`, every unsafe byte percent-encoded.
fn file_uri(path: &Path, mode: &str) -> std::io::Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path)?;
    Ok(format!(
        "file:{}?mode={mode}",
        percent_encode(abs.as_os_str().as_bytes(), URI_PATH)
    ))
}

/// The SQLite library version linked into this binary (proves the bundled one is in use).
pub fn sqlite_version() -> String {
    // SAFETY: sqlite3_libversion returns a pointer to a static NUL-terminated string.
    let ptr = unsafe { libsqlite3_sys::sqlite3_libversion() };
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null, static, NUL-terminated (see above).
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encodes_fragment_and_query_characters() {
        let uri = file_uri(Path::new("/data/a#b?c%d e/inbound.db"), "ro").unwrap();
        assert_eq!(uri, "file:/data/a%23b%3Fc%25d%20e/inbound.db?mode=ro");
    }
}
