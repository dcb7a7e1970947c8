//! The host's reads of the container's file (`outbound.db` opened by the host) survive what a
//! compromised container writes: every attack here is planted with plain write access to the
//! container's folder, and each ends in a typed error (or a correct read), quickly, with
//! nothing outside the container's folder changed.

use crate::common::{migrated, raw_exec};
use diesel::sql_types::BigInt;
use diesel::{QueryableByName, RunQueryDsl};
use sessionbus_schema::{DbError, DbFile, FileKind, Role};
use sessionbus_testkit::hostile;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The container's folder holding a current outbound.db (as its container created it), and a
/// host file next to it that the attacks aim at.
struct Fixture {
    _dir: tempfile::TempDir,
    area: PathBuf,
    outbound: PathBuf,
    victim: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let area = dir.path().join("container");
    std::fs::create_dir(&area).unwrap();
    let outbound = area.join("outbound.db");
    migrated(&outbound, FileKind::Outbound);
    let victim = dir.path().join("inbound.db");
    std::fs::write(&victim, b"the host's own file").unwrap();
    Fixture {
        _dir: dir,
        area,
        outbound,
        victim,
    }
}

fn host_reader(path: &Path) -> DbFile {
    DbFile::new(path, FileKind::Outbound, Role::Host)
}

#[derive(Debug, QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count_rows(path: &Path) -> Result<i64, DbError> {
    let f = host_reader(path);
    let mut c = f.open_reader("count rows")?;
    diesel::sql_query("SELECT count(*) AS n FROM messages_out")
        .get_result::<N>(&mut c)
        .map(|r| r.n)
        .map_err(|e| f.err("count rows", e))
}

/// Runs `f`, failing the test if it takes longer than a second (a hang would never return, so
/// the open itself must not block: that is what is being tested).
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{what} took {:?}",
        start.elapsed()
    );
    out
}

#[test]
fn an_honest_file_reads_normally() {
    let fx = fixture();
    raw_exec(
        &fx.outbound,
        "INSERT INTO messages_out (id, seq, timestamp, kind, content) \
         VALUES ('r1', 1, '2026-01-01 00:00:00', 'chat', '{}');",
    );
    assert_eq!(count_rows(&fx.outbound).unwrap(), 1);
}

#[test]
fn the_host_never_opens_the_container_file_for_writing() {
    let fx = fixture();
    let Err(err) = host_reader(&fx.outbound).open_writer("write") else {
        panic!("the host opened the container's file for writing");
    };
    assert!(matches!(err, DbError::NotPermitted { .. }), "{err}");
}

#[test]
fn a_hot_journal_naming_a_host_file_is_reported_and_never_rolled_back() {
    let fx = fixture();
    std::fs::write(
        fx.area.join("outbound.db-journal"),
        hostile::super_journal_naming(&fx.victim),
    )
    .unwrap();
    let err = count_rows(&fx.outbound).unwrap_err();
    assert!(
        matches!(err, DbError::HotJournal { .. } | DbError::ReadOnly { .. }),
        "{err}"
    );
    assert_eq!(std::fs::read(&fx.victim).unwrap(), b"the host's own file");
    assert!(
        fx.area.join("outbound.db-journal").exists(),
        "journal left as it was"
    );
}

#[test]
fn fifos_where_the_file_or_its_journal_belong_fail_at_once() {
    let fx = fixture();
    hostile::mkfifo(&fx.area.join("outbound.db-journal"));
    let err = quick("journal FIFO", || count_rows(&fx.outbound).unwrap_err());
    assert!(matches!(err, DbError::UnsafePath { .. }), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");

    std::fs::remove_file(fx.area.join("outbound.db-journal")).unwrap();
    std::fs::remove_file(&fx.outbound).unwrap();
    hostile::mkfifo(&fx.outbound);
    let err = quick("database FIFO", || count_rows(&fx.outbound).unwrap_err());
    assert!(matches!(err, DbError::UnsafePath { .. }), "{err}");
}

#[test]
fn symlinks_and_folders_where_files_belong_are_refused() {
    let fx = fixture();
    std::fs::rename(&fx.outbound, fx.area.join("real.db")).unwrap();
    std::os::unix::fs::symlink(fx.area.join("real.db"), &fx.outbound).unwrap();
    let err = count_rows(&fx.outbound).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");

    std::fs::remove_file(&fx.outbound).unwrap();
    std::fs::rename(fx.area.join("real.db"), &fx.outbound).unwrap();
    std::os::unix::fs::symlink(&fx.victim, fx.area.join("outbound.db-journal")).unwrap();
    let err = count_rows(&fx.outbound).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&fx.victim).unwrap(), b"the host's own file");

    std::fs::remove_file(fx.area.join("outbound.db-journal")).unwrap();
    std::fs::create_dir(fx.area.join("outbound.db-journal")).unwrap();
    let err = count_rows(&fx.outbound).unwrap_err();
    assert!(err.to_string().contains("directory"), "{err}");
}

