//! The async host loop: many sessions swept and delivered concurrently on a bounded pool.

use super::traits::{lock, AsyncContainerControl, AsyncDeliverer, BlockOn};
use super::{blocking, CatchUnwind, StopToken};
use crate::error::{panic_detail, RuntimeError};
use crate::host::{
    begin_attempt, finish_attempt, Accepted, Begun, DeliveryReport, SweepOptions, SweepOutcome,
    Sweeper, DELIVERY_BATCH,
};
use crate::liveness::KillReason;
use sessionbus_store::{HostSession, MessageIn, NewMessage, NextOccurrence, SessionPaths};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio::task::JoinSet;

/// What happens to containers when the host lets go of their session (at shutdown, or when a
/// session is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainerPolicy {
    /// Leave them running (the default at shutdown). They keep answering into outbound.db;
    /// the next host (or this one, when the session is added again) delivers their replies and
    /// judges them by the same liveness rules. Note that the shipped sync controls kill their
    /// children when they are dropped, which happens when the host is.
    #[default]
    Leave,
    /// Stop them through the control: [`AsyncContainerControl::kill`] with
    /// [`KillReason::HostShutdown`] or [`KillReason::SessionRemoved`], for each one that runs.
    Stop,
}

/// How the async host runs.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HostOptions {
    /// How many sessions are served at once (default 8; at least 1). Each one being served
    /// holds a permit for its whole pass (sweep, then delivery), so a stuck session holds one
    /// permit and the others share the rest.
    pub concurrency: usize,
    /// How often every session is scheduled (default 1 s). A session whose last pass has not
    /// ended is skipped, not queued twice.
    pub tick: Duration,
    /// The sweep's options (retries, wake, idle limit), for every session.
    pub sweep: SweepOptions,
    /// Hand-offs of a row before it is recorded failed (default 5).
    pub max_delivery_attempts: i64,
    /// How long one hand-off may take (default 60 s): past it the host drops the hand-off's
    /// future and counts the attempt as failed.
    pub delivery_timeout: Duration,
    /// How long one call of the container control may take (default 120 s): past it a start
    /// or kill fails for that session, and an unanswered `is_running` is taken as "running".
    pub control_timeout: Duration,
    /// A session's pass still running after this long is reported once as
    /// [`HostEvent::Stalled`] (default 30 s). Reporting only: nothing is cancelled.
    pub stalled_after: Duration,
    /// At shutdown, how long passes in flight get to finish (default 30 s); those still running
    /// then are abandoned (see [`HostSummary::abandoned`]).
    pub shutdown_grace: Duration,
    /// What happens to the containers at shutdown (default [`ContainerPolicy::Leave`]).
    pub on_shutdown: ContainerPolicy,
    /// How many events a subscriber may fall behind before it misses some (default 1024).
    pub event_capacity: usize,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            concurrency: 8,
            tick: Duration::from_secs(1),
            sweep: SweepOptions::default(),
            max_delivery_attempts: 5,
            delivery_timeout: Duration::from_secs(60),
            control_timeout: Duration::from_secs(120),
            stalled_after: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            on_shutdown: ContainerPolicy::Leave,
            event_capacity: 1024,
        }
    }
}

impl HostOptions {
    /// The same options serving `n` sessions at once.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The same options with this tick.
    pub fn with_tick(mut self, tick: Duration) -> Self {
        self.tick = tick;
        self
    }

    /// The same options with these sweep options.
    pub fn with_sweep(mut self, sweep: SweepOptions) -> Self {
        self.sweep = sweep;
        self
    }

    /// The same options with this many hand-offs per row.
    pub fn with_max_delivery_attempts(mut self, n: i64) -> Self {
        self.max_delivery_attempts = n;
        self
    }

    /// The same options with this hand-off timeout.
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// The same options with this control-call timeout.
    pub fn with_control_timeout(mut self, timeout: Duration) -> Self {
        self.control_timeout = timeout;
        self
    }

    /// The same options reporting stalls after `after`.
    pub fn with_stalled_after(mut self, after: Duration) -> Self {
        self.stalled_after = after;
        self
    }

