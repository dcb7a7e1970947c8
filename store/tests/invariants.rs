//! docs/format.md §2, broken on purpose: each cross-mount invariant is violated the way a
//! careless caller, a misbehaving peer or a crash would, and the library must answer with the
//! clear, typed error (or keep the invariant by itself).
//!
//! Tests that need a second process (a writer killed mid-transaction, a container running as
//! an unprivileged user) re-run this test binary on their own name with `CHILD_ENV` set; the
//! test body then plays the child's part and never returns to the parent's assertions.

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use sessionbus_schema::{DbError, DbFile, FileKind, Role};
use sessionbus_store::{
    AckStatus, ContainerSession, Destination, DestinationType, HostSession, NewHostReply, Routing,
    Seq, SessionPaths, StoreError, SystemClock,
};
use sessionbus_testkit::{message, reply, TempSession};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const CHILD_ENV: &str = "SESSIONBUS_INVARIANTS_CHILD";
const CHILD_DIR: &str = "SESSIONBUS_INVARIANTS_DIR";

// ---------------------------------------------------------------------------------------------
// helpers

/// What this process is asked to do when it was started as a child of a test.
fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var(CHILD_DIR).expect("child without a folder"))
}

/// Runs this test binary again, only test `name`, as child `role` working on `dir`.
fn run_child(name: &str, role: &str, dir: &Path) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env(CHILD_DIR, dir)
        .output()
        .expect("spawn child test process")
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain diesel connection, as a peer that ignores this library would open the file.
fn plain(path: &Path) -> SqliteConnection {
    SqliteConnection::establish(path.to_str().unwrap()).unwrap()
}

#[derive(QueryableByName)]
struct Mode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The journal mode as a brand-new connection sees it (only `wal` persists in the file).
fn journal_mode(path: &Path) -> String {
    diesel::sql_query("PRAGMA journal_mode")
        .get_result::<Mode>(&mut plain(path))
        .unwrap()
        .journal_mode
        .to_ascii_lowercase()
}

fn count(path: &Path, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<N>(&mut plain(path))
        .unwrap()
        .n
}

/// The file header's read/write version bytes: 1 = rollback journal, 2 = WAL.
fn header_versions(path: &Path) -> (u8, u8) {
    let bytes = std::fs::read(path).unwrap();
    (bytes[18], bytes[19])
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn assert_no_sidecars(dir: &Path, what: &str) {
    let names = listing(dir);
    for n in &names {
        assert!(
            !(n.ends_with("-journal") || n.ends_with("-wal") || n.ends_with("-shm")),
            "{what}: {n} appeared in {}: {names:?}",
            dir.display()
        );
    }
}

fn db_err(e: &StoreError) -> &DbError {
    e.as_db()
        .unwrap_or_else(|| panic!("expected a file error, got {e:?}"))
}

fn expect_read_only<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    let e = r.expect_err(what);
    match db_err(&e) {
        DbError::ReadOnly { detail, .. } => {
            assert!(detail.contains("readonly"), "{what}: {detail}")
        }
        other => panic!("{what}: expected ReadOnly, got {other:?}"),
    }
    assert!(
        !e.is_retryable(),
        "{what}: a refused write is not retryable"
    );
}

fn make_wal(path: &Path) {
    let mut c = plain(path);
    let m = diesel::sql_query("PRAGMA journal_mode = WAL")
        .get_result::<Mode>(&mut c)
        .unwrap();
    assert_eq!(m.journal_mode, "wal");
    drop(c);
    assert_eq!(header_versions(path), (2, 2), "the file is now WAL");
}

// ---------------------------------------------------------------------------------------------
// readers are read-only in SQLite itself

