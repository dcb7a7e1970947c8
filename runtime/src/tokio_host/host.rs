//! The async host loop: many sessions swept and delivered concurrently on a bounded pool.

mod events;
mod options;
mod pass;
mod runner;

use super::traits::{lock, AsyncContainerControl, AsyncDeliverer};
use super::StopToken;
use crate::error::RuntimeError;
use crate::host::{Accepted, SweepOptions, Sweeper};
use runner::Runner;
use sessionbus_store::{HostSession, MessageIn, NewMessage, NextOccurrence, SessionPaths};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio::task::JoinSet;

pub use events::{ContainerStop, HostEvent, HostSummary, PassSummary, SessionPass};
pub use options::{ContainerPolicy, HostOptions};
pub(crate) use pass::deliver;

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
    /// ([`KillReason::SessionRemoved`](crate::liveness::KillReason::SessionRemoved), reported
    /// as [`HostEvent::ContainerStopped`]). Returns false when the session was not served.
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
