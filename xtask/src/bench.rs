//! `cargo xtask bench`: what the library costs against the raw-SQLite limit, and whether polls
//! stay flat as history grows.
//!
//! Every workload runs twice per run, through the library and through a raw baseline written
//! here directly on SQLite (module `raw`: rusqlite over the same bundled libsqlite3-sys) with the
//! same opens, pragmas, schema check, statements, transactions and durability. The two
//! variants alternate within each run, and each figure is the median over the runs with the
//! spread (min to max) beside it. The ratio is always library cost / raw cost, so 1.00 means
//! the abstraction is free and 1.15 means it costs 15 % more.
//!
//! Workloads:
//! 1. round trip: host write, container poll, processing ack, reply + completed ack in one
//!    transaction, host due-outbound read, delivery record, ack sync; one message at a time and
//!    in batches of ten; on the disk (real fsyncs) and, when there is one, on a tmpfs (no
//!    fsync cost, so the CPU cost of the abstraction shows);
//! 2. idle polls at several history sizes (finished messages already in the files);
//! 3. open cost per role and handle kind (open, pragmas, schema check, one query);
//! 4. a host sweep of many idle sessions (`for_each_session` + `sweep_session`), with their
//!    containers running, and with none running (wake on due messages);
//! 5. a container's resident memory over a long run (a child process: module `memory`);
//! 6. issue 14's workloads (module `extended`): end-to-end latency and throughput through a
//!    container process woken by change notification (`latency`), 10,000 idle sessions
//!    (`scale`), the hostile files (`hostile`) and, with `--peer`, the older implementation's
//!    poll statements in Node beside the idle polls (`peer`).
//!
//! Timings mean something only in an optimised build: run from a debug build (as the
//! `cargo xtask` alias does), `bench` re-runs itself through `cargo run --release`.

mod chart;
mod extended;
mod fixture;
mod hostile;
mod latency;
mod latency_chart;
mod memory;
mod peer;
mod raw;
mod scale;
mod workloads;

use clap::Args;
use serde::Serialize;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use workloads::{Handle, IdlePoll};

/// Errors inside the benchmark are reported as text.
pub type BenchResult<T> = Result<T, String>;

pub(crate) fn err<E: Display>(e: E) -> String {
    e.to_string()
}

/// Set in the environment of the release re-run, so that it never re-runs itself again.
const RELEASE_ENV: &str = "SESSIONBUS_BENCH_RELEASE";

/// Library / raw ratio allowed for every workload.
pub const TARGET_RATIO: f64 = 1.15;
/// Idle poll at the largest history / the same poll at the smallest, allowed.
pub const TARGET_GROWTH: f64 = 1.5;
/// Milliseconds allowed for a sweep of [`TARGET_SWEEP_SESSIONS`] idle sessions.
pub const TARGET_SWEEP_MS: f64 = 100.0;
/// Sessions in the sweep target.
pub const TARGET_SWEEP_SESSIONS: usize = 500;
/// Peak RSS at the last memory checkpoint / at the first, allowed ("flat").
pub const TARGET_MEMORY_GROWTH: f64 = 1.10;

/// Arguments of `cargo xtask bench`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Measure the library against a raw-SQLite baseline doing the same SQL work.\n\n\
Workloads: message round trips (one at a time and in batches of 10), idle polls at several \
history sizes, open cost per role and handle, a host sweep of many idle sessions, and a \
container's peak memory over a long run. Prints one table (or --json) with, per workload, the \
library's median, the raw baseline's median, their spread over the runs, and the ratio \
library/raw; then the targets, met or missed.\n\n\
From a debug build it re-runs itself with `cargo run --release` (debug timings mean nothing)."
)]
pub struct BenchArgs {
    /// Smoke run: fewer runs, histories 100/1,000/10,000, 100 sessions, 10,000 messages of
    /// memory run
    #[arg(long)]
    pub quick: bool,

    /// Print the report as JSON on stdout (progress still goes to stderr)
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON report into FILE (whatever is printed)
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,

