//! One sweep of one session: sync acks, judge a running container, settle the claims of a
//! stopped one, wake one for due messages.
//!
//! Claims are settled in the host's own file. A claim (`processing` ack) is the container's
//! statement that it took a message; when its container stops without answering, the message
//! gets a try counted and a backoff (or fails after the last try). The host records each claim
//! it sees and marks it settled once counted, so that:
//!
//! - the claim can stay in outbound.db (the next container clears it at start-up; the host
//!   never writes there) without being counted twice or killing the next container;
//! - a claim that disappears without an answer (a container that cleared it, or was
//!   restarted behind the host's back) is still counted, from the host's record;
//! - a container whose file cannot be read (locked, a hot journal, a hostile schema) is still
//!   judged by its heartbeat and by the claims the host saw earlier.

use super::ContainerControl;
use crate::error::RuntimeError;
use crate::heartbeat;
use crate::liveness::{
    self, Claim, KillReason, RetryAction, RetryPolicy, StuckDecision, ToolInFlight,
};
use sessionbus_schema::Timestamp;
use sessionbus_store::{
    AckStatus, ClaimRecord, ContainerState, HostSession, MessageIn, MessageStatus, NextOccurrence,
    RetryUpdate, SweepView, SweepViewParts, SyncReport, TimeText,
};
use std::collections::{BTreeMap, HashSet};

/// Options of a sweep.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SweepOptions {
    /// Retries and failures of claimed messages.
    pub retry: RetryPolicy,
    /// Start a container when the session has due messages and none runs (default: true; a
    /// host that starts containers by other means turns it off).
    pub wake: bool,
    /// Stop a running container once nothing is pending and nothing happened for this long
    /// (default 30 minutes; `None` keeps idle containers). "Happened" is what the host itself
    /// saw (see [`sessionbus_store::InboundWriter::last_activity`]), never the heartbeat: a
    /// container cannot keep itself alive by touching it.
    pub idle_after: Option<std::time::Duration>,
    /// When the caller last started this session's container, if it knows: a heartbeat older
    /// than that is taken as that time, because a container just started has not touched its
    /// own yet, and the file its predecessor left (an idle container stopped hours ago, say)
    /// would otherwise pass the ceiling and get the new one killed before its first beat.
    /// [`Sweeper`](super::Sweeper) sets it for the containers it starts.
    pub started_at: Option<Timestamp>,
}

/// The default idle limit: the older implementation's ceiling reaped idle containers after
/// 30 minutes, because its heartbeat stopped while idle; this library's heartbeat does not,
/// so the idle rule is its own.
pub const DEFAULT_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            retry: RetryPolicy::default(),
            wake: true,
            idle_after: Some(DEFAULT_IDLE_AFTER),
            started_at: None,
        }
    }
}

impl SweepOptions {
    /// The same options with this retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same options, waking containers or not.
    pub fn with_wake(mut self, wake: bool) -> Self {
        self.wake = wake;
        self
    }

    /// The same options with the time the caller last started the session's container (see
    /// [`SweepOptions::started_at`]).
    pub fn with_started_at(mut self, at: Option<Timestamp>) -> Self {
        self.started_at = at;
        self
    }

    /// The same options with this idle limit (`None`: never stop an idle container).
    pub fn with_idle_after(mut self, idle_after: Option<std::time::Duration>) -> Self {
        self.idle_after = idle_after;
        self
    }
}

/// What one sweep of one session did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Acks synced (and recurrences fanned out).
    pub acks: SyncReport,
    /// The stuck decision, when a container was running.
    pub decision: Option<StuckDecision>,
    /// The container was killed by this sweep.
    pub killed: bool,
    /// Claimed messages scheduled for another try.
    pub retried: Vec<String>,
    /// Claimed messages marked failed after the last try.
    pub failed: Vec<String>,
    /// Claims counted (settled) by this sweep.
    pub claims_settled: usize,
    /// A container was started for due messages.
    pub woke: bool,
    /// Why the container's file could not be read this time (the sweep then judged the
    /// container by its heartbeat and the claims the host saw before).
    pub outbound_unreadable: Option<String>,
    /// The tool the container said it was running, when its file could be read.
    pub tool: Option<ToolInFlight>,
}

