//! `sessionbus migrate`, run as the real binary on real session folders in temp dirs: split
//! folders migrated, single-layout folders converted only while their container is stopped,
//! outbound.db never written, hostile names in the container's area never followed or
//! blocked on, and `--dry-run` changing nothing.

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use serde_json::Value;
use sessionbus_schema::migrate::{check_schema, Access};
use sessionbus_schema::{DbFile, FileKind, Role};
use sessionbus_store::{Layout, SessionPaths};
use sessionbus_testkit::hostile;
use sessionbus_testkit::legacy::{self, SessionStateShape, Style};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

const ROWS: usize = 5;

fn sessionbus<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_sessionbus"))
        .arg("migrate")
        .args(args)
        .output()
        .expect("run the sessionbus binary")
}

fn migrate_dir(data: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), data.into()];
    args.extend(extra.iter().map(Into::into));
    sessionbus(args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\n{}", stdout(o), stderr(o)))
}

/// A split-layout session folder: the host's folder (0755) with `container/` in it.
fn split(data: &Path, group: &str, id: &str) -> SessionPaths {
    let dir = data.join("v2-sessions").join(group).join(id);
    std::fs::create_dir_all(dir.join("container")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = SessionPaths::new(&dir);
    assert_eq!(SessionPaths::for_host(&dir).layout, Layout::Split);
    p
}

/// A single-layout session folder (the older host's: everything in one folder the container
/// can write).
fn single(data: &Path, group: &str, id: &str) -> SessionPaths {
    let dir = data.join("v2-sessions").join(group).join(id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(SessionPaths::for_host(&dir).layout, Layout::Single);
    SessionPaths::single(&dir)
}

fn inbound(p: &SessionPaths, g: u8, style: Style) -> PathBuf {
    legacy::create(&p.inbound, FileKind::Inbound, g, style, ROWS).unwrap();
    p.inbound.clone()
}

fn outbound(p: &SessionPaths, g: u8) -> PathBuf {
    legacy::create_with(
        &p.outbound,
        FileKind::Outbound,
        g,
        Style::Created,
        SessionStateShape::Current,
        ROWS,
    )
    .unwrap();
    p.outbound.clone()
}

fn fresh_heartbeat(p: &SessionPaths) {
    std::fs::write(&p.heartbeat, b"").unwrap();
}

fn stale_heartbeat(p: &SessionPaths) {
    let f = std::fs::File::create(&p.heartbeat).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(300))
        .unwrap();
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

fn make_wal(path: &Path) {
    let mut c = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
    let m: Mode = diesel::sql_query("PRAGMA journal_mode = WAL")
        .get_result(&mut c)
        .unwrap();
    assert_eq!(m.journal_mode, "wal");
}

fn header_says_wal(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.len() >= 20 && (bytes[18] == 2 || bytes[19] == 2)
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

fn assert_rows_kept(path: &Path, before: &BTreeMap<String, i64>) {
    let after = row_counts(path);
    for (table, n) in before {
        assert_eq!(
            after.get(table),
            Some(n),
            "{}: rows of {table}",
            path.display()
        );
    }
}

/// inbound.db is in this build's schema, fit for its writer, in DELETE journal mode.
fn assert_current(path: &Path) {
    let f = DbFile::new(path, FileKind::Inbound, Role::Operator);
    let mut conn = f.open_reader("test").unwrap_or_else(|e| panic!("{e}"));
    check_schema(&mut conn, &f, Access::Write, "test").unwrap_or_else(|e| panic!("{e}"));
    assert!(!header_says_wal(path), "{} still WAL", path.display());
}

/// Every entry under `root` (folders too): bytes of files, link targets, kinds, modes,
/// owners and mtimes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if m.file_type().is_symlink() {
            format!("link to {}", std::fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            format!("file {:?}", std::fs::read(&p).unwrap())
        } else {
            "special".to_string()
        };
        let meta = format!(
            "{what} mode {:o} uid {} mtime {:?}",
            m.mode(),
            m.uid(),
            m.modified().unwrap()
        );
        out.insert(p, meta);
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

/// [migrated, already_current, converted, left_to_container, skipped, failed]
fn counts(report: &Value) -> [u64; 6] {
    let s = &report["summary"];
    [
        "migrated",
        "already_current",
        "converted",
        "left_to_container",
        "skipped",
        "failed",
    ]
    .map(|k| s[k].as_u64().unwrap())
}

fn line_for<'a>(text: &'a str, path: &Path) -> &'a str {
    let p = format!(" {}", path.display());
    text.lines()
        .find(|l| (l.contains(&format!("{p}:")) || l.ends_with(&p)) && !l.starts_with("  "))
        .unwrap_or_else(|| panic!("no line for {} in:\n{text}", path.display()))
}

/// A data dir with split and single-layout sessions of mixed generations and trouble.
struct Mixed {
    dir: tempfile::TempDir,
    /// Split sessions' inbound.db files that must migrate, with their rows before.
    good: Vec<(PathBuf, BTreeMap<String, i64>)>,
    /// Every outbound.db, with its bytes: never written.
    outbound: Vec<(PathBuf, Vec<u8>)>,
    corrupt: PathBuf,
    wal: PathBuf,
    missing_outbound: PathBuf,
    /// Single layout, no heartbeat: converted.
    stopped: SessionPaths,
    /// Single layout, stale heartbeat: converted.
    stale: SessionPaths,
    /// Single layout, fresh heartbeat: skipped.
    live: SessionPaths,
}

fn mixed() -> Mixed {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut good = Vec::new();
    let mut outs = Vec::new();
    let mut out = |p: PathBuf| {
        let bytes = std::fs::read(&p).unwrap();
        outs.push((p, bytes));
    };
    for (id, g, og) in [("s-g0", 0, 2), ("s-g3", 3, 5), ("s-g8", 8, 5)] {
        let s = split(data, "group-a", id);
        let p = inbound(&s, g, Style::Patched);
        good.push((p.clone(), row_counts(&p)));
        out(outbound(&s, og));
    }
    let s = split(data, "group-b", "s-corrupt");
    let corrupt = s.inbound.clone();
    garbage(&corrupt);
    out(outbound(&s, 2));

    let s = split(data, "group-b", "s-wal");
    let wal = inbound(&s, 8, Style::Created);
    good.push((wal.clone(), row_counts(&wal)));
    make_wal(&wal);
    out(outbound(&s, 5));

    let s = split(data, "group-b", "s-half");
    let p = inbound(&s, 7, Style::Created);
    good.push((p.clone(), row_counts(&p)));
    let missing_outbound = s.outbound.clone();

    let stopped = single(data, "group-c", "s-old-stopped");
    inbound(&stopped, 4, Style::Patched);
    out(outbound(&stopped, 2));
    let stale = single(data, "group-c", "s-old-stale");
    inbound(&stale, 6, Style::Patched);
    out(outbound(&stale, 5));
    stale_heartbeat(&stale);
    let live = single(data, "group-c", "s-old-live");
    inbound(&live, 6, Style::Patched);
    out(outbound(&live, 5));
    fresh_heartbeat(&live);
    Mixed {
        dir,
        good,
        outbound: outs,
        corrupt,
        wal,
        missing_outbound,
        stopped,
        stale,
        live,
    }
}

/// Where an outbound.db of a single-layout folder is after a conversion.
fn moved(p: &Path) -> PathBuf {
    p.parent().unwrap().join("container").join("outbound.db")
}

fn assert_outbound_untouched(m: &Mixed, converted: &[&SessionPaths]) {
    for (p, bytes) in &m.outbound {
        let now_at = if converted.iter().any(|s| &s.outbound == p) {
            moved(p)
        } else {
            p.clone()
        };
        assert_eq!(
            &std::fs::read(&now_at).unwrap(),
            bytes,
            "{}",
            now_at.display()
        );
    }
}

#[test]
fn mixed_data_dir_converts_migrates_and_leaves_outbound_to_containers() {
    let m = mixed();
    let corrupt_bytes = std::fs::read(&m.corrupt).unwrap();
    let live_before = snapshot(&m.live.dir);

    let out = migrate_dir(m.dir.path(), &[]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "a failure exits 1:\n{text}");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    for (path, rows) in &m.good {
        assert!(line_for(&text, path).starts_with("migrated"), "{text}");
        assert_current(path);
        assert_rows_kept(path, rows);
    }
    assert!(line_for(&text, &m.good[0].0).contains("adopted legacy G0 file"));
    assert!(line_for(&text, &m.wal).contains("switched from WAL to DELETE journal mode"));
    let bad = line_for(&text, &m.corrupt);
    assert!(
        bad.starts_with("FAILED") && bad.contains("not an SQLite database"),
        "{bad}"
    );
    assert_eq!(std::fs::read(&m.corrupt).unwrap(), corrupt_bytes);
    assert!(line_for(&text, &m.missing_outbound).contains("no such file"));
    assert!(
        !m.missing_outbound.exists(),
        "a missing file is not created"
    );

    // Single layout, container stopped (no heartbeat, or a stale one): converted, migrated.
    for s in [&m.stopped, &m.stale] {
        let line = line_for(&text, &s.dir);
        assert!(line.starts_with("converted"), "{line}");
        assert!(line.contains("outbound.db"), "{line}");
        assert_eq!(SessionPaths::for_host(&s.dir).layout, Layout::Split);
        assert_current(&s.inbound);
        assert!(moved(&s.outbound).exists());
        assert!(!s.outbound.exists());
    }
    assert!(line_for(&text, &m.stale.dir).contains("left by a stopped container"));
    assert!(line_for(&text, &m.stopped.dir).contains("no .heartbeat"));

    // Single layout with a fresh heartbeat: skipped, saying why, nothing moved.
    let live = line_for(&text, &m.live.dir);
    assert!(live.starts_with("skipped"), "{live}");
    assert!(
        live.contains("container is running") && live.contains("touched"),
        "{live}"
    );
    assert!(line_for(&text, &m.live.inbound).contains("migrated once the folder is converted"));
    assert_eq!(snapshot(&m.live.dir), live_before);

    // No outbound.db was written, in either layout.
    assert_outbound_untouched(&m, &[&m.stopped, &m.stale]);
    for (p, _) in &m.outbound {
        let shown = if p.starts_with(&m.stopped.dir) || p.starts_with(&m.stale.dir) {
            moved(p)
        } else {
            p.clone()
        };
        assert!(
            line_for(&text, &shown).starts_with("container's"),
            "{}:\n{text}",
            shown.display()
        );
    }
    assert!(text.contains("2 converted, 7 migrated"), "{text}");

    // Second run: nothing left to do but the failure and the live session.
    let again = stdout(&migrate_dir(m.dir.path(), &[]));
    for (path, _) in &m.good {
        assert!(line_for(&again, path).starts_with("current"), "{again}");
    }
    assert!(
        again.contains("0 converted, 0 migrated, 7 already current"),
        "{again}"
    );
    assert!(again.contains("Nothing changed."), "{again}");
}

#[test]
fn json_report_has_the_counts_and_the_rules() {
    let m = mixed();
    let out = migrate_dir(m.dir.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    // Migrated: 5 split inbound files and the 2 converted folders' own.
    assert_eq!(counts(&r), [7, 0, 2, 8, 3, 1], "{r:#}");
    assert_eq!(r["sessions"], 9);
    assert_eq!(r["running_list"], false);
    let live = entry(&r, &m.live.dir);
    assert_eq!(live["status"], "skipped");
    assert_eq!(live["cause"]["kind"], "container_running");
    assert_eq!(live["cause"]["liveness"]["rule"], "fresh_heartbeat");
    let conv = entry(&r, &m.stale.dir);
    assert_eq!(conv["status"], "converted");
    assert_eq!(conv["liveness"]["rule"], "stale_heartbeat");
    assert!(conv["moved"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "outbound.db"));
    let o = entry(&r, &moved(&m.stale.outbound));
    assert_eq!(o["status"], "left_to_container");
    assert_eq!(o["schema"]["state"], "legacy");
    let wal = entry(&r, &m.wal);
    assert_eq!(wal["switched_from"], "wal");
    assert_eq!(wal["legacy_generation"], 8);
    let bundled = libsqlite3_sys::SQLITE_VERSION
        .to_str()
        .unwrap()
        .trim_end_matches('\0');
    assert_eq!(r["sqlite_version"].as_str(), Some(bundled));
    let err = stderr(&out);
    assert!(err.contains("warning: FAILED"), "{err}");
    assert!(err.contains("container is running"), "{err}");
}

#[test]
fn dry_run_changes_nothing() {
    let m = mixed();
    let empty = split(m.dir.path(), "group-d", "s-empty");
    std::fs::write(&empty.inbound, b"").unwrap();
    let before = snapshot(m.dir.path());
    let out = migrate_dir(m.dir.path(), &["--dry-run"]);
    assert_eq!(
        snapshot(m.dir.path()),
        before,
        "the dry run changed something"
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (path, _) in &m.good {
        assert!(line_for(&text, path).starts_with("would migrate"), "{text}");
    }
    assert!(line_for(&text, &m.wal).contains("would switch from WAL to DELETE"));
    assert!(line_for(&text, &empty.inbound).contains("empty file to initialise"));
    for s in [&m.stopped, &m.stale] {
        assert!(
            line_for(&text, &s.dir).starts_with("would convert"),
            "{text}"
        );
        assert!(
            line_for(&text, &s.inbound).starts_with("would migrate"),
            "{text}"
        );
    }
    assert!(line_for(&text, &m.live.dir).starts_with("skipped"));
    assert!(text.contains("Dry run: nothing was written or converted."));

    let r = json(&migrate_dir(m.dir.path(), &["--dry-run", "--json"]));
    assert_eq!(r["dry_run"], true);
    assert_eq!(counts(&r), [8, 0, 2, 8, 4, 1], "{r:#}");
    assert_eq!(snapshot(m.dir.path()), before);
    // Nothing was done ahead: the real run still has all of it to do.
    let real = json(&migrate_dir(m.dir.path(), &["--json"]));
    assert_eq!(counts(&real), [8, 0, 2, 8, 4, 1], "{real:#}");
}

#[test]
fn the_operators_list_decides_which_containers_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let named = single(data, "g", "s-named");
    inbound(&named, 3, Style::Created);
    outbound(&named, 5);
    let listed = single(data, "g", "s-listed");
    inbound(&listed, 3, Style::Created);
    let other = single(data, "g", "s-other");
    inbound(&other, 3, Style::Created);
    fresh_heartbeat(&other);
    let list = data.join("running.txt");
    std::fs::write(
        &list,
        format!("# running now\n\n{}\n", listed.dir.display()),
    )
    .unwrap();
    let before = snapshot(&named.dir);

    let out = migrate_dir(
        data,
        &[
            "--json",
            "--running",
            named.dir.to_str().unwrap(),
            "--running-from",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(r["running_list"], true);
    let e = entry(&r, &named.dir);
    assert_eq!(e["status"], "skipped");
    assert_eq!(e["cause"]["liveness"]["rule"], "named_running");
    assert_eq!(e["cause"]["liveness"]["by"], "--running");
    assert!(e["reason"]
        .as_str()
        .unwrap()
        .contains("named running by --running"));
    let e = entry(&r, &listed.dir);
    assert_eq!(e["cause"]["liveness"]["rule"], "named_running");
    assert!(e["cause"]["liveness"]["by"]
        .as_str()
        .unwrap()
        .starts_with("--running-from"));
    // Not listed: taken as stopped although its heartbeat is fresh (the operator's word).
    let e = entry(&r, &other.dir);
    assert_eq!(e["status"], "converted");
    assert_eq!(e["liveness"]["rule"], "not_named");
    assert_eq!(snapshot(&named.dir), before);

    // Saying no container runs converts the rest.
    let r = json(&migrate_dir(data, &["--json", "--no-containers-running"]));
    assert_eq!(entry(&r, &named.dir)["liveness"]["rule"], "none_running");
    assert_eq!(counts(&r)[2], 2, "{r:#}");
    // The two statements contradict each other.
    let bad = migrate_dir(data, &["--no-containers-running", "--running", "/x"]);
    assert_eq!(bad.status.code(), Some(2));
    // An unreadable list is a fatal error, not a guess.
    let bad = migrate_dir(data, &["--running-from", "/no/such/list"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("cannot read the list of running containers"));
}

#[test]
fn a_stopped_single_layout_session_is_converted_and_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let s = single(dir.path(), "g", "s");
    let inb = inbound(&s, 2, Style::Created);
    let rows = row_counts(&inb);
    let out_bytes = std::fs::read(outbound(&s, 2)).unwrap();
    std::fs::create_dir(&s.outbox).unwrap();
    std::fs::write(s.outbox.join("a.txt"), b"agent's").unwrap();
    std::fs::create_dir(&s.inbox).unwrap();
    stale_heartbeat(&s);
    // The container ran as another user: its area goes to that user.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::lchown(&s.outbound, Some(1000), Some(1000)).unwrap();
    }

    let out = sessionbus(["--json".as_ref(), "--session".as_ref(), s.dir.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let r = json(&out);
    assert_eq!(r["data_dir"], Value::Null);
    assert_eq!(counts(&r), [1, 0, 1, 1, 0, 0], "{r:#}");
    let split = SessionPaths::for_host(&s.dir);
    assert_eq!(split.layout, Layout::Split);
    assert_eq!(std::fs::read(&split.outbound).unwrap(), out_bytes);
    assert_eq!(
        std::fs::read(split.outbox.join("a.txt")).unwrap(),
        b"agent's"
    );
    assert!(split.heartbeat.exists() && split.inbox.is_dir());
    assert_current(&split.inbound);
    assert_rows_kept(&split.inbound, &rows);
    let mode = std::fs::metadata(&s.dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    if root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&split.container_dir).unwrap().uid(), 1000);
        // Everything moved into the area is that user's too, the files the operator's user
        // (root) had made included: the container writes them all.
        for p in [
            &split.outbound,
            &split.outbox,
            &split.outbox.join("a.txt"),
            &split.heartbeat,
        ] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1000), "{}", p.display());
        }
        assert_eq!(
            entry(&r, &s.dir)["container_owner"],
            serde_json::json!([1000, 1000])
        );
    }
    // Once split, the next run finds it current and converts nothing.
    let r = json(&sessionbus([
        "--json".as_ref(),
        "--session".as_ref(),
        s.dir.as_os_str(),
    ]));
    assert_eq!(counts(&r), [0, 1, 0, 1, 0, 0], "{r:#}");
}

