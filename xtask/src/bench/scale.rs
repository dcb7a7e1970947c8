//! Many idle sessions on one host: a cold pass (a host that just started: every session swept
//! in full and delivered), the steady-state pass of a long-lived host (the [`Sweeper`]'s quiet
//! check per session, and a look at the [`WatchSet`] for sessions whose outbound folder
//! changed, which are the only ones delivered), and the host's memory per idle session.

use super::fixture::{touch_heartbeat, Sessions};
use super::memory::own_rss;
use super::raw::RawSession;
use super::workloads::sweep_raw;
use super::{err, BenchResult};
use serde::Serialize;
use sessionbus_runtime::host::{
    deliver_session, ContainerControl, Deliverer, SweepOptions, SweepOutcome, Sweeper,
};
use sessionbus_runtime::liveness::KillReason;
use sessionbus_runtime::wake::{Ready, WatchSet, WatchSetOptions};
use sessionbus_store::{DueOutbound, HostSession, SessionPaths};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Refuses nothing and is never called for idle sessions.
struct Nobody;

impl Deliverer for Nobody {
    fn deliver(
        &mut self,
        _session: &SessionPaths,
        _row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        Err("an idle session had a due reply".into())
    }
}

/// The caller's control for idle sessions: every container running, none to start or kill.
#[derive(Default)]
pub struct AlwaysRunning {
    actions: usize,
}

impl AlwaysRunning {
    /// Fails when the pass started or killed a container.
    pub fn check(&self) -> BenchResult<()> {
        if self.actions == 0 {
            Ok(())
        } else {
            Err(format!(
                "{} container action(s) in an idle pass",
                self.actions
            ))
        }
    }
}

impl ContainerControl for AlwaysRunning {
    fn is_running(&mut self, _session: &SessionPaths) -> bool {
        true
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

/// The memory of a host following many idle sessions.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleMemory {
    /// Sessions.
    pub sessions: usize,
    /// RSS growth from opening them, sweeping them twice and watching their folders, KiB.
    pub rss_growth_kib: u64,
    /// The same per session, bytes.
    pub bytes_per_session: f64,
    /// inotify watches in use (kernel memory, not in RSS: about 1 KiB each).
    pub watches: usize,
}

/// Copies of `template` with fresh heartbeats.
pub fn make_sessions(
    sessions: &Sessions,
    template: &SessionPaths,
    n: usize,
) -> BenchResult<Vec<SessionPaths>> {
    (0..n)
        .map(|_| {
            let p = sessions.copy_of(template, "scale")?;
            touch_heartbeat(&p)?;
            Ok(p)
        })
        .collect()
}

/// A cold pass through the library: a new [`Sweeper`] (nothing remembered) sweeps every
/// session in full and delivers each. Microseconds per pass.
pub fn cold_library(paths: &[SessionPaths]) -> BenchResult<f64> {
    let hosts: Vec<HostSession> = paths.iter().map(|p| HostSession::open(&p.dir)).collect();
    let mut control = AlwaysRunning::default();
    let mut sweeper = Sweeper::new(SweepOptions::default().with_idle_after(None));
    let start = Instant::now();
    for h in &hosts {
        sweeper.sweep(h, &mut control).map_err(err)?;
        deliver_session(h, &mut Nobody, 5).map_err(err)?;
    }
    let us = start.elapsed().as_secs_f64() * 1e6;
    control.check()?;
    Ok(us)
}

/// [`cold_library`] on the raw baseline: the raw sweep of every session and its due read.
pub fn cold_raw(paths: &[SessionPaths]) -> BenchResult<f64> {
    let raws: Vec<RawSession> = paths
        .iter()
        .map(RawSession::new)
        .collect::<Result<_, _>>()?;
    let sweep = sweep_raw(paths, true, 1)?;
    let due_start = Instant::now();
    for r in &raws {
        if !r.due_outbound(1000)?.is_empty() {
            return Err("raw: an idle session had a due reply".into());
        }
    }
    Ok(sweep + due_start.elapsed().as_secs_f64() * 1e6)
}

/// Steady state through the library: after two warm-up passes, one pass = the [`Sweeper`]'s
/// check of every session plus one look at the [`WatchSet`] (idle sessions raise no events,
/// so nothing is delivered). Microseconds per pass (median of `passes`).
pub fn steady_library(paths: &[SessionPaths], passes: usize) -> BenchResult<f64> {
    let hosts: Vec<HostSession> = paths.iter().map(|p| HostSession::open(&p.dir)).collect();
    let mut control = AlwaysRunning::default();
    let mut sweeper = Sweeper::new(SweepOptions::default().with_idle_after(None));
    let mut set =
        WatchSet::new(WatchSetOptions::default().with_full_pass_every(Duration::from_secs(3600)));
    for (i, p) in paths.iter().enumerate() {
        set.watch(i, &p.outbound);
    }
    let _ = set.wait(Duration::ZERO);
    for _ in 0..2 {
        for h in &hosts {
            sweeper.sweep(h, &mut control).map_err(err)?;
        }
    }
    let mut runs = Vec::with_capacity(passes);
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        for h in &hosts {
            if let SweepOutcome::Full(_) = sweeper.sweep(h, &mut control).map_err(err)? {
                return Err("an idle session was not recognised as quiet".into());
            }
        }
        match set.wait(Duration::ZERO) {
            Ready::Changed(keys) => {
                for k in keys {
                    if let Some(h) = hosts.get(k) {
                        deliver_session(h, &mut Nobody, 5).map_err(err)?;
                    }
                }
            }
            Ready::FullPass | Ready::Nothing => {}
        }
        runs.push(start.elapsed().as_secs_f64() * 1e6);
    }
    control.check()?;
    runs.sort_by(f64::total_cmp);
    Ok(runs.get(runs.len() / 2).copied().unwrap_or(f64::NAN))
}