    /// The same options with this shutdown grace.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The same options with this container policy at shutdown.
    pub fn with_on_shutdown(mut self, policy: ContainerPolicy) -> Self {
        self.on_shutdown = policy;
        self
    }

    /// The same options with this event capacity.
    pub fn with_event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }
}

/// One session's pass: its sweep, then its delivery. Each part's error (or panic, as
/// [`RuntimeError::Panicked`]) is its own; the delivery runs whatever the sweep did.
#[derive(Debug)]
pub struct SessionPass {
    /// The session folder.
    pub session: PathBuf,
    /// The pass it was scheduled in.
    pub pass: u64,
    /// The sweep ([`Sweeper::sweep`]: quiet sessions cost two header reads).
    pub sweep: Result<SweepOutcome, RuntimeError>,
    /// The delivery of its due rows.
    pub delivery: Result<DeliveryReport, RuntimeError>,
}

impl SessionPass {
    /// True when neither part failed.
    pub fn is_ok(&self) -> bool {
        self.sweep.is_ok() && self.delivery.is_ok()
    }

    /// The errors of the two parts.
    pub fn errors(&self) -> impl Iterator<Item = &RuntimeError> {
        self.sweep
            .as_ref()
            .err()
            .into_iter()
            .chain(self.delivery.as_ref().err())
    }

    /// True when either part panicked.
    pub fn panicked(&self) -> bool {
        self.errors()
            .any(|e| matches!(e, RuntimeError::Panicked { .. }))
    }

    /// Rows delivered in this pass.
    pub fn delivered(&self) -> usize {
        self.delivery.as_ref().map_or(0, |d| d.delivered.len())
    }
}

/// A pass once every session scheduled in it has reported. A pass is one scheduling round:
/// every tick schedules every session not already being served, and a wake (a session added,
/// a chat accepted through [`HostHandle::accept_chat`], [`HostHandle::wake`]) schedules just
/// those sessions. A pass ends with its slowest session; later passes never wait for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassSummary {
    /// The pass.
    pub pass: u64,
    /// Sessions served in it.
    pub sessions: usize,
    /// Of those, how many had an error (a panic included).
    pub failed: usize,
    /// Of those, how many panicked.
    pub panicked: usize,
    /// Rows delivered.
    pub delivered: usize,
}

/// What a container stop by the host did (at removal or shutdown).
#[derive(Debug)]
pub struct ContainerStop {
    /// The session folder.
    pub session: PathBuf,
    /// `Ok(true)`: it ran and was killed; `Ok(false)`: none ran.
    pub result: Result<bool, RuntimeError>,
}

/// What a whole run did, returned by [`AsyncHost::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostSummary {
    /// Passes started.
    pub passes: u64,
    /// Session passes that reported.
    pub session_passes: u64,
    /// Of those, how many had an error.
    pub failed_session_passes: u64,
    /// Of those, how many panicked.
    pub panicked_session_passes: u64,
    /// Rows delivered.
    pub delivered: u64,
    /// Sessions whose pass was still running when the shutdown grace ran out. Their async
    /// work was dropped; blocking work already started on their behalf (an SQLite operation, a
    /// sync control or deliverer call) runs on to its end on its thread. A row whose hand-off
    /// was dropped is delivered again by the next host (at-least-once).
    pub abandoned: Vec<PathBuf>,
    /// Sessions whose running container the host stopped (removal or shutdown).
    pub containers_stopped: Vec<PathBuf>,
}

/// What the host reports while it runs (see [`HostHandle::subscribe`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HostEvent {
    /// A pass was scheduled.
    PassStarted {
        /// The pass.
        pass: u64,
        /// Sessions scheduled in it.
        scheduled: usize,
        /// Sessions skipped because their previous pass is still running.
        busy: usize,
    },
    /// One session's pass ended.
    Session(Arc<SessionPass>),
    /// Every session of a pass has reported.
    PassFinished(PassSummary),
    /// A session's pass has been running for longer than [`HostOptions::stalled_after`]
    /// (reported once per pass; the other sessions are served meanwhile).
    Stalled {
        /// The session folder.
        session: PathBuf,
        /// The pass it is stuck in.
        pass: u64,
    },
    /// A session was added.
    SessionAdded {
        /// The session folder.
        session: PathBuf,
    },
    /// A session was removed (a pass in flight finishes and is still reported).
    SessionRemoved {
        /// The session folder.
        session: PathBuf,
    },
    /// The host stopped a container (removal or shutdown).
    ContainerStopped(Arc<ContainerStop>),
    /// The shutdown began: no pass is scheduled from now on.
    Stopping,
    /// The run ended.
    Stopped(HostSummary),
}

