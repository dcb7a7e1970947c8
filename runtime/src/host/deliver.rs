//! Delivery: handing due outbound rows to the chat platform, attempts counted in inbound.db.

use crate::error::RuntimeError;
use sessionbus_store::{DeliveryOutcome, DueOutbound, HostSession};

/// The caller's link to the chat platform.
pub trait Deliverer {
    /// Hands a row to the platform; returns the platform's id for it, if it gave one. `attempt`
    /// is 1 for the first try; above 1 the row may already have been handed over once (a crash
    /// between hand-off and record), so pass its id as an idempotency key where the platform
    /// has one.
    fn deliver(
        &mut self,
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
    for row in host.due_outbound(1000)? {
        let id = row.message.id.clone();
        if row.attempts >= max_attempts {
            host.inbound()
                .record_delivery(&id, &DeliveryOutcome::Failed)?;
            report.failed.push(id);
            continue;
        }
        let attempt = host.inbound().start_delivery_attempt(&id)?;
        match deliverer.deliver(&row, attempt) {
            Ok(platform_message_id) => {
                host.inbound().record_delivery(
                    &id,
                    &DeliveryOutcome::Delivered {
                        platform_message_id,
                    },
                )?;
                report.delivered.push(row);
            }
            Err(e) => {
                host.inbound().note_delivery_error(&id, &e.to_string())?;
                if attempt >= max_attempts {
                    host.inbound()
                        .record_delivery(&id, &DeliveryOutcome::Failed)?;
                    report.failed.push(id);
                } else {
                    report.deferred.push(id);
                }
            }
        }
    }
    Ok(report)
}
