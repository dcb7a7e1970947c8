//! The timed workloads, each in two variants: through the library, and through the raw
//! baseline ([`super::raw`]) doing the same SQL work. Every function returns the cost of one
//! unit of work in microseconds (one message, one poll, one open, one sweep).

use super::fixture::{
    fixed_clock, touch_heartbeat, Sessions, CHANNEL_TYPE, PLATFORM_ID, THREAD_ID,
};
use super::raw::RawSession;
use super::{err, BenchResult};
use sessionbus_runtime::host::{
    for_each_session, sweep_session, ContainerControl, SweepOptions, SweepOutcome, Sweeper,
};
use sessionbus_runtime::liveness::{self, Claim, KillReason, StuckDecision, ToolInFlight};
use sessionbus_schema::{Clock, SystemClock, Timestamp};
use sessionbus_store::{
    AckStatus, Address, ContainerSession, DeliveryOutcome, HostSession, MessageIn, NewMessage,
    NewOutbound, NextOccurrence, SessionPaths,
};
use std::time::Instant;

fn address() -> Address {
    Address {
        platform_id: Some(PLATFORM_ID.into()),
        channel_type: Some(CHANNEL_TYPE.into()),
        thread_id: Some(THREAD_ID.into()),
    }
}

fn no_next(_: &MessageIn) -> Option<NextOccurrence> {
    None
}

fn per_unit(start: Instant, units: usize) -> f64 {
    start.elapsed().as_secs_f64() * 1e6 / units.max(1) as f64
}

fn expect(what: &str, got: usize, want: usize) -> BenchResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}"))
    }
}

// -------------------------------------------------------------------------------------
// 1. Round trip
// -------------------------------------------------------------------------------------

/// `total` messages through a fresh session, `batch` at a time: host writes, container polls
/// (fresh read-only open), acks processing, commits replies with completed acks, host reads
/// due outbound, records each delivery, syncs the acks. Microseconds per message.
pub fn round_trip_library(sessions: &Sessions, total: usize, batch: usize) -> BenchResult<f64> {
    let paths = sessions.fresh("rt-lib")?;
    let host = HostSession::with_clock(&paths.dir, fixed_clock());
    let container = ContainerSession::with_clock(&paths.dir, fixed_clock()).map_err(err)?;
    container.start().map_err(err)?;
    let rounds = total.div_ceil(batch);
    let start = Instant::now();
    for r in 0..rounds {
        let msgs: Vec<NewMessage> = (0..batch)
            .map(|j| {
                let k = r * batch + j;
                NewMessage::chat(format!("m-{k}"), &format!("message {k}")).to(address())
            })
            .collect();
        host.inbound().write_messages(&msgs).map_err(err)?;
        let polled = container.poll(batch).map_err(err)?;
        expect("polled", polled.messages.len(), batch)?;
        let ids = polled.ids();
        container
            .outbound()
            .ack(&ids, &AckStatus::Processing)
            .map_err(err)?;
        let replies: Vec<NewOutbound> = polled
            .messages
            .iter()
            .map(|m| NewOutbound::reply_to(format!("r-{}", m.id), m, "echo"))
            .collect();
        container
            .outbound()
            .commit(&ids, &AckStatus::Completed, &replies)
            .map_err(err)?;
        let due = host.due_outbound(100).map_err(err)?;
        expect("due", due.len(), batch)?;
        for d in &due {
            host.inbound()
                .record_delivery(
                    &d.message.id,
                    &DeliveryOutcome::Delivered {
                        platform_message_id: Some(format!("p-{}", d.message.id)),
                    },
                )
                .map_err(err)?;
        }
        let synced = host.sync_acks(&no_next).map_err(err)?;
        expect("synced", synced.completed.len(), batch)?;
    }
    Ok(per_unit(start, rounds * batch))
}

