//! The host's side: the sweep (liveness, retries, recurrences), delivery, and the command
//! gate in front of inbound.db. Starting and stopping containers stays with the caller through
//! [`ContainerControl`]: the library never shells out to Docker.
//!
//! The host never writes, rolls back or executes the container's file (SPEC rule 5): what it
//! learns there (claims, acks, the tool in flight, replies) it reads through the store's
//! hardened reader, and what it must remember about it (claims seen and settled, rows held for
//! later) it keeps in inbound.db.

mod accept;
mod deliver;
mod sweep;
mod sweeper;

pub use accept::{accept_chat, Accepted};
pub use deliver::{deliver_session, Deliverer, DeliveryReport};
pub use sweep::{
    activity, decide_now, sweep_session, Activity, SweepOptions, SweepReport, DEFAULT_IDLE_AFTER,
};
pub use sweeper::{SweepOutcome, Sweeper};

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
                    let detail = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(RuntimeError::Panicked {
                        session: h.paths().dir.clone(),
                        detail,
                    })
                }),
        })
        .collect()
}
