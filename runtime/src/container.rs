//! The container's side: start-up and a poll loop a container binary can use as it is.
//!
//! # A batch's life, as the host sees it in outbound.db
//!
//! 1. **Claimed**: one transaction writes a `processing` ack for every message of the batch
//!    and sets `container_activity.busy_since` to the claim time.
//! 2. **Handled**: the handler runs while a helper thread touches `.heartbeat` every
//!    [`ContainerOptions::heartbeat_interval`], until the batch's deadline (see below).
//! 3. **Committed**: each part of the batch (split around `/clear`) commits its replies with
//!    its final acks; the last part's transaction also clears `busy_since`.
//!
//! Or, when the handler panics, returns `Err`, or runs past its deadline: the batch's
//! `processing` claims are **left** (the host counts a try for each: retry with backoff, or
//! `failed` after the limit), one `failure_notes` row per message says why (for the operator;
//! at most 1 KiB each), `busy_since` is cleared, and [`Container::run`] ends with
//! [`RuntimeError::HandlerPanicked`], [`RuntimeError::HandlerFailed`] or
//! [`RuntimeError::HandlerTimedOut`]. The container never deletes its own claims after a
//! failure: a claim the host has not seen yet would vanish without a try being counted, and a
//! message that always crashes the handler would be retried forever. (Only a clean stop, with
//! no batch in progress, clears leftover `processing` acks on the way out.)
//!
//! # The deadline
//!
//! Each batch gets `handlerTimeoutMs` from `container.json` (default 30 minutes) from the
//! moment it is claimed. Time spent in a tool with a declared timeout
//! ([`HandlerContext::with_tool`]), up to that timeout, does not count: while such a tool runs
//! the deadline is widened by its whole declared timeout, and once it returns, by the time it
//! took. Never more than 2 hours after the claim ([`crate::config::MAX_HANDLER_TIMEOUT_MS`]),
//! however many tools run.
//!
//! Past the deadline the helper thread sets `.heartbeat`'s mtime back to the claim time and
//! stops touching it: no heartbeat after the claim is what the host's claim rule kills for at
//! its next sweep (the 30-minute ceiling alone would fire half an hour later). A handler stuck
//! for good never returns; that is fine, the host kills the process. One that returns late has
//! its result discarded (its claims left, a failure note written), and the run ends.
//!
//! # Alive versus active (for host authors)
//!
//! - **Alive**: `.heartbeat`'s mtime. The container touches it while idle too, so an idle
//!   container looks alive for as long as it runs; the heartbeat ceiling catches a hung one.
//! - **Active**: the single row of `container_activity` in outbound.db (`id = 1`; this
//!   library's migration 200006). `busy_since` is the claim time of the batch in progress
//!   (JavaScript ISO text), written in the same transaction as the batch's `processing` acks,
//!   and `NULL` while idle: cleared in the transaction that commits the batch's last part, or
//!   that notes its failure, and at start-up. While it is `NULL`, `updated_at` is when the
//!   container became idle (its last batch ended, or it started).
//!
//! Reading it from the host: the table is absent in an older container's file (check
//! `sqlite_master` first, as for `container_state`, and treat absence as "unknown", not
//! "idle"). Like everything in that file it is the container's word: select each text only
//! when `octet_length(..) <= 64`, parse it as a timestamp, and treat a `busy_since` older than
//! [`crate::config::MAX_HANDLER_TIMEOUT_MS`] (2 hours) as a lie or a hang, since this
//! container's own deadline ends every batch before that. A container that claims to be idle
//! while it holds `processing` claims is not idle.
//!
//! ```no_run
//! use sessionbus_runtime::container::{Container, ContainerOptions, Handled, HandlerContext};
//! use sessionbus_store::{Batch, NewOutbound};
//! use std::sync::atomic::AtomicBool;
//!
//! let mut c = Container::start(ContainerOptions::default()).unwrap(); // /workspace paths
//! let stop = AtomicBool::new(false);
//! c.run(&stop, |ctx: &HandlerContext, batch: &Batch| {
//!     let replies = batch.messages.iter()
//!         .map(|m| NewOutbound::reply_to(format!("re-{}", m.id), m, "ok"))
//!         .collect();
//!     Ok(Handled::completed(replies))
//! }).unwrap();
//! ```

