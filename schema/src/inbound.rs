//! Tables of `inbound.db`, the file the host writes and the container reads.
//!
//! Kept in their own module, apart from [`crate::outbound`], so that one query can never join
//! tables of the two files by accident: diesel refuses to mix tables that are not declared
//! joinable, and none across the two modules are.

diesel::table! {
    /// Messages for the agent, one row per chat message, task or system answer. Seq is even.
    messages_in (id) {
        /// Message id (from the chat platform or the host); primary key.
        id -> Text,
        /// Host sequence number: positive and even, unique across both files of the session.
        seq -> Nullable<BigInt>,
        /// `chat`, `chat-sdk`, `task`, `system`, or a kind from a newer peer.
        kind -> Text,
        /// When the message was written (JavaScript ISO format).
        timestamp -> Text,
        /// `pending`, `completed`, `failed`, `paused`.
        status -> Nullable<Text>,
        /// Not due before this instant (either timestamp format).
        process_after -> Nullable<Text>,
        /// Cron expression of a recurring task.
        recurrence -> Nullable<Text>,
        /// Groups the occurrences of one recurring task; equals `id` for one-offs.
        series_id -> Nullable<Text>,
        /// Retries so far: tries the host counted after a container stopped without finishing
        /// the message (docs/format.md §7.3).
        tries -> Nullable<BigInt>,
        /// 1 wakes the agent; 0 is context that rides along.
        trigger -> BigInt,
        /// Chat platform address.
        platform_id -> Nullable<Text>,
        /// Chat platform type.
        channel_type -> Nullable<Text>,
        /// Thread within the chat.
        thread_id -> Nullable<Text>,
        /// JSON content; its shape depends on `kind`.
        content -> Text,
        /// Agent-to-agent return path.
        source_session_id -> Nullable<Text>,
        /// 1: only delivered on the container's first poll after start.
        on_wake -> BigInt,
    }
}

diesel::table! {
    /// The host's record of each outbound row it delivered (or gave up on).
    delivered (message_out_id) {
        /// `messages_out.id` (or `host_replies.id`).
        message_out_id -> Text,
        /// The chat platform's id for the delivered message, for later edits and reactions.
        platform_message_id -> Nullable<Text>,
        /// `delivered` or `failed`.
        status -> Text,
        /// When the outcome was recorded (SQLite `datetime('now')` format).
        delivered_at -> Text,
    }
}

diesel::table! {
    /// Projection of the central ACL: where this agent may send.
    destinations (name) {
        /// Name the agent uses.
        name -> Text,
        /// Human-readable name.
        display_name -> Nullable<Text>,
        /// `channel` or `agent`.
        #[sql_name = "type"]
        type_ -> Text,
        /// For `type = channel`.
        channel_type -> Nullable<Text>,
        /// For `type = channel`.
        platform_id -> Nullable<Text>,
        /// For `type = agent`.
        agent_group_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// Single row (id = 1): the session's default reply address.
    session_routing (id) {
        /// Always 1.
        id -> BigInt,
        /// Chat platform type.
        channel_type -> Nullable<Text>,
        /// Chat platform address.
        platform_id -> Nullable<Text>,
        /// Thread within the chat.
        thread_id -> Nullable<Text>,
    }
}

diesel::table! {
    /// Replies the host itself originates (the command gate's denial), with host seqs.
    host_replies (id) {
        /// Reply id; primary key, shares the `delivered.message_out_id` space.
        id -> Text,
        /// Host sequence number: positive and even.
        seq -> BigInt,
        /// Id of the message this answers.
        in_reply_to -> Nullable<Text>,
        /// When it was written (JavaScript ISO format).
        timestamp -> Text,
        /// Kind of the reply (`chat`).
        kind -> Text,
        /// Chat platform address.
        platform_id -> Nullable<Text>,
        /// Chat platform type.
        channel_type -> Nullable<Text>,
        /// Thread within the chat.
        thread_id -> Nullable<Text>,
        /// JSON content.
        content -> Text,
    }
}

diesel::table! {
    /// Delivery attempts per outbound row, kept here so they survive a host restart.
    delivery_attempts (message_out_id) {
        /// `messages_out.id` or `host_replies.id`.
        message_out_id -> Text,
        /// Attempts started so far.
        attempts -> BigInt,
        /// The last failure's message.
        last_error -> Nullable<Text>,
        /// When the last attempt started (SQLite `datetime('now')` format).
        last_attempt_at -> Text,
    }
}

diesel::table! {
    /// Named high-water marks that keep the host's polls proportional to what is new.
    host_cursor (name) {
        /// Cursor name.
        name -> Text,
        /// Every row at or below this seq is settled.
        seq -> BigInt,
    }
}

diesel::table! {
    /// Claims (`processing` acks) the host saw in outbound.db, and whether it settled them.
    claim_records (message_id, claimed_at) {
        /// The claimed `messages_in.id`.
        message_id -> Text,
        /// The claim's `status_changed`, as the container wrote it.
        claimed_at -> Text,
        /// When the host first saw it (SQLite `datetime('now')` format with milliseconds).
        seen_at -> Text,
        /// When the host settled it (counted the try), if it has.
        settled_at -> Nullable<Text>,
    }
}

diesel::table! {
    /// Outbound rows read but not due yet, which the delivery cursor has passed.
    held_outbound (source, seq) {
        /// `container` (messages_out) or `host` (host_replies).
        source -> Text,
        /// The row's seq.
        seq -> BigInt,
        /// The row's id.
        message_out_id -> Text,
        /// `deliver_after` in Unix milliseconds.
        deliver_after_ms -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    messages_in,
    delivered,
    destinations,
    session_routing,
    host_replies,
    delivery_attempts,
    host_cursor,
    claim_records,
    held_outbound,
);
