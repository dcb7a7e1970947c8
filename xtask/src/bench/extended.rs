//! The workloads of issue 14 beside the ratio table: end-to-end latency and throughput through
//! real processes, the 10,000-session scale, the hostile files, and the older
//! implementation's statements side by side (`--peer`). Each has its own module; this one
//! runs them, states their targets and renders their part of the table.

use super::fixture::{self, Sessions};
use super::hostile::{self, HostileRun};
use super::latency::{self, IdleCpu, LatencyRun, ThroughputRun};
use super::peer::{self, Peer};
use super::scale::{self, ScaleMemory};
use super::{fmt_num, group_digits, pair, progress, BenchResult, Figure, Plan, Report, Target};
use serde::Serialize;
use sessionbus_runtime::wake::Preference;
use sessionbus_store::SessionPaths;
use std::fmt::Write as _;

/// End-to-end overhead of one message, p50, milliseconds (local folder, default settings).
pub const TARGET_LATENCY_P50_MS: f64 = 10.0;
/// The same, p99.
pub const TARGET_LATENCY_P99_MS: f64 = 50.0;
/// Nothing starved: the worst session's own p99 at most this many times the p99 of all
/// sessions together.
pub const TARGET_STARVATION: f64 = 1.5;
/// A steady-state pass over [`TARGET_SCALE_SESSIONS`] idle sessions, milliseconds.
pub const TARGET_STEADY_MS: f64 = 100.0;
/// A cold pass over [`TARGET_SCALE_SESSIONS`] idle sessions, milliseconds.
pub const TARGET_COLD_MS: f64 = 1_500.0;
/// Sessions in the scale targets.
pub const TARGET_SCALE_SESSIONS: usize = 10_000;
/// The host's worst pass over one hostile session, milliseconds.
pub const TARGET_HOSTILE_MS: f64 = 50.0;
/// The same, peak memory, KiB (16 MiB).
pub const TARGET_HOSTILE_KIB: u64 = 16 * 1024;
/// Library / raw ratio of the issue (stricter than the table's [`super::TARGET_RATIO`]).
pub const TARGET_RATIO_14: f64 = 1.10;

/// Sizes of the extended workloads.
#[derive(Debug, Clone, Serialize)]
pub struct ExtPlan {
    /// Session counts of the latency runs (change notification).
    pub latency_sessions: Vec<usize>,
    /// Waves per latency run, per session count.
    pub latency_waves: Vec<usize>,
    /// Waves of the polling comparison (one session).
    pub polling_waves: usize,
    /// Messages through one session in the throughput run.
    pub throughput_single: usize,
    /// Sessions and messages each in the many-session throughput run.
    pub throughput_many: (usize, usize),
    /// Idle sessions in the scale run.
    pub scale_sessions: usize,
    /// Idle containers and seconds of the idle CPU run.
    pub idle_cpu: (usize, f64),
    /// Claims planted by the hostile run.
    pub hostile_claims: u64,
}

impl ExtPlan {
    /// The sizes for `--quick` or full runs, with the command line's overrides.
    pub fn new(args: &super::BenchArgs) -> ExtPlan {
        let mut p = if args.quick {
            ExtPlan {
                latency_sessions: vec![1, 10, 50],
                latency_waves: vec![40, 10, 4],
                polling_waves: 6,
                throughput_single: 100,
                throughput_many: (100, 3),
                scale_sessions: 1_000,
                idle_cpu: (20, 5.0),
                hostile_claims: 100_000,
            }
        } else {
            ExtPlan {
                latency_sessions: vec![1, 10, 100],
                latency_waves: vec![200, 40, 10],
                polling_waves: 20,
                throughput_single: 500,
                throughput_many: (100, 10),
                scale_sessions: TARGET_SCALE_SESSIONS,
                idle_cpu: (50, 10.0),
                hostile_claims: 1_000_000,
            }
        };
        if let Some(n) = args.scale {
            p.scale_sessions = n.max(1);
        }
        if !args.e2e_sessions.is_empty() {
            let mut counts: Vec<usize> = args.e2e_sessions.iter().map(|&n| n.max(1)).collect();
            counts.sort_unstable();
            counts.dedup();
            p.latency_waves = counts.iter().map(|_| 10).collect();
            p.throughput_many.0 = counts.last().copied().unwrap_or(1);
            p.latency_sessions = counts;
        }
        if let Some(w) = args.waves {
            let w = w.max(1);
            p.latency_waves = p.latency_sessions.iter().map(|_| w).collect();
            p.polling_waves = w;
            p.throughput_single = p.throughput_single.min(w * 10);
            p.throughput_many.1 = p.throughput_many.1.min(w);
            p.idle_cpu = (p.idle_cpu.0.min(w), 1.0);
        }
        if let Some(n) = args.hostile_size {
            p.hostile_claims = n.max(1);
        }
        p
    }
}

