//! Delivery: handing due outbound rows to the chat platform, attempts counted in inbound.db.

use crate::error::RuntimeError;
use sessionbus_store::{DeliveryOutcome, DueOutbound, HostSession, SessionPaths};

/// The caller's link to the chat platform.
pub trait Deliverer {
    /// Hands a row of `session` to the platform; returns the platform's id for it, if it gave
    /// one. `attempt` is 1 for the first try; above 1 the row may already have been handed
    /// over once (a crash between hand-off and record), so pass its id as an idempotency key
    /// where the platform has one.
    fn deliver(
        &mut self,
        session: &SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> Result<Option<String>, crate::control::CallerError>;
}

/// What a delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Rows delivered, with their seq order kept.
    pub delivered: Vec<DueOutbound>,
    /// Rows given up on after `max_attempts`.
    pub failed: Vec<String>,
    /// Rows whose attempt failed and will be tried again.
    pub deferred: Vec<String>,
}

/// Delivers every due outbound row of a session, oldest first. Each attempt is counted in
/// inbound.db before the hand-off, so attempts survive a host restart; a crash between the
/// hand-off and the record re-delivers the row (at-least-once: losing a reply is worse than a
/// repeat). After `max_attempts` failed attempts the row is recorded failed.
pub fn deliver_session(
    host: &HostSession,
    deliverer: &mut dyn Deliverer,
    max_attempts: i64,
) -> Result<DeliveryReport, RuntimeError> {
    let mut report = DeliveryReport::default();
    for row in host.due_outbound(DELIVERY_BATCH)? {
        let attempt = match begin_attempt(host, &row, max_attempts)? {
            Begun::GaveUp => {
                report.failed.push(row.message.id);
                continue;
            }
            Begun::Attempt(attempt) => attempt,
        };
        let handed = deliverer.deliver(host.paths(), &row, attempt);
        let finished = finish_attempt(host, &row.message.id, attempt, handed, max_attempts)?;
        report.note(row, finished);
    }
    Ok(report)
}

/// How many due rows one delivery pass reads at most.
pub(crate) const DELIVERY_BATCH: usize = 1000;

/// What [`begin_attempt`] did with a due row.
pub(crate) enum Begun {
    /// The row had used up its attempts: recorded failed, not to be handed over.
    GaveUp,
    /// This attempt (1 for the first) was counted: hand the row over now.
    Attempt(i64),
}

/// How a hand-off ended, as recorded by [`finish_attempt`].
pub(crate) enum Finished {
    /// Recorded delivered.
    Delivered,
    /// Recorded failed after its last attempt.
    Failed,
    /// The attempt failed; the row is tried again on a later pass.
    Deferred,
}

/// Before a hand-off: gives up on a row past `max_attempts` (recorded failed), else counts
/// the attempt in inbound.db. One transaction.
pub(crate) fn begin_attempt(
    host: &HostSession,
    row: &DueOutbound,
    max_attempts: i64,
) -> Result<Begun, RuntimeError> {
    let id = &row.message.id;
    if row.attempts >= max_attempts {
        host.inbound()
            .record_delivery(id, &DeliveryOutcome::Failed)?;
        return Ok(Begun::GaveUp);
    }
    Ok(Begun::Attempt(host.inbound().start_delivery_attempt(id)?))
}

/// After a hand-off: records its outcome (delivered; or the error noted, and the row failed
/// after its last attempt).
pub(crate) fn finish_attempt(
    host: &HostSession,
    id: &str,
    attempt: i64,
    handed: Result<Option<String>, crate::control::CallerError>,
    max_attempts: i64,
) -> Result<Finished, RuntimeError> {
    match handed {
        Ok(platform_message_id) => {
            host.inbound().record_delivery(
                id,
                &DeliveryOutcome::Delivered {
                    platform_message_id,
                },
            )?;
            Ok(Finished::Delivered)
        }
        Err(e) => {
            host.inbound().note_delivery_error(id, &e.to_string())?;
            if attempt >= max_attempts {
                host.inbound()
                    .record_delivery(id, &DeliveryOutcome::Failed)?;
                Ok(Finished::Failed)
            } else {
                Ok(Finished::Deferred)
            }
        }
    }
}

impl DeliveryReport {
    /// Adds a finished hand-off of `row` to the report.
    pub(crate) fn note(&mut self, row: DueOutbound, finished: Finished) {
        match finished {
            Finished::Delivered => self.delivered.push(row),
            Finished::Failed => self.failed.push(row.message.id),
            Finished::Deferred => self.deferred.push(row.message.id),
        }
    }
}
