//! A stop request shared between tasks and blocking threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// A one-way stop request: once [`StopToken::stop`] is called, [`StopToken::is_stopped`] is
/// true for good and every [`StopToken::stopped`] future completes. Clones share the request,
/// so one clone can go to a signal handler and another to the loop it stops.
#[derive(Debug, Clone, Default)]
pub struct StopToken {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    notify: Notify,
}

impl StopToken {
    /// A token not stopped yet.
    pub fn new() -> Self {
        StopToken::default()
    }

    /// Requests the stop (again is harmless).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Whether the stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }

    /// Completes once the stop is requested (at once when it already was).
    pub async fn stopped(&self) {
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a stop between the check and the await still
            // wakes this waiter.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}
