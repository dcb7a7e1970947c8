//! What the async host reports: each session's pass, the summaries of a pass and of a run, the
//! container stops, and the events that carry them.

use crate::error::RuntimeError;
use crate::host::{DeliveryReport, SweepOutcome};
use std::path::PathBuf;
use std::sync::Arc;

/// One session's pass: its sweep, then its delivery. Each part's error (or panic, as
/// [`RuntimeError::Panicked`]) is its own; the delivery runs whatever the sweep did.
#[derive(Debug)]
pub struct SessionPass {
    /// The session folder.
    pub session: PathBuf,
    /// The pass it was scheduled in.
    pub pass: u64,
    /// The sweep ([`Sweeper::sweep`](crate::host::Sweeper::sweep): quiet sessions cost two
    /// header reads).
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
/// a chat accepted through [`HostHandle::accept_chat`](super::HostHandle::accept_chat),
/// [`HostHandle::wake`](super::HostHandle::wake)) schedules just those sessions. A pass ends
/// with its slowest session; later passes never wait for it.
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

/// What a whole run did, returned by [`AsyncHost::run`](super::AsyncHost::run).
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

/// What the host reports while it runs (see
/// [`HostHandle::subscribe`](super::HostHandle::subscribe)).
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
    /// A session's pass has been running for longer than
    /// [`HostOptions::stalled_after`](super::HostOptions::stalled_after) (reported once per
    /// pass; the other sessions are served meanwhile).
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
