//! A runtime that cannot hang, strand or loop: handlers that panic, fail or never return, on
//! real files. The container runs on the system clock here (the heartbeat's mtime is the
//! container's clock, and these tests watch it move and stop on the wall clock); the host's
//! views use the session's manual clock where a decision depends on time.

use sessionbus_runtime::container::{
    Container, ContainerOptions, Handled, HandlerContext, RunSummary, SESSION_CLEARED,
};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::heartbeat;
use sessionbus_runtime::host::{
    accept_chat, decide_now, sweep_session, Accepted, ContainerControl, SweepOptions,
};
use sessionbus_runtime::liveness::{KillReason, StuckDecision};
use sessionbus_schema::{SystemClock, Timestamp};
use sessionbus_store::validate::{is_valid_id, MAX_ID_BYTES};
use sessionbus_store::*;
use sessionbus_testkit::{message, ManualClock, TempSession};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const BEAT: Duration = Duration::from_millis(20);

/// Container options on the system clock, touching the heartbeat every [`BEAT`].
fn opts(s: &TempSession) -> ContainerOptions {
    ContainerOptions {
        config_optional: true,
        clock: Arc::new(SystemClock),
        heartbeat_interval: BEAT,
        ..ContainerOptions::in_folder(s.dir())
    }
}

/// Writes the session's `agent/container.json`.
fn config(s: &TempSession, json: &str) {
    let dir = s.dir().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("container.json"), json).unwrap();
}

fn echo(_: &HandlerContext, b: &Batch) -> Result<Handled, RuntimeError> {
    Ok(Handled::completed(
        b.messages
            .iter()
            .map(|m| NewOutbound::reply_to(format!("re-{}", m.id), m, "ok"))
            .collect(),
    ))
}

/// Runs `container.run` on its own thread and waits up to `limit` for it to end: a run that
/// never ends fails the test instead of hanging it.
fn run_bounded<F>(
    mut container: Container,
    handler: F,
    limit: Duration,
) -> Result<RunSummary, RuntimeError>
where
    F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stop = AtomicBool::new(false);
        let _ = tx.send(container.run(&stop, handler));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the run did not end within {limit:?}"))
}

/// The heartbeat's mtime does not move over `span` (no helper thread still touches it).
fn assert_heartbeat_still(s: &TempSession, span: Duration) -> Timestamp {
    let before = heartbeat::mtime(&s.paths.heartbeat).unwrap().unwrap();
    std::thread::sleep(span);
    let after = heartbeat::mtime(&s.paths.heartbeat).unwrap().unwrap();
    assert_eq!(before, after, "the heartbeat is still being touched");
    before
}

fn own_acks(s: &TempSession, ids: &[&str]) -> Vec<(String, AckStatus)> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let mut acks: Vec<(String, AckStatus)> = s
        .container()
        .outbound()
        .acks(&ids)
        .unwrap()
        .into_iter()
        .map(|a| (a.message_id, a.status))
        .collect();
    acks.sort_by(|a, b| a.0.cmp(&b.0));
    acks
}

fn notes(s: &TempSession, ids: &[&str]) -> Vec<FailureNote> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let mut n = s.container().outbound().failure_notes(&ids).unwrap();
    n.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    n
}

/// A container control for the host's sweep: only whether the container runs matters here.
struct Stopped;

impl ContainerControl for Stopped {
    fn is_running(&mut self, _: &SessionPaths) -> bool {
        false
    }
    fn kill(
        &mut self,
        _: &SessionPaths,
        _: &KillReason,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        Ok(())
    }
    fn start(&mut self, _: &SessionPaths) -> Result<(), sessionbus_runtime::control::CallerError> {
        Ok(())
    }
}

/// The host, finding the container gone, counts a try for each claim left behind.
fn assert_host_counts_a_try(s: &TempSession, ids: &[&str]) {
    let h = s.host();
    let r = sweep_session(&h, &mut Stopped, &|_| None, SweepOptions::default()).unwrap();
    let mut retried = r.retried.clone();
    retried.sort();
    assert_eq!(retried, ids, "{r:?}");
    for id in ids {
        let m = h.inbound().message(id).unwrap().unwrap();
        assert_eq!(m.status, MessageStatus::Pending, "{id}");
        assert_eq!(m.tries, 1, "{id}");
        assert!(m.process_after.is_some(), "{id}: retried with a backoff");
    }
}

