//! Looking at a session's two files the way an operator running as root must: bounded, and
//! without trusting anything a container can write.
//!
//! - A file in a folder only the host writes (inbound.db in the split layout) is opened with
//!   the schema crate's ordinary read-only connections.
//! - A file in a folder the container can write (outbound.db always; inbound.db too in the
//!   single layout, where the whole folder is the container's) is reached only through
//!   [`sessionbus_schema::untrusted`]: its folder is held as a no-follow descriptor, each
//!   name is `lstat`ed relative to it, the file is opened through the read-only VFS (never a
//!   rollback, never a `-wal`, a FIFO or link refused at once), and its schema state is read
//!   by [`untrusted_state`] only once every table in it is known to be ordinary (a virtual
//!   table's module never runs on it) and its migrations table is small.

mod host;

use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl, SqliteConnection};
use serde::Serialize;
use sessionbus_schema::migrate::{self, FileState};
use sessionbus_schema::untrusted::{ExpectedTable, NodeKind, UntrustedDir, MAX_SCHEMA_ENTRIES};
use sessionbus_schema::{DbError, DbFile, FileKind, Role};
use sessionbus_store::{Layout, SessionPaths};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most rows a migrations table may have before its file is refused (real files have a
/// handful).
pub const MAX_MIGRATION_ROWS: i64 = 1000;

/// The table diesel records applied migrations in.
const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// The longest table, column or index name, or migration version, read from a file of the
/// container's.
pub const MAX_NAME_BYTES: usize = 256;

/// The longest `CREATE` statement read from a file of the container's (real ones are well
/// under 2 KiB).
pub const MAX_SQL_BYTES: usize = 20_000;

/// How often a hot journal is looked at again before it is reported (a live writer's journal
/// can look hot for a moment).
const HOT_JOURNAL_RETRIES: u32 = 5;

/// What inspect reads from inbound.db when that file is in the container's folder (single
/// layout): checked before any of it is read.
pub const INBOUND_READS: &[ExpectedTable] = &[
    ExpectedTable {
        name: "messages_in",
        required: true,
        columns: &[
            "id",
            "seq",
            "kind",
            "timestamp",
            "status",
            "process_after",
            "tries",
            "trigger",
            "content",
        ],
    },
    ExpectedTable {
        name: "host_replies",
        required: true,
        columns: &["id", "seq", "in_reply_to", "timestamp", "content"],
    },
    ExpectedTable {
        name: "delivered",
        required: true,
        columns: &["message_out_id"],
    },
    ExpectedTable {
        name: "delivery_attempts",
        required: true,
        columns: &["message_out_id", "attempts", "last_error"],
    },
    ExpectedTable {
        name: "host_cursor",
        required: true,
        columns: &["name", "seq"],
    },
    ExpectedTable {
        name: "held_outbound",
        required: true,
        columns: &["source", "seq", "message_out_id", "deliver_after_ms"],
    },
];

/// A file's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaReport {
    /// `current`, `older` (migrations pending), `legacy` (never migrated) or `empty`.
    pub state: &'static str,
    /// The newest migration recorded in the file.
    pub version: Option<String>,
    /// How many migrations the file records.
    pub applied: usize,
    /// Migrations this build knows that the file lacks.
    pub pending: Vec<String>,
    /// The legacy generation (G0..G8) of a never-migrated file.
    pub legacy_generation: Option<String>,
}

impl SchemaReport {
    /// The report of a file state.
    pub fn of(state: &FileState, kind: FileKind) -> SchemaReport {
        match state {
            FileState::Empty => SchemaReport {
                state: "empty",
                version: None,
                applied: 0,
                pending: state.pending(kind),
                legacy_generation: None,
            },
            FileState::Legacy { generation, .. } => SchemaReport {
                state: "legacy",
                version: None,
                applied: 0,
                pending: state.pending(kind),
                legacy_generation: Some(generation.to_string()),
            },
            FileState::Migrated { applied, pending } => SchemaReport {
                state: if pending.is_empty() {
                    "current"
                } else {
                    "older"
                },
                version: applied.iter().max().cloned(),
                applied: applied.len(),
                pending: pending.clone(),
                legacy_generation: None,
            },
        }
    }

    /// True for this build's schema.
    pub fn is_current(&self) -> bool {
        self.state == "current"
    }
}

