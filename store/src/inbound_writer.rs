//! The host's handle on `inbound.db`, the file it alone writes.

use crate::error::{Result, StoreError};
use crate::fileio::{self, no_seq, OpError};
use crate::model::*;
use crate::rows::{same_content, InRow, IN_CHUNK};
use crate::validate::{check_content, check_id};
use diesel::dsl::max;
use diesel::prelude::*;
use diesel::SqliteConnection;
use sessionbus_schema::inbound::{
    delivered, delivery_attempts, destinations, host_cursor, host_replies, messages_in,
    session_routing,
};
use sessionbus_schema::{At, Clock, DbFile, Seq, Timestamp};
use std::sync::Arc;

/// Writes `inbound.db` (host only). Every method opens the file, works in one `BEGIN
/// IMMEDIATE` transaction and closes it: there is no long-lived writer connection, and several
/// host threads or processes serialise through SQLite's lock and the busy timeout.
#[derive(Clone)]
pub struct InboundWriter {
    file: DbFile,
    clock: Arc<dyn Clock>,
}

/// What [`crate::HostSession::sync_acks`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Messages marked completed.
    pub completed: Vec<String>,
    /// Messages marked failed (a `failed` ack stays failed).
    pub failed: Vec<String>,
    /// Recurring tasks fanned out: (finished id, new occurrence id, its seq).
    pub recurrences: Vec<(String, String, Seq)>,
    /// Messages still pending after this sync (a sweep skips its due count when there are
    /// none).
    pub still_pending: usize,
}

/// The next occurrence of a recurring task, computed by the caller (cron is the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextOccurrence {
    /// Id of the new row.
    pub id: String,
    /// When it is due.
    pub process_after: Timestamp,
}

/// The `kind` of the `messages_in` mirror of a host reply (see
/// [`InboundWriter::write_host_reply`]); never pending, so never handed to an agent.
pub const HOST_REPLY_KIND: &str = "host-reply";

pub(crate) const CURSOR_MESSAGES_OUT: &str = "messages_out";
pub(crate) const CURSOR_HOST_REPLIES: &str = "host_replies";

impl std::fmt::Debug for InboundWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundWriter")
            .field("file", &self.file)
            .finish()
    }
}

/// The largest host seq in the file (over `messages_in` and `host_replies`).
pub(crate) fn max_host_seq(conn: &mut SqliteConnection) -> QueryResult<Option<Seq>> {
    let a: Option<i64> = messages_in::table
        .select(max(messages_in::seq))
        .get_result(conn)?;
    let b: Option<i64> = host_replies::table
        .select(max(host_replies::seq))
        .get_result(conn)?;
    Ok(a.max(b).and_then(|n| Seq::new(n).ok()))
}

impl InboundWriter {
    pub(crate) fn new(file: DbFile, clock: Arc<dyn Clock>) -> Self {
        InboundWriter { file, clock }
    }

    /// The file this writes.
    pub fn file(&self) -> &DbFile {
        &self.file
    }

    /// Writes one message; see [`InboundWriter::write_messages`].
    pub fn write_message(&self, msg: &NewMessage) -> Result<Written> {
        let mut v = self.write_messages(std::slice::from_ref(msg))?;
        v.pop().ok_or_else(|| StoreError::InvalidArgument {
            at: self.file.at("write message"),
            detail: "no result for the message".into(),
        })
    }