/// The host's RSS growth for following `paths`, measured in a fresh child process (a
/// long-lived bench process reuses memory it freed earlier, which hides the growth).
pub fn memory(paths: &[SessionPaths], list: &Path) -> BenchResult<ScaleMemory> {
    let text: String = paths
        .iter()
        .map(|p| format!("{}\n", p.dir.display()))
        .collect();
    std::fs::write(list, text).map_err(err)?;
    let exe = std::env::current_exe().map_err(err)?;
    let out = Command::new(exe)
        .args(["bench", "--no-release", "--scale-memory-child"])
        .arg(list)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(err)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("scale memory child ({}): {e}", out.status))?;
    let growth = v["rss_growth_kib"].as_u64().ok_or("no rss_growth_kib")?;
    Ok(ScaleMemory {
        sessions: paths.len(),
        rss_growth_kib: growth,
        bytes_per_session: growth as f64 * 1024.0 / paths.len().max(1) as f64,
        watches: v["watches"].as_u64().unwrap_or(0) as usize,
    })
}

/// The child of [`memory`]: follows the session folders listed in `list` (one per line) and
/// prints its RSS growth as JSON.
pub fn memory_child(list: &Path) -> ExitCode {
    let run = || -> BenchResult<serde_json::Value> {
        let text = std::fs::read_to_string(list).map_err(err)?;
        let paths: Vec<SessionPaths> = text.lines().map(SessionPaths::new).collect();
        let m = memory_here(&paths)?;
        Ok(serde_json::json!({ "rss_growth_kib": m.rss_growth_kib, "watches": m.watches }))
    };
    match run() {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench scale memory child: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The RSS growth of this process for following `paths`: sessions opened, swept twice (quiet
/// marks remembered), folders watched.
fn memory_here(paths: &[SessionPaths]) -> BenchResult<ScaleMemory> {
    let (before, _) = own_rss()?;
    let hosts: Vec<HostSession> = paths.iter().map(|p| HostSession::open(&p.dir)).collect();
    let mut control = AlwaysRunning::default();
    let mut sweeper = Sweeper::new(SweepOptions::default().with_idle_after(None));
    let mut set = WatchSet::new(WatchSetOptions::default());
    for (i, p) in paths.iter().enumerate() {
        set.watch(i, &p.outbound);
    }
    for _ in 0..2 {
        for h in &hosts {
            sweeper.sweep(h, &mut control).map_err(err)?;
        }
    }
    let (after, _) = own_rss()?;
    let growth = after.saturating_sub(before);
    let (watches, _) = set.counts();
    drop((hosts, sweeper, set));
    Ok(ScaleMemory {
        sessions: paths.len(),
        rss_growth_kib: growth,
        bytes_per_session: growth as f64 * 1024.0 / paths.len().max(1) as f64,
        watches,
    })
}