#[test]
fn a_panicking_handler_ends_the_run_leaves_its_claims_and_notes_why() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[message("p1", "boom").build(), message("p2", "also").build()])
        .unwrap();
    let c = Container::start(opts(&s)).unwrap();
    let err = run_bounded(
        c,
        |_: &HandlerContext, _: &Batch| -> Result<Handled, RuntimeError> {
            panic!("the agent fell over")
        },
        Duration::from_secs(30),
    )
    .unwrap_err();
    match &err {
        RuntimeError::HandlerPanicked {
            message_ids,
            detail,
            session,
        } => {
            assert_eq!(message_ids, &["p1", "p2"]);
            assert_eq!(detail, "the agent fell over");
            assert_eq!(session, s.dir());
        }
        other => panic!("expected HandlerPanicked, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // No helper thread lingers: the heartbeat stays put over many intervals.
    assert_heartbeat_still(&s, BEAT * 10);
    // The claims are left for the host, with the reason beside them.
    assert_eq!(
        own_acks(&s, &["p1", "p2"]),
        [
            ("p1".into(), AckStatus::Processing),
            ("p2".into(), AckStatus::Processing)
        ]
    );
    let n = notes(&s, &["p1", "p2"]);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n.iter().all(|n| n.reason.contains("panicked")
        && n.reason.contains("the agent fell over")
        && n.at.instant().is_some()));
    assert_eq!(s.container().outbound().busy_since().unwrap(), None);
    assert!(s.host().due_outbound(10).unwrap().is_empty(), "no reply");
    assert_host_counts_a_try(&s, &["p1", "p2"]);
}

#[test]
fn a_handler_error_is_treated_like_a_panic() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("e", "x").build())
        .unwrap();
    let c = Container::start(opts(&s)).unwrap();
    let dir = s.dir().to_path_buf();
    let err = run_bounded(
        c,
        move |_: &HandlerContext, _: &Batch| {
            Err(RuntimeError::Control {
                session: dir.clone(),
                action: "start",
                source: "the model provider is down".into(),
            })
        },
        Duration::from_secs(30),
    )
    .unwrap_err();
    let RuntimeError::HandlerFailed {
        message_ids,
        source,
        ..
    } = &err
    else {
        panic!("expected HandlerFailed, got {err:?}");
    };
    assert_eq!(message_ids, &["e"]);
    assert!(source.to_string().contains("provider is down"), "{source}");
    assert!(std::error::Error::source(&err).is_some());
    assert_heartbeat_still(&s, BEAT * 10);
    assert_eq!(own_acks(&s, &["e"]), [("e".into(), AckStatus::Processing)]);
    let n = notes(&s, &["e"]);
    assert!(n[0].reason.contains("returned an error"), "{n:?}");
    assert!(n[0].reason.contains("provider is down"), "{n:?}");
    assert_host_counts_a_try(&s, &["e"]);
}

#[test]
fn a_long_failure_reason_is_bounded_in_the_note() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("long", "x").build())
        .unwrap();
    let c = Container::start(opts(&s)).unwrap();
    let err = run_bounded(
        c,
        |_: &HandlerContext, _: &Batch| -> Result<Handled, RuntimeError> {
            panic!("{}", "é".repeat(10_000))
        },
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(matches!(err, RuntimeError::HandlerPanicked { .. }), "{err}");
    let n = notes(&s, &["long"]);
    assert!(n[0].reason.len() <= sessionbus_store::MAX_FAILURE_REASON_BYTES);
    assert!(n[0].reason.ends_with('…'));
}

#[test]
fn a_failure_after_a_clear_keeps_the_clear_and_leaves_the_rest_claimed() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_messages(&[
            message("clr", "/clear").build(),
            message("bad", "boom").build(),
        ])
        .unwrap();
    let c = Container::start(opts(&s)).unwrap();
    let err = run_bounded(
        c,
        |_: &HandlerContext, _: &Batch| -> Result<Handled, RuntimeError> { panic!("boom") },
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(matches!(err, RuntimeError::HandlerPanicked { .. }), "{err}");
    assert_eq!(
        own_acks(&s, &["bad", "clr"]),
        [
            ("bad".into(), AckStatus::Processing),
            ("clr".into(), AckStatus::Completed)
        ]
    );
    assert_eq!(notes(&s, &["bad", "clr"]).len(), 1);
}

