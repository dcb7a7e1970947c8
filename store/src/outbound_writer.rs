//! The container's handle on `outbound.db`, the file it alone writes.

use crate::error::{Result, StoreError};
use crate::fileio::{self, no_seq, OpError};
use crate::inbound_reader::InboundReader;
use crate::model::*;
use crate::rows::{AckRow, OutRow, IN_CHUNK};
use crate::validate::{check_content, check_id};
use diesel::dsl::max;
use diesel::prelude::*;
use diesel::SqliteConnection;
use sessionbus_schema::outbound::{
    container_activity, container_state, failure_notes, messages_out, processing_ack, session_state,
};
use sessionbus_schema::{Clock, DbFile, Seq, Timestamp};
use std::collections::HashSet;
use std::sync::Arc;

/// The longest failure reason kept in `failure_notes` (1 KiB); a longer one is cut at a
/// character boundary and marked with `…`.
pub const MAX_FAILURE_REASON_BYTES: usize = 1024;

/// How many `failure_notes` rows are kept: writing a note drops the oldest beyond this, so a
/// session that fails often cannot grow its file without bound.
pub const MAX_FAILURE_NOTES: i64 = 1000;

/// The legacy key under which older runners kept their one continuation.
pub const LEGACY_CONTINUATION_KEY: &str = "sdk_session_id";

/// The session-state key of a provider's continuation: `continuation:<provider, lower case>`.
pub fn continuation_key(provider: &str) -> String {
    format!("continuation:{}", provider.to_lowercase())
}

/// Writes `outbound.db` (container only; several container processes serialise through
/// SQLite's lock). Every method opens, works in one `BEGIN IMMEDIATE` transaction, and
/// closes. Seqs are allocated inside that transaction, so two writer processes never collide.
#[derive(Clone)]
pub struct OutboundWriter {
    file: DbFile,
    inbound: InboundReader,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for OutboundWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundWriter")
            .field("file", &self.file)
            .finish()
    }
}

impl OutboundWriter {
    pub(crate) fn new(file: DbFile, inbound: InboundReader, clock: Arc<dyn Clock>) -> Self {
        OutboundWriter {
            file,
            inbound,
            clock,
        }
    }

    /// The file this writes.
    pub fn file(&self) -> &DbFile {
        &self.file
    }

    /// Deletes `processing` acks a crashed predecessor left (start-up). Returns how many.
    pub fn clear_stale_claims(&self) -> Result<usize> {
        fileio::write(&self.file, "clear stale processing acks", |c| {
            Ok(diesel::delete(
                processing_ack::table
                    .filter(processing_ack::status.eq(AckStatus::Processing.as_str())),
            )
            .execute(c)?)
        })
    }

    /// Resets the container's state row (start-up): a dead container's tool in flight must not
    /// widen the next container's stuck tolerance, nor its batch in progress make the next one
    /// look busy.
    pub fn reset_container_state(&self) -> Result<()> {
        let now = self.clock.now().to_iso();
        fileio::write(&self.file, "reset container state", |c| {
            write_tool(c, None, None, None, &now)?;
            write_busy(c, None, &now)?;
            Ok(())
        })
    }

    /// Upserts acks for `ids` with `status` and `status_changed = now`, in one transaction.
    pub fn ack(&self, ids: &[String], status: &AckStatus) -> Result<()> {
        let now = self.clock.now();
        fileio::write(&self.file, "ack messages", |c| {
            upsert_acks(c, ids, status, now)?;
            Ok(())
        })
    }

    /// Claims a batch: `processing` acks for `ids` and `container_activity.busy_since = now`, in
    /// one transaction, so the host never sees claims without the busy mark or the other way
    /// round. Returns the claim time (the acks' `status_changed`). End the batch with
    /// [`OutboundWriter::commit_and_finish`], or [`OutboundWriter::note_failure`] when it fails.
    pub fn claim_batch(&self, ids: &[String]) -> Result<Timestamp> {
        let now = self.clock.now();
        let iso = now.to_iso();
        fileio::write(&self.file, "claim batch", |c| {
            upsert_acks(c, ids, &AckStatus::Processing, now)?;
            write_busy(c, Some(&iso), &iso)?;
            Ok(())
        })?;
        Ok(now)
    }

