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

use super::fixture::{CHANNEL_TYPE, FIXED_MILLIS, PLATFORM_ID, THREAD_ID};
use super::{err, BenchResult};
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use sessionbus_schema::{migrate, FileKind, Timestamp};
use sessionbus_store::SessionPaths;
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `processing` acks as (message id, claimed at).
pub type ClaimRows = Vec<(String, String)>;

/// Diesel's open flags (`SqliteConnection::establish`): the URI's `mode=` decides the access.
const FLAGS: OpenFlags = OpenFlags::SQLITE_OPEN_READ_WRITE
    .union(OpenFlags::SQLITE_OPEN_CREATE)
    .union(OpenFlags::SQLITE_OPEN_URI);

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

    fn check_versions(c: &Connection, known: &[String], write: bool) -> BenchResult<()> {
        let mut st = c
            .prepare("SELECT version FROM __diesel_schema_migrations")
            .map_err(err)?;
        let mut applied: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        applied.sort();
        if let Some(v) = known.iter().find(|v| applied.binary_search(v).is_err()) {
            return Err(format!("file lacks migration {v}"));
        }
        if write {
            if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
                return Err(format!("file is newer than the code: {v}"));
            }
        }
        Ok(())
    }

    /// The checks before an open: not a symlink, a regular file, an SQLite header (or an empty
    /// file); for a reader, not in WAL mode.
    fn precheck(path: &Path, reader: bool) -> BenchResult<()> {
        let meta = std::fs::symlink_metadata(path).map_err(err)?;
        if meta.file_type().is_symlink() || !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let mut f = std::fs::File::open(path).map_err(err)?;
        let mut buf = [0u8; 20];
        let mut n = 0;
        while n < buf.len() {
            match std::io::Read::read(&mut f, &mut buf[n..]).map_err(err)? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(());
        }
        if n < 20 || &buf[..16] != b"SQLite format 3\0" {
            return Err(format!("{}: not an SQLite database", path.display()));
        }
        if reader && (buf[18] == 2 || buf[19] == 2) {
            return Err(format!("{}: WAL mode", path.display()));
        }
        Ok(())
    }

    /// Writer open: `busy_timeout`, `journal_mode` checked (DELETE), `synchronous = FULL`,
    /// `foreign_keys = ON`, the schema-version check.
    fn writer(path: &Path, uri: &str, known: &[String]) -> BenchResult<Connection> {
        Self::precheck(path, false)?;
        let c = Connection::open_with_flags(uri, FLAGS).map_err(err)?;
        c.execute_batch("PRAGMA busy_timeout = 5000").map_err(err)?;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(format!("journal mode {mode}"));
        }
        c.execute_batch("PRAGMA synchronous = FULL").map_err(err)?;
        c.execute_batch("PRAGMA foreign_keys = ON").map_err(err)?;
        Self::check_versions(&c, known, true)?;
        Ok(c)
    }

    /// Reader open: `mode=ro` URI, `busy_timeout`, `mmap_size = 0`, `query_only`, a first read
    /// of `sqlite_master`, the journal-mode check (no WAL), the schema-version check.
    fn reader(path: &Path, uri: &str, known: &[String]) -> BenchResult<Connection> {
        Self::precheck(path, true)?;
        let c = Connection::open_with_flags(uri, FLAGS).map_err(err)?;
        c.execute_batch("PRAGMA busy_timeout = 5000").map_err(err)?;
        c.execute_batch("PRAGMA mmap_size = 0").map_err(err)?;
        c.execute_batch("PRAGMA query_only = ON").map_err(err)?;
        let _n: i64 = c
            .query_row("SELECT count(*) AS n FROM sqlite_master", [], |r| r.get(0))
            .map_err(err)?;
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(err)?;
        if mode.eq_ignore_ascii_case("wal") {
            return Err("WAL mode".into());
        }
        Self::check_versions(&c, known, false)?;
        Ok(c)
    }

    fn in_writer(&self) -> BenchResult<Connection> {
        Self::writer(&self.inbound, &self.in_rw, &self.in_versions)
    }
    fn in_reader(&self) -> BenchResult<Connection> {
        Self::reader(&self.inbound, &self.in_ro, &self.in_versions)
    }
    fn out_writer(&self) -> BenchResult<Connection> {
        Self::writer(&self.outbound, &self.out_rw, &self.out_versions)
    }
    fn out_reader(&self) -> BenchResult<Connection> {
        let c = Self::reader(&self.outbound, &self.out_ro, &self.out_versions)?;
        Self::shape_check(&c)?;
        Ok(c)
    }

    /// The host's check of the container's schema before it reads (`schema::untrusted`'s
    /// shape check, the same statements): at most `MAX_SCHEMA_ENTRIES` entries, no view, every
    /// table read an ordinary table with the columns selected and none generated.
    fn shape_check(c: &Connection) -> BenchResult<()> {
        use sessionbus_schema::untrusted::{HOST_READS_OUTBOUND, MAX_SCHEMA_ENTRIES};
        let mut st = c
            .prepare(&format!(
                "SELECT type AS kind, name, sql FROM sqlite_master LIMIT {}",
                MAX_SCHEMA_ENTRIES + 1
            ))
            .map_err(err)?;
        let rows: Vec<(String, String, Option<String>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if rows.len() as i64 > MAX_SCHEMA_ENTRIES || rows.iter().any(|r| r.0 == "view") {
            return Err("raw: schema refused".into());
        }
        for t in HOST_READS_OUTBOUND {
            let Some(entry) = rows.iter().find(|r| r.1.eq_ignore_ascii_case(t.name)) else {
                if t.required {
                    return Err(format!("raw: table {} is missing", t.name));
                }
                continue;
            };
            let plain = entry.0.eq_ignore_ascii_case("table")
                && entry.2.as_deref().is_some_and(|sql| {
                    sql.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("create table")
                });
            if !plain {
                return Err(format!("raw: {} is not an ordinary table", t.name));
            }
            let mut st = c
                .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1) LIMIT 200")
                .map_err(err)?;
            let columns: Vec<(String, i64)> = st
                .query_map([t.name], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            if columns.iter().any(|c| c.1 != 0)
                || !t
                    .columns
                    .iter()
                    .all(|want| columns.iter().any(|c| c.0.eq_ignore_ascii_case(want)))
            {
                return Err(format!("raw: {} has the wrong columns", t.name));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Host
    // ---------------------------------------------------------------------------------

    /// `InboundWriter::write_messages`: one IMMEDIATE transaction, next even seq above both
    /// host tables, an id lookup and an insert per message.
    pub fn write_messages(&self, msgs: &[(String, String)]) -> BenchResult<Vec<i64>> {
        let mut c = self.in_writer()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let a: Option<i64> = tx
            .query_row("SELECT max(seq) FROM messages_in LIMIT 1", [], |r| r.get(0))
            .map_err(err)?;
        let b: Option<i64> = tx
            .query_row("SELECT max(seq) FROM host_replies LIMIT 1", [], |r| {
                r.get(0)
            })
            .map_err(err)?;
        // The smallest even number above the max, as the library allocates.
        let m = a.max(b).unwrap_or(0).max(0);
        let mut next = m + 2 - m.rem_euclid(2);
        let mut seqs = Vec::with_capacity(msgs.len());
        for (id, content) in msgs {
            let existing = tx
                .prepare_cached(&format!(
                    "SELECT {IN_COLS} FROM messages_in WHERE id = ?1 LIMIT 1"
                ))
                .map_err(err)?
                .query_row([id], in_row)
                .optional()
                .map_err(err)?;
            if let Some(e) = existing {
                seqs.push(e.seq.unwrap_or(0));
                continue;
            }
            tx.prepare_cached(&format!(
                "INSERT INTO messages_in ({IN_COLS}) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            ))
            .map_err(err)?
            .execute(params![
                id,
                next,
                "chat",
                self.now_iso,
                "pending",
                None::<String>,
                None::<String>,
                id,
                0i64,
                1i64,
                PLATFORM_ID,
                CHANNEL_TYPE,
                THREAD_ID,
                content,
                None::<String>,
                0i64
            ])
            .map_err(err)?;
            seqs.push(next);
            next += 2;
        }
        tx.commit().map_err(err)?;
        self.stamp_inbound();
        Ok(seqs)
    }

    /// `HostSession::sync_acks` (no recurrences): pending ids of the own file, their acks from
    /// outbound.db, then the status updates in one transaction.
    pub fn sync_acks(&self) -> BenchResult<usize> {
        Ok(self.sync_acks_counted()?.0)
    }

    /// [`RawSession::sync_acks`], also returning how many messages are still pending (the
    /// library's `SyncReport::still_pending`).
    pub fn sync_acks_counted(&self) -> BenchResult<(usize, usize)> {
        let pending: Vec<String> = {
            let c = self.in_writer()?;
            let mut st = c
                .prepare("SELECT id FROM messages_in WHERE status = ?1")
                .map_err(err)?;
            let v = st
                .query_map(["pending"], |r| r.get(0))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            v
        };
        if pending.is_empty() {
            return Ok((0, 0));
        }
        let acks: Vec<(String, String, String)> = {
            let c = self.out_reader()?;
            let mut out = Vec::new();
            for chunk in pending.chunks(IN_CHUNK) {
                let mut st = c
                    .prepare(&format!(
                        "SELECT message_id, status, status_changed FROM processing_ack \
                         WHERE message_id IN ({})",
                        placeholders(chunk.len())
                    ))
                    .map_err(err)?;
                let rows = st
                    .query_map(params_from_iter(chunk), |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .map_err(err)?;
                for r in rows {
                    out.push(r.map_err(err)?);
                }
            }
            out
        };
        let finals: Vec<&(String, String, String)> = acks
            .iter()
            .filter(|a| a.1 == "completed" || a.1 == "failed")
            .collect();
        if finals.is_empty() {
            return Ok((0, pending.len()));
        }
        let mut c = self.in_writer()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut done = 0;
        for (id, status, _) in finals {
            let status = if status == "completed" {
                "completed"
            } else {
                "failed"
            };
            let n = tx
                .prepare_cached("UPDATE messages_in SET status = ?1 WHERE id = ?2 AND status = ?3")
                .map_err(err)?
                .execute(params![status, id, "pending"])
                .map_err(err)?;
            if n == 0 {
                continue;
            }
            done += 1;
            if status == "completed" {
                let row = tx
                    .prepare_cached(&format!(
                        "SELECT {IN_COLS} FROM messages_in WHERE id = ?1 LIMIT 1"
                    ))
                    .map_err(err)?
                    .query_row([id], in_row)
                    .map_err(err)?;
                if row.recurrence.is_some() {
                    return Err("the raw baseline does not fan out recurrences".into());
                }
            }
        }
        tx.commit().map_err(err)?;
        self.stamp_inbound();
        Ok((done, pending.len().saturating_sub(done)))
    }

    /// `HostSession::due_outbound`: cursors and host replies from the own file, rows above the
    /// cursor from outbound.db, their delivery state from the own file, the cursor advanced
    /// over settled rows, the due rows in seq order.
    pub fn due_outbound(&self, limit: usize) -> BenchResult<Vec<OutRow>> {
        let cursor = |c: &Connection, name: &str| -> BenchResult<i64> {
            Ok(
                c.prepare_cached("SELECT seq FROM host_cursor WHERE name = ?1 LIMIT 1")
                    .map_err(err)?
                    .query_row([name], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(err)?
                    .unwrap_or(0),
            )
        };
        let (out_cursor, host_rows) = {
            let c = self.in_writer()?;
            let oc = cursor(&c, "messages_out")?;
            let hc = cursor(&c, "host_replies")?;
            let mut st = c
                .prepare(&format!(
                    "SELECT {HOST_REPLY_COLS} FROM host_replies WHERE seq > ?1 \
                     ORDER BY seq ASC LIMIT {DELIVERY_SCAN}"
                ))
                .map_err(err)?;
            let rows: Vec<OutRow> = st
                .query_map([hc], host_reply_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            (oc, rows)
        };
        let out_rows: Vec<OutRow> = {
            let c = self.out_reader()?;
            let mut st = c
                .prepare(&format!(
                    "SELECT {OUT_COLS} FROM messages_out WHERE seq > ?1 ORDER BY seq ASC \
                     LIMIT {DELIVERY_SCAN}"
                ))
                .map_err(err)?;
            let v = st
                .query_map([out_cursor], out_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            v
        };
        let ids: Vec<&String> = out_rows
            .iter()
            .chain(host_rows.iter())
            .map(|m| &m.id)
            .collect();
        let mut settled: HashMap<String, Option<String>> = HashMap::new();
        let mut attempts: HashMap<String, i64> = HashMap::new();
        if !ids.is_empty() {
            let c = self.in_writer()?;
            for chunk in ids.chunks(IN_CHUNK) {
                let mut st = c
                    .prepare(&format!(
                        "SELECT message_out_id, platform_message_id FROM delivered \
                         WHERE message_out_id IN ({})",
                        placeholders(chunk.len())
                    ))
                    .map_err(err)?;
                let rows = st
                    .query_map(params_from_iter(chunk), |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(err)?;
                for r in rows {
                    let (k, v) = r.map_err(err)?;
                    settled.insert(k, v);
                }
            }
            for chunk in ids.chunks(IN_CHUNK) {
                let mut st = c
                    .prepare(&format!(
                        "SELECT message_out_id, attempts FROM delivery_attempts \
                         WHERE message_out_id IN ({})",
                        placeholders(chunk.len())
                    ))
                    .map_err(err)?;
                let rows = st
                    .query_map(params_from_iter(chunk), |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(err)?;
                for r in rows {
                    let (k, v) = r.map_err(err)?;
                    attempts.insert(k, v);
                }
            }
        }
        let advance = |rows: &[OutRow]| {
            rows.iter()
                .take_while(|m| settled.contains_key(&m.id))
                .filter_map(|m| m.seq)
                .last()
        };
        let new_out = advance(&out_rows);
        let new_host = advance(&host_rows);
        if new_out.is_some() || new_host.is_some() {
            let mut c = self.in_writer()?;
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(err)?;
            for (name, seq) in [("messages_out", new_out), ("host_replies", new_host)] {
                if let Some(s) = seq {
                    if s > cursor(&tx, name)? {
                        tx.prepare_cached("REPLACE INTO host_cursor (name, seq) VALUES (?1, ?2)")
                            .map_err(err)?
                            .execute(params![name, s])
                            .map_err(err)?;
                    }
                }
            }
            tx.commit().map_err(err)?;
            self.stamp_inbound();
        }
        let now = self.now;
        let mut due: Vec<OutRow> = out_rows
            .into_iter()
            .chain(host_rows)
            .filter(|m| !settled.contains_key(&m.id))
            .filter(|m| is_due(m.deliver_after.as_deref(), now))
            .collect();
        let _ = &attempts;
        due.sort_by_key(|m| m.seq);
        due.truncate(limit);
        Ok(due)
    }

    /// `InboundWriter::record_delivery`.
    pub fn record_delivery(&self, id: &str, platform_id: &str) -> BenchResult<bool> {
        let mut c = self.in_writer()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let n = tx
            .execute(
                "INSERT OR IGNORE INTO delivered (message_out_id, platform_message_id, status, \
                 delivered_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, platform_id, "delivered", self.now_sql],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        self.stamp_inbound();
        Ok(n > 0)
    }

    /// `OutboundReader::claims`.
    pub fn claims(&self) -> BenchResult<ClaimRows> {
        Self::claims_on(&self.out_reader()?)
    }

    /// `OutboundReader::liveness`: the tool in flight and the claims in one open.
    pub fn liveness(&self) -> BenchResult<(Option<ToolRow>, ClaimRows)> {
        let c = self.out_reader()?;
        Ok((Self::tool_on(&c)?, Self::claims_on(&c)?))
    }

    /// `OutboundReader::container_state`.
    pub fn container_state(&self) -> BenchResult<Option<ToolRow>> {
        Self::tool_on(&self.out_reader()?)
    }

    fn claims_on(c: &Connection) -> BenchResult<ClaimRows> {
        let mut st = c
            .prepare("SELECT message_id, status_changed FROM processing_ack WHERE status = ?1")
            .map_err(err)?;
        let v = st
            .query_map(["processing"], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(v)
    }

    fn tool_on(c: &Connection) -> BenchResult<Option<ToolRow>> {
        c.query_row(
            "SELECT current_tool, tool_declared_timeout_ms, tool_started_at, updated_at \
             FROM container_state WHERE id = ?1 LIMIT 1",
            [1i64],
            |r| {
                let _updated: String = r.get(3)?;
                Ok(ToolRow {
                    current_tool: r.get(0)?,
                    declared_timeout_ms: r.get(1)?,
                    started_at: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(err)
    }

    /// `InboundWriter::count_due`.
    pub fn count_due(&self) -> BenchResult<usize> {
        let c = self.in_writer()?;
        let mut st = c
            .prepare("SELECT process_after FROM messages_in WHERE status = ?1 AND trigger = ?2")
            .map_err(err)?;
        let rows: Vec<Option<String>> = st
            .query_map(params!["pending", 1i64], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        Ok(rows
            .iter()
            .filter(|p| is_due(p.as_deref(), self.now))
            .count())
    }

    /// `InboundWriter::message` (the host reading one row of its own file).
    pub fn message(&self, id: &str) -> BenchResult<Option<InRow>> {
        let c = self.in_writer()?;
        c.query_row(
            &format!("SELECT {IN_COLS} FROM messages_in WHERE id = ?1 LIMIT 1"),
            [id],
            in_row,
        )
        .optional()
        .map_err(err)
    }

    /// The heartbeat's mtime in Unix milliseconds (`heartbeat::mtime`).
    pub fn heartbeat_millis(&self) -> BenchResult<Option<i64>> {
        match std::fs::metadata(&self.heartbeat) {
            Ok(m) => {
                let t = m.modified().map_err(err)?;
                let d = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(err)?
                    .as_millis();
                Ok(Some(i64::try_from(d).map_err(err)?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    /// Whether outbound.db has a hot journal next to it (`error::hot_journal`).
    pub fn hot_journal(&self) -> bool {
        matches!(std::fs::metadata(&self.out_journal), Ok(m) if m.len() > 0)
    }

    // ---------------------------------------------------------------------------------
    // Container
    // ---------------------------------------------------------------------------------

    /// `ContainerSession::poll`: pending rows from a fresh read-only open of inbound.db,
    /// filtered, then which of them are acked (own file), newest `limit`, oldest first.
    pub fn poll(&self, first_poll: bool, limit: usize) -> BenchResult<Vec<InRow>> {
        let rows: Vec<InRow> = {
            let c = self.in_reader()?;
            let mut st = c
                .prepare(&format!(
                    "SELECT {IN_COLS} FROM messages_in WHERE status = ?1 ORDER BY seq DESC"
                ))
                .map_err(err)?;
            let v = st
                .query_map(["pending"], in_row)
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            v
        };
        let now = self.now;
        let candidates: Vec<InRow> = rows
            .into_iter()
            .filter(|m| m.kind != "system")
            .filter(|m| first_poll || m.on_wake == 0)
            .filter(|m| is_due(m.process_after.as_deref(), now))
            .collect();
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut acked: HashSet<String> = HashSet::new();
        {
            let c = self.out_writer()?;
            let ids: Vec<&String> = candidates.iter().map(|m| &m.id).collect();
            for chunk in ids.chunks(IN_CHUNK) {
                let mut st = c
                    .prepare(&format!(
                        "SELECT message_id FROM processing_ack WHERE message_id IN ({})",
                        placeholders(chunk.len())
                    ))
                    .map_err(err)?;
                let rows = st
                    .query_map(params_from_iter(chunk), |r| r.get::<_, String>(0))
                    .map_err(err)?;
                for r in rows {
                    acked.insert(r.map_err(err)?);
                }
            }
        }
        let mut batch: Vec<InRow> = candidates
            .into_iter()
            .filter(|m| !acked.contains(&m.id))
            .take(limit)
            .collect();
        batch.reverse();
        Ok(batch)
    }

    fn upsert_acks(tx: &Connection, ids: &[String], status: &str, at: &str) -> BenchResult<()> {
        for id in ids {
            tx.prepare_cached(
                "REPLACE INTO processing_ack (message_id, status, status_changed) \
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(err)?
            .execute(params![id, status, at])
            .map_err(err)?;
        }
        Ok(())
    }

    /// `OutboundWriter::ack`.
    pub fn ack(&self, ids: &[String], status: &str) -> BenchResult<()> {
        let mut c = self.out_writer()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        Self::upsert_acks(&tx, ids, status, &self.now_sql)?;
        tx.commit().map_err(err)
    }

    /// `OutboundWriter::commit`: replies with the next odd seqs (above a fresh read of
    /// inbound.db's max, inside the write transaction) and the final acks, together.
    pub fn commit(
        &self,
        acked: &[String],
        status: &str,
        replies: &[(String, String, String)],
    ) -> BenchResult<Vec<i64>> {
        let mut c = self.out_writer()?;
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut seqs = Vec::with_capacity(replies.len());
        if !replies.is_empty() {
            let host_max = {
                let r = self.in_reader()?;
                let a: Option<i64> = r
                    .query_row("SELECT max(seq) FROM messages_in LIMIT 1", [], |r| r.get(0))
                    .map_err(err)?;
                let b: Option<i64> = r
                    .query_row("SELECT max(seq) FROM host_replies LIMIT 1", [], |r| {
                        r.get(0)
                    })
                    .map_err(err)?;
                a.max(b)
            };
            let own: Option<i64> = tx
                .query_row("SELECT max(seq) FROM messages_out LIMIT 1", [], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            // The smallest odd number above the max of both files.
            let m = host_max.max(own).unwrap_or(0).max(0);
            let mut next = m + 1 + m.rem_euclid(2);
            for (id, in_reply_to, content) in replies {
                let existing = tx
                    .prepare_cached(&format!(
                        "SELECT {OUT_COLS} FROM messages_out WHERE id = ?1 LIMIT 1"
                    ))
                    .map_err(err)?
                    .query_row([id], out_row)
                    .optional()
                    .map_err(err)?;
                if let Some(e) = existing {
                    seqs.push(e.seq.unwrap_or(0));
                    continue;
                }
                tx.prepare_cached(&format!(
                    "INSERT INTO messages_out ({OUT_COLS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ))
                .map_err(err)?
                .execute(params![
                    id,
                    next,
                    in_reply_to,
                    self.now_sql,
                    None::<String>,
                    None::<String>,
                    "chat",
                    PLATFORM_ID,
                    CHANNEL_TYPE,
                    THREAD_ID,
                    content
                ])
                .map_err(err)?;
                seqs.push(next);
                next += 2;
            }
        }
        Self::upsert_acks(&tx, acked, status, &self.now_sql)?;
        tx.commit().map_err(err)?;
        Ok(seqs)
    }

    /// `InboundReader::routing`.
    pub fn routing(&self) -> BenchResult<Option<RoutingRow>> {
        let c = self.in_reader()?;
        c.query_row(
            "SELECT channel_type, platform_id, thread_id FROM session_routing \
             WHERE id = ?1 LIMIT 1",
            [1i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(err)
    }

    /// `OutboundWriter::state_get`.
    pub fn state_get(&self, key: &str) -> BenchResult<Option<String>> {
        let c = self.out_writer()?;
        c.query_row(
            "SELECT value FROM session_state WHERE key = ?1 LIMIT 1",
            [key],
            |r| r.get(0),
        )
        .optional()
        .map_err(err)
    }
}
