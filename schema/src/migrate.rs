//! Embedded migrations for both files, adoption of legacy files, and schema checks.
//!
//! Upstream never versioned its files: each generation (docs/format.md §4) created tables with
//! `CREATE TABLE IF NOT EXISTS` and patched old files with `ALTER TABLE ... ADD COLUMN`. A file
//! without `__diesel_schema_migrations` is therefore *adopted*: its generation is read off the
//! tables and columns that are there, the columns it lacks are added with upstream's backfills,
//! then the embedded migrations run (their baseline is `CREATE ... IF NOT EXISTS`), and the
//! result is checked against the shape a fresh file gets. All of it happens in one
//! `BEGIN IMMEDIATE` transaction: a failure leaves the file exactly as it was.
//!
//! The two sets use disjoint version ranges (`...-1xxxxx` inbound, `...-2xxxxx` outbound), so a
//! file handed the wrong set is recognised instead of half-migrated.

use crate::conn::{sniff_header, DbFile, FileHeader};
use crate::error::{classify_message, DbError};
use crate::time::Timestamp;
use crate::types::FileKind;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

/// Migrations of `inbound.db`.
pub const INBOUND_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/inbound");
/// Migrations of `outbound.db`.
pub const OUTBOUND_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/outbound");

/// The table diesel records applied migrations in.
pub const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// The embedded migration set of a file kind.
pub fn migrations(kind: FileKind) -> EmbeddedMigrations {
    match kind {
        FileKind::Inbound => INBOUND_MIGRATIONS,
        FileKind::Outbound => OUTBOUND_MIGRATIONS,
    }
}

/// Versions of the migrations this build knows for `kind`, oldest first.
pub fn known_versions(kind: FileKind) -> Vec<String> {
    let set = migrations(kind);
    let mut v: Vec<String> = MigrationSource::<Sqlite>::migrations(&set)
        .map(|ms| ms.iter().map(|m| m.name().version().to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The newest migration this build knows for `kind`.
pub fn latest_version(kind: FileKind) -> String {
    known_versions(kind).pop().unwrap_or_default()
}

/// A legacy generation of docs/format.md §4 (G0 to G8), read off the tables that are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Generation(pub u8);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G{}", self.0)
    }
}

/// What a file holds, as far as its schema goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FileState {
    /// No tables: a new or zero-byte file.
    Empty,
    /// Tables of the older implementation and no migrations table.
    Legacy {
        /// The newest generation whose features are all present.
        generation: Generation,
        /// Columns and tables adoption will add or rebuild, as `table.column` / `table`.
        missing: Vec<String>,
    },
    /// Migrated by this library.
    Migrated {
        /// Versions recorded in the file.
        applied: Vec<String>,
        /// Versions this build knows that the file lacks.
        pending: Vec<String>,
    },
}

impl FileState {
    /// Versions that migrating would apply.
    pub fn pending(&self, kind: FileKind) -> Vec<String> {
        match self {
            FileState::Migrated { pending, .. } => pending.clone(),
            FileState::Empty | FileState::Legacy { .. } => known_versions(kind),
        }
    }

    /// True when migrating would change nothing.
    pub fn is_current(&self) -> bool {
        matches!(self, FileState::Migrated { pending, .. } if pending.is_empty())
    }
}

/// What [`migrate`] did to one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationOutcome {
    /// The file.
    pub path: std::path::PathBuf,
    /// Which file of the pair.
    pub kind: FileKind,
    /// What it held before.
    pub before: FileState,
    /// Versions applied now, oldest first (empty when it was already current).
    pub applied: Vec<String>,
    /// The journal mode it was switched from (`wal`), if it was not `delete`.
    pub switched_from: Option<String>,
    /// The file did not exist or was empty.
    pub created: bool,
}

impl MigrationOutcome {
    /// True when the file was changed in any way.
    pub fn changed(&self) -> bool {
        !self.applied.is_empty() || self.switched_from.is_some() || self.created
    }
}

/// What [`plan`] found a dry run would do, having written nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationPlan {
    /// What the file holds now.
    pub state: FileState,
    /// Versions that would be applied.
    pub would_apply: Vec<String>,
    /// The file is in WAL mode and would be switched to DELETE.
    pub would_switch_from_wal: bool,
}

impl MigrationPlan {
    /// True when migrating would change nothing.
    pub fn is_current(&self) -> bool {
        self.would_apply.is_empty() && !self.would_switch_from_wal
    }
}

