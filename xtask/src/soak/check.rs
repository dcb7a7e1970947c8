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
//!   (`handler_hangs_missed` otherwise).

use super::proc::{Special, EXIT_DISK_FULL, EXIT_HANDLER, EXIT_IO};
use super::{DriverRecord, Layout, RunConfig};
use rusqlite::{Connection, OpenFlags};
use sessionbus_schema::{DbFile, FileKind, Role};
use sessionbus_store::HOST_REPLY_KIND;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// What the check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Seconds of faults.
    pub seconds: u64,
    /// Sessions.
    pub sessions: usize,
    /// Messages committed in the checked sessions (rows of `messages_in` plus denied commands).
    pub messages: u64,
    /// Answered exactly once and delivered.
    pub answered: u64,
    /// Marked failed after the last try.
    pub failed: u64,
    /// Context rows (no answer expected).
    pub context: u64,
    /// Messages of the broken session, not checked.
    pub abandoned: u64,
    /// `panic-once` messages checked (each must be answered exactly once).
    pub panic_once: u64,
    /// `hang-once` messages checked (each must be answered exactly once).
    pub hang_once: u64,
    /// `poison` messages checked.
    pub poison: u64,
    /// Of those, how many ended `failed` after the last try, unanswered.
    pub poison_failed: u64,
    /// Poison messages that got an answer: the handler never answers one.
    pub poison_answered: u64,
    /// Other messages that ended `failed` for having shared a batch with a poison message.
    pub collateral: u64,
    /// Handler failures on poison messages (container events).
    pub poison_failures: u64,
    /// Containers hung in their handler that the host's sweep killed as stuck.
    pub handler_hangs_killed: u64,
    /// Containers hung in their handler that nobody killed.
    pub handler_hangs_missed: u64,
    /// Containers the host stopped for the idle rule.
    pub idle_stops: u64,
    /// Ordinary batches that took longer than the handler's deadline (a loaded machine).
    pub late_batches: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Kills that left a journal behind.
    pub in_txn: u64,
    /// Claims the host's sweep retried.
    pub retried: u64,
    /// Hung containers the sweep killed as stuck.
    pub hangs_killed: u64,
    /// Hung containers nobody killed before the drain woke them: the stuck detection missed.
    pub hangs_missed: u64,
    /// Hand-offs repeated after a crash between hand-off and record.
    pub redelivered: u64,
    /// Committed but unanswered, undelivered or gone.
    pub lost: u64,
    /// Answered or delivered more than once.
    pub duplicated: u64,
    /// Files failing `integrity_check` (or not in delete mode).
    pub corrupt: u64,
    /// Seqs used twice, or not the seq the write returned.
    pub seq_collisions: u64,
    /// Host seqs that are odd, container seqs that are even, or missing seqs.
    pub parity_breaks: u64,
    /// Replies that sort before what they answer.
    pub order_breaks: u64,
    /// Errors that were not a clear one (disk full not reported as such, say).
    pub unclear: u64,
    /// Healthy containers killed as stuck.
    pub spurious_kills: u64,
    /// Healthy sessions that stopped answering after the broken one broke.
    pub isolation_breaks: u64,
    /// Host processes that exited without being killed.
    pub host_crashes: u64,
    /// The read-only fault could be set up here (mount namespaces: root).
    pub readonly_supported: bool,
    /// The drain settled.
    pub settled: bool,
    /// Drain time.
    pub drain: Duration,
    /// The first problems found, for the reader.
    pub details: Vec<String>,
}