use crate::config::{ConfigError, ContainerConfig, CONTAINER_JSON_PATH, MAX_HANDLER_TIMEOUT_MS};
use crate::error::{panic_detail, RuntimeError};
use crate::freshness::{FreshnessWatch, DEFAULT_FROZEN_VIEW_AFTER};
use crate::heartbeat;
use crate::wake::{FolderWatch, Preference, Wake, WakeMode};
use sessionbus_schema::{Clock, Role, SystemClock, Timestamp};
use sessionbus_store::validate::derived_id;
use sessionbus_store::{
    AckStatus, Batch, ContainerSession, MessageIn, MessageKind, NewOutbound, OutboundWriter,
    SessionPaths,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The text of the reply to `/clear`.
pub const SESSION_CLEARED: &str = "Session cleared.";

/// The suffix of the reply id to a `/clear` message (see
/// [`sessionbus_store::validate::derived_id`], which keeps the id valid for any length).
pub const CLEARED_SUFFIX: &str = "-cleared";

/// How often the heartbeat is touched while idle and while a handler runs.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Where the container finds its files and how it runs.
#[derive(Clone)]
pub struct ContainerOptions {
    /// The session folder (`/workspace` in a container).
    pub workspace: PathBuf,
    /// The group's `container.json` (`/workspace/agent/container.json`).
    pub config_path: PathBuf,
    /// When `container.json` is missing, run with the defaults instead of failing. A
    /// malformed file is always an error.
    pub config_optional: bool,
    /// How often to touch the heartbeat while idle or busy.
    pub heartbeat_interval: Duration,
    /// The clock: every time the container writes comes from it (acks, replies, session
    /// state) and so does the heartbeat's mtime, which the host compares with the claim times.
    pub clock: Arc<dyn Clock>,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            workspace: PathBuf::from(sessionbus_store::WORKSPACE),
            config_path: PathBuf::from(CONTAINER_JSON_PATH),
            config_optional: false,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            clock: Arc::new(SystemClock),
        }
    }
}

impl ContainerOptions {
    /// Options for a session folder at `dir` with its config at `dir/agent/container.json`.
    pub fn in_folder(dir: impl Into<PathBuf>) -> Self {
        let workspace = dir.into();
        ContainerOptions {
            config_path: workspace.join("agent").join("container.json"),
            workspace,
            ..ContainerOptions::default()
        }
    }
}

/// What a handler did with a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The ack for every message of the batch: `completed` or `failed`.
    pub status: AckStatus,
    /// Replies, committed in the same transaction as the acks.
    pub replies: Vec<NewOutbound>,
}

impl Handled {
    /// The batch is done; these are the replies.
    pub fn completed(replies: Vec<NewOutbound>) -> Self {
        Handled {
            status: AckStatus::Completed,
            replies,
        }
    }

    /// The batch failed for good (the host marks its messages failed).
    pub fn failed() -> Self {
        Handled {
            status: AckStatus::Failed,
            replies: Vec::new(),
        }
    }
}

/// What a handler can use while it works.
pub struct HandlerContext<'a> {
    session: &'a ContainerSession,
    config: &'a ContainerConfig,
    deadline: &'a BatchDeadline,
}

