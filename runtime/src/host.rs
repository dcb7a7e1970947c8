//! The host's side: the sweep (liveness, retries, recurrences), delivery, and the command
//! gate in front of inbound.db. Starting and stopping containers stays with the caller through
//! [`ContainerControl`]: the library never shells out to Docker.

use crate::error::RuntimeError;
use crate::gate::{self, GateDecision};
use crate::heartbeat;
use crate::liveness::{
    self, Claim, KillReason, RetryAction, RetryPolicy, StuckDecision, ToolInFlight,
};
use sessionbus_schema::DbError;
use sessionbus_store::{
    DeliveryOutcome, DueOutbound, HostSession, MessageIn, NewHostReply, NewMessage, NextOccurrence,
    NoContainerRunning, RetryUpdate, SessionPaths, SyncReport, Written,
};
use std::path::PathBuf;

/// The caller's control over one session's container.
pub trait ContainerControl {
    /// Whether a container runs for the session now.
    fn is_running(&mut self, session: &SessionPaths) -> bool;
    /// Stops the session's container (and waits until it is gone).
    fn kill(&mut self, session: &SessionPaths, reason: &KillReason) -> Result<(), String>;
    /// Starts a container for the session.
    fn start(&mut self, session: &SessionPaths) -> Result<(), String>;
}

/// Options of a sweep.
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepOptions {
    /// Retries and failures of claimed messages.
    pub retry: RetryPolicy,
    /// Start a container when the session has due messages and none runs.
    pub wake: bool,
}

/// What one sweep of one session did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Acks synced (and recurrences fanned out).
    pub acks: SyncReport,
    /// The stuck decision, when a container was running.
    pub decision: Option<StuckDecision>,
    /// The container was killed by this sweep.
    pub killed: bool,
    /// A hot journal on outbound.db was rolled back (container known stopped).
    pub recovered_hot_journal: bool,
    /// Claimed messages scheduled for another try.
    pub retried: Vec<String>,
    /// Claimed messages marked failed after the last try.
    pub failed: Vec<String>,
    /// Orphan `processing` acks deleted.
    pub orphan_claims_deleted: usize,
    /// A container was started for due messages.
    pub woke: bool,
}

/// One sweep step for one session: sync acks (with recurrences), decide whether a running
/// container is stuck and kill it if so, then, with no container running, roll back a hot
/// journal it left, retry or fail its claimed messages with backoff, and delete the orphan
/// claims; finally wake a container for due messages when asked to.
pub fn sweep_session(
    host: &HostSession,
    control: &mut dyn ContainerControl,
    next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    opts: SweepOptions,
) -> Result<SweepReport, RuntimeError> {
    let paths = host.paths().clone();
    let mut report = SweepReport::default();
    let now = host.clock().now();
    let mut running = control.is_running(&paths);
    if running {
        report.acks = host.sync_acks(next_occurrence)?;
        let decision = decide_now(host)?;
        if let StuckDecision::Kill { reason } = &decision {
            control
                .kill(&paths, reason)
                .map_err(|detail| RuntimeError::Control {
                    session: paths.dir.clone(),
                    action: "kill",
                    detail,
                })?;
            report.killed = true;
            running = false;
        }
        report.decision = Some(decision);
    }
    if !running {
        // Nothing runs: the host may repair and clean the container's file.
        let stopped = host.stopped_container(NoContainerRunning::i_have_stopped_the_container());
        report.recovered_hot_journal = stopped.recover_hot_journal()?;
        let acks = host.sync_acks(next_occurrence)?;
        merge_sync(&mut report.acks, acks);
        let claims = host.outbound().claims()?;
        let mut updates = Vec::new();
        for claim in &claims {
            let Some(msg) = host.inbound().message(&claim.message_id)? else {
                continue;
            };
            if msg.status != sessionbus_store::MessageStatus::Pending {
                continue;
            }
            let after = msg.process_after.as_ref().and_then(|t| t.instant());
            if !liveness::should_bump(after, now) {
                continue;
            }
            match opts.retry.next_retry(msg.tries, now) {
                RetryAction::Retry {
                    tries,
                    process_after,
                } => {
                    report.retried.push(msg.id.clone());
                    updates.push(RetryUpdate::Retry {
                        id: msg.id,
                        tries,
                        process_after,
                    });
                }
                RetryAction::Fail => {
                    report.failed.push(msg.id.clone());
                    updates.push(RetryUpdate::Fail { id: msg.id });
                }
            }
        }
        if !updates.is_empty() {
            host.inbound().apply_retries(&updates)?;
        }
        if !claims.is_empty() {
            report.orphan_claims_deleted = stopped.delete_orphan_claims()?;
        }
        if opts.wake && host.inbound().count_due()? > 0 {
            control
                .start(&paths)
                .map_err(|detail| RuntimeError::Control {
                    session: paths.dir.clone(),
                    action: "start",
                    detail,
                })?;
            report.woke = true;
        }
    }
    Ok(report)
}