/// [`round_trip_library`] on the raw baseline.
pub fn round_trip_raw(sessions: &Sessions, total: usize, batch: usize) -> BenchResult<f64> {
    let paths = sessions.fresh("rt-raw")?;
    // The same start-up as the library's container (clears stale claims and tool state).
    ContainerSession::with_clock(&paths.dir, fixed_clock())
        .map_err(err)?
        .start()
        .map_err(err)?;
    let raw = RawSession::new(&paths)?;
    let rounds = total.div_ceil(batch);
    let start = Instant::now();
    for r in 0..rounds {
        let msgs: Vec<(String, String)> = (0..batch)
            .map(|j| {
                let k = r * batch + j;
                (format!("m-{k}"), format!("{{\"text\":\"message {k}\"}}"))
            })
            .collect();
        raw.write_messages(&msgs)?;
        let polled = raw.poll(false, batch)?;
        expect("polled", polled.len(), batch)?;
        let ids: Vec<String> = polled.iter().map(|m| m.id.clone()).collect();
        raw.ack(&ids, "processing")?;
        let replies: Vec<(String, String, String)> = polled
            .iter()
            .map(|m| {
                (
                    format!("r-{}", m.id),
                    m.id.clone(),
                    "{\"text\":\"echo\"}".to_string(),
                )
            })
            .collect();
        raw.commit(&ids, "completed", &replies)?;
        let due = raw.due_outbound(100)?;
        expect("due", due.len(), batch)?;
        for d in &due {
            raw.record_delivery(&d.id, &format!("p-{}", d.id))?;
        }
        let synced = raw.sync_acks()?;
        expect("synced", synced, batch)?;
    }
    Ok(per_unit(start, rounds * batch))
}

// -------------------------------------------------------------------------------------
// 2. Idle polls
// -------------------------------------------------------------------------------------

/// The three idle polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdlePoll {
    /// The container's pending poll of inbound.db.
    Pending,
    /// The host's due-outbound read.
    DueOutbound,
    /// The host's ack sync.
    AckSync,
}

impl IdlePoll {
    /// All three.
    pub const ALL: [IdlePoll; 3] = [IdlePoll::Pending, IdlePoll::DueOutbound, IdlePoll::AckSync];

    /// Short id.
    pub fn id(self) -> &'static str {
        match self {
            IdlePoll::Pending => "pending_poll",
            IdlePoll::DueOutbound => "due_outbound",
            IdlePoll::AckSync => "ack_sync",
        }
    }

    /// What it is.
    pub fn label(self) -> &'static str {
        match self {
            IdlePoll::Pending => "container pending poll",
            IdlePoll::DueOutbound => "host due-outbound read",
            IdlePoll::AckSync => "host ack sync",
        }
    }
}

/// `ops` idle polls of one kind through the library; microseconds per poll.
pub fn idle_library(paths: &SessionPaths, poll: IdlePoll, ops: usize) -> BenchResult<f64> {
    let host = HostSession::with_clock(&paths.dir, fixed_clock());
    let container = ContainerSession::with_clock(&paths.dir, fixed_clock()).map_err(err)?;
    let start = Instant::now();
    for _ in 0..ops {
        match poll {
            IdlePoll::Pending => {
                let b = container.poll(10).map_err(err)?;
                expect("idle poll", b.messages.len(), 0)?;
            }
            IdlePoll::DueOutbound => {
                let d = host.due_outbound(100).map_err(err)?;
                expect("idle due", d.len(), 0)?;
            }
            IdlePoll::AckSync => {
                let s = host.sync_acks(&no_next).map_err(err)?;
                expect("idle sync", s.completed.len(), 0)?;
            }
        }
    }
    Ok(per_unit(start, ops))
}

/// [`idle_library`] on the raw baseline.
pub fn idle_raw(paths: &SessionPaths, poll: IdlePoll, ops: usize) -> BenchResult<f64> {
    let raw = RawSession::new(paths)?;
    let start = Instant::now();
    for _ in 0..ops {
        match poll {
            IdlePoll::Pending => expect("idle poll", raw.poll(false, 10)?.len(), 0)?,
            IdlePoll::DueOutbound => expect("idle due", raw.due_outbound(100)?.len(), 0)?,
            IdlePoll::AckSync => expect("idle sync", raw.sync_acks()?, 0)?,
        }
    }
    Ok(per_unit(start, ops))
}

// -------------------------------------------------------------------------------------
// 3. Open cost
// -------------------------------------------------------------------------------------

/// A role and handle kind: which file, opened how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handle {
    /// The host's writer of inbound.db (here reading one row of it).
    HostInboundWriter,
    /// The host's read-only view of outbound.db.
    HostOutboundReader,
    /// The container's read-only view of inbound.db.
    ContainerInboundReader,
    /// The container's writer of outbound.db (here reading one row of it).
    ContainerOutboundWriter,
}

impl Handle {
    /// All four.
    pub const ALL: [Handle; 4] = [
        Handle::HostInboundWriter,
        Handle::HostOutboundReader,
        Handle::ContainerInboundReader,
        Handle::ContainerOutboundWriter,
    ];