/// The scale workload's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    /// Sessions.
    pub sessions: usize,
    /// Cold pass (new sweeper: full sweep and delivery read of every session), ms per pass.
    pub cold_ms: (Figure, Figure),
    /// Steady-state pass (Sweeper quiet checks + the watch set), ms per pass.
    pub steady_ms: (Figure, Figure),
    /// Memory.
    pub memory: ScaleMemory,
}

/// Everything beside the ratio table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Extended {
    /// Sizes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<ExtPlan>,
    /// Latency runs.
    pub latency: Vec<LatencyRun>,
    /// Idle containers' CPU, by mode.
    pub idle_cpu: Vec<IdleCpu>,
    /// Throughput runs.
    pub throughput: Vec<ThroughputRun>,
    /// The scale run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// The hostile files.
    pub hostile: Vec<HostileRun>,
    /// The older implementation's statements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
}

fn to_ms(f: Figure) -> Figure {
    Figure::of(f.runs.iter().map(|us| us / 1000.0).collect())
}

/// Runs the extended workloads the plan asks for.
pub fn run(
    plan: &Plan,
    ext: ExtPlan,
    peer_wanted: bool,
    (disk, disk_kind): (&Sessions, &str),
    mem: Option<(&Sessions, &str)>,
    histories: &[(u64, SessionPaths)],
) -> BenchResult<Extended> {
    let mut out = Extended::default();
    // The mechanism on the fsync-free folder when there is one (every session count, and
    // polling beside it), then one session on the disk, where commits pay their fsyncs.
    let first = mem.unwrap_or((disk, disk_kind));
    let places: Vec<(&Sessions, &str)> = match mem {
        Some(m) => vec![m, (disk, disk_kind)],
        None => vec![(disk, disk_kind)],
    };
    if plan.runs_group("latency") {
        for (&n, &waves) in ext.latency_sessions.iter().zip(&ext.latency_waves) {
            out.latency.push(latency::latency_reported(
                first,
                n,
                waves,
                Preference::Auto,
            )?);
        }
        out.latency.push(latency::latency_reported(
            first,
            1,
            ext.polling_waves,
            Preference::Poll,
        )?);
        if mem.is_some() {
            let waves = ext.latency_waves.first().copied().unwrap_or(10);
            out.latency.push(latency::latency_reported(
                (disk, disk_kind),
                1,
                waves,
                Preference::Auto,
            )?);
        }
        let (n, secs) = ext.idle_cpu;
        // Three rounds, alternating which mode goes first: a short run's CPU time is noisy.
        let mut runs: Vec<(Preference, Vec<IdleCpu>)> = vec![
            (Preference::Auto, Vec::new()),
            (Preference::Poll, Vec::new()),
        ];
        for round in 0..3 {
            if round % 2 == 1 {
                runs.reverse();
            }
            for (pref, got) in runs.iter_mut() {
                progress(&format!(
                    "idle CPU, round {}: {n} idle containers for {secs} s ({pref:?})",
                    round + 1
                ));
                got.push(latency::idle_cpu(first.0, n, secs, *pref)?);
            }
        }
        runs.sort_by_key(|(pref, _)| *pref == Preference::Poll);
        for (_, mut got) in runs {
            got.sort_by(|a, b| a.us_per_session_second.total_cmp(&b.us_per_session_second));
            let samples: Vec<f64> = got.iter().map(|c| c.us_per_session_second).collect();
            if let Some(mut median) = got.get(got.len() / 2).cloned() {
                median.rounds = samples;
                out.idle_cpu.push(median);
            }
        }
    }
    if plan.runs_group("throughput") {
        for &at in &places {
            progress(&format!(
                "throughput ({}): {} messages through one session",
                at.1, ext.throughput_single
            ));
            out.throughput
                .push(latency::throughput(at, 1, ext.throughput_single)?);
            let (n, each) = ext.throughput_many;
            progress(&format!(
                "throughput ({}): {n} sessions x {each} messages",
                at.1
            ));
            out.throughput.push(latency::throughput(at, n, each)?);
        }
    }
    if plan.runs_group("scale") {
        let n = ext.scale_sessions;
        progress(&format!("scale: preparing {n} idle sessions"));
        let template = disk.fresh("scale-template")?;
        fixture::add_history(&template, plan.sweep_history)?;
        let paths = scale::make_sessions(disk, &template, n)?;
        progress(&format!(
            "scale: cold pass over {n} sessions x {} runs",
            plan.runs
        ));
        let cold = pair(
            plan.runs,
            || scale::cold_library(&paths),
            || scale::cold_raw(&paths),
        )?;
        progress(&format!("scale: steady-state pass over {n} sessions"));
        let steady = pair(
            plan.runs,
            || scale::steady_library(&paths, 3),
            || super::workloads::sweeper_raw(&paths, 1),
        )?;
        progress("scale: memory per idle session");
        let list = paths
            .first()
            .and_then(|p| p.dir.parent())
            .map(|d| d.join("scale-sessions.txt"))
            .ok_or("no scale sessions")?;
        let memory = scale::memory(&paths, &list)?;
        out.scale = Some(Scale {
            sessions: n,
            cold_ms: (to_ms(cold.0), to_ms(cold.1)),
            steady_ms: (to_ms(steady.0), to_ms(steady.1)),
            memory,
        });
    }
    if plan.runs_group("hostile") {
        out.hostile = hostile::measure(disk, ext.hostile_claims, plan.runs.min(3))?;
    }
    if peer_wanted {
        out.peer = Some(peer::measure(histories, plan.ops, plan.runs));
    }
    out.plan = Some(ext);
    Ok(out)
}