impl HandlerContext<'_> {
    /// The container's session (its outbound writer, its view of inbound.db).
    pub fn session(&self) -> &ContainerSession {
        self.session
    }

    /// The outbound writer (session state, tool in flight).
    pub fn outbound(&self) -> &OutboundWriter {
        self.session.outbound()
    }

    /// The configuration.
    pub fn config(&self) -> &ContainerConfig {
        self.config
    }

    /// This provider's continuation.
    pub fn continuation(&self) -> Result<Option<String>, RuntimeError> {
        Ok(self
            .session
            .outbound()
            .continuation(&self.config.provider_key())?)
    }

    /// Stores this provider's continuation.
    pub fn set_continuation(&self, value: &str) -> Result<(), RuntimeError> {
        Ok(self
            .session
            .outbound()
            .set_continuation(&self.config.provider_key(), value)?)
    }

    /// How long until the batch's deadline (zero once it has passed). A handler that can
    /// cut its work short should do so before this runs out.
    pub fn time_left(&self) -> Duration {
        self.deadline.at().saturating_duration_since(Instant::now())
    }

    /// Runs `f` as tool `name` in flight (with its declared timeout, if any), clearing the
    /// record afterwards whatever `f` returns. With a positive declared timeout, the time `f`
    /// takes (up to that timeout) does not count against the batch's `handlerTimeoutMs`: the
    /// deadline is widened by the declared timeout while `f` runs, and by the time `f` took
    /// once it has returned (never past 2 hours after the batch was claimed).
    pub fn with_tool<T>(
        &self,
        name: &str,
        declared_timeout_ms: Option<i64>,
        f: impl FnOnce() -> T,
    ) -> Result<T, RuntimeError> {
        self.outbound()
            .set_tool_in_flight(name, declared_timeout_ms)?;
        let widened = self.deadline.widen(declared_timeout_ms);
        let out = f();
        drop(widened);
        self.outbound().clear_tool_in_flight()?;
        Ok(out)
    }
}

/// The deadline of the batch being handled, shared by the handler's thread (which widens it
/// while a tool runs) and the heartbeat helper (which checks it).
///
/// Time spent inside a tool with a declared timeout, up to that timeout, does not count
/// against the handler's own budget: while the tool runs the deadline is widened by the whole
/// declared timeout; once it returns, by the time it actually took. The total never exceeds
/// [`MAX_HANDLER_TIMEOUT_MS`] after the claim.
struct BatchDeadline {
    /// When the batch was claimed.
    claimed: Instant,
    /// `handlerTimeoutMs`.
    timeout: Duration,
    tools: Mutex<ToolTime>,
}

/// What tools have added to a batch's deadline.
#[derive(Default)]
struct ToolTime {
    /// Time spent in tools that have returned (each up to its declared timeout).
    credited: Duration,
    /// The outermost tool in flight with a declared timeout: its start and that timeout.
    in_flight: Option<(Instant, Duration)>,
}

impl BatchDeadline {
    fn new(claimed: Instant, timeout: Duration) -> Self {
        BatchDeadline {
            claimed,
            timeout,
            tools: Mutex::new(ToolTime::default()),
        }
    }

    fn tools(&self) -> std::sync::MutexGuard<'_, ToolTime> {
        // Only this module holds the lock, never across a call out: a poisoned lock still
        // holds consistent values.
        self.tools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline now: claim + handler timeout + tool time, capped at
    /// [`MAX_HANDLER_TIMEOUT_MS`] after the claim.
    fn at(&self) -> Instant {
        let cap = Duration::from_millis(MAX_HANDLER_TIMEOUT_MS);
        let tools = self.tools();
        let widening = tools
            .credited
            .saturating_add(tools.in_flight.map_or(Duration::ZERO, |(_, d)| d));
        let total = self.timeout.saturating_add(widening).min(cap);
        // At most 2 hours after an `Instant` taken now: always representable. Were it not,
        // the deadline would be the claim itself (the batch fails and the host retries it,
        // rather than the handler running unbounded).
        self.claimed.checked_add(total).unwrap_or(self.claimed)
    }

    /// The deadline's distance from the claim, in milliseconds (for the error).
    fn millis(&self) -> u64 {
        u64::try_from(
            self.at()
                .saturating_duration_since(self.claimed)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
    }

    /// Widens the deadline by a positive `declared_timeout_ms` (capped at 2 hours) until the
    /// returned guard is dropped (a panic inside the tool drops it too), which credits the
    /// time the tool took, up to that timeout. A tool called inside another one adds nothing:
    /// the outer tool's window already covers it.
    fn widen(&self, declared_timeout_ms: Option<i64>) -> ToolWindow<'_> {
        let mut tools = self.tools();
        let declared = declared_timeout_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(ms.min(MAX_HANDLER_TIMEOUT_MS)));
        let active = match declared {
            Some(d) if tools.in_flight.is_none() => {
                tools.in_flight = Some((Instant::now(), d));
                true
            }
            _ => false,
        };
        ToolWindow {
            deadline: self,
            active,
        }
    }
}

