//! `cargo xtask migrate`, run as the real binary on real files in temp dirs.

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use serde_json::Value;
use sessionbus_schema::migrate::{check_schema, Access};
use sessionbus_schema::{DbFile, FileKind, Role};
use sessionbus_testkit::legacy::{self, SessionStateShape, Style};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

const ROWS: usize = 5;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn xtask<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("migrate")
        .args(args)
        .output()
        .expect("run the xtask binary")
}

fn migrate_dir(data: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), data.into()];
    args.extend(extra.iter().map(Into::into));
    xtask(args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", stdout(o)))
}

fn session(data: &Path, group: &str, id: &str) -> PathBuf {
    let dir = data.join("v2-sessions").join(group).join(id);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn inbound(dir: &Path, g: u8, style: Style) -> PathBuf {
    let p = dir.join("inbound.db");
    legacy::create(&p, FileKind::Inbound, g, style, ROWS).unwrap();
    p
}

fn outbound(dir: &Path, g: u8, state: SessionStateShape) -> PathBuf {
    let p = dir.join("outbound.db");
    legacy::create_with(&p, FileKind::Outbound, g, Style::Created, state, ROWS).unwrap();
    p
}

fn garbage(path: &Path) {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[derive(QueryableByName)]
struct Mode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

/// Switches a valid database to WAL mode and closes it (the header then says WAL).
fn make_wal(path: &Path) {
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
    let m: Mode = diesel::sql_query("PRAGMA journal_mode = WAL")
        .get_result(&mut c)
        .unwrap();
    assert_eq!(m.journal_mode, "wal");
    drop(c);
    assert!(header_says_wal(path));
}

/// Bytes 18 and 19 of an SQLite header are 2 in WAL mode, 1 in rollback-journal modes.
fn header_says_wal(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.len() >= 20 && (bytes[18] == 2 || bytes[19] == 2)
}

fn fresh_heartbeat(dir: &Path) {
    std::fs::write(dir.join(".heartbeat"), b"").unwrap();
}

fn stale_heartbeat(dir: &Path) {
    let f = std::fs::File::create(dir.join(".heartbeat")).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(300))
        .unwrap();
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows per table (the migrations table left out).
fn row_counts(path: &Path) -> BTreeMap<String, i64> {
    let mut c = SqliteConnection::establish(&format!("file:{}?mode=ro", path.display())).unwrap();
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '__diesel_schema_migrations'",
    )
    .load(&mut c)
    .unwrap();
    tables
        .into_iter()
        .map(|t| {
            let n: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM \"{}\"", t.name))
                .get_result(&mut c)
                .unwrap();
            (t.name, n.n)
        })
        .collect()
}

/// Every row that was there before is there after (tables added by the migration may be new).
fn assert_rows_kept(path: &Path, before: &BTreeMap<String, i64>) {
    let after = row_counts(path);
    for (table, n) in before {
        assert_eq!(
            after.get(table),
            Some(n),
            "{}: rows of {table} changed ({before:?} -> {after:?})",
            path.display()
        );
    }
    assert!(
        before.values().sum::<i64>() > 0,
        "fixture without rows: {}",
        path.display()
    );
}

/// The file is in this build's schema, fit for its writer, in DELETE journal mode.
fn assert_current(path: &Path, kind: FileKind) {
    let f = DbFile::new(path, kind, Role::Operator);
    let mut conn = f
        .open_reader("test check")
        .unwrap_or_else(|e| panic!("{e}"));
    check_schema(&mut conn, &f, Access::Write, "test check").unwrap_or_else(|e| panic!("{e}"));
    assert!(!header_says_wal(path), "{} still WAL", path.display());
}

/// Every path under `root` (folders too) with its bytes and mtime, for "nothing was touched".
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mtime = meta.modified().unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            out.insert(p, (None, mtime));
        } else {
            out.insert(p.clone(), (Some(std::fs::read(&p).unwrap()), mtime));
        }
    }
    out
}

fn entry<'a>(report: &'a Value, path: &Path) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str() == Some(path.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no entry for {} in {report:#}", path.display()))
}

fn summary_counts(report: &Value) -> [u64; 4] {
    let s = &report["summary"];
    [
        s["migrated"].as_u64().unwrap(),
        s["already_current"].as_u64().unwrap(),
        s["skipped"].as_u64().unwrap(),
        s["failed"].as_u64().unwrap(),
    ]
}

/// The line of the text output that is about `path`.
fn line_for<'a>(text: &'a str, path: &Path) -> &'a str {
    let p = path.display().to_string();
    text.lines()
        .find(|l| l.contains(&format!(" {p}")) && !l.starts_with("  "))
        .unwrap_or_else(|| panic!("no line for {p} in:\n{text}"))
}

