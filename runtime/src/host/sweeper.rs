//! Sweeping many sessions again and again, skipping the ones where nothing can have changed.

use super::sweep::{sweep_session, SweepOptions, SweepReport};
use super::ContainerControl;
use crate::error::RuntimeError;
use crate::heartbeat;
use crate::liveness;
use sessionbus_store::{HostSession, MessageIn, NextOccurrence};
use std::path::PathBuf;
use std::sync::Arc;

/// For a completed recurring task, the next occurrence to insert (cron is the caller's); see
/// [`Sweeper::with_next_occurrence`].
pub type NextOccurrenceFn = dyn Fn(&MessageIn) -> Option<NextOccurrence> + Send + Sync;

/// A sweeper's recurrence hook (none: recurring tasks are not continued).
#[derive(Clone, Default)]
struct Recurrence(Option<Arc<NextOccurrenceFn>>);

impl std::fmt::Debug for Recurrence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Recurrence(hook)"
        } else {
            "Recurrence(none)"
        })
    }
}

/// What a session looked like when a full sweep found it quiet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct QuietMark {
    inbound: Option<u32>,
    outbound: Option<u32>,
    running: bool,
    heartbeat_limit_ms: i64,
    at: std::time::Instant,
}

/// Sweeps many sessions again and again, as a long-lived host does, and skips the database
/// work for sessions where nothing can have changed.
///
/// After a full sweep finds a session *quiet* (nothing pending in inbound.db, no claim in
/// outbound.db), the next sweeps only read the two files' SQLite change counters (bytes 24 to
/// 27 of the header, bumped by every commit) and the heartbeat's mtime. While both counters
/// and the running state are unchanged, the only rule that can fire is the heartbeat ceiling,
/// which needs no database read. Any change (a message written by any host process, an ack or
/// claim by the container, the container stopping) or [`Sweeper::FULL_SWEEP_EVERY`] passing
/// makes the next sweep of that session a full [`sweep_session`].
///
/// A container that fails to start is not retried on every sweep: the next attempt for that
/// session waits [`Sweeper::START_BACKOFF`], doubling with each failure up to
/// [`Sweeper::MAX_START_BACKOFF`], and a start that succeeds clears it.
#[derive(Debug, Default)]
pub struct Sweeper {
    opts: SweepOptions,
    quiet: std::collections::HashMap<PathBuf, QuietMark>,
    start_failures: std::collections::HashMap<PathBuf, StartFailures>,
    start_backoff: Option<std::time::Duration>,
    started: std::collections::HashMap<PathBuf, sessionbus_schema::Timestamp>,
    next_occurrence: Recurrence,
}

/// A session whose container failed to start: how often in a row, and when to try again.
#[derive(Debug, Clone, Copy)]
struct StartFailures {
    count: u32,
    retry_at: std::time::Instant,
}

/// What [`Sweeper::sweep`] did for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepOutcome {
    /// A full [`sweep_session`] ran.
    Full(Box<SweepReport>),
    /// Nothing changed since the session was found quiet: no file was opened.
    Quiet,
}

impl Sweeper {
    /// A quiet session still gets a full sweep at least this often.
    pub const FULL_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

    /// The wait after a first failed start (it doubles with each failure in a row).
    pub const START_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

    /// The longest wait between two start attempts.
    pub const MAX_START_BACKOFF: std::time::Duration = std::time::Duration::from_secs(300);

    /// A sweeper with these options.
    pub fn new(opts: SweepOptions) -> Self {
        Sweeper {
            opts,
            ..Sweeper::default()
        }
    }

    /// The same sweeper with a recurrence hook: for each completed recurring task, the next
    /// occurrence to insert in the same transaction (see [`sweep_session`]). Without one,
    /// nothing is continued.
    pub fn with_next_occurrence(
        self,
        f: impl Fn(&MessageIn) -> Option<NextOccurrence> + Send + Sync + 'static,
    ) -> Self {
        self.with_shared_next_occurrence(Arc::new(f))
    }

    /// [`Sweeper::with_next_occurrence`] with a hook shared with other sweepers.
    pub fn with_shared_next_occurrence(mut self, f: Arc<NextOccurrenceFn>) -> Self {
        self.set_next_occurrence(f);
        self
    }

    /// Replaces the recurrence hook in place.
    pub(crate) fn set_next_occurrence(&mut self, f: Arc<NextOccurrenceFn>) {
        self.next_occurrence = Recurrence(Some(f));
    }

