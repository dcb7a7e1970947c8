//! The container's side: start-up and a poll loop a container binary can use as it is.
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

use crate::config::{ConfigError, ContainerConfig, CONTAINER_JSON_PATH};
use crate::error::RuntimeError;
use crate::freshness::{FreshnessWatch, DEFAULT_FROZEN_VIEW_AFTER};
use crate::heartbeat;
use sessionbus_schema::{Clock, SystemClock};
use sessionbus_store::{
    AckStatus, Batch, ContainerSession, MessageIn, MessageKind, NewOutbound, OutboundWriter,
    SessionPaths,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The text of the reply to `/clear`.
pub const SESSION_CLEARED: &str = "Session cleared.";

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

    /// Runs `f` as tool `name` in flight (with its declared timeout, if any), clearing the
    /// record afterwards whatever `f` returns.
    pub fn with_tool<T>(
        &self,
        name: &str,
        declared_timeout_ms: Option<i64>,
        f: impl FnOnce() -> T,
    ) -> Result<T, RuntimeError> {
        self.outbound()
            .set_tool_in_flight(name, declared_timeout_ms)?;
        let out = f();
        self.outbound().clear_tool_in_flight()?;
        Ok(out)
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
        Ok(Container {
            session,
            config,
            freshness: FreshnessWatch::new(paths.clone(), Some(DEFAULT_FROZEN_VIEW_AFTER)),
            paths,
            heartbeat_interval: opts.heartbeat_interval,
            first_poll: true,
            stale_claims_cleared: stale,
        })
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
        let batch = self.session.poll(self.first_poll, limit)?;
        self.first_poll = false;
        if batch.is_empty() || !batch.wakes() {
            return Ok(false);
        }
        let ids = batch.ids();
        self.session.outbound().ack(&ids, &AckStatus::Processing)?;
        for segment in split_at_clears(batch) {
            match segment {
                Segment::Clear(msg) => {
                    self.clear(&msg)?;
                    summary.clears += 1;
                    summary.completed += 1;
                }
                Segment::Messages(messages) => {
                    let sub = Batch { messages };
                    let sub_ids = sub.ids();
                    let handled = self.handle_with_heartbeat(handler, &sub)?;
                    retry_commit(|| {
                        self.session
                            .outbound()
                            .commit(&sub_ids, &handled.status, &handled.replies)
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
        Ok(true)
    }

    /// Polls until `stop` is set: the active interval after a batch, the idle interval when
    /// there was nothing, touching the heartbeat all along. Retryable errors (a lock, a hot
    /// journal awaiting the host) are ridden out; others end the run. On the way out no
    /// `processing` ack is left behind.
    pub fn run<F>(&mut self, stop: &AtomicBool, mut handler: F) -> Result<RunSummary, RuntimeError>
    where
        F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError>,
    {
        let mut summary = RunSummary::default();
        let result = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            self.touch_heartbeat()?;
            let pause = match self.step(&mut handler, &mut summary) {
                Ok(true) => self.config.poll_interval_active(),
                Ok(false) => self.config.poll_interval_idle(),
                Err(e @ RuntimeError::FrozenView(_)) => break Err(e),
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
                Err(e) => break Err(e),
            };
            self.sleep(pause, stop)?;
        };
        let cleanup = self.session.outbound().clear_stale_claims();
        result?;
        cleanup?;
        Ok(summary)
    }

    /// True when `e` is a file error on inbound.db and this container's view of the file is
    /// behind the host's stamp right now.
    fn lagging_view_symptom(&self, e: &RuntimeError) -> bool {
        let on_inbound = matches!(e, RuntimeError::Store(se)
            if se.as_db().is_some_and(|d| d.at().path == self.paths.inbound));
        on_inbound && self.freshness.behind_now().is_some()
    }

    /// Sleeps up to `d`, waking early on `stop` and touching the heartbeat every interval.
    fn sleep(&self, d: Duration, stop: &AtomicBool) -> Result<(), RuntimeError> {
        let end = Instant::now() + d;
        let mut last_touch = Instant::now();
        while Instant::now() < end && !stop.load(Ordering::SeqCst) {
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
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
    /// not mistaken for a hung container.
    fn handle_with_heartbeat<F>(
        &self,
        handler: &mut F,
        batch: &Batch,
    ) -> Result<Handled, RuntimeError>
    where
        F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError>,
    {
        let done = AtomicBool::new(false);
        let path = &self.paths.heartbeat;
        let interval = self.heartbeat_interval;
        let clock = self.session.clock();
        let ctx = HandlerContext {
            session: &self.session,
            config: &self.config,
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20).min(interval));
                    if last.elapsed() >= interval {
                        if let Err(e) = heartbeat::touch_at(path, clock.now()) {
                            tracing::warn!("heartbeat: {e}");
                        }
                        last = Instant::now();
                    }
                }
            });
            let out = handler(&ctx, batch);
            done.store(true, Ordering::SeqCst);
            out
        })
    }

    /// `/clear`: forget this provider's continuation and answer `Session cleared.`, the reply
    /// and the completed ack in one transaction.
    fn clear(&self, msg: &MessageIn) -> Result<(), RuntimeError> {
        let out = self.session.outbound();
        out.state_delete(&self.config.continuation_key())?;
        let reply = NewOutbound::reply_to(format!("{}-cleared", msg.id), msg, SESSION_CLEARED);
        retry_commit(|| {
            out.commit(
                std::slice::from_ref(&msg.id),
                &AckStatus::Completed,
                std::slice::from_ref(&reply),
            )
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
