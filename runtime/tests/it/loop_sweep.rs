//! The container's poll loop and the host's sweep, on real files.

use sessionbus_runtime::container::{
    Container, ContainerOptions, Handled, RunSummary, SESSION_CLEARED,
};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::host::{
    accept_chat, decide_now, deliver_session, for_each_session, sweep_session, Accepted,
    ContainerControl, Deliverer, SweepOptions,
};
use sessionbus_runtime::liveness::{KillReason, RetryPolicy, StuckDecision};
use sessionbus_schema::Clock;
use sessionbus_store::*;
use sessionbus_testkit::{message, TempSession};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn opts(s: &TempSession) -> ContainerOptions {
    ContainerOptions {
        config_optional: true,
        clock: s.clock.shared(),
        heartbeat_interval: Duration::from_millis(30),
        ..ContainerOptions::in_folder(s.dir())
    }
}

fn echo(
    _: &sessionbus_runtime::container::HandlerContext,
    b: &Batch,
) -> Result<Handled, RuntimeError> {
    Ok(Handled::completed(
        b.messages
            .iter()
            .map(|m| {
                let text = m.content_json()["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                NewOutbound::reply_to(format!("re-{}", m.id), m, &format!("echo: {text}"))
            })
            .collect(),
    ))
}

fn texts(host: &HostSession) -> Vec<(String, String)> {
    host.due_outbound(100)
        .unwrap()
        .into_iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_str(&d.message.content).unwrap();
            (
                d.message.in_reply_to.unwrap_or_default(),
                v["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn step_answers_acks_and_clears() {
    let s = TempSession::new();
    let h = s.host();
    let mut c = Container::start(opts(&s)).unwrap();
    c.session()
        .outbound()
        .set_continuation("claude", "conv-1")
        .unwrap();
    h.inbound()
        .write_messages(&[
            message("a", "one").build(),
            message("clr", "/clear").build(),
            message("b", "two").build(),
        ])
        .unwrap();
    let mut summary = RunSummary::default();
    let mut seen = Vec::new();
    let mut handler = |ctx: &sessionbus_runtime::container::HandlerContext, b: &Batch| {
        seen.push((b.ids(), ctx.continuation().unwrap()));
        echo(ctx, b)
    };
    assert!(c.step(&mut handler, &mut summary).unwrap());
    assert!(!c.step(&mut handler, &mut summary).unwrap(), "nothing left");
    // "a" was handled in the old conversation, "b" after the clear in a new one.
    assert_eq!(
        seen,
        vec![
            (vec!["a".to_string()], Some("conv-1".to_string())),
            (vec!["b".to_string()], None)
        ]
    );
    assert_eq!(summary.clears, 1);
    assert_eq!(summary.completed, 3);
    assert_eq!(
        texts(&h),
        vec![
            ("a".into(), "echo: one".into()),
            ("clr".into(), SESSION_CLEARED.into()),
            ("b".into(), "echo: two".into())
        ]
    );
    let acks = c
        .session()
        .outbound()
        .acks(&["a".into(), "clr".into(), "b".into()])
        .unwrap();
    assert!(acks.iter().all(|a| a.status == AckStatus::Completed));
}

#[test]
fn context_only_batches_do_not_wake_the_handler() {
    let s = TempSession::new();
    let mut c = Container::start(opts(&s)).unwrap();
    s.host()
        .inbound()
        .write_message(&message("ctx", "fyi").context().build())
        .unwrap();
    let mut called = false;
    let mut h = |ctx: &sessionbus_runtime::container::HandlerContext, b: &Batch| {
        called = true;
        echo(ctx, b)
    };
    assert!(!c.step(&mut h, &mut RunSummary::default()).unwrap());
    assert!(!called);
    s.host()
        .inbound()
        .write_message(&message("go", "now").build())
        .unwrap();
    let mut ids = Vec::new();
    let mut h = |ctx: &sessionbus_runtime::container::HandlerContext, b: &Batch| {
        ids = b.ids();
        echo(ctx, b)
    };
    assert!(c.step(&mut h, &mut RunSummary::default()).unwrap());
    assert_eq!(
        ids,
        vec!["ctx", "go"],
        "context rides along with the next trigger"
    );
}

#[test]
fn a_failed_handler_outcome_fails_the_messages_on_the_host() {
    let s = TempSession::new();
    let mut c = Container::start(opts(&s)).unwrap();
    s.host()
        .inbound()
        .write_message(&message("x", "boom").build())
        .unwrap();
    let mut h =
        |_: &sessionbus_runtime::container::HandlerContext, _: &Batch| Ok(Handled::failed());
    c.step(&mut h, &mut RunSummary::default()).unwrap();
    s.host().sync_acks(&|_| None).unwrap();
    assert_eq!(
        s.host().inbound().message("x").unwrap().unwrap().status,
        MessageStatus::Failed
    );
}

/// Field item 9: the heartbeat stays fresh while a slow handler runs, not only between
/// batches, so a slow first answer after a long idle is not killed.
#[test]
fn heartbeat_is_touched_while_the_handler_runs() {
    let s = TempSession::new();
    let mut c = Container::start(opts(&s)).unwrap();
    s.host()
        .inbound()
        .write_message(&message("slow", "x").build())
        .unwrap();
    let hb = s.paths.heartbeat.clone();
    let before = std::fs::metadata(&hb).unwrap().modified().unwrap();
    let mut touched_during = false;
    let mut h = |ctx: &sessionbus_runtime::container::HandlerContext, b: &Batch| {
        // Wait (bounded) until the heartbeat moves while we are still inside the handler. The
        // container touches it at its clock's now, so the (manual) clock moves along.
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(10));
            s.clock.advance_ms(10);
            if std::fs::metadata(&hb).unwrap().modified().unwrap() > before {
                touched_during = true;
                break;
            }
        }
        echo(ctx, b)
    };
    c.step(&mut h, &mut RunSummary::default()).unwrap();
    assert!(
        touched_during,
        "heartbeat was not touched while the handler ran"
    );
}

#[test]
fn run_stops_on_request_and_leaves_no_processing_ack() {
    let s = TempSession::new();
    let mut c = Container::start(opts(&s)).unwrap();
    s.host()
        .inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let summary = c
        .run(&stop, move |ctx, b| {
            stop2.store(true, Ordering::SeqCst); // asked to stop while handling
            echo(ctx, b)
        })
        .unwrap();
    assert_eq!(summary.completed, 1);
    assert!(s.host().pending_claims().unwrap().is_empty());
    assert_eq!(texts(&s.host()).len(), 1);
}

#[test]
fn start_fails_clearly_on_malformed_container_json() {
    let s = TempSession::new();
    let o = opts(&s);
    std::fs::create_dir_all(o.config_path.parent().unwrap()).unwrap();
    std::fs::write(&o.config_path, r#"{"maxMessagesPerPrompt": "ten"}"#).unwrap();
    let err = Container::start(o).err().expect("must fail");
    let text = err.to_string();
    assert!(
        text.contains("container.json") && text.contains("maxMessagesPerPrompt"),
        "{text}"
    );
}

#[test]
fn start_serves_an_unmigrated_inbound_db_and_fails_clearly_on_one_it_cannot_serve() {
    let s = TempSession::new();
    std::fs::remove_file(&s.paths.inbound).unwrap();
    sessionbus_testkit::legacy::create(
        &s.paths.inbound,
        sessionbus_schema::FileKind::Inbound,
        3,
        sessionbus_testkit::legacy::Style::Patched,
        2,
    )
    .unwrap();
    // An older host's G3 file, never migrated: served as it is.
    Container::start(opts(&s)).unwrap();
    // One without the columns every generation has: a clear error naming the file.
    std::fs::remove_file(&s.paths.inbound).unwrap();
    {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        diesel::SqliteConnection::establish(&s.paths.inbound.to_string_lossy())
            .unwrap()
            .batch_execute("CREATE TABLE messages_in (id TEXT PRIMARY KEY);")
            .unwrap();
    }
    let err = Container::start(opts(&s)).err().expect("must fail");
    let text = err.to_string();
    assert!(text.contains("inbound.db"), "{text}");
}

#[test]
fn start_adopts_the_legacy_continuation() {
    let s = TempSession::new();
    s.container()
        .outbound()
        .state_set(LEGACY_CONTINUATION_KEY, "old")
        .unwrap();
    let c = Container::start(opts(&s)).unwrap();
    assert_eq!(
        c.session()
            .outbound()
            .continuation("claude")
            .unwrap()
            .as_deref(),
        Some("old")
    );
}

/// A fake container control that records what the sweep asked for.
#[derive(Default)]
struct Fake {
    running: bool,
    kills: Vec<String>,
    starts: usize,
}

impl ContainerControl for Fake {
    fn is_running(&mut self, _: &SessionPaths) -> bool {
        self.running
    }
    fn kill(
        &mut self,
        _: &SessionPaths,
        reason: &KillReason,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        self.kills.push(reason.to_string());
        self.running = false;
        Ok(())
    }
    fn start(&mut self, _: &SessionPaths) -> Result<(), sessionbus_runtime::control::CallerError> {
        self.starts += 1;
        self.running = true;
        Ok(())
    }
}

#[test]
fn sweep_kills_a_stuck_container_and_settles_its_claim_in_the_host_file() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    let c = s.container();
    c.outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    // Heartbeat before the claim, then silence for longer than the 60 s tolerance.
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now().plus_millis(-1000))
        .unwrap();
    let mut ctl = Fake {
        running: true,
        ..Fake::default()
    };
    // A backoff from the first retry on, to see it (the default's first retry is immediate).
    let opts = SweepOptions::default().with_retry(RetryPolicy {
        immediate_first_retry: false,
        ..RetryPolicy::default()
    });
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert_eq!(r.decision, Some(StuckDecision::Healthy));
    assert!(!r.killed);
    s.clock.advance_secs(61);
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert!(r.killed, "{r:?}");
    assert!(ctl.kills[0].contains("message m"), "{:?}", ctl.kills);
    assert_eq!(r.retried, vec!["m"]);
    assert_eq!(r.claims_settled, 1);
    let m = h.inbound().message("m").unwrap().unwrap();
    assert_eq!(m.tries, 1);
    assert_eq!(
        m.process_after.unwrap().instant(),
        Some(s.clock.now().plus_millis(5000))
    );
    // The claim stays in the container's file (the host never writes it), settled in the
    // host's: it is not counted again, and it does not get the next container killed.
    assert_eq!(h.pending_claims().unwrap().len(), 1);
    let records = h.inbound().claim_records().unwrap();
    assert!(records.len() == 1 && records[0].settled, "{records:?}");
    // Not bumped again while its retry is in the future.
    c.outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert!(r.retried.is_empty());
    assert_eq!(h.inbound().message("m").unwrap().unwrap().tries, 1);
    // A new container runs with the old claim still in the file: not killed for it.
    ctl.running = true;
    s.clock.advance_secs(600);
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert_eq!(r.decision, Some(StuckDecision::Healthy), "{r:?}");
    assert_eq!(r.claims_settled, 0);
}

