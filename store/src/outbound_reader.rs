//! The host's read-only view of `outbound.db`, a file the container wrote.
//!
//! Every statement here treats the file as attacker input (SPEC rule 5). Connections come from
//! `sessionbus_schema::untrusted` (no-follow, non-blocking, hardened, schema checked), and
//! every value is bounded in the SQL itself: a text column is selected only when its length is
//! within its limit (`octet_length` does not load the value), as bytes (a value that is not
//! UTF-8 refuses its row, not the whole read), and a window of rows stops at
//! [`MAX_PASS_BYTES`] of content. A row that breaks a limit comes back as a
//! [`RefusedRow`] naming the reason, so one hostile row never blocks the rows after it.

use crate::error::Result;
use crate::fileio;
use crate::model::*;
use crate::rows::IN_CHUNK;
use crate::validate::{is_valid_id, MAX_CONTENT_BYTES, MAX_FIELD_BYTES, MAX_ID_BYTES};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use sessionbus_schema::{DbFile, Seq};

/// The most claims [`OutboundReader::claims`] returns.
pub const MAX_CLAIMS_READ: usize = 10_000;

/// How much message content one window of outbound rows loads at most (8 MiB): a window ends
/// early at the row that would cross it (one row is always taken).
pub const MAX_PASS_BYTES: i64 = 8 * 1024 * 1024;

/// Reads `outbound.db` (host side). It has no write method, and its connections are opened
/// read-only through the untrusted-file layer; every call is a fresh open. A hot journal left
/// by a container killed mid-transaction is reported as the retryable
/// [`sessionbus_schema::DbError::HotJournal`] and never rolled back: the next container does
/// that, inside its own sandbox.
#[derive(Debug, Clone)]
pub struct OutboundReader {
    file: DbFile,
}

/// An outbound row the host will not deliver, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedRow {
    /// Its seq.
    pub seq: Seq,
    /// Its id, when the id itself is valid (else it cannot be named).
    pub id: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

/// A window of `messages_out` rows above a seq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundWindow {
    /// The rows, oldest first.
    pub rows: Vec<OutboundRow>,
    /// The window ended at a limit (rows or bytes): rows above its last one were not read.
    pub more: bool,
}

impl OutboundWindow {
    /// The rows within every limit (refused ones left out).
    pub fn messages(&self) -> impl Iterator<Item = &MessageOut> {
        self.rows.iter().filter_map(|r| match r {
            OutboundRow::Message(m) => Some(m),
            OutboundRow::Refused(_) => None,
        })
    }
}

/// One `messages_out` row as the host reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRow {
    /// A row within every limit.
    Message(MessageOut),
    /// A row that breaks a limit; it is settled without delivery.
    Refused(RefusedRow),
}

impl OutboundRow {
    /// The row's seq.
    pub fn seq(&self) -> Seq {
        match self {
            OutboundRow::Message(m) => m.seq.unwrap_or(Seq(0)),
            OutboundRow::Refused(r) => r.seq,
        }
    }
}

/// `CASE WHEN octet_length(c) <= n THEN CAST(c AS BLOB) END AS c` for each bounded column, and
/// a flag for any column over its limit.
fn bounded_columns(cols: &[(&str, usize)]) -> String {
    let mut out = String::new();
    for (c, n) in cols {
        out.push_str(&format!(
            "CASE WHEN octet_length({c}) <= {n} THEN CAST({c} AS BLOB) END AS {c}, "
        ));
    }
    let over: Vec<String> = cols
        .iter()
        .map(|(c, n)| format!("ifnull(octet_length({c}), 0) > {n}"))
        .collect();
    out.push_str(&format!("({}) AS over_limit", over.join(" OR ")));
    out
}

/// Each text column of `messages_out` the host reads, with its limit.
const OUT_COLUMNS: &[(&str, usize)] = &[
    ("id", MAX_ID_BYTES),
    ("in_reply_to", MAX_ID_BYTES),
    ("timestamp", MAX_FIELD_BYTES),
    ("deliver_after", MAX_FIELD_BYTES),
    ("recurrence", MAX_FIELD_BYTES),
    ("kind", MAX_FIELD_BYTES),
    ("platform_id", MAX_FIELD_BYTES),
    ("channel_type", MAX_FIELD_BYTES),
    ("thread_id", MAX_FIELD_BYTES),
    ("content", MAX_CONTENT_BYTES),
];