impl Report {
    /// True when nothing was lost, duplicated or corrupt and every invariant held.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.corrupt == 0
            && self.seq_collisions == 0
            && self.parity_breaks == 0
            && self.order_breaks == 0
            && self.unclear == 0
            && self.spurious_kills == 0
            && self.hangs_missed == 0
            && self.isolation_breaks == 0
            && self.host_crashes == 0
            && self.poison_answered == 0
            && self.collateral == 0
            && self.handler_hangs_missed == 0
    }

    /// The one summary line.
    pub fn summary_line(&self) -> String {
        let f = |k: &str| self.faults.get(k).copied().unwrap_or(0);
        format!(
            "soak: seed={} seconds={} sessions={} messages={} answered={} failed={} context={} \
             abandoned={} panic_once={} hang_once={} poison_failed={} | faults: \
             kill_container={} kill_host={} kill_writer={} clock_jump={} \
             hang={} disk_full={} (writer={} container={}) readonly={} garbage={} \
             handler_panic={} handler_hang={} poison={} (in_txn={} retried={} hangs_killed={} \
             hang_holding_lock={} redelivered={} handler_hangs_killed={} poison_failures={} \
             idle_stops={} late_batches={}) | lost={} duplicated={} corrupt={} \
             seq_collisions={} parity_breaks={} order_breaks={} unclear_errors={} \
             spurious_kills={} hangs_missed={} isolation_breaks={} host_crashes={} \
             poison_answered={} collateral={} handler_hangs_missed={} drain={:.1}s{}",
            self.seed,
            self.seconds,
            self.sessions,
            self.messages,
            self.answered,
            self.failed,
            self.context,
            self.abandoned,
            self.panic_once,
            self.hang_once,
            self.poison_failed,
            f("kill_container"),
            f("kill_host"),
            f("kill_writer"),
            f("clock_jump"),
            f("hang"),
            f("disk_full_writer") + f("disk_full_container"),
            f("disk_full_writer"),
            f("disk_full_container"),
            if self.readonly_supported {
                f("readonly").to_string()
            } else {
                "n/a".to_string()
            },
            f("garbage"),
            f("handler_panic"),
            f("handler_hang"),
            self.poison,
            self.in_txn,
            self.retried,
            self.hangs_killed,
            f("hang_holding_lock"),
            self.redelivered,
            self.handler_hangs_killed,
            self.poison_failures,
            self.idle_stops,
            self.late_batches,
            self.lost,
            self.duplicated,
            self.corrupt,
            self.seq_collisions,
            self.parity_breaks,
            self.order_breaks,
            self.unclear,
            self.spurious_kills,
            self.hangs_missed,
            self.isolation_breaks,
            self.host_crashes,
            self.poison_answered,
            self.collateral,
            self.handler_hangs_missed,
            self.drain.as_secs_f64(),
            if self.settled { "" } else { " (not settled)" },
        )
    }

    fn problem(&mut self, what: String) {
        if self.details.len() < 40 {
            self.details.push(what);
        }
    }
}

fn open_ro(path: &Path) -> Result<Connection, String> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    c.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    c.execute_batch("PRAGMA mmap_size = 0")
        .map_err(|e| e.to_string())?;
    Ok(c)
}

fn journal(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-journal");
    s.into()
}

/// `PRAGMA integrity_check` and the journal mode of one file; a file with a journal next to
/// it (a writer at work, or a hot journal awaiting its writer) is left for the final check.
pub fn integrity_now(path: &Path) -> Result<(), String> {
    if journal(path).exists() {
        return Ok(());
    }
    integrity(path)
}

fn integrity(path: &Path) -> Result<(), String> {
    let c = open_ro(path)?;
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| format!("integrity_check: {e}"))?;
    if rows != ["ok"] {
        return Err(format!("integrity_check: {}", rows.join("; ")));
    }
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("journal mode is {mode}, not delete"));
    }
    Ok(())
}

fn strings(c: &Connection, sql: &str) -> Result<Vec<String>, String> {
    c.prepare(sql)
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| format!("{sql}: {e}"))
}

fn count(c: &Connection, sql: &str) -> Result<i64, String> {
    c.query_row(sql, [], |r| r.get(0))
        .map_err(|e| format!("{sql}: {e}"))
}