/// What the container's file said, when it could be read.
struct Observed {
    /// `processing` acks of pending messages not just finished, as the container wrote them.
    claims: Vec<sessionbus_store::Claim>,
    /// Messages with any ack: a recorded claim of one without an ack vanished.
    acked: HashSet<String>,
    tool: Option<ToolInFlight>,
}

/// Reads the acks of the pending messages and the tool in flight, and syncs the final acks.
/// `Err` is the container's file failing to read (the caller decides what that means).
fn observe(
    host: &HostSession,
    view: &SweepView,
    next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
) -> Result<Result<(Observed, SyncReport), sessionbus_store::StoreError>, RuntimeError> {
    let (acks, state) = match host.outbound().acks_and_state(&view.pending) {
        Ok(read) => read,
        Err(e) => return Ok(Err(e)),
    };
    let sync = host.apply_acks_in(view, &acks, next_occurrence)?;
    let done: HashSet<&String> = sync.completed.iter().chain(&sync.failed).collect();
    let claims = acks
        .iter()
        .filter(|a| a.status == AckStatus::Processing && !done.contains(&a.message_id))
        .map(|a| sessionbus_store::Claim {
            message_id: a.message_id.clone(),
            claimed_at: a.status_changed.clone(),
        })
        .collect();
    let observed = Observed {
        claims,
        acked: acks.into_iter().map(|a| a.message_id).collect(),
        tool: tool_in_flight(state),
    };
    Ok(Ok((observed, sync)))
}

/// One sweep step for one session: sync acks (with recurrences), decide whether a running
/// container is stuck and kill it if so, then, with no container running, settle the claims
/// it left (retry with backoff, or fail after the last try); finally wake a container for due
/// messages when asked to. Claims a container dropped without answering are settled whether
/// or not it still runs.
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
    // One open of the own file for everything an idle session needs from it: the due count
    // only when no container runs (it decides a wake), the last activity only when the idle
    // rule can apply.
    let mut parts = SweepViewParts::core();
    if running && opts.idle_after.is_some() {
        parts = parts.with_last_activity();
    }
    if !running && opts.wake {
        parts = parts.with_due();
    }
    let mut view = host.inbound().sweep_view(parts)?;
    let pending = &view.pending;
    let observed = match observe(host, &view, next_occurrence)? {
        Ok((observed, sync)) => {
            report.acks = sync;
            Some(observed)
        }
        Err(e) if pending.is_empty() && !running => return Err(e.into()),
        Err(e) => {
            report.outbound_unreadable = Some(e.to_string());
            report.acks.still_pending = pending.len();
            None
        }
    };
    report.tool = observed.as_ref().and_then(|o| o.tool.clone());
    // The view's records are of messages pending before the sync; one it finished has left.
    let records = if report.acks.completed.is_empty() && report.acks.failed.is_empty() {
        std::mem::take(&mut view.claims)
    } else {
        host.inbound().claim_records()?
    };
    if running {
        if let Some(o) = observed.as_ref().filter(|o| !o.claims.is_empty()) {
            host.inbound().record_claims(&o.claims)?;
        }
        // A container started after the heartbeat file was last touched has not beaten yet.
        let beat = heartbeat::mtime(&paths.heartbeat)?.max(opts.started_at);
        let live = live_claims(&records, observed.as_ref());
        let mut decision = liveness::decide(now, beat, report.tool.as_ref(), &live);
        if decision == StuckDecision::Healthy && pending.is_empty() && live.is_empty() {
            if let Some(reason) = idle_reason(view.last_activity, opts.idle_after, now) {
                decision = StuckDecision::Kill { reason };
            }
        }
        if let StuckDecision::Kill { reason } = &decision {
            control
                .kill(&paths, reason)
                .map_err(|source| RuntimeError::Control {
                    session: paths.dir.clone(),
                    action: "kill",
                    source,
                })?;
            report.killed = true;
            running = false;
        }
        report.decision = Some(decision);
    }
    let to_settle = claims_to_settle(&records, observed.as_ref(), running);
    // The view's due count stands unless this sweep changed what is pending: settled claims
    // (a retry scheduled later, a failure) or a sync that finished or continued something.
    let unchanged = to_settle.is_empty()
        && report.acks.completed.is_empty()
        && report.acks.failed.is_empty()
        && report.acks.recurrences.is_empty();
    if !to_settle.is_empty() {
        settle(host, &to_settle, opts.retry, now, &mut report)?;
    }
    let due_now = || -> Result<bool, RuntimeError> {
        Ok(match view.due.filter(|_| unchanged) {
            Some(n) => n > 0,
            None => host.inbound().count_due()? > 0,
        })
    };
    if opts.wake && !running && due_now()? {
        control
            .start(&paths)
            .map_err(|source| RuntimeError::Control {
                session: paths.dir.clone(),
                action: "start",
                source,
            })?;
        report.woke = true;
    }
    Ok(report)
}