/// Issue: after a kill the retried message waited out its backoff while later messages were
/// answered, so the user saw replies out of order. The first retry is immediate: the killed
/// container's message is due again at once, before the messages written after it.
#[test]
fn the_first_retry_after_a_kill_is_due_at_once_so_replies_stay_in_order() {
    let s = TempSession::new();
    let h = s.host();
    for id in ["first", "second"] {
        h.inbound()
            .write_message(&message(id, "x").build())
            .unwrap();
    }
    let c = s.container();
    c.outbound()
        .ack(&["first".into()], &AckStatus::Processing)
        .unwrap();
    let mut ctl = Fake::default(); // the container died holding `first`
    let r = sweep_session(&h, &mut ctl, &|_| None, SweepOptions::default()).unwrap();
    assert_eq!(r.retried, ["first"]);
    assert!(r.woke, "due at once: a container is woken for it");
    let m = h.inbound().message("first").unwrap().unwrap();
    assert_eq!(m.tries, 1);
    assert!(m.process_after.unwrap().instant() <= Some(s.clock.now()));
    // The next container starts (clearing its predecessor's claim) and takes both, in order:
    // the retry first and alone (a message that failed once does not share a batch again),
    // then the other.
    c.start().unwrap();
    let batch = c.poll_after_start(10).unwrap();
    assert_eq!(batch.ids(), ["first"]);
    c.outbound()
        .ack(&batch.ids(), &AckStatus::Completed)
        .unwrap();
    assert_eq!(c.poll(10).unwrap().ids(), ["second"]);
}