/// Whether every listed session is settled: no pending message that wakes the agent, no
/// claim of a pending message, every reply delivered. (A claim on a message the host has
/// settled stays in outbound.db until the next container starts: after a handler failure on
/// the last try, say, the message is `failed` and nothing wakes a container again.)
pub fn settled(layout: &Layout, sessions: &[usize]) -> bool {
    sessions.iter().all(|i| {
        let dir = layout.session(*i);
        let attempt = || -> Result<bool, String> {
            let inbound = open_ro(&dir.join("inbound.db"))?;
            let outbound = open_ro(&sessionbus_store::SessionPaths::new(&dir).outbound)?;
            let pending = count(
                &inbound,
                "SELECT count(*) FROM messages_in \
                 WHERE coalesce(status, 'pending') = 'pending' AND trigger = 1",
            )?;
            if pending > 0 {
                return Ok(false);
            }
            let still: HashSet<String> = strings(
                &inbound,
                "SELECT id FROM messages_in WHERE coalesce(status, 'pending') = 'pending'",
            )?
            .into_iter()
            .collect();
            let claimed = strings(
                &outbound,
                "SELECT message_id FROM processing_ack WHERE status = 'processing'",
            )?;
            if claimed.iter().any(|id| still.contains(id)) {
                return Ok(false);
            }
            let delivered: HashSet<String> =
                strings(&inbound, "SELECT message_out_id FROM delivered")?
                    .into_iter()
                    .collect();
            let mut out = strings(&outbound, "SELECT id FROM messages_out")?;
            out.extend(strings(&inbound, "SELECT id FROM host_replies")?);
            Ok(out.iter().all(|id| delivered.contains(id)))
        };
        attempt().unwrap_or(false)
    })
}

/// A line of a ledger or event file: the real time and the fields.
fn lines(dir: &Path, prefix: &str) -> Vec<(i64, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for l in text.lines() {
            let mut fields = l.split('\t');
            let Some(ms) = fields.next().and_then(|m| m.parse().ok()) else {
                continue;
            };
            out.push((ms, fields.map(str::to_string).collect()));
        }
    }
    out
}

struct InRow {
    seq: Option<i64>,
    status: String,
    tries: i64,
    trigger: i64,
    special: Option<Special>,
    /// A host reply's mirror (kind `host-reply`), not a message.
    mirror: bool,
}

struct OutRow {
    id: String,
    seq: Option<i64>,
    in_reply_to: Option<String>,
}

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