    /// Short id.
    pub fn id(self) -> &'static str {
        match self {
            Handle::HostInboundWriter => "host_inbound_writer",
            Handle::HostOutboundReader => "host_outbound_reader",
            Handle::ContainerInboundReader => "container_inbound_reader",
            Handle::ContainerOutboundWriter => "container_outbound_writer",
        }
    }

    /// What it is, with the one query.
    pub fn label(self) -> &'static str {
        match self {
            Handle::HostInboundWriter => "host, inbound.db writer + message by id",
            Handle::HostOutboundReader => "host, outbound.db reader + container state",
            Handle::ContainerInboundReader => "container, inbound.db reader + routing",
            Handle::ContainerOutboundWriter => "container, outbound.db writer + state key",
        }
    }
}

/// `ops` opens (with pragmas, schema check and one query) through the library.
pub fn open_library(paths: &SessionPaths, handle: Handle, ops: usize) -> BenchResult<f64> {
    let host = HostSession::with_clock(&paths.dir, fixed_clock());
    let container = ContainerSession::with_clock(&paths.dir, fixed_clock()).map_err(err)?;
    let start = Instant::now();
    for _ in 0..ops {
        match handle {
            Handle::HostInboundWriter => {
                host.inbound().message("absent").map_err(err)?;
            }
            Handle::HostOutboundReader => {
                host.outbound().container_state().map_err(err)?;
            }
            Handle::ContainerInboundReader => {
                container.inbound().routing().map_err(err)?;
            }
            Handle::ContainerOutboundWriter => {
                container.outbound().state_get("absent").map_err(err)?;
            }
        }
    }
    Ok(per_unit(start, ops))
}

/// [`open_library`] on the raw baseline.
pub fn open_raw(paths: &SessionPaths, handle: Handle, ops: usize) -> BenchResult<f64> {
    let raw = RawSession::new(paths)?;
    let start = Instant::now();
    for _ in 0..ops {
        match handle {
            Handle::HostInboundWriter => {
                raw.message("absent")?;
            }
            Handle::HostOutboundReader => {
                raw.container_state()?;
            }
            Handle::ContainerInboundReader => {
                raw.routing()?;
            }
            Handle::ContainerOutboundWriter => {
                raw.state_get("absent")?;
            }
        }
    }
    Ok(per_unit(start, ops))
}

// -------------------------------------------------------------------------------------
// 4. Sweep
// -------------------------------------------------------------------------------------

/// The caller's container control in the sweep: every container running (idle), or none.
struct Control {
    running: bool,
    actions: usize,
}

impl ContainerControl for Control {
    fn is_running(&mut self, _session: &SessionPaths) -> bool {
        self.running
    }
    fn kill(
        &mut self,
        _session: &SessionPaths,
        _reason: &KillReason,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        self.actions += 1;
        Ok(())
    }
    fn start(
        &mut self,
        _session: &SessionPaths,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        self.actions += 1;
        Ok(())
    }
}

/// Idle sessions for the sweep, with fresh heartbeats.
pub fn sweep_sessions(
    sessions: &Sessions,
    from: &SessionPaths,
    n: usize,
) -> BenchResult<Vec<SessionPaths>> {
    (0..n)
        .map(|_| {
            let p = sessions.copy_of(from, "sweep")?;
            touch_heartbeat(&p)?;
            Ok(p)
        })
        .collect()
}

/// One sweep of every session through the library (`for_each_session` + `sweep_session`),
/// with containers running (`running`) or none running and waking on due messages.
/// Microseconds per sweep of all of them.
pub fn sweep_library(paths: &[SessionPaths], running: bool, sweeps: usize) -> BenchResult<f64> {
    let hosts: Vec<HostSession> = paths.iter().map(|p| HostSession::open(&p.dir)).collect();
    let mut control = Control {
        running,
        actions: 0,
    };
    // The fixtures' history is months old on the system clock: with an idle limit every
    // running container would be stopped, which is not what this measures.
    let opts = SweepOptions::default()
        .with_wake(!running)
        .with_idle_after(None);
    let start = Instant::now();
    for _ in 0..sweeps {
        let outcomes = for_each_session(&hosts, |h| sweep_session(h, &mut control, &no_next, opts));
        for o in outcomes {
            let r = o.result.map_err(err)?;
            if let Some(StuckDecision::Kill { reason }) = r.decision {
                return Err(format!(
                    "sweep decided to kill an idle container: {reason:?}"
                ));
            }
        }
    }
    let cost = per_unit(start, sweeps);
    expect("container actions in an idle sweep", control.actions, 0)?;
    Ok(cost)
}

