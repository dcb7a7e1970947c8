//! The host's side: the sweep (liveness, retries, recurrences), delivery, and the command
//! gate in front of inbound.db. Starting and stopping containers stays with the caller through
//! [`ContainerControl`]: the library never shells out to Docker.
//!
//! The host never writes, rolls back or executes the container's file (format rule 5,
//! docs/format.md §2): what it learns there (claims, acks, the tool in flight, replies) it
//! reads through the store's hardened reader, and what it must remember about it (claims seen
//! and settled, rows held for later) it keeps in inbound.db.

mod accept;
mod deliver;
mod sweep;
mod sweeper;

pub use accept::{accept_chat, Accepted};
#[cfg(feature = "tokio")]
pub(crate) use deliver::{begin_attempt, finish_attempt, Begun, DELIVERY_BATCH};
pub use deliver::{deliver_session, Deliverer, DeliveryReport};
pub use sweep::{
    activity, decide_now, sweep_session, Activity, SweepOptions, SweepReport, DEFAULT_IDLE_AFTER,
};
pub use sweeper::{NextOccurrenceFn, SweepOutcome, Sweeper};

use crate::control::CallerError;
use crate::error::RuntimeError;
use crate::liveness::KillReason;
use sessionbus_store::{HostSession, SessionPaths};
use std::path::PathBuf;

/// The caller's control over its sessions' containers. The library ships
/// [`ChildControl`](crate::control::ChildControl) (plain processes, for tests),
/// [`SandboxControl`](crate::control::SandboxControl) (bubblewrap) and
/// [`DockerControl`](crate::control::DockerControl).
pub trait ContainerControl {
    /// Whether a container runs for the session now.
    fn is_running(&mut self, session: &SessionPaths) -> bool;
    /// Stops the session's container (and waits until it is gone).
    fn kill(&mut self, session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError>;
    /// Starts a container for the session.
    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError>;
}

/// A boxed control is a control: a host can choose its control at run time
/// (`Box<dyn ContainerControl + Send>`).
impl<T: ContainerControl + ?Sized> ContainerControl for Box<T> {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        (**self).is_running(session)
    }

    fn kill(&mut self, session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        (**self).kill(session, reason)
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        (**self).start(session)
    }
}

/// One session's result in a pass over many.
#[derive(Debug)]
pub struct SessionOutcome<T> {
    /// The session folder.
    pub session: PathBuf,
    /// Its result; an error here did not stop the other sessions.
    pub result: Result<T, RuntimeError>,
}

/// Runs `step` for every session, isolating errors: a corrupt file, a hot journal or a
/// missing folder in one session is reported in its outcome and every other session is still
/// served in the same pass.
pub fn for_each_session<T>(
    sessions: &[HostSession],
    mut step: impl FnMut(&HostSession) -> Result<T, RuntimeError>,
) -> Vec<SessionOutcome<T>> {
    sessions
        .iter()
        .map(|h| SessionOutcome {
            session: h.paths().dir.clone(),
            result: std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(h)))
                .unwrap_or_else(|panic| {
                    Err(RuntimeError::Panicked {
                        session: h.paths().dir.clone(),
                        detail: crate::error::panic_detail(panic.as_ref()),
                    })
                }),
        })
        .collect()
}
