//! Helpers shared by the schema crate's integration tests: fixtures on real files in temp
//! dirs, raw (library-free) connections for setting up and inspecting them, and snapshots of
//! a folder to prove that an operation wrote nothing.
#![allow(dead_code)] // each test binary uses its own subset

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use sessionbus_schema::migrate::{self, Generation};
use sessionbus_schema::{DbFile, FileKind, Role, Timestamp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The adoption time handed to `migrate` in tests.
pub fn t0() -> Timestamp {
    Timestamp::parse("2026-05-01T09:30:00.000Z").expect("fixed timestamp parses")
}

/// The file's own writer, the role that normally migrates it.
pub fn writer_file(path: &Path, kind: FileKind) -> DbFile {
    DbFile::new(path, kind, kind.writer())
}

/// The other side's read-only view of the file.
pub fn reader_file(path: &Path, kind: FileKind) -> DbFile {
    let role = match kind.writer() {
        Role::Host => Role::Container,
        _ => Role::Host,
    };
    DbFile::new(path, kind, role)
}

/// A connection that bypasses the library entirely (read-write, creates the file): used to
/// build fixtures and to look at files after the fact.
pub fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::establish(&path.to_string_lossy())
        .unwrap_or_else(|e| panic!("raw open {}: {e}", path.display()))
}

/// Runs `sql` on the file through a raw connection, then closes it.
pub fn raw_exec(path: &Path, sql: &str) {
    raw(path)
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{}: {e}\n{sql}", path.display()));
}

/// A freshly migrated (current) file of `kind` at `path`.
pub fn migrated(path: &Path, kind: FileKind) -> DbFile {
    let f = writer_file(path, kind);
    let out = migrate::migrate(&f, t0(), sessionbus_schema::migrate::IfMissing::Create)
        .unwrap_or_else(|e| panic!("migrate new {}: {e}", path.display()));
    assert!(out.created, "{}: expected a new file", path.display());
    f
}

/// Every file in `dir` (not recursive) with its full contents: comparing two snapshots proves
/// that nothing was created, removed or changed in the folder.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
        let bytes = if meta.is_file() {
            std::fs::read(entry.path()).expect("read file")
        } else {
            Vec::new()
        };
        out.insert(name, bytes);
    }
    out
}

/// Asserts that two folder snapshots are identical, naming what differs.
#[track_caller]
pub fn assert_same_folder(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    let names_before: Vec<_> = before.keys().collect();
    let names_after: Vec<_> = after.keys().collect();
    assert_eq!(
        names_before, names_after,
        "{what}: files in the folder changed"
    );
    for (name, bytes) in before {
        assert!(
            after.get(name) == Some(bytes),
            "{what}: contents of {name} changed"
        );
    }
}

/// `<db>-journal`.
pub fn journal_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-journal");
    PathBuf::from(s)
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct ColRow {
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

#[derive(QueryableByName)]
struct JsonRow {
    #[diesel(sql_type = Text)]
    j: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Nullable<Text>)]
    v: Option<String>,
}

/// One column as `pragma_table_info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Col {
    pub name: String,
    pub col_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub pk: i64,
}

/// User tables of the file (without SQLite's own and without the migrations table).
pub fn tables(conn: &mut SqliteConnection) -> Vec<String> {
    let mut v: Vec<String> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '__diesel_schema_migrations' ORDER BY name",
    )
    .load::<NameRow>(conn)
    .expect("list tables")
    .into_iter()
    .map(|r| r.name)
    .collect();
    v.sort();
    v
}

/// Columns of `table`, in table order.
pub fn columns(conn: &mut SqliteConnection, table: &str) -> Vec<Col> {
    diesel::sql_query(
        "SELECT name, upper(type) AS col_type, \"notnull\" AS not_null, dflt_value, pk \
         FROM pragma_table_info(?) ORDER BY cid",
    )
    .bind::<Text, _>(table)
    .load::<ColRow>(conn)
    .expect("pragma_table_info")
    .into_iter()
    .map(|c| Col {
        name: c.name,
        col_type: c.col_type,
        not_null: c.not_null != 0,
        default: c.dflt_value,
        pk: c.pk,
    })
    .collect()
}

/// Column names of `table`, in table order.
pub fn column_names(conn: &mut SqliteConnection, table: &str) -> Vec<String> {
    columns(conn, table).into_iter().map(|c| c.name).collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Every row of `table`, restricted to `cols`, each as a JSON array (so values keep their
/// SQLite type: `1` and `'1'` differ), sorted.
pub fn dump(conn: &mut SqliteConnection, table: &str, cols: &[String]) -> Vec<String> {
    let list: Vec<String> = cols.iter().map(|c| quote(c)).collect();
    let sql = format!(
        "SELECT json_array({}) AS j FROM {} ORDER BY j",
        list.join(", "),
        quote(table)
    );
    diesel::sql_query(&sql)
        .load::<JsonRow>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.j)
        .collect()
}

/// Every table's columns and rows, as the file holds them now.
pub fn dump_all(conn: &mut SqliteConnection) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let mut out = BTreeMap::new();
    for t in tables(conn) {
        let cols = column_names(conn, &t);
        let rows = dump(conn, &t, &cols);
        out.insert(t, (cols, rows));
    }
    out
}

/// `SELECT count(*) FROM <table>`.
pub fn count(conn: &mut SqliteConnection, table: &str) -> i64 {
    diesel::sql_query(format!("SELECT count(*) AS n FROM {}", quote(table)))
        .get_result::<CountRow>(conn)
        .expect("count")
        .n
}

/// A single text (or NULL) value from `sql`, which must select it as `v`.
pub fn text_values(conn: &mut SqliteConnection, sql: &str) -> Vec<Option<String>> {
    diesel::sql_query(sql)
        .load::<TextRow>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.v)
        .collect()
}

/// A single integer from `sql`, which must select it as `n`.
pub fn int_value(conn: &mut SqliteConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<CountRow>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// The versions recorded in the file's migrations table, sorted.
pub fn recorded_versions(conn: &mut SqliteConnection) -> Vec<String> {
    let mut v: Vec<String> = diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
        .load::<VersionRow>(conn)
        .expect("read migrations table")
        .into_iter()
        .map(|r| r.version)
        .collect();
    v.sort();
    v
}

/// The journal mode stored in the file header (bytes 18 and 19: 1 = rollback, 2 = WAL).
pub fn header_is_wal(path: &Path) -> bool {
    let bytes = std::fs::read(path).expect("read db");
    assert!(bytes.len() >= 100, "{} is not a database", path.display());
    bytes[18] == 2 || bytes[19] == 2
}

/// Turns the database at `path` into WAL mode (header says WAL; no `-wal` left after close).
pub fn make_wal(path: &Path) {
    let mut c = raw(path);
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    let m = diesel::sql_query("PRAGMA journal_mode = WAL")
        .get_result::<Mode>(&mut c)
        .expect("switch to WAL");
    assert_eq!(m.journal_mode, "wal");
    drop(c);
    assert!(header_is_wal(path), "header should say WAL");
}

/// The generation `FileState::Legacy` must report for a file built as generation `g`: a
/// generation that changed nothing in a file cannot be told from the one before it.
pub fn reported_generation(kind: FileKind, g: u8) -> Generation {
    Generation(match kind {
        FileKind::Outbound => match g {
            0 | 1 => 0,
            2..=4 => 2,
            _ => 5,
        },
        FileKind::Inbound => match g {
            1 | 2 => 1,
            4 | 5 => 4,
            other => other,
        },
    })
}
