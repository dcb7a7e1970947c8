//! The async counterparts of [`ContainerControl`] and [`Deliverer`], and adapters from the
//! sync ones.

use crate::control::CallerError;
use crate::host::{ContainerControl, Deliverer};
use crate::liveness::KillReason;
use sessionbus_store::{DueOutbound, SessionPaths};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::runtime::Handle;

/// The caller's control over its sessions' containers, from async code: the async form of
/// [`ContainerControl`]. The host calls it for many sessions at once, so it takes `&self`
/// (state goes behind the implementation's own lock). [`SyncControl`] adapts any
/// [`ContainerControl`] (the shipped [`ChildControl`](crate::control::ChildControl),
/// [`SandboxControl`](crate::control::SandboxControl),
/// [`DockerControl`](crate::control::DockerControl)).
///
/// Implementations may write `async fn` for each method; the futures must be `Send`. The
/// trait is generic, not object-safe: a host that picks its control at run time wraps a
/// `Box<dyn ContainerControl + Send>` in [`SyncControl`], or an enum of its own.
pub trait AsyncContainerControl: Send + Sync + 'static {
    /// Whether a container runs for the session now.
    fn is_running(&self, session: &SessionPaths) -> impl Future<Output = bool> + Send;
    /// Stops the session's container (and completes once it is gone).
    fn kill(
        &self,
        session: &SessionPaths,
        reason: &KillReason,
    ) -> impl Future<Output = Result<(), CallerError>> + Send;
    /// Starts a container for the session.
    fn start(&self, session: &SessionPaths)
        -> impl Future<Output = Result<(), CallerError>> + Send;
}

/// The caller's link to the chat platform, from async code: the async form of [`Deliverer`].
/// Called for many sessions at once (`&self`), and told which session a row comes from.
///
/// The host drops a hand-off that runs past
/// [`HostOptions::delivery_timeout`](super::HostOptions::delivery_timeout) (the attempt then
/// counts as failed and the row is tried again later), so a hand-off should be
/// cancellation-safe: dropped before it completes, it may or may not have reached the
/// platform, and the next attempt (with a higher `attempt`) must be safe to repeat.
pub trait AsyncDeliverer: Send + Sync + 'static {
    /// Hands a row of `session` to the platform; returns the platform's id for it, if it gave
    /// one. `attempt` is 1 for the first try; above 1 the row may already have been handed
    /// over once, so pass its id as an idempotency key where the platform has one.
    fn deliver(
        &self,
        session: &SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> impl Future<Output = Result<Option<String>, CallerError>> + Send;
}

impl<T: AsyncContainerControl> AsyncContainerControl for Arc<T> {
    fn is_running(&self, session: &SessionPaths) -> impl Future<Output = bool> + Send {
        (**self).is_running(session)
    }

    fn kill(
        &self,
        session: &SessionPaths,
        reason: &KillReason,
    ) -> impl Future<Output = Result<(), CallerError>> + Send {
        (**self).kill(session, reason)
    }

    fn start(
        &self,
        session: &SessionPaths,
    ) -> impl Future<Output = Result<(), CallerError>> + Send {
        (**self).start(session)
    }
}

impl<T: AsyncDeliverer> AsyncDeliverer for Arc<T> {
    fn deliver(
        &self,
        session: &SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> impl Future<Output = Result<Option<String>, CallerError>> + Send {
        (**self).deliver(session, row, attempt)
    }
}

/// Locks `m`, taking over a lock poisoned by a panic in another session's call: the adapters'
/// values hold no invariant across calls that a panic could have broken halfway.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` on a blocking thread; a panic there is resumed in the caller (the host isolates
/// it per session), a cancelled task (the runtime shutting down) is `None`.
async fn on_blocking_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(out) => Some(out),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

/// A sync [`ContainerControl`] as an [`AsyncContainerControl`]: each call runs on a blocking
/// thread (`spawn_blocking`), under one lock. Calls for different sessions therefore take
/// turns; the shipped controls answer `is_running` at once and `kill` within the time a
/// process takes to die, but a `start` that blocks (a `docker run` pulling an image) holds up
/// the other sessions' control calls, not their database work or deliveries. The host bounds
/// each call it waits for with [`HostOptions::control_timeout`](super::HostOptions).
///
/// A panic inside the control is resumed in the caller (the host reports it for that session
/// and carries on).
#[derive(Debug)]
pub struct SyncControl<C> {
    inner: Arc<Mutex<C>>,
}

impl<C> Clone for SyncControl<C> {
    fn clone(&self) -> Self {
        SyncControl {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: ContainerControl + Send + 'static> SyncControl<C> {
    /// Wraps `control`.
    pub fn new(control: C) -> Self {
        SyncControl {
            inner: Arc::new(Mutex::new(control)),
        }
    }

    /// Runs `f` with the control (its counters, a pid, a stop with a grace period). Blocks
    /// while a call for a session holds it: from async code, call it inside `spawn_blocking`
    /// or keep it to quick reads.
    pub fn with<R>(&self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut lock(&self.inner))
    }
}

impl<C: ContainerControl + Send + 'static> AsyncContainerControl for SyncControl<C> {
    async fn is_running(&self, session: &SessionPaths) -> bool {
        let inner = Arc::clone(&self.inner);
        let session = session.clone();
        // Cancelled only while the runtime shuts down: "running" is the answer that neither
        // settles claims nor starts a second container.
        on_blocking_thread(move || lock(&inner).is_running(&session))
            .await
            .unwrap_or(true)
    }

