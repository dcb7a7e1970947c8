//! Several writers on one file, and the two sides running at once, through real files and
//! real processes. Seqs are allocated inside each writer's `BEGIN IMMEDIATE` transaction, so
//! concurrent writers serialise through SQLite's lock and never collide or lose a row.
//!
//! Multi-process tests re-run this test binary on their own name with `CHILD_ENV` set; the
//! test body then plays the child's part. Children give up after `DEADLINE` so that a bug
//! shows as a failure instead of a hung test run (it is a hang guard, not a timing assertion).

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use sessionbus_store::{
    AckStatus, ContainerSession, DeliveryOutcome, HostSession, NewHostReply, NewOutbound, Seq,
};
use sessionbus_testkit::{message, TempSession};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SESSIONBUS_CONCURRENCY_CHILD";
const CHILD_DIR: &str = "SESSIONBUS_CONCURRENCY_DIR";
const CHILD_INDEX: &str = "SESSIONBUS_CONCURRENCY_INDEX";
const DEADLINE: Duration = Duration::from_secs(120);

fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

fn child_dir() -> PathBuf {
    PathBuf::from(std::env::var(CHILD_DIR).expect("child without a folder"))
}

fn child_index() -> usize {
    std::env::var(CHILD_INDEX).unwrap().parse().unwrap()
}

/// Starts this test binary again, only test `name`, as child `role` number `index` on `dir`.
fn spawn_child(name: &str, role: &str, index: usize, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env(CHILD_DIR, dir)
        .env(CHILD_INDEX, index.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process")
}

/// Children wait for this file before they start writing, so that they write at the same
/// time rather than one after the other as they happen to start up.
const GO: &str = "go";

fn wait_for_go(dir: &Path) {
    let start = Instant::now();
    while !dir.join(GO).exists() {
        assert!(start.elapsed() < DEADLINE, "never told to go");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn go(dir: &Path) {
    std::fs::write(dir.join(GO), b"").unwrap();
}

/// Waits for a child and returns its stdout; panics with its output when it failed.
fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Lines a child printed with `prefix` (libtest may print its "test x ..." before the first).
fn tagged<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter_map(|l| l.find(prefix).map(|i| &l[i + prefix.len()..]))
        .collect()
}

fn plain(path: &Path) -> SqliteConnection {
    SqliteConnection::establish(path.to_str().unwrap()).unwrap()
}

#[derive(QueryableByName, Debug)]
struct IdSeq {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

/// `(id, seq)` of every row of `table`, in seq order.
fn id_seqs(path: &Path, table: &str) -> Vec<IdSeq> {
    diesel::sql_query(format!("SELECT id, seq FROM {table} ORDER BY seq"))
        .load(&mut plain(path))
        .unwrap()
}

/// Seqs are unique, positive and of the given parity (0 = host, 1 = container).
fn assert_seqs(rows: &[IdSeq], parity: i64, what: &str) {
    let mut seen = HashSet::new();
    for r in rows {
        assert!(r.seq > 0, "{what}: {r:?}");
        assert_eq!(r.seq % 2, parity, "{what}: wrong parity {r:?}");
        assert!(seen.insert(r.seq), "{what}: seq {} used twice", r.seq);
    }
}

/// Rows written by writer `w` (id prefix `w-`) carry increasing seqs in the order that writer
/// wrote them (its own commit order).
fn assert_increasing_per_writer(rows: &[IdSeq], what: &str) {
    let mut last: HashMap<&str, (usize, i64)> = HashMap::new();
    for r in rows {
        let (w, i) = r.id.rsplit_once('-').unwrap();
        let i: usize = i.parse().unwrap();
        if let Some((pi, ps)) = last.get(w) {
            assert!(
                i > *pi && r.seq > *ps,
                "{what}: {w}'s row {i} (seq {}) after row {pi} (seq {ps})",
                r.seq
            );
        }
        last.insert(w, (i, r.seq));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn host_threads_writing_one_inbound_db_never_collide_nor_lose_a_row() {
    const THREADS: usize = 4;
    const EACH: usize = 100;
    let s = TempSession::new();
    let dir = s.dir().to_path_buf();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                // Each thread is its own host session (as separate host components are).
                let host = HostSession::open(&dir);
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let seq = if t == 0 && i % 2 == 1 {
                        // Host replies share the host seq space with messages_in.
                        host.inbound()
                            .write_host_reply(&NewHostReply {
                                id: format!("t{t}-{i}"),
                                in_reply_to: None,
                                address: Default::default(),
                                content: r#"{"text":"denied"}"#.into(),
                            })
                            .unwrap()
                    } else if t == 1 && i % 10 == 0 {
                        // A batch of two in one transaction.
                        let w = host
                            .inbound()
                            .write_messages(&[
                                message(&format!("t{t}-{i}"), "a").build(),
                                message(&format!("t{t}b-{i}"), "b").build(),
                            ])
                            .unwrap();
                        assert_eq!(
                            w[1].seq.get(),
                            w[0].seq.get() + 2,
                            "a batch takes consecutive seqs"
                        );
                        w[0].seq
                    } else {
                        host.inbound()
                            .write_message(&message(&format!("t{t}-{i}"), "x").build())
                            .unwrap()
                            .seq
                    };
                    seqs.push(seq);
                }
                seqs
            })
        })
        .collect();
    let mut returned = Vec::new();
    for h in handles {
        let seqs = h.join().unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "per-thread commit order"
        );
        returned.extend(seqs);
    }

    let replies = id_seqs(&s.paths.inbound, "host_replies");
    // Each host reply has a mirror in messages_in (same id and seq) for the older
    // implementation; the messages are the other rows.
    let all_in = id_seqs(&s.paths.inbound, "messages_in");
    let mirrors = all_in
        .iter()
        .filter(|m| replies.iter().any(|r| r.id == m.id && r.seq == m.seq))
        .count();
    assert_eq!(mirrors, replies.len(), "every host reply is mirrored");
    let msgs: Vec<IdSeq> = all_in
        .into_iter()
        .filter(|m| !replies.iter().any(|r| r.id == m.id))
        .collect();
    assert_eq!(msgs.len(), THREADS * EACH - EACH / 2 + EACH / 10);
    assert_eq!(replies.len(), EACH / 2);
    let all: Vec<IdSeq> = {
        let mut v: Vec<IdSeq> = msgs.into_iter().chain(replies).collect();
        v.sort_by_key(|r| r.seq);
        v
    };
    assert_seqs(&all, 0, "host rows");
    assert_increasing_per_writer(&all, "host rows");
    for t in 0..THREADS {
        for i in 0..EACH {
            let id = format!("t{t}-{i}");
            assert!(all.iter().any(|r| r.id == id), "{id} lost");
        }
    }
    let in_file: HashSet<i64> = all.iter().map(|r| r.seq).collect();
    assert!(
        returned.iter().all(|s| in_file.contains(&s.get())),
        "a returned seq is not in the file"
    );
    // Dense: no seq was skipped either.
    assert_eq!(all.last().unwrap().seq, 2 * all.len() as i64);
}

