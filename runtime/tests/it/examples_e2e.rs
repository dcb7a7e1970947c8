//! End to end through the real example binaries: `examples/host.rs` driving
//! `examples/echo_container.rs` as a child process, through real files.
//!
//! The examples are built once per test binary with `cargo build --example ...` (a no-op when
//! they are up to date), and their paths come from cargo's JSON messages, so a custom target
//! dir is respected.

use sessionbus_runtime::control::ChildControl;
use sessionbus_runtime::host::{decide_now, sweep_session, SweepOptions};
use sessionbus_runtime::liveness::{KillReason, StuckDecision};
use sessionbus_runtime::{heartbeat, host::ContainerControl};
use sessionbus_schema::{Clock, FileKind, Timestamp};
use sessionbus_store::{provision, HostSession, MessageStatus, NewMessage, SessionPaths};
use sessionbus_testkit::{legacy, ManualClock};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Paths of the two example binaries.
struct Examples {
    echo: PathBuf,
    host: PathBuf,
}

fn examples() -> &'static Examples {
    static EX: OnceLock<Result<Examples, String>> = OnceLock::new();
    let built = EX.get_or_init(|| {
        let mut exe = sessionbus_testkit::child::built_executables(
            "sessionbus-runtime",
            &["--example", "echo_container", "--example", "host"],
            &["echo_container", "host"],
        )?;
        Ok(Examples {
            echo: exe.remove("echo_container").expect("reported"),
            host: exe.remove("host").expect("reported"),
        })
    });
    match built {
        Ok(e) => e,
        Err(e) => panic!("building the examples: {e}"),
    }
}