/// Whether a schema check is for reading or for writing the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading: newer (additive) migrations are fine, missing ones are not.
    Read,
    /// Writing: the file must carry exactly the migrations this build knows.
    Write,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    col_type: String,
    #[diesel(sql_type = BigInt)]
    not_null: i64,
    #[diesel(sql_type = Nullable<Text>)]
    dflt_value: Option<String>,
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

/// Columns of every table, as SQLite reports them (name, type, not-null, default, pk).
pub type ColumnShape = (String, String, bool, Option<String>, i64);

/// The shape of a file's own tables: columns per table, plus index and trigger names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    /// Table name to its columns, sorted by column name.
    pub tables: BTreeMap<String, BTreeSet<ColumnShape>>,
    /// Names of explicit indexes.
    pub indexes: BTreeSet<String>,
    /// Names of triggers.
    pub triggers: BTreeSet<String>,
}

fn table_names(conn: &mut SqliteConnection) -> diesel::QueryResult<BTreeSet<String>> {
    Ok(diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .load::<NameRow>(conn)?
    .into_iter()
    .map(|r| r.name)
    .collect())
}

fn columns(conn: &mut SqliteConnection, table: &str) -> diesel::QueryResult<Vec<ColumnRow>> {
    diesel::sql_query(
        "SELECT name, upper(type) AS col_type, \"notnull\" AS not_null, dflt_value, pk \
         FROM pragma_table_info(?)",
    )
    .bind::<Text, _>(table)
    .load::<ColumnRow>(conn)
}

fn column_names(conn: &mut SqliteConnection, table: &str) -> diesel::QueryResult<BTreeSet<String>> {
    Ok(columns(conn, table)?.into_iter().map(|c| c.name).collect())
}

/// Reads the shape of the tables named in `only` (all tables when `None`).
pub fn read_shape(
    conn: &mut SqliteConnection,
    only: Option<&BTreeSet<String>>,
) -> diesel::QueryResult<Shape> {
    let mut shape = Shape::default();
    for t in table_names(conn)? {
        if t == MIGRATIONS_TABLE || only.is_some_and(|o| !o.contains(&t)) {
            continue;
        }
        let cols = columns(conn, &t)?
            .into_iter()
            .map(|c| (c.name, c.col_type, c.not_null != 0, c.dflt_value, c.pk))
            .collect();
        shape.tables.insert(t, cols);
    }
    for (kind, set) in [
        ("index", &mut shape.indexes),
        ("trigger", &mut shape.triggers),
    ] {
        let rows =
            diesel::sql_query("SELECT name FROM sqlite_master WHERE type = ? AND sql IS NOT NULL")
                .bind::<Text, _>(kind)
                .load::<NameRow>(conn)?;
        set.extend(rows.into_iter().map(|r| r.name));
    }
    Ok(shape)
}

/// This build's own migrations failed on an empty in-memory file: a defect of the build, not
/// of any session file (see [`expected_shape`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this build's {kind:?} migrations cannot build a fresh file: {detail}")]
#[non_exhaustive]
pub struct ShapeError {
    /// The file kind whose migrations failed.
    pub kind: FileKind,
    /// What SQLite or the migration harness said.
    pub detail: String,
}

/// The shape a fresh file of `kind` gets from this build's migrations (computed once).
pub fn expected_shape(kind: FileKind) -> Result<&'static Shape, ShapeError> {
    static INBOUND: OnceLock<Result<Shape, String>> = OnceLock::new();
    static OUTBOUND: OnceLock<Result<Shape, String>> = OnceLock::new();
    let slot = match kind {
        FileKind::Inbound => &INBOUND,
        FileKind::Outbound => &OUTBOUND,
    };
    slot.get_or_init(|| {
        let mut conn = SqliteConnection::establish(":memory:").map_err(|e| e.to_string())?;
        conn.run_pending_migrations(migrations(kind))
            .map_err(|e| e.to_string())?;
        read_shape(&mut conn, None).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|detail| ShapeError {
        kind,
        detail: detail.clone(),
    })
}

/// Tables that belong to each file in any generation (used to spot a swapped pair).
fn own_tables(kind: FileKind) -> &'static [&'static str] {
    match kind {
        FileKind::Inbound => &[
            "messages_in",
            "delivered",
            "destinations",
            "session_routing",
        ],
        FileKind::Outbound => &[
            "messages_out",
            "processing_ack",
            "session_state",
            "container_state",
        ],
    }
}

