//! Typed rows and inputs. Enumerations keep values they do not know (from an older or newer
//! peer) in an `Other` variant instead of failing the read.

use sessionbus_schema::{Seq, Timestamp};
use std::fmt;

macro_rules! open_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $var,)+
            /// A value this build does not know, kept as it was read.
            Other(String),
        }

        impl $name {
            /// The text stored in the file.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$var => $text,)+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$var,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name::from(s.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($name::from(String::deserialize(d)?))
            }
        }
    };
}

open_enum!(
    /// What a `messages_in` / `messages_out` row is.
    MessageKind {
        /// A chat message.
        Chat => "chat",
        /// A chat message from the chat SDK bridge.
        ChatSdk => "chat-sdk",
        /// A scheduled or recurring task.
        Task => "task",
        /// The host's answer to a question the agent asked; never part of a batch.
        System => "system",
    }
);

open_enum!(
    /// Status of a `messages_in` row.
    MessageStatus {
        /// Waiting to be processed.
        Pending => "pending",
        /// Processed.
        Completed => "completed",
        /// Given up on.
        Failed => "failed",
        /// Held back by the host.
        Paused => "paused",
    }
);

open_enum!(
    /// Status of a `processing_ack` row.
    AckStatus {
        /// The container claimed the message.
        Processing => "processing",
        /// Done.
        Completed => "completed",
        /// The container gave up on it.
        Failed => "failed",
    }
);

open_enum!(
    /// Type of a destination.
    DestinationType {
        /// A chat channel.
        Channel => "channel",
        /// Another agent group.
        Agent => "agent",
    }
);

open_enum!(
    /// Outcome recorded in `delivered`.
    DeliveryStatus {
        /// Handed to the chat platform.
        Delivered => "delivered",
        /// Given up on.
        Failed => "failed",
    }
);

/// A timestamp as a peer stored it: the text is kept (peers expect their own format back), the
/// instant is parsed on demand. Comparisons always go through [`TimeText::instant`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TimeText(pub String);

impl TimeText {
    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instant, or `None` when the text is in no known format.
    pub fn instant(&self) -> Option<Timestamp> {
        Timestamp::parse(&self.0).ok()
    }

    /// True when the text parses and is at or before `now`. Text in no known format counts as
    /// due, so a peer's odd timestamp can delay nothing forever.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.instant().is_none_or(|t| t <= now)
    }
}

/// Chat address: where a message came from or goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    /// Chat platform address.
    pub platform_id: Option<String>,
    /// Chat platform type.
    pub channel_type: Option<String>,
    /// Thread within the chat.
    pub thread_id: Option<String>,
}

/// A `messages_in` row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageIn {
    /// Message id.
    pub id: String,
    /// Host seq (even); `None` only in rows a legacy peer wrote without one.
    pub seq: Option<Seq>,
    /// Kind.
    pub kind: MessageKind,
    /// When it was written.
    pub timestamp: TimeText,
    /// Status (`pending` when the column is NULL, its default).
    pub status: MessageStatus,
    /// Not due before this.
    pub process_after: Option<TimeText>,
    /// Cron expression of a recurring task.
    pub recurrence: Option<String>,
    /// Series of a recurring task (= id for one-offs).
    pub series_id: Option<String>,
    /// Attempts so far.
    pub tries: i64,
    /// Wakes the agent (`false`: context that rides along).
    pub trigger: bool,
    /// Chat address.
    pub address: Address,
    /// JSON content.
    pub content: String,
    /// Agent-to-agent return path.
    pub source_session_id: Option<String>,
    /// Only delivered on the container's first poll.
    pub on_wake: bool,
}

impl MessageIn {
    /// The content parsed as JSON (`Value::Null` when it is not JSON, as a legacy peer may
    /// have written).
    pub fn content_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.content).unwrap_or(serde_json::Value::Null)
    }

    /// The `text` field of the JSON content, when there is one (a chat message's text).
    pub fn text(&self) -> Option<String> {
        text_of(&self.content)
    }
}