#[test]
fn a_stale_heartbeat_does_not_block_and_force_overrides_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = single(dir.path(), "g", "a");
    inbound(&a, 8, Style::Created);
    stale_heartbeat(&a);
    let b = single(dir.path(), "g", "b");
    inbound(&b, 8, Style::Created);
    fresh_heartbeat(&b);
    let r = json(&migrate_dir(dir.path(), &["--json"]));
    assert_eq!(entry(&r, &a.dir)["status"], "converted");
    assert_eq!(entry(&r, &b.dir)["status"], "skipped");
    let r = json(&migrate_dir(dir.path(), &["--json", "--force"]));
    assert_eq!(r["force"], true);
    assert_eq!(entry(&r, &b.dir)["liveness"]["rule"], "forced");
}

/// The planted things of a compromised container, in split folders: nothing outside the
/// container's areas changes, nothing planted is followed, nothing blocks.
#[test]
fn planted_journals_fifos_and_links_never_block_or_reach_outside() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host_file = dir.path().join("host-secret");
    std::fs::write(&host_file, b"the host's").unwrap();

    let provisioned = |id: &str| {
        let p = SessionPaths::new(data.join("v2-sessions/g").join(id));
        sessionbus_store::provision(&p, None, &sessionbus_schema::SystemClock).unwrap();
        p
    };
    let sj = provisioned("super-journal");
    let mut j = sj.outbound.clone().into_os_string();
    j.push("-journal");
    std::fs::write(&j, hostile::super_journal_naming(&host_file)).unwrap();
    let fifo = provisioned("fifo");
    std::fs::remove_file(&fifo.outbound).unwrap();
    hostile::mkfifo(&fifo.outbound);
    hostile::mkfifo(&fifo.heartbeat);
    let link = provisioned("link");
    std::fs::remove_file(&link.outbound).unwrap();
    std::os::unix::fs::symlink(&host_file, &link.outbound).unwrap();
    std::os::unix::fs::symlink(&host_file, &link.heartbeat).unwrap();
    let fifo_journal = provisioned("fifo-journal");
    let mut j = fifo_journal.outbound.clone().into_os_string();
    j.push("-journal");
    hostile::mkfifo(Path::new(&j));

    let vtab = provisioned("virtual-table");
    hostile::tamper(
        &vtab.outbound,
        "CREATE VIRTUAL TABLE notes USING fts5(body);",
    );
    let long = provisioned("long-version");
    hostile::tamper(
        &long.outbound,
        &format!(
            "INSERT INTO __diesel_schema_migrations (version) VALUES ('{}');",
            "9".repeat(100_000)
        ),
    );

    let outside = |root: &Path| {
        snapshot(root)
            .into_iter()
            .filter(|(p, _)| !p.components().any(|c| c.as_os_str() == "container"))
            .collect::<BTreeMap<_, _>>()
    };
    let before_outside = outside(dir.path());
    let before_all = snapshot(dir.path());
    let started = Instant::now();
    let out = migrate_dir(&data, &["--json"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let r = json(&out);
    assert_eq!(outside(dir.path()), before_outside);
    assert_eq!(snapshot(dir.path()), before_all, "nothing at all changed");
    assert_eq!(std::fs::read(&host_file).unwrap(), b"the host's");
    for (p, needle) in [
        (&fifo.outbound, "a FIFO"),
        (&link.outbound, "a symbolic link"),
        (&fifo_journal.outbound, "a FIFO"),
        (&sj.outbound, "hot journal"),
        (&vtab.outbound, "not an ordinary table"),
        (&long.outbound, "a version over 256 bytes"),
    ] {
        let e = entry(&r, p);
        assert_eq!(e["status"], "left_to_container", "{e:#}");
        let problems = e["problems"].to_string();
        assert!(problems.contains(needle), "{}: {problems}", p.display());
    }
    assert_eq!(counts(&r)[5], 0, "{r:#}");

    // The same planted things in a single-layout folder whose container is stopped: the
    // conversion moves them by name into container/, never through them.
    let s = single(&data, "g2", "old");
    inbound(&s, 3, Style::Created);
    hostile::mkfifo(&s.outbound);
    std::os::unix::fs::symlink(&host_file, &s.heartbeat).unwrap();
    let r = json(&migrate_dir(&data, &["--json", "--no-containers-running"]));
    assert_eq!(entry(&r, &s.dir)["status"], "converted", "{r:#}");
    let kind = std::fs::symlink_metadata(s.dir.join("container/.heartbeat")).unwrap();
    assert!(kind.file_type().is_symlink());
    assert_eq!(std::fs::read(&host_file).unwrap(), b"the host's");
}

#[test]
fn a_locked_inbound_fails_as_retryable_and_the_others_still_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let a = split(dir.path(), "g", "s-a");
    let locked = inbound(&a, 6, Style::Patched);
    let b = split(dir.path(), "g", "s-b");
    inbound(&b, 2, Style::Created);
    let before = std::fs::read(&locked).unwrap();
    let mut holder = SqliteConnection::establish(&locked.to_string_lossy()).unwrap();
    holder.batch_execute("BEGIN EXCLUSIVE").unwrap();
    let out = migrate_dir(dir.path(), &["--json"]);
    holder.batch_execute("ROLLBACK").unwrap();
    drop(holder);
    assert_eq!(out.status.code(), Some(1));
    let r = json(&out);
    let e = entry(&r, &locked);
    assert_eq!(e["status"], "failed");
    assert_eq!(e["retryable"], true, "{e:#}");
    assert_eq!(std::fs::read(&locked).unwrap(), before);
    assert_eq!(entry(&r, &b.inbound)["status"], "migrated");
}