    /// Writes messages in one transaction, each with the next even seq. An id that is already
    /// there with the same kind and content is an idempotent success returning the existing
    /// seq; with other content the whole batch fails with [`StoreError::DuplicateId`] and
    /// nothing is written. Content must be JSON within the size limit.
    pub fn write_messages(&self, msgs: &[NewMessage]) -> Result<Vec<Written>> {
        const OP: &str = "write messages";
        let at = || self.file.at(OP);
        for m in msgs {
            check_id(at, &m.id)?;
            check_content(at, &m.id, &m.content)?;
            if let Some(s) = &m.series_id {
                check_id(at, s)?;
            }
        }
        let now = self.clock.now();
        fileio::write(&self.file, OP, |c| {
            let mut next = Seq::next_host(max_host_seq(c)?).map_err(no_seq(at()))?;
            let mut out = Vec::with_capacity(msgs.len());
            for m in msgs {
                let existing = messages_in::table
                    .find(&m.id)
                    .select(InRow::as_select())
                    .get_result(c)
                    .optional()?
                    .map(MessageIn::from);
                if let Some(e) = existing {
                    // An identical row is an idempotent retry; one written before seqs existed
                    // (an older file) has no seq to return, so its id counts as taken.
                    if let Some(seq) = e
                        .seq
                        .filter(|_| e.kind == m.kind && same_content(&e.content, &m.content))
                    {
                        out.push(Written {
                            seq,
                            created: false,
                        });
                        continue;
                    }
                    return Err(OpError::Store(StoreError::DuplicateId {
                        at: at(),
                        id: m.id.clone(),
                        existing_seq: e.seq,
                        existing_status: e.status.to_string(),
                    }));
                }
                insert_message(c, m, next, now)?;
                out.push(Written {
                    seq: next,
                    created: true,
                });
                next = next.following().map_err(no_seq(at()))?;
            }
            Ok(out)
        })
    }

    /// Writes a reply the host itself originates (the command gate's denial) into
    /// `host_replies`, with a host seq. It is delivered like any outbound row.
    ///
    /// The same transaction writes a mirror of it into `messages_in` (kind
    /// [`HOST_REPLY_KIND`], status `completed`, so never handed to an agent): the older
    /// implementation knows only `messages_in`, and there the reply's seq is seen by its
    /// lookups by seq (an older container can edit or react to it) and by its even-seq
    /// allocation (an older host, on the same file later, never reuses it).
    pub fn write_host_reply(&self, reply: &NewHostReply) -> Result<Seq> {
        const OP: &str = "write host reply";
        let at = || self.file.at(OP);
        check_id(at, &reply.id)?;
        check_content(at, &reply.id, &reply.content)?;
        let now = self.clock.now();
        fileio::write(&self.file, OP, |c| {
            if let Some(seq) = host_replies::table
                .find(&reply.id)
                .select(host_replies::seq)
                .get_result::<i64>(c)
                .optional()?
            {
                return Seq::new(seq).map_err(no_seq(at()));
            }
            let seq = Seq::next_host(max_host_seq(c)?).map_err(no_seq(at()))?;
            diesel::insert_into(host_replies::table)
                .values((
                    host_replies::id.eq(&reply.id),
                    host_replies::seq.eq(seq.get()),
                    host_replies::in_reply_to.eq(&reply.in_reply_to),
                    host_replies::timestamp.eq(now.to_iso()),
                    host_replies::kind.eq(MessageKind::Chat.as_str()),
                    host_replies::platform_id.eq(&reply.address.platform_id),
                    host_replies::channel_type.eq(&reply.address.channel_type),
                    host_replies::thread_id.eq(&reply.address.thread_id),
                    host_replies::content.eq(&reply.content),
                ))
                .execute(c)?;
            diesel::insert_or_ignore_into(messages_in::table)
                .values((
                    messages_in::id.eq(&reply.id),
                    messages_in::seq.eq(seq.get()),
                    messages_in::kind.eq(HOST_REPLY_KIND),
                    messages_in::timestamp.eq(now.to_iso()),
                    messages_in::status.eq(MessageStatus::Completed.as_str()),
                    messages_in::series_id.eq(&reply.id),
                    messages_in::tries.eq(0i64),
                    messages_in::trigger.eq(0i64),
                    messages_in::platform_id.eq(&reply.address.platform_id),
                    messages_in::channel_type.eq(&reply.address.channel_type),
                    messages_in::thread_id.eq(&reply.address.thread_id),
                    messages_in::content.eq(&reply.content),
                    messages_in::on_wake.eq(0i64),
                ))
                .execute(c)?;
            Ok(seq)
        })
    }

