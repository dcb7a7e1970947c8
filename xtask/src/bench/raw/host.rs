//! The host's operations on the raw baseline: writes into inbound.db, ack sync, the due
//! outbound rows and their delivery records, and what the sweep reads.

use super::{
    host_reply_row, in_row, is_due, out_row, placeholders, ClaimRows, InRow, OutRow, RawSession,
    ToolRow, DELIVERY_SCAN, HOST_REPLY_COLS, IN_CHUNK, IN_COLS, OUT_COLS,
};
use crate::bench::fixture::{CHANNEL_TYPE, PLATFORM_ID, THREAD_ID};
use crate::bench::{err, BenchResult};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::collections::HashMap;

impl RawSession {
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
}
