//! The command line of `cargo xtask bench` and the plan it turns into.

use super::*;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

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
    pub(crate) fn to_cli(&self) -> Vec<std::ffi::OsString> {
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

pub(crate) fn absolute(p: &Path) -> PathBuf {
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
    pub(crate) fn from_args(a: &BenchArgs) -> Plan {
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
    pub(crate) fn runs_group(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}