/// What a finished process printed.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion with a timeout, reading its output on threads (a child of the
/// child may hold the pipes open; a timeout then fails the test instead of hanging it).
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let collect = |mut pipe: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::clone(&buf);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        buf
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.lock().unwrap()),
                String::from_utf8_lossy(&err.lock().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the readers drain what is left.
    let drained = Instant::now() + Duration::from_secs(5);
    std::thread::sleep(Duration::from_millis(50));
    while Instant::now() < drained && Arc::strong_count(&out) + Arc::strong_count(&err) > 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    Finished {
        status,
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// One reply line of the host's stdout.
#[derive(Debug, Clone, serde::Deserialize)]
struct Reply {
    seq: i64,
    #[allow(dead_code)]
    id: String,
    in_reply_to: String,
    text: String,
    source: String,
}

fn replies(stdout: &str) -> Vec<Reply> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Runs the host example on `data` with `args` and the echo container.
fn host(data: &Path, session: &str, args: &[&str]) -> Finished {
    let ex = examples();
    let mut cmd = Command::new(&ex.host);
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--group", "g", "--session", session])
        .arg("--container-cmd")
        .arg(&ex.echo)
        .args(["--tick-ms", "20", "--poll-ms", "30", "--timeout-secs", "60"])
        .args(args);
    run_with_timeout(cmd, Duration::from_secs(90))
}

fn answers_by_message(rs: &[Reply]) -> BTreeMap<String, Vec<Reply>> {
    let mut m: BTreeMap<String, Vec<Reply>> = BTreeMap::new();
    for r in rs {
        m.entry(r.in_reply_to.clone()).or_default().push(r.clone());
    }
    m
}

#[test]
fn every_message_is_answered_exactly_once_and_in_order() {
    let data = tempfile::tempdir().unwrap();
    let texts = [
        "first", "/help", "/cost", "second", "third", "fourth", "fifth",
    ];
    let mut args = vec!["--id-prefix", "t"];
    for t in &texts {
        args.extend(["--message", t]);
    }
    let run = host(data.path(), "s1", &args);
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    let rs = replies(&run.stdout);
    let by = answers_by_message(&rs);

    // /help is filtered: no answer. /cost is denied by the host (not an admin).
    assert!(!by.contains_key("t-2"), "{rs:?}");
    assert_eq!(by["t-3"].len(), 1);
    assert_eq!(by["t-3"][0].source, "host");
    assert_eq!(
        by["t-3"][0].text,
        "Permission denied: /cost requires admin access."
    );
    assert_eq!(by["t-3"][0].seq % 2, 0, "host rows have even seqs");
    // Every other message: exactly one echo, from the container, with an odd seq.
    let chat = [
        (1, "first"),
        (4, "second"),
        (5, "third"),
        (6, "fourth"),
        (7, "fifth"),
    ];
    for (i, text) in chat {
        let id = format!("t-{i}");
        let a = by
            .get(&id)
            .unwrap_or_else(|| panic!("{id} unanswered: {rs:?}"));
        assert_eq!(a.len(), 1, "{id} answered {} times", a.len());
        assert_eq!(a[0].text, format!("echo: {text}"));
        assert_eq!(a[0].source, "container");
        assert_eq!(a[0].seq % 2, 1, "container rows have odd seqs");
    }
    assert_eq!(rs.len(), 6);
    // In order: delivered in seq order, and the echoes follow the messages' order.
    assert!(rs.windows(2).all(|w| w[0].seq < w[1].seq), "{rs:?}");
    let echo_order: Vec<&str> = rs
        .iter()
        .filter(|r| r.source == "container")
        .map(|r| r.in_reply_to.as_str())
        .collect();
    assert_eq!(echo_order, ["t-1", "t-4", "t-5", "t-6", "t-7"]);

    // The files agree: every written message completed, no claim left behind.
    let dir = data.path().join("v2-sessions/g/s1");
    let h = HostSession::open(&dir);
    for (i, _) in chat {
        let m = h.inbound().message(&format!("t-{i}")).unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Completed, "t-{i}");
    }
    assert!(h.inbound().message("t-2").unwrap().is_none(), "filtered");
    assert!(h.inbound().message("t-3").unwrap().is_none(), "denied");
    assert!(h.pending_claims().unwrap().is_empty());

    // A second run on the same session, as an admin: /clear passes and resets the
    // conversation; the reply ids never collide with the first run's.
    let run = host(
        data.path(),
        "s1",
        &[
            "--admin",
            "--id-prefix",
            "u",
            "--message",
            "/clear",
            "--message",
            "again",
        ],
    );
    assert!(run.status.success(), "{}\n{}", run.status, run.stderr);
    let rs2 = replies(&run.stdout);
    let by = answers_by_message(&rs2);
    assert_eq!(by["u-1"].len(), 1);
    assert_eq!(by["u-1"][0].text, "Session cleared.");
    assert_eq!(by["u-2"][0].text, "echo: again");
    assert!(rs2[0].seq > rs.last().unwrap().seq, "seqs keep growing");
}

/// A small deterministic generator (xorshift64), so the kill points are random but
/// reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn kill_9_at_seeded_random_points_loses_and_duplicates_nothing() {
    const N: usize = 6;
    for seed in [0x5eed_0001_u64, 0x5eed_0002, 0x5eed_0003] {
        let mut rng = Rng(seed);
        let batch = 1 + rng.below(2);
        let slow = [300, 400, 600][rng.below(3) as usize];
        let mut kills: Vec<usize> = Vec::new();
        while kills.len() < 1 + rng.below(2) as usize {
            let k = rng.below(N as u64 - 1) as usize; // after k replies, k < N: one is left
            if !kills.contains(&k) {
                kills.push(k);
            }
        }
        let data = tempfile::tempdir().unwrap();
        let slow_arg = format!("--slow-ms={slow}");
        let batch_arg = batch.to_string();
        let kill_args: Vec<String> = kills.iter().map(ToString::to_string).collect();
        let texts: Vec<String> = (1..=N).map(|i| format!("message {i}")).collect();
        let mut args: Vec<&str> = vec![
            "--id-prefix",
            "k",
            "--retry-backoff-ms",
            "100",
            "--batch-size",
            &batch_arg,
            "--container-arg",
            &slow_arg,
        ];
        for k in &kill_args {
            args.extend(["--kill-after", k]);
        }
        for t in &texts {
            args.extend(["--message", t]);
        }
        let run = host(data.path(), "s", &args);
        let ctx = format!(
            "seed {seed:#x}: batch {batch}, slow {slow} ms, kills after {kills:?}\n{}",
            run.stderr
        );
        assert!(run.status.success(), "{}: {ctx}", run.status);
        let by = answers_by_message(&replies(&run.stdout));
        for (i, text) in texts.iter().enumerate() {
            let id = format!("k-{}", i + 1);
            let a = by.get(&id).map_or(0, Vec::len);
            assert_eq!(a, 1, "{id} answered {a} times; {ctx}");
            assert_eq!(by[&id][0].text, format!("echo: {text}"), "{ctx}");
        }
        assert_eq!(by.len(), N, "{ctx}");
        // Each kill landed while the container held a claim, and the sweep retried it.
        let killed = run.stderr.matches("host: kill -9 container pid").count();
        assert_eq!(killed, kills.len(), "{ctx}");
        let retried = run.stderr.matches("sweep retried the claim of").count();
        assert!(retried >= 1, "no claim was retried; {ctx}");
        // The files agree: each message has one row in outbound.db and is completed.
        let h = HostSession::open(data.path().join("v2-sessions/g/s"));
        let rows = h.outbound().messages_after(None, 1000).unwrap().rows;
        assert_eq!(rows.len(), N, "{ctx}");
        for i in 1..=N {
            let m = h.inbound().message(&format!("k-{i}")).unwrap().unwrap();
            assert_eq!(m.status, MessageStatus::Completed, "k-{i}; {ctx}");
        }
        assert!(h.pending_claims().unwrap().is_empty(), "{ctx}");
    }
}

