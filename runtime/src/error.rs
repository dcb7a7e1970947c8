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
    /// The caller's own code failed (a container handler's error, of any type): built with
    /// [`RuntimeError::handler`], the error kept as the source.
    #[error("{0}")]
    Handler(#[source] crate::control::CallerError),
    /// A step for one session panicked; the pass went on with the other sessions.
    #[error("session {session}: the step panicked: {detail}")]
    Panicked {
        /// The session folder.
        session: PathBuf,
        /// The panic message.
        detail: String,
    },
    /// A session the caller named is not one the async host serves (see
    /// `tokio_host::HostHandle::accept_chat`, feature `tokio`).
    #[error("session {}: not served by this host (add it first)", session.display())]
    UnknownSession {
        /// The session folder named.
        session: PathBuf,
    },
    /// The async runtime shut down before a session's blocking work reported back (feature
    /// `tokio`).
    #[error("session {}: the runtime shut down before the work finished", session.display())]
    Cancelled {
        /// The session folder.
        session: PathBuf,
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
    /// The container's handler panicked on a batch. The batch's `processing` claims were left
    /// in outbound.db for the host (which counts a try and retries, or fails the messages
    /// after their limit) and a `failure_notes` row records the panic for each message. The
    /// run ends: the handler is not called again in this process.
    #[error("session {}: the handler panicked on {}: {detail}", session.display(), ids_text(message_ids))]
    HandlerPanicked {
        /// The session folder (the container's workspace).
        session: PathBuf,
        /// The messages handed to the handler.
        message_ids: Vec<String>,
        /// The panic's message.
        detail: String,
    },
    /// The container's handler returned an error for a batch. Treated like a panic: claims
    /// left for the host, a failure note per message, the run ends. A batch the agent cannot
    /// answer for good is [`crate::container::Handled::failed`] instead (an `Ok`).
    #[error("session {}: the handler failed on {}: {source}", session.display(), ids_text(message_ids))]
    HandlerFailed {
        /// The session folder (the container's workspace).
        session: PathBuf,
        /// The messages handed to the handler.
        message_ids: Vec<String>,
        /// The handler's error.
        #[source]
        source: Box<RuntimeError>,
    },
    /// The container's handler ran past the batch's deadline (`handlerTimeoutMs`, widened
    /// while a tool with a declared timeout ran). From the deadline on the container stopped
    /// vouching for itself on `.heartbeat`, so the host's liveness rules kill it; if the
    /// handler returned first, its result was discarded and the run ends with this (claims
    /// left, failure notes written).
    #[error(
        "session {}: the handler ran past its deadline of {deadline_ms} ms on {}",
        session.display(),
        ids_text(message_ids)
    )]
    HandlerTimedOut {
        /// The session folder (the container's workspace).
        session: PathBuf,
        /// The messages handed to the handler.
        message_ids: Vec<String>,
        /// The deadline that passed, in milliseconds after the batch was claimed.
        deadline_ms: u64,
    },
}

/// A panic's message, when it is text.
pub(crate) fn panic_detail(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic whose payload is not text".to_owned()
    }
}

/// Up to three message ids for an error message, and how many more there were.
fn ids_text(ids: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = match ids.len() {
        1 => "message ".to_string(),
        _ => "messages ".to_string(),
    };
    let shown: Vec<String> = ids.iter().take(SHOWN).map(|id| format!("{id:?}")).collect();
    text.push_str(&shown.join(", "));
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

impl RuntimeError {
    /// True for conditions that pass by themselves (a lock, a hot journal): try again on the
    /// next tick instead of giving up. A handler's failure never is, whatever its cause: its
    /// batch's claims are held, and only the host can settle them.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RuntimeError::Store(e) if e.is_retryable())
    }

    /// The caller's own error (a container handler's, say) as a runtime error, kept as the
    /// source so that it can be downcast again: `.map_err(RuntimeError::handler)?`.
    pub fn handler(e: impl Into<crate::control::CallerError>) -> Self {
        RuntimeError::Handler(e.into())
    }

    /// True for the handler's failures ([`RuntimeError::HandlerPanicked`],
    /// [`RuntimeError::HandlerFailed`], [`RuntimeError::HandlerTimedOut`]).
    pub fn is_handler_failure(&self) -> bool {
        matches!(
            self,
            RuntimeError::HandlerPanicked { .. }
                | RuntimeError::HandlerFailed { .. }
                | RuntimeError::HandlerTimedOut { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the model refused")]
    struct ModelRefused;

    #[test]
    fn a_handlers_own_error_is_kept_as_the_source() {
        let e = RuntimeError::handler(ModelRefused);
        assert_eq!(e.to_string(), "the model refused");
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.downcast_ref::<ModelRefused>().is_some());
        assert!(!e.is_retryable());
    }

    #[test]
    fn handler_errors_name_the_session_and_a_bounded_list_of_ids() {
        let ids: Vec<String> = (1..=5).map(|i| format!("m{i}")).collect();
        let e = RuntimeError::HandlerPanicked {
            session: PathBuf::from("/s"),
            message_ids: ids,
            detail: "boom".into(),
        };
        let text = e.to_string();
        assert!(text.contains("/s"), "{text}");
        assert!(text.contains(r#""m1", "m2", "m3" and 2 more"#), "{text}");
        assert!(text.ends_with("boom"), "{text}");
        assert!(!e.is_retryable() && e.is_handler_failure());
        let one = RuntimeError::HandlerTimedOut {
            session: PathBuf::from("/s"),
            message_ids: vec!["x".into()],
            deadline_ms: 5,
        };
        assert!(one.to_string().contains(r#"message "x""#), "{one}");
    }
}