#[test]
fn missing_data_dir_bad_flags_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-data-here");
    let out = migrate_dir(&nowhere, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!nowhere.exists());
    let out = migrate_dir(&nowhere, &["--json"]);
    assert!(json(&out)["error"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    let out = migrate_dir(dir.path(), &[]);
    assert!(stderr(&out).contains("has no v2-sessions/ folder"));
    assert_eq!(sessionbus(["--no-such-flag"]).status.code(), Some(2));
    let help = stdout(&sessionbus(["--help"]));
    for opt in [
        "--data-dir",
        "--session",
        "--dry-run",
        "--json",
        "--force",
        "--running",
        "--running-from",
        "--no-containers-running",
    ] {
        assert!(help.contains(opt), "{opt} missing from:\n{help}");
    }

    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("v2-sessions/g")).unwrap();
    let link = dir.path().join("v2-sessions/g/s-link");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    let before = snapshot(elsewhere.path());
    let r = json(&migrate_dir(dir.path(), &["--json"]));
    assert_eq!(entry(&r, &link)["cause"]["kind"], "symlink_not_followed");
    assert_eq!(snapshot(elsewhere.path()), before);
}

#[test]
fn library_run_uses_the_given_clock_for_heartbeats() {
    use sessionbus_runtime::operator::migrate::{run, FileResult, MigrateArgs, SkipReason};
    use sessionbus_testkit::ManualClock;
    let dir = tempfile::tempdir().unwrap();
    let s = single(dir.path(), "g", "s");
    inbound(&s, 3, Style::Patched);
    fresh_heartbeat(&s);
    let args = MigrateArgs {
        data_dir: dir.path().to_path_buf(),
        dry_run: true,
        ..MigrateArgs::default()
    };
    let now = ManualClock::at_millis(
        i64::try_from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let mut events = 0;
    let r = run(&args, &now, &mut |_| events += 1).unwrap();
    assert_eq!(events, 3, "found, then start and done per session");
    assert!(matches!(
        &r.files[0].result,
        FileResult::Skipped {
            cause: SkipReason::ContainerRunning { .. },
            ..
        }
    ));
    now.advance_secs(61);
    let later = run(&args, &now, &mut |_| {}).unwrap();
    assert!(matches!(later.files[0].result, FileResult::Converted(_)));
    assert!(later.nothing_changed() && !later.has_failures());
}
