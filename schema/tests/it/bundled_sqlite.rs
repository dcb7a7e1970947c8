//! The SQLite linked into this test binary is the bundled one of `libsqlite3-sys`, not the
//! system library (cargo's per-package feature unification can silently swap them, see
//! docs/sqlite-notes.md), and diesel's connections run on it.

use crate::common::*;
use diesel::sql_types::Text;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use sessionbus_schema::conn::sqlite_version;
use sessionbus_schema::FileKind;

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    v: String,
}

fn bundled() -> String {
    // The header's version as a C string; `to_str` drops the trailing NUL.
    libsqlite3_sys::SQLITE_VERSION
        .to_str()
        .expect("ASCII version")
        .to_string()
}

#[test]
fn the_library_reports_the_bundled_version() {
    let linked = sqlite_version();
    assert!(!linked.is_empty());
    assert!(!linked.ends_with('\0'));
    assert_eq!(linked, bundled());
}

#[test]
fn diesel_connections_run_on_the_bundled_sqlite() {
    let mut mem = SqliteConnection::establish(":memory:").unwrap();
    let v = diesel::sql_query("SELECT sqlite_version() AS v")
        .get_result::<Version>(&mut mem)
        .unwrap()
        .v;
    assert_eq!(v, bundled());

    // And through the library's own reader of a real file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    migrated(&path, FileKind::Inbound);
    let mut c = reader_file(&path, FileKind::Inbound)
        .open_reader("version")
        .unwrap();
    let v = diesel::sql_query("SELECT sqlite_version() AS v")
        .get_result::<Version>(&mut c)
        .unwrap()
        .v;
    assert_eq!(v, sqlite_version());
}

#[test]
fn the_bundled_sqlite_is_new_enough_for_the_migrations() {
    // RETURNING (3.35) and pragma table-valued functions with arguments are used by the
    // workspace; a system SQLite older than that would fail at run time, not build time.
    let parts: Vec<u32> = sqlite_version()
        .split('.')
        .map(|p| p.parse().expect("numeric version"))
        .collect();
    assert!(
        (parts[0], parts[1]) >= (3, 35),
        "SQLite {} is older than 3.35",
        sqlite_version()
    );
}