    /// When the batch in progress was claimed ([`OutboundWriter::claim_batch`]); `None` while
    /// idle (own file).
    pub fn busy_since(&self) -> Result<Option<TimeText>> {
        fileio::read_own(&self.file, "read busy mark", |c| {
            Ok(container_activity::table
                .find(1i64)
                .select(container_activity::busy_since)
                .get_result::<Option<String>>(c)
                .optional()?
                .flatten()
                .map(TimeText))
        })
    }

    /// Records why the handler failed on `ids` (one `failure_notes` row each, `reason` cut to
    /// [`MAX_FAILURE_REASON_BYTES`]) and ends the batch (busy mark and tool in flight cleared),
    /// in one transaction. The messages' `processing` claims are left as they are, on purpose:
    /// the host counts a try for each (it retries with backoff, or fails the message after its
    /// limit). Only the newest [`MAX_FAILURE_NOTES`] notes are kept.
    pub fn note_failure(&self, ids: &[String], reason: &str) -> Result<()> {
        let reason = bounded_reason(reason);
        let now = self.clock.now().to_iso();
        fileio::write(&self.file, "note handler failure", |c| {
            for id in ids {
                diesel::replace_into(failure_notes::table)
                    .values((
                        failure_notes::message_id.eq(id),
                        failure_notes::reason.eq(&reason),
                        failure_notes::at.eq(&now),
                    ))
                    .execute(c)?;
            }
            // Keep the newest notes only (the table holds at most this many plus one batch,
            // so the scan is bounded).
            diesel::sql_query(format!(
                "DELETE FROM failure_notes WHERE message_id NOT IN \
                 (SELECT message_id FROM failure_notes ORDER BY at DESC, message_id \
                  LIMIT {MAX_FAILURE_NOTES})"
            ))
            .execute(c)?;
            write_tool(c, None, None, None, &now)?;
            write_busy(c, None, &now)?;
            Ok(())
        })
    }

    /// The failure notes of `ids` (own file; cost bounded by `ids`).
    pub fn failure_notes(&self, ids: &[String]) -> Result<Vec<FailureNote>> {
        fileio::read_own(&self.file, "read failure notes", |c| {
            let mut out = Vec::new();
            for chunk in ids.chunks(IN_CHUNK) {
                let rows: Vec<(String, String, String)> = failure_notes::table
                    .filter(failure_notes::message_id.eq_any(chunk))
                    .select((
                        failure_notes::message_id,
                        failure_notes::reason,
                        failure_notes::at,
                    ))
                    .load(c)?;
                out.extend(
                    rows.into_iter()
                        .map(|(message_id, reason, at)| FailureNote {
                            message_id,
                            reason,
                            at: TimeText(at),
                        }),
                );
            }
            Ok(out)
        })
    }

    /// Writes one outbound message with the next odd seq; see [`OutboundWriter::write_all`].
    pub fn write(&self, msg: &NewOutbound) -> Result<Seq> {
        let mut v = self.write_all(std::slice::from_ref(msg))?;
        v.pop().ok_or_else(|| StoreError::InvalidArgument {
            at: self.file.at("write outbound message"),
            detail: "no result for the message".into(),
        })
    }

    /// Writes outbound messages in one transaction, each with the next odd seq above every
    /// seq of both files (so a reply sorts after what it answers). An id already written with
    /// the same content returns its seq; with other content it is
    /// [`StoreError::DuplicateId`] and nothing is written.
    pub fn write_all(&self, msgs: &[NewOutbound]) -> Result<Vec<Seq>> {
        self.commit(&[], &AckStatus::Completed, msgs)
    }