#[test]
fn host_processes_writing_one_inbound_db_never_collide_nor_lose_a_row() {
    const PROCS: usize = 3;
    const EACH: usize = 200;
    const NAME: &str = "host_processes_writing_one_inbound_db_never_collide_nor_lose_a_row";
    if child_role().as_deref() == Some("host-writer") {
        let host = HostSession::open(child_dir());
        let p = child_index();
        wait_for_go(&child_dir());
        for i in 0..EACH {
            let w = host
                .inbound()
                .write_message(&message(&format!("p{p}-{i}"), "x").build())
                .unwrap();
            println!("SEQ {}", w.seq);
        }
        return;
    }
    let s = TempSession::new();
    let children: Vec<Child> = (0..PROCS)
        .map(|p| spawn_child(NAME, "host-writer", p, s.dir()))
        .collect();
    go(s.dir());
    let mut printed = HashSet::new();
    for (p, c) in children.into_iter().enumerate() {
        let out = finish(c, &format!("host process {p}"));
        let seqs: Vec<i64> = tagged(&out, "SEQ ")
            .iter()
            .map(|t| t.trim().parse().unwrap())
            .collect();
        assert_eq!(seqs.len(), EACH, "process {p} did not finish");
        for q in seqs {
            assert!(printed.insert(q), "seq {q} handed to two writers");
        }
    }
    let rows = id_seqs(&s.paths.inbound, "messages_in");
    assert_eq!(rows.len(), PROCS * EACH);
    assert_seqs(&rows, 0, "host rows");
    assert_increasing_per_writer(&rows, "host rows");
    let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    for p in 0..PROCS {
        for i in 0..EACH {
            assert!(ids.contains(format!("p{p}-{i}").as_str()), "p{p}-{i} lost");
        }
    }
    assert_eq!(
        printed,
        rows.iter().map(|r| r.seq).collect::<HashSet<_>>(),
        "the seqs writers were told are the seqs in the file"
    );
}

