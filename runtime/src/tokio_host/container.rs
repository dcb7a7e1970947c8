//! The container's poll loop from async code.

use super::StopToken;
use crate::container::{Container, ContainerOptions, Handled, HandlerContext, RunSummary};
use crate::error::{panic_detail, RuntimeError};
use sessionbus_store::Batch;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::runtime::Handle;

/// A batch handler written as async code, for [`run_container_async`].
///
/// Its future is driven on the poll loop's own blocking thread (with [`Handle::block_on`]),
/// so it may borrow the context and the batch and need not be `Send`; it can await timers,
/// channels and I/O of the runtime, and spawn tasks (with owned data). The context's own
/// methods ([`HandlerContext::continuation`], [`HandlerContext::with_tool`], ...) are blocking
/// SQLite calls, which is fine there. While it runs, the loop touches the heartbeat and
/// enforces the batch's deadline exactly as for a sync handler (see [`crate::container`]).
pub trait AsyncHandler: Send + 'static {
    /// Handles one batch (see [`Container::run`]'s handler). Implementations may write
    /// `async fn handle(&mut self, ctx: &HandlerContext<'_>, batch: &Batch) -> Result<..>`.
    fn handle(
        &mut self,
        ctx: &HandlerContext<'_>,
        batch: &Batch,
    ) -> impl Future<Output = Result<Handled, RuntimeError>>;
}

/// An [`AsyncHandler`] made of a closure over an owned batch (see [`handler_fn`]).
pub struct FnHandler<F> {
    f: F,
}

impl<F> std::fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnHandler")
    }
}

/// An [`AsyncHandler`] from a closure that takes the batch by value and returns a future
/// (for handlers that need nothing of the [`HandlerContext`]):
///
/// ```
/// use sessionbus_runtime::container::Handled;
/// use sessionbus_runtime::tokio_host::handler_fn;
/// use sessionbus_runtime::NewOutbound;
///
/// let handler = handler_fn(|batch| async move {
///     let replies = batch.messages.iter()
///         .map(|m| NewOutbound::reply_to(format!("re-{}", m.id), m, "ok"))
///         .collect();
///     Ok(Handled::completed(replies))
/// });
/// # let _ = handler;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: FnMut(Batch) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Handled, RuntimeError>> + 'static,
{
    FnHandler { f }
}

impl<F, Fut> AsyncHandler for FnHandler<F>
where
    F: FnMut(Batch) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Handled, RuntimeError>> + 'static,
{
    fn handle(
        &mut self,
        _ctx: &HandlerContext<'_>,
        batch: &Batch,
    ) -> impl Future<Output = Result<Handled, RuntimeError>> {
        (self.f)(batch.clone())
    }
}

/// Sets its flag when dropped: the poll loop stops when the future running it is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts the container ([`Container::start`]) and runs its poll loop ([`Container::run`]) on
/// a blocking thread, with an async handler, until `stop` is requested (or the loop ends on
/// an error, a handler failure included). The loop checks the request between batches and
/// every 50 ms of its idle sleep; a batch in progress is finished first, as with the sync
/// loop. Dropping the returned future also stops the loop at its next check (the blocking
/// thread then ends on its own; nothing waits for it).
///
/// A panic outside the handler (the handler's own are [`RuntimeError::HandlerPanicked`]) is
/// [`RuntimeError::Panicked`].
///
/// ```no_run
/// use sessionbus_runtime::container::{ContainerOptions, Handled};
/// use sessionbus_runtime::tokio_host::{handler_fn, run_container_async, StopToken};
///
/// # async fn demo() -> Result<(), sessionbus_runtime::error::RuntimeError> {
/// let stop = StopToken::new();
/// let on_signal = stop.clone(); // stop it from a signal handler: `on_signal.stop()`
/// # let _ = on_signal;
/// let summary = run_container_async(
///     ContainerOptions::default(),
///     stop,
///     handler_fn(|_batch| async { Ok(Handled::completed(Vec::new())) }),
/// )
/// .await?;
/// println!("{} batches", summary.batches);
/// # Ok(()) }
/// ```
pub async fn run_container_async<H: AsyncHandler>(
    opts: ContainerOptions,
    stop: StopToken,
    handler: H,
) -> Result<RunSummary, RuntimeError> {
    let handle = Handle::current();
    let mut handler = handler;
    run_on_blocking_thread(opts, stop, move |container, flag| {
        container.run(flag, |ctx, batch| {
            handle.block_on(handler.handle(ctx, batch))
        })
    })
    .await
}

/// [`run_container_async`] with a sync handler (the one [`Container::run`] takes), which then
/// runs on the loop's blocking thread.
pub async fn run_container_blocking<F>(
    opts: ContainerOptions,
    stop: StopToken,
    handler: F,
) -> Result<RunSummary, RuntimeError>
where
    F: FnMut(&HandlerContext, &Batch) -> Result<Handled, RuntimeError> + Send + 'static,
{
    run_on_blocking_thread(opts, stop, move |container, flag| {
        container.run(flag, handler)
    })
    .await
}

async fn run_on_blocking_thread<F>(
    opts: ContainerOptions,
    stop: StopToken,
    run: F,
) -> Result<RunSummary, RuntimeError>
where
    F: FnOnce(&mut Container, &AtomicBool) -> Result<RunSummary, RuntimeError> + Send + 'static,
{
    let session = opts.workspace.clone();
    let flag = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&flag));
    let thread_flag = Arc::clone(&flag);
    let mut running = tokio::task::spawn_blocking(move || {
        let mut container = Container::start(opts)?;
        run(&mut container, &thread_flag)
    });
    let joined = tokio::select! {
        joined = &mut running => joined,
        () = stop.stopped() => {
            flag.store(true, Ordering::SeqCst);
            running.await
        }
    };
    joined.unwrap_or_else(|e| {
        Err(match e.try_into_panic() {
            Ok(payload) => RuntimeError::Panicked {
                session,
                detail: panic_detail(payload.as_ref()),
            },
            Err(_) => RuntimeError::Cancelled { session },
        })
    })
}