#[test]
fn raw_writes_through_the_container_inbound_reader_fail_read_only() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("m1", "hello").build())
        .unwrap();
    let reader = s.container().inbound().clone();

    expect_read_only(
        reader.with_raw_connection(|c| {
            diesel::sql_query(
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
                 VALUES ('forged', 100, 'chat', '2026-04-21T12:00:00.000Z', '{}')",
            )
            .execute(c)
        }),
        "INSERT through the inbound reader",
    );
    expect_read_only(
        reader.with_raw_connection(|c| diesel::sql_query("DELETE FROM messages_in").execute(c)),
        "DELETE through the inbound reader",
    );
    expect_read_only(
        reader.with_raw_connection(|c| c.batch_execute("PRAGMA journal_mode = WAL")),
        "PRAGMA journal_mode=WAL through the inbound reader",
    );
    // query_only is only advisory; mode=ro is the enforcement: switching it off changes nothing.
    expect_read_only(
        reader.with_raw_connection(|c| {
            c.batch_execute("PRAGMA query_only = OFF")?;
            diesel::sql_query("UPDATE messages_in SET status = 'completed'").execute(c)
        }),
        "UPDATE after query_only=OFF",
    );

    // Nothing changed.
    let p = &s.paths.inbound;
    assert_eq!(count(p, "SELECT count(*) AS n FROM messages_in"), 1);
    assert_eq!(
        count(
            p,
            "SELECT count(*) AS n FROM messages_in WHERE status = 'pending'"
        ),
        1
    );
    assert_eq!(journal_mode(p), "delete");
    assert_no_sidecars(s.dir(), "after refused writes");
}

#[test]
fn raw_writes_through_the_host_outbound_reader_fail_read_only() {
    let s = TempSession::new();
    let container = s.container();
    container.start().unwrap();
    container
        .outbound()
        .ack(&["m1".to_string()], &AckStatus::Processing)
        .unwrap();
    let reader = s.host().outbound().clone();

    expect_read_only(
        reader.with_raw_connection(|c| {
            diesel::sql_query(
                "INSERT INTO messages_out (id, seq, timestamp, kind, content) \
                 VALUES ('denial', 101, '2026-04-21 12:00:00', 'chat', '{}')",
            )
            .execute(c)
        }),
        "INSERT through the outbound reader",
    );
    expect_read_only(
        reader.with_raw_connection(|c| diesel::sql_query("DELETE FROM processing_ack").execute(c)),
        "DELETE through the outbound reader",
    );
    // The host's connection runs on the untrusted-file VFS, which has no shared memory:
    // SQLite cannot switch it to WAL and keeps the mode as it is (checked below, on disk).
    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    let mode = reader
        .with_raw_connection(|c| {
            diesel::sql_query("PRAGMA journal_mode = WAL").get_result::<Mode>(c)
        })
        .unwrap();
    assert_eq!(mode.journal_mode, "delete");
    expect_read_only(
        reader.with_raw_connection(|c| {
            c.batch_execute("PRAGMA query_only = OFF")?;
            diesel::sql_query("DELETE FROM processing_ack").execute(c)
        }),
        "DELETE after query_only=OFF",
    );

    assert_eq!(reader.claims().unwrap().len(), 1, "the claim survived");
    assert_eq!(journal_mode(&s.paths.outbound), "delete");
    assert_no_sidecars(s.dir(), "after refused writes");
}

// ---------------------------------------------------------------------------------------------
// journal_mode = DELETE, never WAL

