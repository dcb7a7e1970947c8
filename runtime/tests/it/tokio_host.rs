//! The async host (feature `tokio`): many sessions served concurrently on a bounded pool, one
//! stuck session holding up only itself, sessions added and removed at run time, panics
//! isolated, the graceful shutdown, and the container's poll loop from async code.
//!
//! No test asserts how fast anything is: each waits, with generous timeouts, for what must
//! happen, and checks what must not.

use diesel::connection::SimpleConnection;
use diesel::Connection;
use sessionbus_runtime::container::{ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::control::CallerError;
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::host::{Accepted, Deliverer, SweepOutcome};
use sessionbus_runtime::liveness::KillReason;
use sessionbus_runtime::tokio_host::{
    run_container_async, AsyncDeliverer, AsyncHandler, AsyncHost, ContainerPolicy, HostEvent,
    HostHandle, HostOptions, StopToken, SyncControl, SyncDeliverer,
};
use sessionbus_runtime::{AckStatus, Batch, Clock, DueOutbound, NewMessage, NewOutbound};
use sessionbus_runtime::{HostSession, SessionPaths};
use sessionbus_testkit::{
    message, reply, CapturingDeliverer, FakeControl, ManualClock, TempSession,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, Notify};

/// How long a test waits for something that must happen (the machine may be very busy).
const LONG: Duration = Duration::from_secs(120);

/// Options for tests: a quick tick, nothing cut short unless a test says so.
fn opts() -> HostOptions {
    HostOptions::default()
        .with_tick(Duration::from_millis(50))
        .with_delivery_timeout(Duration::from_secs(3600))
        .with_shutdown_grace(Duration::from_secs(3600))
}

/// A session on `clock` whose message `m` has a completed reply `r-<tag>` due for delivery.
fn session_with_reply(clock: &ManualClock, tag: &str) -> TempSession {
    let s = TempSession::with_clock(clock);
    add_reply(&s, tag);
    s
}

/// Writes message `m-<tag>` and the container's completed reply `r-<tag>` (text `<tag>`).
fn add_reply(s: &TempSession, tag: &str) {
    let id = format!("m-{tag}");
    s.host()
        .inbound()
        .write_message(&message(&id, "hi").build())
        .unwrap();
    s.container()
        .outbound()
        .commit(
            std::slice::from_ref(&id),
            &AckStatus::Completed,
            &[reply(&format!("r-{tag}"), tag)],
        )
        .unwrap();
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(LONG, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// Waits for an event matching `f` and returns it.
async fn wait_event(
    rx: &mut broadcast::Receiver<HostEvent>,
    what: &str,
    mut f: impl FnMut(&HostEvent) -> bool,
) -> HostEvent {
    let found = tokio::time::timeout(LONG, async {
        loop {
            match rx.recv().await {
                Ok(e) if f(&e) => return e,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the host's events ended before {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn is_session(
    e: &HostEvent,
    dir: &Path,
    f: impl Fn(&sessionbus_runtime::tokio_host::SessionPass) -> bool,
) -> bool {
    matches!(e, HostEvent::Session(p) if p.session == dir && f(p))
}

/// A platform for tests: rows of the sessions in `hold` wait for `release` (counted in
/// `entered`), rows of the sessions in `panic_for` panic, the rest go to `capture`. It also
/// records the most hand-offs it saw at once.
#[derive(Default)]
struct Platform {
    capture: CapturingDeliverer,
    hold: Mutex<Vec<PathBuf>>,
    release: Notify,
    released: AtomicBool,
    entered: AtomicUsize,
    panic_for: Mutex<Vec<PathBuf>>,
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Platform {
    fn holding(dirs: &[&Path]) -> Arc<Self> {
        let p = Platform::default();
        *p.hold.lock().unwrap() = dirs.iter().map(|d| d.to_path_buf()).collect();
        Arc::new(p)
    }

    fn let_go(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }
}

struct Counted<'a>(&'a AtomicUsize);
impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncDeliverer for Platform {
    async fn deliver(
        &self,
        session: &SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> Result<Option<String>, CallerError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        let _counted = Counted(&self.now);
        self.most.fetch_max(n, Ordering::SeqCst);
        if self.panic_for.lock().unwrap().contains(&session.dir) {
            panic!("the platform blew up on {}", row.message.id);
        }
        if self.hold.lock().unwrap().contains(&session.dir) {
            self.entered.fetch_add(1, Ordering::SeqCst);
            loop {
                let released = self.release.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if self.released.load(Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
        }
        self.capture.clone().deliver(session, row, attempt)
    }
}

fn start_host(
    control: &FakeControl,
    platform: &Arc<Platform>,
    opts: HostOptions,
    sessions: &[&TempSession],
) -> (
    HostHandle,
    broadcast::Receiver<HostEvent>,
    tokio::task::JoinHandle<sessionbus_runtime::tokio_host::HostSummary>,
) {
    let host = AsyncHost::new(
        SyncControl::new(control.clone()),
        Arc::clone(platform),
        opts,
    );
    let handle = host.handle();
    let events = handle.subscribe();
    for s in sessions {
        assert!(handle.add_session(s.host()));
    }
    (handle, events, tokio::spawn(host.run()))
}

/// Issue: one bridge thread served every session in turn, so one stuck session stalled all.
/// Twenty sessions, four served at once: one whose platform hand-off never returns, one whose
/// inbound.db is locked by another writer. The other eighteen are all delivered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sessions_one_stuck_deliverer_one_locked_file_the_others_delivered() {
    let clock = ManualClock::new();
    let sessions: Vec<TempSession> = (0..20)
        .map(|i| session_with_reply(&clock, &i.to_string()))
        .collect();
    let stuck = sessions[0].dir();
    let locked = sessions[1].dir();
    let mut holder =
        diesel::SqliteConnection::establish(&sessions[1].paths.inbound.to_string_lossy()).unwrap();
    holder.batch_execute("BEGIN EXCLUSIVE;").unwrap();

    let control = FakeControl::new();
    let platform = Platform::holding(&[stuck]);
    let all: Vec<&TempSession> = sessions.iter().collect();
    let (handle, mut events, run) = start_host(
        &control,
        &platform,
        opts()
            .with_concurrency(4)
            .with_stalled_after(Duration::from_millis(200)),
        &all,
    );

    let capture = platform.capture.clone();
    wait_until("the 18 free sessions delivered", || capture.count() >= 18).await;
    let ids = capture.ids();
    assert!(
        !ids.contains(&"r-0".to_string()) && !ids.contains(&"r-1".to_string()),
        "{ids:?}"
    );
    assert_eq!(ids.len(), 18, "each row once: {ids:?}");
    assert_eq!(
        platform.entered.load(Ordering::SeqCst),
        1,
        "the stuck hand-off is entered once"
    );
    wait_event(
        &mut events,
        "the stuck session reported stalled",
        |e| matches!(e, HostEvent::Stalled { session, .. } if session == stuck),
    )
    .await;
    let e = wait_event(&mut events, "the locked session's pass", |e| {
        is_session(e, locked, |p| !p.is_ok())
    })
    .await;
    let HostEvent::Session(p) = e else {
        unreachable!()
    };
    let why = p
        .errors()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(why.contains("locked"), "{why}");

    // Both let go: both delivered.
    holder.batch_execute("ROLLBACK;").unwrap();
    platform.let_go();
    wait_until("all 20 delivered", || capture.count() >= 20).await;
    handle.shutdown();
    let summary = tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    assert!(summary.abandoned.is_empty(), "{summary:?}");
    let mut ids = capture.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "no row twice");
    let most = platform.most.load(Ordering::SeqCst);
    assert!((1..=4).contains(&most), "hand-offs at once: {most}");
    for s in &sessions {
        assert!(s.host().due_outbound(10).unwrap().is_empty());
    }
}

/// Shutdown: no pass starts after it, a hand-off in flight is finished and recorded, and with
/// `ContainerPolicy::Stop` every running container is stopped through the control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_deliveries_then_stops_containers() {
    let clock = ManualClock::new();
    let sessions: Vec<TempSession> = (0..3)
        .map(|i| session_with_reply(&clock, &i.to_string()))
        .collect();
    let control = FakeControl::new();
    for s in &sessions {
        control.set_running(s.dir(), true);
        sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, clock.now()).unwrap();
    }
    let slow = sessions[0].dir();
    let platform = Platform::holding(&[slow]);
    let all: Vec<&TempSession> = sessions.iter().collect();
    let (handle, mut events, run) = start_host(
        &control,
        &platform,
        opts().with_on_shutdown(ContainerPolicy::Stop),
        &all,
    );
    let capture = platform.capture.clone();
    wait_until(
        "the two others delivered and the slow hand-off entered",
        || capture.count() == 2 && platform.entered.load(Ordering::SeqCst) == 1,
    )
    .await;

    handle.shutdown();
    wait_event(&mut events, "Stopping", |e| {
        matches!(e, HostEvent::Stopping)
    })
    .await;
    assert!(
        !handle.add_session(TempSession::with_clock(&clock).host()),
        "closed to new sessions"
    );
    // The slow hand-off holds the shutdown: it cannot have ended yet.
    tokio::task::yield_now().await;
    assert!(!run.is_finished());
    assert!(
        control.kills().is_empty(),
        "containers are stopped after the passes end"
    );

    platform.let_go();
    let summary = tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    let mut after = Vec::new();
    while let Ok(e) = events.try_recv() {
        after.push(e);
    }
    assert!(
        !after
            .iter()
            .any(|e| matches!(e, HostEvent::PassStarted { .. })),
        "no pass after Stopping: {after:?}"
    );
    assert!(
        matches!(after.last(), Some(HostEvent::Stopped(_))),
        "{after:?}"
    );
    assert!(summary.abandoned.is_empty(), "{summary:?}");
    assert_eq!(capture.count(), 3);
    assert!(
        sessions[0].host().due_outbound(10).unwrap().is_empty(),
        "recorded delivered"
    );
    let mut stopped = summary.containers_stopped.clone();
    stopped.sort();
    let mut dirs: Vec<PathBuf> = sessions.iter().map(|s| s.dir().to_path_buf()).collect();
    dirs.sort();
    assert_eq!(stopped, dirs);
    for s in &sessions {
        assert_eq!(control.kills_of(s.dir()), [KillReason::HostShutdown]);
    }
}

/// A hand-off that never returns is abandoned when the grace runs out; its attempt was
/// counted first, so the next host delivers the row again (at-least-once), as attempt 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_hand_off_is_abandoned_after_the_grace_and_delivered_by_the_next_host() {
    let clock = ManualClock::new();
    let s = session_with_reply(&clock, "x");
    let control = FakeControl::new();
    let platform = Platform::holding(&[s.dir()]);
    let (handle, _events, run) = start_host(
        &control,
        &platform,
        opts().with_shutdown_grace(Duration::from_millis(100)),
        &[&s],
    );
    wait_until("the hand-off entered", || {
        platform.entered.load(Ordering::SeqCst) == 1
    })
    .await;
    handle.shutdown();
    let summary = tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    assert_eq!(summary.abandoned, [s.dir().to_path_buf()]);
    assert!(
        control.kills().is_empty(),
        "ContainerPolicy::Leave by default"
    );

    // The next host is stopped through a token of the caller's (a signal handler's, say).
    let next = Arc::new(Platform::default());
    let token = StopToken::new();
    let host = AsyncHost::new(SyncControl::new(control.clone()), Arc::clone(&next), opts())
        .with_stop_token(token.clone());
    let handle = host.handle();
    assert!(handle.add_session(s.host()));
    let run = tokio::spawn(host.run());
    wait_until("delivered by the next host", || next.capture.count() == 1).await;
    token.stop();
    tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    assert!(handle.is_stopping());
    assert_eq!(next.capture.attempts(), [("r-x".to_string(), 2, true)]);
}

/// Sessions come and go while the host runs (on the current-thread scheduler): an added one
/// is served at once, chat written through the handle wakes its container, a removed one is
/// no longer touched and its container is stopped when asked.
#[tokio::test]
async fn sessions_are_added_and_removed_while_the_host_runs() {
    let clock = ManualClock::new();
    let control = FakeControl::new();
    let platform = Arc::new(Platform::default());
    let (handle, mut events, run) = start_host(&control, &platform, opts(), &[]);
    let capture = platform.capture.clone();

    let a = TempSession::with_clock(&clock);
    let unknown = handle
        .accept_chat(a.dir(), NewMessage::chat("m1", "hi"), || false)
        .await;
    assert!(
        matches!(unknown, Err(RuntimeError::UnknownSession { .. })),
        "{unknown:?}"
    );
    assert!(handle.add_session(a.host()));
    assert!(!handle.add_session(a.host()), "already served");
    let accepted = handle
        .accept_chat(a.dir(), NewMessage::chat("m1", "hi"), || false)
        .await
        .unwrap();
    assert!(matches!(accepted, Accepted::Written(_)), "{accepted:?}");
    wait_until("a's container woken", || control.starts() == [a.dir()]).await;
    // A denied admin command is answered by the host itself, and delivered.
    let denied = handle
        .accept_chat(a.dir(), NewMessage::chat("m2", "/cost"), || false)
        .await
        .unwrap();
    assert!(matches!(denied, Accepted::Denied { .. }), "{denied:?}");
    wait_until("the denial delivered", || capture.count() == 1).await;
    // The container answers m1.
    a.container()
        .outbound()
        .commit(
            &["m1".into()],
            &AckStatus::Completed,
            &[reply("r1", "hello")],
        )
        .unwrap();
    wait_until("a's reply delivered", || {
        capture.ids().contains(&"r1".to_string())
    })
    .await;

    let b = session_with_reply(&clock, "b");
    assert!(handle.add_session(b.host()));
    wait_until("b's reply delivered", || {
        capture.ids().contains(&"r-b".to_string())
    })
    .await;

    assert!(handle.remove_session(a.dir(), ContainerPolicy::Stop));
    assert!(
        !handle.remove_session(a.dir(), ContainerPolicy::Stop),
        "already removed"
    );
    let e = wait_event(
        &mut events,
        "a's container stopped",
        |e| matches!(e, HostEvent::ContainerStopped(s) if s.session == a.dir()),
    )
    .await;
    let HostEvent::ContainerStopped(stop) = e else {
        unreachable!()
    };
    assert!(matches!(stop.result, Ok(true)), "{stop:?}");
    assert_eq!(control.kills_of(a.dir()), [KillReason::SessionRemoved]);
    assert_eq!(handle.sessions(), [b.dir().to_path_buf()]);

    // From now on a is not touched: a reply there stays due while b is served on.
    let asked = control.is_running_calls(a.dir());
    add_reply(&a, "late");
    add_reply(&b, "later");
    wait_until("b's second reply delivered", || {
        capture.ids().contains(&"r-later".to_string())
    })
    .await;
    for _ in 0..3 {
        wait_event(&mut events, "a whole pass", |e| {
            matches!(e, HostEvent::PassFinished(_))
        })
        .await;
    }
    assert!(!capture.ids().contains(&"r-late".to_string()));
    assert_eq!(a.host().due_outbound(10).unwrap().len(), 1);
    assert_eq!(control.is_running_calls(a.dir()), asked);

    handle.shutdown();
    let summary = tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    assert_eq!(summary.containers_stopped, [a.dir().to_path_buf()]);
    assert!(
        control.kills_of(b.dir()).is_empty(),
        "left running at shutdown"
    );
}

/// A panic in one session's sweep (its control) and one in another's delivery (the platform)
/// are reported for those sessions, pass after pass, while a third session is served; once
/// the panics stop, both catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_isolated_per_session_and_per_part() {
    let clock = ManualClock::new();
    let a = session_with_reply(&clock, "a");
    let b = session_with_reply(&clock, "b");
    let c = session_with_reply(&clock, "c");
    let control = FakeControl::new();
    control.panic_for(a.dir(), true);
    let platform = Arc::new(Platform::default());
    platform
        .panic_for
        .lock()
        .unwrap()
        .push(b.dir().to_path_buf());
    // Every pass of b counts a hand-off attempt before its platform panics: enough of them.
    let opts = opts().with_max_delivery_attempts(1_000_000);
    let (handle, mut events, run) = start_host(&control, &platform, opts, &[&a, &b, &c]);

    for _ in 0..2 {
        let e = wait_event(&mut events, "a's sweep panicking", |e| {
            is_session(e, a.dir(), |p| p.panicked())
        })
        .await;
        let HostEvent::Session(p) = e else {
            unreachable!()
        };
        assert!(
            matches!(p.sweep, Err(RuntimeError::Panicked { .. })),
            "{p:?}"
        );
        let e = wait_event(&mut events, "b's delivery panicking", |e| {
            is_session(e, b.dir(), |p| p.panicked())
        })
        .await;
        let HostEvent::Session(p) = e else {
            unreachable!()
        };
        assert!(
            matches!(p.sweep, Ok(SweepOutcome::Full(_) | SweepOutcome::Quiet)),
            "{p:?}"
        );
        let Err(RuntimeError::Panicked { detail, .. }) = &p.delivery else {
            panic!("{p:?}")
        };
        assert!(detail.contains("the platform blew up on r-b"), "{detail}");
    }
    let capture = platform.capture.clone();
    wait_until("c delivered", || capture.ids().contains(&"r-c".to_string())).await;
    assert!(!capture.ids().contains(&"r-b".to_string()));

    control.panic_for(a.dir(), false);
    platform.panic_for.lock().unwrap().clear();
    wait_until("a and b caught up", || capture.count() == 3).await;
    handle.shutdown();
    let summary = tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    assert!(summary.panicked_session_passes >= 4, "{summary:?}");
    let mut ids = capture.ids();
    ids.sort();
    assert_eq!(ids, ["r-a", "r-b", "r-c"]);
}

/// An async handler: reverses each chat text after an await, numbering turns in the
/// continuation (which `/clear` resets).
struct Reverse;

impl AsyncHandler for Reverse {
    async fn handle(
        &mut self,
        ctx: &HandlerContext<'_>,
        batch: &Batch,
    ) -> Result<Handled, RuntimeError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let turn: u64 = ctx
            .continuation()?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
            + 1;
        ctx.set_continuation(&turn.to_string())?;
        let replies = batch
            .messages
            .iter()
            .map(|m| {
                let text: String = m.content_json()["text"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .rev()
                    .collect();
                NewOutbound::reply_to(format!("re-{}", m.id), m, &format!("{turn}: {text}"))
            })
            .collect();
        Ok(Handled::completed(replies))
    }
}

fn reply_texts(host: &HostSession) -> Vec<String> {
    host.due_outbound(100)
        .unwrap()
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_str(&d.message.content).unwrap();
            v["text"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// The container's poll loop from async code: an async handler answers, `/clear` is handled
/// by the runtime, and the stop token ends the loop cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_container_loop_runs_an_async_handler_until_the_token_stops_it() {
    let s = TempSession::new();
    let opts = ContainerOptions {
        config_optional: true,
        clock: s.clock.shared(),
        heartbeat_interval: Duration::from_millis(30),
        ..ContainerOptions::in_folder(s.dir())
    };
    let stop = StopToken::new();
    let running = tokio::spawn(run_container_async(opts, stop.clone(), Reverse));
    let host = s.host();
    host.inbound()
        .write_message(&message("m1", "hello").build())
        .unwrap();
    wait_until("the first answer", || reply_texts(&host) == ["1: olleh"]).await;
    host.inbound()
        .write_message(&message("m2", "/clear").build())
        .unwrap();
    wait_until("the clear", || reply_texts(&host).len() == 2).await;
    host.inbound()
        .write_message(&message("m3", "abc").build())
        .unwrap();
    wait_until("the answer after the clear", || {
        reply_texts(&host).len() == 3
    })
    .await;
    assert_eq!(
        reply_texts(&host),
        ["1: olleh", "Session cleared.", "1: cba"]
    );

    stop.stop();
    let summary = tokio::time::timeout(LONG, running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((summary.completed, summary.clears), (3, 1), "{summary:?}");
    assert!(host.pending_claims().unwrap().is_empty());
}

/// The sync fakes through the adapters: a start that fails is retried (after the sweeper's
/// backoff), a refused hand-off is tried again with the next attempt number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_controls_and_deliverers_work_through_the_adapters() {
    let clock = ManualClock::new();
    let s = session_with_reply(&clock, "a");
    s.host()
        .inbound()
        .write_message(&message("m-wake", "wake up").build())
        .unwrap();
    let control = FakeControl::new();
    control.fail_next_starts(1);
    let capture = CapturingDeliverer::new();
    capture.fail_next(2);
    let host = AsyncHost::new(
        SyncControl::new(control.clone()),
        SyncDeliverer::new(capture.clone()),
        opts(),
    );
    let handle = host.handle();
    handle.add_session(s.host());
    let run = tokio::spawn(host.run());
    wait_until("started on the second try", || {
        control.starts() == [s.dir()]
    })
    .await;
    assert_eq!(control.starts_of(s.dir()), 2);
    wait_until("delivered on the third attempt", || capture.count() == 1).await;
    assert_eq!(
        capture.attempts(),
        [
            ("r-a".to_string(), 1, false),
            ("r-a".to_string(), 2, false),
            ("r-a".to_string(), 3, true)
        ]
    );
    handle.shutdown();
    let summary = tokio::time::timeout(LONG, run).await.unwrap().unwrap();
    assert_eq!(summary.delivered, 1);
}
