//! Across a real mount: the container side through FUSE (bindfs), the host on the folder
//! itself. Each cross-mount rule of docs/format.md §2 that the mount can show is broken here on
//! purpose, with a plain connection, and the failure it prevents is observed:
//!
//! - rule 4 (readers re-open per poll): under `auto_cache` a connection kept open through the
//!   mount keeps returning its old count, poll after poll, while a fresh open sees the rows;
//! - rule 1 (never WAL): under `auto_cache` a WAL reader stays on its first snapshot even
//!   though it re-opens per poll (the WAL index is a shared memory map the host's updates
//!   never reach), and under `direct_io` it cannot read the file at all; the same host and
//!   reader in DELETE mode see every commit;
//! - under `kernel_cache` nothing new is ever seen, even by fresh opens: the container notices
//!   from the host's generation stamp and stops with a diagnosis instead of polling forever.
//! - a journal the host already deleted stays in the mount's name cache: SQLite's own check
//!   takes it for a hot journal and refuses to read, the library's reader asks the file server.
//!
//! The mount guard's clean-up (on a panic, and of mounts an interrupted run left) is tested
//! here too. Without `/dev/fuse` or bindfs every test here fails, saying so.
//!
//! The WAL host runs in a child process (this test binary again, running the ignored
//! `wal_host_process`): a reader through the mount can truncate the host's `-shm` under its
//! memory map, and a SIGBUS must not take the whole test binary down.

use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use sessionbus_runtime::container::{Container, ContainerOptions, Handled};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_store::{ContainerSession, NewMessage};
use sessionbus_testkit::mount::{
    cleanup_stale_mounts, is_mounted, mounts_root, require_fuse, BindMount, CacheMode,
    MountedSession,
};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longer than FUSE's attribute cache (1 s) twice over: a coherent revalidating view has
/// caught up by then.
const WELL_PAST_ATTR_TIMEOUT: Duration = Duration::from_millis(2500);

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn count(conn: &mut SqliteConnection, sql: &str) -> Result<i64, String> {
    diesel::sql_query(sql)
        .get_result::<N>(conn)
        .map(|r| r.n)
        .map_err(|e| e.to_string())
}

/// A read-only connection with the library reader's pragmas; only how long it is kept is up
/// to the test.
fn open_ro(path: &Path) -> Result<SqliteConnection, String> {
    let p = path.to_str().expect("utf-8 path");
    assert!(
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b)),
        "a path that needs no URI encoding: {p}"
    );
    let mut c = SqliteConnection::establish(&format!("file:{p}?mode=ro"))
        .map_err(|e| format!("open: {e}"))?;
    c.batch_execute("PRAGMA busy_timeout = 5000")
        .and_then(|()| c.batch_execute("PRAGMA mmap_size = 0"))
        .and_then(|()| c.batch_execute("PRAGMA query_only = ON"))
        .map_err(|e| format!("pragma: {e}"))?;
    Ok(c)
}

fn fresh_count(path: &Path, sql: &str) -> Result<i64, String> {
    let mut c = open_ro(path)?;
    count(&mut c, sql)
}

#[test]
fn a_long_lived_reader_through_the_mount_misses_commits_that_a_fresh_open_sees() {
    require_fuse();
    let s = MountedSession::new(CacheMode::AutoCache).unwrap();
    let host = s.host();
    host.inbound()
        .write_message(&NewMessage::chat("m1", "first"))
        .unwrap();
    let through_mount = s.container_paths().inbound;
    let sql = "SELECT count(*) AS n FROM messages_in";

    // Rule 4 broken on purpose: one read connection, kept across polls.
    let mut long_lived = open_ro(&through_mount).unwrap();
    assert_eq!(count(&mut long_lived, sql), Ok(1));
    host.inbound()
        .write_message(&NewMessage::chat("m2", "second"))
        .unwrap();
    let start = Instant::now();
    let mut polls = Vec::new();
    while start.elapsed() < WELL_PAST_ATTR_TIMEOUT {
        polls.push(count(&mut long_lived, sql));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "long-lived connection, {} polls over {:?} after the host's commit: {polls:?}",
        polls.len(),
        start.elapsed()
    );
    assert!(
        polls.iter().all(|p| p == &Ok(1)),
        "the long-lived connection kept its stale view for every poll: {polls:?}"
    );

    // The rule kept: a fresh open per poll (the library's reader) sees the second row.
    let container = ContainerSession::open(s.container_dir()).unwrap();
    let pending = container.inbound().pending().unwrap();
    let ids: Vec<&str> = pending.iter().map(|m| m.id.as_str()).collect();
    assert!(
        ids.contains(&"m2"),
        "a fresh open sees the new row: {ids:?}"
    );
    assert_eq!(fresh_count(&through_mount, sql), Ok(2));
}

