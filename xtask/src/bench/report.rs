//! The report of `cargo xtask bench`: its figures, the targets judged from them, and the table
//! printed.

use super::*;
use serde::Serialize;

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
    pub(crate) fn of(runs: Vec<f64>) -> Figure {
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

pub(crate) fn targets(r: &Report) -> Vec<Target> {
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

pub(crate) fn group_digits(n: u64) -> String {
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

pub(crate) fn fmt_num(x: f64) -> String {
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

pub(crate) fn fmt_figure(f: &Figure, unit: &str) -> String {
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
