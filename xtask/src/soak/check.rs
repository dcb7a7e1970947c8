//! The end-of-run check: the ledgers against the files, read with every process stopped.
//!
//! The files are read through plain read-only rusqlite connections, not through the library
//! under test (after the library's own writer open has rolled back any hot journal a killed
//! process left). For every session but the deliberately broken one:
//!
//! - `PRAGMA integrity_check` is `ok` and the journal mode is `delete`, for both files;
//! - seqs are unique across `messages_in`, `host_replies` and `messages_out`, even for the
//!   host's rows and odd for the container's, and every reply sorts after what it answers. A
//!   host reply's mirror in `messages_in` (kind `host-reply`, written in the same transaction
//!   for the older implementation) is no message: it must carry its reply's id and seq, and is
//!   checked as such;
//! - every message the ledger says was committed is in `messages_in` with the seq the write
//!   returned (a write whose `Ok` was lost to a kill is found in the file all the same);
//! - every `messages_in` row that wakes the agent is `completed` with exactly one reply, or
//!   `failed` after the last try with at most one; context rows (`trigger = 0`) have none;
//!   every denied command has exactly one host reply;
//! - every reply was delivered: it has a `delivered` row, and the platform ledger has the
//!   hand-off. A hand-off repeated after a host crash is allowed (at-least-once, with the
//!   attempt number as idempotency key: it is counted as `redelivered`); two first attempts
//!   of the same row are a duplicate;
//! - the host never killed a healthy container as stuck (outside the moment of a clock jump);
//!   a stop for the idle rule (nothing pending, nothing claimed, nothing happened for 30 min of
//!   the clock: it follows the clock steps past 30 min) is counted as `idle_stops`, not as
//!   stuck, and what it could do wrong shows in the messages;
//! - sessions other than the broken one answered messages written after it broke;
//! - the special messages (see [`super::proc::Special`]): a `panic-once` or `hang-once` message
//!   is answered exactly once like any other (never `failed`); a `poison` message ends
//!   `failed` after the last try with no reply (`poison_answered` otherwise); a message that
//!   ended `failed` because it was claimed in one batch with a poison message (its failure
//!   note names the poison) is `collateral`; every container hung in its handler was killed

mod files;
mod report;
mod session;

use super::proc::{EXIT_DISK_FULL, EXIT_HANDLER, EXIT_IO};
use super::{DriverRecord, Layout, RunConfig};
use files::lines;
use session::check_session;
use std::collections::{BTreeMap, HashMap, HashSet};

pub use files::{integrity_now, settled};
pub use report::Report;