fn merge_sync(into: &mut SyncReport, more: SyncReport) {
    into.completed.extend(more.completed);
    into.failed.extend(more.failed);
    into.recurrences.extend(more.recurrences);
}

/// The stuck decision for a session right now, from its heartbeat, tool state and claims.
pub fn decide_now(host: &HostSession) -> Result<StuckDecision, RuntimeError> {
    let now = host.clock().now();
    let beat = heartbeat::mtime(&host.paths().heartbeat)?;
    let tool = host.outbound().container_state()?.and_then(|s| {
        s.current_tool.map(|name| ToolInFlight {
            name,
            declared_timeout_ms: s.tool_declared_timeout_ms,
            started_at: s.tool_started_at.and_then(|t| t.instant()),
        })
    });
    let claims: Vec<Claim> = host
        .outbound()
        .claims()?
        .into_iter()
        .map(|c| Claim {
            claimed_at: c.claimed_at.instant().unwrap_or(now),
            message_id: c.message_id,
        })
        .collect();
    Ok(liveness::decide(now, beat, tool.as_ref(), &claims))
}

/// The caller's link to the chat platform.
pub trait Deliverer {
    /// Hands a row to the platform; returns the platform's id for it, if it gave one. `attempt`
    /// is 1 for the first try; above 1 the row may already have been handed over once (a crash
    /// between hand-off and record), so pass its id as an idempotency key where the platform
    /// has one.
    fn deliver(&mut self, row: &DueOutbound, attempt: i64) -> Result<Option<String>, String>;
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
                host.inbound().note_delivery_error(&id, &e)?;
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

/// What the command gate did with an incoming chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Written to messages_in.
    Written(Written),
    /// A filtered command, dropped silently.
    Filtered {
        /// The command.
        command: String,
    },
    /// An admin command from a non-admin: a denial was written as a host reply to the same
    /// chat and thread, and nothing reached messages_in.
    Denied {
        /// The command.
        command: String,
        /// The denial's seq.
        reply_seq: sessionbus_schema::Seq,
    },
}

/// The command gate in front of inbound.db: classifies a chat message's text (the `text`
/// field of its JSON content) and writes it, drops it, or answers it with a denial.
/// `is_admin` is asked only for admin commands.
pub fn accept_chat(
    host: &HostSession,
    msg: &NewMessage,
    is_admin: impl FnOnce() -> bool,
) -> Result<Accepted, RuntimeError> {
    let text = serde_json::from_str::<serde_json::Value>(&msg.content)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    match gate::classify(&text, is_admin) {
        GateDecision::Pass => Ok(Accepted::Written(host.inbound().write_message(msg)?)),
        GateDecision::Filter { command } => Ok(Accepted::Filtered { command }),
        GateDecision::Deny {
            command,
            reply_text,
        } => {
            let reply = NewHostReply {
                id: format!("{}-denied", msg.id),
                in_reply_to: Some(msg.id.clone()),
                address: msg.address.clone(),
                content: serde_json::json!({ "text": reply_text }).to_string(),
            };
            let reply_seq = host.inbound().write_host_reply(&reply)?;
            Ok(Accepted::Denied { command, reply_seq })
        }
    }
}

/// One session's result in a pass over many.
#[derive(Debug)]
pub struct SessionOutcome<T> {
    /// The session folder.
    pub session: PathBuf,
    /// Its result; an error here did not stop the other sessions.
    pub result: Result<T, RuntimeError>,
}

/// Runs `step` for every session, isolating errors: a corrupt file, a hot journal or a
/// missing folder in one session is reported in its outcome and every other session is still
/// served in the same pass.
pub fn for_each_session<T>(
    sessions: &[HostSession],
    mut step: impl FnMut(&HostSession) -> Result<T, RuntimeError>,
) -> Vec<SessionOutcome<T>> {
    sessions
        .iter()
        .map(|h| SessionOutcome {
            session: h.paths().dir.clone(),
            result: std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(h)))
                .unwrap_or_else(|_| {
                    Err(RuntimeError::Store(sessionbus_store::StoreError::Db(
                        DbError::Io {
                            at: sessionbus_schema::At::new(
                                h.paths().dir.clone(),
                                sessionbus_schema::Role::Host,
                                "session step",
                            ),
                            source: std::io::Error::other("the step panicked"),
                        },
                    )))
                }),
        })
        .collect()
}
