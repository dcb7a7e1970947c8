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

mod args;
mod chart;
mod extended;
mod fixture;
mod hostile;
mod latency;
mod latency_chart;
mod memory;
mod peer;
mod raw;
mod report;
mod scale;
mod workloads;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use workloads::{Handle, IdlePoll};

pub use args::{BenchArgs, Plan};
use report::{fmt_num, group_digits, targets};
pub use report::{render_table, Figure, Memory, Report, Scaling, Target, Workload};

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
