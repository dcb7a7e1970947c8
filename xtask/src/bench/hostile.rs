//! What a hostile container's outbound.db costs the host: the attacks of the trust boundary
//! (the same shapes as `runtime/examples/hostile_container.rs` plants), each in its own
//! session, and the host's pass over that session timed and its memory peak taken. A pass is
//! what a host that just started does for a session: a full [`Sweeper`] sweep (claims, ack
//! sync, the tool in flight, the stuck decision) and the delivery read (`due_outbound`);
//! delivering rows is the platform's work and is left out. Each pass runs in a fresh child
//! process, whose peak RSS above its starting RSS is the pass's memory.

use super::fixture::{touch_heartbeat, Sessions};
use super::memory::own_rss;
use super::scale::AlwaysRunning;
use super::{err, progress, BenchResult};
use rusqlite::Connection;
use serde::Serialize;
use sessionbus_runtime::host::{SweepOptions, Sweeper};
use sessionbus_store::{HostSession, SessionPaths};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// One attack's result.
#[derive(Debug, Clone, Serialize)]
pub struct HostileRun {
    /// Short id.
    pub attack: String,
    /// What was planted.
    pub label: String,
    /// The outbound.db's size, bytes.
    pub file_bytes: u64,
    /// The slowest pass, milliseconds.
    pub worst_ms: f64,
    /// The largest rise of the host's peak RSS during a pass, KiB.
    pub worst_peak_kib: u64,
    /// How the last pass ended: `ok` or the error the host reported.
    pub outcome: String,
}

/// The attacks: `claims` processing claims, a fiftieth as many extra tables.
fn attacks(claims: u64) -> Vec<(&'static str, String, String)> {
    let tables: u64 = (claims / 50).max(1);
    let mut many_tables = String::from("BEGIN;");
    for i in 0..tables {
        many_tables.push_str(&format!("CREATE TABLE t{i} (a, b, c);"));
    }
    many_tables.push_str("COMMIT;");
    let columns: Vec<String> = (0..1990).map(|i| format!("c{i}")).collect();
    let mut nested = String::from("c0");
    for _ in 0..900 {
        nested = format!("({nested} + 1)");
    }
    let deep = format!(
        "CREATE TABLE deep ({}, CHECK ({nested} IS NOT NULL OR 1));\
         CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY \
         NOT NULL, run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);\
         WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 1000) \
         INSERT OR REPLACE INTO __diesel_schema_migrations SELECT '9' || x, \
         hex(randomblob(50000)) FROM r;",
        columns.join(", ")
    );
    vec![
        (
            "claims",
            format!("{} processing claims", super::group_digits(claims)),
            format!(
                "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < {claims}) \
                 INSERT INTO processing_ack SELECT 'claim-' || x, 'processing', \
                 '2020-01-01 00:00:00' FROM r;"
            ),
        ),
        (
            "huge_rows",
            "a 20 MB content row and a 5 MB id".into(),
            "INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES \
             ('big', 1001, '2026-01-01 00:00:00', 'chat', '\"' || hex(zeroblob(10000000)) || '\"'); \
             INSERT INTO messages_out (id, seq, timestamp, kind, content) VALUES \
             (hex(zeroblob(2500000)), 1003, '2026-01-01 00:00:00', 'chat', '{}');"
                .into(),
        ),
        (
            "many_tables",
            format!("{} extra tables", super::group_digits(tables)),
            many_tables,
        ),
        (
            "deep_schema",
            "a 1,990-column table with a CHECK nested 900 deep, 1,000 forged 100 kB migrations"
                .into(),
            deep,
        ),
        (
            "far_future",
            "a reply due in 9999, then 1,500 replies after it".into(),
            "INSERT INTO messages_out (id, seq, timestamp, deliver_after, kind, content) \
             VALUES ('later', 2001, '2026-01-01 00:00:00', '9999-12-31 23:59:59', 'chat', \
             '{\"text\":\"later\"}'); \
             WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 1500) \
             INSERT INTO messages_out (id, seq, timestamp, kind, content) \
             SELECT 'now-' || x, 2001 + 2 * x, '2026-01-01 00:00:00', 'chat', \
             '{\"text\":\"now\"}' FROM r;"
                .into(),
        ),
    ]
}

/// The child process of one pass: a fresh process, so that its peak RSS is the pass's own
/// (a long-lived bench process reuses memory it freed earlier). Prints one JSON line.
pub fn child_main(dir: &Path) -> ExitCode {
    let (ms, peak_kib, outcome) = pass(&SessionPaths::new(dir));
    let line = serde_json::json!({ "ms": ms, "peak_kib": peak_kib, "outcome": outcome });
    println!("{line}");
    ExitCode::SUCCESS
}

/// Runs one pass in a child process.
fn pass_in_child(paths: &SessionPaths) -> BenchResult<(f64, u64, String)> {
    let exe = std::env::current_exe().map_err(err)?;
    let out = Command::new(exe)
        .args(["bench", "--no-release", "--hostile-child"])
        .arg(&paths.dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(err)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("hostile child ({}): {e}", out.status))?;
    Ok((
        v["ms"].as_f64().unwrap_or(f64::NAN),
        v["peak_kib"].as_u64().unwrap_or(0),
        v["outcome"].as_str().unwrap_or("?").to_string(),
    ))
}

/// One host pass over the session: a new sweeper's full sweep and the delivery read. Time,
/// the rise of peak RSS over the RSS before it (KiB), and how it ended.
fn pass(paths: &SessionPaths) -> (f64, u64, String) {
    let before = own_rss().map(|(rss, _)| rss).unwrap_or(0);
    let start = Instant::now();
    let host = HostSession::open(&paths.dir);
    let mut control = AlwaysRunning::default();
    let mut sweeper = Sweeper::new(SweepOptions::default().with_idle_after(None));
    let swept = sweeper.sweep(&host, &mut control);
    let due = host.due_outbound(1000);
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let peak = own_rss().map(|(_, hwm)| hwm).unwrap_or(0);
    let outcome = match (swept, due) {
        (Ok(_), Ok(rows)) => format!("ok ({} due rows read)", rows.len()),
        (Err(e), _) => format!("sweep: {e}"),
        (_, Err(e)) => format!("due read: {e}"),
    };
    (ms, peak.saturating_sub(before), outcome)
}

/// Plants each attack in a fresh session and measures `runs` passes over it.
pub fn measure(sessions: &Sessions, claims: u64, runs: usize) -> BenchResult<Vec<HostileRun>> {
    let mut out = Vec::new();
    for (id, label, sql) in attacks(claims) {
        progress(&format!("hostile: {label}"));
        let paths = sessions.fresh(&format!("hostile-{id}"))?;
        touch_heartbeat(&paths)?;
        {
            let c = Connection::open(&paths.outbound).map_err(err)?;
            c.execute_batch(&sql)
                .map_err(|e| format!("planting {id}: {e}"))?;
        }
        let file_bytes = std::fs::metadata(&paths.outbound).map_err(err)?.len();
        let mut worst_ms = 0f64;
        let mut worst_peak = 0u64;
        let mut outcome = String::new();
        for _ in 0..runs.max(1) {
            let (ms, peak, o) = pass_in_child(&paths)?;
            worst_ms = worst_ms.max(ms);
            worst_peak = worst_peak.max(peak);
            outcome = o;
        }
        out.push(HostileRun {
            attack: id.into(),
            label,
            file_bytes,
            worst_ms,
            worst_peak_kib: worst_peak,
            outcome,
        });
    }
    Ok(out)
}