#[test]
fn sweep_fails_a_message_after_max_tries_and_wakes_for_due_work() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_messages(&[message("m", "x").build(), message("n", "y").build()])
        .unwrap();
    h.inbound()
        .apply_retries(&[RetryUpdate::Retry {
            id: "m".into(),
            tries: 5,
            process_after: s.clock.now(),
        }])
        .unwrap();
    s.container()
        .outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    let mut ctl = Fake::default();
    let opts = SweepOptions::default().with_wake(true);
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert_eq!(r.failed, vec!["m"]);
    assert_eq!(
        h.inbound().message("m").unwrap().unwrap().status,
        MessageStatus::Failed
    );
    assert!(
        r.woke && ctl.starts == 1,
        "n is due: a container is started"
    );
}

#[test]
fn decide_now_widens_tolerance_for_a_declared_bash_timeout() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    let c = s.container();
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now().plus_millis(-1))
        .unwrap();
    c.outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    c.outbound()
        .set_tool_in_flight("Bash", Some(600_000))
        .unwrap();
    s.clock.advance_secs(120);
    assert_eq!(decide_now(&h).unwrap(), StuckDecision::Healthy);
    s.clock.advance_secs(600);
    assert!(matches!(
        decide_now(&h).unwrap(),
        StuckDecision::Kill { .. }
    ));
}