/// Columns every generation has: a table missing one of these is not of any generation.
fn core_columns(kind: FileKind) -> &'static [(&'static str, &'static [&'static str])] {
    match kind {
        FileKind::Inbound => &[
            (
                "messages_in",
                &[
                    "id",
                    "seq",
                    "kind",
                    "timestamp",
                    "status",
                    "process_after",
                    "recurrence",
                    "tries",
                    "platform_id",
                    "channel_type",
                    "thread_id",
                    "content",
                ],
            ),
            ("delivered", &["message_out_id", "delivered_at"]),
            (
                "destinations",
                &[
                    "name",
                    "display_name",
                    "type",
                    "channel_type",
                    "platform_id",
                    "agent_group_id",
                ],
            ),
            (
                "session_routing",
                &["id", "channel_type", "platform_id", "thread_id"],
            ),
        ],
        FileKind::Outbound => &[
            (
                "messages_out",
                &[
                    "id",
                    "seq",
                    "in_reply_to",
                    "timestamp",
                    "deliver_after",
                    "recurrence",
                    "kind",
                    "platform_id",
                    "channel_type",
                    "thread_id",
                    "content",
                ],
            ),
            (
                "processing_ack",
                &["message_id", "status", "status_changed"],
            ),
            ("session_state", &["key", "value"]),
            (
                "container_state",
                &[
                    "id",
                    "current_tool",
                    "tool_declared_timeout_ms",
                    "tool_started_at",
                    "updated_at",
                ],
            ),
        ],
    }
}

/// A column later generations added with `ALTER TABLE ... ADD COLUMN`, and its backfill.
struct AddedColumn {
    table: &'static str,
    column: &'static str,
    ddl: &'static str,
    backfill: Option<&'static str>,
}

const INBOUND_ADDED: &[AddedColumn] = &[
    AddedColumn {
        table: "delivered",
        column: "platform_message_id",
        ddl: "TEXT",
        backfill: None,
    },
    AddedColumn {
        table: "delivered",
        column: "status",
        ddl: "TEXT NOT NULL DEFAULT 'delivered'",
        backfill: None,
    },
    AddedColumn {
        table: "messages_in",
        column: "series_id",
        ddl: "TEXT",
        backfill: Some("UPDATE messages_in SET series_id = id WHERE series_id IS NULL"),
    },
    AddedColumn {
        table: "messages_in",
        column: "trigger",
        ddl: "INTEGER NOT NULL DEFAULT 1",
        backfill: None,
    },
    AddedColumn {
        table: "messages_in",
        column: "source_session_id",
        ddl: "TEXT",
        backfill: None,
    },
    AddedColumn {
        table: "messages_in",
        column: "on_wake",
        ddl: "INTEGER NOT NULL DEFAULT 0",
        backfill: None,
    },
];

/// What is in the file, gathered with reads only.
struct Survey {
    tables: BTreeSet<String>,
    cols: BTreeMap<String, BTreeSet<String>>,
}

impl Survey {
    fn take(conn: &mut SqliteConnection) -> diesel::QueryResult<Survey> {
        let tables = table_names(conn)?;
        let mut cols = BTreeMap::new();
        for t in &tables {
            if t != MIGRATIONS_TABLE {
                cols.insert(t.clone(), column_names(conn, t)?);
            }
        }
        Ok(Survey { tables, cols })
    }

    fn has(&self, table: &str) -> bool {
        self.tables.contains(table)
    }

    fn has_col(&self, table: &str, col: &str) -> bool {
        self.cols.get(table).is_some_and(|c| c.contains(col))
    }
}

