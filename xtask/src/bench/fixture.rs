//! Session folders for the benchmark: a provisioned template copied per session, finished
//! history written in bulk in the exact shape the library leaves behind, and a fixed clock.

use super::{err, BenchResult};
use rusqlite::{params, Connection};
use sessionbus_schema::{Clock, SystemClock, Timestamp};
use sessionbus_store::{provision, HostSession, SessionPaths};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The instant the fixed clock shows: 2026-04-21T12:00:00.000Z (as the testkit's clock).
pub const FIXED_MILLIS: i64 = 1_776_772_800_000;

/// A clock that never moves: every write of a run carries the same timestamps, so the library
/// and the raw baseline write byte-identical rows.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(FIXED_MILLIS).unwrap_or_else(|| SystemClock.now())
    }
}

/// The shared trait object the session types take.
pub fn fixed_clock() -> Arc<dyn Clock> {
    Arc::new(FixedClock)
}

/// The chat address every benchmark message carries.
pub const PLATFORM_ID: &str = "C-bench";
/// See [`PLATFORM_ID`].
pub const CHANNEL_TYPE: &str = "slack";
/// See [`PLATFORM_ID`].
pub const THREAD_ID: &str = "T-1";

/// Where a run's session folders are made: a provisioned template, copied per session.
pub struct Sessions {
    base: PathBuf,
    template: SessionPaths,
    next: AtomicU64,
}

impl Sessions {
    /// Provisions the template under `base` (which must exist).
    pub fn new(base: &Path) -> BenchResult<Self> {
        let template = SessionPaths::new(base.join("template"));
        provision(&template, None, &FixedClock).map_err(err)?;
        Ok(Sessions {
            base: base.to_path_buf(),
            template,
            next: AtomicU64::new(0),
        })
    }

    /// A fresh session folder: copies of the template's two files, `inbox/` and `outbox/`.
    pub fn fresh(&self, label: &str) -> BenchResult<SessionPaths> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let paths = SessionPaths::new(self.base.join(format!("{label}-{n}")));
        copy_session(&self.template, &paths)?;
        Ok(paths)
    }

    /// A fresh session folder copied from `from` (a session with history built once).
    pub fn copy_of(&self, from: &SessionPaths, label: &str) -> BenchResult<SessionPaths> {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let paths = SessionPaths::new(self.base.join(format!("{label}-{n}")));
        copy_session(from, &paths)?;
        Ok(paths)
    }
}

fn copy_session(from: &SessionPaths, to: &SessionPaths) -> BenchResult<()> {
    std::fs::create_dir_all(&to.container_dir).map_err(err)?;
    std::fs::copy(&from.inbound, &to.inbound).map_err(err)?;
    std::fs::copy(&from.outbound, &to.outbound).map_err(err)?;
    std::fs::create_dir_all(&to.inbox).map_err(err)?;
    std::fs::create_dir_all(&to.outbox).map_err(err)?;
    Ok(())
}

/// Writes `n` finished round trips into a fresh session in one transaction per file, in the
/// shape the library writes them: `messages_in` rows completed (even seqs 2, 4, ...) with
/// `completed` acks, `messages_out` replies (odd seqs) recorded in `delivered`. Then the
/// delivery cursor is advanced the library's own way, by calling `due_outbound` until it has
/// seen every reply.
pub fn add_history(paths: &SessionPaths, n: u64) -> BenchResult<()> {
    if n == 0 {
        return Ok(());
    }
    let now = FixedClock.now();
    let (iso, sql) = (now.to_iso(), now.to_sqlite());
    {
        let mut c = Connection::open(&paths.inbound).map_err(err)?;
        let tx = c.transaction().map_err(err)?;
        {
            let mut msg = tx
                .prepare(
                    "INSERT INTO messages_in (id, seq, kind, timestamp, status, process_after, \
                     recurrence, series_id, tries, trigger, platform_id, channel_type, thread_id, \
                     content, source_session_id, on_wake) VALUES (?1, ?2, 'chat', ?3, 'completed', \
                     NULL, NULL, ?1, 0, 1, ?4, ?5, ?6, ?7, NULL, 0)",
                )
                .map_err(err)?;
            let mut del = tx
                .prepare(
                    "INSERT INTO delivered (message_out_id, platform_message_id, status, \
                     delivered_at) VALUES (?1, ?2, 'delivered', ?3)",
                )
                .map_err(err)?;
            for i in 1..=n {
                let content = format!("{{\"text\":\"history message {i}\"}}");
                msg.execute(params![
                    format!("h-{i}"),
                    (2 * i) as i64,
                    iso,
                    PLATFORM_ID,
                    CHANNEL_TYPE,
                    THREAD_ID,
                    content
                ])
                .map_err(err)?;
                del.execute(params![format!("r-{i}"), format!("p-{i}"), sql])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
    }
    {
        let mut c = Connection::open(&paths.outbound).map_err(err)?;
        let tx = c.transaction().map_err(err)?;
        {
            let mut out = tx
                .prepare(
                    "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, deliver_after, \
                     recurrence, kind, platform_id, channel_type, thread_id, content) VALUES \
                     (?1, ?2, ?3, ?4, NULL, NULL, 'chat', ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            let mut ack = tx
                .prepare(
                    "INSERT INTO processing_ack (message_id, status, status_changed) VALUES \
                     (?1, 'completed', ?2)",
                )
                .map_err(err)?;
            for i in 1..=n {
                let content = format!("{{\"text\":\"reply to history message {i}\"}}");
                out.execute(params![
                    format!("r-{i}"),
                    (2 * i + 1) as i64,
                    format!("h-{i}"),
                    sql,
                    PLATFORM_ID,
                    CHANNEL_TYPE,
                    THREAD_ID,
                    content
                ])
                .map_err(err)?;
                ack.execute(params![format!("h-{i}"), sql]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
    }
    // The library's delivery read moves the cursor over settled rows, at most its scan
    // window per call: call it until the cursor reaches the last reply.
    let host = HostSession::with_clock(&paths.dir, fixed_clock());
    let last = (2 * n + 1) as i64;
    for _ in 0..(n / 500 + 10) {
        let due = host.due_outbound(100).map_err(err)?;
        if !due.is_empty() {
            return Err(format!("history of {n}: {} rows left due", due.len()));
        }
        if cursor(paths)? >= last {
            return Ok(());
        }
    }
    Err(format!(
        "history of {n}: the delivery cursor did not reach {last}"
    ))
}

/// The `messages_out` delivery cursor of a session (0 when unset).
pub fn cursor(paths: &SessionPaths) -> BenchResult<i64> {
    let c = Connection::open(&paths.inbound).map_err(err)?;
    let v: Option<i64> = c
        .query_row(
            "SELECT seq FROM host_cursor WHERE name = 'messages_out'",
            [],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(err)?;
    Ok(v.unwrap_or(0))
}

/// Touches a session's `.heartbeat` now (a running container's sign of life).
pub fn touch_heartbeat(paths: &SessionPaths) -> BenchResult<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&paths.heartbeat)
        .map_err(err)?;
    f.set_modified(std::time::SystemTime::now()).map_err(err)?;
    Ok(())
}