/// Ends a tool's window when dropped (see [`BatchDeadline::widen`]).
struct ToolWindow<'a> {
    deadline: &'a BatchDeadline,
    active: bool,
}

impl Drop for ToolWindow<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let mut tools = self.deadline.tools();
        if let Some((start, declared)) = tools.in_flight.take() {
            tools.credited = tools.credited.saturating_add(start.elapsed().min(declared));
        }
    }
}

/// Sets its flag when dropped: the heartbeat helper stops however the handler's call ends.
/// Sets the flag on drop and wakes the thread waiting on it, so the batch's commit never waits
/// out the heartbeat helper's sleep.
struct SetOnDrop<'a>(&'a AtomicBool, std::thread::Thread);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        self.1.unpark();
    }
}

/// How a handler's call went wrong.
enum HandlerFailure {
    Panicked(String),
    Failed(RuntimeError),
    TimedOut { deadline_ms: u64 },
}

impl HandlerFailure {
    /// The reason recorded in `failure_notes`.
    fn reason(&self) -> String {
        match self {
            HandlerFailure::Panicked(detail) => format!("handler panicked: {detail}"),
            HandlerFailure::Failed(e) => format!("handler returned an error: {e}"),
            HandlerFailure::TimedOut { deadline_ms } => {
                format!("handler ran past its deadline of {deadline_ms} ms")
            }
        }
    }

    fn into_error(self, session: PathBuf, message_ids: Vec<String>) -> RuntimeError {
        match self {
            HandlerFailure::Panicked(detail) => RuntimeError::HandlerPanicked {
                session,
                message_ids,
                detail,
            },
            HandlerFailure::Failed(e) => RuntimeError::HandlerFailed {
                session,
                message_ids,
                source: Box::new(e),
            },
            HandlerFailure::TimedOut { deadline_ms } => RuntimeError::HandlerTimedOut {
                session,
                message_ids,
                deadline_ms,
            },
        }
    }
}

/// Counts of what a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Polls made.
    pub polls: u64,
    /// Batches handed to the handler.
    pub batches: u64,
    /// Messages acked completed.
    pub completed: u64,
    /// Messages acked failed.
    pub failed: u64,
    /// `/clear` commands handled.
    pub clears: u64,
    /// Retryable errors ridden out (locks, hot journals).
    pub retried_errors: u64,
}

/// A started container: configuration loaded, outbound.db current, stale claims cleared.
pub struct Container {
    session: ContainerSession,
    config: ContainerConfig,
    paths: SessionPaths,
    heartbeat_interval: Duration,
    first_poll: bool,
    stale_claims_cleared: usize,
    freshness: FreshnessWatch,
    batch_in_progress: bool,
    /// Wakes the idle wait when the host commits to inbound.db (see [`crate::wake`]).
    wake: FolderWatch,
}

impl Container {
    /// Start-up, in order: load `container.json` (a malformed file or wrong type is an error
    /// naming the file and field, never silently the defaults), open the session (failing
    /// clearly when outbound.db is not writable), migrate outbound.db, clear stale
    /// `processing` acks and the dead predecessor's tool state, adopt a legacy continuation,
    /// check that inbound.db is readable and recent enough, and touch the heartbeat.
    pub fn start(opts: ContainerOptions) -> Result<Container, RuntimeError> {
        let config = match ContainerConfig::load(&opts.config_path) {
            Ok(c) => c,
            Err(ConfigError::NotFound { .. }) if opts.config_optional => ContainerConfig::default(),
            Err(e) => return Err(e.into()),
        };
        let session = ContainerSession::with_clock(&opts.workspace, opts.clock.clone())?;
        let stale = session.start()?;
        session
            .outbound()
            .adopt_legacy_continuation(&config.provider_key())?;
        // Fails now, with the operator's fix in the message, if inbound.db is not migrated.
        session.inbound().max_seq()?;
        let paths = session.paths().clone();
        heartbeat::touch_at(&paths.heartbeat, opts.clock.now())?;
        let wake = FolderWatch::new(Role::Container, &paths.inbound, Preference::from_env());
        tracing::info!("{}: waking on {}", paths.inbound.display(), wake.mode());
        Ok(Container {
            wake,
            session,
            config,
            freshness: FreshnessWatch::new(paths.clone(), Some(DEFAULT_FROZEN_VIEW_AFTER)),
            paths,
            heartbeat_interval: opts.heartbeat_interval,
            first_poll: true,
            stale_claims_cleared: stale,
            batch_in_progress: false,
        })
    }

