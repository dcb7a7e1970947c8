//! Diesel row structs and their conversion into the public model.

use crate::model::*;
use diesel::prelude::*;
use sessionbus_schema::inbound::{destinations, host_replies, messages_in};
use sessionbus_schema::outbound::{container_state, messages_out, processing_ack};
use sessionbus_schema::Seq;

#[derive(Queryable, Selectable)]
#[diesel(table_name = messages_in, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct InRow {
    id: String,
    seq: Option<i64>,
    kind: String,
    timestamp: String,
    status: Option<String>,
    process_after: Option<String>,
    recurrence: Option<String>,
    series_id: Option<String>,
    tries: Option<i64>,
    trigger: i64,
    platform_id: Option<String>,
    channel_type: Option<String>,
    thread_id: Option<String>,
    content: String,
    source_session_id: Option<String>,
    on_wake: i64,
}

impl From<InRow> for MessageIn {
    fn from(r: InRow) -> Self {
        MessageIn {
            id: r.id,
            seq: r.seq.and_then(|n| Seq::new(n).ok()),
            kind: MessageKind::from(r.kind),
            timestamp: TimeText(r.timestamp),
            status: r.status.map_or(MessageStatus::Pending, MessageStatus::from),
            process_after: r.process_after.map(TimeText),
            recurrence: r.recurrence,
            series_id: r.series_id,
            tries: r.tries.unwrap_or(0),
            trigger: r.trigger != 0,
            address: Address {
                platform_id: r.platform_id,
                channel_type: r.channel_type,
                thread_id: r.thread_id,
            },
            content: r.content,
            source_session_id: r.source_session_id,
            on_wake: r.on_wake != 0,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = messages_out, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct OutRow {
    id: String,
    seq: Option<i64>,
    in_reply_to: Option<String>,
    timestamp: String,
    deliver_after: Option<String>,
    recurrence: Option<String>,
    kind: String,
    platform_id: Option<String>,
    channel_type: Option<String>,
    thread_id: Option<String>,
    content: String,
}

impl From<OutRow> for MessageOut {
    fn from(r: OutRow) -> Self {
        MessageOut {
            id: r.id,
            seq: r.seq.and_then(|n| Seq::new(n).ok()),
            in_reply_to: r.in_reply_to,
            timestamp: TimeText(r.timestamp),
            deliver_after: r.deliver_after.map(TimeText),
            recurrence: r.recurrence,
            kind: MessageKind::from(r.kind),
            address: Address {
                platform_id: r.platform_id,
                channel_type: r.channel_type,
                thread_id: r.thread_id,
            },
            content: r.content,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = host_replies, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct HostReplyRow {
    id: String,
    seq: i64,
    in_reply_to: Option<String>,
    timestamp: String,
    kind: String,
    platform_id: Option<String>,
    channel_type: Option<String>,
    thread_id: Option<String>,
    content: String,
}

impl From<HostReplyRow> for MessageOut {
    fn from(r: HostReplyRow) -> Self {
        MessageOut {
            id: r.id,
            seq: Seq::new(r.seq).ok(),
            in_reply_to: r.in_reply_to,
            timestamp: TimeText(r.timestamp),
            deliver_after: None,
            recurrence: None,
            kind: MessageKind::from(r.kind),
            address: Address {
                platform_id: r.platform_id,
                channel_type: r.channel_type,
                thread_id: r.thread_id,
            },
            content: r.content,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = processing_ack, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct AckRow {
    message_id: String,
    status: String,
    status_changed: String,
}

impl From<AckRow> for Ack {
    fn from(r: AckRow) -> Self {
        Ack {
            message_id: r.message_id,
            status: AckStatus::from(r.status),
            status_changed: TimeText(r.status_changed),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = container_state, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct ContainerStateRow {
    current_tool: Option<String>,
    tool_declared_timeout_ms: Option<i64>,
    tool_started_at: Option<String>,
    updated_at: String,
}

impl From<ContainerStateRow> for ContainerState {
    fn from(r: ContainerStateRow) -> Self {
        ContainerState {
            current_tool: r.current_tool,
            tool_declared_timeout_ms: r.tool_declared_timeout_ms,
            tool_started_at: r.tool_started_at.map(TimeText),
            updated_at: Some(TimeText(r.updated_at)),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = destinations, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct DestinationRow {
    name: String,
    display_name: Option<String>,
    type_: String,
    channel_type: Option<String>,
    platform_id: Option<String>,
    agent_group_id: Option<String>,
}

impl From<DestinationRow> for Destination {
    fn from(r: DestinationRow) -> Self {
        Destination {
            name: r.name,
            display_name: r.display_name,
            kind: DestinationType::from(r.type_),
            channel_type: r.channel_type,
            platform_id: r.platform_id,
            agent_group_id: r.agent_group_id,
        }
    }
}

/// JSON equality of two content texts (so that key order or spacing of a retried write does
/// not make it a conflicting duplicate); falls back to text equality when either is not JSON.
pub(crate) fn same_content(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The first `n` rows of `query`, read lazily (SQLite stops stepping when the iterator is
/// dropped).
///
/// Used instead of `.limit(n)` (and single-row lookups use `.get_result()` instead of
/// `.first()`): diesel binds LIMIT as a parameter, and SQLite compiles a bound LIMIT against
/// its current value, so every run of such a statement is re-prepared from scratch on its first
/// step (about a quarter of an idle open-and-query). A primary-key, unique or aggregate lookup
/// has at most one row anyway, and `get_result` takes the first.
pub(crate) fn first_n<'q, Q, U>(
    query: Q,
    c: &mut diesel::SqliteConnection,
    n: i64,
) -> QueryResult<Vec<U>>
where
    Q: diesel::query_dsl::LoadQuery<'q, diesel::SqliteConnection, U>,
{
    let n = usize::try_from(n).unwrap_or(0);
    if n == 0 {
        return Ok(Vec::new());
    }
    query
        .load_iter::<U, diesel::connection::DefaultLoadingMode>(c)?
        .take(n)
        .collect()
}

/// Splits ids into chunks small enough for one `IN (...)` list.
pub(crate) const IN_CHUNK: usize = 500;
