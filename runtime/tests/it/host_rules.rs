//! The host's rules around running containers: idle ones are stopped from what the host
//! itself saw (never from the heartbeat), a typing indicator can ask what a container is
//! doing, a container that fails to start is backed off, and one container frozen while it
//! holds its file's lock delays the other sessions of a pass by a small fixed amount at most.

use diesel::connection::SimpleConnection;
use diesel::Connection;
use sessionbus_runtime::control::CallerError;
use sessionbus_runtime::host::{
    activity, for_each_session, sweep_session, Activity, ContainerControl, SweepOptions, Sweeper,
};
use sessionbus_runtime::liveness::{KillReason, StuckDecision};
use sessionbus_schema::Clock;
use sessionbus_store::{AckStatus, DeliveryOutcome, HostSession, SessionPaths};
use sessionbus_testkit::{message, reply, TempSession};
use std::time::Duration;

#[derive(Default)]
struct Fake {
    running: bool,
    kills: Vec<String>,
    starts: usize,
    fail_starts: bool,
}

impl ContainerControl for Fake {
    fn is_running(&mut self, _: &SessionPaths) -> bool {
        self.running
    }
    fn kill(&mut self, _: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        self.kills.push(reason.to_string());
        self.running = false;
        Ok(())
    }
    fn start(&mut self, _: &SessionPaths) -> Result<(), CallerError> {
        self.starts += 1;
        if self.fail_starts {
            return Err("the image is missing".into());
        }
        self.running = true;
        Ok(())
    }
}

/// A session whose only message was answered and delivered: nothing pending.
fn answered_session() -> TempSession {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("m", "hi").build())
        .unwrap();
    let c = s.container();
    c.outbound()
        .commit(&["m".into()], &AckStatus::Completed, &[reply("r", "echo")])
        .unwrap();
    h.sync_acks(&|_| None).unwrap();
    h.inbound()
        .record_delivery(
            "r",
            &DeliveryOutcome::Delivered {
                platform_message_id: None,
            },
        )
        .unwrap();
    s
}

/// Issue: the heartbeat is touched while idle, so the 30-minute ceiling never reaped an idle
/// container. Idle is decided from what the host saw (messages written, claims seen,
/// deliveries), so a container that keeps touching its heartbeat is still stopped.
#[test]
fn an_idle_container_is_stopped_after_the_idle_limit_whatever_its_heartbeat() {
    let s = answered_session();
    let h = s.host();
    let mut ctl = Fake {
        running: true,
        ..Fake::default()
    };
    let opts = SweepOptions::default().with_idle_after(Some(Duration::from_secs(600)));
    s.clock.advance_secs(599);
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert_eq!(r.decision, Some(StuckDecision::Healthy), "{r:?}");
    s.clock.advance_secs(2);
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    let r = sweep_session(&h, &mut ctl, &|_| None, opts).unwrap();
    assert!(
        matches!(
            r.decision,
            Some(StuckDecision::Kill {
                reason: KillReason::Idle { .. }
            })
        ),
        "{r:?}"
    );
    assert!(r.killed && !ctl.running);
    assert!(
        r.retried.is_empty() && r.failed.is_empty(),
        "an idle stop costs no try"
    );
    // Not while something is pending (a task for later keeps its container).
    h.inbound()
        .write_message(
            &message("later", "x")
                .after(s.clock.now().plus_millis(7_200_000))
                .build(),
        )
        .unwrap();
    ctl.running = true;
    s.clock.advance_secs(3600);
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    let r = sweep_session(&h, &mut ctl, &|_| None, opts.with_wake(false)).unwrap();
    assert_eq!(r.decision, Some(StuckDecision::Healthy), "{r:?}");
}

#[test]
fn activity_says_busy_while_a_batch_is_claimed() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("m", "hi").build())
        .unwrap();
    assert_eq!(activity(&h).unwrap(), Activity::Idle);
    let c = s.container();
    c.outbound()
        .ack(&["m".into()], &AckStatus::Processing)
        .unwrap();
    assert!(matches!(activity(&h).unwrap(), Activity::Busy { .. }));
    c.outbound()
        .commit(&["m".into()], &AckStatus::Completed, &[reply("r", "ok")])
        .unwrap();
    h.sync_acks(&|_| None).unwrap();
    assert_eq!(activity(&h).unwrap(), Activity::Idle);
}

