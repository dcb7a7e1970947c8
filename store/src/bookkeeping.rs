//! What the host records in its own file about the container's: the claims it saw and
//! settled, the outbound rows it holds for later, and each delivery pass's cursor moves. The
//! host never writes the container's file, so this state lives in inbound.db.

use crate::error::Result;
use crate::fileio;
use crate::inbound_writer::InboundWriter;
use crate::model::*;
use crate::rows::IN_CHUNK;
use diesel::prelude::*;
use diesel::SqliteConnection;
use sessionbus_schema::inbound::{
    claim_records, delivered, held_outbound, host_replies, messages_in,
};
use sessionbus_schema::Timestamp;
use std::collections::{HashMap, HashSet};

/// A claim (`processing` ack) the host has seen, from its own record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClaimRecord {
    /// The claimed message.
    pub message_id: String,
    /// The claim's time as the container wrote it.
    pub claimed_at: TimeText,
    /// The host has counted this claim's try (after its container stopped).
    pub settled: bool,
}

/// What one sweep reads from the host's own file ([`InboundWriter::sweep_view`]), as of one
/// read transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepView {
    /// Ids of the pending messages.
    pub pending: Vec<String>,
    /// The claims recorded for pending messages.
    pub claims: Vec<ClaimRecord>,
    /// A finished recurring message has no next occurrence yet (an ack sync must write even
    /// when no final ack is new).
    pub open_series: bool,
    /// When the host last saw the session do anything (see [`InboundWriter::last_activity`]);
    /// `None` when nothing happened yet or [`SweepViewParts::with_last_activity`] was not asked.
    pub last_activity: Option<Timestamp>,
    /// How many messages are due now (see [`InboundWriter::count_due`]); `None` unless
    /// [`SweepViewParts::with_due`] asked for it.
    pub due: Option<usize>,
}

/// Which of the optional parts of a [`SweepView`] to read (each costs statements on the
/// connection): a sweep of a running container needs no due count, one without an idle limit
/// no last activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepViewParts {
    last_activity: bool,
    due: bool,
}

impl SweepViewParts {
    /// The pending ids, the claim records and whether a series waits; nothing optional.
    pub fn core() -> Self {
        SweepViewParts::default()
    }

    /// Also when the session last did anything.
    pub fn with_last_activity(mut self) -> Self {
        self.last_activity = true;
        self
    }

    /// Also how many messages are due now.
    pub fn with_due(mut self) -> Self {
        self.due = true;
        self
    }
}

impl InboundWriter {
    /// Ids of the pending messages (bounded by what is pending, not by history).
    pub fn pending_ids(&self) -> Result<Vec<String>> {
        fileio::read_own(self.file(), "read pending ids", |c| {
            Ok(crate::inbound_writer::pending_ids(c)?)
        })
    }

    /// When the host last saw this session do anything, from its own file only (the container
    /// cannot move it): the newest message written, the newest outbound row recorded
    /// delivered or failed, the newest claim the host saw. `None` for a session with none of
    /// these yet.
    pub fn last_activity(&self) -> Result<Option<Timestamp>> {
        fileio::read_own(self.file(), "read last activity", |c| {
            Ok(last_activity_on(c)?)
        })
    }

    /// Everything one sweep of the session reads from the host's own file, in one open (each
    /// open costs SQLite a parse of the schema): the pending ids, the claim records, whether
    /// a recurring series waits for its next occurrence, and as `parts` asks, when the session
    /// last did anything and how many messages are due now.
    pub fn sweep_view(&self, parts: SweepViewParts) -> Result<SweepView> {
        let now = self.clock().now();
        fileio::read_own(self.file(), "read the sweep's view", |c| {
            Ok(SweepView {
                pending: crate::inbound_writer::pending_ids(c)?,
                claims: records_on(c)?,
                open_series: crate::inbound_writer::has_open_series(c)?,
                last_activity: if parts.last_activity {
                    last_activity_on(c)?
                } else {
                    None
                },
                due: if parts.due {
                    Some(crate::inbound_writer::count_due_on(c, now)?)
                } else {
                    None
                },
            })
        })
    }