#[test]
fn a_container_serves_an_older_hosts_unmigrated_inbound_db_and_refuses_one_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(dir.path().join("session"));
    provision(&paths, None, &sessionbus_store::SystemClock).unwrap();
    // The host's file is a legacy G3 one that nobody migrated (an older host's), with two
    // pending messages.
    std::fs::remove_file(&paths.inbound).unwrap();
    legacy::create(
        &paths.inbound,
        FileKind::Inbound,
        3,
        legacy::Style::Created,
        0,
    )
    .unwrap();
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        diesel::SqliteConnection::establish(&paths.inbound.to_string_lossy())
            .unwrap()
            .batch_execute(
                "INSERT INTO messages_in (id, seq, kind, timestamp, status, content) VALUES \
                 ('o1', 2, 'chat', '2026-04-21T12:00:00.000Z', 'pending', '{\"text\":\"one\"}'), \
                 ('o2', 4, 'chat', '2026-04-21T12:00:01.000Z', 'pending', '{\"text\":\"two\"}');",
            )
            .unwrap();
    }
    let before = std::fs::read(&paths.inbound).unwrap();
    let mut ctl = ChildControl::new(&examples().echo, vec![]).quiet(true);
    ctl.start(&paths).unwrap();
    let host = HostSession::with_paths(paths.clone(), Arc::new(sessionbus_store::SystemClock));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let window = host.outbound().messages_after(None, 10).unwrap();
        let answered: Vec<_> = window
            .messages()
            .filter_map(|m| m.in_reply_to.clone())
            .collect();
        if answered.len() == 2 {
            assert_eq!(answered, ["o1", "o2"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the older host's messages were not answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl.stop(&paths, Duration::from_secs(5)).unwrap();
    // The container never writes the host's file, not even to migrate it.
    assert_eq!(std::fs::read(&paths.inbound).unwrap(), before);

    // A file no generation ever had: one clear error, the folder exactly as it was.
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        diesel::SqliteConnection::establish(&paths.inbound.to_string_lossy())
            .unwrap()
            .batch_execute("DROP TABLE messages_in; CREATE TABLE messages_in (id TEXT, body TEXT);")
            .unwrap();
    }
    let outbound_before = std::fs::read(&paths.outbound).unwrap();
    let mut cmd = Command::new(&examples().echo);
    cmd.arg("--workspace").arg(&paths.dir);
    let run = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("inbound.db"), "{}", run.stderr);
    assert_eq!(std::fs::read(&paths.outbound).unwrap(), outbound_before);
}

