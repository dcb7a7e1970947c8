//! `cargo xtask soak`: a host, one container per session, and a second host-side writer run a
//! random workload as separate processes while a fault injector acts on them; at the end the
//! ledger is checked against the files.
//!
//! Processes (all this binary, see [`proc`]): the **driver** (this command) provisions the
//! sessions, starts the **host** (`soak-proc host`), which starts one **container** per session
//! through `ContainerControl` (`soak-proc container`: the runtime's poll loop with an echo
//! handler), and a **host CLI writer** (`soak-proc writer`) that writes into session `s0`
//! next to the host. The driver keeps no connection open: it learns what was committed from
//! the ledgers the processes append to after each successful write, and from the files.
//!
//! Faults, on a schedule drawn from `--seed` (each kind at least once per run):
//! - `kill_container`: `kill -9` of a running container, often while it holds a claim or is
//!   inside a transaction;
//! - `kill_host`: `kill -9` of the host, which is restarted (a new incarnation) after a random
//!   pause while its containers keep running; the new host stops them first;
//! - `kill_writer`: `kill -9` of the host CLI writer, restarted;
//! - `clock_jump`: the shared clock offset moves forward (past the 60 s claim tolerance, or
//!   past the 30 min heartbeat ceiling) or back;
//! - `hang`: a container is stopped (`SIGSTOP`) and the clock jumps past the heartbeat
//!   ceiling: the host's sweep must find it stuck and kill it;
//! - `disk_full`: a writer process (or a container) runs under a file-size limit just above
//!   its file's size (`RLIMIT_FSIZE`, SIGXFSZ ignored), so writes fail with EFBIG; the error
//!   must be a clear one and the file must stay intact;
//! - `readonly`: from then on, session `s1`'s containers see inbound.db through a read-only
//!   bind mount in a private mount namespace (as a container's `:ro` mount): they must keep
//!   working, since they only read it;
//! - `garbage`: the last session's inbound.db or outbound.db is replaced by garbage or a
//!   truncated copy: that session fails with clear errors, the others carry on;
//! - `handler_panic`, `handler_hang`, `poison`: the driver writes a special message (text
//!   `panic-once:<id>`, `hang-once:<id>`, `poison:<id>`, see [`proc::Special`]) into a session
//!   next to the host, and the container's handler panics on it once, hangs on it once, or
//!   fails on it every time. A panic ends the container's run with the batch's claims left:
//!   the host counts a try and retries at once, and the next container answers. A hang runs
//!   past `handlerTimeoutMs` (2 s here, real time: the container measures the deadline with
//!   `Instant`, so the clock's jumps never fire it, and a loaded machine has 13 times the
//!   echo handler's longest think): the container then sets its heartbeat back to the claim,
//!   and once the driver sees the deadline has passed it steps the clock past the 60 s claim
//!   tolerance (the claim rule compares clock times, and a minute of real time would outlast
//!   a short run), so the host's sweep must kill the container; a later one answers. A poison
//!   message must end `failed` after the retry policy's tries, unanswered, and must not take
//!   the messages claimed with it down too (`collateral`, a problem): poison messages go to
//!   `s1`, which runs batches of `--poison-batch` (4 by default) and gets context rows like the
//!   others, so both of the poll's rules are exercised (a retried message goes alone; a batch
//!   ends at the newest message that wakes the agent rather than at newer context rows).
//!   `--poison-batch 1` gives the poison session batches of one.
//!   The other special messages go to any session but the last. "Once" is a marker in the
//!   container's session state (`soak-once:<id>`), committed before the misbehaviour.
//!
//! The host keeps the default idle rule (stop a container after 30 min of the clock with
//! nothing pending, claimed or happening): the clock's steps past 30 min trigger it. Such a
//! stop is counted as `idle_stops`, never as a stuck kill, and what it could get wrong (a
//! claim taken in the moment of the stop) is a try the host counts and retries, checked with
//! the messages.
//!
//! Then the drain: faults and writes stop, containers hung by `hang` or in their handler get
//! up to 30 s to be killed by the host, the clock moves past every scheduled retry, and the
//! host runs until every message is settled (or `--drain-secs` pass). The check (see
//! [`check`]) reads every file with the processes stopped.

pub mod check;
pub mod clock;
pub mod os;
pub mod proc;
pub mod rng;

use clap::Args;
use proc::Special;
use rng::Rng;
use serde::{Deserialize, Serialize};
use sessionbus_runtime::liveness::CLAIM_TOLERANCE_MS;
use sessionbus_store::{provision, HostSession, NewMessage, SessionPaths, SystemClock};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit status when the soak found a lost, duplicated or corrupt message or file.
pub const EXIT_FAILED: u8 = 1;

/// The agent group of the soak's sessions.
pub const GROUP: &str = "soak";

/// Arguments of `cargo xtask soak`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Run a host, one container per session and a second host-side writer as separate \
processes under a random workload, while a fault injector kills them (kill -9, also inside \
transactions), restarts them, jumps the clock forward and back, fills the disk (a file-size \
limit), mounts a session's inbound.db read-only on the container side, hangs a container, \
swaps a garbage file into one session, and writes messages the container's handler panics on \
once, hangs on once (past its deadline) or fails on every time (poison). Then it drains and \
checks the ledger against the files: every message the host committed answered exactly once or \
failed after its last try, every poison message failed and nothing else failed with it, no seq \
collision or parity break, no corrupt file, the other sessions unaffected by the broken one.\n\n\
Prints one summary line. Needs Linux (/proc); the read-only fault needs root (mount namespaces).",
    after_help = "Exit status: 0 when nothing was lost, duplicated or corrupt; 1 otherwise or when \
the soak could not run."
)]
pub struct SoakArgs {
    /// How long to inject faults, in seconds (the drain and the check come after)
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub seconds: u64,