/// [`KillReason::Idle`] when nothing happened (as of `last`) for longer than `limit`.
fn idle_reason(
    last: Option<Timestamp>,
    limit: Option<std::time::Duration>,
    now: Timestamp,
) -> Option<KillReason> {
    let limit_ms = i64::try_from(limit?.as_millis()).unwrap_or(i64::MAX);
    let idle_ms = now.millis_since(last?);
    (idle_ms > limit_ms).then_some(KillReason::Idle { idle_ms, limit_ms })
}

/// Whether the session's container is working on something now, for a typing indicator:
/// busy since the oldest claim of a pending message (the host's own reading of the
/// container's file), or since the container's busy mark when that is older. Reads only; never
/// a reason to kill or keep anything.
pub fn activity(host: &HostSession) -> Result<Activity, RuntimeError> {
    let claims = host.pending_claims()?;
    let oldest_claim = claims.iter().filter_map(|c| c.claimed_at.instant()).min();
    let mark = host.outbound().busy_since().ok().flatten();
    let now = host.clock().now();
    // A mark the container left behind long ago is not work in progress.
    let mark = mark.filter(|m| now.millis_since(*m) <= liveness::MAX_DECLARED_TIMEOUT_MS);
    Ok(match [oldest_claim, mark].into_iter().flatten().min() {
        Some(since) => Activity::Busy { since },
        None => Activity::Idle,
    })
}

/// What [`activity`] says a session's container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activity {
    /// Nothing claimed, no batch in progress.
    Idle,
    /// Working on a batch since this instant.
    Busy {
        /// When the work started (its claim).
        since: Timestamp,
    },
}

/// The claims that can make a running container stuck: those read now and not yet settled,
/// or, when the file cannot be read, the unsettled ones the host recorded earlier. A claim
/// time in no known format counts as the oldest possible, so it cannot hide a stuck claim.
fn live_claims(records: &[ClaimRecord], observed: Option<&Observed>) -> Vec<Claim> {
    let settled: HashSet<(&str, &str)> = records
        .iter()
        .filter(|r| r.settled)
        .map(|r| (r.message_id.as_str(), r.claimed_at.as_str()))
        .collect();
    let as_claim = |id: &str, at: &TimeText| Claim {
        message_id: id.to_owned(),
        claimed_at: at.instant().unwrap_or(Timestamp::EPOCH),
    };
    match observed {
        Some(o) => o
            .claims
            .iter()
            .filter(|c| !settled.contains(&(c.message_id.as_str(), c.claimed_at.as_str())))
            .map(|c| as_claim(&c.message_id, &c.claimed_at))
            .collect(),
        None => records
            .iter()
            .filter(|r| !r.settled)
            .map(|r| as_claim(&r.message_id, &r.claimed_at))
            .collect(),
    }
}