    /// The claims the host has recorded for messages still pending.
    pub fn claim_records(&self) -> Result<Vec<ClaimRecord>> {
        fileio::read_own(self.file(), "read claim records", |c| Ok(records_on(c)?))
    }

    /// Records claims seen in outbound.db (new ones only; a claim is its message and time),
    /// and forgets the records of messages no longer pending. Writes nothing when nothing is
    /// new.
    pub fn record_claims(&self, claims: &[Claim]) -> Result<()> {
        let known: HashSet<(String, String)> = self
            .claim_records()?
            .into_iter()
            .map(|r| (r.message_id, r.claimed_at.0))
            .collect();
        let new: Vec<&Claim> = claims
            .iter()
            .filter(|c| !known.contains(&(c.message_id.clone(), c.claimed_at.0.clone())))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let seen_at = self.clock().now().to_sqlite_millis();
        fileio::write(self.file(), "record claims", |c| {
            for claim in &new {
                diesel::insert_or_ignore_into(claim_records::table)
                    .values((
                        claim_records::message_id.eq(&claim.message_id),
                        claim_records::claimed_at.eq(&claim.claimed_at.0),
                        claim_records::seen_at.eq(&seen_at),
                    ))
                    .execute(c)?;
            }
            forget_finished(c)?;
            Ok(())
        })
    }

    /// Counts the tries of claims whose container stopped, in one transaction: applies
    /// `updates` (retry with backoff, or fail) to messages still pending, and marks each claim
    /// in `claims` settled (recording it first if the host had not seen it), so that it is
    /// never counted again. Returns how many messages changed.
    pub fn settle_claims(&self, claims: &[Claim], updates: &[RetryUpdate]) -> Result<usize> {
        let now = self.clock().now().to_sqlite_millis();
        fileio::write(self.file(), "settle claims", |c| {
            for claim in claims {
                diesel::insert_or_ignore_into(claim_records::table)
                    .values((
                        claim_records::message_id.eq(&claim.message_id),
                        claim_records::claimed_at.eq(&claim.claimed_at.0),
                        claim_records::seen_at.eq(&now),
                    ))
                    .execute(c)?;
                diesel::update(
                    claim_records::table
                        .filter(claim_records::message_id.eq(&claim.message_id))
                        .filter(claim_records::claimed_at.eq(&claim.claimed_at.0)),
                )
                .set(claim_records::settled_at.eq(&now))
                .execute(c)?;
            }
            let n = crate::inbound_writer::apply_retries_on(c, updates)?;
            forget_finished(c)?;
            Ok(n)
        })
    }

    /// One delivery pass's bookkeeping, in one transaction: cursors moved forward, rows held
    /// for later (a row past [`crate::host_session::MAX_HELD_ROWS`] is refused instead), and
    /// refused rows recorded failed.
    pub(crate) fn settle_delivery_pass(
        &self,
        cursors: &HashMap<&'static str, i64>,
        hold: &[(&'static str, i64, String, i64)],
        refused: &[String],
        now: Timestamp,
    ) -> Result<()> {
        fileio::write(self.file(), "settle delivery pass", |c| {
            for (name, seq) in cursors {
                crate::inbound_writer::advance_cursor(c, name, *seq)?;
            }
            let mut held: i64 = held_outbound::table.count().get_result(c)?;
            let mut over = Vec::new();
            for (source, seq, id, at_ms) in hold {
                if held >= crate::host_session::MAX_HELD_ROWS {
                    over.push(id.clone());
                    continue;
                }
                held += diesel::insert_or_ignore_into(held_outbound::table)
                    .values((
                        held_outbound::source.eq(source),
                        held_outbound::seq.eq(seq),
                        held_outbound::message_out_id.eq(id),
                        held_outbound::deliver_after_ms.eq(at_ms),
                    ))
                    .execute(c)? as i64;
            }
            for id in refused.iter().chain(over.iter()) {
                diesel::insert_or_ignore_into(delivered::table)
                    .values((
                        delivered::message_out_id.eq(id),
                        delivered::status.eq(DeliveryStatus::Failed.as_str()),
                        delivered::delivered_at.eq(now.to_sqlite()),
                    ))
                    .execute(c)?;
            }
            Ok(())
        })
    }
}

#[derive(diesel::QueryableByName)]
struct TimeRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

/// Unsettled and settled claim records of pending messages.
fn records_on(c: &mut SqliteConnection) -> QueryResult<Vec<ClaimRecord>> {
    let rows: Vec<(String, String, Option<String>)> = claim_records::table
        .inner_join(messages_in::table.on(messages_in::id.eq(claim_records::message_id)))
        .filter(messages_in::status.eq(MessageStatus::Pending.as_str()))
        .select((
            claim_records::message_id,
            claim_records::claimed_at,
            claim_records::settled_at,
        ))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(message_id, claimed_at, settled_at)| ClaimRecord {
            message_id,
            claimed_at: TimeText(claimed_at),
            settled: settled_at.is_some(),
        })
        .collect())
}