/// The recurrence hook of the sweep (see [`crate::host::sweep_session`]).
use crate::host::NextOccurrenceFn;

/// A served session: its host view and its sweeper (quiet marks, start backoff).
#[derive(Clone)]
struct Slot {
    host: HostSession,
    sweeper: Arc<Mutex<Sweeper>>,
}

/// A session being served, or its container being stopped.
struct InFlight {
    /// `None` for a container stop.
    pass: Option<u64>,
    since: Instant,
    stalled: bool,
}

#[derive(Default)]
struct Registry {
    sessions: BTreeMap<PathBuf, Slot>,
    in_flight: HashMap<PathBuf, InFlight>,
    /// Sessions to schedule at once (kept while in flight: scheduled again when done).
    poked: BTreeSet<PathBuf>,
    /// Removed sessions whose container is to be stopped.
    to_stop: Vec<SessionPaths>,
    /// The host is shutting down: nothing is added or scheduled.
    closed: bool,
}

/// What the host and its handles share.
struct Shared {
    registry: Mutex<Registry>,
    wake: Notify,
    stop: StopToken,
    events: broadcast::Sender<HostEvent>,
    sweep: SweepOptions,
}

impl Shared {
    fn emit(&self, event: HostEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

/// What a session task needs.
struct Ctx<C, D> {
    control: C,
    deliverer: D,
    opts: HostOptions,
    next_occurrence: Arc<NextOccurrenceFn>,
    permits: Arc<Semaphore>,
}

/// A host serving many sessions from async code. Each session's pass (a [`Sweeper`] sweep,
/// then delivery of its due rows) runs as its own task; its SQLite work runs on blocking
/// threads (`spawn_blocking`); at most [`HostOptions::concurrency`] sessions are served at
/// once. A slow deliverer, a locked file or a hung control call holds up its own session
/// only, and a panic in one session is reported for it ([`RuntimeError::Panicked`]) while
/// the others carry on.
///
/// ```no_run
/// use sessionbus_runtime::control::ChildControl;
/// use sessionbus_runtime::tokio_host::{deliver_fn, AsyncHost, HostOptions, SyncControl};
/// use sessionbus_runtime::{HostSession, NewMessage};
///
/// # async fn demo() {
/// let control = SyncControl::new(ChildControl::new("/usr/local/bin/agent", vec![]));
/// let platform = deliver_fn(|session, row, _attempt| async move {
///     println!("{}: {}", session.dir.display(), row.message.content);
///     Ok(None)
/// });
/// let host = AsyncHost::new(control, platform, HostOptions::default());
/// let handle = host.handle();
/// let run = tokio::spawn(host.run());
/// handle.add_session(HostSession::open("/data/v2-sessions/g/s1"));
/// handle
///     .accept_chat("/data/v2-sessions/g/s1".as_ref(), NewMessage::chat("m1", "hi"), || false)
///     .await
///     .unwrap();
/// // ... later:
/// handle.shutdown();
/// let summary = run.await.unwrap();
/// # let _ = summary;
/// # }
/// ```
pub struct AsyncHost<C, D> {
    control: C,
    deliverer: D,
    opts: HostOptions,
    next_occurrence: Arc<NextOccurrenceFn>,
    shared: Arc<Shared>,
    /// A caller's token that also stops the host.
    linked: Option<StopToken>,
}

impl<C: AsyncContainerControl, D: AsyncDeliverer> AsyncHost<C, D> {
    /// A host with this control, deliverer and options, serving no session yet.
    pub fn new(control: C, deliverer: D, opts: HostOptions) -> Self {
        let (events, _) = broadcast::channel(opts.event_capacity.max(1));
        AsyncHost {
            control,
            deliverer,
            opts,
            next_occurrence: Arc::new(|_: &MessageIn| None),
            shared: Arc::new(Shared {
                registry: Mutex::new(Registry::default()),
                wake: Notify::new(),
                stop: StopToken::new(),
                events,
                sweep: opts.sweep,
            }),
            linked: None,
        }
    }

    /// The same host with a recurrence hook: for each completed recurring task, the next
    /// occurrence to insert (see [`crate::host::sweep_session`]).
    pub fn with_next_occurrence(
        mut self,
        f: impl Fn(&MessageIn) -> Option<NextOccurrence> + Send + Sync + 'static,
    ) -> Self {
        self.next_occurrence = Arc::new(f);
        self
    }

    /// The same host, also stopped by `token` (a token shared with a signal handler, say):
    /// its stop starts the same graceful shutdown as [`HostHandle::shutdown`].
    pub fn with_stop_token(mut self, token: StopToken) -> Self {
        self.linked = Some(token);
        self
    }

    /// A handle to add and remove sessions, write chat messages, watch events and shut down.
    pub fn handle(&self) -> HostHandle {
        HostHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs until the stop is requested ([`HostHandle::shutdown`] or the stop token), then
    /// shuts down gracefully: no new pass is scheduled, passes in flight get
    /// [`HostOptions::shutdown_grace`] to finish (deliveries included), those still running
    /// then are abandoned, containers are stopped or left as [`HostOptions::on_shutdown`]
    /// says (containers of removed sessions waiting to be stopped are stopped either way),
    /// and [`HostEvent::Stopped`] reports the summary it returns.
    ///
    /// Needs a tokio runtime with the time driver (as `#[tokio::main]` and `#[tokio::test]`
    /// build); works on the current-thread and the multi-thread scheduler alike.
    pub async fn run(self) -> HostSummary {
        let stop = self.shared.stop.clone();
        let linked = self.linked.clone();
        let linked_stopped = async move {
            match linked {
                Some(token) => token.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(linked_stopped);
        let shared = Arc::clone(&self.shared);
        let mut runner = Runner {
            stop_permits: Arc::new(Semaphore::new(self.opts.concurrency.max(1))),
            ctx: Arc::new(Ctx {
                control: self.control,
                deliverer: self.deliverer,
                opts: self.opts,
                next_occurrence: self.next_occurrence,
                permits: Arc::new(Semaphore::new(self.opts.concurrency.max(1))),
            }),
            shared: self.shared,
            tasks: JoinSet::new(),
            meta: HashMap::new(),
            outstanding: HashMap::new(),
            next_pass: 0,
            summary: HostSummary::default(),
        };
        let mut ticks = tokio::time::interval(self.opts.tick.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.stopped() => break,
                () = &mut linked_stopped => {
                    stop.stop();
                    break;
                }
                Some(done) = runner.tasks.join_next_with_id() => runner.finished(done),
                _ = ticks.tick() => {
                    runner.schedule(true);
                    runner.report_stalled();
                }
                () = shared.wake.notified() => runner.schedule(false),
            }
        }
        runner.shut_down().await
    }
}

/// A cheap, cloneable handle on a running (or not yet running) [`AsyncHost`].
#[derive(Clone)]
pub struct HostHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HostHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostHandle")
            .field("sessions", &self.sessions().len())
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

impl HostHandle {
    /// Serves `host`'s session from the next moment on (it is scheduled at once). Returns
    /// false when the session is already served or the host is shutting down.
    pub fn add_session(&self, host: HostSession) -> bool {
        let dir = host.paths().dir.clone();
        {
            let mut reg = lock(&self.shared.registry);
            if reg.closed || reg.sessions.contains_key(&dir) {
                return false;
            }
            reg.sessions.insert(
                dir.clone(),
                Slot {
                    host,
                    sweeper: Arc::new(Mutex::new(Sweeper::new(self.shared.sweep))),
                },
            );
            reg.poked.insert(dir.clone());
        }
        self.shared.emit(HostEvent::SessionAdded { session: dir });
        self.shared.wake.notify_one();
        true
    }

    /// Stops serving the session at `dir`. A pass in flight finishes (and is reported);
    /// with [`ContainerPolicy::Stop`] its container is then stopped through the control
    /// ([`KillReason::SessionRemoved`], reported as [`HostEvent::ContainerStopped`]). Returns
    /// false when the session was not served.
    pub fn remove_session(&self, dir: &Path, containers: ContainerPolicy) -> bool {
        {
            let mut reg = lock(&self.shared.registry);
            let Some(slot) = reg.sessions.remove(dir) else {
                return false;
            };
            reg.poked.remove(dir);
            if containers == ContainerPolicy::Stop {
                reg.to_stop.push(slot.host.paths().clone());
            }
        }
        self.shared.emit(HostEvent::SessionRemoved {
            session: dir.to_path_buf(),
        });
        self.shared.wake.notify_one();
        true
    }

    /// The sessions served, in folder order.
    pub fn sessions(&self) -> Vec<PathBuf> {
        lock(&self.shared.registry)
            .sessions
            .keys()
            .cloned()
            .collect()
    }

    /// The host view of a served session.
    pub fn session(&self, dir: &Path) -> Option<HostSession> {
        lock(&self.shared.registry)
            .sessions
            .get(dir)
            .map(|s| s.host.clone())
    }

    /// Schedules a pass for the session at `dir` now instead of at the next tick (after the
    /// pass in flight, if any).
    pub fn wake(&self, dir: &Path) {
        {
            let mut reg = lock(&self.shared.registry);
            if !reg.sessions.contains_key(dir) {
                return;
            }
            reg.poked.insert(dir.to_path_buf());
        }
        self.shared.wake.notify_one();
    }

    /// Passes a chat message through the command gate into the served session at `dir` (see
    /// [`crate::host::accept_chat`]), on a blocking thread, then wakes the session so that its
    /// container is started (or the denial delivered) without waiting for the next tick.
    /// `is_admin` runs on that thread, and only for admin commands. Fails with
    /// [`RuntimeError::UnknownSession`] for a session this host does not serve. It still
    /// writes once the host is shutting down (the message waits for the next host).
    pub async fn accept_chat(
        &self,
        dir: &Path,
        msg: NewMessage,
        is_admin: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<Accepted, RuntimeError> {
        let host = self
            .session(dir)
            .ok_or_else(|| RuntimeError::UnknownSession {
                session: dir.to_path_buf(),
            })?;
        let accepted = super::accept_chat(&host, msg, is_admin).await?;
        if !matches!(accepted, Accepted::Filtered { .. }) {
            self.wake(dir);
        }
        Ok(accepted)
    }

    /// A receiver of the host's events from now on. The host never waits for subscribers: one
    /// that falls [`HostOptions::event_capacity`] events behind misses the oldest (its next
    /// `recv` says how many, as `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.shared.events.subscribe()
    }

    /// Requests the graceful shutdown (see [`AsyncHost::run`]).
    pub fn shutdown(&self) {
        self.shared.stop.stop();
    }

    /// Whether the shutdown was requested.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.is_stopped()
    }

    /// The host's own stop token (stopping it is [`HostHandle::shutdown`]).
    pub fn stop_token(&self) -> StopToken {
        self.shared.stop.clone()
    }
}

/// What a task of the loop ended with.
enum Done {
    Pass(SessionPass),
    Stop(ContainerStop),
}

/// The loop's own state.
struct Runner<C, D> {
    ctx: Arc<Ctx<C, D>>,
    /// Permits for the container stops at shutdown, apart from the sessions' own (in `ctx`):
    /// an abandoned pass may hold one of those for good.
    stop_permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    tasks: JoinSet<Done>,
    /// Each task's session and pass (`None`: a container stop).
    meta: HashMap<tokio::task::Id, (PathBuf, Option<u64>)>,
    /// Pass tallies until every session of the pass has reported.
    outstanding: HashMap<u64, (usize, PassSummary)>,
    next_pass: u64,
    summary: HostSummary,
}

impl<C: AsyncContainerControl, D: AsyncDeliverer> Runner<C, D> {
    /// Schedules a pass: every session not in flight (`all`), or only the poked ones; and the
    /// container stops of removed sessions that are not in flight.
    fn schedule(&mut self, all: bool) {
        let now = Instant::now();
        let pass = self.next_pass + 1;
        let (picked, busy, stops) = {
            let mut reg = lock(&self.shared.registry);
            if reg.closed {
                return;
            }
            let candidates: Vec<PathBuf> = if all {
                reg.sessions.keys().cloned().collect()
            } else {
                reg.poked.iter().cloned().collect()
            };
            let mut picked = Vec::new();
            let mut busy = 0;
            for dir in candidates {
                if reg.in_flight.contains_key(&dir) {
                    busy += 1;
                    continue;
                }
                reg.poked.remove(&dir);
                let Some(slot) = reg.sessions.get(&dir).cloned() else {
                    continue;
                };
                reg.in_flight.insert(
                    dir,
                    InFlight {
                        pass: Some(pass),
                        since: now,
                        stalled: false,
                    },
                );
                picked.push(slot);
            }
            let (waiting, ready): (Vec<_>, Vec<_>) = std::mem::take(&mut reg.to_stop)
                .into_iter()
                .partition(|p| reg.in_flight.contains_key(&p.dir));
            reg.to_stop = waiting;
            for p in &ready {
                reg.in_flight.insert(
                    p.dir.clone(),
                    InFlight {
                        pass: None,
                        since: now,
                        stalled: false,
                    },
                );
            }
            (picked, busy, ready)
        };
        for paths in stops {
            let dir = paths.dir.clone();
            let permits = Arc::clone(&self.ctx.permits);
            let task = stop_container(
                Arc::clone(&self.ctx),
                permits,
                paths,
                KillReason::SessionRemoved,
            );
            let id = self.tasks.spawn(task).id();
            self.meta.insert(id, (dir, None));
        }
        if picked.is_empty() && !all {
            return;
        }
        self.next_pass = pass;
        self.summary.passes += 1;
        self.shared.emit(HostEvent::PassStarted {
            pass,
            scheduled: picked.len(),
            busy,
        });
        let tally = PassSummary {
            pass,
            ..PassSummary::default()
        };
        if picked.is_empty() {
            self.shared.emit(HostEvent::PassFinished(tally));
            return;
        }
        self.outstanding.insert(pass, (picked.len(), tally));
        for slot in picked {
            let dir = slot.host.paths().dir.clone();
            let id = self
                .tasks
                .spawn(serve(Arc::clone(&self.ctx), slot, pass))
                .id();
            self.meta.insert(id, (dir, Some(pass)));
        }
    }

    /// Reports sessions whose pass has run for longer than `stalled_after` (once each).
    fn report_stalled(&mut self) {
        let after = self.ctx.opts.stalled_after;
        let stalled: Vec<(PathBuf, u64)> = {
            let mut reg = lock(&self.shared.registry);
            reg.in_flight
                .iter_mut()
                .filter(|(_, f)| !f.stalled && f.since.elapsed() >= after)
                .filter_map(|(dir, f)| {
                    f.stalled = true;
                    f.pass.map(|pass| (dir.clone(), pass))
                })
                .collect()
        };
        for (session, pass) in stalled {
            self.shared.emit(HostEvent::Stalled { session, pass });
        }
    }

    /// A task ended: reports it and frees its session.
    fn finished(&mut self, done: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        let (id, done) = match done {
            Ok((id, done)) => (id, Ok(done)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some((session, pass)) = self.meta.remove(&id) else {
            return;
        };
        {
            let mut reg = lock(&self.shared.registry);
            reg.in_flight.remove(&session);
            if reg.poked.contains(&session) || !reg.to_stop.is_empty() {
                self.shared.wake.notify_one();
            }
        }
        // A task's own parts catch their panics; a JoinError is a panic outside them, or the
        // task aborted at shutdown.
        let lost = |e: &tokio::task::JoinError| {
            if e.is_panic() {
                "the session's task panicked".to_owned()
            } else {
                "the session's task was cancelled".to_owned()
            }
        };
        match (done, pass) {
            (Ok(Done::Pass(p)), _) => self.record_pass(p),
            (Ok(Done::Stop(stop)), _) => self.record_stop(stop),
            (Err(e), Some(pass)) => {
                let detail = match e.try_into_panic() {
                    Ok(payload) => panic_detail(payload.as_ref()),
                    Err(e) => lost(&e),
                };
                let err = || RuntimeError::Panicked {
                    session: session.clone(),
                    detail: detail.clone(),
                };
                self.record_pass(SessionPass {
                    session: session.clone(),
                    pass,
                    sweep: Err(err()),
                    delivery: Err(err()),
                });
            }
            (Err(e), None) => self.record_stop(ContainerStop {
                session: session.clone(),
                result: Err(RuntimeError::Panicked {
                    session: session.clone(),
                    detail: lost(&e),
                }),
            }),
        }
    }

    fn record_pass(&mut self, p: SessionPass) {
        let (failed, panicked, delivered) = (!p.is_ok(), p.panicked(), p.delivered());
        self.summary.session_passes += 1;
        self.summary.failed_session_passes += u64::from(failed);
        self.summary.panicked_session_passes += u64::from(panicked);
        self.summary.delivered += delivered as u64;
        let pass = p.pass;
        self.shared.emit(HostEvent::Session(Arc::new(p)));
        let Some((left, tally)) = self.outstanding.get_mut(&pass) else {
            return;
        };
        *left -= 1;
        tally.sessions += 1;
        tally.failed += usize::from(failed);
        tally.panicked += usize::from(panicked);
        tally.delivered += delivered;
        if *left == 0 {
            if let Some((_, tally)) = self.outstanding.remove(&pass) {
                self.shared.emit(HostEvent::PassFinished(tally));
            }
        }
    }

    fn record_stop(&mut self, stop: ContainerStop) {
        if matches!(stop.result, Ok(true)) {
            self.summary.containers_stopped.push(stop.session.clone());
        }
        self.shared
            .emit(HostEvent::ContainerStopped(Arc::new(stop)));
    }

    /// The graceful shutdown (see [`AsyncHost::run`]).
    async fn shut_down(mut self) -> HostSummary {
        lock(&self.shared.registry).closed = true;
        self.shared.emit(HostEvent::Stopping);
        let grace = self.ctx.opts.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.tasks.join_next_with_id().await {
                self.finished(done);
            }
        })
        .await;
        if drained.is_err() {
            let mut abandoned: Vec<PathBuf> = self
                .meta
                .values()
                .filter(|(_, pass)| pass.is_some())
                .map(|(dir, _)| dir.clone())
                .collect();
            abandoned.sort();
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
            self.meta.clear();
            lock(&self.shared.registry).in_flight.clear();
            self.summary.abandoned = abandoned;
        }
        let stops: Vec<(SessionPaths, KillReason)> = {
            let mut reg = lock(&self.shared.registry);
            let mut stops: Vec<(SessionPaths, KillReason)> = std::mem::take(&mut reg.to_stop)
                .into_iter()
                .map(|p| (p, KillReason::SessionRemoved))
                .collect();
            if self.ctx.opts.on_shutdown == ContainerPolicy::Stop {
                stops.extend(
                    reg.sessions
                        .values()
                        .map(|s| (s.host.paths().clone(), KillReason::HostShutdown)),
                );
            }
            stops
        };
        for (paths, reason) in stops {
            let dir = paths.dir.clone();
            let task = stop_container(
                Arc::clone(&self.ctx),
                Arc::clone(&self.stop_permits),
                paths,
                reason,
            );
            let id = self.tasks.spawn(task).id();
            self.meta.insert(id, (dir, None));
        }
        while let Some(done) = self.tasks.join_next_with_id().await {
            self.finished(done);
        }
        self.shared.emit(HostEvent::Stopped(self.summary.clone()));
        self.summary
    }
}

/// One session's pass: the sweep on a blocking thread (the async control bridged into it),
/// then the delivery, each part's panics caught.
async fn serve<C: AsyncContainerControl, D: AsyncDeliverer>(
    ctx: Arc<Ctx<C, D>>,
    slot: Slot,
    pass: u64,
) -> Done {
    // Never closed, so never an error; without a permit the session would still be served.
    let _permit = Arc::clone(&ctx.permits).acquire_owned().await.ok();
    let dir = slot.host.paths().dir.clone();
    let sweep = {
        let ctx = Arc::clone(&ctx);
        let host = slot.host.clone();
        let sweeper = Arc::clone(&slot.sweeper);
        let handle = Handle::current();
        blocking(&dir, move || {
            let mut control = BlockOn {
                control: &ctx.control,
                handle,
                timeout: ctx.opts.control_timeout,
            };
            let mut sweeper = match sweeper.lock() {
                Ok(s) => s,
                // A panic inside an earlier sweep: start again from nothing known (every
                // session gets a full sweep).
                Err(poisoned) => {
                    let mut s = poisoned.into_inner();
                    *s = Sweeper::new(ctx.opts.sweep);
                    sweeper.clear_poison();
                    s
                }
            };
            // The hook is the host's (set by its builder after sessions may have been added).
            sweeper.set_next_occurrence(Arc::clone(&ctx.next_occurrence));
            sweeper.sweep(&host, &mut control)
        })
        .await
    };
    let delivery = CatchUnwind::new(super::deliver_session(
        &slot.host,
        &ctx.deliverer,
        ctx.opts.max_delivery_attempts,
        ctx.opts.delivery_timeout,
    ))
    .await
    .unwrap_or_else(|payload| {
        Err(RuntimeError::Panicked {
            session: dir.clone(),
            detail: panic_detail(payload.as_ref()),
        })
    });
    Done::Pass(SessionPass {
        session: dir,
        pass,
        sweep,
        delivery,
    })
}

/// Stops a session's container through the control, if one runs.
async fn stop_container<C: AsyncContainerControl, D: AsyncDeliverer>(
    ctx: Arc<Ctx<C, D>>,
    permits: Arc<Semaphore>,
    paths: SessionPaths,
    reason: KillReason,
) -> Done {
    let _permit = permits.acquire_owned().await.ok();
    let timeout = ctx.opts.control_timeout;
    let session = paths.dir.clone();
    let control_error = |source| RuntimeError::Control {
        session: session.clone(),
        action: "kill",
        source,
    };
    let result = CatchUnwind::new(async {
        let running = tokio::time::timeout(timeout, ctx.control.is_running(&paths))
            .await
            .unwrap_or(true);
        if !running {
            return Ok(false);
        }
        match tokio::time::timeout(timeout, ctx.control.kill(&paths, &reason)).await {
            Ok(Ok(())) => Ok(true),
            Ok(Err(source)) => Err(control_error(source)),
            Err(_) => Err(control_error(
                format!("kill timed out after {timeout:?}").into(),
            )),
        }
    })
    .await
    .unwrap_or_else(|payload| {
        Err(RuntimeError::Panicked {
            session: session.clone(),
            detail: panic_detail(payload.as_ref()),
        })
    });
    Done::Stop(ContainerStop { session, result })
}

/// The delivery of one session, from async code (see [`super::deliver_session`]).
pub(crate) async fn deliver<D: AsyncDeliverer>(
    host: &HostSession,
    deliverer: &D,
    max_attempts: i64,
    timeout: Duration,
) -> Result<DeliveryReport, RuntimeError> {
    let dir = host.paths().dir.clone();
    let h = host.clone();
    let rows = blocking(&dir, move || Ok(h.due_outbound(DELIVERY_BATCH)?)).await?;
    let mut report = DeliveryReport::default();
    for row in rows {
        let (h, r) = (host.clone(), row.clone());
        let attempt = match blocking(&dir, move || begin_attempt(&h, &r, max_attempts)).await? {
            Begun::GaveUp => {
                report.failed.push(row.message.id);
                continue;
            }
            Begun::Attempt(attempt) => attempt,
        };
        let handed =
            match tokio::time::timeout(timeout, deliverer.deliver(host.paths(), &row, attempt))
                .await
            {
                Ok(handed) => handed,
                Err(_) => Err(format!("the hand-off timed out after {timeout:?}").into()),
            };
        let (h, id) = (host.clone(), row.message.id.clone());
        let finished = blocking(&dir, move || {
            finish_attempt(&h, &id, attempt, handed, max_attempts)
        })
        .await?;
        report.note(row, finished);
    }
    Ok(report)
}
