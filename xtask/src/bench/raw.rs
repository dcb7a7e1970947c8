//! The raw baseline: every library operation the benchmark times, written again directly on
//! SQLite (rusqlite over the same bundled libsqlite3-sys), with the same opens, the same
//! pragmas, the same schema-version check, the same statements in the same transactions and
//! the same durability. It is what the operations would cost with no abstraction at all:
//! statements are plain SQL with literal LIMITs (a bound LIMIT makes SQLite re-prepare the
//! statement on every run), URIs and the known migration versions are computed once, rows are
//! read straight into plain structs.
//!
//! Before each open it makes the same file checks the cross-mount rules require of any
//! implementation (ARCHITECTURE: symlinks and non-SQLite files are refused before SQLite sees
//! them; a reader refuses a WAL-mode header before SQLite could create `-wal`/`-shm` next to
//! it): one `lstat` and a read of the 20-byte header, as the library does. What it leaves out
//! is the library's own work around SQLite: validating ids and JSON content, typed errors,
//! mapping rows into the public model. That is part of what the ratio measures.

mod container;
mod host;
mod open;

use super::fixture::FIXED_MILLIS;
use super::{err, BenchResult};
use sessionbus_schema::{migrate, FileKind, Timestamp};
use sessionbus_store::SessionPaths;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `processing` acks as (message id, claimed at).
pub type ClaimRows = Vec<(String, String)>;

/// Rows per `IN (...)` list, as the library chunks them.
const IN_CHUNK: usize = 500;

/// How many outbound rows above the cursor one delivery read looks at (as the library).
const DELIVERY_SCAN: i64 = 1000;

const IN_COLS: &str = "id, seq, kind, timestamp, status, process_after, recurrence, series_id, \
    tries, trigger, platform_id, channel_type, thread_id, content, source_session_id, on_wake";
const OUT_COLS: &str = "id, seq, in_reply_to, timestamp, deliver_after, recurrence, kind, \
    platform_id, channel_type, thread_id, content";
const HOST_REPLY_COLS: &str =
    "id, seq, in_reply_to, timestamp, kind, platform_id, channel_type, thread_id, content";

/// One session's files, as the raw baseline opens them.
pub struct RawSession {
    inbound: PathBuf,
    outbound: PathBuf,
    in_rw: String,
    in_ro: String,
    out_rw: String,
    out_ro: String,
    heartbeat: PathBuf,
    out_journal: PathBuf,
    in_versions: Vec<String>,
    out_versions: Vec<String>,
    now: Timestamp,
    now_iso: String,
    now_sql: String,
}

/// A `messages_in` row.
#[allow(dead_code)] // every column is read, as the library reads them
pub struct InRow {
    pub id: String,
    pub seq: Option<i64>,
    pub kind: String,
    pub timestamp: String,
    pub status: Option<String>,
    pub process_after: Option<String>,
    pub recurrence: Option<String>,
    pub series_id: Option<String>,
    pub tries: Option<i64>,
    pub trigger: i64,
    pub platform_id: Option<String>,
    pub channel_type: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
    pub source_session_id: Option<String>,
    pub on_wake: i64,
}

/// A `messages_out` (or `host_replies`) row.
#[allow(dead_code)]
pub struct OutRow {
    pub id: String,
    pub seq: Option<i64>,
    pub in_reply_to: Option<String>,
    pub timestamp: String,
    pub deliver_after: Option<String>,
    pub recurrence: Option<String>,
    pub kind: String,
    pub platform_id: Option<String>,
    pub channel_type: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
}

fn in_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InRow> {
    Ok(InRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        kind: r.get(2)?,
        timestamp: r.get(3)?,
        status: r.get(4)?,
        process_after: r.get(5)?,
        recurrence: r.get(6)?,
        series_id: r.get(7)?,
        tries: r.get(8)?,
        trigger: r.get(9)?,
        platform_id: r.get(10)?,
        channel_type: r.get(11)?,
        thread_id: r.get(12)?,
        content: r.get(13)?,
        source_session_id: r.get(14)?,
        on_wake: r.get(15)?,
    })
}

fn out_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutRow> {
    Ok(OutRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        in_reply_to: r.get(2)?,
        timestamp: r.get(3)?,
        deliver_after: r.get(4)?,
        recurrence: r.get(5)?,
        kind: r.get(6)?,
        platform_id: r.get(7)?,
        channel_type: r.get(8)?,
        thread_id: r.get(9)?,
        content: r.get(10)?,
    })
}

fn host_reply_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutRow> {
    Ok(OutRow {
        id: r.get(0)?,
        seq: Some(r.get(1)?),
        in_reply_to: r.get(2)?,
        timestamp: r.get(3)?,
        deliver_after: None,
        recurrence: None,
        kind: r.get(4)?,
        platform_id: r.get(5)?,
        channel_type: r.get(6)?,
        thread_id: r.get(7)?,
        content: r.get(8)?,
    })
}

fn uri(path: &Path, mode: &str) -> BenchResult<String> {
    let abs = std::path::absolute(path).map_err(err)?;
    let mut out = String::from("file:");
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("?mode=");
    out.push_str(mode);
    Ok(out)
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s
}

fn is_due(text: Option<&str>, now: Timestamp) -> bool {
    match text {
        None => true,
        Some(t) => Timestamp::parse(t).map_or(true, |t| t <= now),
    }
}

/// A `session_routing` row: channel type, platform id, thread id.
pub type RoutingRow = (Option<String>, Option<String>, Option<String>);

/// The stuck decision's inputs the raw sweep reads (the decision itself is the library's pure
/// function in both variants).
pub struct ToolRow {
    pub current_tool: Option<String>,
    pub declared_timeout_ms: Option<i64>,
    pub started_at: Option<String>,
}

impl RawSession {
    /// The raw view of a session folder.
    pub fn new(paths: &SessionPaths) -> BenchResult<Self> {
        let now = Timestamp::from_unix_millis(FIXED_MILLIS).ok_or("fixed clock")?;
        let mut journal = paths.outbound.as_os_str().to_owned();
        journal.push("-journal");
        Ok(RawSession {
            inbound: paths.inbound.clone(),
            outbound: paths.outbound.clone(),
            in_rw: uri(&paths.inbound, "rw")?,
            in_ro: uri(&paths.inbound, "ro")?,
            out_rw: uri(&paths.outbound, "rw")?,
            out_ro: uri(&paths.outbound, "ro")?,
            heartbeat: paths.heartbeat.clone(),
            out_journal: PathBuf::from(journal),
            in_versions: migrate::known_versions(FileKind::Inbound),
            out_versions: migrate::known_versions(FileKind::Outbound),
            now,
            now_iso: now.to_iso(),
            now_sql: now.to_sqlite(),
        })
    }

    /// The host's generation stamp after each inbound.db commit, as the library writes it
    /// (`store::stamp`): required work of the design (frozen-mount detection), not abstraction.
    fn stamp_inbound(&self) {
        let _ = sessionbus_store::stamp::stamp(&self.inbound);
    }
}