struct Collect(Vec<(i64, String)>, usize);

impl Deliverer for Collect {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        if self.1 > 0 {
            self.1 -= 1;
            return Err("platform down".into());
        }
        self.0.push((attempt, row.message.id.clone()));
        Ok(Some(format!("P-{}", row.message.id)))
    }
}

#[test]
fn delivery_retries_then_gives_up_after_max_attempts() {
    let s = TempSession::new();
    let h = s.host();
    s.container()
        .outbound()
        .write(&NewOutbound::chat("r1", "x"))
        .unwrap();
    let mut d = Collect(Vec::new(), 1);
    let r = deliver_session(&h, &mut d, 3).unwrap();
    assert_eq!(r.deferred, vec!["r1"]);
    let r = deliver_session(&h, &mut d, 3).unwrap();
    assert_eq!(r.delivered.len(), 1);
    assert_eq!(d.0, vec![(2, "r1".to_string())]);
    s.container()
        .outbound()
        .write(&NewOutbound::chat("r2", "x"))
        .unwrap();
    let mut down = Collect(Vec::new(), usize::MAX);
    for _ in 0..2 {
        assert_eq!(
            deliver_session(&h, &mut down, 3).unwrap().deferred,
            vec!["r2"]
        );
    }
    assert_eq!(
        deliver_session(&h, &mut down, 3).unwrap().failed,
        vec!["r2"]
    );
    assert!(h.due_outbound(10).unwrap().is_empty());
}

#[test]
fn command_gate_denies_into_a_host_reply_and_filters_silently() {
    let s = TempSession::new();
    let h = s.host();
    let denied = accept_chat(&h, &message("c1", "/cost").build(), || false).unwrap();
    assert!(matches!(denied, Accepted::Denied { ref command, .. } if command == "/cost"));
    assert!(matches!(
        accept_chat(&h, &message("c2", "/help").build(), || true).unwrap(),
        Accepted::Filtered { .. }
    ));
    assert!(matches!(
        accept_chat(&h, &message("c3", "/cost").build(), || true).unwrap(),
        Accepted::Written(_)
    ));
    assert!(matches!(
        accept_chat(&h, &message("c4", "hello").build(), || unreachable!()).unwrap(),
        Accepted::Written(_)
    ));
    assert!(
        h.inbound().message("c1").unwrap().is_none(),
        "nothing reaches messages_in"
    );
    assert!(h.inbound().message("c2").unwrap().is_none());
    let due = h.due_outbound(10).unwrap();
    assert_eq!(due.len(), 1);
    let d = &due[0];
    assert_eq!(d.source, OutboundSource::Host);
    assert_eq!(d.message.in_reply_to.as_deref(), Some("c1"));
    assert_eq!(
        d.message.address,
        sessionbus_testkit::chat_address(),
        "same chat and thread"
    );
    assert!(d
        .message
        .content
        .contains("Permission denied: /cost requires admin access."));
}