#[derive(QueryableByName)]
struct SizeRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = BigInt)]
    content_len: i64,
}

#[derive(QueryableByName)]
struct BoundedOutRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    id: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    in_reply_to: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    timestamp: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    deliver_after: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    recurrence: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    kind: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    platform_id: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    channel_type: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    thread_id: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    content: Option<Vec<u8>>,
    #[diesel(sql_type = BigInt)]
    over_limit: i64,
}

/// Bytes to text: `Err` names the column when they are not UTF-8.
fn text(col: &'static str, v: Option<Vec<u8>>) -> std::result::Result<Option<String>, String> {
    v.map(String::from_utf8)
        .transpose()
        .map_err(|_| format!("{col} is not UTF-8"))
}

impl BoundedOutRow {
    fn into_row(self) -> OutboundRow {
        let seq = Seq(self.seq);
        let id = text("id", self.id.clone())
            .ok()
            .flatten()
            .filter(|id| is_valid_id(id));
        let refuse = |reason: String| {
            OutboundRow::Refused(RefusedRow {
                seq,
                id: id.clone(),
                reason,
            })
        };
        if self.over_limit != 0 {
            return refuse("a field is over its length limit".into());
        }
        match self.parse() {
            Ok(m) if id.is_some() => OutboundRow::Message(m),
            Ok(_) => refuse("its id is missing or invalid".into()),
            Err(reason) => refuse(reason),
        }
    }

    fn parse(self) -> std::result::Result<MessageOut, String> {
        let content = text("content", self.content)?.ok_or("content is missing")?;
        // Syntax only, allocating nothing: the host hands the content on as text.
        serde_json::from_str::<serde::de::IgnoredAny>(&content)
            .map_err(|e| format!("content is not JSON: {e}"))?;
        Ok(MessageOut {
            id: text("id", self.id)?.ok_or("id is missing")?,
            seq: Some(Seq(self.seq)),
            in_reply_to: text("in_reply_to", self.in_reply_to)?,
            timestamp: TimeText(text("timestamp", self.timestamp)?.unwrap_or_default()),
            deliver_after: text("deliver_after", self.deliver_after)?.map(TimeText),
            recurrence: text("recurrence", self.recurrence)?,
            kind: MessageKind::from(text("kind", self.kind)?.unwrap_or_default()),
            address: Address {
                platform_id: text("platform_id", self.platform_id)?,
                channel_type: text("channel_type", self.channel_type)?,
                thread_id: text("thread_id", self.thread_id)?,
            },
            content,
        })
    }
}

#[derive(QueryableByName)]
struct BoundedAck {
    #[diesel(sql_type = Binary)]
    message_id: Vec<u8>,
    #[diesel(sql_type = Nullable<Binary>)]
    status: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    status_changed: Option<Vec<u8>>,
}

#[derive(QueryableByName)]
struct BoundedState {
    #[diesel(sql_type = Nullable<Binary>)]
    current_tool: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    tool_declared_timeout_ms: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    tool_started_at: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    updated_at: Option<Vec<u8>>,
}

fn lossy(v: Option<Vec<u8>>) -> Option<String> {
    v.and_then(|b| String::from_utf8(b).ok())
}

impl OutboundReader {
    pub(crate) fn new(file: DbFile) -> Self {
        OutboundReader { file }
    }

    /// The path of the file this reads. (The `DbFile` itself is not handed out: it could be
    /// asked for a writer, and the host has no business holding one for the container's file;
    /// the schema layer refuses that too.)
    pub fn path(&self) -> &std::path::Path {
        self.file.path()
    }

    /// `processing` acks (claims), at most [`MAX_CLAIMS_READ`] of them, bounded like every
    /// read here: for inspection. A sweep reads only the claims of pending messages
    /// ([`crate::HostSession::pending_claims`]), whatever else the file holds.
    pub fn claims(&self) -> Result<Vec<Claim>> {
        fileio::read(&self.file, "read claims", |c| {
            let rows: Vec<BoundedAck> = diesel::sql_query(format!(
                "SELECT CAST(message_id AS BLOB) AS message_id, CAST(status AS BLOB) AS status, \
                   CASE WHEN octet_length(status_changed) <= 64 \
                     THEN CAST(status_changed AS BLOB) END AS status_changed \
                 FROM processing_ack WHERE status = 'processing' \
                   AND octet_length(message_id) <= {MAX_ID_BYTES} LIMIT {MAX_CLAIMS_READ}"
            ))
            .load(c)?;
            Ok(rows
                .into_iter()
                .filter_map(|r| {
                    Some(Claim {
                        message_id: String::from_utf8(r.message_id).ok()?,
                        claimed_at: TimeText(lossy(r.status_changed).unwrap_or_default()),
                    })
                })
                .collect())
        })
    }

