//! A migration that fails part way leaves the file byte for byte as it was, with no journal
//! left next to it: adoption, the harness and the shape check run in one IMMEDIATE
//! transaction.

use crate::common::*;
use sessionbus_schema::migrate;
use sessionbus_schema::{DbError, FileKind};
use sessionbus_testkit::legacy::{self, SessionStateShape, Style};
use std::path::Path;

/// Runs `migrate` on a file expected to fail and checks the folder is untouched.
fn failing_migrate(path: &Path, kind: FileKind) -> DbError {
    let dir = path.parent().unwrap();
    let before = snapshot(dir);
    let err = migrate::migrate(
        &writer_file(path, kind),
        t0(),
        sessionbus_schema::migrate::IfMissing::Fail,
    )
    .expect_err("this migration must fail");
    assert_same_folder(&before, &snapshot(dir), &format!("failed migrate: {err}"));
    assert!(!journal_of(path).exists());
    assert_eq!(err.at().path, path, "the error names the file: {err}");
    assert_eq!(err.at().op, "migrate");
    err
}

#[test]
fn a_foreign_host_replies_table_fails_the_shape_check_and_changes_nothing() {
    // A legacy G3 inbound.db that someone gave a table of the name a later migration creates
    // (CREATE TABLE IF NOT EXISTS keeps theirs). Adoption has by then added four columns to
    // messages_in and two migrations have run: all of it must be rolled back.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    legacy::create(&path, FileKind::Inbound, 3, Style::Patched, 5).unwrap();
    raw_exec(
        &path,
        "CREATE TABLE host_replies (id TEXT PRIMARY KEY, body TEXT, seq INTEGER);
         INSERT INTO host_replies VALUES ('x', 'theirs', 2);",
    );
    let rows_before = dump_all(&mut raw(&path));
    let err = failing_migrate(&path, FileKind::Inbound);
    match &err {
        DbError::UnrecognisedShape { detail, .. } => {
            assert!(detail.contains("host_replies"), "{detail}")
        }
        other => panic!("expected UnrecognisedShape, got {other:?}"),
    }
    // Still the same legacy file: no migrations table, no added columns, same rows.
    let mut c = raw(&path);
    assert!(!tables(&mut c).iter().any(|t| t == "host_cursor"));
    assert!(!column_names(&mut c, "messages_in").contains(&"on_wake".to_string()));
    assert_eq!(dump_all(&mut c), rows_before);
    assert!(diesel::RunQueryDsl::execute(
        diesel::sql_query("SELECT 1 FROM __diesel_schema_migrations"),
        &mut c
    )
    .is_err());
}

#[test]
fn a_null_session_state_value_fails_the_rebuild_and_changes_nothing() {
    // An outbound.db whose session_state.value was declared without NOT NULL and holds a NULL:
    // the rebuild into `value TEXT NOT NULL` fails on the INSERT ... SELECT.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbound.db");
    legacy::create(&path, FileKind::Outbound, 0, Style::Created, 5).unwrap();
    raw_exec(
        &path,
        "CREATE TABLE session_state (key TEXT PRIMARY KEY, value TEXT);
         INSERT INTO session_state VALUES ('a', 'kept'), ('b', NULL);",
    );
    let err = failing_migrate(&path, FileKind::Outbound);
    match &err {
        DbError::Migration { detail, .. } => {
            assert!(detail.contains("NOT NULL"), "{detail}")
        }
        other => panic!("expected Migration, got {other:?}"),
    }
    assert!(err.to_string().contains("file left unchanged"), "{err}");
    let mut c = raw(&path);
    assert_eq!(column_names(&mut c, "session_state"), ["key", "value"]);
    assert_eq!(count(&mut c, "session_state"), 2);
}

#[test]
fn a_failing_adoption_after_a_rebuild_keeps_the_old_session_state() {
    // The seed-patched session_state is rebuilt first; then the harness fails on a foreign
    // table. The rebuilt table must not survive.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbound.db");
    legacy::create_with(
        &path,
        FileKind::Outbound,
        2,
        Style::Patched,
        SessionStateShape::SeedPatched,
        3,
    )
    .unwrap();
    // A view named like an index a migration creates makes `CREATE INDEX IF NOT EXISTS` fail
    // ("there is already a view named ...").
    raw_exec(&path, "CREATE VIEW idx_processing_ack_status AS SELECT 1;");
    let before = dump_all(&mut raw(&path));
    let err = failing_migrate(&path, FileKind::Outbound);
    assert!(
        matches!(err, DbError::Migration { .. }),
        "expected Migration, got {err:?}"
    );
    let mut c = raw(&path);
    let dflt = columns(&mut c, "session_state")
        .into_iter()
        .find(|c| c.name == "updated_at")
        .and_then(|c| c.default);
    assert_eq!(dflt.as_deref(), Some("''"), "the seed's shape must be back");
    assert_eq!(dump_all(&mut c), before);
}

#[test]
fn a_failing_migration_of_a_migrated_file_changes_nothing() {
    // A current file missing its newest migration, where that migration cannot apply.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbound.db");
    migrated(&path, FileKind::Inbound);
    let newest = migrate::latest_version(FileKind::Inbound);
    raw_exec(
        &path,
        &format!(
            "DROP TABLE host_cursor;
             CREATE VIEW host_cursor AS SELECT 'x' AS name, 2 AS seq;
             DELETE FROM __diesel_schema_migrations WHERE version = '{newest}';"
        ),
    );
    let err = failing_migrate(&path, FileKind::Inbound);
    // CREATE TABLE IF NOT EXISTS is a no-op next to a view of that name; the shape check
    // after the harness catches it and rolls the migration back.
    match &err {
        DbError::UnrecognisedShape { detail, .. } => {
            assert!(detail.contains("host_cursor"), "{detail}")
        }
        other => panic!("expected UnrecognisedShape, got {other:?}"),
    }
    assert!(!recorded_versions(&mut raw(&path)).contains(&newest));
}