/// The extended targets, met or missed.
pub fn targets(r: &Report) -> Vec<Target> {
    let e = &r.extended;
    let mut t = Vec::new();
    for one in e
        .latency
        .iter()
        .filter(|l| l.mode == "inotify" && l.sessions == 1)
    {
        t.push(Target {
            name: format!(
                "end-to-end overhead of one message, p50 (local folder on {}, defaults)",
                one.storage
            ),
            limit: format!("< {TARGET_LATENCY_P50_MS:.0} ms"),
            achieved: format!("{} ms", fmt_num(one.p50_ms)),
            met: one.p50_ms < TARGET_LATENCY_P50_MS,
        });
        t.push(Target {
            name: format!(
                "end-to-end overhead of one message, p99 (local folder on {}, defaults)",
                one.storage
            ),
            limit: format!("< {TARGET_LATENCY_P99_MS:.0} ms"),
            achieved: format!("{} ms", fmt_num(one.p99_ms)),
            met: one.p99_ms < TARGET_LATENCY_P99_MS,
        });
    }
    if let Some(busiest) = e
        .latency
        .iter()
        .filter(|l| l.mode == "inotify")
        .max_by_key(|l| l.sessions)
        .filter(|l| l.sessions > 1)
    {
        t.push(Target {
            name: format!(
                "{} busy sessions at once ({}): nothing starved, worst session's p99 vs all",
                busiest.sessions, busiest.storage
            ),
            limit: format!("<= {TARGET_STARVATION:.1}x the p99 of all"),
            achieved: format!(
                "{} ms vs {} ms (p50 {} ms)",
                fmt_num(busiest.worst_session_p99_ms),
                fmt_num(busiest.p99_ms),
                fmt_num(busiest.p50_ms)
            ),
            met: busiest.worst_session_p99_ms <= busiest.p99_ms * TARGET_STARVATION,
        });
    }
    if let (Some(n), Some(p)) = (
        e.idle_cpu.iter().find(|c| c.mode == "inotify"),
        e.idle_cpu.iter().find(|c| c.mode == "polling"),
    ) {
        t.push(Target {
            name: "idle CPU per session, change notification vs polling".into(),
            limit: format!("<= polling ({} us/s)", fmt_num(p.us_per_session_second)),
            achieved: format!("{} us/s", fmt_num(n.us_per_session_second)),
            met: n.us_per_session_second <= p.us_per_session_second,
        });
    }
    if let Some(s) = &e.scale {
        let scaled = |ms: f64| ms * TARGET_SCALE_SESSIONS as f64 / s.sessions.max(1) as f64;
        let note = if s.sessions == TARGET_SCALE_SESSIONS {
            String::new()
        } else {
            format!(
                " (scaled from {} sessions)",
                group_digits(s.sessions as u64)
            )
        };
        let steady = scaled(s.steady_ms.0.median);
        t.push(Target {
            name: format!(
                "steady-state pass over {} idle sessions",
                group_digits(TARGET_SCALE_SESSIONS as u64)
            ),
            limit: format!("< {TARGET_STEADY_MS:.0} ms"),
            achieved: format!("{steady:.1} ms{note}"),
            met: steady < TARGET_STEADY_MS,
        });
        let cold = scaled(s.cold_ms.0.median);
        t.push(Target {
            name: format!(
                "cold pass over {} idle sessions",
                group_digits(TARGET_SCALE_SESSIONS as u64)
            ),
            limit: format!("< {TARGET_COLD_MS:.0} ms"),
            achieved: format!("{cold:.0} ms{note}"),
            met: cold < TARGET_COLD_MS,
        });
        for (what, (l, raw)) in [
            ("cold pass", &s.cold_ms),
            ("steady-state pass", &s.steady_ms),
        ] {
            let ratio = l.median / raw.median;
            t.push(Target {
                name: format!("ratio (issue 14): {what} over {} sessions", s.sessions),
                limit: format!("<= {TARGET_RATIO_14:.2}"),
                achieved: format!("{ratio:.2}"),
                met: ratio <= TARGET_RATIO_14,
            });
        }
    }
    if let Some(worst) = e
        .hostile
        .iter()
        .max_by(|a, b| a.worst_ms.total_cmp(&b.worst_ms))
    {
        t.push(Target {
            name: format!("hostile outbound.db: worst pass time ({})", worst.attack),
            limit: format!("<= {TARGET_HOSTILE_MS:.0} ms"),
            achieved: format!("{} ms", fmt_num(worst.worst_ms)),
            met: worst.worst_ms <= TARGET_HOSTILE_MS,
        });
    }
    if let Some(worst) = e.hostile.iter().max_by_key(|h| h.worst_peak_kib) {
        t.push(Target {
            name: format!("hostile outbound.db: worst peak memory ({})", worst.attack),
            limit: format!("<= {} KiB", TARGET_HOSTILE_KIB),
            achieved: format!("{} KiB", worst.worst_peak_kib),
            met: worst.worst_peak_kib <= TARGET_HOSTILE_KIB,
        });
    }
    if let Some(p) = e.peer.as_ref().filter(|p| p.available) {
        for s in &r.scaling {
            for (h, lib) in s.histories.iter().zip(&s.library_us) {
                if let Some(older) = p.median(&s.poll, *h) {
                    t.push(Target {
                        name: format!(
                            "{} at history {}: library no slower than the older implementation",
                            s.label,
                            group_digits(*h)
                        ),
                        limit: "library <= older".into(),
                        achieved: format!("{} vs {} us", fmt_num(*lib), fmt_num(older)),
                        met: *lib <= older,
                    });
                }
            }
        }
    }
    t
}