/// Runs the whole check.
pub fn check(layout: &Layout, cfg: &RunConfig, rec: &DriverRecord) -> Report {
    let mut r = Report {
        seed: cfg.seed,
        seconds: 0,
        sessions: cfg.sessions,
        faults: rec.faults.clone(),
        in_txn: rec.in_txn,
        settled: rec.settled,
        readonly_supported: rec.readonly_supported,
        drain: rec.drain,
        host_crashes: rec.host_crashes.len() as u64,
        ..Report::default()
    };
    for m in &rec.host_crashes {
        r.problem(m.clone());
    }
    for m in &rec.unclear {
        r.unclear += 1;
        r.problem(m.clone());
    }
    for m in &rec.corrupt_during {
        r.corrupt += 1;
        r.problem(m.clone());
    }
    for m in &rec.handler_hangs_missed {
        r.handler_hangs_missed += 1;
        r.problem(m.clone());
    }

    // What the containers' handlers did on the special messages.
    for (_, f) in lines(&layout.events, "c-") {
        match f.first().map(String::as_str) {
            Some("handler_panic") => *r.faults.entry("handler_panic").or_default() += 1,
            Some("handler_hang") => *r.faults.entry("handler_hang").or_default() += 1,
            Some("handler_poison") => r.poison_failures += 1,
            Some("late_batch") => r.late_batches += 1,
            _ => {}
        }
    }
    if !rec.settled {
        r.problem("the drain did not settle: see the pending messages below".into());
    }

    // Events of the host incarnations and the containers.
    let events = lines(&layout.events, "h");
    let hung: HashSet<i32> = rec.hung.iter().map(|(p, _)| *p).collect();
    let handler_hung: HashSet<i32> = rec.handler_hung.iter().map(|(p, _)| *p).collect();
    let mut hung_dead: HashSet<i32> = HashSet::new();
    let mut host_errors: BTreeMap<(String, String), String> = BTreeMap::new();
    for (ms, f) in &events {
        match f.first().map(String::as_str) {
            Some("retry") => r.retried += 1,
            Some("stuck_kill") => {
                let pid: i32 = f.get(2).and_then(|p| p.parse().ok()).unwrap_or(0);
                if f.get(4).map(String::as_str) == Some("idle") {
                    // The idle rule, not a verdict on the container's health.
                    r.idle_stops += 1;
                } else if handler_hung.contains(&pid) {
                    r.handler_hangs_killed += 1;
                } else if hung.contains(&pid) {
                    r.hangs_killed += 1;
                    if *ms <= rec.drain_start_ms {
                        hung_dead.insert(pid);
                    }
                } else {
                    // A clock step kills the containers that have not touched their
                    // heartbeat since (past the ceiling, or past the claim tolerance with a
                    // claim older than the last touch): legitimate for a moment only.
                    let after_jump = rec.jumps.iter().any(|j| *ms >= *j && *ms - *j < 10_000);
                    if !after_jump {
                        r.spurious_kills += 1;
                        r.problem(format!(
                            "the host killed healthy container {pid} of {} as stuck: {}",
                            f.get(1).map_or("?", |s| s),
                            f.get(3).map_or("?", |s| s)
                        ));
                    }
                }
            }
            Some("container_exit")
                if f.get(4).map(String::as_str) == Some("fsize")
                    && !rec.broken.as_ref().is_some_and(|(b, at, _)| {
                        f.get(1) == Some(&Layout::sid(*b)) && *ms >= *at
                    }) =>
            {
                // (A limited container of the broken session, once it broke, fails on the
                // garbage first: that is the garbage fault's outcome, checked there.)
                let code = f.get(3).map_or("?", |s| s);
                let clear = [EXIT_DISK_FULL.to_string(), EXIT_IO.to_string()];
                if clear.iter().any(|c| c == code) {
                    *r.faults.entry("disk_full_container").or_default() += 1;
                } else if code != "signal" && code != "0" && code != EXIT_HANDLER.to_string() {
                    // (EXIT_HANDLER: the handler failed on a special message before the
                    // limit was reached.)
                    r.unclear += 1;
                    r.problem(format!(
                        "a file-size-limited container of {} exited with status {code}, not a \
                         clear disk-full error (see its logs/*.container-fsize-*.log)",
                        f.get(1).map_or("?", |s| s)
                    ));
                }
            }
            Some("orphan_kill") => {
                // A restarted host stops what its predecessor left running, hung or not.
                if let Some(pid) = f.get(2).and_then(|p| p.parse().ok()) {
                    if *ms <= rec.drain_start_ms {
                        hung_dead.insert(pid);
                    }
                }
            }
            Some("rewrite_mismatch") => {
                r.duplicated += 1;
                r.problem(format!(
                    "re-sent message was not idempotent: {}",
                    f.join(" ")
                ));
            }
            Some("error") => {
                let sid = f.get(1).cloned().unwrap_or_default();
                let kind = f.get(2).cloned().unwrap_or_default();
                host_errors
                    .entry((sid, kind))
                    .or_insert_with(|| f.get(4).cloned().unwrap_or_default());
            }
            _ => {}
        }
    }

    for (pid, at) in &rec.hung {
        if !hung_dead.contains(pid) {
            r.hangs_missed += 1;
            r.problem(format!(
                "container {pid}, hung at {at} with the clock past the heartbeat ceiling, was \
                 never killed by the host"
            ));
        }
    }

    // Ledgers.
    let written = lines(&layout.ledger, "written-");
    let handoffs = lines(&layout.ledger, "platform-");
    let mut handed: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, f) in &handoffs {
        if let (Some(id), Some(attempt)) = (f.get(1), f.get(3).and_then(|a| a.parse().ok())) {
            handed.entry(id.clone()).or_default().push(attempt);
        }
    }

    let broken = rec.broken.as_ref().map(|(i, _, _)| *i);
    let broke_at = rec.broken.as_ref().map(|(_, ms, _)| *ms);
    for i in 0..cfg.sessions {
        let sid = Layout::sid(i);
        if Some(i) == broken {
            r.abandoned += written
                .iter()
                .filter(|(_, f)| f.first() == Some(&sid))
                .count() as u64;
            let kinds: Vec<String> = host_errors
                .keys()
                .filter(|(s, _)| *s == sid)
                .map(|(_, k)| k.clone())
                .collect();
            let what = rec.broken.as_ref().map_or("", |(_, _, w)| w.as_str());
            eprintln!(
                "soak: {sid} ({what}) failed with: {}",
                if kinds.is_empty() {
                    "no error seen".to_string()
                } else {
                    kinds.join(", ")
                }
            );
            if kinds.iter().any(|k| k == "Query" || k == "Panicked") {
                r.unclear += 1;
                r.problem(format!(
                    "{sid} ({what}) failed with an unclear error: {:?}",
                    host_errors
                        .iter()
                        .filter(|((s, k), _)| *s == sid && (k == "Query" || k == "Panicked"))
                        .map(|(_, m)| m)
                        .collect::<Vec<_>>()
                ));
            }
            continue;
        }
        for ((s, kind), msg) in &host_errors {
            if *s == sid && !matches!(kind.as_str(), "Locked" | "HotJournal") {
                eprintln!("soak: note: the host saw a {kind} error on healthy {sid}: {msg}");
            }
        }
        check_session(layout, cfg, i, &written, &handed, broke_at, &mut r);
    }
    r
}