    /// Seed of the workload and the fault schedule (default: from the time)
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Sessions (at least 3: s0 is shared with the CLI writer, s1 gets the read-only fault, the
    /// last one the garbage file)
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub sessions: usize,

    /// Messages per second the host writes (over all sessions; the CLI writer adds its own)
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    pub rate: f64,

    /// Give up draining after this long
    #[arg(long, value_name = "N", default_value_t = 120)]
    pub drain_secs: u64,

    /// Run folder (default: a new folder under the system's temp dir); kept after a failure or
    /// with --keep, removed after a clean run otherwise
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep the run folder after a clean run
    #[arg(long)]
    pub keep: bool,

    /// Messages per batch in the poison session (s1). A poison message's batch-mates must
    /// never follow it to `failed` (reported as `collateral`): the container polls a message
    /// that has failed before alone
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub poison_batch: u32,

    /// Print each fault as it is injected
    #[arg(long, short)]
    pub verbose: bool,
}

/// The run's parameters, shared with its processes through `soak.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The seed.
    pub seed: u64,
    /// Number of sessions.
    pub sessions: usize,
    /// Host messages per second.
    pub rate: f64,
    /// Host loop period.
    pub tick_ms: u64,
    /// Retry backoff base.
    pub base_backoff_ms: i64,
    /// Retries before a message fails.
    pub max_tries: i64,
    /// Delivery attempts before a row is recorded failed.
    pub delivery_attempts: i64,
    /// Probability that one hand-off to the platform fails.
    pub delivery_fail: f64,
    /// A container thinks up to this long per batch.
    pub slow_max_ms: u64,
    /// Heartbeat interval of the containers.
    pub heartbeat_ms: u64,
    /// The CLI writer's pause between writes, lower bound.
    pub writer_min_ms: u64,
    /// Upper bound.
    pub writer_max_ms: u64,
    /// `handlerTimeoutMs` of every session's container.json: the deadline of one batch, in
    /// real milliseconds (the container measures it with `Instant`, not with the clock).
    pub handler_timeout_ms: u64,
    /// The session that gets the poison messages.
    pub poison_session: usize,
    /// `maxMessagesPerPrompt` of the poison session (`--poison-batch`).
    pub poison_batch: u32,
}

impl RunConfig {
    /// Reads `soak.json` of a run.
    pub fn load(layout: &Layout) -> Result<RunConfig, String> {
        let path = layout.run.join("soak.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Where everything of a run lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The run folder.
    pub run: PathBuf,
    /// Ledgers: `written-<proc>.log`, `platform-<proc>.log`.
    pub ledger: PathBuf,
    /// Events of every process.
    pub events: PathBuf,
    /// Standard error of every process.
    pub logs: PathBuf,
    /// Files through which the driver tells the host what to do next.
    pub control_dir: PathBuf,
}

impl Layout {
    /// The layout of run folder `run`.
    pub fn new(run: &Path) -> Self {
        Layout {
            run: run.to_path_buf(),
            ledger: run.join("ledger"),
            events: run.join("events"),
            logs: run.join("logs"),
            control_dir: run.join("control"),
        }
    }

    /// Session `i`'s folder.
    pub fn session(&self, i: usize) -> PathBuf {
        self.run.join("v2-sessions").join(GROUP).join(Self::sid(i))
    }

    /// Session `i`'s id.
    pub fn sid(i: usize) -> String {
        format!("s{i}")
    }

    /// A control file.
    pub fn control(&self, name: &str) -> PathBuf {
        self.control_dir.join(name)
    }

    /// The binary every process runs: a copy of this one in the run folder, so that a
    /// rebuild during a long run does not change it.
    pub fn exe(&self) -> PathBuf {
        self.run.join("bin").join("xtask")
    }
}

/// The kinds of faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// `kill -9` of a container.
    KillContainer,
    /// `kill -9` of the host, then a restart.
    KillHost,
    /// `kill -9` of the CLI writer, then a restart.
    KillWriter,
    /// The clock jumps.
    ClockJump,
    /// A container stops responding.
    Hang,
    /// A writer process under a file-size limit.
    DiskFullWriter,
    /// A container under a file-size limit.
    DiskFullContainer,
    /// inbound.db read-only on the container side.
    ReadOnly,
    /// A garbage or truncated file swapped in.
    Garbage,
    /// A `panic-once:<id>` message: the handler panics on it once (see [`proc::Special`]).
    HandlerPanic,
    /// A `hang-once:<id>` message: the handler hangs on it once, past its deadline.
    HandlerHang,
    /// A `poison:<id>` message: the handler fails on it every time.
    Poison,
}

impl Fault {
    const ALL: [Fault; 12] = [
        Fault::KillContainer,
        Fault::KillHost,
        Fault::KillWriter,
        Fault::ClockJump,
        Fault::Hang,
        Fault::DiskFullWriter,
        Fault::DiskFullContainer,
        Fault::ReadOnly,
        Fault::Garbage,
        Fault::HandlerPanic,
        Fault::HandlerHang,
        Fault::Poison,
    ];

