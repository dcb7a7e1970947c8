//! `cargo xtask mountcheck`: the host and a real container across a real mount.
//!
//! For each cache mode (`auto_cache`, `direct_io`, `kernel_cache`; see
//! [`sessionbus_testkit::mount::CacheMode`]) it provisions a fresh session folder, mounts it
//! with bindfs in that mode, and runs the `echo_container` example with its workspace on the
//! mount, while this process plays the host on the folder itself: it writes chat messages at
//! random intervals, and delivers the replies by reading outbound.db as the container wrote it
//! through the mount. Then it counts, per mode: messages sent, answered exactly once, lost,
//! duplicated, torn (a reply whose text is not `echo: <text>` of its message, or an
//! outbound.db failing `PRAGMA integrity_check`), and the time from the host's commit to the
//! container's claim (p50, p99, max; the container logs each claim with `--log-claims`).
//!
//! `auto_cache` and `direct_io` revalidate what they cache: every message must be answered
//! exactly once. `kernel_cache` never does: the container sees nothing new, and must say so
//! (the runtime's frozen-view diagnosis, from the host's generation stamp) instead of polling
//! a frozen view; that diagnosis is the expected outcome there.
//!
//! It needs `/dev/fuse`, `bindfs` and `fusermount`; without them it fails, saying which is
//! missing. Mounts are removed when done, also after a failure, and mounts a previous,
//! interrupted run left behind are removed first.

use clap::Args;
use diesel::sql_types::{Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl};
use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{prepare_group, DEFAULT_SYSTEM_MOUNTS};
use sessionbus_runtime::host::{deliver_session, Deliverer};
use sessionbus_runtime::mount_plan::{
    BwrapCommand, GroupMounts, MountPlan, SessionMounts, WORKSPACE,
};
use sessionbus_schema::{DbFile, FileKind, Role};
use sessionbus_store::{
    provision, DueOutbound, HostSession, NewMessage, Ownership, SessionPaths, SystemClock,
};
use sessionbus_testkit::mount::{cleanup_stale_mounts, fuse_status, BindMount, CacheMode};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod echo;
mod mode;
pub use mode::run_mode;

/// Exit status when a mode did not behave as expected, or the check could not run (no FUSE).
pub const EXIT_FAILED: u8 = 1;

/// Arguments of `cargo xtask mountcheck`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Run the host on a session folder and the echo_container example through a bindfs \
mount of it, once per FUSE cache mode: the host writes chat messages at random intervals and \
delivers the replies; per mode it prints messages sent, answered once, lost, duplicated, torn, \
and the host-commit-to-container-claim latency (p50, p99, max).\n\n\
auto_cache and direct_io must answer every message exactly once; under kernel_cache (a mount \
that never revalidates) the container must report a frozen view instead of polling forever.\n\n\
Needs /dev/fuse, bindfs and fusermount (Debian: apt-get install -y bindfs). Builds the \
sessionbus-runtime examples first.",
    after_help = "Exit status: 0 when every mode behaved as expected, 1 otherwise or when the check \
could not run (no FUSE, no bindfs)."
)]
pub struct MountcheckArgs {
    /// A cache mode to check (repeatable): auto_cache, direct_io, kernel_cache [default: all]
    #[arg(long = "mode", value_name = "MODE")]
    pub modes: Vec<CacheMode>,

    /// Messages the host writes per mode
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub messages: usize,

    /// The host waits a random 0..=MS between two messages
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub max_gap_ms: u64,

    /// Seed of the random intervals [default: from the clock]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// The container reports a frozen view of inbound.db after this long behind the host
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub frozen_after_ms: u64,

    /// After the last message, wait this long at most for the answers
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub drain_secs: u64,

    /// Use this echo_container binary instead of building the examples
    #[arg(long, value_name = "PATH")]
    pub container_cmd: Option<PathBuf>,

    /// Print the reports as JSON instead of a table
    #[arg(long)]
    pub json: bool,

    /// Keep each mode's session folder (its path is printed) instead of removing it
    #[arg(long)]
    pub keep: bool,

    /// Run the container in bubblewrap as uid 1000 from the session's mount plan, so that
    /// inbound.db is a nested read-only bind of one file and the host's journal is hidden
    /// from the container's reader (needs root and bubblewrap)
    #[arg(long)]
    pub sandbox: bool,
}

