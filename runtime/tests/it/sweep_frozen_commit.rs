//! A container frozen while it commits (a paused VM, a disk hung in fsync) holds outbound.db's
//! EXCLUSIVE lock: the host cannot read its file at all. The sweep must still find it stuck by
//! its heartbeat and kill it, instead of failing on the lock forever before deciding anything.
//! (Found by `cargo xtask soak`: a container stopped with SIGSTOP inside a commit was never
//! killed.)

use diesel::connection::SimpleConnection;
use diesel::Connection;
use sessionbus_runtime::host::{sweep_session, ContainerControl, SweepOptions};
use sessionbus_runtime::liveness::{KillReason, StuckDecision, HEARTBEAT_CEILING_MS};
use sessionbus_schema::{Clock, DbFile, FileKind, Role};
use sessionbus_store::*;
use sessionbus_testkit::{message, TempSession};
use std::time::Duration;

/// A "container" that is an open connection holding outbound.db's EXCLUSIVE lock in an
/// unfinished transaction; killing it drops the connection (the lock goes with the process).
struct Frozen {
    conn: Option<diesel::SqliteConnection>,
    kills: Vec<String>,
}

impl Frozen {
    fn holding_the_lock(s: &TempSession) -> Frozen {
        let url = s.paths.outbound.to_string_lossy().into_owned();
        let mut conn = diesel::SqliteConnection::establish(&url).unwrap();
        conn.batch_execute("BEGIN EXCLUSIVE; DELETE FROM processing_ack;")
            .unwrap();
        Frozen {
            conn: Some(conn),
            kills: Vec::new(),
        }
    }
}

impl ContainerControl for Frozen {
    fn is_running(&mut self, _: &SessionPaths) -> bool {
        self.conn.is_some()
    }
    fn kill(
        &mut self,
        _: &SessionPaths,
        reason: &KillReason,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        self.kills.push(reason.to_string());
        self.conn = None;
        Ok(())
    }
    fn start(&mut self, _: &SessionPaths) -> Result<(), sessionbus_runtime::control::CallerError> {
        Ok(())
    }
}

/// The host's view with a short busy timeout, so the test does not wait 5 s per read.
fn host(s: &TempSession) -> HostSession {
    let short = Duration::from_millis(200);
    HostSession::from_files(
        s.paths.clone(),
        DbFile::new(&s.paths.inbound, FileKind::Inbound, Role::Host).with_busy_timeout(short),
        DbFile::new(&s.paths.outbound, FileKind::Outbound, Role::Host).with_busy_timeout(short),
        s.clock.shared(),
    )
}

#[test]
fn a_container_frozen_inside_a_commit_is_killed_past_the_heartbeat_ceiling() {
    let s = TempSession::new();
    let host = host(&s);
    host.inbound()
        .write_message(&message("m", "hello").build())
        .unwrap();
    sessionbus_runtime::heartbeat::touch_at(&s.paths.heartbeat, s.clock.now()).unwrap();
    let mut frozen = Frozen::holding_the_lock(&s);
    let opts = SweepOptions::default();

    // Within the ceiling: the file cannot be read, the container may just be slow. The lock is
    // reported in the sweep's report and nothing is killed.
    s.clock.advance_ms(60_000);
    let r = sweep_session(&host, &mut frozen, &|_| None, opts).unwrap();
    let why = r.outbound_unreadable.as_deref().unwrap_or_default();
    assert!(why.contains("locked"), "{r:?}");
    assert_eq!(r.decision, Some(StuckDecision::Healthy));
    assert!(frozen.kills.is_empty());

    // Past the ceiling with no heartbeat: killed, then the usual clean-up runs on the freed
    // file (the message stays pending for the next container).
    s.clock.advance_ms(HEARTBEAT_CEILING_MS);
    let report = sweep_session(&host, &mut frozen, &|_| None, opts).unwrap();
    assert!(report.killed, "{report:?}");
    assert!(matches!(
        report.decision,
        Some(StuckDecision::Kill {
            reason: KillReason::HeartbeatCeiling { .. }
        })
    ));
    assert_eq!(frozen.kills.len(), 1, "{:?}", frozen.kills);
    assert_eq!(
        host.inbound().message("m").unwrap().unwrap().status,
        MessageStatus::Pending
    );
}