/// Field item 5: one bad session must not stall the rest.
#[test]
fn one_broken_session_does_not_stall_ten_healthy_ones() {
    let sessions: Vec<TempSession> = (0..11).map(|_| TempSession::new()).collect();
    for (i, s) in sessions.iter().enumerate() {
        s.host()
            .inbound()
            .write_message(&message(&format!("m{i}"), "x").build())
            .unwrap();
        s.container()
            .outbound()
            .write(&NewOutbound::chat(format!("r{i}"), "y"))
            .unwrap();
    }
    // Session 3: outbound.db replaced by garbage.
    std::fs::write(
        &sessions[3].paths.outbound,
        b"this is not a database at all, not even close....",
    )
    .unwrap();
    // Session 7: folder gone.
    std::fs::remove_dir_all(sessions[7].dir()).unwrap();
    let hosts: Vec<HostSession> = sessions.iter().map(|s| s.host()).collect();
    let mut delivered = 0;
    let outcomes = for_each_session(&hosts, |h| {
        let mut ctl = Fake::default();
        sweep_session(h, &mut ctl, &|_| None, SweepOptions::default())?;
        let mut d = Collect(Vec::new(), 0);
        let r = deliver_session(h, &mut d, 3)?;
        delivered += r.delivered.len();
        Ok(r.delivered.len())
    });
    let failed: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.result.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![3, 7]);
    assert_eq!(delivered, 9);
    let e3 = outcomes[3].result.as_ref().unwrap_err().to_string();
    assert!(
        e3.contains("outbound.db") && e3.contains("not an SQLite database"),
        "{e3}"
    );
}

/// Field item 1: a container killed inside a transaction leaves outbound.db-journal. The host
/// never rolls it back (a rollback runs what the journal says, and the journal is the
/// container's); it reports the file unreadable and wakes the next container, which rolls it
/// back as its file's writer.
#[test]
fn a_hot_outbound_journal_is_left_to_the_next_container() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    s.container()
        .outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    leave_hot_journal(&s.paths.outbound);
    let err = h.pending_claims().unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let mut ctl = Fake::default();
    let r = sweep_session(&h, &mut ctl, &|_| None, SweepOptions::default()).unwrap();
    assert!(r.outbound_unreadable.is_some(), "{r:?}");
    assert!(
        r.woke,
        "a due message wakes the container that will repair the file"
    );
    assert!(
        sessionbus_schema::error::hot_journal(&s.paths.outbound).is_some(),
        "the host left the journal alone"
    );
    s.container().start().unwrap();
    assert!(sessionbus_schema::error::hot_journal(&s.paths.outbound).is_none());
    assert!(h.pending_claims().unwrap().is_empty());
}

/// Leaves a real hot journal: a child process writes inside a transaction with a tiny page
/// cache (so pages spill to the file) and aborts before COMMIT.
fn leave_hot_journal(db: &std::path::Path) {
    let out = sessionbus_testkit::child::command()
        .arg("write-and-abort")
        .arg(db)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must die mid-transaction");
    assert!(
        sessionbus_schema::error::hot_journal(db).is_some(),
        "no journal left behind"
    );
}

/// A container that claims right after touching its heartbeat (same second) and then dies is
/// killed by the 60 s claim rule, not only by the 30 min ceiling: claim times keep their
/// milliseconds, so a heartbeat from just before the claim does not count as after it.
#[test]
fn a_claim_in_the_same_second_as_the_last_heartbeat_is_still_detected() {
    let s = TempSession::new();
    let h = s.host();
    s.clock.advance_ms(100);
    h.inbound()
        .write_message(&message("m", "x").build())
        .unwrap();
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    s.clock.advance_ms(400); // same second, later
    s.container()
        .outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    s.clock.advance_secs(61);
    match decide_now(&h).unwrap() {
        StuckDecision::Kill {
            reason: KillReason::ClaimStuck { message_id, .. },
        } => assert_eq!(message_id, "m"),
        other => panic!("expected the claim rule to fire, got {other:?}"),
    }
}

#[test]
fn a_panicking_session_step_is_reported_and_the_pass_goes_on() {
    let a = TempSession::new();
    let b = TempSession::new();
    let hosts = vec![a.host(), b.host()];
    let mut served = 0;
    let out = for_each_session(&hosts, |h| {
        if h.paths().dir == a.paths.dir {
            panic!("boom in one session");
        }
        served += 1;
        Ok(())
    });
    assert_eq!(served, 1);
    let e = out[0].result.as_ref().unwrap_err();
    assert!(
        matches!(e, RuntimeError::Panicked { .. }) && e.to_string().contains("boom"),
        "{e}"
    );
    assert!(out[1].result.is_ok());
}

mod sweeper {
    use super::*;
    use sessionbus_runtime::host::{SweepOutcome, Sweeper};

    fn full(o: &SweepOutcome) -> bool {
        matches!(o, SweepOutcome::Full(_))
    }