#[test]
fn a_clean_stop_still_leaves_no_claim_and_the_busy_mark_follows_the_batch() {
    let s = TempSession::new();
    s.host()
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    let mut c = Container::start(opts(&s)).unwrap();
    assert_eq!(c.session().outbound().busy_since().unwrap(), None);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut busy_during = None;
    let summary = c
        .run(&stop, |ctx, b| {
            busy_during = ctx.outbound().busy_since().unwrap();
            stop2.store(true, Ordering::SeqCst);
            echo(ctx, b)
        })
        .unwrap();
    assert_eq!(summary.completed, 1);
    let busy = busy_during.expect("busy while handling");
    // The busy mark is the claim time.
    let claim = s.container().outbound().acks(&["m".into()]).unwrap();
    assert_eq!(claim[0].status, AckStatus::Completed);
    assert!(busy.instant().is_some());
    assert_eq!(s.container().outbound().busy_since().unwrap(), None);
    assert!(s.host().pending_claims().unwrap().is_empty());
}

/// Waits until the container's claim of `id` shows, returning its time.
fn wait_for_claim(s: &TempSession, id: &str) -> Timestamp {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = s
            .container()
            .outbound()
            .acks(&[id.to_string()])
            .unwrap()
            .into_iter()
            .find(|a| a.status == AckStatus::Processing)
        {
            return a.status_changed.instant().unwrap();
        }
        assert!(Instant::now() < end, "{id} was never claimed");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_handler_that_never_returns_stops_the_heartbeat_after_its_deadline() {
    let s = TempSession::new();
    config(
        &s,
        r#"{ "handlerTimeoutMs": 1000, "pollIntervalIdleMs": 10 }"#,
    );
    s.host()
        .inbound()
        .write_message(&message("hang", "x").build())
        .unwrap();
    let c = Container::start(opts(&s)).unwrap();
    // "Never" returns: until the test lets it go, long after the deadline.
    let (release, released) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut c = c;
        let stop = AtomicBool::new(false);
        let out = c.run(&stop, move |_: &HandlerContext, _: &Batch| {
            let _ = released.recv();
            Ok(Handled::completed(Vec::new()))
        });
        let _ = tx.send(out);
    });
    let claimed_at = wait_for_claim(&s, "hang");
    assert!(s.container().outbound().busy_since().unwrap().is_some());
    // Before the deadline the heartbeat is alive: touched after the claim, every 20 ms, for
    // the deadline's 1 s (the first part of it is enough to see one).
    let end = Instant::now() + Duration::from_millis(700);
    let mut alive = false;
    while Instant::now() < end && !alive {
        alive = heartbeat::mtime(&s.paths.heartbeat)
            .unwrap()
            .is_some_and(|hb| hb > claimed_at);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(alive, "no heartbeat after the claim while the handler ran");
    // Past the deadline it is set back to the claim and stays there.
    let end = Instant::now() + Duration::from_secs(30);
    while heartbeat::mtime(&s.paths.heartbeat).unwrap().unwrap() > claimed_at {
        assert!(Instant::now() < end, "the heartbeat never stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let still = assert_heartbeat_still(&s, BEAT * 15);
    assert!(still <= claimed_at);
    assert!(
        rx.try_recv().is_err(),
        "the handler has not returned: no result yet"
    );

    // The host's claim rule fires as soon as the claim is older than its tolerance: no
    // heartbeat came after the claim.
    let host = HostSession::with_clock(
        s.dir(),
        ManualClock::at_millis(claimed_at.unix_millis() + 61_000).shared(),
    );
    match decide_now(&host).unwrap() {
        StuckDecision::Kill {
            reason: KillReason::ClaimStuck { message_id, .. },
        } => assert_eq!(message_id, "hang"),
        other => panic!("expected the claim rule to kill, got {other:?}"),
    }

    // When the handler finally returns, its result is discarded and the run ends typed.
    release.send(()).unwrap();
    let err = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the run ends once the handler returns")
        .unwrap_err();
    let RuntimeError::HandlerTimedOut {
        message_ids,
        deadline_ms,
        ..
    } = &err
    else {
        panic!("expected HandlerTimedOut, got {err:?}");
    };
    assert_eq!(message_ids, &["hang"]);
    assert_eq!(*deadline_ms, 1000);
    assert_eq!(
        own_acks(&s, &["hang"]),
        [("hang".into(), AckStatus::Processing)]
    );
    assert!(notes(&s, &["hang"])[0].reason.contains("deadline"));
    assert!(s.host().due_outbound(10).unwrap().is_empty());
}

#[test]
fn a_tool_with_a_declared_timeout_widens_the_deadline() {
    let s = TempSession::new();
    config(
        &s,
        r#"{ "handlerTimeoutMs": 200, "pollIntervalIdleMs": 10 }"#,
    );
    s.host()
        .inbound()
        .write_message(&message("tool", "x").build())
        .unwrap();
    let mut c = Container::start(opts(&s)).unwrap();
    let mut left_in_tool = Duration::ZERO;
    let handled = c
        .step(
            &mut |ctx: &HandlerContext, b: &Batch| {
                assert!(ctx.time_left() <= Duration::from_millis(200));
                ctx.with_tool("Bash", Some(30_000), || {
                    left_in_tool = ctx.time_left();
                    std::thread::sleep(Duration::from_millis(600));
                })?;
                echo(ctx, b)
            },
            &mut RunSummary::default(),
        )
        .unwrap();
    assert!(handled);
    assert!(left_in_tool > Duration::from_secs(20), "{left_in_tool:?}");
    assert_eq!(
        own_acks(&s, &["tool"]),
        [("tool".into(), AckStatus::Completed)]
    );

    // The same wait without a tool is past the deadline.
    s.host()
        .inbound()
        .write_message(&message("slow", "x").build())
        .unwrap();
    let err = c
        .step(
            &mut |ctx: &HandlerContext, b: &Batch| {
                std::thread::sleep(Duration::from_millis(600));
                echo(ctx, b)
            },
            &mut RunSummary::default(),
        )
        .unwrap_err();
    assert!(matches!(err, RuntimeError::HandlerTimedOut { .. }), "{err}");
    assert!(c.batch_in_progress());
    assert_eq!(
        own_acks(&s, &["slow"]),
        [("slow".into(), AckStatus::Processing)]
    );
}

#[test]
fn a_clear_with_a_long_id_is_answered_under_a_valid_derived_id() {
    let s = TempSession::new();
    let h = s.host();
    // The longest id the host accepts: `{id}-cleared` alone would be 264 bytes.
    let longest = "c".repeat(MAX_ID_BYTES);
    h.inbound()
        .write_message(&message(&longest, "/clear").build())
        .unwrap();
    let mut c = Container::start(opts(&s)).unwrap();
    assert!(c.step(&mut echo, &mut RunSummary::default()).unwrap());
    let replies = h.due_outbound(10).unwrap();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0].message;
    assert!(
        is_valid_id(&reply.id) && reply.id.ends_with("-cleared"),
        "{}",
        reply.id
    );
    assert_eq!(reply.in_reply_to.as_deref(), Some(longest.as_str()));
    assert!(reply.content.contains(SESSION_CLEARED));
    assert_eq!(
        own_acks(&s, &[&longest]),
        [(longest.clone(), AckStatus::Completed)]
    );

    // A 300-byte id, as an older host could have written it (straight into the file): the
    // container still answers it and completes it.
    let over = "d".repeat(300);
    {
        use diesel::prelude::*;
        let mut conn =
            diesel::SqliteConnection::establish(s.paths.inbound.to_str().unwrap()).unwrap();
        diesel::sql_query(format!(
            "INSERT INTO messages_in (id, seq, kind, timestamp, status, tries, trigger, \
               content, series_id) \
             VALUES ('{over}', 100, 'chat', '2026-04-21T12:00:00.000Z', 'pending', 0, 1, \
               '{{\"text\":\"/clear\"}}', '{over}')"
        ))
        .execute(&mut conn)
        .unwrap();
    }
    assert!(c.step(&mut echo, &mut RunSummary::default()).unwrap());
    assert_eq!(
        own_acks(&s, &[&over]),
        [(over.clone(), AckStatus::Completed)]
    );
    let cleared = s
        .container()
        .outbound()
        .message_by_seq(Seq::new(101).unwrap())
        .unwrap()
        .expect("the reply to the 300-byte /clear");
    assert!(is_valid_id(&cleared.id), "{}", cleared.id);
    assert!(cleared.id.len() <= MAX_ID_BYTES);
    assert_ne!(cleared.id, reply.id);
}

#[test]
fn the_host_denies_a_command_with_a_long_id_under_a_valid_derived_id() {
    let s = TempSession::new();
    let h = s.host();
    let longest = "q".repeat(MAX_ID_BYTES);
    let accepted = accept_chat(&h, &NewMessage::chat(&longest, "/cost"), || false).unwrap();
    assert!(matches!(accepted, Accepted::Denied { .. }), "{accepted:?}");
    let replies = h.due_outbound(10).unwrap();
    assert_eq!(replies.len(), 1);
    assert!(is_valid_id(&replies[0].message.id));
    assert!(replies[0].message.id.ends_with("-denied"));
}