    /// Commits replies and final acks together, in one transaction of outbound.db: a crash can
    /// never leave a reply written and its message unacked (which would answer it twice after
    /// a restart). `status` is the ack written for every id in `acked`.
    pub fn commit(
        &self,
        acked: &[String],
        status: &AckStatus,
        replies: &[NewOutbound],
    ) -> Result<Vec<Seq>> {
        self.commit_inner(acked, status, replies, false)
    }

    /// [`OutboundWriter::commit`] for the last part of a batch: also clears the busy mark
    /// [`OutboundWriter::claim_batch`] set, in the same transaction.
    pub fn commit_and_finish(
        &self,
        acked: &[String],
        status: &AckStatus,
        replies: &[NewOutbound],
    ) -> Result<Vec<Seq>> {
        self.commit_inner(acked, status, replies, true)
    }

    fn commit_inner(
        &self,
        acked: &[String],
        status: &AckStatus,
        replies: &[NewOutbound],
        finish: bool,
    ) -> Result<Vec<Seq>> {
        const OP: &str = "write outbound messages";
        let at = || self.file.at(OP);
        for m in replies {
            check_id(at, &m.id)?;
            check_content(at, &m.id, &m.content)?;
        }
        let now = self.clock.now();
        let inbound = &self.inbound;
        fileio::write(&self.file, OP, |c| {
            let mut seqs = Vec::with_capacity(replies.len());
            if !replies.is_empty() {
                // A fresh read of the host's file, inside our write transaction.
                let host_max = inbound.max_seq().map_err(OpError::Store)?;
                let own_max: Option<i64> = messages_out::table
                    .select(max(messages_out::seq))
                    .get_result(c)?;
                let mut next =
                    Seq::next_container(host_max.max(own_max.and_then(|n| Seq::new(n).ok())))
                        .map_err(no_seq(at()))?;
                for m in replies {
                    let existing: Option<OutRow> = messages_out::table
                        .find(&m.id)
                        .select(OutRow::as_select())
                        .get_result(c)
                        .optional()?;
                    if let Some(e) = existing.map(MessageOut::from) {
                        // An identical row is an idempotent retry; one without a seq (an older
                        // file) has none to return, so its id counts as taken.
                        if let Some(seq) = e
                            .seq
                            .filter(|_| crate::rows::same_content(&e.content, &m.content))
                        {
                            seqs.push(seq);
                            continue;
                        }
                        return Err(OpError::Store(StoreError::DuplicateId {
                            at: at(),
                            id: m.id.clone(),
                            existing_seq: e.seq,
                            existing_status: "written".into(),
                        }));
                    }
                    insert_outbound(c, m, next, now)?;
                    seqs.push(next);
                    next = next.following().map_err(no_seq(at()))?;
                }
            }
            upsert_acks(c, acked, status, now)?;
            if finish {
                write_busy(c, None, &now.to_iso())?;
            }
            Ok(seqs)
        })
    }

    /// Which of `ids` have any ack (own file; cost bounded by `ids`).
    pub fn acked_among(&self, ids: &[String]) -> Result<HashSet<String>> {
        fileio::read_own(&self.file, "read acks", |c| Ok(acked_among(c, ids)?))
    }

    /// Acks for `ids`.
    pub fn acks(&self, ids: &[String]) -> Result<Vec<Ack>> {
        fileio::read_own(&self.file, "read acks", |c| Ok(acks_for(c, ids)?))
    }

    /// The own `messages_out` row with this seq.
    pub fn message_by_seq(&self, seq: Seq) -> Result<Option<MessageOut>> {
        fileio::read_own(&self.file, "look up outbound message by seq", |c| {
            Ok(messages_out::table
                .filter(messages_out::seq.eq(seq.get()))
                .select(OutRow::as_select())
                .get_result(c)
                .optional()?
                .map(MessageOut::from))
        })
    }