/// One of the two files, as looked at.
#[derive(Debug, Clone, Serialize)]
pub struct FileLook {
    /// Which file.
    pub kind: FileKind,
    /// Its path.
    pub path: PathBuf,
    /// The folder it is in can be written by the container, so it was read as untrusted.
    pub untrusted: bool,
    /// Its size in bytes; `None` when it does not exist (or is not a regular file).
    pub size: Option<u64>,
    /// Its schema, when it could be read.
    pub schema: Option<SchemaReport>,
    /// The header says WAL journal mode.
    pub wal_mode: bool,
    /// A `-journal` next to it (hot when its writer died, or planted).
    pub journal: Option<PathBuf>,
    /// A `-wal` or `-shm` next to it.
    pub wal_files: Vec<PathBuf>,
    /// How its content was read: `file` (a read-only connection), `snapshot` (an immutable
    /// snapshot of the main file, for a WAL-mode file the host owns) or `nothing`.
    pub read: &'static str,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
    /// The schema state as the schema crate reads it, when it could be read.
    #[serde(skip)]
    pub state: Option<FileState>,
    /// There is no such file.
    #[serde(skip)]
    pub missing: bool,
    /// What the schema state asks of the operator (legacy, older, empty), with the command
    /// that fixes it; a caller that reports problems adds it to them.
    #[serde(skip)]
    pub schema_note: Option<String>,
}

impl FileLook {
    pub(super) fn new(kind: FileKind, path: &Path, untrusted: bool) -> FileLook {
        FileLook {
            kind,
            path: path.to_path_buf(),
            untrusted,
            size: None,
            schema: None,
            wal_mode: false,
            journal: None,
            wal_files: Vec::new(),
            read: "nothing",
            error: None,
            state: None,
            missing: false,
            schema_note: None,
        }
    }

    pub(super) fn fail(&mut self, problems: &mut Vec<String>, problem: String) {
        self.error = Some(problem.clone());
        problems.push(problem);
    }
}

/// An open read-only connection to a file whose schema is current.
pub struct Reader {
    /// The connection.
    pub conn: SqliteConnection,
    /// Read as an immutable snapshot (a WAL-mode file).
    pub snapshot: bool,
}

/// The command an operator runs to migrate the session at `dir`.
pub fn migrate_hint(dir: &Path) -> String {
    format!("sessionbus migrate --session {}", dir.display())
}

#[derive(QueryableByName)]
struct TableRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    head: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// True for `CREATE TABLE ...` (any case and spacing), false for `CREATE VIRTUAL TABLE` and
/// anything else.
fn is_plain_create_table(sql: &str) -> bool {
    fn keyword<'a>(s: &'a str, word: &str) -> Option<&'a str> {
        let s = s.trim_start();
        let head = s.get(..word.len())?;
        let rest = s.get(word.len()..)?;
        let boundary = !rest
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        (head.eq_ignore_ascii_case(word) && boundary).then_some(rest)
    }
    keyword(sql, "create")
        .and_then(|rest| keyword(rest, "table"))
        .is_some()
}

/// The schema state of a file read through an untrusted connection, reading no more than
/// the structure: names and statements must be short ([`MAX_NAME_BYTES`],
/// [`MAX_SQL_BYTES`]), every table must be an ordinary table (so no virtual table's module
/// runs while its columns are listed), and the migrations table must hold at most
/// [`MAX_MIGRATION_ROWS`] short rows; then the schema crate's own survey decides.
pub fn untrusted_state(
    conn: &mut SqliteConnection,
    file: &DbFile,
    op: &'static str,
) -> Result<FileState, DbError> {
    let refuse = |detail: String| DbError::RefusedSchema {
        at: file.at(op),
        detail,
    };
    let mut count = |sql: String| -> Result<i64, DbError> {
        diesel::sql_query(sql)
            .get_result::<CountRow>(conn)
            .map(|r| r.n)
            .map_err(|e| file.err(op, e))
    };
    // Every name and statement the survey reads is short in any real file: refuse a schema
    // whose text alone would be a large allocation (SQLite caps each value, not their sum).
    let oversized = count(format!(
        "SELECT count(*) AS n FROM sqlite_master WHERE octet_length(name) > {MAX_NAME_BYTES} \
         OR octet_length(sql) > {MAX_SQL_BYTES}"
    ))?;
    if oversized > 0 {
        return Err(refuse(format!(
            "{oversized} schema entries have a name over {MAX_NAME_BYTES} bytes or a statement \
             over {MAX_SQL_BYTES} bytes"
        )));
    }
    let tables: Vec<TableRow> = diesel::sql_query(format!(
        "SELECT CAST(name AS TEXT) AS name, CAST(substr(ifnull(sql, ''), 1, 64) AS TEXT) AS head \
         FROM sqlite_master WHERE type = 'table' LIMIT {}",
        MAX_SCHEMA_ENTRIES + 1
    ))
    .load(conn)
    .map_err(|e| file.err(op, e))?;
    if let Some(t) = tables.iter().find(|t| !is_plain_create_table(&t.head)) {
        return Err(refuse(format!(
            "{:?} is not an ordinary table (a virtual table?); the file's schema is not read",
            t.name
        )));
    }
    if tables.iter().any(|t| t.name == MIGRATIONS_TABLE) {
        let mut count = |sql: String| -> Result<i64, DbError> {
            diesel::sql_query(sql)
                .get_result::<CountRow>(conn)
                .map(|r| r.n)
                .map_err(|e| file.err(op, e))
        };
        let long = count(format!(
            "SELECT count(*) AS n FROM (SELECT 1 FROM {MIGRATIONS_TABLE} \
             WHERE octet_length(version) > {MAX_NAME_BYTES} LIMIT 1)"
        ))?;
        if long > 0 {
            return Err(refuse(format!(
                "its migrations table holds a version over {MAX_NAME_BYTES} bytes"
            )));
        }
        let rows = count(format!("SELECT count(*) AS n FROM {MIGRATIONS_TABLE}"))?;
        if rows > MAX_MIGRATION_ROWS {
            return Err(refuse(format!(
                "its migrations table has {rows} rows, over {MAX_MIGRATION_ROWS}"
            )));
        }
    }
    migrate::inspect(conn, file, op)
}

