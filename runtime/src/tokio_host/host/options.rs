//! How the async host runs: its options and what it does with containers it lets go of.

use crate::host::SweepOptions;
use std::time::Duration;

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
    /// Stop them through the control:
    /// [`AsyncContainerControl::kill`](crate::tokio_host::AsyncContainerControl::kill) with
    /// [`KillReason::HostShutdown`](crate::liveness::KillReason::HostShutdown) or
    /// [`KillReason::SessionRemoved`](crate::liveness::KillReason::SessionRemoved), for each
    /// one that runs.
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
    /// [`HostEvent::Stalled`](super::HostEvent::Stalled) (default 30 s). Reporting only:
    /// nothing is cancelled.
    pub stalled_after: Duration,
    /// At shutdown, how long passes in flight get to finish (default 30 s); those still running
    /// then are abandoned (see [`HostSummary::abandoned`](super::HostSummary::abandoned)).
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
