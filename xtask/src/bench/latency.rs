//! End to end through real processes: the bench plays the host (writes a message, waits on
//! the sessions' outbound folders with [`WatchSet`], delivers the reply), a child process runs
//! one [`Container`] per session (the runtime's own poll loop, default `container.json`
//! settings, an echo handler that returns at once, so the handler's time is nothing).
//!
//! - **latency**: one message per session per wave, every session at once; each sample is
//!   from the host's write (before its commit) to the reply's delivery record. With change
//!   notification (`inotify`) on a local folder, and with both sides polling
//!   (`SESSIONBUS_WAKE=poll`, the container's 1 s idle interval, a host pass every second:
//!   the older implementation's cadence);
//! - **throughput**: every message written as fast as the host can commit, then delivered as
//!   the replies come: messages per second through one session and across many.

use super::fixture::Sessions;
use super::{err, progress, BenchResult};
use serde::Serialize;
use sessionbus_runtime::container::{Container, ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::host::{deliver_session, Deliverer};
use sessionbus_runtime::wake::{Preference, Ready, WatchSet, WatchSetOptions, WAKE_ENV};
use sessionbus_store::{Batch, DueOutbound, HostSession, NewMessage, NewOutbound, SessionPaths};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long one wave (or a throughput run) may take before the bench gives up.
const WAVE_LIMIT: Duration = Duration::from_secs(120);

/// One latency run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    /// `inotify` or `polling`.
    pub mode: String,
    /// Where the session folders were: `tmpfs` (no fsync cost: the mechanism itself) or
    /// `disk` (every commit pays its fsyncs).
    pub storage: String,
    /// What the containers reported (`inotify`, or `polling (reason)`), distinct values.
    pub container_modes: Vec<String>,
    /// Sessions busy at once.
    pub sessions: usize,
    /// Messages measured.
    pub samples: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), milliseconds.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
    /// The worst session's own p99 (nothing starved: close to the overall p99).
    pub worst_session_p99_ms: f64,
}

/// Idle containers' CPU cost.
#[derive(Debug, Clone, Serialize)]
pub struct IdleCpu {
    /// `inotify` or `polling`.
    pub mode: String,
    /// Idle containers in the process.
    pub sessions: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// CPU time per idle session per second, microseconds (the median round's).
    pub us_per_session_second: f64,
    /// Every round's figure.
    pub rounds: Vec<f64>,
}

/// `n` idle containers for `secs` seconds: their process's CPU time per session per second.
pub fn idle_cpu(
    sessions: &Sessions,
    n: usize,
    secs: f64,
    preference: Preference,
) -> BenchResult<IdleCpu> {
    let paths: Vec<SessionPaths> = (0..n)
        .map(|_| sessions.fresh("idle-cpu"))
        .collect::<BenchResult<_>>()?;
    let mut containers = Containers::start(&paths, preference)?;
    // Past start-up and the first polls.
    std::thread::sleep(Duration::from_millis(1500));
    let before = containers.cpu_us()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let used = containers.cpu_us()?.saturating_sub(before);
    let seconds = start.elapsed().as_secs_f64();
    containers.stop()?;
    Ok(IdleCpu {
        mode: match preference {
            Preference::Auto => "inotify",
            Preference::Poll => "polling",
        }
        .into(),
        sessions: n,
        seconds,
        us_per_session_second: used as f64 / n.max(1) as f64 / seconds,
        rounds: Vec::new(),
    })
}

/// One throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRun {
    /// `tmpfs` or `disk`.
    pub storage: String,
    /// Sessions.
    pub sessions: usize,
    /// Messages in all.
    pub messages: usize,
    /// Messages per second, first write to last delivery.
    pub msgs_per_sec: f64,
}

/// The child's command line: the session folders, one `--e2e-child` each.
pub fn child_args(dirs: &[PathBuf]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = vec!["bench".into(), "--no-release".into()];
    for d in dirs {
        v.push("--e2e-child".into());
        v.push(d.clone().into());
    }
    v
}

/// The child process: one container per folder, each in its own thread, until stdin closes.
/// Prints `mode <wake mode>` per container, then `ready`.
pub fn child_main(dirs: &[PathBuf]) -> ExitCode {
    match child(dirs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench e2e child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn echo(
    _: &HandlerContext,
    batch: &Batch,
) -> Result<Handled, sessionbus_runtime::error::RuntimeError> {
    Ok(Handled::completed(
        batch
            .messages
            .iter()
            .map(|m| NewOutbound::reply_to(format!("r-{}", m.id), m, "echo"))
            .collect(),
    ))
}

fn child(dirs: &[PathBuf]) -> BenchResult<()> {
    let stop = AtomicBool::new(false);
    let mut containers = Vec::with_capacity(dirs.len());
    let mut out = std::io::stdout().lock();
    for d in dirs {
        let c = Container::start(ContainerOptions {
            config_optional: true,
            ..ContainerOptions::in_folder(d)
        })
        .map_err(err)?;
        writeln!(out, "mode {}", c.wake_mode()).map_err(err)?;
        containers.push(c);
    }
    writeln!(out, "ready").map_err(err)?;
    out.flush().map_err(err)?;
    drop(out);
    std::thread::scope(|scope| -> BenchResult<()> {
        let handles: Vec<_> = containers
            .iter_mut()
            .map(|c| {
                let stop = &stop;
                scope.spawn(move || c.run(stop, echo).map(|_| ()).map_err(err))
            })
            .collect();
        // Until the parent closes our stdin; `cpu` asks for this process's CPU time.
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).map_err(err)? > 0 {
            if line.trim() == "cpu" {
                let (user, sys) = own_cpu_us();
                let mut out = std::io::stdout().lock();
                writeln!(out, "cpu {user} {sys}").map_err(err)?;
                out.flush().map_err(err)?;
            }
            line.clear();
        }
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join()
                .map_err(|_| "a container thread panicked".to_string())??;
        }
        Ok(())
    })
}