/// The newest of: a message written, an outbound row recorded delivered or failed, a claim
/// seen (see [`InboundWriter::last_activity`]).
fn last_activity_on(c: &mut SqliteConnection) -> QueryResult<Option<Timestamp>> {
    let newest_message: Option<String> = messages_in::table
        .order(messages_in::seq.desc())
        .select(messages_in::timestamp)
        .first(c)
        .optional()?;
    let newest_delivery: Option<String> =
        diesel::sql_query("SELECT delivered_at AS t FROM delivered ORDER BY rowid DESC LIMIT 1")
            .get_result::<TimeRow>(c)
            .optional()?
            .map(|r| r.t);
    let newest_claim: Option<String> = claim_records::table
        .select(diesel::dsl::max(claim_records::seen_at))
        .first::<Option<String>>(c)?;
    Ok([newest_message, newest_delivery, newest_claim]
        .into_iter()
        .flatten()
        .filter_map(|t| Timestamp::parse(&t).ok())
        .max())
}

/// Drops the claim records of messages that are no longer pending (or gone).
fn forget_finished(c: &mut SqliteConnection) -> QueryResult<usize> {
    diesel::sql_query(
        "DELETE FROM claim_records WHERE message_id NOT IN \
         (SELECT id FROM messages_in WHERE status = 'pending')",
    )
    .execute(c)
}

/// Held rows whose time has come: (source, seq), oldest due first.
pub(crate) fn held_due(
    c: &mut SqliteConnection,
    now_ms: i64,
    limit: i64,
) -> QueryResult<Vec<(String, i64)>> {
    held_outbound::table
        .filter(held_outbound::deliver_after_ms.le(now_ms))
        .order(held_outbound::deliver_after_ms.asc())
        .select((held_outbound::source, held_outbound::seq))
        .limit(limit)
        .load(c)
}

/// Which of `ids` are held.
pub(crate) fn held_among(c: &mut SqliteConnection, ids: &[String]) -> QueryResult<HashSet<String>> {
    let mut out = HashSet::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let rows: Vec<String> = held_outbound::table
            .filter(held_outbound::message_out_id.eq_any(chunk))
            .select(held_outbound::message_out_id)
            .load(c)?;
        out.extend(rows);
    }
    Ok(out)
}

/// Forgets a held row once its delivery is recorded.
pub(crate) fn unhold(c: &mut SqliteConnection, message_out_id: &str) -> QueryResult<usize> {
    diesel::delete(held_outbound::table.filter(held_outbound::message_out_id.eq(message_out_id)))
        .execute(c)
}

/// Host replies with these seqs.
pub(crate) fn host_replies_at(
    c: &mut SqliteConnection,
    seqs: &[i64],
) -> QueryResult<Vec<MessageOut>> {
    let mut out = Vec::new();
    for chunk in seqs.chunks(IN_CHUNK) {
        let rows: Vec<crate::rows::HostReplyRow> = host_replies::table
            .filter(host_replies::seq.eq_any(chunk))
            .select(crate::rows::HostReplyRow::as_select())
            .load(c)?;
        out.extend(rows.into_iter().map(MessageOut::from));
    }
    Ok(out)
}