    /// A session-state value.
    pub fn state_get(&self, key: &str) -> Result<Option<String>> {
        fileio::read_own(&self.file, "read session state", |c| {
            Ok(session_state::table
                .find(key)
                .select(session_state::value)
                .get_result(c)
                .optional()?)
        })
    }

    /// Sets a session-state value.
    pub fn state_set(&self, key: &str, value: &str) -> Result<()> {
        let now = self.clock.now().to_iso();
        fileio::write(&self.file, "write session state", |c| {
            diesel::replace_into(session_state::table)
                .values((
                    session_state::key.eq(key),
                    session_state::value.eq(value),
                    session_state::updated_at.eq(&now),
                ))
                .execute(c)?;
            Ok(())
        })
    }

    /// Deletes a session-state value; returns whether it was there.
    pub fn state_delete(&self, key: &str) -> Result<bool> {
        fileio::write(&self.file, "delete session state", |c| {
            Ok(diesel::delete(session_state::table.find(key)).execute(c)? > 0)
        })
    }

    /// The continuation of `provider` (key `continuation:<provider>`).
    pub fn continuation(&self, provider: &str) -> Result<Option<String>> {
        self.state_get(&continuation_key(provider))
    }

    /// Stores the continuation of `provider`.
    pub fn set_continuation(&self, provider: &str, value: &str) -> Result<()> {
        self.state_set(&continuation_key(provider), value)
    }

    /// Adopts a legacy `sdk_session_id` row into `provider`'s key when that has none, and
    /// deletes the legacy row in every case, in one transaction. Returns whether a value was
    /// adopted.
    pub fn adopt_legacy_continuation(&self, provider: &str) -> Result<bool> {
        let key = continuation_key(provider);
        let now = self.clock.now().to_iso();
        fileio::write(&self.file, "adopt legacy continuation", |c| {
            let legacy: Option<String> = session_state::table
                .find(LEGACY_CONTINUATION_KEY)
                .select(session_state::value)
                .get_result(c)
                .optional()?;
            let Some(value) = legacy else {
                return Ok(false);
            };
            let has_current = session_state::table
                .find(&key)
                .count()
                .get_result::<i64>(c)?
                > 0;
            if !has_current {
                diesel::insert_into(session_state::table)
                    .values((
                        session_state::key.eq(&key),
                        session_state::value.eq(&value),
                        session_state::updated_at.eq(&now),
                    ))
                    .execute(c)?;
            }
            diesel::delete(session_state::table.find(LEGACY_CONTINUATION_KEY)).execute(c)?;
            Ok(!has_current)
        })
    }

    /// Records the tool in flight (its declared timeout when it has one).
    pub fn set_tool_in_flight(&self, tool: &str, declared_timeout_ms: Option<i64>) -> Result<()> {
        let now = self.clock.now().to_iso();
        fileio::write(&self.file, "set tool in flight", |c| {
            write_tool(c, Some(tool), declared_timeout_ms, Some(&now), &now)?;
            Ok(())
        })
    }