/// What to run in one mode (the library form of the arguments).
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Messages the host writes.
    pub messages: usize,
    /// The host waits a random 0..=this between two messages.
    pub max_gap: Duration,
    /// Seed of the random intervals.
    pub seed: u64,
    /// The container's frozen-view threshold.
    pub frozen_after: Duration,
    /// How long to wait for answers after the last message.
    pub drain: Duration,
    /// Keep the session folder afterwards.
    pub keep: bool,
    /// Run the container in bubblewrap as uid 1000 with the session's mount plan built from
    /// the mount: `inbound.db` a nested read-only bind of the one file, so the host's journal
    /// is not visible to the container's reader.
    pub sandbox: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            messages: 40,
            max_gap: Duration::from_millis(200),
            seed: 1,
            frozen_after: Duration::from_millis(3000),
            drain: Duration::from_secs(20),
            keep: false,
            sandbox: false,
        }
    }
}

/// Commit-to-claim latency over the claimed messages, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Messages measured.
    pub n: usize,
    /// Median.
    pub p50_ms: i64,
    /// 99th percentile (nearest rank).
    pub p99_ms: i64,
    /// Slowest.
    pub max_ms: i64,
}

impl Latency {
    /// Percentiles of `samples` (nearest rank); `None` when empty.
    pub fn of(samples: &[i64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let rank = |q: f64| {
            let k = (q * v.len() as f64).ceil() as usize;
            v[k.clamp(1, v.len()) - 1]
        };
        Some(Latency {
            n: v.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: v[v.len() - 1],
        })
    }
}

/// What one mode did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeReport {
    /// The cache mode.
    pub mode: String,
    /// Messages the host wrote.
    pub sent: usize,
    /// Messages with exactly one reply (delivered once, one row in outbound.db, right text).
    pub answered_once: usize,
    /// Messages with no reply at all.
    pub lost: usize,
    /// Messages with more than one reply (delivered twice, or two rows).
    pub duplicated: usize,
    /// Replies whose text or address is wrong, delivered replies missing from outbound.db,
    /// plus every reply when outbound.db fails its integrity check.
    pub torn: usize,
    /// Messages the container claimed more than once.
    pub claimed_twice: usize,
    /// Host commit to container claim, over the claimed messages.
    pub latency: Option<Latency>,
    /// `PRAGMA integrity_check` of outbound.db, read by the host on its side.
    pub outbound_integrity: String,
    /// Retryable errors the host rode out (a hot journal the container's commit left visible
    /// for a moment: its locks do not cross the mount).
    pub host_retries: usize,
    /// How the container ended.
    pub container_exit: String,
    /// The container's frozen-view diagnosis, when it gave one.
    pub diagnosis: Option<String>,
    /// Wall time of the mode, in ms.
    pub elapsed_ms: u64,
    /// The mode behaved as it must (see [`ModeReport::expectation`]).
    pub ok: bool,
    /// What this mode must do.
    pub expectation: String,
}

impl ModeReport {
    /// What `mode` must do: answer everything exactly once, or (kernel_cache) report the frozen
    /// view.
    pub fn expectation(mode: CacheMode) -> &'static str {
        if mode.revalidates() {
            "every message answered exactly once, nothing torn"
        } else {
            "the container reports a frozen view; nothing duplicated or torn"
        }
    }
}

