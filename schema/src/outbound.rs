//! Tables of `outbound.db`, the file the container writes and the host reads.
//!
//! Kept apart from [`crate::inbound`]: no query can join across the two files.

diesel::table! {
    /// Messages from the agent. Seq is odd.
    messages_out (id) {
        /// Message id; primary key.
        id -> Text,
        /// Container sequence number: positive and odd, above every seq of both files.
        seq -> Nullable<BigInt>,
        /// Id of the `messages_in` row this answers.
        in_reply_to -> Nullable<Text>,
        /// When it was written (SQLite `datetime('now')` format upstream).
        timestamp -> Text,
        /// Not delivered before this instant (either timestamp format).
        deliver_after -> Nullable<Text>,
        /// Cron expression for a recurring message.
        recurrence -> Nullable<Text>,
        /// Kind of message.
        kind -> Text,
        /// Chat platform address.
        platform_id -> Nullable<Text>,
        /// Chat platform type.
        channel_type -> Nullable<Text>,
        /// Thread within the chat.
        thread_id -> Nullable<Text>,
        /// JSON content; edits, reactions and cards carry their operation inside.
        content -> Text,
    }
}

diesel::table! {
    /// The container's status for each `messages_in` row it touched.
    processing_ack (message_id) {
        /// `messages_in.id`.
        message_id -> Text,
        /// `processing`, `completed` or `failed`.
        status -> Text,
        /// When the status last changed (SQLite `datetime('now')` format upstream).
        status_changed -> Text,
    }
}

diesel::table! {
    /// The container's key/value store (conversation continuations).
    session_state (key) {
        /// Key, e.g. `continuation:claude`.
        key -> Text,
        /// Value.
        value -> Text,
        /// Last write (JavaScript ISO format).
        updated_at -> Text,
    }
}

diesel::table! {
    /// Single row (id = 1): the tool in flight, if any.
    container_state (id) {
        /// Always 1.
        id -> BigInt,
        /// Name of the tool running now.
        current_tool -> Nullable<Text>,
        /// The tool's own declared timeout.
        tool_declared_timeout_ms -> Nullable<BigInt>,
        /// When the tool started (JavaScript ISO format).
        tool_started_at -> Nullable<Text>,
        /// Last write (JavaScript ISO format).
        updated_at -> Text,
    }
}

diesel::table! {
    /// Single row (id = 1): whether the container is working on a batch (this library's
    /// addition, migration 200006; older containers' files lack it). The `.heartbeat` file
    /// says the container is alive; this says it is active.
    container_activity (id) {
        /// Always 1.
        id -> BigInt,
        /// When the batch being handled was claimed (JavaScript ISO format); NULL while idle.
        busy_since -> Nullable<Text>,
        /// Last change (JavaScript ISO format): while idle, when the container became idle.
        updated_at -> Text,
    }
}

diesel::table! {
    /// Why a message's handler failed, for the operator (this library's addition, migration
    /// 200006). The message's `processing` claim stays; the host retries or fails it.
    failure_notes (message_id) {
        /// `messages_in.id`.
        message_id -> Text,
        /// What happened (a panic's message, the handler's error, a missed deadline), at most
        /// 1 KiB.
        reason -> Text,
        /// When it was noted (JavaScript ISO format).
        at -> Text,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    messages_out,
    processing_ack,
    session_state,
    container_state,
    failure_notes,
    container_activity,
);