/// The extended part of the printed table.
pub fn render(r: &Report, s: &mut String) {
    let e = &r.extended;
    if !e.latency.is_empty() {
        let _ = writeln!(
            s,
            "\nend-to-end latency (host write -> container claim -> reply commit -> host delivery; \
             container process, default settings, echo handler):"
        );
        let _ = writeln!(
            s,
            "  {:<9} {:<7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>20}  container wake",
            "mode",
            "folder",
            "sessions",
            "samples",
            "p50 ms",
            "p99 ms",
            "max ms",
            "worst session p99"
        );
        for l in &e.latency {
            let _ = writeln!(
                s,
                "  {:<9} {:<7} {:>8} {:>8} {:>10} {:>10} {:>10} {:>20}  {}",
                l.mode,
                l.storage,
                l.sessions,
                l.samples,
                fmt_num(l.p50_ms),
                fmt_num(l.p99_ms),
                fmt_num(l.max_ms),
                fmt_num(l.worst_session_p99_ms),
                l.container_modes.join("; ")
            );
        }
    }
    for c in &e.idle_cpu {
        let _ = writeln!(
            s,
            "  idle containers ({}): {} us CPU per session per second ({} sessions, {:.1} s; rounds {})",
            c.mode,
            fmt_num(c.us_per_session_second),
            c.sessions,
            c.seconds,
            c.rounds
                .iter()
                .map(|x| fmt_num(*x))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    if !e.throughput.is_empty() {
        let _ = writeln!(s, "\nthroughput end to end (change notification):");
        for t in &e.throughput {
            let _ = writeln!(
                s,
                "  {:<6} {:>4} session(s), {:>5} messages: {} msg/s",
                t.storage,
                t.sessions,
                t.messages,
                fmt_num(t.msgs_per_sec)
            );
        }
    }
    if let Some(sc) = &e.scale {
        let _ = writeln!(
            s,
            "\nscale: {} idle sessions (library | raw, ms per pass, median [min-max]):",
            group_digits(sc.sessions as u64)
        );
        for (what, (l, raw)) in [
            ("cold pass (full sweep + delivery read)", &sc.cold_ms),
            ("steady-state pass (Sweeper + watch set)", &sc.steady_ms),
        ] {
            let _ = writeln!(
                s,
                "  {:<42} {} [{}-{}] | {} [{}-{}]  ratio {:.2}",
                what,
                fmt_num(l.median),
                fmt_num(l.min),
                fmt_num(l.max),
                fmt_num(raw.median),
                fmt_num(raw.min),
                fmt_num(raw.max),
                l.median / raw.median
            );
        }
        let _ = writeln!(
            s,
            "  host memory: {} KiB RSS for {} sessions = {:.0} bytes per idle session (+ {} inotify watches in kernel memory)",
            sc.memory.rss_growth_kib,
            group_digits(sc.memory.sessions as u64),
            sc.memory.bytes_per_session,
            sc.memory.watches
        );
    }
    if !e.hostile.is_empty() {
        let _ = writeln!(
            s,
            "\nhostile outbound.db (host's pass: full sweep + delivery read; worst of the runs):"
        );
        for h in &e.hostile {
            let _ = writeln!(
                s,
                "  {:<84} {:>9} ms {:>8} KiB  file {:>6} MiB  {}",
                h.label,
                fmt_num(h.worst_ms),
                h.worst_peak_kib,
                h.file_bytes / (1024 * 1024),
                h.outcome
            );
        }
    }
    if let Some(p) = &e.peer {
        let _ = writeln!(
            s,
            "\nside by side with the older implementation's statements (us/poll):"
        );
        if !p.available {
            let _ = writeln!(
                s,
                "  older implementation: unavailable ({})",
                p.reason.as_deref().unwrap_or("unknown")
            );
        } else {
            let _ = writeln!(
                s,
                "  (Node {}, better-sqlite3 {}; ratio = older / library)",
                p.node.as_deref().unwrap_or("?"),
                p.better_sqlite3.as_deref().unwrap_or("?")
            );
            let _ = writeln!(
                s,
                "  {:<26} {:>9} {:>10} {:>10} {:>12} {:>9}",
                "poll", "history", "library", "raw", "older", "ratio"
            );
            for sc in &r.scaling {
                for (i, h) in sc.histories.iter().enumerate() {
                    let lib = sc.library_us.get(i).copied().unwrap_or(f64::NAN);
                    let raw = sc.raw_us.get(i).copied().unwrap_or(f64::NAN);
                    let older = p.median(&sc.poll, *h).unwrap_or(f64::NAN);
                    let _ = writeln!(
                        s,
                        "  {:<26} {:>9} {:>10} {:>10} {:>12} {:>8.1}x",
                        sc.label,
                        group_digits(*h),
                        fmt_num(lib),
                        fmt_num(raw),
                        fmt_num(older),
                        older / lib
                    );
                }
            }
        }
    }
}