    /// Extra occurrences per minute, on top of the one every run gets.
    fn per_minute(self) -> f64 {
        match self {
            Fault::KillContainer => 8.0,
            Fault::KillHost => 2.0,
            Fault::KillWriter => 2.0,
            Fault::ClockJump => 3.0,
            Fault::Hang => 0.5,
            Fault::DiskFullWriter => 1.0,
            Fault::DiskFullContainer => 1.0,
            Fault::HandlerPanic => 2.0,
            Fault::HandlerHang => 0.5,
            Fault::Poison => 1.0,
            Fault::ReadOnly | Fault::Garbage => 0.0,
        }
    }
}

/// What the driver did and saw, for the check.
#[derive(Debug, Clone, Default)]
pub struct DriverRecord {
    /// Faults injected, by name.
    pub faults: BTreeMap<&'static str, u64>,
    /// Kills (host, container, writer) that left a journal behind: killed inside a
    /// transaction.
    pub in_txn: u64,
    /// Containers stopped by the hang fault: (pid, when, in real ms).
    pub hung: Vec<(i32, i64)>,
    /// When the drain woke the hung containers the host had not killed (real ms).
    pub drain_start_ms: i64,
    /// Real ms of each clock jump.
    pub jumps: Vec<i64>,
    /// The broken session and when it broke (real ms).
    pub broken: Option<(usize, i64, String)>,
    /// Disk-full outcomes that were not a clear error (details).
    pub unclear: Vec<String>,
    /// Files found corrupt during the run (right after a disk-full fault).
    pub corrupt_during: Vec<String>,
    /// The host exited without being killed.
    pub host_crashes: Vec<String>,
    /// The drain ended with everything settled.
    pub settled: bool,
    /// How long the drain took.
    pub drain: Duration,
    /// The read-only fault could be set up here.
    pub readonly_supported: bool,
    /// Containers whose handler hung on a `hang-once` message: (pid, when, in real ms).
    pub handler_hung: Vec<(i32, i64)>,
    /// Those still alive after the drain: nobody killed them (details).
    pub handler_hangs_missed: Vec<String>,
}

impl DriverRecord {
    fn count(&mut self, name: &'static str) {
        *self.faults.entry(name).or_default() += 1;
    }
}

/// `cargo xtask soak`.
pub fn main(args: &SoakArgs) -> ExitCode {
    match run(args) {
        Ok(report) => {
            println!("{}", report.summary_line());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("soak failed: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Real ms now.
fn now_ms() -> i64 {
    clock::real_ms()
}

struct Driver {
    layout: Layout,
    cfg: RunConfig,
    rng: Rng,
    rec: DriverRecord,
    host: Option<Child>,
    host_k: u32,
    writer: Option<Child>,
    writer_k: u32,
    fsize_k: u32,
    oneshots: Vec<Child>,
    offset_ms: i64,
    max_offset_ms: i64,
    verbose: bool,
    ro_session: usize,
    shared_session: usize,
    /// The run's clock, for the special messages the driver writes.
    clock: clock::OffsetClock,
    /// Special messages written so far (their ids' counter).
    specials: u64,
    /// How far the driver has read each container event file.
    event_offsets: BTreeMap<PathBuf, u64>,
    /// Handler hangs seen in the events and not known dead: pid, session, real ms of the
    /// hang, the container's clock then.
    hangs: Vec<HandlerHang>,
}

/// A container whose handler hangs on a `hang-once` message.
#[derive(Debug, Clone)]
struct HandlerHang {
    pid: i32,
    sid: String,
    real_ms: i64,
    clock_ms: i64,
}

/// Runs the soak and returns its report.
pub fn run(args: &SoakArgs) -> Result<check::Report, String> {
    if args.sessions < 3 {
        return Err("--sessions must be at least 3".into());
    }
    if args.poison_batch == 0 {
        return Err("--poison-batch must be at least 1".into());
    }
    let seed = args.seed.unwrap_or_else(|| now_ms() as u64 % 1_000_000);
    let run = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "sessionbus-soak-{seed}-{}-{}",
            std::process::id(),
            now_ms()
        )),
    };
    if run.exists() && std::fs::read_dir(&run).map_err(err)?.next().is_some() {
        return Err(format!("{} exists and is not empty", run.display()));
    }
    let run = {
        std::fs::create_dir_all(&run).map_err(|e| format!("{}: {e}", run.display()))?;
        run.canonicalize().map_err(err)?
    };
    let layout = Layout::new(&run);
    for d in [
        &layout.ledger,
        &layout.events,
        &layout.logs,
        &layout.control_dir,
    ] {
        std::fs::create_dir_all(d).map_err(err)?;
    }
    std::fs::create_dir_all(run.join("bin")).map_err(err)?;
    let me = std::env::current_exe().map_err(err)?;
    std::fs::copy(&me, layout.exe()).map_err(|e| format!("copy {}: {e}", me.display()))?;

    let cfg = RunConfig {
        seed,
        sessions: args.sessions,
        rate: args.rate,
        tick_ms: 30,
        base_backoff_ms: 250,
        max_tries: 5,
        delivery_attempts: 10,
        delivery_fail: 0.05,
        slow_max_ms: 150,
        heartbeat_ms: 250,
        writer_min_ms: 40,
        writer_max_ms: 250,
        handler_timeout_ms: 2000,
        poison_session: 1,
        poison_batch: args.poison_batch,
    };
    std::fs::write(
        run.join("soak.json"),
        serde_json::to_string_pretty(&cfg).map_err(err)?,
    )
    .map_err(err)?;
    clock::write_offset(&run, 0).map_err(err)?;
    for i in 0..cfg.sessions {
        let paths = SessionPaths::new(layout.session(i));
        provision(&paths, None, &SystemClock).map_err(err)?;
        let agent = paths.dir.join("agent");
        std::fs::create_dir_all(&agent).map_err(err)?;
        let per_prompt = if i == cfg.poison_session {
            cfg.poison_batch
        } else {
            4
        };
        std::fs::write(
            agent.join("container.json"),
            format!(
                "{{\"assistantName\": \"soak\", \"pollIntervalIdleMs\": 50, \
                 \"pollIntervalActiveMs\": 20, \"maxMessagesPerPrompt\": {per_prompt}, \
                 \"handlerTimeoutMs\": {}}}\n",
                cfg.handler_timeout_ms
            ),
        )
        .map_err(err)?;
    }
    eprintln!(
        "soak: seed {seed}, {} s, {} sessions, run folder {}",
        args.seconds,
        cfg.sessions,
        run.display()
    );

    os::become_subreaper();
    let mut d = Driver {
        rng: Rng::derive(seed, 1),
        rec: DriverRecord {
            readonly_supported: os::read_only_mounts_work(&run),
            ..DriverRecord::default()
        },
        layout: layout.clone(),
        cfg: cfg.clone(),
        host: None,
        host_k: 0,
        writer: None,
        writer_k: 0,
        fsize_k: 0,
        oneshots: Vec::new(),
        offset_ms: 0,
        max_offset_ms: 0,
        verbose: args.verbose,
        ro_session: 1,
        shared_session: 0,
        clock: clock::OffsetClock::follow(&run),
        specials: 0,
        event_offsets: BTreeMap::new(),
        hangs: Vec::new(),
    };
    let result = d.soak(args);
    d.stop_everything();
    result?;
    let mut report = check::check(&layout, &cfg, &d.rec);
    report.seconds = args.seconds;
    for line in &report.details {
        eprintln!("soak: problem: {line}");
    }
    if report.ok() && !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&run);
    } else {
        eprintln!("soak: run folder kept: {}", run.display());
    }
    Ok(report)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl Driver {
    fn log(&self, what: &str) {
        proc::AppendLog::open(&self.layout.events.join("driver.log")).line(&[what]);
        if self.verbose {
            eprintln!("soak: {what}");
        }
    }

    fn soak(&mut self, args: &SoakArgs) -> Result<(), String> {
        self.start_host()?;
        self.start_writer()?;
        let total_ms = args.seconds.max(1) * 1000;
        let mut schedule = self.schedule(total_ms);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(total_ms) {
            self.housekeeping()?;
            let at = start.elapsed().as_millis() as u64;
            let due: Vec<(u64, Fault, u32)> = schedule
                .iter()
                .copied()
                .filter(|(t, _, _)| *t <= at)
                .collect();
            schedule.retain(|(t, _, _)| *t > at);
            for (_, fault, tries) in due {
                if !self.inject(fault)? && tries < 50 {
                    // Not applicable now (no container running, say): try again shortly.
                    schedule.push((at + 200, fault, tries + 1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.drain(args)
    }

    /// Every kind once at a random time, plus extra occurrences at each kind's rate.
    fn schedule(&mut self, total_ms: u64) -> Vec<(u64, Fault, u32)> {
        let mut out = Vec::new();
        for f in Fault::ALL {
            let (lo, hi) = match f {
                Fault::ReadOnly => (0.10, 0.30),
                Fault::Garbage => (0.35, 0.55),
                _ => (0.10, 0.70),
            };
            let t = (total_ms as f64 * (lo + (hi - lo) * self.rng.unit())) as u64;
            out.push((t, f, 0));
            let extra = f.per_minute() * total_ms as f64 / 60_000.0;
            let n = extra.floor() as u64 + u64::from(self.rng.chance(extra.fract()));
            for _ in 0..n {
                let t = self.rng.range(total_ms / 20, total_ms * 95 / 100);
                out.push((t, f, 0));
            }
        }
        out.sort();
        out
    }

    fn spawn(&self, args: &[String], log: &str) -> Result<Child, String> {
        let path = self.layout.logs.join(log);
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Command::new(self.layout.exe())
            .arg("soak-proc")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start soak-proc {args:?}: {e}"))
    }

    fn run_arg(&self) -> String {
        self.layout.run.to_string_lossy().into_owned()
    }

    fn start_host(&mut self) -> Result<(), String> {
        self.host_k += 1;
        let args = vec![
            "host".into(),
            "--run".into(),
            self.run_arg(),
            "--incarnation".into(),
            self.host_k.to_string(),
        ];
        self.host = Some(self.spawn(&args, "host.log")?);
        Ok(())
    }

    fn start_writer(&mut self) -> Result<(), String> {
        self.writer_k += 1;
        let args = vec![
            "writer".into(),
            "--run".into(),
            self.run_arg(),
            "--session".into(),
            self.shared_session.to_string(),
            "--incarnation".into(),
            self.writer_k.to_string(),
        ];
        self.writer = Some(self.spawn(&args, "writer.log")?);
        Ok(())
    }

    fn held_pids(&self) -> Vec<u32> {
        self.host
            .iter()
            .chain(self.writer.iter())
            .chain(self.oneshots.iter())
            .map(Child::id)
            .collect()
    }

    /// Reaps orphans, restarts a host or writer that exited by itself (a crash is recorded),
    /// and collects finished disk-full writers.
    fn housekeeping(&mut self) -> Result<(), String> {
        os::reap_orphans(&self.held_pids());
        self.follow_handler_hangs()?;
        if let Some(h) = self.host.as_mut() {
            if let Ok(Some(status)) = h.try_wait() {
                let msg = format!(
                    "host incarnation {} exited by itself: {status}",
                    self.host_k
                );
                self.log(&msg);
                self.rec.host_crashes.push(msg);
                self.start_host()?;
            }
        }
        if let Some(w) = self.writer.as_mut() {
            if let Ok(Some(status)) = w.try_wait() {
                self.log(&format!("writer exited by itself: {status}"));
                self.start_writer()?;
            }
        }
        let mut still = Vec::new();
        for mut c in std::mem::take(&mut self.oneshots) {
            match c.try_wait() {
                Ok(Some(status)) => self.disk_full_writer_done(status.code()),
                Ok(None) => still.push(c),
                Err(_) => {}
            }
        }
        self.oneshots = still;
        Ok(())
    }

    fn healthy(&self, i: usize) -> bool {
        self.rec.broken.as_ref().is_none_or(|(b, _, _)| *b != i)
    }

    fn running_containers(&self, only_healthy: bool) -> Vec<(usize, i32)> {
        (0..self.cfg.sessions)
            .filter(|i| !only_healthy || self.healthy(*i))
            .flat_map(|i| {
                os::find_role(&self.layout.run, "container", Some(&self.layout.session(i)))
                    .into_iter()
                    .filter(|p| p.state != 'T')
                    .map(move |p| (i, p.pid))
            })
            .filter(|(_, pid)| !self.handler_hung(*pid))
            .collect()
    }

    /// Whether `pid` is a container hung in its handler that the host has yet to kill (the
    /// other faults leave it to the host).
    fn handler_hung(&self, pid: i32) -> bool {
        self.hangs.iter().any(|h| h.pid == pid)
    }

    /// A handler hang younger than 15 s is waiting for the host's kill.
    fn handler_hang_outstanding(&self) -> bool {
        let now = now_ms();
        self.hangs.iter().any(|h| now - h.real_ms < 15_000)
    }

    /// New lines of the containers' event files (`events/c-*.log`) since the last call.
    fn new_container_events(&mut self) -> Vec<(i64, Vec<String>)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.layout.events) else {
            return out;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("c-") && n.ends_with(".log"))
            })
            .collect();
        files.sort();
        for path in files {
            let from = self.event_offsets.get(&path).copied().unwrap_or(0);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Some(tail) = usize::try_from(from).ok().and_then(|f| bytes.get(f..)) else {
                continue;
            };
            // Whole lines only: a line being appended right now is read next time.
            let Some(end) = tail.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            for line in String::from_utf8_lossy(&tail[..end]).lines() {
                let mut fields = line.split('\t');
                if let Some(ms) = fields.next().and_then(|m| m.parse().ok()) {
                    out.push((ms, fields.map(str::to_string).collect()));
                }
            }
            self.event_offsets.insert(path, from + end as u64 + 1);
        }
        out
    }

    /// Follows the containers' handler hangs: learns new ones from their events, forgets
    /// those whose container is gone, and once a hang's deadline has passed (real time: the
    /// container then set its heartbeat back to the claim) moves the clock past the claim
    /// tolerance, 60 s after the hung batch's claim by the run's clock. Without the step the
    /// host's claim rule would fire a minute later, after a short soak has ended.
    fn follow_handler_hangs(&mut self) -> Result<(), String> {
        for (ms, f) in self.new_container_events() {
            if f.first().map(String::as_str) != Some("handler_hang") {
                continue;
            }
            let (Some(pid), Some(clock_ms)) = (
                f.get(2).and_then(|p| p.parse::<i32>().ok()),
                f.get(4).and_then(|c| c.parse::<i64>().ok()),
            ) else {
                continue;
            };
            let sid = f.get(1).cloned().unwrap_or_default();
            self.rec.handler_hung.push((pid, ms));
            self.log(&format!(
                "the handler of {sid}'s container (pid {pid}) hangs on {}",
                f.get(3).map_or("?", |s| s)
            ));
            self.hangs.push(HandlerHang {
                pid,
                sid,
                real_ms: ms,
                clock_ms,
            });
        }
        self.hangs
            .retain(|h| os::proc_info(h.pid).is_some_and(|p| !p.is_zombie()));
        let deadline = i64::try_from(self.cfg.handler_timeout_ms).unwrap_or(i64::MAX);
        let now = now_ms();
        let due: Vec<HandlerHang> = self
            .hangs
            .iter()
            .filter(|h| now >= h.real_ms.saturating_add(deadline).saturating_add(300))
            .cloned()
            .collect();
        for h in due {
            let past = h.clock_ms + CLAIM_TOLERANCE_MS + 1000;
            let host_now = now_ms() + self.offset_ms;
            if host_now < past {
                let delta = past - host_now + self.rng.range_i64(0, 20_000);
                self.step_clock(
                    delta,
                    &format!(
                        "clock steps past the claim tolerance of the hung handler of {} (pid {})",
                        h.sid, h.pid
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Writes one special message (see [`proc::Special`]) into a session: a poison message
    /// into the poison session, the others into any healthy session but the last (the one the
    /// garbage fault breaks). The driver writes it next to the host (host-side writers
    /// serialise through SQLite's lock) and ledgers it as the other writers do. False when the
    /// write failed (tried again shortly).
    fn write_special(&mut self, kind: Special) -> Result<bool, String> {
        let i = match kind {
            Special::Poison => self.cfg.poison_session,
            _ => {
                let candidates: Vec<usize> = (0..self.cfg.sessions - 1)
                    .filter(|i| self.healthy(*i))
                    .collect();
                if candidates.is_empty() {
                    return Ok(false);
                }
                candidates[self.rng.below(candidates.len())]
            }
        };
        self.specials += 1;
        let sid = Layout::sid(i);
        let id = format!("d-{sid}-{}", self.specials);
        let host = HostSession::with_clock(self.layout.session(i), Arc::new(self.clock.clone()));
        let msg = NewMessage::chat(&id, &kind.text(&id)).to(proc::address(&sid));
        match host.inbound().write_message(&msg) {
            Ok(w) => {
                proc::AppendLog::open(&self.layout.ledger.join("written-driver.log")).line(&[
                    &sid,
                    &id,
                    kind.name(),
                    &w.seq.get().to_string(),
                ]);
                self.log(&format!("wrote {} into {sid}", kind.text(&id)));
                Ok(true)
            }
            Err(e) => {
                self.log(&format!(
                    "could not write {} into {sid}: {e}",
                    kind.text(&id)
                ));
                Ok(false)
            }
        }
    }

    fn journal_left(&self, i: usize, file: &str) -> bool {
        self.layout
            .session(i)
            .join(format!("{file}-journal"))
            .exists()
    }

    /// Injects one fault; false when it does not apply right now.
    fn inject(&mut self, fault: Fault) -> Result<bool, String> {
        match fault {
            Fault::HandlerPanic => return self.write_special(Special::PanicOnce),
            Fault::HandlerHang => return self.write_special(Special::HangOnce),
            Fault::Poison => return self.write_special(Special::Poison),
            Fault::KillContainer => {
                let running = self.running_containers(true);
                if running.is_empty() {
                    return Ok(false);
                }
                let (i, pid) = running[self.rng.below(running.len())];
                let outbound = SessionPaths::new(self.layout.session(i)).outbound;
                self.maybe_wait_for_write_lock(pid, &[outbound]);
                os::kill9(pid);
                let txn = self.journal_left(i, "outbound.db");
                self.rec.in_txn += u64::from(txn);
                self.rec.count("kill_container");
                self.log(&format!(
                    "kill -9 container of s{i} (pid {pid}){}",
                    if txn { ", inside a transaction" } else { "" }
                ));
            }
            Fault::KillHost => {
                // A new host would stop a hung handler's container as an orphan: let this
                // host's sweep kill it first (a later host kill is as good).
                if self.handler_hang_outstanding() {
                    return Ok(false);
                }
                let Some(mut h) = self.host.take() else {
                    return Ok(false);
                };
                let files: Vec<PathBuf> = (0..self.cfg.sessions)
                    .filter(|i| self.healthy(*i))
                    .flat_map(|i| {
                        let dir = self.layout.session(i);
                        [dir.join("inbound.db"), SessionPaths::new(&dir).outbound]
                    })
                    .collect();
                self.maybe_wait_for_write_lock(h.id() as i32, &files);
                let _ = h.kill();
                let _ = h.wait();
                let txn = (0..self.cfg.sessions).any(|i| self.journal_left(i, "inbound.db"));
                self.rec.in_txn += u64::from(txn);
                self.rec.count("kill_host");
                let pause = self.rng.range(0, 400);
                self.log(&format!(
                    "kill -9 host incarnation {}{}; restart in {pause} ms",
                    self.host_k,
                    if txn { ", inside a transaction" } else { "" }
                ));
                std::thread::sleep(Duration::from_millis(pause));
                self.start_host()?;
            }
            Fault::KillWriter => {
                let Some(mut w) = self.writer.take() else {
                    return Ok(false);
                };
                let inbound = self.layout.session(self.shared_session).join("inbound.db");
                self.maybe_wait_for_write_lock(w.id() as i32, &[inbound]);
                let _ = w.kill();
                let _ = w.wait();
                let txn = self.journal_left(self.shared_session, "inbound.db");
                self.rec.in_txn += u64::from(txn);
                self.rec.count("kill_writer");
                self.log(&format!(
                    "kill -9 CLI writer {}{}",
                    self.writer_k,
                    if txn { ", inside a transaction" } else { "" }
                ));
                std::thread::sleep(Duration::from_millis(self.rng.range(0, 200)));
                self.start_writer()?;
            }
            Fault::ClockJump => {
                let delta = match self.rng.below(4) {
                    0 => self.rng.range_i64(31 * 60_000, 33 * 60_000),
                    1 => self.rng.range_i64(65_000, 120_000),
                    _ => -self.rng.range_i64(5_000, 180_000),
                };
                self.jump(delta)?;
            }
            Fault::Hang => {
                let running: Vec<(usize, i32)> = self
                    .running_containers(true)
                    .into_iter()
                    .filter(|(i, _)| *i != self.ro_session)
                    .collect();
                if running.is_empty() {
                    return Ok(false);
                }
                let (i, pid) = running[self.rng.below(running.len())];
                // Half the time, freeze it while it commits, holding outbound.db's EXCLUSIVE
                // lock (a VM pause or a disk hanging in fsync): every reader of its file waits.
                let outbound = SessionPaths::new(self.layout.session(i)).outbound;
                let mut holding = false;
                if self.rng.chance(0.5) {
                    let end = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < end && !holding {
                        holding = os::holds_exclusive_lock(pid, &outbound);
                        if !holding {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                }
                os::signal(pid, libc::SIGSTOP);
                // It may have released the lock between the look and the stop.
                holding = holding && os::holds_exclusive_lock(pid, &outbound);
                self.rec.hung.push((pid, now_ms()));
                self.rec.count("hang");
                if holding {
                    self.rec.count("hang_holding_lock");
                }
                self.log(&format!(
                    "SIGSTOP container of s{i} (pid {pid}){}",
                    if holding {
                        " while it holds outbound.db's write lock"
                    } else {
                        ""
                    }
                ));
                // Past the heartbeat ceiling: the host's sweep must find it stuck.
                let delta = self.rng.range_i64(31 * 60_000, 32 * 60_000);
                self.jump(delta)?;
            }
            Fault::DiskFullWriter => {
                if !self.oneshots.is_empty() {
                    return Ok(false);
                }
                self.fsize_k += 1;
                // Just above the file: the next page the file needs is past the limit.
                let extra = self.rng.range(1, 4095);
                let args = vec![
                    "writer".into(),
                    "--run".into(),
                    self.run_arg(),
                    "--session".into(),
                    self.shared_session.to_string(),
                    "--incarnation".into(),
                    self.fsize_k.to_string(),
                    "--fsize-extra".into(),
                    extra.to_string(),
                ];
                let log = format!("writer-fsize-{}.log", self.fsize_k);
                self.oneshots.push(self.spawn(&args, &log)?);
                self.log(&format!(
                    "disk full: a CLI writer on s{} limited to inbound.db + {extra} bytes",
                    self.shared_session
                ));
            }
            Fault::DiskFullContainer => {
                let candidates: Vec<usize> = (0..self.cfg.sessions)
                    .filter(|i| self.healthy(*i) && *i != self.ro_session)
                    .collect();
                let i = candidates[self.rng.below(candidates.len())];
                let extra = self.rng.range(1, 4095);
                std::fs::write(
                    self.layout.control(&format!("s{i}.fsize")),
                    extra.to_string(),
                )
                .map_err(err)?;
                // The next container of that session gets the limit: stop the current one.
                for p in os::find_role(&self.layout.run, "container", Some(&self.layout.session(i)))
                {
                    if p.state != 'T' && !self.handler_hung(p.pid) {
                        os::kill9(p.pid);
                    }
                }
                self.log(&format!(
                    "disk full: the next container of s{i} is limited to outbound.db + {extra} bytes"
                ));
            }
            Fault::ReadOnly => {
                if !self.rec.readonly_supported {
                    self.log("read-only inbound.db: not supported here (needs mount namespaces)");
                    return Ok(true);
                }
                let i = self.ro_session;
                File::create(self.layout.control(&format!("s{i}.readonly"))).map_err(err)?;
                for p in os::find_role(&self.layout.run, "container", Some(&self.layout.session(i)))
                {
                    if !self.handler_hung(p.pid) {
                        os::kill9(p.pid);
                    }
                }
                self.log(&format!(
                    "read-only: s{i}'s containers now see inbound.db through a read-only mount"
                ));
            }
            Fault::Garbage => {
                if self.rec.broken.is_some() {
                    return Ok(true);
                }
                let i = self.cfg.sessions - 1;
                let paths = SessionPaths::new(self.layout.session(i));
                let (file, target) = if self.rng.chance(0.5) {
                    ("inbound.db", paths.inbound)
                } else {
                    ("outbound.db", paths.outbound)
                };
                let tmp = target.with_extension("db.swap");
                let how = if self.rng.chance(0.5) {
                    let mut junk = vec![0u8; 16 * 1024];
                    self.rng.fill(&mut junk);
                    std::fs::write(&tmp, &junk).map_err(err)?;
                    "garbage"
                } else {
                    let bytes = std::fs::read(&target).map_err(err)?;
                    let keep = (bytes.len() / 3).max(100).min(bytes.len());
                    std::fs::write(&tmp, &bytes[..keep]).map_err(err)?;
                    "truncated"
                };
                std::fs::rename(&tmp, &target).map_err(err)?;
                let what = format!("{how} {file}");
                self.rec.broken = Some((i, now_ms(), what.clone()));
                self.rec.count("garbage");
                self.log(&format!("swapped a {what} into s{i}"));
            }
        }
        Ok(true)
    }

    /// Half the time, waits (up to 2 s) until `pid` is inside a write transaction on one of
    /// `files`, so that the kill that follows leaves a hot journal behind.
    fn maybe_wait_for_write_lock(&mut self, pid: i32, files: &[PathBuf]) {
        if !self.rng.chance(0.5) {
            return;
        }
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if files.iter().any(|f| os::holds_write_lock(pid, f)) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The clock-jump fault.
    fn jump(&mut self, delta: i64) -> Result<(), String> {
        self.rec.count("clock_jump");
        self.step_clock(delta, "clock jumps")
    }

    /// Moves the run's clock by `delta` ms; the check excuses stuck kills in the seconds after
    /// any step (see [`check`]).
    fn step_clock(&mut self, delta: i64, what: &str) -> Result<(), String> {
        self.offset_ms += delta;
        self.max_offset_ms = self.max_offset_ms.max(self.offset_ms);
        clock::write_offset(&self.layout.run, self.offset_ms).map_err(err)?;
        self.rec.jumps.push(now_ms());
        self.log(&format!(
            "{what} {:+} s (offset now {:+} s)",
            delta / 1000,
            self.offset_ms / 1000
        ));
        Ok(())
    }

    fn disk_full_writer_done(&mut self, code: Option<i32>) {
        match code.map(|c| c as u8) {
            Some(proc::EXIT_DISK_FULL) | Some(proc::EXIT_IO) => {
                self.rec.count("disk_full_writer");
                self.log("disk full: the limited writer got a clear error");
            }
            Some(0) => self.log("disk full: the limited writer never hit its limit"),
            other => {
                let msg = format!(
                    "the file-size-limited writer {} ended with status {other:?} (see logs/writer-fsize-{}.log)",
                    self.fsize_k, self.fsize_k
                );
                self.log(&msg);
                self.rec.unclear.push(msg);
            }
        }
        // The file must be intact right after the failed writes.
        let inbound = self.layout.session(self.shared_session).join("inbound.db");
        if let Err(e) = check::integrity_now(&inbound) {
            self.rec.corrupt_during.push(format!(
                "{} after a disk-full writer: {e}",
                inbound.display()
            ));
        }
    }

    fn drain(&mut self, args: &SoakArgs) -> Result<(), String> {
        self.log("drain: no more faults or writes");
        File::create(self.layout.control("stop-writing")).map_err(err)?;
        if let Some(mut w) = self.writer.take() {
            os::signal(w.id() as i32, libc::SIGTERM);
            let _ = w.wait();
        }
        let finished: Vec<Child> = std::mem::take(&mut self.oneshots);
        for mut c in finished {
            let code = c.wait().ok().and_then(|s| s.code());
            self.disk_full_writer_done(code);
        }
        for i in 0..self.cfg.sessions {
            let _ = std::fs::remove_file(self.layout.control(&format!("s{i}.fsize")));
        }
        // Hung containers must be found stuck and killed by the host (the clock is past the
        // heartbeat ceiling): give it time, then wake whatever it missed.
        // So must containers hung in their handler (the driver steps the clock past the
        // claim tolerance once their deadline has passed, in `housekeeping`).
        let alive = |pid: &i32| os::proc_info(*pid).is_some_and(|p| !p.is_zombie());
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            self.housekeeping()?;
            let waiting = self.rec.hung.iter().any(|(pid, _)| alive(pid))
                || self.rec.handler_hung.iter().any(|(pid, _)| alive(pid));
            if !waiting || Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.rec.drain_start_ms = now_ms();
        for (pid, _) in &self.rec.hung {
            os::signal(*pid, libc::SIGCONT);
        }
        // Time moves on past every retry scheduled so far.
        let target = self.max_offset_ms + 10_000;
        if target != self.offset_ms {
            self.step_clock(
                target - self.offset_ms,
                "drain: the clock moves past every retry:",
            )?;
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(args.drain_secs);
        let mut settled_twice = 0;
        while Instant::now() < deadline {
            self.housekeeping()?;
            let healthy: Vec<usize> = (0..self.cfg.sessions)
                .filter(|i| self.healthy(*i))
                .collect();
            if check::settled(&self.layout, &healthy) {
                settled_twice += 1;
                if settled_twice >= 2 {
                    self.rec.settled = true;
                    break;
                }
            } else {
                settled_twice = 0;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.rec.drain = start.elapsed();
        for (pid, at) in self.rec.handler_hung.clone() {
            if alive(&pid) {
                let msg = format!(
                    "container {pid}, hung in its handler at {at} past its deadline, was never \
                     killed by the host"
                );
                self.log(&msg);
                self.rec.handler_hangs_missed.push(msg);
            }
        }
        self.log(&format!(
            "drain: {} after {:.1} s",
            if self.rec.settled {
                "settled"
            } else {
                "NOT settled"
            },
            self.rec.drain.as_secs_f64()
        ));
        // The readonly fault counts once a container confirmed its read-only view.
        let ro = std::fs::read_to_string(
            self.layout
                .events
                .join(format!("c-s{}.log", self.ro_session)),
        )
        .map(|t| t.lines().filter(|l| l.contains("container_ro")).count())
        .unwrap_or(0);
        if ro > 0 {
            self.rec.count("readonly");
        }
        Ok(())
    }

    /// Stops the host (SIGTERM: it stops its containers and runs a last sweep), then kills
    /// whatever of this run is still alive.
    fn stop_everything(&mut self) {
        let _ = File::create(self.layout.control("stop-writing"));
        if let Some(mut h) = self.host.take() {
            os::signal(h.id() as i32, libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                match h.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = h.kill();
                        let _ = h.wait();
                        break;
                    }
                }
            }
        }
        for mut c in self
            .writer
            .take()
            .into_iter()
            .chain(self.oneshots.drain(..))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for role in ["host", "writer", "container"] {
            for p in os::find_role(&self.layout.run, role, None) {
                os::signal(p.pid, libc::SIGCONT);
                os::kill9(p.pid);
            }
        }
        os::reap_orphans(&[]);
    }
}