    /// Clears the tool in flight.
    pub fn clear_tool_in_flight(&self) -> Result<()> {
        let now = self.clock.now().to_iso();
        fileio::write(&self.file, "clear tool in flight", |c| {
            write_tool(c, None, None, None, &now)?;
            Ok(())
        })
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Writes the single `container_state` row: the tool in flight, or none.
fn write_tool(
    c: &mut SqliteConnection,
    tool: Option<&str>,
    declared_timeout_ms: Option<i64>,
    started_at: Option<&str>,
    now: &str,
) -> QueryResult<usize> {
    diesel::replace_into(container_state::table)
        .values((
            container_state::id.eq(1i64),
            container_state::current_tool.eq(tool),
            container_state::tool_declared_timeout_ms.eq(declared_timeout_ms),
            container_state::tool_started_at.eq(started_at),
            container_state::updated_at.eq(now),
        ))
        .execute(c)
}

/// Writes the single `container_activity` row: busy since the given claim time, or idle.
fn write_busy(c: &mut SqliteConnection, busy_since: Option<&str>, now: &str) -> QueryResult<usize> {
    diesel::replace_into(container_activity::table)
        .values((
            container_activity::id.eq(1i64),
            container_activity::busy_since.eq(busy_since),
            container_activity::updated_at.eq(now),
        ))
        .execute(c)
}

/// `reason` within [`MAX_FAILURE_REASON_BYTES`], cut at a character boundary and marked `…`.
fn bounded_reason(reason: &str) -> String {
    if reason.len() <= MAX_FAILURE_REASON_BYTES {
        return reason.to_owned();
    }
    const MARK: &str = "…";
    let mut cut = MAX_FAILURE_REASON_BYTES - MARK.len();
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{MARK}", reason.get(..cut).unwrap_or_default())
}

fn insert_outbound(
    c: &mut SqliteConnection,
    m: &NewOutbound,
    seq: Seq,
    now: Timestamp,
) -> QueryResult<usize> {
    diesel::insert_into(messages_out::table)
        .values((
            messages_out::id.eq(&m.id),
            messages_out::seq.eq(seq.get()),
            messages_out::in_reply_to.eq(&m.in_reply_to),
            messages_out::timestamp.eq(now.to_sqlite()),
            messages_out::deliver_after.eq(m.deliver_after.map(Timestamp::to_sqlite)),
            messages_out::recurrence.eq(&m.recurrence),
            messages_out::kind.eq(m.kind.as_str()),
            messages_out::platform_id.eq(&m.address.platform_id),
            messages_out::channel_type.eq(&m.address.channel_type),
            messages_out::thread_id.eq(&m.address.thread_id),
            messages_out::content.eq(&m.content),
        ))
        .execute(c)
}

fn upsert_acks(
    c: &mut SqliteConnection,
    ids: &[String],
    status: &AckStatus,
    now: Timestamp,
) -> QueryResult<()> {
    // Milliseconds: the host compares the claim time with the heartbeat's mtime, and the
    // container touches the heartbeat just before it claims, within the same second.
    let changed = now.to_sqlite_millis();
    for id in ids {
        diesel::replace_into(processing_ack::table)
            .values((
                processing_ack::message_id.eq(id),
                processing_ack::status.eq(status.as_str()),
                processing_ack::status_changed.eq(&changed),
            ))
            .execute(c)?;
    }
    Ok(())
}

pub(crate) fn acked_among(
    c: &mut SqliteConnection,
    ids: &[String],
) -> QueryResult<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let rows: Vec<String> = processing_ack::table
            .filter(processing_ack::message_id.eq_any(chunk))
            .select(processing_ack::message_id)
            .load(c)?;
        out.extend(rows);
    }
    Ok(out)
}

pub(crate) fn acks_for(c: &mut SqliteConnection, ids: &[String]) -> QueryResult<Vec<Ack>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let rows: Vec<AckRow> = processing_ack::table
            .filter(processing_ack::message_id.eq_any(chunk))
            .select(AckRow::as_select())
            .load(c)?;
        out.extend(rows.into_iter().map(Ack::from));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_a_character_boundary_within_the_limit() {
        assert_eq!(bounded_reason("short"), "short");
        for fill in ["a", "é", "日本", "🦀"] {
            let long = fill.repeat(MAX_FAILURE_REASON_BYTES + 1);
            let cut = bounded_reason(&long);
            assert!(
                cut.len() <= MAX_FAILURE_REASON_BYTES,
                "{fill}: {}",
                cut.len()
            );
            assert!(cut.ends_with('…'));
            assert!(cut.len() > MAX_FAILURE_REASON_BYTES - 8);
        }
        let exact = "a".repeat(MAX_FAILURE_REASON_BYTES);
        assert_eq!(bounded_reason(&exact), exact);
    }
}