    /// Acks for `ids` (primary-key lookups: cost bounded by `ids`, whatever else the file
    /// holds). An ack whose status or time is over its limit or not UTF-8 reads as status
    /// `invalid`, which no rule acts on.
    pub fn acks(&self, ids: &[String]) -> Result<Vec<Ack>> {
        fileio::read(&self.file, "read acks", |c| Ok(acks_on(c, ids)?))
    }

    /// The acks for `ids` and the tool in flight, in one open (what a sweep reads).
    pub fn acks_and_state(&self, ids: &[String]) -> Result<(Vec<Ack>, Option<ContainerState>)> {
        fileio::read(&self.file, "read acks and container state", |c| {
            Ok((acks_on(c, ids)?, container_state_on(c)?))
        })
    }

    /// The container's busy mark (`container_activity.busy_since`, this library's container
    /// only; a missing table or row, or a value over its limit or not a time, reads as none).
    /// The container's word, good for a typing indicator, never for a decision.
    pub fn busy_since(&self) -> Result<Option<sessionbus_schema::Timestamp>> {
        fileio::read(&self.file, "read busy mark", |c| {
            #[derive(QueryableByName)]
            struct Exists {
                #[diesel(sql_type = BigInt)]
                n: i64,
            }
            let exists: Exists = diesel::sql_query(
                "SELECT count(*) AS n FROM sqlite_master \
                 WHERE type = 'table' AND name = 'container_activity'",
            )
            .get_result(c)?;
            if exists.n == 0 {
                return Ok(None);
            }
            #[derive(QueryableByName)]
            struct Busy {
                #[diesel(sql_type = Nullable<Binary>)]
                b: Option<Vec<u8>>,
            }
            let row: Option<Busy> = diesel::sql_query(
                "SELECT CASE WHEN octet_length(busy_since) <= 64 \
                   THEN CAST(busy_since AS BLOB) END AS b FROM container_activity WHERE id = 1",
            )
            .get_result(c)
            .optional()?;
            Ok(row
                .and_then(|r| lossy(r.b))
                .and_then(|t| sessionbus_schema::Timestamp::parse(&t).ok()))
        })
    }

    /// The tool in flight, if the row exists (a missing table reads as none).
    pub fn container_state(&self) -> Result<Option<ContainerState>> {
        fileio::read(&self.file, "read container state", |c| {
            Ok(container_state_on(c)?)
        })
    }

    /// `messages_out` rows with seq above `after`, oldest first: at most `limit` rows and at
    /// most [`MAX_PASS_BYTES`] of content (at least one row when any is there).
    pub fn messages_after(&self, after: Seq, limit: i64) -> Result<OutboundWindow> {
        fileio::read(&self.file, "read outbound messages", |c| {
            Ok(messages_after_on(c, after, limit)?)
        })
    }

    /// `messages_out` rows with these seqs (held rows come due), bounded like
    /// [`OutboundReader::messages_after`].
    pub fn messages_at(&self, seqs: &[Seq]) -> Result<Vec<OutboundRow>> {
        fileio::read(&self.file, "read held outbound messages", |c| {
            let mut out = Vec::new();
            let mut bytes = 0i64;
            for s in seqs {
                if bytes >= MAX_PASS_BYTES {
                    break;
                }
                let rows = window_on(c, s.0 - 1, s.0)?;
                for r in rows {
                    bytes += content_len_of(&r);
                    out.push(r);
                }
            }
            Ok(out)
        })
    }

    /// Runs raw SQL through a fresh hardened read-only connection. Writes fail: SQLite refuses
    /// them. Values are bounded by the connection's limits only, so prefer the typed reads.
    pub fn with_raw_connection<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Result<T> {
        fileio::read_once(&self.file, "raw read", |c| Ok(f(c)?))
    }
}

fn content_len_of(r: &OutboundRow) -> i64 {
    match r {
        OutboundRow::Message(m) => i64::try_from(m.content.len()).unwrap_or(i64::MAX),
        OutboundRow::Refused(_) => 0,
    }
}