    /// How the idle wait learns of the host's commits: inotify, or polling and why.
    pub fn wake_mode(&self) -> &WakeMode {
        self.wake.mode()
    }

    /// Chooses again how the idle wait learns of the host's commits
    /// ([`Preference::Poll`]: sleep the whole poll interval, as without notification).
    pub fn set_wake_preference(&mut self, preference: Preference) {
        self.wake = FolderWatch::new(Role::Container, &self.paths.inbound, preference);
    }

    /// The configuration in use.
    pub fn config(&self) -> &ContainerConfig {
        &self.config
    }

    /// The session.
    pub fn session(&self) -> &ContainerSession {
        &self.session
    }

    /// How many `processing` acks start-up found and cleared.
    pub fn stale_claims_cleared(&self) -> usize {
        self.stale_claims_cleared
    }

    /// True when a batch was claimed and not all of it committed: the last
    /// [`Container::step`] failed part-way (a handler failure, or a commit that kept failing).
    /// Its `processing` claims are left for the host; polling again cannot pick them up
    /// (claimed messages are skipped), so the process should end.
    pub fn batch_in_progress(&self) -> bool {
        self.batch_in_progress
    }

    /// How long inbound.db as this container reads it may stay behind a commit the host
    /// stamped before [`Container::step`] fails with [`RuntimeError::FrozenView`] (default
    /// [`DEFAULT_FROZEN_VIEW_AFTER`]; `None` turns the check off). See [`crate::freshness`].
    pub fn set_frozen_view_after(&mut self, after: Option<Duration>) {
        self.freshness.set_after(after);
    }

    /// One poll-and-handle step. Returns `Ok(true)` when a batch was handled (poll again
    /// soon), `Ok(false)` when there was nothing to wake the agent for. Fails with
    /// [`RuntimeError::FrozenView`] (not retryable) when inbound.db as this container reads it
    /// has stayed behind the host's stamped commits for too long (see
    /// [`Container::set_frozen_view_after`]).
    ///
    /// When the handler panics, returns `Err` or runs past the batch's deadline, the step
    /// fails with [`RuntimeError::HandlerPanicked`], [`RuntimeError::HandlerFailed`] or
    /// [`RuntimeError::HandlerTimedOut`], leaving the batch's claims and a failure note per
    /// message (see the module documentation); [`Container::batch_in_progress`] is then true.
    pub fn step<F>(
        &mut self,
        handler: &mut F,
        summary: &mut RunSummary,
    ) -> Result<bool, RuntimeError>
    where
        F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError>,
    {
        // A frozen view of inbound.db would make every poll below succeed with old rows.
        if let Some(frozen) = self.freshness.check(Instant::now()) {
            return Err(RuntimeError::FrozenView(frozen));
        }
        summary.polls += 1;
        let limit = usize::try_from(self.config.max_messages_per_prompt.get()).unwrap_or(10);
        let batch = if self.first_poll {
            self.session.poll_after_start(limit)?
        } else {
            self.session.poll(limit)?
        };
        self.first_poll = false;
        if batch.is_empty() || !batch.wakes() {
            return Ok(false);
        }
        let ids = batch.ids();
        let claimed_at = self.session.outbound().claim_batch(&ids)?;
        // From here until the last part commits, the claims are this batch's to settle.
        self.batch_in_progress = true;
        let deadline = BatchDeadline::new(Instant::now(), self.config.handler_timeout());
        let segments = split_at_clears(batch);
        let parts = segments.len();
        for (i, segment) in segments.into_iter().enumerate() {
            let last = i + 1 == parts;
            match segment {
                Segment::Clear(msg) => {
                    self.clear(&msg, last)?;
                    summary.clears += 1;
                    summary.completed += 1;
                }
                Segment::Messages(messages) => {
                    let sub = Batch { messages };
                    let sub_ids = sub.ids();
                    let handled =
                        match self.handle_with_heartbeat(handler, &sub, &deadline, claimed_at) {
                            Ok(h) => h,
                            Err(failure) => return Err(self.fail_batch(failure, sub_ids)),
                        };
                    let out = self.session.outbound();
                    retry_commit(|| {
                        if last {
                            out.commit_and_finish(&sub_ids, &handled.status, &handled.replies)
                        } else {
                            out.commit(&sub_ids, &handled.status, &handled.replies)
                        }
                    })?;
                    summary.batches += 1;
                    let n = sub_ids.len() as u64;
                    if handled.status == AckStatus::Failed {
                        summary.failed += n;
                    } else {
                        summary.completed += n;
                    }
                }
            }
        }
        self.batch_in_progress = false;
        Ok(true)
    }