/// Reads the generation of a legacy file off what is there, and what adoption must add.
fn legacy_generation(kind: FileKind, s: &Survey) -> (Generation, Vec<String>) {
    // Each generation's features, in order; the generation is the last one whose features
    // (and all before it) are present.
    let features: Vec<(u8, bool)> = match kind {
        FileKind::Inbound => vec![
            (
                1,
                s.has_col("delivered", "platform_message_id")
                    && s.has_col("delivered", "status")
                    && s.has("destinations"),
            ),
            (3, s.has("session_routing")),
            (4, s.has_col("messages_in", "series_id")),
            (6, s.has_col("messages_in", "trigger")),
            (7, s.has_col("messages_in", "source_session_id")),
            (8, s.has_col("messages_in", "on_wake")),
        ],
        FileKind::Outbound => vec![(2, s.has("session_state")), (5, s.has("container_state"))],
    };
    let mut generation = Generation(0);
    for (g, present) in features {
        if !present {
            break;
        }
        generation = Generation(g);
    }
    let mut missing = Vec::new();
    for (table, _) in core_columns(kind) {
        if !s.has(table) {
            missing.push((*table).to_string());
        }
    }
    if kind == FileKind::Inbound {
        for a in INBOUND_ADDED {
            if s.has(a.table) && !s.has_col(a.table, a.column) {
                missing.push(format!("{}.{}", a.table, a.column));
            }
        }
    } else if s.has("session_state") && !s.has_col("session_state", "updated_at") {
        missing.push("session_state.updated_at".into());
    }
    (generation, missing)
}

fn applied_versions(conn: &mut SqliteConnection) -> diesel::QueryResult<Vec<String>> {
    let mut v: Vec<String> = diesel::sql_query(format!("SELECT version FROM {MIGRATIONS_TABLE}"))
        .load::<VersionRow>(conn)?
        .into_iter()
        .map(|r| r.version)
        .collect();
    v.sort();
    Ok(v)
}

fn hint_for(file: &DbFile) -> String {
    match file.path().parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            format!("sessionbus migrate --session {}", dir.display())
        }
        _ => "sessionbus migrate".to_string(),
    }
}

/// Reads what `conn` (any handle, read-only is enough) holds, refusing files that are newer
/// than this build, that hold the other file's tables, or whose tables fit no generation.
pub fn inspect(
    conn: &mut SqliteConnection,
    file: &DbFile,
    op: &'static str,
) -> Result<FileState, DbError> {
    let kind = file.kind();
    let survey = Survey::take(conn).map_err(|e| file.err(op, e))?;
    let wrong = |detail: String| DbError::WrongFile {
        at: file.at(op),
        expected: kind,
        detail,
    };
    let others: Vec<&str> = own_tables(kind.other())
        .iter()
        .copied()
        .filter(|t| survey.has(t))
        .collect();
    if !others.is_empty() && !own_tables(kind).iter().any(|t| survey.has(t)) {
        return Err(wrong(format!(
            "it holds {} of {}",
            others.join(", "),
            kind.other()
        )));
    }
    if survey.has(MIGRATIONS_TABLE) {
        let applied = applied_versions(conn).map_err(|e| file.err(op, e))?;
        let known = known_versions(kind);
        let other_known = known_versions(kind.other());
        let unknown: Vec<&String> = applied.iter().filter(|v| !known.contains(v)).collect();
        if let Some(v) = unknown.iter().find(|v| other_known.contains(v)) {
            return Err(wrong(format!("it records {} migration {v}", kind.other())));
        }
        if let Some(newest) = unknown.iter().max() {
            return Err(DbError::NewerThanCode {
                at: file.at(op),
                file_version: (*newest).clone(),
                code_version: latest_version(kind),
            });
        }
        let pending = known.into_iter().filter(|v| !applied.contains(v)).collect();
        return Ok(FileState::Migrated { applied, pending });
    }
    if !own_tables(kind).iter().any(|t| survey.has(t)) {
        return Ok(FileState::Empty);
    }
    // A legacy file: every table that is there must have every column of generation 0.
    for (table, cols) in core_columns(kind) {
        if let Some(have) = survey.cols.get(*table) {
            let lacking: Vec<&str> = cols
                .iter()
                .copied()
                .filter(|c| !have.contains(*c))
                .collect();
            if !lacking.is_empty() {
                return Err(DbError::UnrecognisedShape {
                    at: file.at(op),
                    detail: format!("{table} lacks {}", lacking.join(", ")),
                });
            }
        }
    }
    let (generation, missing) = legacy_generation(kind, &survey);
    Ok(FileState::Legacy {
        generation,
        missing,
    })
}