#[test]
fn a_planted_wal_is_ignored_not_opened() {
    let fx = fixture();
    std::fs::write(fx.area.join("outbound.db-wal"), vec![0xab; 4096]).unwrap();
    assert_eq!(count_rows(&fx.outbound).unwrap(), 0);
    assert!(!fx.area.join("outbound.db-shm").exists(), "no -shm created");
}

#[test]
fn views_virtual_tables_and_generated_columns_are_refused() {
    let attacks = [
        (
            "view",
            "DROP TABLE messages_out; CREATE VIEW messages_out AS \
             WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) \
             SELECT x AS id, x AS seq, '' AS in_reply_to, '' AS timestamp, NULL AS deliver_after, \
             NULL AS recurrence, 'chat' AS kind, NULL AS platform_id, NULL AS channel_type, \
             NULL AS thread_id, randomblob(1000000) AS content FROM r;",
        ),
        (
            "virtual",
            "DROP TABLE messages_out; CREATE VIRTUAL TABLE messages_out USING fts5(id, seq, \
             in_reply_to, timestamp, deliver_after, recurrence, kind, platform_id, \
             channel_type, thread_id, content);",
        ),
        (
            "generated",
            "DROP TABLE messages_out; CREATE TABLE messages_out (id TEXT PRIMARY KEY, \
             seq INTEGER UNIQUE, in_reply_to TEXT, timestamp TEXT NOT NULL, \
             deliver_after TEXT, recurrence TEXT, kind TEXT NOT NULL, platform_id TEXT, \
             channel_type TEXT, thread_id TEXT, \
             content TEXT GENERATED ALWAYS AS (hex(zeroblob(1000000))) VIRTUAL);",
        ),
        ("missing", "DROP TABLE processing_ack;"),
        ("view elsewhere", "CREATE VIEW anything AS SELECT 1;"),
    ];
    for (name, sql) in attacks {
        let fx = fixture();
        raw_exec(&fx.outbound, sql);
        let err = quick(name, || count_rows(&fx.outbound).unwrap_err());
        assert!(
            matches!(err, DbError::RefusedSchema { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_huge_value_is_an_error_not_an_allocation() {
    let fx = fixture();
    raw_exec(
        &fx.outbound,
        "INSERT INTO messages_out (id, seq, timestamp, kind, content) \
         VALUES ('big', 1, '2026-01-01 00:00:00', 'chat', '\"' || hex(zeroblob(3000000)) || '\"');",
    );
    let f = host_reader(&fx.outbound);
    let mut c = f.open_reader("read").unwrap();
    #[derive(Debug, QueryableByName)]
    struct Content {
        #[diesel(sql_type = diesel::sql_types::Text)]
        #[allow(dead_code)]
        content: String,
    }
    let err = diesel::sql_query("SELECT content FROM messages_out")
        .load::<Content>(&mut c)
        .map_err(|e| f.err("read", e))
        .unwrap_err();
    assert!(matches!(err, DbError::LimitExceeded { .. }), "{err}");
    // Its length is still readable without loading it.
    let n: N = diesel::sql_query("SELECT octet_length(content) AS n FROM messages_out")
        .get_result(&mut c)
        .unwrap();
    assert_eq!(n.n, 6_000_002);
}

#[test]
fn a_runaway_statement_stops_at_its_budget_of_work() {
    // The default wall-clock backstop is seconds: what stops it is the step count.
    let fx = fixture();
    let f = host_reader(&fx.outbound);
    let mut c = f.open_reader("spin").unwrap();
    let start = Instant::now();
    let err = diesel::sql_query(
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) \
         SELECT count(*) AS n FROM r",
    )
    .get_result::<N>(&mut c)
    .map_err(|e| f.err("spin", e))
    .unwrap_err();
    assert!(matches!(err, DbError::OverBudget { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_runaway_statement_stops_at_the_operation_budget() {
    let fx = fixture();
    let f = host_reader(&fx.outbound).with_budget(Duration::from_millis(100));
    let mut c = f.open_reader("spin").unwrap();
    let start = Instant::now();
    let err = diesel::sql_query(
        "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM r) \
         SELECT count(*) AS n FROM r",
    )
    .get_result::<N>(&mut c)
    .map_err(|e| f.err("spin", e))
    .unwrap_err();
    assert!(
        matches!(err, DbError::OverBudget { budget_ms: 100, .. }),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_planted_trigger_never_runs_and_triggers_are_off() {
    let fx = fixture();
    raw_exec(
        &fx.outbound,
        "CREATE TRIGGER evil AFTER INSERT ON processing_ack BEGIN \
           INSERT INTO processing_ack SELECT message_id || 'x', status, status_changed FROM processing_ack; \
         END;",
    );
    let f = host_reader(&fx.outbound);
    let mut c = f.open_reader("read").unwrap();
    // A read-only connection cannot insert anyway; what matters is that the trigger is
    // switched off on it, so even a temp table's write would not fire anything planted.
    let n: N = diesel::sql_query("SELECT count(*) AS n FROM processing_ack")
        .get_result(&mut c)
        .unwrap();
    assert_eq!(n.n, 0);
}

#[test]
fn a_file_that_is_not_a_database_or_is_wal_is_refused_from_its_header() {
    let fx = fixture();
    std::fs::write(&fx.outbound, b"definitely not sqlite, just some bytes").unwrap();
    assert!(matches!(
        count_rows(&fx.outbound).unwrap_err(),
        DbError::NotADatabase { .. }
    ));
    let fx = fixture();
    raw_exec(&fx.outbound, "PRAGMA journal_mode = WAL;");
    assert!(matches!(
        count_rows(&fx.outbound).unwrap_err(),
        DbError::WalMode { .. }
    ));
}

#[test]
fn the_container_folder_itself_as_a_symlink_is_refused() {
    let fx = fixture();
    let elsewhere = fx.area.parent().unwrap().join("elsewhere");
    std::fs::rename(&fx.area, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &fx.area).unwrap();
    let err = count_rows(&fx.outbound).unwrap_err();
    assert!(matches!(err, DbError::UnsafePath { .. }), "{err}");
}

#[test]
fn any_file_in_the_containers_folder_can_be_read_as_untrusted_with_its_own_tables() {
    use sessionbus_schema::untrusted::ExpectedTable;
    let f = fixture();
    // inbound.db where the container can write (the older host's single layout).
    let inbound = f.area.join("inbound.db");
    migrated(&inbound, FileKind::Inbound);
    let file = DbFile::new(&inbound, FileKind::Inbound, Role::Operator);
    let wants = [ExpectedTable {
        name: "messages_in",
        required: true,
        columns: &["id", "seq"],
    }];
    let mut c = quick("open", || file.open_untrusted_reader("read", &wants, false)).unwrap();
    let n: N = diesel::sql_query("SELECT count(*) AS n FROM messages_in")
        .get_result(&mut c)
        .unwrap();
    assert_eq!(n.n, 0);
    drop(c);
    // Its tables are checked against the list given, not the outbound list.
    let missing = [ExpectedTable {
        name: "no_such_table",
        required: true,
        columns: &["id"],
    }];
    assert!(matches!(
        file.open_untrusted_reader("read", &missing, false),
        Err(DbError::RefusedSchema { .. })
    ));
    raw_exec(&inbound, "CREATE VIEW v AS SELECT 1");
    assert!(matches!(
        file.open_untrusted_reader("read", &[], false),
        Err(DbError::RefusedSchema { .. })
    ));
    // A FIFO in its place fails at once, like the container's own file.
    std::fs::remove_file(&inbound).unwrap();
    hostile::mkfifo(&inbound);
    let r = quick("fifo", || file.open_untrusted_reader("read", &[], false));
    assert!(
        matches!(r, Err(DbError::UnsafePath { .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn a_schema_too_large_to_parse_is_refused_from_the_file_itself() {
    // Thousands of planted tables: refused from page 1 of the raw file, before SQLite parses
    // the schema (the entry cap would refuse them too, but only after that parse).
    let many: String = (0..3000)
        .map(|i| format!("CREATE TABLE planted_{i} (a, b, c);"))
        .collect();
    // Few tables with long statements: the schema's B-tree grows a third level.
    let long: String = (0..600)
        .map(|i| {
            format!(
                "CREATE TABLE wide_{i} (c TEXT DEFAULT '{}');",
                "x".repeat(3000)
            )
        })
        .collect();
    for (name, sql) in [("many", many), ("long", long)] {
        let fx = fixture();
        raw_exec(&fx.outbound, &format!("BEGIN; {sql} COMMIT;"));
        let err = quick(name, || count_rows(&fx.outbound).unwrap_err());
        match &err {
            DbError::RefusedSchema { detail, .. } => {
                assert!(
                    detail.contains("before SQLite parses it"),
                    "{name}: {detail}"
                )
            }
            other => panic!("{name}: {other}"),
        }
    }
    // An honest file's schema is nowhere near the bound.
    let fx = fixture();
    assert_eq!(count_rows(&fx.outbound).unwrap(), 0);
}
