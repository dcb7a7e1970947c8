//! The host and the container from async code (feature `tokio`).
//!
//! The library's operations are blocking (see [the crate's blocking
//! policy](crate#blocking)); this module runs them on tokio's blocking threads
//! (`spawn_blocking`) and gives async callers what a host and a container need:
//!
//! - [`AsyncHost`]: sweeps and delivers many sessions concurrently, at most
//!   [`HostOptions::concurrency`] at once, each session's SQLite work on a blocking thread,
//!   sessions added and removed while it runs ([`HostHandle`]), one stuck session (a slow
//!   deliverer, a locked file, a hung control call) holding up only itself, a panic reported
//!   for its session only, a tick, chat written through the command gate
//!   ([`HostHandle::accept_chat`]), events per session and per pass ([`HostEvent`]), and a
//!   graceful shutdown ([`HostHandle::shutdown`]: passes in flight finish within a grace,
//!   containers left or stopped as [`HostOptions::on_shutdown`] says);
//! - [`AsyncContainerControl`] and [`AsyncDeliverer`], the async forms of the host's two
//!   traits, with [`SyncControl`] and [`SyncDeliverer`] adapting the sync ones (the shipped
//!   [`ChildControl`](crate::control::ChildControl),
//!   [`SandboxControl`](crate::control::SandboxControl),
//!   [`DockerControl`](crate::control::DockerControl)) and [`deliver_fn`] for a closure;
//! - [`run_container_async`]: the container's poll loop ([`crate::container::Container::run`])
//!   on a blocking thread with an [`AsyncHandler`], stopped by a [`StopToken`];
//! - [`accept_chat`] and [`deliver_session`] for one session, for hosts that schedule
//!   sessions themselves.
//!
//! How a session's pass runs: the sweep ([`crate::host::Sweeper`], the same code as the sync
//! host's) runs on a blocking thread, and an async control's calls are driven there with
//! `Handle::block_on`, each bounded by [`HostOptions::control_timeout`]. Delivery then
//! alternates: reading due rows and recording attempts on blocking threads, the hand-off
//! itself as a future on the session's task, bounded by [`HostOptions::delivery_timeout`]
//! (a hand-off cut short counts as a failed attempt; delivery stays at-least-once).

mod container;
mod host;
mod stop;
mod traits;

pub use container::{
    handler_fn, run_container_async, run_container_blocking, AsyncHandler, FnHandler,
};
pub use host::{
    AsyncHost, ContainerPolicy, ContainerStop, HostEvent, HostHandle, HostOptions, HostSummary,
    PassSummary, SessionPass,
};
pub use stop::StopToken;
pub use traits::{
    deliver_fn, AsyncContainerControl, AsyncDeliverer, FnDeliverer, SyncControl, SyncDeliverer,
};

use crate::error::{panic_detail, RuntimeError};
use crate::host::{Accepted, DeliveryReport};
use sessionbus_store::{HostSession, NewMessage};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Passes a chat message through the command gate into `host`'s inbound.db (see
/// [`crate::host::accept_chat`]) on a blocking thread. `is_admin` runs on that thread, and
/// only for admin commands.
pub async fn accept_chat(
    host: &HostSession,
    msg: NewMessage,
    is_admin: impl FnOnce() -> bool + Send + 'static,
) -> Result<Accepted, RuntimeError> {
    let h = host.clone();
    blocking(&host.paths().dir, move || {
        crate::host::accept_chat(&h, &msg, is_admin)
    })
    .await
}

/// Delivers every due outbound row of `host`'s session, oldest first, as
/// [`crate::host::deliver_session`] does (attempts counted before each hand-off,
/// at-least-once, a row failed after `max_attempts`), with the database work on blocking
/// threads and each hand-off awaited for at most `timeout` (past it the hand-off's future is
/// dropped and the attempt counts as failed).
pub async fn deliver_session<D: AsyncDeliverer>(
    host: &HostSession,
    deliverer: &D,
    max_attempts: i64,
    timeout: Duration,
) -> Result<DeliveryReport, RuntimeError> {
    host::deliver(host, deliverer, max_attempts, timeout).await
}

/// Runs `f` on a blocking thread: a panic there is [`RuntimeError::Panicked`] for `session`,
/// a runtime shutting down first is [`RuntimeError::Cancelled`].
pub(crate) async fn blocking<T: Send + 'static>(
    session: &Path,
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    match tokio::task::spawn_blocking(move || catch_unwind(AssertUnwindSafe(f))).await {
        Ok(Ok(out)) => out,
        Ok(Err(payload)) => Err(RuntimeError::Panicked {
            session: session.to_path_buf(),
            detail: panic_detail(payload.as_ref()),
        }),
        Err(e) => Err(match e.try_into_panic() {
            Ok(payload) => RuntimeError::Panicked {
                session: session.to_path_buf(),
                detail: panic_detail(payload.as_ref()),
            },
            Err(_) => RuntimeError::Cancelled {
                session: session.to_path_buf(),
            },
        }),
    }
}

/// A future whose panics are caught and returned as `Err` (the payload).
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        CatchUnwind {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}