#[test]
fn a_malformed_container_json_is_an_error_and_a_missing_one_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(dir.path().join("session"));
    provision(&paths, None, &sessionbus_store::SystemClock).unwrap();
    let config = dir.path().join("container.json");
    std::fs::write(&config, r#"{ "maxMessagesPerPrompt": "ten" }"#).unwrap();
    let mut cmd = Command::new(&examples().echo);
    cmd.arg("--workspace")
        .arg(&paths.dir)
        .arg("--config")
        .arg(&config);
    let run = run_with_timeout(cmd, Duration::from_secs(30));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("maxMessagesPerPrompt"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("container.json"), "{}", run.stderr);

    // No file at all: the defaults (it starts, and stops cleanly on SIGTERM).
    let mut ctl = ChildControl::new(&examples().echo, vec![]);
    ctl.start(&paths).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat::mtime(&paths.heartbeat).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = ctl.stop(&paths, Duration::from_secs(10)).unwrap().unwrap();
    assert!(status.contains("exit status: 0"), "{status}");
}

/// The heartbeat, not wall-clock time alone, decides whether a slow container is stuck: with
/// a manual clock on the host, a container busy for minutes that keeps its heartbeat is left
/// alone, and once it hangs (SIGSTOP: no more heartbeats) the ceiling kills it through the
/// control, and its claim is retried.
#[test]
fn the_heartbeat_drives_the_stuck_decision_end_to_end_on_a_manual_clock() {
    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(dir.path().join("session"));
    provision(&paths, None, &sessionbus_store::SystemClock).unwrap();
    std::fs::create_dir_all(paths.dir.join("agent")).unwrap();
    std::fs::write(
        paths.dir.join("agent/container.json"),
        r#"{ "pollIntervalIdleMs": 30, "pollIntervalActiveMs": 30 }"#,
    )
    .unwrap();

    // A real container, very slow, touching its heartbeat every 100 ms while it works.
    let real_host = HostSession::open(&paths.dir);
    real_host
        .inbound()
        .write_message(&NewMessage::chat("m", "take your time"))
        .unwrap();
    let mut ctl = ChildControl::new(
        &examples().echo,
        ["--slow-ms", "600000", "--heartbeat-ms", "100"]
            .iter()
            .map(Into::into)
            .collect(),
    );
    ctl.start(&paths).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let claim = loop {
        if let Some(c) = real_host.pending_claims().unwrap().into_iter().next() {
            break c;
        }
        assert!(Instant::now() < deadline, "the container never claimed m");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(claim.message_id, "m");
    let claimed_at = claim.claimed_at.instant().unwrap();
    // The container is alive: a heartbeat comes after the claim.
    let deadline = Instant::now() + Duration::from_secs(20);
    while heartbeat::mtime(&paths.heartbeat)
        .unwrap()
        .is_none_or(|hb| hb <= claimed_at)
    {
        assert!(Instant::now() < deadline, "no heartbeat after the claim");
        std::thread::sleep(Duration::from_millis(20));
    }

    let clock = ManualClock::at_millis(claimed_at.unix_millis());
    let host = HostSession::with_clock(&paths.dir, clock.shared());
    // The test looks at the killed container: no new one is woken.
    let opts = SweepOptions::default().with_wake(false);

    // Two minutes into the claim, far past the 60 s tolerance: healthy, because the
    // heartbeat came after the claim.
    clock.advance_secs(120);
    assert_eq!(decide_now(&host).unwrap(), StuckDecision::Healthy);
    let r = sweep_session(&host, &mut ctl, &|_| None, opts).unwrap();
    assert!(!r.killed && r.retried.is_empty(), "{r:?}");
    assert!(ctl.is_running(&paths));

    // The container hangs: SIGSTOP, no more heartbeats.
    let pid = i32::try_from(ctl.pid(&paths).unwrap()).unwrap();
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    let last_beat: Timestamp = heartbeat::mtime(&paths.heartbeat).unwrap().unwrap();

    // 29 minutes after the last heartbeat: still under the 30-minute ceiling.
    clock.set(last_beat.plus_millis(29 * 60 * 1000));
    assert_eq!(decide_now(&host).unwrap(), StuckDecision::Healthy);
    assert!(
        !sweep_session(&host, &mut ctl, &|_| None, opts)
            .unwrap()
            .killed
    );

    // 31 minutes: over the ceiling. The sweep kills through the control and retries m.
    clock.set(last_beat.plus_millis(31 * 60 * 1000));
    let StuckDecision::Kill {
        reason: KillReason::HeartbeatCeiling { age_ms, limit_ms },
    } = decide_now(&host).unwrap()
    else {
        panic!("expected the heartbeat ceiling to kill");
    };
    assert!(age_ms > limit_ms);
    let r = sweep_session(&host, &mut ctl, &|_| None, opts).unwrap();
    assert!(r.killed, "{r:?}");
    assert_eq!(r.retried, ["m"]);
    assert_eq!(r.claims_settled, 1);
    assert_eq!(ctl.kills, 1);
    assert!(!ctl.is_running(&paths));
    let m = host.inbound().message("m").unwrap().unwrap();
    assert_eq!(m.status, MessageStatus::Pending);
    assert_eq!(m.tries, 1);
    let due = m.process_after.and_then(|t| t.instant()).unwrap();
    // A first retry is due at once (a kill is mostly not the message's fault).
    assert!(due <= clock.now(), "the first retry is immediate");
    // The claim stays in the dead container's file, settled in the host's.
    let records = host.inbound().claim_records().unwrap();
    assert!(
        records.iter().all(|r| r.settled) && !records.is_empty(),
        "{records:?}"
    );
}

/// A provisioned session folder with `container.json` holding `config`.
fn session_with_config(config: &str) -> (tempfile::TempDir, SessionPaths) {
    let dir = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(dir.path().join("session"));
    provision(&paths, None, &sessionbus_store::SystemClock).unwrap();
    std::fs::create_dir_all(paths.dir.join("agent")).unwrap();
    std::fs::write(paths.dir.join("agent/container.json"), config).unwrap();
    (dir, paths)
}

/// A container control over a child this test spawned itself (to read its stderr).
struct OwnChild(Option<std::process::Child>);

impl ContainerControl for OwnChild {
    fn is_running(&mut self, _: &SessionPaths) -> bool {
        self.0
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
    fn kill(
        &mut self,
        _: &SessionPaths,
        _: &KillReason,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            c.wait().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    fn start(&mut self, _: &SessionPaths) -> Result<(), sessionbus_runtime::control::CallerError> {
        Ok(())
    }
}

/// After a container exited on a handler failure: its claim of `id` is left, a failure note
/// says `why`, and the host's sweep counts a try for it.
fn assert_claim_left_and_retried(paths: &SessionPaths, id: &str, why: &str) {
    let host = HostSession::open(&paths.dir);
    let claims = host.pending_claims().unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].message_id, id);
    // The operator's side: the note in the container's file.
    let notes = sessionbus_store::ContainerSession::open(&paths.dir)
        .unwrap()
        .outbound()
        .failure_notes(&[id.to_string()])
        .unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].reason.contains(why), "{notes:?}");
    let mut gone = OwnChild(None);
    let opts = SweepOptions::default().with_wake(false);
    let r = sweep_session(&host, &mut gone, &|_| None, opts).unwrap();
    assert_eq!(r.retried, [id], "{r:?}");
    let m = host.inbound().message(id).unwrap().unwrap();
    assert_eq!((m.status, m.tries), (MessageStatus::Pending, 1));
}