/// Checks, through any handle (read-only is enough) and without writing, that the file's
/// schema is recent enough for `access`. The error says what the operator should run.
///
/// The host's view of the container's file ([`DbFile::is_untrusted`]) passes at once: its
/// migrations table is the container's to forge, and the container may be the older
/// implementation, which keeps every legacy generation. Its schema was already checked
/// structurally when the connection was opened (see [`crate::untrusted::shape`]).
pub fn check_schema(
    conn: &mut SqliteConnection,
    file: &DbFile,
    access: Access,
    op: &'static str,
) -> Result<(), DbError> {
    if file.is_untrusted() {
        return Ok(());
    }
    let applied = match applied_versions(conn) {
        Ok(v) => v,
        Err(e) => {
            let err = file.err(op, e);
            // A missing migrations table is "not migrated" (unless the file is the other one
            // of the pair, which migrating would not fix); anything else is itself.
            if !matches!(err, DbError::Query { .. }) {
                return Err(err);
            }
            let tables = table_names(conn).map_err(|e| file.err(op, e))?;
            if tables.contains(MIGRATIONS_TABLE) {
                return Err(err);
            }
            if let Err(wrong @ DbError::WrongFile { .. }) = inspect(conn, file, op) {
                return Err(wrong);
            }
            return Err(DbError::NotMigrated {
                at: file.at(op),
                hint: hint_for(file),
            });
        }
    };
    let kind = file.kind();
    let known = known_versions(kind);
    if let Some(missing) = known.iter().find(|v| !applied.contains(v)) {
        if applied
            .iter()
            .any(|v| known_versions(kind.other()).contains(v))
        {
            return Err(DbError::WrongFile {
                at: file.at(op),
                expected: kind,
                detail: format!("it records {} migrations", kind.other()),
            });
        }
        return Err(DbError::TooOld {
            at: file.at(op),
            file_version: applied.last().cloned().unwrap_or_else(|| "none".into()),
            required: missing.clone(),
            hint: hint_for(file),
        });
    }
    if access == Access::Write {
        if let Some(newest) = applied.iter().filter(|v| !known.contains(v)).max() {
            return Err(DbError::NewerThanCode {
                at: file.at(op),
                file_version: newest.clone(),
                code_version: latest_version(kind),
            });
        }
    }
    Ok(())
}

/// What a migration would do, found without writing anything: no file, journal or table is
/// created or touched. A WAL-mode file is read as an immutable snapshot of its main file.
pub fn plan(file: &DbFile) -> Result<MigrationPlan, DbError> {
    const OP: &str = "plan migration";
    let wal = file.is_file()
        && matches!(
            sniff_header(file.path()),
            Ok(FileHeader::Sqlite { wal: true })
        );
    let mut conn = if wal {
        file.open_snapshot(OP)?
    } else {
        file.open_reader(OP)?
    };
    let state = inspect(&mut conn, file, OP)?;
    Ok(MigrationPlan {
        would_apply: state.pending(file.kind()),
        would_switch_from_wal: wal,
        state,
    })
}

enum TxError {
    Diesel(diesel::result::Error),
    Db(DbError),
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Diesel(e)
    }
}

/// What [`migrate`] does when the file does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    /// Create it (provisioning, or a container creating its own file).
    Create,
    /// Fail with [`DbError::NotFound`].
    Fail,
}

/// Brings one file to this build's schema, adopting a legacy file in place. A missing file is
/// created or refused as `if_missing` says. `now` stamps rebuilt rows that lacked a
/// timestamp.
pub fn migrate(
    file: &DbFile,
    now: Timestamp,
    if_missing: IfMissing,
) -> Result<MigrationOutcome, DbError> {
    const OP: &str = "migrate";
    let (mut conn, info) = file.open_writer_with(OP, if_missing == IfMissing::Create)?;
    let before = inspect(&mut conn, file, OP)?;
    let mut outcome = MigrationOutcome {
        path: file.path().to_path_buf(),
        kind: file.kind(),
        before: before.clone(),
        applied: Vec::new(),
        switched_from: info.switched_from,
        created: info.created,
    };
    if before.is_current() {
        return Ok(outcome);
    }
    let kind = file.kind();
    let result = conn.immediate_transaction::<_, TxError, _>(|c| {
        if let FileState::Legacy { .. } = before {
            adopt_legacy(c, kind, now)?;
        }
        let applied = c
            .run_pending_migrations(migrations(kind))
            .map_err(|e| TxError::Db(migration_error(file, OP, &e.to_string())))?
            .into_iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>();
        verify_shape(c, file, OP)?;
        Ok(applied)
    });
    match result {
        Ok(applied) => {
            outcome.applied = applied;
            Ok(outcome)
        }
        // A failing step of adoption (a constraint the rebuilt table enforces, say) is a
        // failed migration, rolled back: say so, unless SQLite said something more specific
        // (locked, corrupt, disk full, ...).
        Err(TxError::Diesel(e)) => Err(match file.err(OP, e) {
            DbError::Query { at, source } => DbError::Migration {
                at,
                detail: source.to_string(),
            },
            typed => typed,
        }),
        Err(TxError::Db(e)) => Err(e),
    }
}