/// The `text` string of JSON `content`.
fn text_of(content: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(content).ok()? {
        serde_json::Value::Object(mut map) => match map.remove("text")? {
            serde_json::Value::String(text) => Some(text),
            _ => None,
        },
        _ => None,
    }
}

/// A message the host writes to `messages_in`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// Message id (from the chat platform or made by the host).
    pub id: String,
    /// Kind.
    pub kind: MessageKind,
    /// JSON content, validated before anything is written.
    pub content: String,
    /// Chat address.
    pub address: Address,
    /// Not due before this instant (a scheduled task or a retry).
    pub process_after: Option<Timestamp>,
    /// Cron expression of a recurring task.
    pub recurrence: Option<String>,
    /// Series id; defaults to the message id.
    pub series_id: Option<String>,
    /// Wakes the agent (default `true`).
    pub trigger: bool,
    /// Only delivered on the container's first poll after start (default `false`).
    pub on_wake: bool,
    /// Agent-to-agent return path.
    pub source_session_id: Option<String>,
    /// When it was written; defaults to the clock's now.
    pub timestamp: Option<Timestamp>,
}

impl NewMessage {
    /// A message of `kind` with JSON `content` and every other field at its default.
    pub fn new(id: impl Into<String>, kind: MessageKind, content: impl Into<String>) -> Self {
        NewMessage {
            id: id.into(),
            kind,
            content: content.into(),
            address: Address::default(),
            process_after: None,
            recurrence: None,
            series_id: None,
            trigger: true,
            on_wake: false,
            source_session_id: None,
            timestamp: None,
        }
    }

    /// A chat message whose content is `{"text": text}`.
    pub fn chat(id: impl Into<String>, text: &str) -> Self {
        NewMessage::new(
            id,
            MessageKind::Chat,
            serde_json::json!({ "text": text }).to_string(),
        )
    }

    /// Sets the chat address.
    pub fn to(mut self, address: Address) -> Self {
        self.address = address;
        self
    }
}

/// What writing one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// The message's seq.
    pub seq: Seq,
    /// `false` when the same message (id, kind and content) was already there: an idempotent
    /// retry, nothing written.
    pub created: bool,
}

/// A message the container writes to `messages_out`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbound {
    /// Message id.
    pub id: String,
    /// Kind.
    pub kind: MessageKind,
    /// JSON content.
    pub content: String,
    /// The `messages_in` id this answers.
    pub in_reply_to: Option<String>,
    /// Chat address.
    pub address: Address,
    /// Not delivered before this.
    pub deliver_after: Option<Timestamp>,
    /// Cron expression.
    pub recurrence: Option<String>,
}

impl NewOutbound {
    /// A chat reply with content `{"text": text}`.
    pub fn chat(id: impl Into<String>, text: &str) -> Self {
        NewOutbound {
            id: id.into(),
            kind: MessageKind::Chat,
            content: serde_json::json!({ "text": text }).to_string(),
            in_reply_to: None,
            address: Address::default(),
            deliver_after: None,
            recurrence: None,
        }
    }

    /// A chat reply to `msg`, to the same address.
    pub fn reply_to(id: impl Into<String>, msg: &MessageIn, text: &str) -> Self {
        NewOutbound {
            in_reply_to: Some(msg.id.clone()),
            address: msg.address.clone(),
            ..NewOutbound::chat(id, text)
        }
    }
}

/// A `messages_out` row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MessageOut {
    /// Message id.
    pub id: String,
    /// Container seq (odd).
    pub seq: Option<Seq>,
    /// The message it answers.
    pub in_reply_to: Option<String>,
    /// When it was written.
    pub timestamp: TimeText,
    /// Not delivered before this.
    pub deliver_after: Option<TimeText>,
    /// Cron expression.
    pub recurrence: Option<String>,
    /// Kind.
    pub kind: MessageKind,
    /// Chat address.
    pub address: Address,
    /// JSON content.
    pub content: String,
}

impl MessageOut {
    /// The `text` field of the JSON content, when there is one (a reply's text).
    pub fn text(&self) -> Option<String> {
        text_of(&self.content)
    }
}