#[test]
fn the_echo_container_exits_non_zero_after_a_panic_leaving_its_claim_and_a_note() {
    let (_dir, paths) = session_with_config(r#"{ "pollIntervalIdleMs": 20 }"#);
    HostSession::open(&paths.dir)
        .inbound()
        .write_message(&NewMessage::chat("p", "please boom now"))
        .unwrap();
    let mut cmd = Command::new(&examples().echo);
    cmd.arg("--workspace")
        .arg(&paths.dir)
        .args(["--panic-on", "boom", "--heartbeat-ms", "20"]);
    let run = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("panic at") && l.contains("--panic-on matched message p")),
        "{}",
        run.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("echo_container: handler panicked")
                && l.contains("claims left for the host")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{}", run.stderr);
    // The process is gone, so nothing touches the heartbeat any more.
    let beat = heartbeat::mtime(&paths.heartbeat).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(heartbeat::mtime(&paths.heartbeat).unwrap(), beat);
    assert_claim_left_and_retried(&paths, "p", "panicked");
}

#[test]
fn the_echo_container_exits_non_zero_after_a_handler_error_leaving_its_claim() {
    let (_dir, paths) = session_with_config(r#"{ "pollIntervalIdleMs": 20 }"#);
    HostSession::open(&paths.dir)
        .inbound()
        .write_message(&NewMessage::chat("f", "this will fail"))
        .unwrap();
    let mut cmd = Command::new(&examples().echo);
    cmd.arg("--workspace")
        .arg(&paths.dir)
        .args(["--fail-on", "fail"]);
    let run = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("echo_container: handler failed")
                && l.contains("--fail-on matched message f")),
        "{}",
        run.stderr
    );
    assert_claim_left_and_retried(&paths, "f", "returned an error");
}