    /// Also draw idle-poll cost against history size, library and baseline, into FILE (SVG)
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Folder for the session folders (a real disk: round trips pay real fsyncs) [default:
    /// the system temp dir]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Folder on a tmpfs for the fsync-free round trips and the memory run, or `none`
    /// [default: /dev/shm when it is a tmpfs]
    #[arg(long, value_name = "DIR")]
    pub mem_dir: Option<PathBuf>,

    /// Runs per workload (medians and spread are over these)
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,

    /// Messages per round-trip run, one at a time (batched runs use three times as many)
    #[arg(long, value_name = "N")]
    pub messages: Option<usize>,

    /// Operations per run of the idle-poll and open-cost workloads
    #[arg(long, value_name = "N")]
    pub ops: Option<usize>,

    /// History sizes (finished messages) of the idle polls, comma-separated
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub history: Vec<u64>,

    /// Idle sessions in the sweep
    #[arg(long, value_name = "N")]
    pub sessions: Option<usize>,

    /// Memory-run checkpoints in messages, comma-separated; the run goes to the largest
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub memory: Vec<u64>,

    /// Run only these workload groups, comma-separated: round_trip, idle_poll, open, sweep,
    /// memory, latency, throughput, scale, hostile [default: all]
    #[arg(long, value_name = "GROUP,...", value_delimiter = ',', value_parser = ["round_trip", "idle_poll", "open", "sweep", "memory", "latency", "throughput", "scale", "hostile"])]
    pub only: Vec<String>,

    /// Also run the older implementation's poll statements (Node, better-sqlite3, from
    /// xtask/bench-peer) on the idle-poll files, side by side; reported unavailable, never
    /// failing, when Node or better-sqlite3 is missing
    #[arg(long)]
    pub peer: bool,

    /// Idle sessions in the scale workload [default: 10,000; --quick 1,000]
    #[arg(long, value_name = "N")]
    pub scale: Option<usize>,

    /// Session counts of the end-to-end latency runs, comma-separated [default: 1,10,100;
    /// --quick 1,10,50]; the largest is also the many-session throughput run's
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    pub e2e_sessions: Vec<usize>,

    /// Waves (one message per session each) of every end-to-end latency run
    #[arg(long, value_name = "N")]
    pub waves: Option<usize>,

    /// Claims planted by the hostile workload (its extra tables are a fiftieth of this)
    /// [default: 1,000,000; --quick 100,000]
    #[arg(long, value_name = "N")]
    pub hostile_size: Option<u64>,

    /// Draw end-to-end latency against session count into FILE (SVG) [default with --svg:
    /// beside it, named STEM-latency.svg]
    #[arg(long, value_name = "FILE")]
    pub latency_svg: Option<PathBuf>,

    /// Internal: one hostile pass over session folder DIR in a fresh process
    #[arg(long, value_name = "DIR", hide = true)]
    pub hostile_child: Option<PathBuf>,

    /// Internal: follow the session folders listed in FILE and print the RSS growth
    #[arg(long, value_name = "FILE", hide = true)]
    pub scale_memory_child: Option<PathBuf>,

    /// Internal: run as the container process of the end-to-end workloads, one container
    /// per session folder (repeatable)
    #[arg(long, value_name = "DIR", hide = true)]
    pub e2e_child: Vec<PathBuf>,

    /// Measure in this process even when it is a debug build (for tests: numbers meaningless)
    #[arg(long)]
    pub no_release: bool,

    /// Internal: run as the container process of the memory workload in session folder DIR
    #[arg(long, value_name = "DIR", hide = true)]
    pub memory_child: Option<PathBuf>,
}

impl BenchArgs {
    /// The arguments again, as a command line (for the release re-run).
    fn to_cli(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        let mut flag = |on: bool, name: &str| {
            if on {
                v.push(name.into());
            }
        };
        flag(self.quick, "--quick");
        flag(self.json, "--json");
        flag(self.no_release, "--no-release");
        flag(self.peer, "--peer");
        let mut opt = |name: &str, value: Option<std::ffi::OsString>| {
            if let Some(x) = value {
                v.push(name.into());
                v.push(x);
            }
        };
        let list = |l: &[u64]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
                    .into()
            })
        };
        opt("--svg", self.svg.as_ref().map(|p| absolute(p).into()));
        opt(
            "--json-out",
            self.json_out.as_ref().map(|p| absolute(p).into()),
        );
        opt("--dir", self.dir.as_ref().map(|p| absolute(p).into()));
        opt(
            "--mem-dir",
            self.mem_dir.as_ref().map(|p| absolute(p).into()),
        );
        opt("--runs", self.runs.map(|n| n.to_string().into()));
        opt("--messages", self.messages.map(|n| n.to_string().into()));
        opt("--ops", self.ops.map(|n| n.to_string().into()));
        opt("--history", list(&self.history));
        opt("--sessions", self.sessions.map(|n| n.to_string().into()));
        opt("--memory", list(&self.memory));
        opt("--scale", self.scale.map(|n| n.to_string().into()));
        opt(
            "--e2e-sessions",
            (!self.e2e_sessions.is_empty()).then(|| {
                self.e2e_sessions
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
                    .into()
            }),
        );
        opt("--waves", self.waves.map(|n| n.to_string().into()));
        opt(
            "--hostile-size",
            self.hostile_size.map(|n| n.to_string().into()),
        );
        opt(
            "--latency-svg",
            self.latency_svg.as_ref().map(|p| absolute(p).into()),
        );
        opt(
            "--only",
            (!self.only.is_empty()).then(|| self.only.join(",").into()),
        );
        v
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Sizes of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Runs per workload.
    pub runs: usize,
    /// Messages per round-trip run, one at a time, on disk.
    pub rt_single: usize,
    /// Messages per round-trip run, batches of ten, on disk.
    pub rt_batch: usize,
    /// Messages per round-trip run, one at a time, on tmpfs.
    pub rt_mem_single: usize,
    /// Messages per round-trip run, batches of ten, on tmpfs.
    pub rt_mem_batch: usize,
    /// Polls or opens per run.
    pub ops: usize,
    /// History sizes of the idle polls.
    pub histories: Vec<u64>,
    /// Sessions in the sweep.
    pub sessions: usize,
    /// History of each swept session.
    pub sweep_history: u64,
    /// Sweeps per run.
    pub sweeps: usize,
    /// Memory checkpoints.
    pub memory: Vec<u64>,
    /// Workload groups to run (all when empty).
    pub only: Vec<String>,
}