/// A data dir with sessions of mixed generations and every kind of trouble.
struct Mixed {
    dir: tempfile::TempDir,
    /// Files that must migrate, with their kind and row counts before.
    good: Vec<(PathBuf, FileKind, BTreeMap<String, i64>)>,
    corrupt: PathBuf,
    wal: PathBuf,
    live_session: PathBuf,
    live_outbound: PathBuf,
    live_outbound_rows: BTreeMap<String, i64>,
    missing_outbound: PathBuf,
}

impl Mixed {
    fn data(&self) -> &Path {
        self.dir.path()
    }
}

fn mixed() -> Mixed {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut good = Vec::new();
    let mut add = |p: PathBuf, k: FileKind| {
        let rows = row_counts(&p);
        good.push((p, k, rows));
    };

    let s = session(data, "group-a", "s-g0");
    add(inbound(&s, 0, Style::Patched), FileKind::Inbound);
    add(
        outbound(&s, 2, SessionStateShape::Current),
        FileKind::Outbound,
    );

    let s = session(data, "group-a", "s-g3");
    add(inbound(&s, 3, Style::Created), FileKind::Inbound);
    add(
        outbound(&s, 5, SessionStateShape::SeedPatched),
        FileKind::Outbound,
    );

    let s = session(data, "group-b", "s-g8");
    add(inbound(&s, 8, Style::Patched), FileKind::Inbound);
    add(
        outbound(&s, 5, SessionStateShape::NoUpdatedAt),
        FileKind::Outbound,
    );

    let s = session(data, "group-b", "s-corrupt");
    let corrupt = s.join("inbound.db");
    garbage(&corrupt);
    add(
        outbound(&s, 2, SessionStateShape::Current),
        FileKind::Outbound,
    );

    let s = session(data, "group-b", "s-wal");
    let wal = inbound(&s, 8, Style::Created);
    add(wal.clone(), FileKind::Inbound);
    make_wal(&wal);
    add(
        outbound(&s, 5, SessionStateShape::Current),
        FileKind::Outbound,
    );

    let live_session = session(data, "group-c", "s-live");
    add(inbound(&live_session, 4, Style::Patched), FileKind::Inbound);
    let live_outbound = outbound(&live_session, 2, SessionStateShape::Current);
    let live_outbound_rows = row_counts(&live_outbound);
    fresh_heartbeat(&live_session);

    let s = session(data, "group-c", "s-stale");
    add(inbound(&s, 6, Style::Patched), FileKind::Inbound);
    add(
        outbound(&s, 5, SessionStateShape::Current),
        FileKind::Outbound,
    );
    stale_heartbeat(&s);

    let s = session(data, "group-c", "s-half");
    add(inbound(&s, 7, Style::Created), FileKind::Inbound);
    let missing_outbound = s.join("outbound.db");

    Mixed {
        dir,
        good,
        corrupt,
        wal,
        live_session,
        live_outbound,
        live_outbound_rows,
        missing_outbound,
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn mixed_data_dir_migrates_the_good_files_and_reports_the_rest() {
    let m = mixed();
    let corrupt_bytes = std::fs::read(&m.corrupt).unwrap();

    let out = migrate_dir(m.data(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "a failure exits 1:\n{text}");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    // The good ones migrate, with every row kept.
    for (path, kind, rows) in &m.good {
        let line = line_for(&text, path);
        assert!(line.starts_with("migrated"), "{line}");
        assert_current(path, *kind);
        assert_rows_kept(path, rows);
    }
    let g0 = &m.good[0].0;
    assert!(
        line_for(&text, g0).contains("adopted legacy G0 file"),
        "{}",
        line_for(&text, g0)
    );
    assert!(line_for(&text, g0).contains("migrations applied"));

    // The WAL one is switched back to DELETE, and says so.
    let wal_line = line_for(&text, &m.wal);
    assert!(
        wal_line.contains("switched from WAL to DELETE journal mode"),
        "{wal_line}"
    );

    // The corrupt one fails with its path and reason, and is left as it was.
    let bad = line_for(&text, &m.corrupt);
    assert!(bad.starts_with("FAILED"), "{bad}");
    assert!(bad.contains("not an SQLite database"), "{bad}");
    assert_eq!(std::fs::read(&m.corrupt).unwrap(), corrupt_bytes);
    let failures = text.split("Failed:\n").nth(1).expect("a Failed: section");
    assert!(
        failures.contains(&format!(
            "  {}: not an SQLite database",
            m.corrupt.display()
        )),
        "{text}"
    );

    // The live container's outbound.db is skipped, untouched.
    let live = line_for(&text, &m.live_outbound);
    assert!(live.starts_with("skipped"), "{live}");
    assert!(live.contains("container is running"), "{live}");
    assert_eq!(row_counts(&m.live_outbound), m.live_outbound_rows);

    // A session folder without outbound.db is reported, and the rest goes on.
    let half = line_for(&text, &m.missing_outbound);
    assert!(
        half.starts_with("skipped") && half.contains("no such file"),
        "{half}"
    );
    assert!(
        !m.missing_outbound.exists(),
        "a missing file must not be created"
    );

    let good = m.good.len();
    assert!(
        text.contains(&format!(
            "Summary ({} files in 8 session folders): {good} migrated, 0 already current, 2 skipped, 1 failed",
            good + 3
        )),
        "{text}"
    );

    // Second run: every good file is already current and the text says nothing changed.
    let again = migrate_dir(m.data(), &[]);
    let text2 = stdout(&again);
    for (path, _, _) in &m.good {
        assert!(line_for(&text2, path).starts_with("current"), "{text2}");
    }
    assert!(
        text2.contains(&format!("{good} already current, 2 skipped, 1 failed")),
        "{text2}"
    );
    assert!(text2.contains("Nothing changed."), "{text2}");
    assert_eq!(again.status.code(), Some(1), "the corrupt file still fails");
}

#[test]
fn json_report_parses_and_has_the_counts() {
    let m = mixed();
    let out = migrate_dir(m.data(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    let good = m.good.len() as u64;
    assert_eq!(summary_counts(&r), [good, 0, 2, 1], "{r:#}");
    assert_eq!(r["sessions"], 8);
    assert_eq!(r["dry_run"], false);
    assert_eq!(r["data_dir"].as_str(), m.data().to_str());
    assert_eq!(r["files"].as_array().unwrap().len() as u64, good + 3);

    let failures = r["summary"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["path"].as_str(), m.corrupt.to_str());
    assert!(failures[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not an SQLite database"));
    let bad = entry(&r, &m.corrupt);
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["kind"], "inbound");
    assert_eq!(bad["retryable"], false);
    assert!(bad["error"]
        .as_str()
        .unwrap()
        .contains(m.corrupt.to_str().unwrap()));

    let wal = entry(&r, &m.wal);
    assert_eq!(wal["status"], "migrated");
    assert_eq!(wal["switched_from"], "wal");
    assert_eq!(wal["legacy_generation"], 8);

    let g0 = entry(&r, &m.good[0].0);
    assert_eq!(g0["legacy_generation"], 0);
    assert!(!g0["applied"].as_array().unwrap().is_empty());
    assert!(g0["added"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "messages_in.on_wake"));

    let live = entry(&r, &m.live_outbound);
    assert_eq!(live["status"], "skipped");
    assert_eq!(live["cause"]["kind"], "container_running");
    assert!(live["cause"]["heartbeat_age_secs"].as_u64().unwrap() < 60);
    assert!(live["reason"]
        .as_str()
        .unwrap()
        .contains("container is running"));
    assert_eq!(entry(&r, &m.missing_outbound)["cause"]["kind"], "missing");

    // The binary links the bundled SQLite, not the system one.
    let bundled = libsqlite3_sys::SQLITE_VERSION
        .to_str()
        .unwrap()
        .trim_end_matches('\0');
    assert_eq!(r["sqlite_version"].as_str(), Some(bundled));

    // In JSON mode the operator still hears about problems, on stderr.
    let err = stderr(&out);
    assert!(err.contains("warning: FAILED"), "{err}");
    assert!(err.contains("container is running"), "{err}");

    let again = json(&migrate_dir(m.data(), &["--json"]));
    assert_eq!(summary_counts(&again), [0, good, 2, 1], "{again:#}");
}

#[test]
fn dry_run_writes_nothing() {
    let m = mixed();
    // Also a zero-byte file, which a careless open would turn into a database.
    let empty = session(m.data(), "group-d", "s-empty");
    std::fs::write(empty.join("inbound.db"), b"").unwrap();
    outbound(&empty, 5, SessionStateShape::Current);

    let before = snapshot(m.data());
    let out = migrate_dir(m.data(), &["--dry-run"]);
    let after = snapshot(m.data());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "a file or folder appeared or vanished"
    );
    for (p, b) in &before {
        assert!(after.get(p) == Some(b), "{} was touched", p.display());
    }

    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (path, _, _) in &m.good {
        assert!(line_for(&text, path).starts_with("would migrate"), "{text}");
    }
    assert!(
        line_for(&text, &m.wal).contains("would switch from WAL to DELETE"),
        "{text}"
    );
    assert!(line_for(&text, &empty.join("inbound.db")).contains("empty file to initialise"));
    assert!(line_for(&text, &m.corrupt).starts_with("FAILED"));
    assert!(line_for(&text, &m.live_outbound).starts_with("skipped"));
    assert!(text.contains("Dry run: nothing was written."), "{text}");

    let r = json(&migrate_dir(m.data(), &["--dry-run", "--json"]));
    assert_eq!(r["dry_run"], true);
    let good = m.good.len() as u64 + 2;
    assert_eq!(summary_counts(&r), [good, 0, 2, 1]);
    assert_eq!(snapshot(m.data()), before);

    // The dry run pre-migrated nothing: the real run still has all of it to do.
    let real = json(&migrate_dir(m.data(), &["--json"]));
    assert_eq!(summary_counts(&real), [good, 0, 2, 1]);
}

#[test]
fn force_migrates_the_live_containers_outbound() {
    let m = mixed();
    let out = migrate_dir(m.data(), &["--force", "--json"]);
    let r = json(&out);
    assert_eq!(r["force"], true);
    let live = entry(&r, &m.live_outbound);
    assert_eq!(live["status"], "migrated", "{live:#}");
    assert_current(&m.live_outbound, FileKind::Outbound);
    assert_rows_kept(&m.live_outbound, &m.live_outbound_rows);
    assert!(m.live_session.join(".heartbeat").exists());
    // Only the missing file is skipped now.
    assert_eq!(summary_counts(&r)[2], 1);
}

#[test]
fn stale_heartbeat_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path(), "g", "s");
    inbound(&s, 8, Style::Created);
    let out_path = outbound(&s, 5, SessionStateShape::Current);
    stale_heartbeat(&s);
    let r = json(&migrate_dir(dir.path(), &["--json"]));
    assert_eq!(entry(&r, &out_path)["status"], "migrated");
    assert_eq!(summary_counts(&r), [2, 0, 0, 0]);
}

#[test]
fn session_flag_limits_to_the_given_folders() {
    let m = mixed();
    let chosen_a = m.good[0].0.parent().unwrap().to_path_buf(); // s-g0
    let chosen_b = m.live_session.clone();
    let nowhere = m.data().join("v2-sessions/group-z/no-such-session");
    let before = snapshot(m.data());

    let out = xtask([
        "--json".as_ref(),
        "--session".as_ref(),
        chosen_a.as_os_str(),
        "--session".as_ref(),
        chosen_b.as_os_str(),
        "--session".as_ref(),
        nowhere.as_os_str(),
        // Ignored when --session is given.
        "--data-dir".as_ref(),
        "/definitely/not/here".as_ref(),
    ]);
    let r = json(&out);
    assert_eq!(r["data_dir"], Value::Null);
    assert_eq!(r["sessions"], 2);
    let paths: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let expected: Vec<PathBuf> = vec![
        chosen_a.join("inbound.db"),
        chosen_a.join("outbound.db"),
        chosen_b.join("inbound.db"),
        chosen_b.join("outbound.db"),
        nowhere.clone(),
    ];
    assert_eq!(
        paths,
        expected
            .iter()
            .map(|p| p.to_str().unwrap())
            .collect::<Vec<_>>()
    );
    // s-g0 both migrate; s-live: inbound migrates, outbound skipped; the missing folder fails.
    assert_eq!(summary_counts(&r), [3, 0, 1, 1], "{r:#}");
    let missing = entry(&r, &nowhere);
    assert_eq!(missing["kind"], Value::Null);
    assert_eq!(missing["reason"], "no such session folder");
    assert_eq!(out.status.code(), Some(1));

    // Every other file is exactly as it was.
    let after = snapshot(m.data());
    for (p, b) in &before {
        let in_chosen = p.starts_with(&chosen_a) || p.starts_with(&chosen_b);
        let is_parent = chosen_a.starts_with(p) || chosen_b.starts_with(p);
        if !in_chosen && !is_parent {
            assert!(after.get(p) == Some(b), "{} was touched", p.display());
        }
    }
    // A plain text run of a good folder alone exits 0.
    let ok = xtask(["--session".as_ref(), chosen_a.as_os_str()]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("Nothing changed: every file is already current."));
}

#[test]
fn missing_data_dir_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-data-here");
    let out = migrate_dir(&nowhere, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: data dir {} does not exist",
            nowhere.display()
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!nowhere.exists(), "the data dir must not be created");

    let out = migrate_dir(&nowhere, &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(json(&out)["error"]
        .as_str()
        .unwrap()
        .contains("does not exist"));

    // A folder that is not a data dir (no v2-sessions/) is refused the same way.
    let out = migrate_dir(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no v2-sessions/ folder"),
        "{}",
        stderr(&out)
    );

    // The default data dir is ./data, relative to where the command runs.
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("migrate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("data dir ./data does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn clean_data_dir_second_run_is_all_current_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, g) in legacy::GENERATIONS.into_iter().enumerate() {
        let s = session(dir.path(), &format!("group-{}", i % 3), &format!("s-{g}"));
        let style = if i % 2 == 0 {
            Style::Patched
        } else {
            Style::Created
        };
        let p = inbound(&s, g, style);
        files.push((p.clone(), FileKind::Inbound, row_counts(&p)));
        let p = outbound(&s, g, SessionStateShape::Current);
        files.push((p.clone(), FileKind::Outbound, row_counts(&p)));
    }
    let first = migrate_dir(dir.path(), &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    assert!(stdout(&first).contains("18 migrated, 0 already current, 0 skipped, 0 failed"));
    for (p, k, rows) in &files {
        assert_current(p, *k);
        assert_rows_kept(p, rows);
    }
    // Not a terminal: plain lines, no progress bar on stderr, even with many files.
    assert_eq!(stderr(&first), "");
    assert_eq!(
        stdout(&first)
            .lines()
            .filter(|l| l.starts_with("migrated "))
            .count(),
        18
    );

    let before = snapshot(dir.path());
    let second = migrate_dir(dir.path(), &[]);
    let text = stdout(&second);
    assert_eq!(second.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("current ")).count(),
        18
    );
    assert!(
        text.contains("0 migrated, 18 already current, 0 skipped, 0 failed"),
        "{text}"
    );
    assert!(
        text.contains("Nothing changed: every file is already current."),
        "{text}"
    );
    assert_eq!(snapshot(dir.path()), before, "a current file was rewritten");
}

#[test]
fn empty_sessions_folder_is_reported_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("v2-sessions")).unwrap();
    let out = migrate_dir(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("No session folders under"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn help_shows_every_option() {
    let out = xtask(["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for opt in [
        "--data-dir",
        "--session",
        "--dry-run",
        "--json",
        "--force",
        "./data",
    ] {
        assert!(text.contains(opt), "{opt} missing from:\n{text}");
    }
    let bad = xtask(["--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn library_run_uses_the_given_clock_for_heartbeats() {
    use xtask::migrate::{run, FileResult, MigrateArgs, SkipReason};
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path(), "g", "s");
    inbound(&s, 3, Style::Patched);
    outbound(&s, 2, SessionStateShape::Current);
    fresh_heartbeat(&s);
    let args = MigrateArgs {
        data_dir: dir.path().to_path_buf(),
        sessions: Vec::new(),
        dry_run: true,
        json: false,
        force: false,
    };
    let mut events = 0;
    let now = SystemTime::now();
    let r = run(&args, now, &mut |_| events += 1).unwrap();
    assert_eq!(events, 1 + 2 * 2, "found, then start and done per file");
    assert!(matches!(
        r.files[1].result,
        FileResult::Skipped {
            cause: SkipReason::ContainerRunning { .. },
            ..
        }
    ));
    let later = run(&args, now + Duration::from_secs(61), &mut |_| {}).unwrap();
    assert!(matches!(later.files[1].result, FileResult::Migrated(_)));
    assert!(later.nothing_changed() && !later.has_failures());
}

#[test]
fn wal_file_with_its_own_connection_closed_is_converted_in_place() {
    // A migrated (current) file that someone switched to WAL: only the journal mode changes.
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path(), "g", "s");
    let p = inbound(&s, 8, Style::Created);
    outbound(&s, 5, SessionStateShape::Current);
    assert_eq!(migrate_dir(dir.path(), &[]).status.code(), Some(0));
    let rows = row_counts(&p);
    make_wal(&p);
    let mut c = SqliteConnection::establish(&p.to_string_lossy()).unwrap();
    c.batch_execute("SELECT 1").unwrap();
    drop(c);

    let r = json(&migrate_dir(dir.path(), &["--json"]));
    let e = entry(&r, &p);
    assert_eq!(e["status"], "migrated");
    assert_eq!(e["switched_from"], "wal");
    assert_eq!(e["applied"].as_array().unwrap().len(), 0);
    assert_eq!(e["legacy_generation"], Value::Null);
    assert!(!header_says_wal(&p));
    assert_rows_kept(&p, &rows);
    assert_eq!(summary_counts(&r), [1, 1, 0, 0]);
}

#[test]
fn symlinked_folders_are_reported_and_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let real = elsewhere.path().join("s-real");
    std::fs::create_dir_all(&real).unwrap();
    inbound(&real, 3, Style::Patched);
    let s = session(dir.path(), "g", "s-ok");
    inbound(&s, 8, Style::Created);
    outbound(&s, 5, SessionStateShape::Current);
    let link = dir.path().join("v2-sessions/g/s-link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let group_link = dir.path().join("v2-sessions/g-link");
    std::os::unix::fs::symlink(elsewhere.path(), &group_link).unwrap();
    // A stray file in the sessions folder is not a session.
    std::fs::write(dir.path().join("v2-sessions/README"), b"hi").unwrap();
    let before = snapshot(elsewhere.path());

    let out = migrate_dir(dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let r = json(&out);
    assert_eq!(summary_counts(&r), [2, 0, 2, 0], "{r:#}");
    for l in [&link, &group_link] {
        let e = entry(&r, l);
        assert_eq!(e["cause"]["kind"], "symlink_not_followed");
        assert_eq!(e["kind"], Value::Null);
    }
    assert_eq!(snapshot(elsewhere.path()), before);
}

#[test]
fn a_locked_file_fails_as_retryable_and_the_others_still_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let a = session(dir.path(), "g", "s-a");
    let locked = inbound(&a, 6, Style::Patched);
    outbound(&a, 5, SessionStateShape::Current);
    let b = session(dir.path(), "g", "s-b");
    inbound(&b, 2, Style::Created);
    outbound(&b, 2, SessionStateShape::NoUpdatedAt);
    let before = std::fs::read(&locked).unwrap();

    // Another writer (the host, say) holds the file for longer than the busy timeout.
    let mut holder = SqliteConnection::establish(&locked.to_string_lossy()).unwrap();
    holder.batch_execute("BEGIN EXCLUSIVE").unwrap();
    let out = migrate_dir(dir.path(), &["--json"]);
    holder.batch_execute("ROLLBACK").unwrap();
    drop(holder);

    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    assert_eq!(summary_counts(&r), [3, 0, 0, 1], "{r:#}");
    let e = entry(&r, &locked);
    assert_eq!(e["status"], "failed");
    assert_eq!(e["retryable"], true, "{e:#}");
    assert!(e["reason"].as_str().unwrap().contains("locked"), "{e:#}");
    assert_eq!(std::fs::read(&locked).unwrap(), before);

    // Once the lock is gone, running again finishes the job.
    let r = json(&migrate_dir(dir.path(), &["--json"]));
    assert_eq!(summary_counts(&r), [1, 3, 0, 0], "{r:#}");
}

#[test]
fn a_damaged_database_fails_and_is_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = session(dir.path(), "g", "s");
    let p = s.join("inbound.db");
    legacy::create(&p, FileKind::Inbound, 3, Style::Patched, 200).unwrap();
    outbound(&s, 5, SessionStateShape::Current);
    // Keep the valid header, overwrite the rest of the first page (the schema) with garbage.
    let mut bytes = std::fs::read(&p).unwrap();
    for (i, b) in bytes.iter_mut().enumerate().take(4096).skip(100) {
        *b = (i * 7 + 3) as u8;
    }
    std::fs::write(&p, &bytes).unwrap();

    let out = migrate_dir(dir.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = line_for(&text, &p);
    assert!(line.starts_with("FAILED"), "{line}");
    assert!(line.contains("corrupt"), "{line}");
    assert!(!stderr(&out).contains("panicked"));
    assert_eq!(
        std::fs::read(&p).unwrap(),
        bytes,
        "a failed file must be left as it was"
    );
    assert!(line_for(&text, &s.join("outbound.db")).starts_with("migrated"));
}
