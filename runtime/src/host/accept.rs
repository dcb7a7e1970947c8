//! The command gate in front of inbound.db.

use crate::error::RuntimeError;
use crate::gate::{self, GateDecision};
use sessionbus_store::{HostSession, NewHostReply, NewMessage, Written};

/// What the command gate did with an incoming chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Written to messages_in.
    Written(Written),
    /// A filtered command, dropped silently.
    Filtered {
        /// The command.
        command: String,
    },
    /// An admin command from a non-admin: a denial was written as a host reply to the same
    /// chat and thread, and nothing reached messages_in.
    Denied {
        /// The command.
        command: String,
        /// The denial's seq.
        reply_seq: sessionbus_schema::Seq,
    },
}

/// The command gate in front of inbound.db: classifies a chat message's text (the `text`
/// field of its JSON content) and writes it, drops it, or answers it with a denial.
/// `is_admin` is asked only for admin commands.
pub fn accept_chat(
    host: &HostSession,
    msg: &NewMessage,
    is_admin: impl FnOnce() -> bool,
) -> Result<Accepted, RuntimeError> {
    let text = serde_json::from_str::<serde_json::Value>(&msg.content)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    match gate::classify(&text, is_admin) {
        GateDecision::Pass => Ok(Accepted::Written(host.inbound().write_message(msg)?)),
        GateDecision::Filter { command } => Ok(Accepted::Filtered { command }),
        GateDecision::Deny {
            command,
            reply_text,
        } => {
            let reply = NewHostReply {
                id: sessionbus_store::validate::derived_id(&msg.id, "-denied"),
                in_reply_to: Some(msg.id.clone()),
                address: msg.address.clone(),
                content: serde_json::json!({ "text": reply_text }).to_string(),
            };
            let reply_seq = host.inbound().write_host_reply(&reply)?;
            Ok(Accepted::Denied { command, reply_seq })
        }
    }
}