#[test]
fn a_wal_inbound_db_fails_container_reads_until_a_host_write_converts_it_back() {
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    host.inbound()
        .write_message(&message("m1", "before WAL").build())
        .unwrap();
    make_wal(&s.paths.inbound);

    for (what, r) in [
        ("poll", container.poll_after_start(10).map(|_| ())),
        ("routing", container.inbound().routing().map(|_| ())),
        ("find_answer", container.find_answer("q1").map(|_| ())),
        (
            "lookup_seq",
            container.lookup_seq(Seq::new(2).unwrap()).map(|_| ()),
        ),
    ] {
        let e = r.expect_err(what);
        match db_err(&e) {
            DbError::WalMode { mode, at } => {
                assert_eq!(mode, "wal", "{what}");
                assert_eq!(at.path, s.paths.inbound, "{what}");
            }
            other => panic!("{what}: expected WalMode, got {other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("WAL") && text.contains("inbound.db"),
            "{what}: {text}"
        );
        assert!(!e.is_retryable(), "{what}: WAL is not fixed by waiting");
    }
    // The reader changed nothing: still WAL, no -shm/-wal created by the container.
    assert_eq!(header_versions(&s.paths.inbound), (2, 2));
    assert_no_sidecars(s.dir(), "container reads of a WAL file");

    // Any host write converts it back.
    host.inbound()
        .write_message(&message("m2", "after WAL").build())
        .unwrap();
    assert_eq!(header_versions(&s.paths.inbound), (1, 1));
    assert_eq!(journal_mode(&s.paths.inbound), "delete");
    let batch = container.poll_after_start(10).unwrap();
    let ids: Vec<&str> = batch.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"]);
    assert_no_sidecars(s.dir(), "after the host's conversion");
}

#[test]
fn a_wal_outbound_db_fails_host_reads_until_a_container_write_converts_it_back() {
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    container.start().unwrap();
    container
        .outbound()
        .ack(&["m1".to_string()], &AckStatus::Processing)
        .unwrap();
    make_wal(&s.paths.outbound);

    let e = host.outbound().claims().expect_err("claims of a WAL file");
    assert!(
        matches!(db_err(&e), DbError::WalMode { mode, .. } if mode == "wal"),
        "{e:?}"
    );
    assert_no_sidecars(s.dir(), "host reads of a WAL file");

    container
        .outbound()
        .ack(&["m2".to_string()], &AckStatus::Processing)
        .unwrap();
    assert_eq!(header_versions(&s.paths.outbound), (1, 1));
    assert_eq!(journal_mode(&s.paths.outbound), "delete");
    assert_eq!(host.outbound().claims().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// readers create nothing next to the file

#[test]
fn container_and_host_reads_create_nothing_next_to_the_files() {
    let s = TempSession::new();
    let host = s.host();
    host.inbound()
        .write_message(&message("m1", "hi").build())
        .unwrap();
    host.inbound()
        .write_message(&message("a1", "").answer_to("q1").build())
        .unwrap();
    let container = s.container();
    container.start().unwrap();
    container
        .outbound()
        .commit(&["m0".into()], &AckStatus::Completed, &[reply("r1", "x")])
        .unwrap();
    let before = listing(s.dir());

    // Everything a poll loop does on the other side's file, through read-only handles.
    let batch = container.poll_after_start(10).unwrap();
    assert_eq!(batch.messages.len(), 1);
    assert!(container.find_answer("q1").unwrap().is_some());
    assert!(container
        .lookup_seq(Seq::new(2).unwrap())
        .unwrap()
        .is_some());
    assert!(container
        .lookup_seq(Seq::new(7).unwrap())
        .unwrap()
        .is_none());
    container.inbound().routing().unwrap();
    container.inbound().destinations().unwrap();
    host.outbound().claims().unwrap();
    host.outbound().container_state().unwrap();
    host.outbound().messages_after(None, 10).unwrap();

    assert_eq!(listing(s.dir()), before, "reads left something behind");
    assert_no_sidecars(s.dir(), "reads");
}

/// The container reads an inbound.db that sits in a folder it cannot write (a read-only bind
/// of the file, as a hardened deployment mounts it). Tests run as root, which ignores
/// permission bits, so the container's part runs in a child process that drops to `nobody`
/// first and proves that it really cannot create a file in that folder.
#[test]
fn the_container_works_on_an_inbound_db_in_a_read_only_folder() {
    if child_role().as_deref() == Some("ro-folder-container") {
        ro_folder_container_child();
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let session = SessionPaths::new(root.path().join("session"));
    sessionbus_store::provision(&session, None, &SystemClock).unwrap();
    let host = HostSession::open(&session.dir);
    host.inbound()
        .write_message(&message("m1", "hello").build())
        .unwrap();
    host.inbound()
        .write_message(&message("a1", "").answer_to("q1").build())
        .unwrap();
    host.inbound()
        .set_routing(&Routing {
            channel_type: Some("slack".into()),
            platform_id: Some("C1".into()),
            thread_id: None,
        })
        .unwrap();

    // Move inbound.db into its own folder, then make file and folder read-only.
    let ro = root.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::rename(&session.inbound, ro.join("inbound.db")).unwrap();
    std::fs::set_permissions(
        ro.join("inbound.db"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // The container owns its folder and outbound.db.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        for p in [&session.container_dir, &session.outbound, &session.outbox] {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
        }
    }
    let before = listing(&ro);

    let out = run_child(
        "the_container_works_on_an_inbound_db_in_a_read_only_folder",
        "ro-folder-container",
        root.path(),
    );
    let text = stdout_of(&out);
    assert!(
        out.status.success(),
        "child failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("CHILD cannot write the folder"), "{text}");
    assert!(text.contains("CHILD polled m1"), "{text}");
    assert!(text.contains("CHILD found answer a1"), "{text}");
    assert!(text.contains("CHILD routing C1"), "{text}");
    assert!(text.contains("CHILD replied seq 5"), "{text}");
    assert_eq!(
        listing(&ro),
        before,
        "the reader created something next to inbound.db"
    );

    // The reply the unprivileged container wrote is there for the host.
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host_reader = HostSession::from_files(
        session.clone(),
        DbFile::new(ro.join("inbound.db"), FileKind::Inbound, Role::Host),
        DbFile::new(&session.outbound, FileKind::Outbound, Role::Host),
        Arc::new(SystemClock),
    );
    let window = host_reader.outbound().messages_after(None, 10).unwrap();
    let out_rows: Vec<_> = window.messages().collect();
    assert_eq!(out_rows.len(), 1);
    assert_eq!(out_rows[0].in_reply_to.as_deref(), Some("m1"));
}

fn ro_folder_container_child() {
    let root = child_dir();
    // SAFETY: plain syscalls on this single-threaded child (libtest runs one test thread).
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    let ro = root.join("ro");
    let probe = std::fs::File::create(ro.join("probe"));
    assert_eq!(
        probe
            .expect_err("the folder must be read-only for the container")
            .kind(),
        std::io::ErrorKind::PermissionDenied
    );
    println!("CHILD cannot write the folder");
    let session = SessionPaths::new(root.join("session"));
    sessionbus_store::check_writable(&session.outbound).unwrap();
    let container = ContainerSession::from_files(
        session.clone(),
        DbFile::new(ro.join("inbound.db"), FileKind::Inbound, Role::Container),
        DbFile::new(&session.outbound, FileKind::Outbound, Role::Container),
        Arc::new(SystemClock),
    );
    container.start().unwrap();
    let batch = container.poll_after_start(10).unwrap();
    assert_eq!(batch.messages.len(), 1);
    let m = batch.messages[0].clone();
    println!("CHILD polled {}", m.id);
    container
        .outbound()
        .ack(&batch.ids(), &AckStatus::Processing)
        .unwrap();
    let answer = container.find_answer("q1").unwrap().unwrap();
    println!("CHILD found answer {}", answer.id);
    let routing = container.inbound().routing().unwrap();
    println!("CHILD routing {}", routing.platform_id.unwrap());
    assert!(container.lookup_seq(m.seq.unwrap()).unwrap().is_some());
    let seqs = container
        .outbound()
        .commit(
            &batch.ids(),
            &AckStatus::Completed,
            &[sessionbus_store::NewOutbound::reply_to("r1", &m, "ok")],
        )
        .unwrap();
    // Host seqs 2 (m1) and 4 (a1): the reply goes above both.
    println!("CHILD replied seq {}", seqs[0]);
}

// ---------------------------------------------------------------------------------------------
// writers leave DELETE mode and synchronous = FULL

thread_local! {
    /// Statements run on this thread's connections, as (connection number, SQL), while a test
    /// records.
    static RECORDED: std::cell::RefCell<Option<Vec<(u64, String)>>> =
        const { std::cell::RefCell::new(None) };
}

struct Recorder {
    conn: u64,
}

impl Instrumentation for Recorder {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        let text = match event {
            InstrumentationEvent::StartEstablishConnection { url, .. } => format!("OPEN {url}"),
            InstrumentationEvent::StartQuery { query, .. } => query.to_string(),
            InstrumentationEvent::BeginTransaction { .. } => "<begin>".into(),
            InstrumentationEvent::CommitTransaction { .. } => "<commit>".into(),
            _ => return,
        };
        RECORDED.with(|r| {
            if let Some(v) = r.borrow_mut().as_mut() {
                v.push((self.conn, text));
            }
        });
    }
}

fn recorder() -> Option<Box<dyn Instrumentation>> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    Some(Box::new(Recorder {
        conn: NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
    }))
}

/// Runs `f` and returns the statements of every connection it opened, one list per connection.
fn record(f: impl FnOnce()) -> Vec<Vec<String>> {
    diesel::connection::set_default_instrumentation(recorder).unwrap();
    RECORDED.with(|r| *r.borrow_mut() = Some(Vec::new()));
    f();
    let events = RECORDED.with(|r| r.borrow_mut().take()).unwrap();
    let mut by_conn: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for (c, s) in events {
        by_conn.entry(c).or_default().push(s);
    }
    by_conn.into_values().collect()
}

#[test]
fn every_write_connection_sets_delete_mode_and_full_sync_before_it_writes() {
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    let conns = record(|| {
        host.inbound()
            .write_message(&message("m1", "hi").build())
            .unwrap();
        host.inbound().set_routing(&Routing::default()).unwrap();
        host.inbound()
            .replace_destinations(&[Destination {
                name: "ops".into(),
                display_name: None,
                kind: DestinationType::Channel,
                channel_type: Some("slack".into()),
                platform_id: Some("C9".into()),
                agent_group_id: None,
            }])
            .unwrap();
        host.inbound()
            .write_host_reply(&NewHostReply {
                id: "h1".into(),
                in_reply_to: Some("m1".into()),
                address: Default::default(),
                content: r#"{"text":"denied"}"#.into(),
            })
            .unwrap();
        container.start().unwrap();
        let batch = container.poll_after_start(10).unwrap();
        container
            .outbound()
            .ack(&batch.ids(), &AckStatus::Processing)
            .unwrap();
        container
            .outbound()
            .commit(&batch.ids(), &AckStatus::Completed, &[reply("r1", "ok")])
            .unwrap();
        container.outbound().state_set("k", "v").unwrap();
        container
            .outbound()
            .set_tool_in_flight("Bash", Some(1000))
            .unwrap();
        host.sync_acks(&|_| None).unwrap();
        for d in host.due_outbound(10).unwrap() {
            host.inbound()
                .record_delivery(
                    &d.message.id,
                    &sessionbus_store::DeliveryOutcome::Delivered {
                        platform_message_id: None,
                    },
                )
                .unwrap();
        }
        host.due_outbound(10).unwrap(); // advances the cursor: a write
    });

    let writers: Vec<&Vec<String>> = conns
        .iter()
        .filter(|c| c.iter().any(|s| s == "<begin>"))
        .collect();
    assert!(
        writers.len() >= 12,
        "too few write transactions seen: {conns:#?}"
    );
    for stmts in &writers {
        let pos = |needle: &str| stmts.iter().position(|s| s.contains(needle));
        let begin = pos("<begin>").unwrap();
        let sync = pos("PRAGMA synchronous = FULL")
            .unwrap_or_else(|| panic!("writer without synchronous = FULL: {stmts:#?}"));
        let mode = pos("PRAGMA journal_mode")
            .unwrap_or_else(|| panic!("writer without a journal_mode check: {stmts:#?}"));
        assert!(
            sync < begin && mode < begin,
            "pragmas after BEGIN: {stmts:#?}"
        );
        assert!(
            !stmts
                .iter()
                .any(|s| s.to_ascii_lowercase().contains("mode=ro")),
            "a writer opened read-only?"
        );
    }
    // Every read of the other side's file was a mode=ro connection with mmap_size = 0.
    let readers: Vec<&Vec<String>> = conns
        .iter()
        .filter(|c| c.first().is_some_and(|s| s.contains("mode=ro")))
        .collect();
    assert!(!readers.is_empty());
    for stmts in readers {
        assert!(
            stmts.iter().any(|s| s.contains("PRAGMA mmap_size = 0")),
            "{stmts:#?}"
        );
        assert!(!stmts.iter().any(|s| s == "<begin>"), "{stmts:#?}");
    }

    #[derive(QueryableByName)]
    struct Sync {
        #[diesel(sql_type = BigInt)]
        synchronous: i64,
    }
    for (p, kind) in [
        (&s.paths.inbound, FileKind::Inbound),
        (&s.paths.outbound, FileKind::Outbound),
    ] {
        assert_eq!(journal_mode(p), "delete", "{}", p.display());
        assert_eq!(header_versions(p), (1, 1), "{}", p.display());
        let mut c = DbFile::new(p, kind, kind.writer())
            .open_writer("check")
            .unwrap();
        let sync = diesel::sql_query("PRAGMA synchronous")
            .get_result::<Sync>(&mut c)
            .unwrap()
            .synchronous;
        assert_eq!(sync, 2, "the writer opener leaves synchronous = FULL");
    }
    assert_no_sidecars(s.dir(), "after the writes");
}

// ---------------------------------------------------------------------------------------------
// readers re-open per poll

#[test]
fn readers_see_new_rows_on_the_very_next_call() {
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    container.start().unwrap();
    let inbound = container.inbound().clone();
    let outbound = host.outbound().clone();

    assert!(container.poll_after_start(10).unwrap().is_empty());
    host.inbound()
        .write_message(&message("m1", "one").build())
        .unwrap();
    assert_eq!(container.poll(10).unwrap().messages.len(), 1);
    host.inbound()
        .write_message(&message("m2", "two").build())
        .unwrap();
    assert_eq!(container.poll(10).unwrap().messages.len(), 2);

    // Destinations rewritten mid-session take effect on the next lookup.
    let dest = |name: &str| Destination {
        name: name.into(),
        display_name: None,
        kind: DestinationType::Agent,
        channel_type: None,
        platform_id: None,
        agent_group_id: Some("g2".into()),
    };
    host.inbound().replace_destinations(&[dest("a")]).unwrap();
    assert!(inbound.destination("a").unwrap().is_some());
    host.inbound().replace_destinations(&[dest("b")]).unwrap();
    assert!(inbound.destination("a").unwrap().is_none());
    assert!(inbound.destination("b").unwrap().is_some());
    host.inbound()
        .set_routing(&Routing {
            thread_id: Some("t9".into()),
            ..Routing::default()
        })
        .unwrap();
    assert_eq!(inbound.routing().unwrap().thread_id.as_deref(), Some("t9"));

    // And the host sees the container's writes at once.
    assert!(outbound.claims().unwrap().is_empty());
    container
        .outbound()
        .ack(&["m1".into()], &AckStatus::Processing)
        .unwrap();
    assert_eq!(outbound.claims().unwrap().len(), 1);
    container
        .outbound()
        .commit(&["m1".into()], &AckStatus::Completed, &[reply("r1", "ok")])
        .unwrap();
    assert!(outbound.claims().unwrap().is_empty());
    assert_eq!(host.due_outbound(10).unwrap().len(), 1);
    container
        .outbound()
        .set_tool_in_flight("Bash", None)
        .unwrap();
    assert_eq!(
        outbound
            .container_state()
            .unwrap()
            .unwrap()
            .current_tool
            .as_deref(),
        Some("Bash")
    );
}

// ---------------------------------------------------------------------------------------------
// seq parity is the database's, not a convention

fn expect_parity_error(r: QueryResult<usize>, table: &str) {
    let e = r.expect_err("the trigger must refuse it");
    let text = e.to_string();
    assert!(
        text.contains("seq parity") && text.contains(table),
        "{table}: {text}"
    );
}

#[test]
fn the_database_refuses_wrong_parity_seqs_from_a_misbehaving_peer() {
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    container.start().unwrap();
    host.inbound()
        .write_message(&message("m1", "hi").build())
        .unwrap();

    let mut inbound = plain(&s.paths.inbound);
    for bad in ["3", "NULL", "0", "-2"] {
        expect_parity_error(
            diesel::sql_query(format!(
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
                 VALUES ('odd', {bad}, 'chat', '2026-04-21T12:00:00.000Z', '{{}}')"
            ))
            .execute(&mut inbound),
            "messages_in",
        );
    }
    expect_parity_error(
        diesel::sql_query("UPDATE messages_in SET seq = 5 WHERE id = 'm1'").execute(&mut inbound),
        "messages_in",
    );
    expect_parity_error(
        diesel::sql_query(
            "INSERT INTO host_replies (id, seq, timestamp, kind, content) \
             VALUES ('h', 7, '2026-04-21T12:00:00.000Z', 'chat', '{}')",
        )
        .execute(&mut inbound),
        "host_replies",
    );
    // A legal even seq from the peer is accepted, and the store continues above it.
    diesel::sql_query(
        "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
         VALUES ('peer', 40, 'chat', '2026-04-21T12:00:00.000Z', '{}')",
    )
    .execute(&mut inbound)
    .unwrap();
    drop(inbound);

    let mut outbound = plain(&s.paths.outbound);
    for bad in ["2", "NULL", "0", "-1"] {
        expect_parity_error(
            diesel::sql_query(format!(
                "INSERT INTO messages_out (id, seq, timestamp, kind, content) \
                 VALUES ('even', {bad}, '2026-04-21 12:00:00', 'chat', '{{}}')"
            ))
            .execute(&mut outbound),
            "messages_out",
        );
    }
    drop(outbound);

    // The store's own writes stay correct.
    let w = host
        .inbound()
        .write_message(&message("m2", "after").build())
        .unwrap();
    assert_eq!(w.seq, Seq::new(42).unwrap());
    let r = container.outbound().write(&reply("r1", "ok")).unwrap();
    assert_eq!(r, Seq::new(43).unwrap());
    let r2 = container.outbound().write(&reply("r2", "ok")).unwrap();
    assert_eq!(r2, Seq::new(45).unwrap());
    let h = host
        .inbound()
        .write_host_reply(&NewHostReply {
            id: "h1".into(),
            in_reply_to: None,
            address: Default::default(),
            content: "{}".into(),
        })
        .unwrap();
    assert_eq!(h, Seq::new(44).unwrap());
    assert_eq!(
        count(
            &s.paths.inbound,
            "SELECT count(*) AS n FROM messages_in WHERE seq % 2 <> 0"
        ),
        0
    );
    // Two messages and the host reply's mirror (for the older implementation's lookups).
    assert_eq!(
        count(&s.paths.inbound, "SELECT count(*) AS n FROM messages_in"),
        3 + 1
    );
    assert_eq!(
        count(
            &s.paths.outbound,
            "SELECT count(*) AS n FROM messages_out WHERE seq % 2 <> 1"
        ),
        0
    );
}

// ---------------------------------------------------------------------------------------------
// a writer killed mid-transaction leaves a hot journal

/// Child: opens `file` like a peer would, starts a transaction, inserts enough rows that the
/// page cache spills them into the main file, then dies without committing or rolling back.
fn die_mid_transaction(file: &Path, table: &str) -> ! {
    let mut c = plain(file);
    c.batch_execute("PRAGMA cache_size = 1").unwrap();
    let size_before = std::fs::metadata(file).unwrap().len();
    c.batch_execute("BEGIN IMMEDIATE").unwrap();
    let body = "x".repeat(2000);
    for i in 0..600 {
        let sql = match table {
            "messages_out" => format!(
                "INSERT INTO messages_out (id, seq, timestamp, kind, content) \
                 VALUES ('ghost-{i}', {}, '2026-04-21 12:00:00', 'chat', '\"{body}\"')",
                10_001 + 2 * i
            ),
            _ => format!(
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) \
                 VALUES ('ghost-{i}', {}, 'chat', '2026-04-21T12:00:00.000Z', '\"{body}\"')",
                10_000 + 2 * i
            ),
        };
        c.batch_execute(&sql).unwrap();
    }
    let size_after = std::fs::metadata(file).unwrap().len();
    let mut journal = file.as_os_str().to_owned();
    journal.push("-journal");
    let journal_len = std::fs::metadata(PathBuf::from(journal)).unwrap().len();
    println!("CHILD spilled main={size_before}->{size_after} journal={journal_len}");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

fn assert_child_died_mid_transaction(out: &Output) {
    let text = stdout_of(out);
    assert!(
        !out.status.success(),
        "the child should have aborted: {text}"
    );
    let line = text
        .lines()
        .find_map(|l| l.find("CHILD spilled").map(|i| &l[i..]))
        .unwrap_or_else(|| {
            panic!(
                "child did not get to the abort: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "CHILD spilled main=A->B journal=J": uncommitted pages reached the main file.
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert!(nums[1] > nums[0], "no spill into the main file: {line}");
    assert!(nums[2] > 0, "empty journal: {line}");
}

#[test]
fn a_container_killed_mid_transaction_leaves_a_hot_journal_the_host_reports_and_recovers() {
    if child_role().as_deref() == Some("die-writing-outbound") {
        die_mid_transaction(&SessionPaths::new(child_dir()).outbound, "messages_out");
    }
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    container.start().unwrap();
    host.inbound()
        .write_message(&message("m1", "hi").build())
        .unwrap();
    container
        .outbound()
        .ack(&["m1".into()], &AckStatus::Processing)
        .unwrap();
    container.outbound().write(&reply("r1", "partial")).unwrap();

    let out = run_child(
        "a_container_killed_mid_transaction_leaves_a_hot_journal_the_host_reports_and_recovers",
        "die-writing-outbound",
        s.dir(),
    );
    assert_child_died_mid_transaction(&out);
    let journal = s.container_dir().join("outbound.db-journal");
    assert!(journal.exists(), "no journal left behind");

    // The host's reads get the retryable error (after the store's brief internal retry).
    for _ in 0..2 {
        let e = host
            .outbound()
            .claims()
            .expect_err("claims over a hot journal");
        match db_err(&e) {
            DbError::HotJournal { journal: j, at } => {
                assert_eq!(j, &journal);
                assert_eq!(at.path, s.paths.outbound);
            }
            other => panic!("expected HotJournal, got {other:?}"),
        }
        assert!(e.is_retryable());
        assert!(e.to_string().contains("hot journal"), "{e}");
    }
    let e = host
        .due_outbound(10)
        .expect_err("delivery reads over a hot journal");
    assert!(matches!(db_err(&e), DbError::HotJournal { .. }), "{e:?}");
    assert!(
        journal.exists(),
        "a reader must not (and cannot) touch the journal"
    );

    // The host never rolls it back: the next container's first open of its own file does
    // (it is the file's writer, inside its own sandbox).
    container.outbound().state_get("anything").unwrap();
    assert!(!journal.exists());

    let claims = host.outbound().claims().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].message_id, "m1");
    let rows = host.outbound().messages_after(None, 10_000).unwrap();
    let ids: Vec<&str> = rows.messages().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["r1"], "the uncommitted rows are gone");
    assert_eq!(journal_mode(&s.paths.outbound), "delete");
    // The file is sound and the container carries on above its committed seqs.
    assert_eq!(
        container.outbound().write(&reply("r2", "next")).unwrap(),
        Seq::new(5).unwrap()
    );
}

#[test]
fn a_host_killed_mid_transaction_leaves_inbound_hot_until_the_next_host_write() {
    if child_role().as_deref() == Some("die-writing-inbound") {
        die_mid_transaction(&child_dir().join("inbound.db"), "messages_in");
    }
    let s = TempSession::new();
    let host = s.host();
    let container = s.container();
    container.start().unwrap();
    host.inbound()
        .write_message(&message("m1", "committed").build())
        .unwrap();

    let out = run_child(
        "a_host_killed_mid_transaction_leaves_inbound_hot_until_the_next_host_write",
        "die-writing-inbound",
        s.dir(),
    );
    assert_child_died_mid_transaction(&out);
    let journal = s.dir().join("inbound.db-journal");
    assert!(journal.exists());

    for _ in 0..2 {
        let e = container
            .poll_after_start(10)
            .expect_err("poll over a hot journal");
        match db_err(&e) {
            DbError::HotJournal { journal: j, .. } => assert_eq!(j, &journal),
            other => panic!("expected HotJournal, got {other:?}"),
        }
        assert!(e.is_retryable());
    }
    let e = container
        .outbound()
        .write(&reply("r0", "needs the host max seq"))
        .expect_err("a container write reads inbound's max seq");
    assert!(e.is_retryable(), "{e:?}");
    assert!(journal.exists());

    // Any host write recovers it.
    host.inbound().set_routing(&Routing::default()).unwrap();
    assert!(!journal.exists());
    let batch = container.poll_after_start(10).unwrap();
    let ids: Vec<&str> = batch.messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1"], "only the committed row is there");
    assert_eq!(host.inbound().count_due().unwrap(), 1);
    let w = host
        .inbound()
        .write_message(&message("m2", "after").build())
        .unwrap();
    assert_eq!(
        w.seq,
        Seq::new(4).unwrap(),
        "seqs continue from the committed rows"
    );
    assert_eq!(
        container.outbound().write(&reply("r1", "ok")).unwrap(),
        Seq::new(5).unwrap()
    );
}