/// Claims whose try is to be counted now. With the container stopped: every unsettled claim,
/// read now or recorded before. With it running: recorded claims that vanished (the message
/// is pending, but the container's file holds no ack for it at all: dropped unanswered).
fn claims_to_settle(
    records: &[ClaimRecord],
    observed: Option<&Observed>,
    running: bool,
) -> Vec<sessionbus_store::Claim> {
    let settled: HashSet<(&str, &str)> = records
        .iter()
        .filter(|r| r.settled)
        .map(|r| (r.message_id.as_str(), r.claimed_at.as_str()))
        .collect();
    let mut out: BTreeMap<(String, String), sessionbus_store::Claim> = BTreeMap::new();
    let mut add = |c: sessionbus_store::Claim| {
        if !settled.contains(&(c.message_id.as_str(), c.claimed_at.as_str())) {
            out.insert((c.message_id.clone(), c.claimed_at.0.clone()), c);
        }
    };
    for r in records.iter().filter(|r| !r.settled) {
        let vanished = observed.is_some_and(|o| !o.acked.contains(&r.message_id));
        if !running || vanished {
            add(sessionbus_store::Claim {
                message_id: r.message_id.clone(),
                claimed_at: r.claimed_at.clone(),
            });
        }
    }
    if !running {
        for c in observed.map(|o| o.claims.as_slice()).unwrap_or_default() {
            add(c.clone());
        }
    }
    out.into_values().collect()
}

/// Counts one try per message among `claims` (retry with backoff, or fail after the last),
/// and marks every one of them settled, in one transaction of the host's file.
fn settle(
    host: &HostSession,
    claims: &[sessionbus_store::Claim],
    policy: RetryPolicy,
    now: Timestamp,
    report: &mut SweepReport,
) -> Result<(), RuntimeError> {
    let ids: HashSet<&str> = claims.iter().map(|c| c.message_id.as_str()).collect();
    let mut updates = Vec::new();
    for msg in host.inbound().pending()? {
        if !ids.contains(msg.id.as_str()) || msg.status != MessageStatus::Pending {
            continue;
        }
        // Already scheduled for a later try: this claim is settled without another bump.
        let after = msg.process_after.as_ref().and_then(|t| t.instant());
        if !liveness::should_bump(after, now) {
            continue;
        }
        match policy.next_retry(msg.tries, now) {
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
    host.inbound().settle_claims(claims, &updates)?;
    report.claims_settled += claims.len();
    Ok(())
}

/// The stuck decision for a session right now, from its heartbeat, tool state and the claims
/// of pending messages (settled claims of a stopped predecessor excluded). Reads only.
pub fn decide_now(host: &HostSession) -> Result<StuckDecision, RuntimeError> {
    let now = host.clock().now();
    let beat = heartbeat::mtime(&host.paths().heartbeat)?;
    let pending = host.inbound().pending_ids()?;
    let records = host.inbound().claim_records()?;
    let observed = host
        .outbound()
        .acks_and_state(&pending)
        .ok()
        .map(|(acks, state)| Observed {
            claims: acks
                .iter()
                .filter(|a| a.status == AckStatus::Processing)
                .map(|a| sessionbus_store::Claim {
                    message_id: a.message_id.clone(),
                    claimed_at: a.status_changed.clone(),
                })
                .collect(),
            acked: acks.into_iter().map(|a| a.message_id).collect(),
            tool: tool_in_flight(state),
        });
    let live = live_claims(&records, observed.as_ref());
    let tool = observed.and_then(|o| o.tool);
    Ok(liveness::decide(now, beat, tool.as_ref(), &live))
}

/// The tool in flight recorded in a `container_state` row.
pub(crate) fn tool_in_flight(state: Option<ContainerState>) -> Option<ToolInFlight> {
    state.and_then(|s| {
        s.current_tool.map(|name| ToolInFlight {
            name,
            declared_timeout_ms: s.tool_declared_timeout_ms,
            started_at: s.tool_started_at.and_then(|t| t.instant()),
        })
    })
}
