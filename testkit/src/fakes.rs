//! Fakes of the runtime's host traits (feature `runtime`): a container control that starts
//! nothing and a deliverer that keeps what it is handed.
//!
//! Both are cheap to clone and every clone shares the same state, so a test keeps one clone
//! to drive and inspect while the host owns another (wrapped in the async host's
//! `SyncControl` / `SyncDeliverer`, or used directly by the sync host).

use sessionbus_runtime::control::CallerError;
use sessionbus_runtime::host::{ContainerControl, Deliverer};
use sessionbus_runtime::liveness::KillReason;
use sessionbus_store::{DueOutbound, SessionPaths};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding it left consistent values (every update is one
    // statement).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`ContainerControl`] that starts no process: it records every start and kill, keeps a
/// running flag per session that the test can set (a container that crashes, one started
/// behind the host's back), can fail the next starts, and can panic for chosen sessions.
///
/// ```
/// use sessionbus_runtime::host::ContainerControl;
/// use sessionbus_store::SessionPaths;
/// use sessionbus_testkit::FakeControl;
///
/// let fake = FakeControl::new();
/// let mut host_side = fake.clone();
/// let s = SessionPaths::new("/data/v2-sessions/g/s");
/// fake.fail_next_starts(1);
/// assert!(host_side.start(&s).is_err());
/// host_side.start(&s).unwrap();
/// assert!(fake.is_running(&s.dir));
/// fake.set_running(&s.dir, false); // the container crashed
/// assert_eq!(fake.starts_of(&s.dir), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeControl {
    state: Arc<Mutex<ControlState>>,
}

#[derive(Debug, Default)]
struct ControlState {
    running: HashSet<PathBuf>,
    /// Every start attempt, in order, with whether it succeeded.
    starts: Vec<(PathBuf, bool)>,
    kills: Vec<(PathBuf, KillReason)>,
    fail_starts: u32,
    panic_for: HashSet<PathBuf>,
    is_running_calls: HashMap<PathBuf, u64>,
}

impl FakeControl {
    /// A control with nothing running.
    pub fn new() -> Self {
        FakeControl::default()
    }

    /// Whether the session's container counts as running.
    pub fn is_running(&self, session: &Path) -> bool {
        lock(&self.state).running.contains(session)
    }

    /// Sets the session's running state (as a container that crashed, or one started by
    /// other means).
    pub fn set_running(&self, session: &Path, running: bool) {
        let mut s = lock(&self.state);
        if running {
            s.running.insert(session.to_path_buf());
        } else {
            s.running.remove(session);
        }
    }

    /// Makes the next `n` starts (of any session) fail.
    pub fn fail_next_starts(&self, n: u32) {
        lock(&self.state).fail_starts = n;
    }

    /// Makes every call for `session` panic (or stop panicking), to test panic isolation.
    pub fn panic_for(&self, session: &Path, panic: bool) {
        let mut s = lock(&self.state);
        if panic {
            s.panic_for.insert(session.to_path_buf());
        } else {
            s.panic_for.remove(session);
        }
    }