/// Busy-loop threads that keep every core busy until dropped: contention the way a loaded
/// machine makes it (a writer descheduled while it holds the lock, so the other one's busy
/// timeout runs out), on purpose and inside the test.
struct CpuLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl CpuLoad {
    fn start() -> CpuLoad {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    x
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Two container processes (the runner and a tool server) append to outbound.db at once while
/// every core is kept busy: a writer that loses the lock for longer than the busy timeout
/// retries with backoff instead of failing, so nothing is lost.
#[test]
fn runner_and_tool_server_append_outbound_rows_concurrently() {
    const EACH: usize = 1000;
    const NAME: &str = "runner_and_tool_server_append_outbound_rows_concurrently";
    if child_role().as_deref() == Some("container-writer") {
        let container = ContainerSession::open(child_dir()).unwrap();
        let who = ["runner", "tools"][child_index()];
        wait_for_go(&child_dir());
        for i in 0..EACH {
            container
                .outbound()
                .write(&NewOutbound::chat(format!("{who}-{i}"), "progress"))
                .unwrap();
        }
        println!("DONE {who}");
        return;
    }
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("m1", "go").build())
        .unwrap();
    s.container().start().unwrap();
    let children: Vec<Child> = (0..2)
        .map(|i| spawn_child(NAME, "container-writer", i, s.dir()))
        .collect();
    let load = CpuLoad::start();
    go(s.dir());
    for (i, c) in children.into_iter().enumerate() {
        let out = finish(c, &format!("container process {i}"));
        assert_eq!(tagged(&out, "DONE ").len(), 1);
    }
    drop(load);
    let rows = id_seqs(&s.paths.outbound, "messages_out");
    assert_eq!(rows.len(), 2 * EACH);
    assert_seqs(&rows, 1, "container rows");
    assert_increasing_per_writer(&rows, "container rows");
    assert!(rows[0].seq > 2, "above the host's message: {:?}", rows[0]);
}

// ---------------------------------------------------------------------------------------------
// a host and a container process talking through real files

const EXCHANGE: usize = 1000;

fn host_side(dir: &Path) {
    let host = HostSession::open(dir);
    let start = Instant::now();
    let mut written = 0;
    let mut delivered = 0;
    let mut round = 0usize;
    let mut completed = 0;
    while delivered < EXCHANGE || completed < EXCHANGE {
        assert!(
            start.elapsed() < DEADLINE,
            "host: gave up (written {written}, delivered {delivered})"
        );
        round += 1;
        let mut busy = false;
        // Write at its own pace: 0 to 3 messages per round, sometimes as one batch.
        let n = (round % 4).min(EXCHANGE - written);
        if n > 0 {
            let msgs: Vec<_> = (written..written + n)
                .map(|i| message(&format!("m-{i}"), &format!("question {i}")).build())
                .collect();
            if round % 3 == 0 {
                host.inbound().write_messages(&msgs).unwrap();
            } else {
                for m in &msgs {
                    host.inbound().write_message(m).unwrap();
                }
            }
            written += n;
            busy = true;
        }
        // The host waits for the container's lock on its file only briefly (a stuck container
        // must not hold up a sweep): a lock held longer is retried on the next round.
        let report = match host.sync_acks(&|_| None) {
            Err(e) if e.is_retryable() => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            other => other.unwrap(),
        };
        completed += report.completed.len();
        assert!(report.failed.is_empty());
        let due = match host.due_outbound(50) {
            Err(e) if e.is_retryable() => {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            other => other.unwrap(),
        };
        for d in due {
            let seq = d.message.seq.unwrap();
            assert!(
                host.inbound()
                    .record_delivery(
                        &d.message.id,
                        &DeliveryOutcome::Delivered {
                            platform_message_id: Some(format!("P{}", seq.get())),
                        },
                    )
                    .unwrap(),
                "delivered twice: {}",
                d.message.id
            );
            println!("DELIVERED {} {}", seq.get(), d.message.id);
            delivered += 1;
            busy = true;
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(host.inbound().count_due().unwrap(), 0);
    assert!(host.due_outbound(50).unwrap().is_empty());
}

fn container_side(dir: &Path) {
    let container = ContainerSession::open(dir).unwrap();
    container.start().unwrap();
    let start = Instant::now();
    let mut answered = HashSet::new();
    let mut first = true;
    let mut n = 0usize;
    while answered.len() < EXCHANGE {
        assert!(
            start.elapsed() < DEADLINE,
            "container: gave up at {}",
            answered.len()
        );
        let batch = if first {
            container.poll_after_start(10)
        } else {
            container.poll(10)
        }
        .unwrap();
        first = false;
        if batch.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let ids = batch.ids();
        container
            .outbound()
            .ack(&ids, &AckStatus::Processing)
            .unwrap();
        let replies: Vec<NewOutbound> = batch
            .messages
            .iter()
            .map(|m| NewOutbound::reply_to(format!("r-{}", &m.id[2..]), m, "answer"))
            .collect();
        // Reply and completed ack commit together; every now and then one message per commit.
        if n % 5 == 0 {
            for (id, r) in ids.iter().zip(&replies) {
                container
                    .outbound()
                    .commit(
                        std::slice::from_ref(id),
                        &AckStatus::Completed,
                        std::slice::from_ref(r),
                    )
                    .unwrap();
            }
        } else {
            container
                .outbound()
                .commit(&ids, &AckStatus::Completed, &replies)
                .unwrap();
        }
        n += 1;
        for id in ids {
            assert!(answered.insert(id.clone()), "{id} handed out twice");
        }
    }
    println!("ANSWERED {}", answered.len());
}

#[derive(QueryableByName)]
struct ReplyRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Nullable<Text>)]
    in_reply_to: Option<String>,
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

#[derive(QueryableByName)]
struct DeliveredRow {
    #[diesel(sql_type = Text)]
    message_out_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    platform_message_id: Option<String>,
}

#[test]
fn a_host_and_a_container_process_exchange_a_thousand_messages() {
    const NAME: &str = "a_host_and_a_container_process_exchange_a_thousand_messages";
    match child_role().as_deref() {
        Some("host") => return host_side(&child_dir()),
        Some("container") => return container_side(&child_dir()),
        _ => {}
    }
    let s = TempSession::new();
    let container = spawn_child(NAME, "container", 0, s.dir());
    let host = spawn_child(NAME, "host", 0, s.dir());
    let host_out = finish(host, "host process");
    let container_out = finish(container, "container process");
    assert_eq!(tagged(&container_out, "ANSWERED "), [EXCHANGE.to_string()]);

    // Inbound: every message there once, completed.
    let mut c = plain(&s.paths.inbound);
    let msgs: Vec<StatusRow> = diesel::sql_query("SELECT id, seq, status FROM messages_in")
        .load(&mut c)
        .unwrap();
    assert_eq!(msgs.len(), EXCHANGE);
    assert!(msgs
        .iter()
        .all(|m| m.status.as_deref() == Some("completed")));
    let msg_seq: HashMap<&str, i64> = msgs.iter().map(|m| (m.id.as_str(), m.seq)).collect();
    for i in 0..EXCHANGE {
        assert!(
            msg_seq.contains_key(format!("m-{i}").as_str()),
            "m-{i} lost"
        );
    }

    // Outbound: exactly one reply per message, each after what it answers.
    let replies: Vec<ReplyRow> =
        diesel::sql_query("SELECT id, seq, in_reply_to FROM messages_out ORDER BY seq")
            .load(&mut plain(&s.paths.outbound))
            .unwrap();
    assert_eq!(replies.len(), EXCHANGE);
    let mut answered = HashSet::new();
    for r in &replies {
        let to = r.in_reply_to.as_deref().unwrap();
        assert!(answered.insert(to), "{to} answered twice");
        assert_eq!(r.seq % 2, 1);
        assert!(
            r.seq > msg_seq[to],
            "reply {} (seq {}) is not after {to} (seq {})",
            r.id,
            r.seq,
            msg_seq[to]
        );
    }
    let all_seqs: HashSet<i64> = msgs
        .iter()
        .map(|m| m.seq)
        .chain(replies.iter().map(|r| r.seq))
        .collect();
    assert_eq!(
        all_seqs.len(),
        2 * EXCHANGE,
        "a seq is shared across the files"
    );

    // Delivery: each reply once, in seq order, recorded with its platform id.
    let log: Vec<(i64, String)> = tagged(&host_out, "DELIVERED ")
        .iter()
        .map(|l| {
            let (seq, id) = l.split_once(' ').unwrap();
            (seq.parse().unwrap(), id.to_string())
        })
        .collect();
    assert_eq!(log.len(), EXCHANGE);
    assert!(
        log.windows(2).all(|w| w[0].0 < w[1].0),
        "not delivered in seq order"
    );
    let by_id: BTreeMap<&str, i64> = replies.iter().map(|r| (r.id.as_str(), r.seq)).collect();
    for (seq, id) in &log {
        assert_eq!(by_id[id.as_str()], *seq);
    }
    let delivered: Vec<DeliveredRow> =
        diesel::sql_query("SELECT message_out_id, platform_message_id FROM delivered")
            .load(&mut c)
            .unwrap();
    assert_eq!(delivered.len(), EXCHANGE);
    for d in &delivered {
        assert_eq!(
            d.platform_message_id,
            Some(format!("P{}", by_id[d.message_out_id.as_str()]))
        );
    }
    // And the container can now resolve "edit message N" to the platform's id.
    let view = s.container();
    let last = replies.last().unwrap();
    let target = view
        .lookup_seq(Seq::new(last.seq).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(target.platform_message_id, format!("P{}", last.seq));
}

/// Holds a lock on `path` from a plain connection for `hold`, on a thread (`BEGIN IMMEDIATE`:
/// other writers wait; `BEGIN EXCLUSIVE`: readers too); returns once the lock is taken.
fn hold_lock(path: &Path, begin: &'static str, hold: Duration) -> std::thread::JoinHandle<()> {
    use diesel::connection::SimpleConnection;
    let path = path.to_path_buf();
    let (taken, is_taken) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut c = plain(&path);
        c.batch_execute(begin).unwrap();
        taken.send(()).unwrap();
        std::thread::sleep(hold);
        c.batch_execute("COMMIT").unwrap();
    });
    is_taken.recv().unwrap();
    t
}

/// The container's writes wait out a lock held past the busy timeout (with backoff, within a
/// budget) instead of failing; the host's writes of inbound.db keep their single attempt.
/// The busy timeouts are cut to 100 ms so that the lock can be held past them quickly.
#[test]
fn a_container_write_outlasts_a_lock_held_past_the_busy_timeout() {
    use sessionbus_schema::{DbError, DbFile, FileKind, Role};
    let s = TempSession::new();
    let short = Duration::from_millis(100);
    let inbound =
        DbFile::new(&s.paths.inbound, FileKind::Inbound, Role::Container).with_busy_timeout(short);
    let outbound = DbFile::new(&s.paths.outbound, FileKind::Outbound, Role::Container)
        .with_busy_timeout(short);
    let container =
        ContainerSession::from_files(s.paths.clone(), inbound.clone(), outbound, s.clock.shared());
    container.start().unwrap();

    let holder = hold_lock(
        &s.paths.outbound,
        "BEGIN IMMEDIATE",
        Duration::from_millis(800),
    );
    let start = Instant::now();
    container
        .outbound()
        .write(&NewOutbound::chat("after-the-lock", "x"))
        .unwrap();
    let waited = start.elapsed();
    holder.join().unwrap();
    assert!(
        waited >= Duration::from_millis(600),
        "it did wait: {waited:?}"
    );
    assert_eq!(id_seqs(&s.paths.outbound, "messages_out").len(), 1);
    // Own reads of the container's file ride out an exclusive lock the same way.
    let holder = hold_lock(
        &s.paths.outbound,
        "BEGIN EXCLUSIVE",
        Duration::from_millis(500),
    );
    let start = Instant::now();
    assert!(container
        .outbound()
        .acks(&["nothing".into()])
        .unwrap()
        .is_empty());
    let waited = start.elapsed();
    holder.join().unwrap();
    assert!(
        waited >= Duration::from_millis(300),
        "it did wait: {waited:?}"
    );

    // The host's file: one attempt, `Locked` after its busy timeout.
    let host = HostSession::from_files(
        s.paths.clone(),
        inbound.as_role(Role::Host).with_busy_timeout(short),
        DbFile::new(&s.paths.outbound, FileKind::Outbound, Role::Host),
        s.clock.shared(),
    );
    let holder = hold_lock(
        &s.paths.inbound,
        "BEGIN IMMEDIATE",
        Duration::from_millis(800),
    );
    let start = Instant::now();
    let err = host
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap_err();
    let failed_after = start.elapsed();
    holder.join().unwrap();
    assert!(matches!(err.as_db(), Some(DbError::Locked { .. })), "{err}");
    assert!(
        failed_after < Duration::from_millis(700),
        "{failed_after:?}"
    );
}