/// For a message still pending after the drain: a note when context rows newer than it are
/// pending too. The container's poll hands out the newest due rows, up to
/// `maxMessagesPerPrompt`: when those are all context rows the batch wakes nothing, and an
/// older message waits until a newer one that wakes the agent arrives.
fn behind_context(ins: &HashMap<String, InRow>, m: &InRow) -> String {
    let newer = ins
        .values()
        .filter(|o| o.status == "pending" && o.trigger == 0 && !o.mirror && o.seq > m.seq)
        .count();
    if newer == 0 {
        String::new()
    } else {
        format!(
            ", behind {newer} newer pending context row(s): a batch of the newest due rows \
             that holds only context wakes nothing"
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn check_session(
    layout: &Layout,
    cfg: &RunConfig,
    i: usize,
    written: &[(i64, Vec<String>)],
    handed: &HashMap<String, Vec<i64>>,
    broke_at: Option<i64>,
    r: &mut Report,
) {
    let sid = Layout::sid(i);
    let dir = layout.session(i);
    let inbound_path = dir.join("inbound.db");
    let outbound_path = sessionbus_store::SessionPaths::new(&dir).outbound;

    // Roll back what killed writers left, the library's way (its writer open), then check.
    for (path, kind) in [
        (&inbound_path, FileKind::Inbound),
        (&outbound_path, FileKind::Outbound),
    ] {
        if journal(path).exists() {
            if let Err(e) = DbFile::new(path, kind, Role::Host).open_writer("soak: recover") {
                r.problem(format!(
                    "{}: cannot recover the hot journal: {e}",
                    path.display()
                ));
            }
        }
        if let Err(e) = integrity(path) {
            r.corrupt += 1;
            r.problem(format!("{}: {e}", path.display()));
        }
    }

    let read = || -> Result<_, String> {
        let inbound = open_ro(&inbound_path)?;
        let outbound = open_ro(&outbound_path)?;
        let mut ins: HashMap<String, InRow> = HashMap::new();
        let mut st = inbound
            .prepare(
                "SELECT id, seq, coalesce(status, 'pending'), coalesce(tries, 0), trigger, \
                 content, kind = ?1 FROM messages_in",
            )
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([HOST_REPLY_KIND], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    InRow {
                        seq: row.get(1)?,
                        status: row.get(2)?,
                        tries: row.get(3)?,
                        trigger: row.get(4)?,
                        special: row
                            .get::<_, Option<String>>(5)?
                            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
                            .and_then(|v| {
                                v.get("text")
                                    .and_then(|t| t.as_str())
                                    .and_then(Special::of_text)
                            }),
                        mirror: row.get::<_, Option<bool>>(6)?.unwrap_or(false),
                    },
                ))
            })
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (id, row) = row.map_err(|e| e.to_string())?;
            ins.insert(id, row);
        }
        let outs = |c: &Connection, sql: &str| -> Result<Vec<OutRow>, String> {
            c.prepare(sql)
                .and_then(|mut st| {
                    st.query_map([], |row| {
                        Ok(OutRow {
                            id: row.get(0)?,
                            seq: row.get(1)?,
                            in_reply_to: row.get(2)?,
                        })
                    })?
                    .collect::<Result<_, _>>()
                })
                .map_err(|e| format!("{sql}: {e}"))
        };
        let host_replies = outs(&inbound, "SELECT id, seq, in_reply_to FROM host_replies")?;
        let messages_out = outs(&outbound, "SELECT id, seq, in_reply_to FROM messages_out")?;
        let delivered: HashMap<String, String> = inbound
            .prepare("SELECT message_out_id, status FROM delivered")
            .and_then(|mut st| {
                st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| e.to_string())?;
        // Why the handler last failed on each message (the container's notes).
        let notes: HashMap<String, String> = outbound
            .prepare("SELECT message_id, reason FROM failure_notes")
            .and_then(|mut st| {
                st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| e.to_string())?;
        Ok((ins, host_replies, messages_out, delivered, notes))
    };
    let (mut ins, host_replies, messages_out, delivered, notes) = match read() {
        Ok(v) => v,
        Err(e) => {
            r.corrupt += 1;
            r.problem(format!("{sid}: cannot read the files: {e}"));
            return;
        }
    };

    // Host replies' mirrors: each the same id and seq as its reply; then set aside.
    let reply_seqs: HashMap<&str, Option<i64>> = host_replies
        .iter()
        .map(|m| (m.id.as_str(), m.seq))
        .collect();
    ins.retain(|id, m| {
        if !m.mirror {
            return true;
        }
        match reply_seqs.get(id.as_str()) {
            Some(seq) if *seq == m.seq => {}
            Some(seq) => {
                r.seq_collisions += 1;
                r.problem(format!(
                    "{sid}: host reply {id} has seq {seq:?} but its messages_in mirror {:?}",
                    m.seq
                ));
            }
            None => {
                r.duplicated += 1;
                r.problem(format!("{sid}: messages_in mirror {id} of no host reply"));
            }
        }
        false
    });

    // Seqs: unique over both files, parity by side, replies after what they answer.
    let mut seqs: HashMap<i64, usize> = HashMap::new();
    for (id, m) in &ins {
        match m.seq {
            Some(s) if s % 2 == 0 => *seqs.entry(s).or_default() += 1,
            other => {
                r.parity_breaks += 1;
                r.problem(format!("{sid}: messages_in {id} has seq {other:?}"));
                if let Some(s) = other {
                    *seqs.entry(s).or_default() += 1;
                }
            }
        }
    }
    for (table, rows, even) in [
        ("host_replies", &host_replies, true),
        ("messages_out", &messages_out, false),
    ] {
        for m in rows {
            match m.seq {
                Some(s) if (s % 2 == 0) == even => *seqs.entry(s).or_default() += 1,
                other => {
                    r.parity_breaks += 1;
                    r.problem(format!("{sid}: {table} {} has seq {other:?}", m.id));
                    if let Some(s) = other {
                        *seqs.entry(s).or_default() += 1;
                    }
                }
            }
        }
    }
    for (s, n) in &seqs {
        if *n > 1 {
            r.seq_collisions += (*n - 1) as u64;
            r.problem(format!("{sid}: seq {s} used {n} times"));
        }
    }

    // Replies per message.
    let mut replies: HashMap<&str, Vec<&OutRow>> = HashMap::new();
    for m in &messages_out {
        match m.in_reply_to.as_deref() {
            Some(to) => replies.entry(to).or_default().push(m),
            None => {
                r.duplicated += 1;
                r.problem(format!("{sid}: messages_out {} answers nothing", m.id));
            }
        }
        if let (Some(to), Some(seq)) = (m.in_reply_to.as_deref(), m.seq) {
            match ins.get(to) {
                Some(q) if q.seq.is_some_and(|qs| qs < seq) => {}
                Some(q) => {
                    r.order_breaks += 1;
                    r.problem(format!(
                        "{sid}: reply {} (seq {seq}) sorts before {to} (seq {:?})",
                        m.id, q.seq
                    ));
                }
                None => {
                    r.duplicated += 1;
                    r.problem(format!(
                        "{sid}: reply {} answers unknown message {to}",
                        m.id
                    ));
                }
            }
        }
    }
    let mut denials: HashMap<&str, usize> = HashMap::new();
    for m in &host_replies {
        if let Some(to) = m.in_reply_to.as_deref() {
            *denials.entry(to).or_default() += 1;
        }
    }

    // Every reply delivered, once.
    for m in messages_out.iter().chain(host_replies.iter()) {
        let attempts = handed.get(&m.id).map_or(&[][..], Vec::as_slice);
        match delivered.get(&m.id).map(String::as_str) {
            None => {
                r.lost += 1;
                r.problem(format!("{sid}: reply {} was never delivered", m.id));
            }
            Some("delivered") if attempts.is_empty() => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: reply {} is recorded delivered but was never handed over",
                    m.id
                ));
            }
            Some("delivered") => {}
            Some(other) => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: reply {} recorded {other} after {} attempts",
                    m.id,
                    attempts.len()
                ));
            }
        }
        let firsts = attempts.iter().filter(|a| **a == 1).count();
        if firsts > 1 {
            r.duplicated += 1;
            r.problem(format!(
                "{sid}: reply {} handed over {firsts} times as a first attempt",
                m.id
            ));
        }
        r.redelivered += attempts.len().saturating_sub(1) as u64;
    }

    // Every message: answered exactly once, or failed after the last try.
    let mut answered_ids: HashSet<&str> = HashSet::new();
    for (id, m) in &ins {
        r.messages += 1;
        let n = replies.get(id.as_str()).map_or(0, Vec::len);
        if m.trigger == 0 {
            r.context += 1;
            if n > 0 {
                r.duplicated += 1;
                r.problem(format!("{sid}: context row {id} got {n} replies"));
            }
            continue;
        }
        match m.special {
            Some(Special::PanicOnce) => r.panic_once += 1,
            Some(Special::HangOnce) => r.hang_once += 1,
            Some(Special::Poison) => r.poison += 1,
            None => {}
        }
        if m.special == Some(Special::Poison) {
            match (m.status.as_str(), n) {
                ("failed", 0) if m.tries >= cfg.max_tries => {
                    r.failed += 1;
                    r.poison_failed += 1;
                }
                ("failed", 0) => {
                    r.lost += 1;
                    r.problem(format!(
                        "{sid}: poison message {id} failed after only {} tries",
                        m.tries
                    ));
                }
                (status, 0) => {
                    r.lost += 1;
                    r.problem(format!(
                        "{sid}: poison message {id} is still {status} (tries {}) after the \
                         drain{}",
                        m.tries,
                        behind_context(&ins, m)
                    ));
                }
                (status, n) => {
                    r.poison_answered += 1;
                    r.problem(format!(
                        "{sid}: poison message {id} got {n} replies (status {status})"
                    ));
                }
            }
            continue;
        }
        match (m.status.as_str(), n) {
            ("completed", 1) => {
                r.answered += 1;
                answered_ids.insert(id);
            }
            ("failed", _)
                if notes
                    .get(id)
                    .is_some_and(|why| why.contains("poison message")) =>
            {
                r.collateral += 1;
                r.problem(format!(
                    "{sid}: {id} ended failed after sharing a batch with a poison message: {}",
                    notes.get(id).map_or("", String::as_str)
                ));
            }
            ("failed", _) if m.special.is_some() => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: {} message {id} ended failed (tries {}); the handler fails on it \
                     only once",
                    m.special.map_or("?", Special::name),
                    m.tries
                ));
            }
            ("completed", 0) => {
                r.lost += 1;
                r.problem(format!("{sid}: {id} completed without a reply"));
            }
            ("failed", 0 | 1) if m.tries >= cfg.max_tries => r.failed += 1,
            ("failed", 0 | 1) => {
                r.lost += 1;
                r.problem(format!("{sid}: {id} failed after only {} tries", m.tries));
            }
            (_, n) if n > 1 => {
                r.duplicated += 1;
                r.problem(format!("{sid}: {id} answered {n} times"));
            }
            (status, _) => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: {id} is still {status} (tries {}) after the drain{}",
                    m.tries,
                    behind_context(&ins, m)
                ));
            }
        }
    }
    for (to, n) in &denials {
        r.messages += 1;
        if ins.contains_key(*to) {
            r.duplicated += 1;
            r.problem(format!("{sid}: {to} was both written and denied"));
        } else if *n == 1 {
            r.answered += 1;
            answered_ids.insert(to);
        } else {
            r.duplicated += 1;
            r.problem(format!("{sid}: denied command {to} answered {n} times"));
        }
    }

    // The ledger: what a writer saw committed is in the file, with the seq it was given.
    let mut after_break = (0u64, 0u64);
    for (ms, f) in written.iter().filter(|(_, f)| f.first() == Some(&sid)) {
        let (Some(id), Some(kind)) = (f.get(1), f.get(2)) else {
            continue;
        };
        let seq: Option<i64> = f.get(3).and_then(|s| s.parse().ok());
        match kind.as_str() {
            "denied" => {
                if !denials.contains_key(id.as_str()) {
                    r.lost += 1;
                    r.messages += 1;
                    r.problem(format!("{sid}: denied {id} has no host reply"));
                }
            }
            "filtered" => {
                if ins.contains_key(id) || replies.contains_key(id.as_str()) {
                    r.duplicated += 1;
                    r.problem(format!("{sid}: filtered {id} reached the files"));
                }
                continue;
            }
            _ => match ins.get(id) {
                None => {
                    r.lost += 1;
                    r.messages += 1;
                    r.problem(format!(
                        "{sid}: {id} was committed but is not in messages_in"
                    ));
                }
                Some(m) if m.seq != seq => {
                    r.seq_collisions += 1;
                    r.problem(format!(
                        "{sid}: {id} was written as seq {seq:?} but the file says {:?}",
                        m.seq
                    ));
                }
                Some(_) => {}
            },
        }
        if broke_at.is_some_and(|b| *ms > b) && kind != "context" {
            after_break.0 += 1;
            after_break.1 += u64::from(answered_ids.contains(id.as_str()));
        }
    }
    if after_break.0 > 0 && after_break.1 == 0 {
        r.isolation_breaks += 1;
        r.problem(format!(
            "{sid}: none of the {} messages written after the broken session broke was answered",
            after_break.0
        ));
    }
}