    /// The same sweeper with another first wait after a failed start.
    pub fn with_start_backoff(mut self, first: std::time::Duration) -> Self {
        self.start_backoff = Some(first);
        self
    }

    /// Whether a start for `session` is held back now (its container failed to start
    /// recently), and until when.
    pub fn start_held_until(&self, session: &std::path::Path) -> Option<std::time::Instant> {
        self.start_failures
            .get(session)
            .map(|f| f.retry_at)
            .filter(|at| *at > std::time::Instant::now())
    }

    /// Notes a failed start and when to try again.
    fn start_failed(&mut self, session: &std::path::Path) {
        let first = self.start_backoff.unwrap_or(Self::START_BACKOFF);
        let count = self.start_failures.get(session).map_or(0, |f| f.count) + 1;
        let wait = first
            .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(20)))
            .min(Self::MAX_START_BACKOFF);
        self.start_failures.insert(
            session.to_path_buf(),
            StartFailures {
                count,
                retry_at: std::time::Instant::now() + wait,
            },
        );
    }

    /// Sweeps one session: a full [`sweep_session`] unless the session was quiet and nothing
    /// has changed since.
    pub fn sweep(
        &mut self,
        host: &HostSession,
        control: &mut dyn ContainerControl,
    ) -> Result<SweepOutcome, RuntimeError> {
        let paths = host.paths();
        let counters = (
            sessionbus_store::stamp::change_counter(&paths.inbound)
                .ok()
                .flatten(),
            sessionbus_store::stamp::change_counter(&paths.outbound)
                .ok()
                .flatten(),
        );
        let running = control.is_running(paths);
        if let Some(mark) = self.quiet.get(&paths.dir) {
            let unchanged = mark.inbound == counters.0
                && mark.outbound == counters.1
                && mark.running == running
                && mark.at.elapsed() < Self::FULL_SWEEP_EVERY
                && counters.0.is_some()
                && counters.1.is_some();
            if unchanged && !self.ceiling_passed(host, mark)? {
                return Ok(SweepOutcome::Quiet);
            }
        }
        self.quiet.remove(&paths.dir);
        let held = self.start_held_until(&paths.dir).is_some();
        let opts = self
            .opts
            .with_wake(self.opts.wake && !held)
            .with_started_at(self.started.get(&paths.dir).copied());
        let none: &NextOccurrenceFn = &|_| None;
        let next_occurrence = self.next_occurrence.0.as_deref().unwrap_or(none);
        let report = match sweep_session(host, control, next_occurrence, opts) {
            Err(
                e @ RuntimeError::Control {
                    action: "start", ..
                },
            ) => {
                self.start_failed(&paths.dir);
                return Err(e);
            }
            other => other?,
        };
        if report.woke {
            self.start_failures.remove(&paths.dir);
            self.started.insert(paths.dir.clone(), host.clock().now());
        }
        // Quiet when nothing is pending or claimed now. The counters are the ones read before
        // the sweep, so a commit during it (ours included) makes the next sweep a full one.
        let running_now = control.is_running(paths);
        // Quiet: nothing pending (read by the sweep's own ack sync) and nothing claimed. A
        // message or claim written since changed a counter read above.
        if report.acks.still_pending == 0 && report.outbound_unreadable.is_none() {
            self.quiet.insert(
                paths.dir.clone(),
                QuietMark {
                    inbound: counters.0,
                    outbound: counters.1,
                    running: running_now && running,
                    heartbeat_limit_ms: liveness::heartbeat_limit_ms(report.tool.as_ref()),
                    at: std::time::Instant::now(),
                },
            );
        }
        Ok(SweepOutcome::Full(Box::new(report)))
    }

    /// Forgets what the sweeper knows about a session (after the caller changed it behind the
    /// library's back, say).
    pub fn forget(&mut self, session: &std::path::Path) {
        self.quiet.remove(session);
    }

    fn ceiling_passed(&self, host: &HostSession, mark: &QuietMark) -> Result<bool, RuntimeError> {
        if !mark.running {
            return Ok(false);
        }
        let now = host.clock().now();
        Ok(heartbeat::mtime(&host.paths().heartbeat)?
            .is_some_and(|beat| now.millis_since(beat) > mark.heartbeat_limit_ms))
    }
}