    /// Replaces the destinations wholesale (delete and insert in one transaction).
    pub fn replace_destinations(&self, list: &[Destination]) -> Result<()> {
        fileio::write(&self.file, "replace destinations", |c| {
            diesel::delete(destinations::table).execute(c)?;
            for d in list {
                diesel::insert_into(destinations::table)
                    .values((
                        destinations::name.eq(&d.name),
                        destinations::display_name.eq(&d.display_name),
                        destinations::type_.eq(d.kind.as_str()),
                        destinations::channel_type.eq(&d.channel_type),
                        destinations::platform_id.eq(&d.platform_id),
                        destinations::agent_group_id.eq(&d.agent_group_id),
                    ))
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// Sets the session's default reply address.
    pub fn set_routing(&self, routing: &Routing) -> Result<()> {
        fileio::write(&self.file, "set routing", |c| {
            diesel::replace_into(session_routing::table)
                .values((
                    session_routing::id.eq(1i64),
                    session_routing::channel_type.eq(&routing.channel_type),
                    session_routing::platform_id.eq(&routing.platform_id),
                    session_routing::thread_id.eq(&routing.thread_id),
                ))
                .execute(c)?;
            Ok(())
        })
    }

    /// Pending messages, newest seq first (the host reading its own file).
    pub fn pending(&self) -> Result<Vec<MessageIn>> {
        fileio::read_own(&self.file, "read pending messages", |c| {
            Ok(pending_rows(c)?)
        })
    }

    /// How many messages are due: pending, `trigger = 1`, not a `system` answer, and
    /// `process_after` unset or past.
    /// Decides whether to wake a container.
    pub fn count_due(&self) -> Result<usize> {
        let now = self.clock.now();
        fileio::read_own(&self.file, "count due messages", |c| {
            Ok(count_due_on(c, now)?)
        })
    }

    /// One message by id.
    pub fn message(&self, id: &str) -> Result<Option<MessageIn>> {
        fileio::read_own(&self.file, "read message", |c| {
            Ok(messages_in::table
                .find(id)
                .select(InRow::as_select())
                .get_result(c)
                .optional()?
                .map(MessageIn::from))
        })
    }

    /// Applies the sweep's retries and failures in one transaction. Only rows still
    /// `pending` change; returns how many did.
    pub fn apply_retries(&self, updates: &[RetryUpdate]) -> Result<usize> {
        fileio::write(&self.file, "apply retries", |c| {
            Ok(apply_retries_on(c, updates)?)
        })
    }

    /// Sets a message's status (pausing or resuming it, say).
    pub fn set_status(&self, id: &str, status: &MessageStatus) -> Result<bool> {
        fileio::write(&self.file, "set message status", |c| {
            Ok(diesel::update(messages_in::table.find(id))
                .set(messages_in::status.eq(status.as_str()))
                .execute(c)?
                > 0)
        })
    }

    /// For a completed recurring task: inserts its next occurrence (same series, new id,
    /// due at `next.process_after`) and clears the finished row's recurrence, atomically.
    /// Returns the new row's seq, or `None` when the row is not a completed recurring task.
    pub fn schedule_next_occurrence(
        &self,
        finished_id: &str,
        next: &NextOccurrence,
    ) -> Result<Option<Seq>> {
        const OP: &str = "schedule next occurrence";
        check_id(|| self.file.at(OP), &next.id)?;
        let now = self.clock.now();
        fileio::write(&self.file, OP, |c| {
            let row = messages_in::table
                .find(finished_id)
                .select(InRow::as_select())
                .get_result(c)
                .optional()?
                .map(MessageIn::from);
            match row {
                Some(m) if m.status == MessageStatus::Completed && m.recurrence.is_some() => {
                    Ok(Some(fan_out(c, &m, next, now, self.file.at(OP))?))
                }
                _ => Ok(None),
            }
        })
    }

    /// Records a delivery outcome for an outbound row, once: a second record of the same row
    /// is a no-op. Returns whether this call recorded it.
    pub fn record_delivery(&self, message_out_id: &str, outcome: &DeliveryOutcome) -> Result<bool> {
        let now = self.clock.now();
        fileio::write(&self.file, "record delivery", |c| {
            let (status, platform_id) = match outcome {
                DeliveryOutcome::Delivered {
                    platform_message_id,
                } => (DeliveryStatus::Delivered, platform_message_id.clone()),
                DeliveryOutcome::Failed => (DeliveryStatus::Failed, None),
            };
            let n = diesel::insert_or_ignore_into(delivered::table)
                .values((
                    delivered::message_out_id.eq(message_out_id),
                    delivered::platform_message_id.eq(platform_id),
                    delivered::status.eq(status.as_str()),
                    delivered::delivered_at.eq(now.to_sqlite()),
                ))
                .execute(c)?;
            crate::bookkeeping::unhold(c, message_out_id)?;
            Ok(n > 0)
        })
    }

    /// Counts the start of a delivery attempt, in the file (so it survives a host restart),
    /// before the row is handed to the chat platform. Returns the attempt number (1 for the
    /// first).
    pub fn start_delivery_attempt(&self, message_out_id: &str) -> Result<i64> {
        let now = self.clock.now().to_sqlite();
        fileio::write(&self.file, "start delivery attempt", |c| {
            diesel::insert_into(delivery_attempts::table)
                .values((
                    delivery_attempts::message_out_id.eq(message_out_id),
                    delivery_attempts::attempts.eq(1i64),
                    delivery_attempts::last_attempt_at.eq(&now),
                ))
                .on_conflict(delivery_attempts::message_out_id)
                .do_update()
                .set((
                    delivery_attempts::attempts.eq(delivery_attempts::attempts + 1),
                    delivery_attempts::last_attempt_at.eq(&now),
                ))
                .execute(c)?;
            Ok(delivery_attempts::table
                .find(message_out_id)
                .select(delivery_attempts::attempts)
                .get_result(c)?)
        })
    }

    /// Notes why a delivery attempt failed.
    pub fn note_delivery_error(&self, message_out_id: &str, error: &str) -> Result<()> {
        fileio::write(&self.file, "note delivery error", |c| {
            diesel::update(delivery_attempts::table.find(message_out_id))
                .set(delivery_attempts::last_error.eq(error))
                .execute(c)?;
            Ok(())
        })
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Applies retries and failures to rows still pending (inside the caller's transaction).
/// `process_after` keeps milliseconds: a backoff of 500 ms is not rounded to a whole second.
pub(crate) fn apply_retries_on(
    c: &mut SqliteConnection,
    updates: &[RetryUpdate],
) -> QueryResult<usize> {
    let mut n = 0;
    for u in updates {
        let pending =
            messages_in::table.filter(messages_in::status.eq(MessageStatus::Pending.as_str()));
        n += match u {
            RetryUpdate::Retry {
                id,
                tries,
                process_after,
            } => diesel::update(pending.filter(messages_in::id.eq(id)))
                .set((
                    messages_in::tries.eq(*tries),
                    messages_in::process_after.eq(process_after.to_sqlite_millis()),
                ))
                .execute(c)?,
            RetryUpdate::Fail { id } => diesel::update(pending.filter(messages_in::id.eq(id)))
                .set(messages_in::status.eq(MessageStatus::Failed.as_str()))
                .execute(c)?,
        };
    }
    Ok(n)
}

/// Pending rows, newest first, through the `(status, seq)` index.
pub(crate) fn pending_rows(c: &mut SqliteConnection) -> QueryResult<Vec<MessageIn>> {
    Ok(messages_in::table
        .filter(messages_in::status.eq(MessageStatus::Pending.as_str()))
        .order(messages_in::seq.desc())
        .select(InRow::as_select())
        .load(c)?
        .into_iter()
        .map(MessageIn::from)
        .collect())
}

fn insert_message(
    c: &mut SqliteConnection,
    m: &NewMessage,
    seq: Seq,
    now: Timestamp,
) -> QueryResult<usize> {
    diesel::insert_into(messages_in::table)
        .values((
            messages_in::id.eq(&m.id),
            messages_in::seq.eq(seq.get()),
            messages_in::kind.eq(m.kind.as_str()),
            messages_in::timestamp.eq(m.timestamp.unwrap_or(now).to_iso()),
            messages_in::status.eq(MessageStatus::Pending.as_str()),
            messages_in::process_after.eq(m.process_after.map(Timestamp::to_sqlite)),
            messages_in::recurrence.eq(&m.recurrence),
            messages_in::series_id.eq(m.series_id.as_ref().unwrap_or(&m.id)),
            messages_in::tries.eq(0i64),
            messages_in::trigger.eq(i64::from(m.trigger)),
            messages_in::platform_id.eq(&m.address.platform_id),
            messages_in::channel_type.eq(&m.address.channel_type),
            messages_in::thread_id.eq(&m.address.thread_id),
            messages_in::content.eq(&m.content),
            messages_in::source_session_id.eq(&m.source_session_id),
            messages_in::on_wake.eq(i64::from(m.on_wake)),
        ))
        .execute(c)
}

/// Inserts the next occurrence of `finished` and clears its recurrence (inside the caller's
/// transaction).
pub(crate) fn fan_out(
    c: &mut SqliteConnection,
    finished: &MessageIn,
    next: &NextOccurrence,
    now: Timestamp,
    at: At,
) -> Result<Seq, OpError> {
    let seq = Seq::next_host(max_host_seq(c)?).map_err(no_seq(at))?;
    let msg = NewMessage {
        id: next.id.clone(),
        kind: finished.kind.clone(),
        content: finished.content.clone(),
        address: finished.address.clone(),
        process_after: Some(next.process_after),
        recurrence: finished.recurrence.clone(),
        series_id: Some(
            finished
                .series_id
                .clone()
                .unwrap_or_else(|| finished.id.clone()),
        ),
        trigger: finished.trigger,
        on_wake: false,
        source_session_id: finished.source_session_id.clone(),
        timestamp: Some(now),
    };
    insert_message(c, &msg, seq, now)?;
    diesel::update(messages_in::table.find(&finished.id))
        .set(messages_in::recurrence.eq(None::<String>))
        .execute(c)?;
    Ok(seq)
}

/// Marks pending rows finished from their final acks, and continues the series of recurring
/// tasks among them (a failed run continues its series too, as the older host does).
pub(crate) fn apply_final_acks(
    c: &mut SqliteConnection,
    file: &DbFile,
    acks: &[Ack],
    next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    now: Timestamp,
) -> Result<SyncReport, OpError> {
    let mut report = SyncReport::default();
    for ack in acks {
        let status = match ack.status {
            AckStatus::Completed => MessageStatus::Completed,
            AckStatus::Failed => MessageStatus::Failed,
            _ => continue,
        };
        let n = diesel::update(
            messages_in::table
                .find(&ack.message_id)
                .filter(messages_in::status.eq(MessageStatus::Pending.as_str())),
        )
        .set(messages_in::status.eq(status.as_str()))
        .execute(c)?;
        if n == 0 {
            continue;
        }
        if status == MessageStatus::Failed {
            report.failed.push(ack.message_id.clone());
        } else {
            report.completed.push(ack.message_id.clone());
        }
    }
    continue_series(c, file, next_occurrence, now, &mut report)?;
    Ok(report)
}

/// Every finished row that still carries a recurrence gets its series continued exactly once,
/// whoever finished it: when a later row of the series already exists (the older host inserts
/// the next occurrence, then clears the recurrence in a second statement, and can die between
/// them) only the recurrence is cleared; else `next_occurrence` is asked for the next one,
/// inserted with the recurrence cleared, atomically (inside the caller's transaction).
pub(crate) fn continue_series(
    c: &mut SqliteConnection,
    file: &DbFile,
    next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    now: Timestamp,
    report: &mut SyncReport,
) -> Result<(), OpError> {
    let finished: Vec<MessageIn> = messages_in::table
        .filter(messages_in::recurrence.is_not_null())
        .filter(messages_in::status.eq_any([
            MessageStatus::Completed.as_str(),
            MessageStatus::Failed.as_str(),
        ]))
        .order(messages_in::seq.asc())
        .select(InRow::as_select())
        .load(c)?
        .into_iter()
        .map(MessageIn::from)
        .collect();
    for row in finished {
        let series = row.series_id.clone().unwrap_or_else(|| row.id.clone());
        let later = messages_in::table
            .filter(messages_in::series_id.eq(&series))
            .filter(messages_in::seq.gt(row.seq.map_or(i64::MAX, Seq::get)))
            .count()
            .get_result::<i64>(c)?
            > 0;
        if !later {
            let Some(next) = next_occurrence(&row) else {
                continue;
            };
            check_id(|| file.at("fan out recurrence"), &next.id)?;
            let exists = messages_in::table
                .find(&next.id)
                .count()
                .get_result::<i64>(c)?
                > 0;
            if !exists {
                let seq = fan_out(c, &row, &next, now, file.at("fan out recurrence"))?;
                report.recurrences.push((row.id.clone(), next.id, seq));
                continue;
            }
        }
        diesel::update(messages_in::table.find(&row.id))
            .set(messages_in::recurrence.eq(None::<String>))
            .execute(c)?;
    }
    Ok(())
}

/// True when a finished row still carries a recurrence (through the partial index).
pub(crate) fn has_open_series(c: &mut SqliteConnection) -> QueryResult<bool> {
    Ok(messages_in::table
        .filter(messages_in::recurrence.is_not_null())
        .filter(messages_in::status.eq_any([
            MessageStatus::Completed.as_str(),
            MessageStatus::Failed.as_str(),
        ]))
        .select(messages_in::id)
        .first::<String>(c)
        .optional()?
        .is_some())
}

/// How many messages are due at `now` (see [`InboundWriter::count_due`]).
pub(crate) fn count_due_on(c: &mut SqliteConnection, now: Timestamp) -> QueryResult<usize> {
    // `system` rows are answers to a running agent's own question: they never wake one.
    let rows: Vec<Option<String>> = messages_in::table
        .filter(messages_in::status.eq(MessageStatus::Pending.as_str()))
        .filter(messages_in::trigger.eq(1))
        .filter(messages_in::kind.ne(MessageKind::System.as_str()))
        .select(messages_in::process_after)
        .load(c)?;
    Ok(rows
        .into_iter()
        .filter(|p| p.as_ref().is_none_or(|t| TimeText(t.clone()).is_due(now)))
        .count())
}

/// Pending ids of the host's own file (bounded by what is pending, not by history).
pub(crate) fn pending_ids(c: &mut SqliteConnection) -> QueryResult<Vec<String>> {
    messages_in::table
        .filter(messages_in::status.eq(MessageStatus::Pending.as_str()))
        .select(messages_in::id)
        .load(c)
}

/// A named cursor's seq (0 when unset).
pub(crate) fn cursor(c: &mut SqliteConnection, name: &str) -> QueryResult<i64> {
    Ok(host_cursor::table
        .find(name)
        .select(host_cursor::seq)
        .get_result(c)
        .optional()?
        .unwrap_or(0))
}

/// Moves a named cursor forward (never back).
pub(crate) fn advance_cursor(c: &mut SqliteConnection, name: &str, seq: i64) -> QueryResult<()> {
    if seq > cursor(c, name)? {
        diesel::replace_into(host_cursor::table)
            .values((host_cursor::name.eq(name), host_cursor::seq.eq(seq)))
            .execute(c)?;
    }
    Ok(())
}

/// Which of `ids` have a `delivered` row.
pub(crate) fn delivered_among(
    c: &mut SqliteConnection,
    ids: &[String],
) -> QueryResult<std::collections::HashMap<String, Option<String>>> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let rows: Vec<(String, Option<String>)> = delivered::table
            .filter(delivered::message_out_id.eq_any(chunk))
            .select((delivered::message_out_id, delivered::platform_message_id))
            .load(c)?;
        out.extend(rows);
    }
    Ok(out)
}

/// Delivery attempts for `ids`.
pub(crate) fn attempts_among(
    c: &mut SqliteConnection,
    ids: &[String],
) -> QueryResult<std::collections::HashMap<String, i64>> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let rows: Vec<(String, i64)> = delivery_attempts::table
            .filter(delivery_attempts::message_out_id.eq_any(chunk))
            .select((
                delivery_attempts::message_out_id,
                delivery_attempts::attempts,
            ))
            .load(c)?;
        out.extend(rows);
    }
    Ok(out)
}

/// Host replies above `after`, oldest first.
pub(crate) fn host_replies_after(
    c: &mut SqliteConnection,
    after: i64,
    limit: i64,
) -> QueryResult<Vec<MessageOut>> {
    // `take` instead of `.limit()`: a bound LIMIT makes SQLite re-prepare the statement on
    // every run (see `crate::rows::first_n`).
    crate::rows::first_n(
        host_replies::table
            .filter(host_replies::seq.gt(after))
            .order(host_replies::seq.asc())
            .select(crate::rows::HostReplyRow::as_select()),
        c,
        limit,
    )
    .map(|rows| rows.into_iter().map(MessageOut::from).collect())
}