/// Acks for `ids`, bounded (see [`OutboundReader::acks`]).
pub(crate) fn acks_on(c: &mut SqliteConnection, ids: &[String]) -> QueryResult<Vec<Ack>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(",");
        let sql = format!(
            "SELECT CAST(message_id AS BLOB) AS message_id, \
               CASE WHEN octet_length(status) <= 32 THEN CAST(status AS BLOB) END AS status, \
               CASE WHEN octet_length(status_changed) <= 64 \
                 THEN CAST(status_changed AS BLOB) END AS status_changed \
             FROM processing_ack WHERE message_id IN ({marks})"
        );
        let mut q = diesel::sql_query(sql).into_boxed();
        for id in chunk {
            q = q.bind::<Text, _>(id);
        }
        let rows: Vec<BoundedAck> = q.load(c)?;
        out.extend(rows.into_iter().filter_map(|r| {
            let status = lossy(r.status).unwrap_or_else(|| "invalid".into());
            Some(Ack {
                message_id: String::from_utf8(r.message_id).ok()?,
                status: AckStatus::from(status),
                status_changed: TimeText(lossy(r.status_changed).unwrap_or_default()),
            })
        }));
    }
    Ok(out)
}

/// The single `container_state` row, bounded; none when the table is absent (generations
/// before G5).
pub(crate) fn container_state_on(c: &mut SqliteConnection) -> QueryResult<Option<ContainerState>> {
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let exists: Exists = diesel::sql_query(
        "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'container_state'",
    )
    .get_result(c)?;
    if exists.n == 0 {
        return Ok(None);
    }
    let row: Option<BoundedState> = diesel::sql_query(format!(
        "SELECT CASE WHEN octet_length(current_tool) <= {MAX_FIELD_BYTES} \
                  THEN CAST(current_tool AS BLOB) END AS current_tool, \
                CASE WHEN typeof(tool_declared_timeout_ms) = 'integer' \
                  THEN tool_declared_timeout_ms END AS tool_declared_timeout_ms, \
                CASE WHEN octet_length(tool_started_at) <= 64 \
                  THEN CAST(tool_started_at AS BLOB) END AS tool_started_at, \
                CASE WHEN octet_length(updated_at) <= 64 \
                  THEN CAST(updated_at AS BLOB) END AS updated_at \
         FROM container_state WHERE id = 1"
    ))
    .get_result(c)
    .optional()?;
    Ok(row.map(|r| ContainerState {
        current_tool: lossy(r.current_tool),
        tool_declared_timeout_ms: r.tool_declared_timeout_ms,
        tool_started_at: lossy(r.tool_started_at).map(TimeText),
        updated_at: lossy(r.updated_at).map(TimeText),
    }))
}

/// Rows above `after`: first their sizes (cheap: `octet_length` reads no content), to cut the
/// window at [`MAX_PASS_BYTES`], then the rows of the window, bounded.
fn messages_after_on(
    c: &mut SqliteConnection,
    after: Seq,
    limit: i64,
) -> QueryResult<OutboundWindow> {
    let limit = limit.max(1);
    let sizes: Vec<SizeRow> = diesel::sql_query(
        "SELECT seq, ifnull(octet_length(content), 0) AS content_len FROM messages_out \
         WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    .bind::<BigInt, _>(after.0)
    .bind::<BigInt, _>(limit)
    .load(c)?;
    let mut total = 0i64;
    let mut last = None;
    let mut taken = 0usize;
    for s in &sizes {
        let len = s.content_len.min(MAX_CONTENT_BYTES as i64 + 1);
        if last.is_some() && total + len > MAX_PASS_BYTES {
            break;
        }
        total += len;
        last = Some(s.seq);
        taken += 1;
    }
    let more = taken < sizes.len() || sizes.len() as i64 >= limit;
    Ok(OutboundWindow {
        rows: match last {
            Some(upto) => window_on(c, after.0, upto)?,
            None => Vec::new(),
        },
        more,
    })
}

/// Rows with `after < seq <= upto`, bounded, oldest first.
fn window_on(c: &mut SqliteConnection, after: i64, upto: i64) -> QueryResult<Vec<OutboundRow>> {
    let rows: Vec<BoundedOutRow> = diesel::sql_query(format!(
        "SELECT seq, {} FROM messages_out WHERE seq > ? AND seq <= ? ORDER BY seq",
        bounded_columns(OUT_COLUMNS)
    ))
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(upto)
    .load(c)?;
    Ok(rows.into_iter().map(BoundedOutRow::into_row).collect())
}
