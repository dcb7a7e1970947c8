//! Builders for messages with sensible defaults.

use sessionbus_schema::Timestamp;
use sessionbus_store::{Address, MessageKind, NewMessage, NewOutbound};

/// The chat address builders use by default.
pub fn chat_address() -> Address {
    Address {
        platform_id: Some("C-test".into()),
        channel_type: Some("slack".into()),
        thread_id: Some("T-1".into()),
    }
}

/// Builds a [`NewMessage`]: a chat message to [`chat_address`] unless told otherwise.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    msg: NewMessage,
}

/// Starts a chat message with id `id` and text `text`.
pub fn message(id: &str, text: &str) -> MessageBuilder {
    MessageBuilder {
        msg: NewMessage::chat(id, text).to(chat_address()),
    }
}

impl MessageBuilder {
    /// Sets the kind.
    pub fn kind(mut self, kind: MessageKind) -> Self {
        self.msg.kind = kind;
        self
    }

    /// Sets raw JSON content.
    pub fn content(mut self, json: &str) -> Self {
        self.msg.content = json.into();
        self
    }

    /// A context row that does not wake the agent.
    pub fn context(mut self) -> Self {
        self.msg.trigger = false;
        self
    }

    /// Only on the container's first poll.
    pub fn on_wake(mut self) -> Self {
        self.msg.on_wake = true;
        self
    }

    /// Not due before `t`.
    pub fn after(mut self, t: Timestamp) -> Self {
        self.msg.process_after = Some(t);
        self
    }

    /// A recurring task with this cron expression.
    pub fn recurring(mut self, cron: &str) -> Self {
        self.msg.kind = MessageKind::Task;
        self.msg.recurrence = Some(cron.into());
        self
    }

    /// A `system` answer to question `question_id`.
    pub fn answer_to(mut self, question_id: &str) -> Self {
        self.msg.kind = MessageKind::System;
        self.msg.content =
            serde_json::json!({ "questionId": question_id, "answer": "yes" }).to_string();
        self
    }

    /// Sets the address.
    pub fn address(mut self, a: Address) -> Self {
        self.msg.address = a;
        self
    }

    /// The message.
    pub fn build(self) -> NewMessage {
        self.msg
    }
}

impl From<MessageBuilder> for NewMessage {
    fn from(b: MessageBuilder) -> Self {
        b.build()
    }
}

/// A chat reply with id `id` and text `text`, to [`chat_address`].
pub fn reply(id: &str, text: &str) -> NewOutbound {
    NewOutbound {
        address: chat_address(),
        ..NewOutbound::chat(id, text)
    }
}