impl Plan {
    fn from_args(a: &BenchArgs) -> Plan {
        let mut p = if a.quick {
            Plan {
                runs: 3,
                rt_single: 10,
                rt_batch: 30,
                rt_mem_single: 60,
                rt_mem_batch: 150,
                ops: 60,
                histories: vec![100, 1_000, 10_000],
                sessions: 100,
                sweep_history: 20,
                sweeps: 1,
                memory: vec![1_000, 10_000],
                only: Vec::new(),
            }
        } else {
            Plan {
                runs: 7,
                rt_single: 30,
                rt_batch: 100,
                rt_mem_single: 300,
                rt_mem_batch: 1_000,
                ops: 300,
                histories: vec![100, 10_000, 100_000],
                sessions: TARGET_SWEEP_SESSIONS,
                sweep_history: 100,
                sweeps: 2,
                memory: vec![1_000, 10_000, 100_000],
                only: Vec::new(),
            }
        };
        p.only = a.only.clone();
        if let Some(r) = a.runs {
            p.runs = r.max(1);
        }
        if let Some(m) = a.messages {
            let m = m.max(1);
            p.rt_single = m;
            p.rt_batch = (m * 3).div_ceil(10) * 10;
            p.rt_mem_single = m;
            p.rt_mem_batch = p.rt_batch;
        }
        if let Some(o) = a.ops {
            p.ops = o.max(1);
        }
        if !a.history.is_empty() {
            p.histories = a.history.clone();
            p.histories.sort_unstable();
            p.histories.dedup();
        }
        if let Some(s) = a.sessions {
            p.sessions = s.max(1);
        }
        if !a.memory.is_empty() {
            p.memory = a.memory.clone();
            p.memory.sort_unstable();
            p.memory.dedup();
        }
        p
    }

    /// Whether workload group `group` runs.
    fn runs_group(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

/// A figure over the runs: median and spread.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Median over the runs.
    pub median: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
    /// (max - min) / median, in percent.
    pub spread_pct: f64,
    /// Every run, in order.
    pub runs: Vec<f64>,
}

impl Figure {
    fn of(runs: Vec<f64>) -> Figure {
        let mut s = runs.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        let (min, max) = (
            s.first().copied().unwrap_or(f64::NAN),
            s.last().copied().unwrap_or(f64::NAN),
        );
        Figure {
            median,
            min,
            max,
            spread_pct: (max - min) / median * 100.0,
            runs,
        }
    }
}

/// One workload's result.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Stable id (`round_trip.single.disk`, `idle.pending_poll.h100000`, ...).
    pub id: String,
    /// `round_trip`, `idle_poll`, `open`, `sweep`.
    pub group: String,
    /// What it is.
    pub label: String,
    /// Unit of the figures: `us/msg`, `us/poll`, `us/open`, `ms/sweep`.
    pub unit: String,
    /// Through the library.
    pub library: Figure,
    /// The raw baseline.
    pub raw: Figure,
    /// Library median / raw median (cost ratio: above 1 the library is slower).
    pub ratio: f64,
    /// For round trips: messages per second from the medians (library, raw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgs_per_sec: Option<(f64, f64)>,
    /// History size, for idle polls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<u64>,
    /// The file system the session files were on: `disk` or `tmpfs` (round trips with id
    /// suffix `.tmpfs` ran in `--mem-dir`, whatever it is).
    pub storage: String,
}