/// The names next to a file (`-journal`, `-wal`, `-shm`), looked at in `dir` without
/// following them. Problems (a journal that is not a regular file) go to `problems`.
fn neighbours(dir: &UntrustedDir, look: &mut FileLook, problems: &mut Vec<String>) {
    let Some(name) = look.path.file_name().map(OsStr::to_os_string) else {
        return;
    };
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut n = name.clone();
        n.push(suffix);
        match dir.entry(&n) {
            Ok(None) => {}
            Ok(Some(info)) => {
                let path = dir.path().join(&n);
                if info.kind != NodeKind::Regular {
                    problems.push(format!(
                        "{} is {}, not a regular file: never opened",
                        path.display(),
                        info.kind.describe()
                    ));
                }
                if suffix == "-journal" {
                    look.journal = Some(path);
                } else {
                    look.wal_files.push(path);
                }
            }
            Err(e) => problems.push(format!(
                "cannot look at {}: {e}",
                dir.path().join(&n).display()
            )),
        }
    }
}

/// Opens `file` read-only (through the untrusted layer when it is the container's, or when
/// `tables` is given), retrying a hot journal a few times.
pub(super) fn open_retrying(
    file: &DbFile,
    op: &'static str,
    tables: Option<&[ExpectedTable]>,
) -> Result<SqliteConnection, DbError> {
    let mut attempt = 0;
    loop {
        let r = match tables {
            None => file.open_reader(op),
            Some(t) => file.open_untrusted_reader(op, t, false),
        };
        match r {
            Err(DbError::HotJournal { .. }) if attempt + 1 < HOT_JOURNAL_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Looks at a file in a folder the container can write (`untrusted`): names `lstat`ed through
/// a no-follow descriptor, content read only through the untrusted layer. `content` is the
/// tables a caller will read when the schema is current (`None`: the host's own view of
/// outbound.db, already checked by the schema crate).
fn look_untrusted(
    paths: &SessionPaths,
    kind: FileKind,
    content: Option<&[ExpectedTable]>,
    problems: &mut Vec<String>,
) -> (FileLook, Option<Reader>) {
    const OP: &str = "inspect";
    let path = match kind {
        FileKind::Inbound => &paths.inbound,
        FileKind::Outbound => &paths.outbound,
    };
    let name = kind.file_name();
    let mut look = FileLook::new(kind, path, true);
    let Some((parent, leaf)) = sessionbus_schema::untrusted::fs::split_parent(path) else {
        look.fail(problems, format!("{name}: the path has no file name"));
        return (look, None);
    };
    let dir = match UntrustedDir::open(parent) {
        Ok(d) => d,
        Err(e) => {
            look.fail(problems, format!("{name}: cannot open its folder: {e}"));
            return (look, None);
        }
    };
    neighbours(&dir, &mut look, problems);
    match dir.entry(leaf) {
        Ok(None) => {
            look.missing = true;
            look.fail(
                problems,
                format!("{name} is missing (its {} creates it)", writer_of(kind)),
            );
            return (look, None);
        }
        Ok(Some(info)) if info.kind != NodeKind::Regular => {
            look.fail(
                problems,
                format!(
                    "{name} is {}, not a regular file: it is not opened",
                    info.kind.describe()
                ),
            );
            return (look, None);
        }
        Ok(Some(info)) if info.size == 0 => {
            look.size = Some(0);
            look.schema = Some(SchemaReport::of(&FileState::Empty, kind));
            look.fail(
                problems,
                format!("{name} is empty (its {} initialises it)", writer_of(kind)),
            );
            return (look, None);
        }
        Ok(Some(info)) => look.size = Some(info.size),
        Err(e) => {
            look.fail(problems, format!("{name}: {e}"));
            return (look, None);
        }
    }
    drop(dir);
    let file = DbFile::new(path, kind, Role::Operator);
    let structure: Option<&[ExpectedTable]> = match kind {
        FileKind::Outbound => None,
        FileKind::Inbound => Some(&[]),
    };
    let mut conn = match open_retrying(&file, OP, structure) {
        Ok(c) => c,
        Err(e) => {
            if matches!(e, DbError::WalMode { .. }) {
                look.wal_mode = true;
            }
            let text = match &e {
                DbError::HotJournal { journal, .. } => format!(
                    "{name} has a hot journal ({}): its writer ({}) died mid-transaction, or the \
                     journal was planted. The main file may hold half a transaction, so nothing \
                     is read from it; the container rolls it back on its next start, inside its \
                     sandbox. The operator never does: it leaves it as it is.",
                    journal.display(),
                    writer_of(kind)
                ),
                DbError::WalMode { .. } => format!(
                    "{name} is in WAL journal mode, which does not work across the container \
                     mount; the container switches it back on its next open. It is not read \
                     here (a WAL file in the container's folder is never opened)."
                ),
                other => format!("{name}: {other}"),
            };
            look.fail(problems, text);
            return (look, None);
        }
    };
    let state = match untrusted_state(&mut conn, &file, OP) {
        Ok(s) => s,
        Err(e) => {
            look.fail(problems, format!("{name}: {e}"));
            return (look, None);
        }
    };
    let schema = SchemaReport::of(&state, kind);
    look.schema_note = schema_note(&schema, kind, &paths.dir);
    let current = schema.is_current();
    look.schema = Some(schema);
    look.state = Some(state);
    if !current {
        return (look, None);
    }
    look.read = "file";
    match content {
        // The host's view of outbound.db: its schema was checked for what the host reads.
        None if kind == FileKind::Outbound => (
            look,
            Some(Reader {
                conn,
                snapshot: false,
            }),
        ),
        None => (look, None),
        Some(tables) => {
            drop(conn);
            match open_retrying(&file, OP, Some(tables)) {
                Ok(conn) => (
                    look,
                    Some(Reader {
                        conn,
                        snapshot: false,
                    }),
                ),
                Err(e) => {
                    look.read = "nothing";
                    look.fail(problems, format!("{name}: {e}"));
                    (look, None)
                }
            }
        }
    }
}

fn writer_of(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Inbound => "writer, the host,",
        FileKind::Outbound => "writer, the container,",
    }
}

/// What a schema state (legacy, older, empty) asks of the operator, with the command that
/// fixes it; `None` for a current file.
pub(super) fn schema_note(schema: &SchemaReport, kind: FileKind, dir: &Path) -> Option<String> {
    let name = kind.file_name();
    let fix = match kind {
        FileKind::Inbound => format!("run `{}`", migrate_hint(dir)),
        FileKind::Outbound => {
            "its container migrates it when it starts (the host never writes it)".to_string()
        }
    };
    match schema.state {
        "legacy" => Some(format!(
            "{name} is a legacy file ({}) that this library never migrated: {fix}",
            schema.legacy_generation.as_deref().unwrap_or("?")
        )),
        "older" => Some(format!(
            "{name} lacks {} migration(s) of this build ({}): {fix}",
            schema.pending.len(),
            schema.pending.join(", ")
        )),
        "empty" => Some(format!("{name} holds no tables: {fix}")),
        _ => None,
    }
}

/// Looks at outbound.db (always the container's) through the untrusted layer. Returns a
/// reader when its schema is current.
pub fn look_at_outbound(
    paths: &SessionPaths,
    problems: &mut Vec<String>,
) -> (FileLook, Option<Reader>) {
    look_untrusted(paths, FileKind::Outbound, None, problems)
}

/// Looks at inbound.db: in the split layout as the host's own file, in the single layout
/// (a folder the container can write) through the untrusted layer, with the tables of
/// [`INBOUND_READS`] checked before any is read. Returns a reader when its schema is current.
pub fn look_at_inbound(
    paths: &SessionPaths,
    problems: &mut Vec<String>,
) -> (FileLook, Option<Reader>) {
    if paths.layout == Layout::Single {
        return look_untrusted(paths, FileKind::Inbound, Some(INBOUND_READS), problems);
    }
    host::look_host_inbound(paths, problems)
}