#[test]
fn a_fresh_reader_through_an_auto_cache_mount_sees_each_commit_within_the_attribute_timeout() {
    // The control for the test above: the same mount, the library's reader.
    require_fuse();
    let s = MountedSession::new(CacheMode::AutoCache).unwrap();
    let host = s.host();
    let container = ContainerSession::open(s.container_dir()).unwrap();
    container.start().unwrap();
    for i in 0..3 {
        let id = format!("m{i}");
        host.inbound()
            .write_message(&NewMessage::chat(&id, "hi"))
            .unwrap();
        let t0 = Instant::now();
        loop {
            let ids: Vec<String> = container
                .inbound()
                .pending()
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            if ids.contains(&id) {
                eprintln!("{id} visible through the mount after {:?}", t0.elapsed());
                break;
            }
            assert!(
                t0.elapsed() < WELL_PAST_ATTR_TIMEOUT * 2,
                "{id} never became visible through an auto_cache mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The host's commit creates `inbound.db-journal` and deletes it a moment later. A container
/// that looked the name up in between keeps it in the mount's entry cache (1 s by default;
/// an hour here, so that the window does not depend on timing). SQLite's own existence check
/// believes the cache, cannot open the journal, takes it for hot and refuses to read; the
/// library's reader asks the file server, which says the journal is gone, and reads.
#[test]
fn a_journal_deleted_behind_the_mounts_name_cache_does_not_stop_a_fresh_reader() {
    require_fuse();
    let s = MountedSession::with_options(CacheMode::DirectIo, &["entry_timeout=3600"]).unwrap();
    s.host()
        .inbound()
        .write_message(&NewMessage::chat("m1", "hello"))
        .unwrap();
    let through_mount = s.container_paths().inbound;
    let journal = |p: &Path| {
        let mut name = p.as_os_str().to_owned();
        name.push("-journal");
        PathBuf::from(name)
    };
    let host_journal = journal(&sessionbus_store::SessionPaths::new(s.host_dir()).inbound);
    std::fs::write(&host_journal, b"a commit in progress").unwrap();
    let seen = std::fs::metadata(journal(&through_mount)).expect("the journal through the mount");
    assert!(seen.len() > 0);
    std::fs::remove_file(&host_journal).unwrap();
    assert!(
        std::fs::metadata(journal(&through_mount)).is_ok(),
        "the mount's name cache still shows the deleted journal"
    );

    // SQLite's own check, through the same mount: the stale name stops the read.
    let sql = "SELECT count(*) AS n FROM messages_in";
    let plain = fresh_count(&through_mount, sql);
    assert!(
        plain
            .as_ref()
            .is_err_and(|e| e.contains("readonly") || e.contains("read-only")),
        "a plain reader takes the stale name for a hot journal: {plain:?}"
    );

    // The library's reader is not fooled.
    let container = ContainerSession::open(s.container_dir()).unwrap();
    let ids: Vec<String> = container
        .inbound()
        .pending()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["m1"]);
}

#[test]
fn kernel_cache_freezes_even_fresh_opens_and_the_container_stops_with_a_diagnosis() {
    require_fuse();
    let s = MountedSession::new(CacheMode::KernelCache).unwrap();
    let agent = s.host_dir().join("agent");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(
        agent.join("container.json"),
        r#"{"pollIntervalIdleMs": 50, "pollIntervalActiveMs": 50}"#,
    )
    .unwrap();
    let mut container = Container::start(ContainerOptions {
        config_optional: false,
        heartbeat_interval: Duration::from_millis(200),
        ..ContainerOptions::in_folder(s.container_dir())
    })
    .unwrap();
    container.set_frozen_view_after(Some(Duration::from_millis(1500)));

    // The container has read inbound.db once (start-up). Now the host writes.
    let host = s.host();
    host.inbound()
        .write_message(&NewMessage::chat("m1", "are you there?"))
        .unwrap();

    // Fresh opens, as the library does them, stay on the old view poll after poll.
    let fresh = ContainerSession::open(s.container_dir()).unwrap();
    let start = Instant::now();
    let mut polls = 0;
    let mut broken = Vec::new();
    while polls < 10 || start.elapsed() < WELL_PAST_ATTR_TIMEOUT {
        // Old pages from the cache, and pages it never held read fresh: the view is stale or,
        // where the two mix, malformed. Never the new row.
        match fresh.poll(10) {
            Ok(batch) => assert!(
                batch.is_empty(),
                "poll {polls}: kernel_cache showed a new row: {:?}",
                batch.ids()
            ),
            Err(e) => broken.push(e.to_string()),
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{polls} fresh polls through kernel_cache: none saw m1, {} failed: {broken:?}",
        broken.len()
    );
    assert!(
        !host.inbound().pending().unwrap().is_empty(),
        "the host's own view has the row"
    );

    // The poll loop notices from the host's stamp and stops with the diagnosis.
    let stop = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            stop.store(true, Ordering::SeqCst);
        })
    };
    let t0 = Instant::now();
    let handled = std::cell::Cell::new(0);
    let result = container.run(&stop, |_, b| {
        handled.set(handled.get() + b.messages.len());
        Ok(Handled::completed(Vec::new()))
    });
    stop.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    let err = match result {
        Err(RuntimeError::FrozenView(f)) => f,
        other => panic!("expected a frozen-view diagnosis, got {other:?}"),
    };
    eprintln!("after {:?}: {err}", t0.elapsed());
    assert_eq!(handled.get(), 0, "nothing was ever seen");
    assert!(
        err.seen_counter < err.host_counter,
        "{} < {}",
        err.seen_counter,
        err.host_counter
    );
    assert!(err.behind_for >= Duration::from_millis(1500));
    let text = RuntimeError::FrozenView(err).to_string();
    for needle in ["frozen", "inbound.db", "kernel_cache", "remount"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn the_guard_unmounts_when_a_test_panics() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "x").unwrap();
    let seen = std::sync::Mutex::new(None::<PathBuf>);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let m = BindMount::new(dir.path(), CacheMode::AutoCache).unwrap();
        assert_eq!(std::fs::read(m.mount_point().join("f")).unwrap(), b"x");
        *seen.lock().unwrap() = Some(m.mount_point().to_path_buf());
        // A file held open through the mount: the plain unmount is busy, the lazy one
        // detaches it anyway.
        let _open = std::fs::File::open(m.mount_point().join("f")).unwrap();
        panic!("a failing test");
    }));
    assert!(r.is_err());
    let mp = seen.into_inner().unwrap().unwrap();
    assert!(!is_mounted(&mp), "{} is still mounted", mp.display());
    assert!(!mp.exists(), "{} was not removed", mp.display());
}

