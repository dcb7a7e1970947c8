//! The container's operations on the raw baseline: the poll, acks, the reply commit, routing
//! and session state.

use super::{
    in_row, is_due, out_row, placeholders, InRow, RawSession, RoutingRow, IN_CHUNK, IN_COLS,
    OUT_COLS,
};
use crate::bench::fixture::{CHANNEL_TYPE, PLATFORM_ID, THREAD_ID};
use crate::bench::{err, BenchResult};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use std::collections::HashSet;

impl RawSession {
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