/// A handler that never returns: past `handlerTimeoutMs` the real container process stops its
/// heartbeat (set back to the claim), and the host's sweep kills it by the claim rule and
/// retries the message, without waiting for the 30-minute ceiling.
#[test]
fn a_hung_echo_container_stops_its_heartbeat_at_the_deadline_and_is_killed_by_the_sweep() {
    let (_dir, paths) =
        session_with_config(r#"{ "handlerTimeoutMs": 500, "pollIntervalIdleMs": 20 }"#);
    let real_host = HostSession::open(&paths.dir);
    real_host
        .inbound()
        .write_message(&NewMessage::chat("h", "hang here"))
        .unwrap();
    let mut child = Command::new(&examples().echo)
        .arg("--workspace")
        .arg(&paths.dir)
        .args(["--hang-on", "hang", "--heartbeat-ms", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&err_text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut ctl = OwnChild(Some(child));

    let deadline = Instant::now() + Duration::from_secs(30);
    let claimed_at = loop {
        if let Some(c) = real_host.pending_claims().unwrap().into_iter().next() {
            break c.claimed_at.instant().unwrap();
        }
        assert!(Instant::now() < deadline, "the container never claimed h");
        std::thread::sleep(Duration::from_millis(10));
    };
    // The handler says when the deadline has passed (its own view of it).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !err_text.lock().unwrap().contains("deadline passed") {
        assert!(Instant::now() < deadline, "{}", err_text.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        err_text.lock().unwrap().contains("hanging on message h"),
        "{}",
        err_text.lock().unwrap()
    );
    // The heartbeat goes back to the claim (the helper's check runs every 20 ms), and stays.
    let deadline = Instant::now() + Duration::from_secs(30);
    while heartbeat::mtime(&paths.heartbeat)
        .unwrap()
        .is_none_or(|hb| hb > claimed_at)
    {
        assert!(Instant::now() < deadline, "the heartbeat never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = heartbeat::mtime(&paths.heartbeat).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(heartbeat::mtime(&paths.heartbeat).unwrap(), stopped);
    assert!(ctl.is_running(&paths), "a hung handler keeps the process");

    // The host, a minute after the claim: no heartbeat since the claim, so it kills.
    let clock = ManualClock::at_millis(claimed_at.unix_millis() + 61_000);
    let host = HostSession::with_clock(&paths.dir, clock.shared());
    let opts = SweepOptions::default().with_wake(false);
    let r = sweep_session(&host, &mut ctl, &|_| None, opts).unwrap();
    assert!(r.killed, "{r:?}");
    assert!(
        matches!(
            r.decision,
            Some(StuckDecision::Kill {
                reason: KillReason::ClaimStuck { .. }
            })
        ),
        "{r:?}"
    );
    assert_eq!(r.retried, ["h"]);
    assert!(!ctl.is_running(&paths));
    let m = host.inbound().message("h").unwrap().unwrap();
    assert_eq!((m.status, m.tries), (MessageStatus::Pending, 1));
}
