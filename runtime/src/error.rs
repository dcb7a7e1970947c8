//! Errors of the runtime's loops and passes.

use crate::config::ConfigError;
use crate::heartbeat::HeartbeatError;
use sessionbus_store::StoreError;
use std::path::PathBuf;

/// What stopped a runtime step. Store errors keep their file, role and operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `container.json` could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The heartbeat file could not be touched or read.
    #[error(transparent)]
    Heartbeat(#[from] HeartbeatError),
    /// A step for one session panicked; the pass went on with the other sessions.
    #[error("session {session}: the step panicked: {detail}")]
    Panicked {
        /// The session folder.
        session: PathBuf,
        /// The panic message.
        detail: String,
    },
    /// The caller's container control failed (start or kill).
    #[error("session {session}: container control failed to {action}: {source}")]
    Control {
        /// The session folder.
        session: PathBuf,
        /// `start` or `kill`.
        action: &'static str,
        /// The control's own error.
        #[source]
        source: crate::control::CallerError,
    },
    /// The container's view of inbound.db stayed behind a commit the host stamped, for far
    /// longer than a coherent mount takes to show it: the mount never revalidates cached file
    /// contents (see [`crate::freshness`]).
    #[error("{0}")]
    FrozenView(crate::freshness::FrozenView),
}

impl RuntimeError {
    /// True for conditions that pass by themselves (a lock, a hot journal): try again on the
    /// next tick instead of giving up.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Store(e) if e.is_retryable())
    }
}