    async fn kill(&self, session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        let inner = Arc::clone(&self.inner);
        let (session, reason) = (session.clone(), reason.clone());
        on_blocking_thread(move || lock(&inner).kill(&session, &reason))
            .await
            .unwrap_or_else(|| Err("the runtime is shutting down".into()))
    }

    async fn start(&self, session: &SessionPaths) -> Result<(), CallerError> {
        let inner = Arc::clone(&self.inner);
        let session = session.clone();
        on_blocking_thread(move || lock(&inner).start(&session))
            .await
            .unwrap_or_else(|| Err("the runtime is shutting down".into()))
    }
}

/// A sync [`Deliverer`] as an [`AsyncDeliverer`]: each hand-off runs on a blocking thread,
/// under one lock, so hand-offs of different sessions take turns. A hand-off that hangs there
/// holds up the others: the host's
/// [`HostOptions::delivery_timeout`](super::HostOptions::delivery_timeout) stops waiting for
/// it (the attempt counts as failed), but cannot stop the thread. A deliverer that can hang
/// belongs in an [`AsyncDeliverer`] of its own, or one [`SyncDeliverer`] per platform link.
#[derive(Debug)]
pub struct SyncDeliverer<D> {
    inner: Arc<Mutex<D>>,
}

impl<D> Clone for SyncDeliverer<D> {
    fn clone(&self) -> Self {
        SyncDeliverer {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: Deliverer + Send + 'static> SyncDeliverer<D> {
    /// Wraps `deliverer`.
    pub fn new(deliverer: D) -> Self {
        SyncDeliverer {
            inner: Arc::new(Mutex::new(deliverer)),
        }
    }

    /// Runs `f` with the deliverer (blocks while a hand-off holds it).
    pub fn with<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut lock(&self.inner))
    }
}

impl<D: Deliverer + Send + 'static> AsyncDeliverer for SyncDeliverer<D> {
    async fn deliver(
        &self,
        session: &SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> Result<Option<String>, CallerError> {
        let inner = Arc::clone(&self.inner);
        let (session, row) = (session.clone(), row.clone());
        on_blocking_thread(move || lock(&inner).deliver(&session, &row, attempt))
            .await
            .unwrap_or_else(|| Err("the runtime is shutting down".into()))
    }
}

/// An [`AsyncDeliverer`] made of a closure over owned values (see [`deliver_fn`]).
pub struct FnDeliverer<F> {
    f: F,
}

impl<F> std::fmt::Debug for FnDeliverer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnDeliverer")
    }
}

/// An [`AsyncDeliverer`] from a closure taking the session, the row and the attempt by value
/// and returning the hand-off's future:
///
/// ```
/// use sessionbus_runtime::tokio_host::deliver_fn;
///
/// let platform = deliver_fn(|session, row, _attempt| async move {
///     println!("{}: {}", session.dir.display(), row.message.content);
///     Ok(None)
/// });
/// # let _ = platform;
/// ```
pub fn deliver_fn<F, Fut>(f: F) -> FnDeliverer<F>
where
    F: Fn(SessionPaths, DueOutbound, i64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>, CallerError>> + Send + 'static,
{
    FnDeliverer { f }
}

impl<F, Fut> AsyncDeliverer for FnDeliverer<F>
where
    F: Fn(SessionPaths, DueOutbound, i64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<String>, CallerError>> + Send + 'static,
{
    fn deliver(
        &self,
        session: &SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> impl Future<Output = Result<Option<String>, CallerError>> + Send {
        (self.f)(session.clone(), row.clone(), attempt)
    }
}

/// An [`AsyncContainerControl`] seen as a sync [`ContainerControl`] from a blocking thread:
/// each call is driven to completion there with [`Handle::block_on`], bounded by `timeout`.
/// This is how the host runs the sync sweep ([`crate::host::Sweeper`]) with an async control.
/// Never used on a runtime worker thread (`block_on` would panic there). The timer is created
/// inside `block_on`, where the runtime's context is entered.
pub(crate) struct BlockOn<'a, C> {
    pub(crate) control: &'a C,
    pub(crate) handle: Handle,
    pub(crate) timeout: Duration,
}

impl<C: AsyncContainerControl> ContainerControl for BlockOn<'_, C> {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        let asked =
            async { tokio::time::timeout(self.timeout, self.control.is_running(session)).await };
        match self.handle.block_on(asked) {
            Ok(running) => running,
            Err(_) => {
                // Unknown: judged as running, which neither settles its claims nor starts a
                // second container; a stuck one is still killed on the heartbeat rules.
                tracing::warn!(
                    "session {}: the container control did not say within {:?} whether a \
                     container runs; judging it as running",
                    session.dir.display(),
                    self.timeout
                );
                true
            }
        }
    }

    fn kill(&mut self, session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        let killing =
            async { tokio::time::timeout(self.timeout, self.control.kill(session, reason)).await };
        self.handle
            .block_on(killing)
            .unwrap_or_else(|_| Err(format!("kill timed out after {:?}", self.timeout).into()))
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        let starting =
            async { tokio::time::timeout(self.timeout, self.control.start(session)).await };
        self.handle
            .block_on(starting)
            .unwrap_or_else(|_| Err(format!("start timed out after {:?}", self.timeout).into()))
    }
}