/// Growth of one idle poll from the smallest to the largest history.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    /// Which poll.
    pub poll: String,
    /// What it is.
    pub label: String,
    /// History sizes measured, smallest first.
    pub histories: Vec<u64>,
    /// Library medians per history, us/poll.
    pub library_us: Vec<f64>,
    /// Raw medians per history, us/poll.
    pub raw_us: Vec<f64>,
    /// Library at the largest history / at the smallest.
    pub library_growth: f64,
    /// Raw at the largest history / at the smallest.
    pub raw_growth: f64,
}

/// The memory run.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// `disk` or `tmpfs`.
    pub storage: String,
    /// Memory at each checkpoint.
    pub points: Vec<memory::MemoryPoint>,
    /// Peak RSS at the last checkpoint / at the first.
    pub peak_growth: f64,
}

/// A target of the issue, met or missed.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The limit.
    pub limit: String,
    /// What was measured.
    pub achieved: String,
    /// Met.
    pub met: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version of this JSON.
    pub format: u32,
    /// `--quick`.
    pub quick: bool,
    /// Measured in an optimised build.
    pub release: bool,
    /// SQLite linked in.
    pub sqlite_version: String,
    /// CPUs available.
    pub cpus: usize,
    /// Session folders (disk).
    pub dir: PathBuf,
    /// tmpfs folder, when used.
    pub mem_dir: Option<PathBuf>,
    /// Sizes.
    pub plan: Plan,
    /// Every workload.
    pub workloads: Vec<Workload>,
    /// Idle-poll growth with history.
    pub scaling: Vec<Scaling>,
    /// The memory run.
    pub memory: Option<Memory>,
    /// Issue 14's workloads: latency, throughput, scale, hostile files, the older
    /// implementation side by side.
    pub extended: extended::Extended,
    /// The targets.
    pub targets: Vec<Target>,
}

