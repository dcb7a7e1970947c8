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
mod driver;
mod inject;
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

use driver::*;

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