/// This process's user and system CPU time, microseconds.
fn own_cpu_us() -> (u64, u64) {
    // SAFETY: zeroed is a valid rusage (plain integers), filled in by the call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-parameter for the calling process.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (0, 0);
    }
    let us = |t: libc::timeval| {
        u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
    };
    (us(ru.ru_utime), us(ru.ru_stime))
}

/// The running child and what its containers reported.
struct Containers {
    child: Child,
    modes: Vec<String>,
    lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
}

impl Containers {
    fn start(paths: &[SessionPaths], preference: Preference) -> BenchResult<Containers> {
        let exe = std::env::current_exe().map_err(err)?;
        let dirs: Vec<PathBuf> = paths.iter().map(|p| p.dir.clone()).collect();
        let mut cmd = Command::new(exe);
        cmd.args(child_args(&dirs))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match preference {
            Preference::Poll => cmd.env(WAKE_ENV, "poll"),
            Preference::Auto => cmd.env_remove(WAKE_ENV),
        };
        let mut child = cmd.spawn().map_err(err)?;
        let stdout = child.stdout.take().ok_or("no stdout from the e2e child")?;
        let mut modes = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next() {
            let line = line.map_err(err)?;
            if let Some(m) = line.strip_prefix("mode ") {
                if !modes.iter().any(|x| x == m) {
                    modes.push(m.to_string());
                }
            } else if line == "ready" {
                return Ok(Containers {
                    child,
                    modes,
                    lines: Some(lines),
                });
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("the e2e child ended before its containers were ready".into())
    }

    /// The child's CPU time so far (user + system), microseconds.
    fn cpu_us(&mut self) -> BenchResult<u64> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or("the e2e child's stdin is closed")?;
        writeln!(stdin, "cpu").map_err(err)?;
        stdin.flush().map_err(err)?;
        let line = self
            .lines
            .as_mut()
            .and_then(|l| l.next())
            .ok_or("the e2e child ended")?
            .map_err(err)?;
        let mut parts = line.split_whitespace().skip(1).map(str::parse::<u64>);
        match (parts.next(), parts.next()) {
            (Some(Ok(u)), Some(Ok(s))) => Ok(u + s),
            _ => Err(format!("the e2e child answered {line:?} to cpu")),
        }
    }

    fn stop(mut self) -> BenchResult<()> {
        drop(self.child.stdin.take());
        let status = self.child.wait().map_err(err)?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the e2e child exited with {status}"))
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Records when each reply was delivered, by the message it answers.
#[derive(Default)]
struct Recorder {
    delivered: HashMap<String, Instant>,
}

impl Deliverer for Recorder {
    fn deliver(
        &mut self,
        _session: &SessionPaths,
        row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        if let Some(to) = &row.message.in_reply_to {
            self.delivered
                .entry(to.clone())
                .or_insert_with(Instant::now);
        }
        Ok(None)
    }
}

/// The host's side of a run: its sessions, the watch, the recorder.
struct Host {
    hosts: Vec<HostSession>,
    set: WatchSet<usize>,
    rec: Recorder,
}

impl Host {
    fn new(paths: &[SessionPaths], preference: Preference) -> Host {
        let mut set = WatchSet::new(WatchSetOptions::default().with_preference(preference));
        for (i, p) in paths.iter().enumerate() {
            set.watch(i, &p.outbound);
        }
        Host {
            hosts: paths.iter().map(|p| HostSession::open(&p.dir)).collect(),
            set,
            rec: Recorder::default(),
        }
    }

    fn deliver(&mut self, i: usize) -> BenchResult<()> {
        if let Some(h) = self.hosts.get(i) {
            let start = Instant::now();
            let result = deliver_session(h, &mut self.rec, 5);
            self.set.charge(&i, start.elapsed());
            match result {
                Ok(_) => {}
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    /// Serves the sessions until every id in `ids` was delivered.
    fn until_delivered(&mut self, ids: &[String]) -> BenchResult<()> {
        let end = Instant::now() + WAVE_LIMIT;
        while !ids.iter().all(|id| self.rec.delivered.contains_key(id)) {
            if Instant::now() >= end {
                return Err(format!("replies not delivered within {WAVE_LIMIT:?}"));
            }
            match self.set.wait(Duration::from_millis(100)) {
                Ready::Changed(keys) => {
                    for k in keys {
                        self.deliver(k)?;
                    }
                }
                Ready::FullPass => {
                    for k in 0..self.hosts.len() {
                        self.deliver(k)?;
                    }
                }
                Ready::Nothing => {}
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// `waves` waves of one message per session, all sessions at once.
pub fn latency(
    (sessions, storage): (&Sessions, &str),
    n: usize,
    waves: usize,
    preference: Preference,
) -> BenchResult<LatencyRun> {
    let paths: Vec<SessionPaths> = (0..n)
        .map(|_| sessions.fresh("e2e"))
        .collect::<BenchResult<_>>()?;
    let containers = Containers::start(&paths, preference)?;
    let mut host = Host::new(&paths, preference);
    let mode = match preference {
        Preference::Auto => "inotify",
        Preference::Poll => "polling",
    };
    let mut per_session: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Let the containers settle into their idle wait.
    std::thread::sleep(Duration::from_millis(300));
    // The host's writes come from their own thread (as a host's chat adapter would), so a
    // reply is delivered while the wave's later messages are still being written.
    let writers: Vec<HostSession> = paths.iter().map(|p| HostSession::open(&p.dir)).collect();
    let mut gap = 7u64;
    for w in 0..waves {
        let ids: Vec<String> = (0..n).map(|i| format!("w{w}-s{i}")).collect();
        let sent = std::thread::scope(|scope| -> BenchResult<Vec<Instant>> {
            let writer = scope.spawn(|| -> BenchResult<Vec<Instant>> {
                let mut sent = Vec::with_capacity(n);
                for (h, id) in writers.iter().zip(&ids) {
                    let t0 = Instant::now();
                    h.inbound()
                        .write_messages(&[NewMessage::chat(id, &format!("wave {w}"))])
                        .map_err(err)?;
                    sent.push(t0);
                }
                Ok(sent)
            });
            let delivered = host.until_delivered(&ids);
            let sent = writer
                .join()
                .map_err(|_| "the writer thread panicked".to_string())??;
            delivered?;
            Ok(sent)
        })?;
        for (i, (id, t0)) in ids.iter().zip(&sent).enumerate() {
            if let (Some(t), Some(v)) = (host.rec.delivered.get(id), per_session.get_mut(i)) {
                v.push(t.duration_since(*t0).as_secs_f64() * 1e3);
            }
        }
        // An irregular pause (5-45 ms) so waves do not fall in step with any interval.
        gap = (gap * 7 + 13) % 41;
        std::thread::sleep(Duration::from_millis(5 + gap));
    }
    let container_modes = containers.modes.clone();
    containers.stop()?;
    let all = sorted(per_session.iter().flatten().copied().collect());
    let worst = per_session
        .into_iter()
        .map(|v| percentile(&sorted(v), 99.0))
        .fold(f64::NAN, f64::max);
    Ok(LatencyRun {
        mode: mode.into(),
        storage: storage.into(),
        container_modes,
        sessions: n,
        samples: all.len(),
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
        max_ms: all.last().copied().unwrap_or(f64::NAN),
        worst_session_p99_ms: worst,
    })
}

/// `per_session` messages into each of `n` sessions, written back to back, delivered as the
/// replies come (change notification).
pub fn throughput(
    (sessions, storage): (&Sessions, &str),
    n: usize,
    per_session: usize,
) -> BenchResult<ThroughputRun> {
    let paths: Vec<SessionPaths> = (0..n)
        .map(|_| sessions.fresh("tput"))
        .collect::<BenchResult<_>>()?;
    let containers = Containers::start(&paths, Preference::Auto)?;
    let mut host = Host::new(&paths, Preference::Auto);
    std::thread::sleep(Duration::from_millis(300));
    let mut ids = Vec::with_capacity(n * per_session);
    let start = Instant::now();
    for k in 0..per_session {
        for i in 0..n {
            let id = format!("t{k}-s{i}");
            if let Some(h) = host.hosts.get(i) {
                h.inbound()
                    .write_messages(&[NewMessage::chat(&id, "go")])
                    .map_err(err)?;
            }
            ids.push(id);
        }
        // Deliver what is ready while writing, as a host would.
        if let Ready::Changed(keys) = host.set.wait(Duration::ZERO) {
            for k in keys {
                host.deliver(k)?;
            }
        }
    }
    host.until_delivered(&ids)?;
    let secs = start.elapsed().as_secs_f64();
    containers.stop()?;
    Ok(ThroughputRun {
        storage: storage.into(),
        sessions: n,
        messages: ids.len(),
        msgs_per_sec: ids.len() as f64 / secs,
    })
}

/// Runs a latency measurement and reports what the containers said about their mode.
pub fn latency_reported(
    at: (&Sessions, &str),
    n: usize,
    waves: usize,
    preference: Preference,
) -> BenchResult<LatencyRun> {
    progress(&format!(
        "latency ({}): {n} session(s), {waves} wave(s), {}",
        at.1,
        match preference {
            Preference::Auto => "change notification",
            Preference::Poll => "polling",
        }
    ));
    latency(at, n, waves, preference)
}