fn migration_error(file: &DbFile, op: &'static str, msg: &str) -> DbError {
    classify_message(file.at(op), msg, file.limits()).unwrap_or_else(|| DbError::Migration {
        at: file.at(op),
        detail: msg.to_string(),
    })
}

/// Adds what a legacy file lacks, with upstream's backfills. Runs inside the migration's
/// transaction, before the harness.
fn adopt_legacy(c: &mut SqliteConnection, kind: FileKind, now: Timestamp) -> Result<(), TxError> {
    let survey = Survey::take(c)?;
    match kind {
        FileKind::Inbound => {
            for a in INBOUND_ADDED {
                if survey.has(a.table) && !survey.has_col(a.table, a.column) {
                    // Identifiers come from the constant table above, never from input.
                    c.batch_execute(&format!(
                        "ALTER TABLE {} ADD COLUMN \"{}\" {}",
                        a.table, a.column, a.ddl
                    ))?;
                    if let Some(sql) = a.backfill {
                        c.batch_execute(sql)?;
                    }
                }
            }
        }
        FileKind::Outbound => {
            if survey.has("session_state") {
                rebuild_session_state(c, &survey, now)?;
            }
        }
    }
    Ok(())
}

/// `session_state` exists in the wild without `updated_at`, and (from the seed's own open
/// path) with `updated_at ... DEFAULT ''`. Neither can be fixed by ALTER, so the table is
/// rebuilt in the current shape; rows without a time get the adoption time.
fn rebuild_session_state(
    c: &mut SqliteConnection,
    survey: &Survey,
    now: Timestamp,
) -> Result<(), TxError> {
    let expected = expected_shape(FileKind::Outbound)
        .ok()
        .and_then(|s| s.tables.get("session_state").cloned());
    let current = read_shape(c, Some(&BTreeSet::from(["session_state".to_string()])))?
        .tables
        .remove("session_state");
    if expected.is_some() && current == expected {
        return Ok(());
    }
    let stamp = now.to_iso().replace('\'', "");
    let updated = if survey.has_col("session_state", "updated_at") {
        format!("COALESCE(NULLIF(updated_at, ''), '{stamp}')")
    } else {
        format!("'{stamp}'")
    };
    c.batch_execute(&format!(
        "CREATE TABLE session_state__adopt (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL);
         INSERT INTO session_state__adopt (key, value, updated_at) SELECT key, value, {updated} FROM session_state;
         DROP TABLE session_state;
         ALTER TABLE session_state__adopt RENAME TO session_state;"
    ))?;
    Ok(())
}

/// After migrating, the file's own tables must be exactly what a fresh file gets (column
/// order aside): otherwise the transaction is rolled back.
fn verify_shape(c: &mut SqliteConnection, file: &DbFile, op: &'static str) -> Result<(), TxError> {
    let expected = expected_shape(file.kind()).map_err(|e| {
        TxError::Db(DbError::Migration {
            at: file.at(op),
            detail: e.to_string(),
        })
    })?;
    let names: BTreeSet<String> = expected.tables.keys().cloned().collect();
    let got = read_shape(c, Some(&names))?;
    let mut problems = Vec::new();
    for (table, cols) in &expected.tables {
        match got.tables.get(table) {
            None => problems.push(format!("table {table} missing")),
            Some(have) if have != cols => {
                let extra: Vec<_> = have.difference(cols).map(|c| c.0.clone()).collect();
                let lack: Vec<_> = cols.difference(have).map(|c| format!("{c:?}")).collect();
                problems.push(format!(
                    "table {table}: differs (unexpected {extra:?}, expected {lack:?})"
                ));
            }
            Some(_) => {}
        }
    }
    for i in expected.indexes.difference(&got.indexes) {
        problems.push(format!("index {i} missing"));
    }
    for t in expected.triggers.difference(&got.triggers) {
        problems.push(format!("trigger {t} missing"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TxError::Db(DbError::UnrecognisedShape {
            at: file.at(op),
            detail: problems.join("; "),
        }))
    }
}