/// Where an outbound row to deliver comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundSource {
    /// `messages_out` in outbound.db (the agent's reply).
    Container,
    /// `host_replies` in inbound.db (the host's own reply, e.g. a command denial).
    Host,
}

/// An outbound row that is due for delivery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DueOutbound {
    /// Which table it came from.
    pub source: OutboundSource,
    /// The row.
    pub message: MessageOut,
    /// Delivery attempts started so far (from `delivery_attempts`).
    pub attempts: i64,
}

/// A reply the host itself originates, written into inbound.db's `host_replies`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewHostReply {
    /// Reply id.
    pub id: String,
    /// The message it answers.
    pub in_reply_to: Option<String>,
    /// Chat address (the same chat and thread as the message it answers).
    pub address: Address,
    /// JSON content.
    pub content: String,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The chat platform took it, under this id (if it gave one).
    Delivered {
        /// The platform's message id.
        platform_message_id: Option<String>,
    },
    /// Given up on.
    Failed,
}

/// A `processing_ack` row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ack {
    /// The `messages_in` id.
    pub message_id: String,
    /// Status.
    pub status: AckStatus,
    /// When the status last changed.
    pub status_changed: TimeText,
}

/// A `processing` ack: the container is working on this message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claim {
    /// The `messages_in` id.
    pub message_id: String,
    /// When it was claimed.
    pub claimed_at: TimeText,
}

/// The single `container_state` row: the tool in flight, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ContainerState {
    /// Tool running now.
    pub current_tool: Option<String>,
    /// Its declared timeout.
    pub tool_declared_timeout_ms: Option<i64>,
    /// When it started.
    pub tool_started_at: Option<TimeText>,
    /// Last write.
    pub updated_at: Option<TimeText>,
}

/// A `failure_notes` row: why the container's handler failed on a message (for the operator;
/// the message's claim was left for the host to retry or fail).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureNote {
    /// The `messages_in` id.
    pub message_id: String,
    /// What happened, at most [`crate::outbound_writer::MAX_FAILURE_REASON_BYTES`].
    pub reason: String,
    /// When it was noted.
    pub at: TimeText,
}

/// A `destinations` row: somewhere this agent may send.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Destination {
    /// Name the agent uses.
    pub name: String,
    /// Human-readable name.
    pub display_name: Option<String>,
    /// `channel` or `agent`.
    pub kind: DestinationType,
    /// For channels.
    pub channel_type: Option<String>,
    /// For channels.
    pub platform_id: Option<String>,
    /// For agents.
    pub agent_group_id: Option<String>,
}

/// The session's default reply address (all `None` when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Routing {
    /// Chat platform type.
    pub channel_type: Option<String>,
    /// Chat platform address.
    pub platform_id: Option<String>,
    /// Thread.
    pub thread_id: Option<String>,
}

/// What the container polled: the batch to hand to the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Messages, oldest first.
    pub messages: Vec<MessageIn>,
}

impl Batch {
    /// True when at least one message wakes the agent (`trigger = 1`); a batch of context
    /// rows alone does not.
    pub fn wakes(&self) -> bool {
        self.messages.iter().any(|m| m.trigger)
    }

    /// True when there is nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Ids of the messages.
    pub fn ids(&self) -> Vec<String> {
        self.messages.iter().map(|m| m.id.clone()).collect()
    }
}

/// What a seq refers to, for "edit message N" / "react to N".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeqTarget {
    /// The seq asked for.
    pub seq: Seq,
    /// Which side's row it is.
    pub source: OutboundSource,
    /// The row's internal id.
    pub id: String,
    /// The chat platform's id: `delivered.platform_message_id` once delivered, else the
    /// internal id (for host rows: the id, which came from the platform).
    pub platform_message_id: String,
    /// The row's chat address.
    pub address: Address,
}

/// The retry or failure the host's sweep applies to a claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryUpdate {
    /// Try again later: `tries` and `process_after` set as given.
    Retry {
        /// Message id.
        id: String,
        /// New tries count.
        tries: i64,
        /// Not before this.
        process_after: Timestamp,
    },
    /// Give up: status `failed`.
    Fail {
        /// Message id.
        id: String,
    },
}