/// Entry point of `cargo xtask bench`.
pub fn main(args: &BenchArgs) -> ExitCode {
    if let Some(dir) = &args.memory_child {
        return memory::child_main(dir);
    }
    if !args.e2e_child.is_empty() {
        return latency::child_main(&args.e2e_child);
    }
    if let Some(dir) = &args.hostile_child {
        return hostile::child_main(dir);
    }
    if let Some(list) = &args.scale_memory_child {
        return scale::memory_child(list);
    }
    if cfg!(debug_assertions) && !args.no_release && std::env::var_os(RELEASE_ENV).is_none() {
        return rerun_release(args);
    }
    match run(args) {
        Ok(report) => {
            let json = match serde_json::to_string_pretty(&report) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("bench: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(path) = &args.json_out {
                if let Err(e) = std::fs::write(path, format!("{json}\n")) {
                    eprintln!("bench: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if args.json {
                println!("{json}");
            } else {
                print!("{}", render_table(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e}");
            ExitCode::from(2)
        }
    }
}

fn rerun_release(args: &BenchArgs) -> ExitCode {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    eprintln!("bench: debug build; re-running with `cargo run --release -p xtask` (timings need an optimised build)");
    let status = Command::new(cargo)
        .args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .args(["--package", "xtask", "--", "bench"])
        .args(args.to_cli())
        .env(RELEASE_ENV, "1")
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(2)).unwrap_or(2)),
        Err(e) => {
            eprintln!("bench: cannot run cargo: {e}");
            ExitCode::from(2)
        }
    }
}

fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// Whether `path` is on a tmpfs.
fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` is a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    rc == 0 && magic == TMPFS_MAGIC
}

fn storage_name(path: &Path) -> &'static str {
    if is_tmpfs(path) {
        "tmpfs"
    } else {
        "disk"
    }
}

/// Runs `lib` and `raw` `runs` times each, alternating which goes first, after one untimed
/// warm-up of each.
fn pair(
    runs: usize,
    mut lib: impl FnMut() -> BenchResult<f64>,
    mut raw: impl FnMut() -> BenchResult<f64>,
) -> BenchResult<(Figure, Figure)> {
    lib()?;
    raw()?;
    let (mut l, mut r) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs {
        if i % 2 == 0 {
            l.push(lib()?);
            r.push(raw()?);
        } else {
            r.push(raw()?);
            l.push(lib()?);
        }
    }
    Ok((Figure::of(l), Figure::of(r)))
}

#[allow(clippy::too_many_arguments)]
fn workload(
    id: String,
    group: &str,
    label: String,
    unit: &str,
    (library, raw): (Figure, Figure),
    history: Option<u64>,
    storage: &str,
) -> Workload {
    let ratio = library.median / raw.median;
    let msgs_per_sec = (unit == "us/msg").then(|| (1e6 / library.median, 1e6 / raw.median));
    Workload {
        id,
        group: group.into(),
        label,
        unit: unit.into(),
        library,
        raw,
        ratio,
        msgs_per_sec,
        history,
        storage: storage.into(),
    }
}

/// Runs every workload and returns the report.
pub fn run(args: &BenchArgs) -> BenchResult<Report> {
    let plan = Plan::from_args(args);
    let disk_parent = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&disk_parent).map_err(err)?;
    let disk = tempfile::Builder::new()
        .prefix("sessionbus-bench-")
        .tempdir_in(&disk_parent)
        .map_err(err)?;
    let mem_parent: Option<PathBuf> = match &args.mem_dir {
        Some(d) if d.as_os_str() == "none" => None,
        Some(d) => Some(d.clone()),
        None => Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir() && is_tmpfs(p)),
    };
    let mem = match &mem_parent {
        Some(p) => {
            std::fs::create_dir_all(p).map_err(err)?;
            Some(
                tempfile::Builder::new()
                    .prefix("sessionbus-bench-")
                    .tempdir_in(p)
                    .map_err(err)?,
            )
        }
        None => None,
    };
    let disk_sessions = fixture::Sessions::new(disk.path())?;
    let mem_sessions = match &mem {
        Some(m) => Some(fixture::Sessions::new(m.path())?),
        None => None,
    };
    let disk_kind = storage_name(disk.path());
    let mut workloads = Vec::new();

    // 1. Round trips.
    // (sessions, id suffix, file system, messages one at a time, messages batched)
    let mut rt_sets: Vec<(&fixture::Sessions, &str, &str, usize, usize)> = vec![(
        &disk_sessions,
        "disk",
        disk_kind,
        plan.rt_single,
        plan.rt_batch,
    )];
    if let (Some(ms), Some(m)) = (&mem_sessions, &mem) {
        rt_sets.push((
            ms,
            "tmpfs",
            storage_name(m.path()),
            plan.rt_mem_single,
            plan.rt_mem_batch,
        ));
    }
    if !plan.runs_group("round_trip") {
        rt_sets.clear();
    }
    for (sessions, role, kind, single, batched) in rt_sets {
        for (batch, total) in [(1usize, single), (10usize, batched)] {
            let total = total.max(batch);
            let what = if batch == 1 {
                "1 message at a time".to_string()
            } else {
                format!("batches of {batch}")
            };
            progress(&format!(
                "round trip, {what}, {kind}: {total} messages x {} runs",
                plan.runs
            ));
            let figs = pair(
                plan.runs,
                || workloads::round_trip_library(sessions, total, batch),
                || workloads::round_trip_raw(sessions, total, batch),
            )?;
            workloads.push(workload(
                format!(
                    "round_trip.{}.{role}",
                    if batch == 1 { "single" } else { "batch10" }
                ),
                "round_trip",
                format!("round trip, {what} ({kind})"),
                "us/msg",
                figs,
                None,
                kind,
            ));
        }
    }

    // 2. Idle polls at each history size.
    let mut scaling: Vec<Scaling> = IdlePoll::ALL
        .iter()
        .map(|p| Scaling {
            poll: p.id().into(),
            label: p.label().into(),
            histories: plan.histories.clone(),
            library_us: Vec::new(),
            raw_us: Vec::new(),
            library_growth: f64::NAN,
            raw_growth: f64::NAN,
        })
        .collect();
    let mut small_history: Option<sessionbus_store::SessionPaths> = None;
    let mut history_paths: Vec<(u64, sessionbus_store::SessionPaths)> = Vec::new();
    let histories = if plan.runs_group("idle_poll") {
        plan.histories.clone()
    } else {
        Vec::new()
    };
    if histories.is_empty() {
        scaling.clear();
    }
    for &h in &histories {
        progress(&format!("idle polls at a history of {h}: building it"));
        let paths = disk_sessions.fresh(&format!("history-{h}"))?;
        fixture::add_history(&paths, h)?;
        for (i, poll) in IdlePoll::ALL.iter().enumerate() {
            let figs = pair(
                plan.runs,
                || workloads::idle_library(&paths, *poll, plan.ops),
                || workloads::idle_raw(&paths, *poll, plan.ops),
            )?;
            scaling[i].library_us.push(figs.0.median);
            scaling[i].raw_us.push(figs.1.median);
            workloads.push(workload(
                format!("idle.{}.h{h}", poll.id()),
                "idle_poll",
                format!("idle {}, history {}", poll.label(), group_digits(h)),
                "us/poll",
                figs,
                Some(h),
                disk_kind,
            ));
        }
        history_paths.push((h, paths.clone()));
        if small_history.is_none() {
            small_history = Some(paths);
        }
    }
    for s in &mut scaling {
        if let (Some(first), Some(last)) = (s.library_us.first(), s.library_us.last()) {
            s.library_growth = last / first;
        }
        if let (Some(first), Some(last)) = (s.raw_us.first(), s.raw_us.last()) {
            s.raw_growth = last / first;
        }
    }

    // 3. Open cost.
    let open_paths = match &small_history {
        Some(p) => p.clone(),
        None => disk_sessions.fresh("open")?,
    };
    let handles: &[Handle] = if plan.runs_group("open") {
        &Handle::ALL
    } else {
        &[]
    };
    for &handle in handles {
        progress(&format!("open cost: {}", handle.label()));
        let figs = pair(
            plan.runs,
            || workloads::open_library(&open_paths, handle, plan.ops),
            || workloads::open_raw(&open_paths, handle, plan.ops),
        )?;
        workloads.push(workload(
            format!("open.{}", handle.id()),
            "open",
            format!("open: {}", handle.label()),
            "us/open",
            figs,
            None,
            disk_kind,
        ));
    }

    // 4. Sweep.
    let sweep_modes: &[bool] = if plan.runs_group("sweep") {
        &[true, false]
    } else {
        &[]
    };
    if !sweep_modes.is_empty() {
        progress(&format!(
            "sweep: preparing {} idle sessions (history {} each)",
            plan.sessions, plan.sweep_history
        ));
        let sweep_template = disk_sessions.fresh("sweep-template")?;
        fixture::add_history(&sweep_template, plan.sweep_history)?;
        let swept = workloads::sweep_sessions(&disk_sessions, &sweep_template, plan.sessions)?;
        for &running in sweep_modes {
            let what = if running {
                "containers running"
            } else {
                "no container running, wake on due"
            };
            progress(&format!("sweep of {} sessions, {what}", plan.sessions));
            let (l, r) = pair(
                plan.runs,
                || workloads::sweep_library(&swept, running, plan.sweeps),
                || workloads::sweep_raw(&swept, running, plan.sweeps),
            )?;
            let to_ms = |f: Figure| Figure::of(f.runs.iter().map(|us| us / 1000.0).collect());
            workloads.push(workload(
                format!(
                    "sweep.{}.s{}",
                    if running { "running" } else { "stopped" },
                    plan.sessions
                ),
                "sweep",
                format!("sweep of {} idle sessions, {what}", plan.sessions),
                "ms/sweep",
                (to_ms(l), to_ms(r)),
                None,
                disk_kind,
            ));
        }
    }

    // 4b. Steady state: a long-lived host's repeated sweeps (the Sweeper skips quiet sessions).
    if plan.runs_group("sweep") {
        progress(&format!(
            "sweep of {} sessions, steady state (Sweeper)",
            plan.sessions
        ));
        let template = disk_sessions.fresh("sweeper-template")?;
        fixture::add_history(&template, plan.sweep_history)?;
        let swept = workloads::sweep_sessions(&disk_sessions, &template, plan.sessions)?;
        let (l, r) = pair(
            plan.runs,
            || workloads::sweeper_library(&swept, plan.sweeps),
            || workloads::sweeper_raw(&swept, plan.sweeps),
        )?;
        let to_ms = |f: Figure| Figure::of(f.runs.iter().map(|us| us / 1000.0).collect());
        workloads.push(workload(
            format!("sweep.steady.s{}", plan.sessions),
            "sweep",
            format!(
                "sweep of {} idle sessions, steady state (Sweeper, containers running)",
                plan.sessions
            ),
            "ms/sweep",
            (to_ms(l), to_ms(r)),
            None,
            disk_kind,
        ));
    }

    // 5. Memory.
    let memory = if plan.memory.is_empty() || !plan.runs_group("memory") {
        None
    } else {
        let (sessions, kind) = match (&mem_sessions, &mem) {
            (Some(ms), Some(m)) => (ms, storage_name(m.path())),
            _ => (&disk_sessions, disk_kind),
        };
        progress(&format!(
            "memory: a container process over {} messages ({kind})",
            plan.memory.last().copied().unwrap_or(0)
        ));
        let points = memory::measure(sessions, &plan.memory)?;
        let growth = match (points.first(), points.last()) {
            (Some(a), Some(b)) => b.peak_rss_kib as f64 / a.peak_rss_kib as f64,
            _ => f64::NAN,
        };
        Some(Memory {
            storage: kind.into(),
            points,
            peak_growth: growth,
        })
    };

    // 6. Issue 14's workloads.
    let ext = extended::run(
        &plan,
        extended::ExtPlan::new(args),
        args.peer,
        (&disk_sessions, disk_kind),
        match (&mem_sessions, &mem) {
            (Some(ms), Some(m)) => Some((ms, storage_name(m.path()))),
            _ => None,
        },
        &history_paths,
    )?;

    let mut report = Report {
        format: 2,
        quick: args.quick,
        release: !cfg!(debug_assertions),
        sqlite_version: sessionbus_schema::conn::sqlite_version(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir: disk.path().to_path_buf(),
        mem_dir: mem.as_ref().map(|m| m.path().to_path_buf()),
        plan,
        workloads,
        scaling,
        memory,
        extended: ext,
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    report.targets.extend(extended::targets(&report));
    if let Some(svg) = args.svg.as_ref().filter(|_| !report.scaling.is_empty()) {
        chart::draw(svg, &report.scaling)?;
        progress(&format!("chart written to {}", svg.display()));
    }
    let latency_svg = args
        .latency_svg
        .clone()
        .or_else(|| args.svg.as_deref().map(latency_chart::beside));
    if let Some(svg) = latency_svg.filter(|_| !report.extended.latency.is_empty()) {
        latency_chart::draw(&svg, &report.extended.latency)?;
        progress(&format!("latency chart written to {}", svg.display()));
    }
    Ok(report)
}

fn targets(r: &Report) -> Vec<Target> {
    let mut t = Vec::new();
    for w in &r.workloads {
        t.push(Target {
            name: format!("ratio: {}", w.label),
            limit: format!("<= {TARGET_RATIO:.2}"),
            achieved: format!("{:.2}", w.ratio),
            met: w.ratio <= TARGET_RATIO,
        });
    }
    for s in &r.scaling {
        let (Some(a), Some(b)) = (s.histories.first(), s.histories.last()) else {
            continue;
        };
        t.push(Target {
            name: format!(
                "idle {} at history {} vs {} (library)",
                s.label,
                group_digits(*b),
                group_digits(*a)
            ),
            limit: format!("<= {TARGET_GROWTH:.2}x"),
            achieved: format!("{:.2}x (raw {:.2}x)", s.library_growth, s.raw_growth),
            met: s.library_growth <= TARGET_GROWTH,
        });
    }
    for w in r.workloads.iter().filter(|w| w.group == "sweep") {
        let scaled = w.library.median * TARGET_SWEEP_SESSIONS as f64 / r.plan.sessions as f64;
        let note = if r.plan.sessions == TARGET_SWEEP_SESSIONS {
            String::new()
        } else {
            format!(" (scaled from {} sessions)", r.plan.sessions)
        };
        t.push(Target {
            name: format!(
                "{} sessions swept: {}",
                TARGET_SWEEP_SESSIONS,
                w.label.split(", ").nth(1).unwrap_or(&w.label)
            ),
            limit: format!("< {TARGET_SWEEP_MS:.0} ms"),
            achieved: format!("{scaled:.1} ms{note}"),
            met: scaled < TARGET_SWEEP_MS,
        });
    }
    if let Some(m) = &r.memory {
        if let (Some(a), Some(b)) = (m.points.first(), m.points.last()) {
            t.push(Target {
                name: format!(
                    "container peak RSS, {} vs {} messages",
                    group_digits(b.messages),
                    group_digits(a.messages)
                ),
                limit: format!("<= {TARGET_MEMORY_GROWTH:.2}x (flat)"),
                achieved: format!(
                    "{:.2}x ({} -> {} KiB)",
                    m.peak_growth, a.peak_rss_kib, b.peak_rss_kib
                ),
                met: m.peak_growth <= TARGET_MEMORY_GROWTH,
            });
        }
    }
    t
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 100.0 {
        format!("{x:.1}")
    } else if x >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn fmt_figure(f: &Figure, unit: &str) -> String {
    if unit == "us/msg" {
        // Messages per second: the range is the inverse of the cost range.
        format!(
            "{} msg/s [{}-{}]",
            fmt_num(1e6 / f.median),
            fmt_num(1e6 / f.max),
            fmt_num(1e6 / f.min)
        )
    } else {
        format!(
            "{} {} [{}-{}]",
            fmt_num(f.median),
            unit.split('/').next().unwrap_or(unit),
            fmt_num(f.min),
            fmt_num(f.max)
        )
    }
}

/// The report as the text table `cargo xtask bench` prints.
pub fn render_table(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "sessionbus bench{}: {} build, SQLite {}, {} CPUs, {} runs per workload",
        if r.quick { " --quick" } else { "" },
        if r.release {
            "release"
        } else {
            "DEBUG (numbers meaningless)"
        },
        r.sqlite_version,
        r.cpus,
        r.plan.runs
    );
    let _ = writeln!(
        s,
        "medians with [min-max] over the runs; ratio = library cost / raw cost; session folders on {} ({}){}",
        storage_name(&r.dir),
        r.dir.display(),
        match &r.mem_dir {
            Some(m) => format!(", fsync-free runs on tmpfs ({})", m.display()),
            None => String::new(),
        }
    );
    let rows: Vec<[String; 4]> = r
        .workloads
        .iter()
        .map(|w| {
            [
                w.label.clone(),
                fmt_figure(&w.library, &w.unit),
                fmt_figure(&w.raw, &w.unit),
                format!(
                    "{:.2}{}",
                    w.ratio,
                    if w.ratio > TARGET_RATIO { " !" } else { "" }
                ),
            ]
        })
        .collect();
    let head = ["workload", "library", "raw baseline", "ratio"];
    let mut width = head.map(str::len);
    for row in &rows {
        for (i, c) in row.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        )
    };
    s.push('\n');
    s.push_str(&line(head));
    s.push_str(&format!(
        "{}\n",
        "-".repeat(width.iter().sum::<usize>() + 6)
    ));
    let mut last_group = "";
    for (w, row) in r.workloads.iter().zip(&rows) {
        if !last_group.is_empty() && last_group != w.group {
            s.push('\n');
        }
        last_group = &w.group;
        s.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    if !r.scaling.is_empty() {
        let _ = writeln!(
            s,
            "\nidle poll growth with history (us/poll, library | raw):"
        );
        for sc in &r.scaling {
            let cells: Vec<String> = sc
                .histories
                .iter()
                .zip(sc.library_us.iter().zip(&sc.raw_us))
                .map(|(h, (l, rw))| {
                    format!("{}: {} | {}", group_digits(*h), fmt_num(*l), fmt_num(*rw))
                })
                .collect();
            let _ = writeln!(
                s,
                "  {:<24} {}  -> growth {:.2}x | {:.2}x",
                sc.label,
                cells.join("   "),
                sc.library_growth,
                sc.raw_growth
            );
        }
    }
    if let Some(m) = &r.memory {
        let _ = writeln!(s, "\ncontainer process memory ({}):", m.storage);
        for p in &m.points {
            let _ = writeln!(
                s,
                "  after {:>9} messages: RSS {:>7} KiB, peak RSS {:>7} KiB",
                group_digits(p.messages),
                p.rss_kib,
                p.peak_rss_kib
            );
        }
    }
    extended::render(r, &mut s);
    let met = r.targets.iter().filter(|t| t.met).count();
    let _ = writeln!(s, "\ntargets: {met} of {} met", r.targets.len());
    for t in &r.targets {
        let _ = writeln!(
            s,
            "  [{}] {}: {} (limit {})",
            if t.met { " ok " } else { "MISS" },
            t.name,
            t.achieved,
            t.limit
        );
    }
    s
}
