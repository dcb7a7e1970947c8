//! Reading an inbound.db this library did not migrate: the file of an older host, of any
//! generation that has what the container needs.
//!
//! The older host never migrates its files (it patches missing `messages_in` columns on
//! open, nothing else), and a container cannot migrate the host's file (it opens it
//! read-only). So the container serves any inbound.db whose `messages_in` has the columns
//! every generation has; a column a generation lacks reads as its default (`series_id` = the
//! row's id, `trigger` = 1, `source_session_id` = none, `on_wake` = 0, as the older container
//! does for `on_wake`), and a table it lacks reads as empty (`host_replies`, `delivered`'s
//! platform id, `destinations`, `session_routing`). A current file (migrated by this library)
//! takes the typed queries; only a legacy one takes the queries built here.

use crate::model::*;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use sessionbus_schema::Seq;
use std::collections::BTreeSet;

/// What a legacy inbound.db holds, read once per connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegacyShape {
    tables: BTreeSet<String>,
    columns: BTreeSet<String>,
    delivered_columns: BTreeSet<String>,
}

/// The `messages_in` columns of every generation: a file without one of them cannot be
/// served.
const CORE_COLUMNS: &[&str] = &[
    "id",
    "seq",
    "kind",
    "timestamp",
    "status",
    "process_after",
    "recurrence",
    "tries",
    "platform_id",
    "channel_type",
    "thread_id",
    "content",
];

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

impl LegacyShape {
    /// Surveys the file: its tables and the columns of `messages_in` and `delivered`.
    pub(crate) fn read(c: &mut SqliteConnection) -> QueryResult<LegacyShape> {
        let names = |c: &mut SqliteConnection, sql: &str| -> QueryResult<BTreeSet<String>> {
            Ok(diesel::sql_query(sql)
                .load::<Name>(c)?
                .into_iter()
                .map(|n| n.name)
                .collect())
        };
        Ok(LegacyShape {
            tables: names(c, "SELECT name FROM sqlite_master WHERE type = 'table'")?,
            columns: names(c, "SELECT name FROM pragma_table_info('messages_in')")?,
            delivered_columns: names(c, "SELECT name FROM pragma_table_info('delivered')")?,
        })
    }

    /// The core columns the file lacks (empty: it can be served).
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        CORE_COLUMNS
            .iter()
            .copied()
            .filter(|c| !self.columns.contains(*c))
            .collect()
    }

    fn has_table(&self, t: &str) -> bool {
        self.tables.contains(t)
    }

    /// `column`, or its default when this file lacks it.
    fn col(&self, column: &str, default: &str) -> String {
        if self.columns.contains(column) {
            column.to_string()
        } else {
            format!("{default} AS {column}")
        }
    }

    /// The `messages_in` select list, with defaults for the columns this generation lacks.
    fn select_list(&self) -> String {
        format!(
            "id, seq, kind, timestamp, status, process_after, recurrence, {}, tries, {}, \
             platform_id, channel_type, thread_id, content, {}, {}",
            self.col("series_id", "id"),
            self.col("trigger", "1"),
            self.col("source_session_id", "NULL"),
            self.col("on_wake", "0"),
        )
    }

    /// Pending rows, newest seq first.
    pub(crate) fn pending(&self, c: &mut SqliteConnection) -> QueryResult<Vec<MessageIn>> {
        Ok(diesel::sql_query(format!(
            "SELECT {} FROM messages_in WHERE status = 'pending' ORDER BY seq DESC",
            self.select_list()
        ))
        .load::<LegacyRow>(c)?
        .into_iter()
        .map(MessageIn::from)
        .collect())
    }

    /// The row with this seq.
    pub(crate) fn by_seq(
        &self,
        c: &mut SqliteConnection,
        seq: Seq,
    ) -> QueryResult<Option<MessageIn>> {
        Ok(diesel::sql_query(format!(
            "SELECT {} FROM messages_in WHERE seq = ?",
            self.select_list()
        ))
        .bind::<BigInt, _>(seq.0)
        .get_result::<LegacyRow>(c)
        .optional()?
        .map(MessageIn::from))
    }

    /// The largest host seq (over `host_replies` too when the file has it).
    pub(crate) fn max_seq(&self, c: &mut SqliteConnection) -> QueryResult<Option<Seq>> {
        #[derive(QueryableByName)]
        struct Max {
            #[diesel(sql_type = Nullable<BigInt>)]
            m: Option<i64>,
        }
        let sql = if self.has_table("host_replies") {
            "SELECT max((SELECT max(seq) FROM messages_in), \
             coalesce((SELECT max(seq) FROM host_replies), 0)) AS m"
        } else {
            "SELECT max(seq) AS m FROM messages_in"
        };
        Ok(diesel::sql_query(sql).get_result::<Max>(c)?.m.map(Seq))
    }

    /// The platform id a delivered row got (none before generation G1).
    pub(crate) fn platform_id(
        &self,
        c: &mut SqliteConnection,
        id: &str,
    ) -> QueryResult<Option<String>> {
        if !self.delivered_columns.contains("platform_message_id") {
            return Ok(None);
        }
        #[derive(QueryableByName)]
        struct P {
            #[diesel(sql_type = Nullable<Text>)]
            p: Option<String>,
        }
        Ok(diesel::sql_query(
            "SELECT platform_message_id AS p FROM delivered WHERE message_out_id = ?",
        )
        .bind::<Text, _>(id)
        .get_result::<P>(c)
        .optional()?
        .and_then(|r| r.p))
    }

    /// Whether the file has `session_routing` (G3) and `destinations` (G1).
    pub(crate) fn has_routing(&self) -> bool {
        self.has_table("session_routing")
    }

    /// Whether the file has `destinations` (G1 on).
    pub(crate) fn has_destinations(&self) -> bool {
        self.has_table("destinations")
    }

    /// Whether the file has `host_replies` (this library's).
    pub(crate) fn has_host_replies(&self) -> bool {
        self.has_table("host_replies")
    }
}

#[derive(QueryableByName)]
struct LegacyRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    timestamp: String,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    process_after: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    recurrence: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    series_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    tries: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    trigger: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    platform_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    channel_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    thread_id: Option<String>,
    #[diesel(sql_type = Text)]
    content: String,
    #[diesel(sql_type = Nullable<Text>)]
    source_session_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    on_wake: Option<i64>,
}

impl From<LegacyRow> for MessageIn {
    fn from(r: LegacyRow) -> Self {
        MessageIn {
            series_id: r.series_id.or_else(|| Some(r.id.clone())),
            id: r.id,
            seq: r.seq.map(Seq),
            kind: MessageKind::from(r.kind),
            timestamp: TimeText(r.timestamp),
            status: r.status.map_or(MessageStatus::Pending, MessageStatus::from),
            process_after: r.process_after.map(TimeText),
            recurrence: r.recurrence,
            tries: r.tries.unwrap_or(0),
            trigger: r.trigger.unwrap_or(1) != 0,
            address: Address {
                platform_id: r.platform_id,
                channel_type: r.channel_type,
                thread_id: r.thread_id,
            },
            content: r.content,
            source_session_id: r.source_session_id,
            on_wake: r.on_wake.unwrap_or(0) != 0,
        }
    }
}