    #[test]
    fn a_quiet_session_is_skipped_until_either_file_changes() {
        let s = TempSession::new();
        let h = s.host();
        let mut sw = Sweeper::new(SweepOptions::default());
        let mut ctl = Fake {
            running: true,
            ..Fake::default()
        };
        sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
        assert!(full(&sw.sweep(&h, &mut ctl).unwrap()));
        assert_eq!(sw.sweep(&h, &mut ctl).unwrap(), SweepOutcome::Quiet);
        // A message written by another host process changes inbound.db's change counter.
        HostSession::open(s.dir())
            .inbound()
            .write_message(&message("m", "x").build())
            .unwrap();
        assert!(full(&sw.sweep(&h, &mut ctl).unwrap()));
        // Pending work: never quiet.
        assert!(full(&sw.sweep(&h, &mut ctl).unwrap()));
        // The container answers: the next full sweep syncs the ack, then the session is quiet.
        s.container()
            .outbound()
            .ack(&["m".into()], &AckStatus::Completed)
            .unwrap();
        let SweepOutcome::Full(r) = sw.sweep(&h, &mut ctl).unwrap() else {
            panic!("outbound.db changed: expected a full sweep");
        };
        assert_eq!(r.acks.completed, vec!["m"]);
        assert!(
            full(&sw.sweep(&h, &mut ctl).unwrap()),
            "our own sync wrote inbound.db"
        );
        assert_eq!(sw.sweep(&h, &mut ctl).unwrap(), SweepOutcome::Quiet);
        // The container stopping is a change too.
        ctl.running = false;
        assert!(full(&sw.sweep(&h, &mut ctl).unwrap()));
    }

    #[test]
    fn the_sweepers_recurrence_hook_continues_a_finished_series_once() {
        let s = TempSession::new();
        let h = s.host();
        let due = s.clock.now().plus_millis(3_600_000);
        let mut sw = Sweeper::new(SweepOptions::default()).with_next_occurrence(move |done| {
            Some(sessionbus_store::NextOccurrence {
                id: format!("{}-next", done.id),
                process_after: due,
            })
        });
        let mut ctl = Fake {
            running: true,
            ..Fake::default()
        };
        sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
        h.inbound()
            .write_message(&message("daily", "report").recurring("0 9 * * *").build())
            .unwrap();
        s.container()
            .outbound()
            .ack(&["daily".into()], &AckStatus::Completed)
            .unwrap();
        let SweepOutcome::Full(r) = sw.sweep(&h, &mut ctl).unwrap() else {
            panic!("a new session: expected a full sweep");
        };
        assert_eq!(r.acks.completed, vec!["daily"]);
        assert_eq!(r.acks.recurrences.len(), 1, "{r:?}");
        let next = h
            .inbound()
            .message("daily-next")
            .unwrap()
            .expect("the next occurrence");
        assert_eq!(next.process_after.and_then(|t| t.instant()), Some(due));
        // Continued once: later sweeps add nothing.
        sw.sweep(&h, &mut ctl).unwrap();
        sw.sweep(&h, &mut ctl).unwrap();
        assert!(h.inbound().message("daily-next-next").unwrap().is_none());

        // Without a hook nothing is continued.
        let t = TempSession::new();
        let h2 = t.host();
        let mut plain = Sweeper::new(SweepOptions::default());
        sessionbus_runtime::heartbeat::touch_at(&t.paths.heartbeat, t.clock.now()).unwrap();
        h2.inbound()
            .write_message(&message("weekly", "report").recurring("0 9 * * 1").build())
            .unwrap();
        t.container()
            .outbound()
            .ack(&["weekly".into()], &AckStatus::Completed)
            .unwrap();
        let SweepOutcome::Full(r) = plain.sweep(&h2, &mut ctl).unwrap() else {
            panic!("a new session: expected a full sweep");
        };
        assert_eq!(r.acks.completed, vec!["weekly"]);
        assert!(r.acks.recurrences.is_empty());
    }

    #[test]
    fn a_quiet_but_hung_container_is_still_killed_by_the_heartbeat_ceiling() {
        let s = TempSession::new();
        let h = s.host();
        let mut sw = Sweeper::new(SweepOptions::default());
        let mut ctl = Fake {
            running: true,
            ..Fake::default()
        };
        sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
        assert!(full(&sw.sweep(&h, &mut ctl).unwrap()));
        assert_eq!(sw.sweep(&h, &mut ctl).unwrap(), SweepOutcome::Quiet);
        s.clock.advance_secs(31 * 60);
        let SweepOutcome::Full(r) = sw.sweep(&h, &mut ctl).unwrap() else {
            panic!("the ceiling passed: expected a full sweep");
        };
        assert!(r.killed, "{r:?}");
        assert_eq!(ctl.kills.len(), 1);
    }
}
