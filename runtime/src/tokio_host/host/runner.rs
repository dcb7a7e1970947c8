//! The loop behind [`AsyncHost::run`](super::AsyncHost::run): scheduling passes, reporting
//! stalls, recording what each task ended with, and the graceful shutdown.

use super::pass::{serve, stop_container, Done};
use super::{
    ContainerPolicy, ContainerStop, Ctx, HostEvent, HostSummary, InFlight, PassSummary,
    SessionPass, Shared,
};
use crate::error::{panic_detail, RuntimeError};
use crate::liveness::KillReason;
use crate::tokio_host::traits::{lock, AsyncContainerControl, AsyncDeliverer};
use sessionbus_store::SessionPaths;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The loop's own state.
pub(super) struct Runner<C, D> {
    pub(super) ctx: Arc<Ctx<C, D>>,
    /// Permits for the container stops at shutdown, apart from the sessions' own (in `ctx`):
    /// an abandoned pass may hold one of those for good.
    pub(super) stop_permits: Arc<Semaphore>,
    pub(super) shared: Arc<Shared>,
    pub(super) tasks: JoinSet<Done>,
    /// Each task's session and pass (`None`: a container stop).
    pub(super) meta: HashMap<tokio::task::Id, (PathBuf, Option<u64>)>,
    /// Pass tallies until every session of the pass has reported.
    pub(super) outstanding: HashMap<u64, (usize, PassSummary)>,
    pub(super) next_pass: u64,
    pub(super) summary: HostSummary,
}

impl<C: AsyncContainerControl, D: AsyncDeliverer> Runner<C, D> {
    /// Schedules a pass: every session not in flight (`all`), or only the poked ones; and the
    /// container stops of removed sessions that are not in flight.
    pub(super) fn schedule(&mut self, all: bool) {
        let now = Instant::now();
        let pass = self.next_pass + 1;
        let (picked, busy, stops) = {
            let mut reg = lock(&self.shared.registry);
            if reg.closed {
                return;
            }
            let candidates: Vec<PathBuf> = if all {
                reg.sessions.keys().cloned().collect()
            } else {
                reg.poked.iter().cloned().collect()
            };
            let mut picked = Vec::new();
            let mut busy = 0;
            for dir in candidates {
                if reg.in_flight.contains_key(&dir) {
                    busy += 1;
                    continue;
                }
                reg.poked.remove(&dir);
                let Some(slot) = reg.sessions.get(&dir).cloned() else {
                    continue;
                };
                reg.in_flight.insert(
                    dir,
                    InFlight {
                        pass: Some(pass),
                        since: now,
                        stalled: false,
                    },
                );
                picked.push(slot);
            }
            let (waiting, ready): (Vec<_>, Vec<_>) = std::mem::take(&mut reg.to_stop)
                .into_iter()
                .partition(|p| reg.in_flight.contains_key(&p.dir));
            reg.to_stop = waiting;
            for p in &ready {
                reg.in_flight.insert(
                    p.dir.clone(),
                    InFlight {
                        pass: None,
                        since: now,
                        stalled: false,
                    },
                );
            }
            (picked, busy, ready)
        };
        for paths in stops {
            let dir = paths.dir.clone();
            let permits = Arc::clone(&self.ctx.permits);
            let task = stop_container(
                Arc::clone(&self.ctx),
                permits,
                paths,
                KillReason::SessionRemoved,
            );
            let id = self.tasks.spawn(task).id();
            self.meta.insert(id, (dir, None));
        }
        if picked.is_empty() && !all {
            return;
        }
        self.next_pass = pass;
        self.summary.passes += 1;
        self.shared.emit(HostEvent::PassStarted {
            pass,
            scheduled: picked.len(),
            busy,
        });
        let tally = PassSummary {
            pass,
            ..PassSummary::default()
        };
        if picked.is_empty() {
            self.shared.emit(HostEvent::PassFinished(tally));
            return;
        }
        self.outstanding.insert(pass, (picked.len(), tally));
        for slot in picked {
            let dir = slot.host.paths().dir.clone();
            let id = self
                .tasks
                .spawn(serve(Arc::clone(&self.ctx), slot, pass))
                .id();
            self.meta.insert(id, (dir, Some(pass)));
        }
    }

    /// Reports sessions whose pass has run for longer than `stalled_after` (once each).
    pub(super) fn report_stalled(&mut self) {
        let after = self.ctx.opts.stalled_after;
        let stalled: Vec<(PathBuf, u64)> = {
            let mut reg = lock(&self.shared.registry);
            reg.in_flight
                .iter_mut()
                .filter(|(_, f)| !f.stalled && f.since.elapsed() >= after)
                .filter_map(|(dir, f)| {
                    f.stalled = true;
                    f.pass.map(|pass| (dir.clone(), pass))
                })
                .collect()
        };
        for (session, pass) in stalled {
            self.shared.emit(HostEvent::Stalled { session, pass });
        }
    }