#[test]
fn mounts_left_by_an_interrupted_run_are_unmounted() {
    require_fuse();
    // A process that is gone: what a Ctrl-C'd or killed test run leaves behind.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = mounts_root();
    std::fs::create_dir_all(&root).unwrap();
    let mp = root.join(format!("{dead}-1-auto_cache"));
    std::fs::create_dir_all(&mp).unwrap();
    let st = Command::new("bindfs")
        .args(["--no-allow-other", "-o", "auto_cache"])
        .arg(src.path())
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(is_mounted(&mp));
    let cleaned = cleanup_stale_mounts();
    assert!(cleaned.contains(&mp), "{cleaned:?}");
    assert!(!is_mounted(&mp));
    assert!(!mp.exists());
    // Mounts of live processes are left alone.
    let live = BindMount::new(src.path(), CacheMode::DirectIo).unwrap();
    assert!(!cleanup_stale_mounts().contains(&live.mount_point().to_path_buf()));
    assert!(is_mounted(live.mount_point()));
}

// ---------------------------------------------------------------------------------------
// Rule 1: never WAL.

/// One poll's outcome: the row count, or the error text.
type Poll = Result<i64, String>;

/// What a reader through the mount saw of a host that kept committing.
#[derive(Debug)]
struct Observed {
    /// A connection opened before the host's commits and kept idle (never read again).
    pinned: Poll,
    /// Fresh connections, one per poll, after the host's commits.
    polls: Vec<Poll>,
    /// The host's own count after its commits (`None`: the host process died).
    host_count: Option<i64>,
    /// How the host process ended.
    host_exit: String,
}

const ROWS_BEFORE: i64 = 1;
const ROWS_WRITTEN: i64 = 10;