/// `cargo xtask mountcheck`: runs the check and returns the exit code.
pub fn main(args: &MountcheckArgs) -> ExitCode {
    match run(args) {
        Ok(reports) => {
            if args.json {
                match serde_json::to_string_pretty(&reports) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("mountcheck: {e}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                }
            }
            if reports.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                eprintln!("\nmountcheck FAILED: a mode did not behave as expected (see above)");
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("mountcheck: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs every selected mode and prints the table (unless `--json`).
pub fn run(args: &MountcheckArgs) -> Result<Vec<ModeReport>, String> {
    fuse_status().map_err(|e| format!("{e}; nothing was checked"))?;
    for p in cleanup_stale_mounts() {
        eprintln!(
            "mountcheck: unmounted {} (left by an interrupted run)",
            p.display()
        );
    }
    let echo = match &args.container_cmd {
        Some(p) => p.clone(),
        None => crate::demo::build_examples()?.0,
    };
    let modes = if args.modes.is_empty() {
        CacheMode::ALL.to_vec()
    } else {
        args.modes.clone()
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let opts = RigOptions {
        messages: args.messages,
        max_gap: Duration::from_millis(args.max_gap_ms),
        seed,
        frozen_after: Duration::from_millis(args.frozen_after_ms),
        drain: Duration::from_secs(args.drain_secs),
        keep: args.keep,
        sandbox: args.sandbox,
    };
    if !args.json {
        println!(
            "mountcheck: {} messages per mode, 0-{} ms apart (seed {seed}); the host on the \
             session folder, {} through a bindfs mount of it",
            opts.messages,
            args.max_gap_ms,
            echo.file_name()
                .map_or("echo_container".into(), |n| n.to_string_lossy())
        );
    }
    let mut reports = Vec::new();
    for mode in modes {
        if !args.json {
            eprintln!("mountcheck: {mode} ...");
        }
        reports.push(run_mode(mode, &opts, &echo)?);
    }
    if !args.json {
        print!("{}", table(&reports));
    }
    Ok(reports)
}

/// The report table, one row per mode, then the diagnoses and a verdict per mode.
pub fn table(reports: &[ModeReport]) -> String {
    let ms = |l: Option<Latency>, f: fn(&Latency) -> i64| {
        l.map_or_else(|| "-".to_string(), |l| format!("{} ms", f(&l)))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\n{:<13} {:>5} {:>14} {:>5} {:>11} {:>5} {:>9} {:>9} {:>9}   {}\n",
        "mode",
        "sent",
        "answered once",
        "lost",
        "duplicated",
        "torn",
        "p50",
        "p99",
        "max",
        "result"
    ));
    for r in reports {
        out.push_str(&format!(
            "{:<13} {:>5} {:>14} {:>5} {:>11} {:>5} {:>9} {:>9} {:>9}   {}\n",
            r.mode,
            r.sent,
            r.answered_once,
            r.lost,
            r.duplicated,
            r.torn,
            ms(r.latency, |l| l.p50_ms),
            ms(r.latency, |l| l.p99_ms),
            ms(r.latency, |l| l.max_ms),
            verdict(r),
        ));
    }
    out.push_str("(p50/p99/max: from the host's commit to the container's claim)\n");
    for r in reports {
        if let Some(d) = &r.diagnosis {
            out.push_str(&format!("\n{}: the container said: {d}\n", r.mode));
        }
        if r.host_retries > 0 {
            out.push_str(&format!(
                "{}: the host rode out {} retryable read error(s) (the container's commit in \
                 progress: its locks do not cross the mount)\n",
                r.mode, r.host_retries
            ));
        }
        if !r.ok {
            out.push_str(&format!(
                "{}: FAILED: expected {}; container {}; outbound.db integrity: {}\n",
                r.mode, r.expectation, r.container_exit, r.outbound_integrity
            ));
        }
    }
    out
}

fn verdict(r: &ModeReport) -> String {
    match (r.ok, &r.diagnosis) {
        (true, Some(_)) => format!(
            "ok: frozen view reported (container {})",
            short_exit(&r.container_exit)
        ),
        (true, None) => "ok".into(),
        (false, _) => "FAILED".into(),
    }
}

fn short_exit(s: &str) -> String {
    s.strip_prefix("exit status: ")
        .map_or_else(|| s.to_string(), |c| format!("exited {c}"))
}

/// A small deterministic generator for the intervals (xorshift64*).
#[cfg(test)]
mod tests {
    use super::echo::*;
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(Latency::of(&[]), None);
        let l = Latency::of(&[5]).unwrap();
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (5, 5, 5));
        let v: Vec<i64> = (1..=100).rev().collect();
        let l = Latency::of(&v).unwrap();
        assert_eq!((l.n, l.p50_ms, l.p99_ms, l.max_ms), (100, 50, 99, 100));
    }

    #[test]
    fn claim_lines_parse() {
        assert_eq!(
            parse_claim("echo_container[42]: claimed mc-auto_cache-3 at 1776773119123"),
            Some(("mc-auto_cache-3".into(), 1_776_773_119_123))
        );
        assert_eq!(parse_claim("echo_container[42]: batch of 1 (seq 2)"), None);
    }

    #[test]
    fn the_generator_stays_in_range_and_repeats_from_a_seed() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(201);
            assert!(x <= 200);
            assert_eq!(x, b.below(201));
        }
    }
}