    /// Successful starts, in order.
    pub fn starts(&self) -> Vec<PathBuf> {
        lock(&self.state)
            .starts
            .iter()
            .filter(|(_, ok)| *ok)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Start attempts for `session`, failed ones included.
    pub fn starts_of(&self, session: &Path) -> usize {
        lock(&self.state)
            .starts
            .iter()
            .filter(|(p, _)| p == session)
            .count()
    }

    /// Kills, in order, with their reasons.
    pub fn kills(&self) -> Vec<(PathBuf, KillReason)> {
        lock(&self.state).kills.clone()
    }

    /// Kills of `session`'s container.
    pub fn kills_of(&self, session: &Path) -> Vec<KillReason> {
        lock(&self.state)
            .kills
            .iter()
            .filter(|(p, _)| p == session)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// How often the host asked whether `session`'s container runs.
    pub fn is_running_calls(&self, session: &Path) -> u64 {
        lock(&self.state)
            .is_running_calls
            .get(session)
            .copied()
            .unwrap_or(0)
    }

    /// Panics (after releasing the lock) when `session` is set to panic.
    fn maybe_panic(&self, session: &Path, call: &str) {
        let panic = lock(&self.state).panic_for.contains(session);
        if panic {
            panic!("FakeControl: {call} panics for {}", session.display());
        }
    }
}

impl ContainerControl for FakeControl {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        self.maybe_panic(&session.dir, "is_running");
        let mut s = lock(&self.state);
        *s.is_running_calls.entry(session.dir.clone()).or_default() += 1;
        s.running.contains(&session.dir)
    }

    fn kill(&mut self, session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        self.maybe_panic(&session.dir, "kill");
        let mut s = lock(&self.state);
        s.running.remove(&session.dir);
        s.kills.push((session.dir.clone(), reason.clone()));
        Ok(())
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        self.maybe_panic(&session.dir, "start");
        let mut s = lock(&self.state);
        if s.fail_starts > 0 {
            s.fail_starts -= 1;
            s.starts.push((session.dir.clone(), false));
            return Err("FakeControl: start failed on purpose".into());
        }
        s.starts.push((session.dir.clone(), true));
        s.running.insert(session.dir.clone());
        Ok(())
    }
}

/// A [`Deliverer`] that keeps every row it is handed (the chat platform of a test). It can
/// refuse the next hand-offs, and answers each accepted one with a platform id
/// `platform-<n>`.
///
/// ```
/// use sessionbus_testkit::{reply, CapturingDeliverer, TempSession};
/// use sessionbus_runtime::host::deliver_session;
/// use sessionbus_store::AckStatus;
///
/// let s = TempSession::new();
/// s.host().inbound().write_message(&sessionbus_testkit::message("m", "hi").build()).unwrap();
/// s.container().outbound().commit(&["m".into()], &AckStatus::Completed, &[reply("r", "yo")]).unwrap();
/// let platform = CapturingDeliverer::new();
/// platform.fail_next(1);
/// let first = deliver_session(&s.host(), &mut platform.clone(), 5).unwrap();
/// assert_eq!(first.deferred, ["r"]);
/// deliver_session(&s.host(), &mut platform.clone(), 5).unwrap();
/// assert_eq!(platform.texts(), ["yo"]);
/// assert_eq!(platform.attempts(), [("r".to_string(), 1, false), ("r".to_string(), 2, true)]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct CapturingDeliverer {
    state: Arc<Mutex<DelivererState>>,
}

#[derive(Debug, Default)]
struct DelivererState {
    delivered: Vec<DueOutbound>,
    attempts: Vec<(String, i64, bool)>,
    fail_next: u32,
}

impl CapturingDeliverer {
    /// A deliverer that accepts everything.
    pub fn new() -> Self {
        CapturingDeliverer::default()
    }

    /// Refuses the next `n` hand-offs (the attempts count; the rows come again later).
    pub fn fail_next(&self, n: u32) {
        lock(&self.state).fail_next = n;
    }

    /// The rows accepted, in order.
    pub fn delivered(&self) -> Vec<DueOutbound> {
        lock(&self.state).delivered.clone()
    }

    /// How many rows were accepted.
    pub fn count(&self) -> usize {
        lock(&self.state).delivered.len()
    }

    /// The ids of the rows accepted, in order.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.state)
            .delivered
            .iter()
            .map(|d| d.message.id.clone())
            .collect()
    }

    /// The `text` of each accepted row's JSON content, in order.
    pub fn texts(&self) -> Vec<String> {
        lock(&self.state)
            .delivered
            .iter()
            .map(|d| {
                serde_json::from_str::<serde_json::Value>(&d.message.content)
                    .ok()
                    .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Every hand-off: the row's id, the attempt number and whether it was accepted.
    pub fn attempts(&self) -> Vec<(String, i64, bool)> {
        lock(&self.state).attempts.clone()
    }
}

impl Deliverer for CapturingDeliverer {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> Result<Option<String>, CallerError> {
        let mut s = lock(&self.state);
        let id = row.message.id.clone();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            s.attempts.push((id, attempt, false));
            return Err("CapturingDeliverer: hand-off refused on purpose".into());
        }
        s.attempts.push((id, attempt, true));
        s.delivered.push(row.clone());
        Ok(Some(format!("platform-{}", s.delivered.len())))
    }
}