    /// After a handler failure: notes why for each message (claims left as they are, the busy
    /// mark cleared) and returns the typed error. A note that cannot be written is logged, not
    /// returned: the handler's failure is what the run must end with.
    fn fail_batch(&self, failure: HandlerFailure, message_ids: Vec<String>) -> RuntimeError {
        let reason = failure.reason();
        tracing::error!(
            "session {}: {reason}; leaving the claims of {} message(s) for the host",
            self.paths.dir.display(),
            message_ids.len()
        );
        if let Err(e) = self.session.outbound().note_failure(&message_ids, &reason) {
            tracing::warn!("cannot record the handler's failure: {e}");
        }
        failure.into_error(self.paths.dir.clone(), message_ids)
    }

    /// Polls until `stop` is set: the active interval after a batch, the idle interval when
    /// there was nothing, touching the heartbeat all along. Retryable errors (a lock, a hot
    /// journal awaiting the host) are ridden out while no batch is in progress; others end the
    /// run, and so does any error that leaves a batch's claims held (a handler failure, a
    /// commit that kept failing): the claims stay for the host to settle. Only a clean stop
    /// clears leftover `processing` acks on the way out.
    pub fn run<F>(&mut self, stop: &AtomicBool, mut handler: F) -> Result<RunSummary, RuntimeError>
    where
        F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError>,
    {
        let mut summary = RunSummary::default();
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            self.touch_heartbeat()?;
            let pause = match self.step(&mut handler, &mut summary) {
                Ok(true) => self.config.poll_interval_active(),
                Ok(false) => self.config.poll_interval_idle(),
                // Claimed messages are skipped by every later poll: only the host can settle
                // them now, once this process has ended.
                Err(e) if self.batch_in_progress => return Err(e),
                Err(e @ RuntimeError::FrozenView(_)) => return Err(e),
                Err(e) if e.is_retryable() => {
                    summary.retried_errors += 1;
                    tracing::warn!("retrying after: {e}");
                    self.config.poll_interval_idle()
                }
                // A file error on inbound.db while this view of it is behind the host's stamp:
                // stale cached pages mixed with fresh ones can look malformed. Retry; the
                // frozen-view check reports it if the view never catches up.
                Err(e) if self.lagging_view_symptom(&e) => {
                    summary.retried_errors += 1;
                    tracing::warn!("retrying while the view of inbound.db lags the host: {e}");
                    self.config.poll_interval_idle()
                }
                Err(e) => return Err(e),
            };
            self.sleep(pause, stop)?;
        }
        // A clean stop between batches: no claim of ours is held, so any `processing` ack
        // left is stale.
        self.session.outbound().clear_stale_claims()?;
        Ok(summary)
    }

    /// True when `e` is a file error on inbound.db and this container's view of the file is
    /// behind the host's stamp right now.
    fn lagging_view_symptom(&self, e: &RuntimeError) -> bool {
        let on_inbound = matches!(e, RuntimeError::Store(se)
            if se.as_db().is_some_and(|d| d.at().path == self.paths.inbound));
        on_inbound && self.freshness.behind_now().is_some()
    }

    /// Waits up to `d`, ending early when the host commits to inbound.db (see
    /// [`crate::wake`]) or on `stop`, and touching the heartbeat every interval.
    fn sleep(&mut self, d: Duration, stop: &AtomicBool) -> Result<(), RuntimeError> {
        let end = Instant::now() + d;
        let mut last_touch = Instant::now();
        while Instant::now() < end && !stop.load(Ordering::SeqCst) {
            let slice = (end - Instant::now()).min(Duration::from_millis(50));
            if self.wake.wait(slice) == Wake::Changed {
                break;
            }
            if last_touch.elapsed() >= self.heartbeat_interval {
                self.touch_heartbeat()?;
                last_touch = Instant::now();
            }
        }
        Ok(())
    }

    /// Touches the heartbeat at the clock's now (the host compares its mtime with claim times
    /// stamped by the same clock).
    fn touch_heartbeat(&self) -> Result<(), RuntimeError> {
        heartbeat::touch_at(&self.paths.heartbeat, self.session.clock().now())?;
        Ok(())
    }

    /// Runs the handler while a helper thread keeps the heartbeat fresh, so a slow answer is
    /// not mistaken for a hung container. The helper stops however the call ends (a guard
    /// sets its flag on drop, and a panic is caught here), and stops vouching at the batch's
    /// deadline: it sets the heartbeat back to the claim time and touches it no more.
    fn handle_with_heartbeat<F>(
        &self,
        handler: &mut F,
        batch: &Batch,
        deadline: &BatchDeadline,
        claimed_at: Timestamp,
    ) -> Result<Handled, HandlerFailure>
    where
        F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError>,
    {
        let done = AtomicBool::new(false);
        let expired = AtomicBool::new(false);
        let path = &self.paths.heartbeat;
        let interval = self.heartbeat_interval;
        let clock = self.session.clock();
        let ctx = HandlerContext {
            session: &self.session,
            config: &self.config,
            deadline,
        };
        let outcome = std::thread::scope(|scope| {
            let helper = scope.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    // Woken early by the guard below when the handler returns.
                    std::thread::park_timeout(Duration::from_millis(20).min(interval));
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    if Instant::now() >= deadline.at() {
                        expired.store(true, Ordering::SeqCst);
                        // No heartbeat after the claim: the host's claim rule kills at its next
                        // sweep, instead of the ceiling half an hour later.
                        if let Err(e) = heartbeat::touch_at(path, claimed_at) {
                            tracing::warn!("heartbeat: {e}");
                        }
                        tracing::error!(
                            "the handler ran past its deadline of {} ms; no more heartbeats",
                            deadline.millis()
                        );
                        break;
                    }
                    if last.elapsed() >= interval {
                        if let Err(e) = heartbeat::touch_at(path, clock.now()) {
                            tracing::warn!("heartbeat: {e}");
                        }
                        last = Instant::now();
                    }
                }
            });
            let _stop_helper = SetOnDrop(&done, helper.thread().clone());
            catch_unwind(AssertUnwindSafe(|| handler(&ctx, batch)))
        });
        if expired.load(Ordering::SeqCst) {
            return Err(HandlerFailure::TimedOut {
                deadline_ms: deadline.millis(),
            });
        }
        match outcome {
            Ok(Ok(handled)) => Ok(handled),
            Ok(Err(e)) => Err(HandlerFailure::Failed(e)),
            Err(payload) => Err(HandlerFailure::Panicked(panic_detail(payload.as_ref()))),
        }
    }

    /// `/clear`: forget this provider's continuation and answer `Session cleared.`, the reply
    /// and the completed ack in one transaction (which also ends the batch when `last`). The
    /// reply's id is derived from the message's, valid whatever its length.
    fn clear(&self, msg: &MessageIn, last: bool) -> Result<(), RuntimeError> {
        let out = self.session.outbound();
        out.state_delete(&self.config.continuation_key())?;
        let reply =
            NewOutbound::reply_to(derived_id(&msg.id, CLEARED_SUFFIX), msg, SESSION_CLEARED);
        let acked = std::slice::from_ref(&msg.id);
        let replies = std::slice::from_ref(&reply);
        retry_commit(|| {
            if last {
                out.commit_and_finish(acked, &AckStatus::Completed, replies)
            } else {
                out.commit(acked, &AckStatus::Completed, replies)
            }
        })?;
        Ok(())
    }
}