/// Steady-state sweeps of a long-lived host through the library's [`Sweeper`], containers
/// running: after warm-up sweeps found every session quiet, each sweep reads the two files'
/// change counters and the heartbeat's mtime per session, and opens no database.
pub fn sweeper_library(paths: &[SessionPaths], sweeps: usize) -> BenchResult<f64> {
    let hosts: Vec<HostSession> = paths.iter().map(|p| HostSession::open(&p.dir)).collect();
    let mut control = Control {
        running: true,
        actions: 0,
    };
    let mut sweeper = Sweeper::new(SweepOptions::default().with_idle_after(None));
    for _ in 0..2 {
        for h in &hosts {
            sweeper.sweep(h, &mut control).map_err(err)?;
        }
    }
    let start = Instant::now();
    for _ in 0..sweeps {
        for h in &hosts {
            if let SweepOutcome::Full(_) = sweeper.sweep(h, &mut control).map_err(err)? {
                return Err("an idle session was not recognised as quiet".into());
            }
        }
    }
    let cost = per_unit(start, sweeps);
    expect("container actions in an idle sweep", control.actions, 0)?;
    Ok(cost)
}

/// [`sweeper_library`] on the raw baseline: the same header reads and heartbeat stat per
/// session, compared with the values remembered from the warm-up.
pub fn sweeper_raw(paths: &[SessionPaths], sweeps: usize) -> BenchResult<f64> {
    let counter = |p: &std::path::Path| -> BenchResult<Option<u32>> {
        use std::io::Read;
        let mut f = std::fs::File::open(p).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 28];
        f.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(Some(u32::from_be_bytes([
            buf[24], buf[25], buf[26], buf[27],
        ])))
    };
    let marks: Vec<(Option<u32>, Option<u32>)> = paths
        .iter()
        .map(|p| Ok((counter(&p.inbound)?, counter(&p.outbound)?)))
        .collect::<BenchResult<_>>()?;
    let start = Instant::now();
    for _ in 0..sweeps {
        for (p, mark) in paths.iter().zip(&marks) {
            let now = SystemClock.now();
            if (counter(&p.inbound)?, counter(&p.outbound)?) != *mark {
                return Err("raw: an idle session changed".into());
            }
            let beat = std::fs::metadata(&p.heartbeat)
                .and_then(|m| m.modified())
                .map_err(|e| e.to_string())?;
            let beat = Timestamp::from_datetime(beat.into());
            if now.millis_since(beat) > liveness::heartbeat_limit_ms(None) {
                return Err("raw: heartbeat ceiling".into());
            }
        }
    }
    Ok(per_unit(start, sweeps))
}

/// [`sweep_library`] on the raw baseline: the same reads per session, the same pure stuck
/// decision.
pub fn sweep_raw(paths: &[SessionPaths], running: bool, sweeps: usize) -> BenchResult<f64> {
    let raws: Vec<RawSession> = paths
        .iter()
        .map(RawSession::new)
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for _ in 0..sweeps {
        for raw in &raws {
            let now = SystemClock.now();
            if running {
                raw.sync_acks()?;
                let beat = raw
                    .heartbeat_millis()?
                    .and_then(Timestamp::from_unix_millis);
                let (state, claims) = raw.liveness()?;
                let tool = state.and_then(|s| {
                    s.current_tool.map(|name| ToolInFlight {
                        name,
                        declared_timeout_ms: s.declared_timeout_ms,
                        started_at: s.started_at.and_then(|t| Timestamp::parse(&t).ok()),
                    })
                });
                let claims: Vec<Claim> = claims
                    .into_iter()
                    .map(|(message_id, at)| Claim {
                        claimed_at: Timestamp::parse(&at).unwrap_or(now),
                        message_id,
                    })
                    .collect();
                if let StuckDecision::Kill { reason } =
                    liveness::decide(now, beat, tool.as_ref(), &claims)
                {
                    return Err(format!("raw sweep decided to kill: {reason:?}"));
                }
            } else {
                let _ = raw.hot_journal();
                // Like the library: the due count only when something is still pending.
                let (_, pending) = raw.sync_acks_counted()?;
                expect("claims of an idle session", raw.claims()?.len(), 0)?;
                if pending > 0 {
                    expect("due messages of an idle session", raw.count_due()?, 0)?;
                }
            }
        }
    }
    Ok(per_unit(start, sweeps))
}