/// Issue: a container that failed to start was retried on every tick.
#[test]
fn a_container_that_fails_to_start_is_backed_off() {
    let s = TempSession::new();
    let h = s.host();
    h.inbound()
        .write_message(&message("m", "hi").build())
        .unwrap();
    let mut ctl = Fake {
        fail_starts: true,
        ..Fake::default()
    };
    let mut sweeper =
        Sweeper::new(SweepOptions::default()).with_start_backoff(Duration::from_millis(200));
    assert!(sweeper.sweep(&h, &mut ctl).is_err());
    assert_eq!(ctl.starts, 1);
    for _ in 0..5 {
        sweeper.sweep(&h, &mut ctl).unwrap();
    }
    assert_eq!(ctl.starts, 1, "no new attempt while backing off");
    assert!(sweeper.start_held_until(&s.paths.dir).is_some());
    std::thread::sleep(Duration::from_millis(250));
    ctl.fail_starts = false;
    sweeper.sweep(&h, &mut ctl).unwrap();
    assert_eq!(ctl.starts, 2, "tried again once the backoff passed");
    assert!(sweeper.start_held_until(&s.paths.dir).is_none());
}

/// Issue: a container frozen while holding outbound.db's lock cost every other session of a
/// sequential sweep the 5 s busy timeout. The host waits for it only briefly; the pass serves
/// the 20 others and reports the frozen one.
#[test]
fn a_frozen_lock_holder_does_not_hold_up_twenty_healthy_sessions() {
    let sessions: Vec<TempSession> = (0..21).map(|_| TempSession::new()).collect();
    for (i, s) in sessions.iter().enumerate() {
        s.host()
            .inbound()
            .write_message(&message(&format!("m{i}"), "hi").build())
            .unwrap();
        s.container()
            .outbound()
            .ack(&[format!("m{i}")], &AckStatus::Processing)
            .unwrap();
        sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    }
    // The frozen one: a writer inside a transaction that never ends.
    let mut frozen =
        diesel::SqliteConnection::establish(&sessions[0].paths.outbound.to_string_lossy()).unwrap();
    frozen
        .batch_execute("BEGIN EXCLUSIVE; UPDATE processing_ack SET status = 'processing';")
        .unwrap();
    let hosts: Vec<HostSession> = sessions.iter().map(TempSession::host).collect();
    let mut ctl = Fake {
        running: true,
        ..Fake::default()
    };
    let outcomes = for_each_session(&hosts, |h| {
        sweep_session(h, &mut ctl, &|_| None, SweepOptions::default())
    });
    let first = outcomes[0].result.as_ref().unwrap();
    let why = first.outbound_unreadable.as_deref().unwrap_or_default();
    assert!(why.contains("locked"), "{first:?}");
    for o in &outcomes[1..] {
        let r = o.result.as_ref().unwrap();
        assert_eq!(r.decision, Some(StuckDecision::Healthy), "{r:?}");
        assert!(r.outbound_unreadable.is_none(), "{r:?}");
    }
    frozen.batch_execute("ROLLBACK").unwrap();
}

/// A container started long after its predecessor stopped finds that predecessor's heartbeat
/// file, older than the ceiling. Until it touches the file itself, the host takes the start as
/// its last beat, so the sweep after the start does not kill it as hung; one that never beats
/// is still killed once the ceiling has passed since its start.
#[test]
fn a_fresh_container_is_not_judged_by_its_predecessors_heartbeat() {
    let s = answered_session();
    let h = s.host();
    // The previous container beat last two hours ago, then was stopped.
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    s.clock.advance_secs(2 * 60 * 60);
    h.inbound()
        .write_message(&message("late", "hello again").build())
        .unwrap();
    let mut ctl = Fake::default();
    let mut sweeper = Sweeper::new(SweepOptions::default());
    sweeper.sweep(&h, &mut ctl).unwrap();
    assert_eq!(ctl.starts, 1);
    // The next sweep, before the new container's first beat (it never touches the file here).
    s.clock.advance_secs(1);
    sweeper.sweep(&h, &mut ctl).unwrap();
    assert!(
        ctl.kills.is_empty(),
        "killed on its predecessor's heartbeat: {:?}",
        ctl.kills
    );
    assert!(ctl.running);
    // A bare sweep without the start time judges by the file, as before.
    let bare = sweep_session(
        &h,
        &mut Fake {
            running: true,
            ..Fake::default()
        },
        &|_| None,
        SweepOptions::default(),
    )
    .unwrap();
    assert!(
        matches!(bare.decision, Some(StuckDecision::Kill { .. })),
        "{bare:?}"
    );
    // Never beating at all: the ceiling counts from the start.
    s.clock.advance_secs(31 * 60);
    sweeper.sweep(&h, &mut ctl).unwrap();
    assert_eq!(ctl.kills.len(), 1, "{:?}", ctl.kills);
}