/// How long a batch's final commit is retried on retryable errors before the step fails.
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(5);

/// Runs a batch's final commit (acks and replies, one transaction), retrying retryable errors
/// for up to [`COMMIT_RETRY_FOR`]. The commit reads inbound.db for the next seq, and across a
/// mount the host's commit in progress shows there as a hot journal for a while (the host's
/// locks do not cross it); giving up would leave the batch's `processing` claims behind with
/// nothing left to complete them, and the handler's work lost. A failed attempt rolled back
/// entirely, so trying again is safe.
fn retry_commit<T>(
    mut commit: impl FnMut() -> Result<T, sessionbus_store::StoreError>,
) -> Result<T, RuntimeError> {
    let start = Instant::now();
    loop {
        match commit() {
            Err(e) if e.is_retryable() && start.elapsed() < COMMIT_RETRY_FOR => {
                tracing::warn!("retrying the batch's commit after: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// True when `msg` is a chat message whose text is the `/clear` command.
pub fn is_clear(msg: &MessageIn) -> bool {
    matches!(msg.kind, MessageKind::Chat | MessageKind::ChatSdk)
        && msg
            .content_json()
            .get("text")
            .and_then(|t| t.as_str())
            .and_then(crate::gate::command_of)
            .as_deref()
            == Some("/clear")
}

enum Segment {
    Messages(Vec<MessageIn>),
    Clear(Box<MessageIn>),
}

/// Splits a batch around `/clear` commands, keeping order: what came before a clear is
/// handled in the old conversation, what came after in the new one.
fn split_at_clears(batch: Batch) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for m in batch.messages {
        if is_clear(&m) {
            if !current.is_empty() {
                out.push(Segment::Messages(std::mem::take(&mut current)));
            }
            out.push(Segment::Clear(Box::new(m)));
        } else {
            current.push(m);
        }
    }
    if !current.is_empty() {
        out.push(Segment::Messages(current));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn tool_time_up_to_its_declared_timeout_does_not_count() {
        let claimed = Instant::now();
        let d = BatchDeadline::new(claimed, ms(200));
        assert_eq!(d.at(), claimed + ms(200));
        {
            let _tool = d.widen(Some(10_000));
            assert_eq!(
                d.at(),
                claimed + ms(10_200),
                "the whole window while it runs"
            );
            // A tool inside the tool adds nothing.
            let _inner = d.widen(Some(50_000));
            assert_eq!(d.at(), claimed + ms(10_200));
            std::thread::sleep(ms(30));
        }
        // Afterwards: the time it took, not its window.
        let after = d.at().saturating_duration_since(claimed);
        assert!(after >= ms(230) && after < ms(10_200), "{after:?}");
        // No declared timeout, or a useless one: no widening.
        for declared in [None, Some(0), Some(-5)] {
            let before = d.at();
            let _t = d.widen(declared);
            assert_eq!(d.at(), before, "{declared:?}");
        }
        assert_eq!(
            d.millis(),
            u64::try_from(after.as_millis()).unwrap(),
            "millis reads the same deadline"
        );
    }

    #[test]
    fn no_batch_gets_more_than_two_hours() {
        let claimed = Instant::now();
        let cap = ms(MAX_HANDLER_TIMEOUT_MS);
        let d = BatchDeadline::new(claimed, ms(MAX_HANDLER_TIMEOUT_MS - 1000));
        let _t = d.widen(Some(i64::MAX));
        assert_eq!(d.at(), claimed + cap);
        let d = BatchDeadline::new(claimed, Duration::MAX);
        assert_eq!(d.at(), claimed + cap);
    }

    #[test]
    fn a_panic_inside_a_tool_still_ends_its_window() {
        let claimed = Instant::now();
        let d = BatchDeadline::new(claimed, ms(100));
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _t = d.widen(Some(60_000));
            panic!("tool blew up");
        }));
        assert!(r.is_err());
        assert!(d.at() < claimed + ms(60_000));
        assert!(d.tools().in_flight.is_none());
    }

    #[test]
    fn panic_messages_are_read_from_either_payload_type() {
        let p = catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_detail(p.as_ref()), "static");
        let p = catch_unwind(|| panic!("{}", String::from("formatted"))).unwrap_err();
        assert_eq!(panic_detail(p.as_ref()), "formatted");
        let p = catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
        assert!(panic_detail(p.as_ref()).contains("not text"));
    }
}