    /// A task ended: reports it and frees its session.
    pub(super) fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) {
        let (id, done) = match done {
            Ok((id, done)) => (id, Ok(done)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some((session, pass)) = self.meta.remove(&id) else {
            return;
        };
        {
            let mut reg = lock(&self.shared.registry);
            reg.in_flight.remove(&session);
            if reg.poked.contains(&session) || !reg.to_stop.is_empty() {
                self.shared.wake.notify_one();
            }
        }
        // A task's own parts catch their panics; a JoinError is a panic outside them, or the
        // task aborted at shutdown.
        let lost = |e: &tokio::task::JoinError| {
            if e.is_panic() {
                "the session's task panicked".to_owned()
            } else {
                "the session's task was cancelled".to_owned()
            }
        };
        match (done, pass) {
            (Ok(Done::Pass(p)), _) => self.record_pass(p),
            (Ok(Done::Stop(stop)), _) => self.record_stop(stop),
            (Err(e), Some(pass)) => {
                let detail = match e.try_into_panic() {
                    Ok(payload) => panic_detail(payload.as_ref()),
                    Err(e) => lost(&e),
                };
                let err = || RuntimeError::Panicked {
                    session: session.clone(),
                    detail: detail.clone(),
                };
                self.record_pass(SessionPass {
                    session: session.clone(),
                    pass,
                    sweep: Err(err()),
                    delivery: Err(err()),
                });
            }
            (Err(e), None) => self.record_stop(ContainerStop {
                session: session.clone(),
                result: Err(RuntimeError::Panicked {
                    session: session.clone(),
                    detail: lost(&e),
                }),
            }),
        }
    }

    fn record_pass(&mut self, p: SessionPass) {
        let (failed, panicked, delivered) = (!p.is_ok(), p.panicked(), p.delivered());
        self.summary.session_passes += 1;
        self.summary.failed_session_passes += u64::from(failed);
        self.summary.panicked_session_passes += u64::from(panicked);
        self.summary.delivered += delivered as u64;
        let pass = p.pass;
        self.shared.emit(HostEvent::Session(Arc::new(p)));
        let Some((left, tally)) = self.outstanding.get_mut(&pass) else {
            return;
        };
        *left -= 1;
        tally.sessions += 1;
        tally.failed += usize::from(failed);
        tally.panicked += usize::from(panicked);
        tally.delivered += delivered;
        if *left == 0 {
            if let Some((_, tally)) = self.outstanding.remove(&pass) {
                self.shared.emit(HostEvent::PassFinished(tally));
            }
        }
    }

    fn record_stop(&mut self, stop: ContainerStop) {
        if matches!(stop.result, Ok(true)) {
            self.summary.containers_stopped.push(stop.session.clone());
        }
        self.shared
            .emit(HostEvent::ContainerStopped(Arc::new(stop)));
    }

    /// The graceful shutdown (see [`AsyncHost::run`](super::AsyncHost::run)).
    pub(super) async fn shut_down(mut self) -> HostSummary {
        lock(&self.shared.registry).closed = true;
        self.shared.emit(HostEvent::Stopping);
        let grace = self.ctx.opts.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.tasks.join_next_with_id().await {
                self.finished(done);
            }
        })
        .await;
        if drained.is_err() {
            let mut abandoned: Vec<PathBuf> = self
                .meta
                .values()
                .filter(|(_, pass)| pass.is_some())
                .map(|(dir, _)| dir.clone())
                .collect();
            abandoned.sort();
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
            self.meta.clear();
            lock(&self.shared.registry).in_flight.clear();
            self.summary.abandoned = abandoned;
        }
        let stops: Vec<(SessionPaths, KillReason)> = {
            let mut reg = lock(&self.shared.registry);
            let mut stops: Vec<(SessionPaths, KillReason)> = std::mem::take(&mut reg.to_stop)
                .into_iter()
                .map(|p| (p, KillReason::SessionRemoved))
                .collect();
            if self.ctx.opts.on_shutdown == ContainerPolicy::Stop {
                stops.extend(
                    reg.sessions
                        .values()
                        .map(|s| (s.host.paths().clone(), KillReason::HostShutdown)),
                );
            }
            stops
        };
        for (paths, reason) in stops {
            let dir = paths.dir.clone();
            let task = stop_container(
                Arc::clone(&self.ctx),
                Arc::clone(&self.stop_permits),
                paths,
                reason,
            );
            let id = self.tasks.spawn(task).id();
            self.meta.insert(id, (dir, None));
        }
        while let Some(done) = self.tasks.join_next_with_id().await {
            self.finished(done);
        }
        self.shared.emit(HostEvent::Stopped(self.summary.clone()));
        self.summary
    }
}