/// The host (a child process) holds one connection to `db` in `journal` mode and commits
/// [`ROWS_WRITTEN`] rows; a reader in this process keeps one idle connection through the
/// mount and polls with fresh ones.
fn observe(mode: CacheMode, journal: &str) -> Observed {
    let src = tempfile::tempdir().unwrap();
    let db = src.path().join("inbound.db");
    {
        let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        c.batch_execute(&format!("PRAGMA journal_mode = {journal}"))
            .unwrap();
        c.batch_execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (0);")
            .unwrap();
    }
    let mount = BindMount::new(src.path(), mode).unwrap();
    let through = mount.mount_point().join("inbound.db");
    let sql = "SELECT count(*) AS n FROM t";

    let mut host = WalHost::start(&db, journal);
    let mut pinned_conn = None;
    let pinned = open_ro(&through).and_then(|mut c| {
        let n = count(&mut c, sql);
        pinned_conn = Some(c);
        n
    });
    let host_count = host.write(ROWS_WRITTEN);
    let start = Instant::now();
    let mut polls = Vec::new();
    while start.elapsed() < WELL_PAST_ATTR_TIMEOUT {
        polls.push(fresh_count(&through, sql));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(pinned_conn);
    let host_exit = host.finish();
    Observed {
        pinned,
        polls,
        host_count,
        host_exit,
    }
}

#[test]
fn a_wal_file_freezes_a_reader_through_an_auto_cache_mount_even_with_fresh_opens() {
    require_fuse();
    let after = ROWS_BEFORE + ROWS_WRITTEN;
    // The control: the same host, the same reader, DELETE mode. The reader catches up.
    let delete = observe(CacheMode::AutoCache, "DELETE");
    eprintln!("DELETE through auto_cache: {delete:?}");
    assert_eq!(delete.pinned, Ok(ROWS_BEFORE));
    assert_eq!(delete.host_count, Some(after), "{}", delete.host_exit);
    assert_eq!(
        delete.polls.last(),
        Some(&Ok(after)),
        "in DELETE mode fresh opens see every commit"
    );

    // Rule 1 broken on purpose: WAL. The reader's polls stay on the first snapshot (or fail):
    // the WAL index is a shared memory map, shared by every connection of the process, and
    // the host's updates to it never cross the mount.
    let wal = observe(CacheMode::AutoCache, "WAL");
    eprintln!("WAL through auto_cache: {wal:?}");
    assert_eq!(wal.pinned, Ok(ROWS_BEFORE), "the first read works");
    if wal.host_count.is_none() {
        eprintln!(
            "the WAL host died ({}): the reader rebuilt the host's -shm under its map",
            wal.host_exit
        );
    } else {
        assert_eq!(wal.host_count, Some(after), "{}", wal.host_exit);
    }
    assert!(
        !wal.polls.iter().any(|p| p == &Ok(after)),
        "no poll of a WAL file through the mount saw the host's commits: {:?}",
        wal.polls
    );
    assert!(
        wal.polls.iter().any(|p| p == &Ok(ROWS_BEFORE)),
        "the reader stayed on its old snapshot, with no error to say so: {:?}",
        wal.polls
    );
}

#[test]
fn a_wal_file_cannot_be_read_through_a_direct_io_mount() {
    require_fuse();
    let after = ROWS_BEFORE + ROWS_WRITTEN;
    let delete = observe(CacheMode::DirectIo, "DELETE");
    eprintln!("DELETE through direct_io: {delete:?}");
    assert_eq!(delete.pinned, Ok(ROWS_BEFORE));
    assert!(
        delete.polls.iter().all(|p| p == &Ok(after)),
        "direct_io shows every commit at once: {:?}",
        delete.polls
    );

    let wal = observe(CacheMode::DirectIo, "WAL");
    eprintln!("WAL through direct_io: {wal:?}");
    assert!(wal.pinned.is_err(), "{:?}", wal.pinned);
    assert!(
        wal.polls.iter().all(|p| p.is_err()),
        "every read of a WAL file through a direct_io mount fails (its -shm cannot be \
         memory-mapped there): {:?}",
        wal.polls
    );
}

/// The WAL test's host: the `wal-host` role of `sessionbus-test-child`. Every wait for
/// it is bounded: a host that hangs or dies fails the test instead of hanging it.
struct WalHost {
    child: Child,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

const TAG: &str = "WALHOST ";
const HOST_REPLY_TIMEOUT: Duration = Duration::from_secs(20);

impl WalHost {
    fn start(db: &Path, journal: &str) -> WalHost {
        let mut child = sessionbus_testkit::child::command()
            .arg("wal-host")
            .arg(db)
            .arg(journal)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(TAG) {
                    if tx.send(line[at + TAG.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        let mut h = WalHost {
            child,
            stdin,
            lines,
        };
        let ready = h.expect("ready");
        assert!(ready.is_some(), "the host process did not start");
        h
    }

    /// The next tagged line starting with `what`; `None` when the host ended or took too long.
    fn expect(&mut self, what: &str) -> Option<String> {
        let deadline = Instant::now() + HOST_REPLY_TIMEOUT;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.lines.recv_timeout(left).ok()?;
            if line.starts_with(what) {
                return Some(line);
            }
        }
    }

    /// Commits `n` rows, one per transaction; returns the host's own count afterwards.
    fn write(&mut self, n: i64) -> Option<i64> {
        writeln!(self.stdin, "write {n}").ok()?;
        self.stdin.flush().ok()?;
        self.expect("count")?.strip_prefix("count ")?.parse().ok()
    }

    fn finish(mut self) -> String {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return s.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return "killed after 10 s".into();
                }
            }
        }
    }
}

impl Drop for WalHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
