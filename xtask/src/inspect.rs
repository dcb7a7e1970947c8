//! `cargo xtask inspect SESSION_DIR [--json]`: what a session folder holds right now, for an
//! operator looking at a stuck or odd conversation.
//!
//! It reports the schema of each file, `messages_in` by status, the due and the claimed
//! messages with their ages, the outbound rows not yet delivered, the tool in flight, the
//! heartbeat's age, and the stuck decision the host's sweep would take now
//! ([`sessionbus_runtime::host::decide_now`]).
//!
//! **Read-only.** Both files are opened as readers (`mode=ro`, `query_only`), so SQLite
//! itself refuses any write, and nothing is created next to them:
//!
//! - a file whose header says WAL is never opened normally (even a read-only connection to a
//!   WAL file creates `-wal` and `-shm` files); it is reported as a problem and read as an
//!   immutable snapshot of its main file;
//! - a hot journal (a writer died mid-transaction) is reported and left alone: the main file
//!   may hold half a transaction, so nothing is read from it. Its writer rolls it back on its
//!   next open (for outbound.db, the host's sweep once the container is stopped);
//! - a file that is missing, legacy or not migrated is reported with the command that fixes
//!   it, never migrated here.
//!
//! [`inspect`] does the work and returns an [`InspectReport`]; [`main`] prints it.

use clap::Args;
use diesel::prelude::*;
use serde::Serialize;
use sessionbus_runtime::heartbeat;
use sessionbus_runtime::liveness::{self, StuckDecision, ToolInFlight};
use sessionbus_schema::conn::{sniff_header, FileHeader};
use sessionbus_schema::error::hot_journal;
use sessionbus_schema::inbound::{delivered, delivery_attempts, host_replies, messages_in};
use sessionbus_schema::migrate::{self, FileState};
use sessionbus_schema::outbound::{container_state, messages_out, processing_ack};
use sessionbus_schema::{Clock, DbError, DbFile, FileKind, Role, SystemClock, Timestamp};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status when the report lists at least one problem.
pub const EXIT_PROBLEMS: u8 = 1;

/// Exit status when the folder cannot be inspected at all.
pub const EXIT_FATAL: u8 = 2;

/// How many rows of each list the report shows (the counts are always complete).
pub const MAX_ROWS: usize = 20;

/// How often a hot journal is looked at again before it is reported (a live writer's journal
/// can look hot for a moment across a mount).
const HOT_JOURNAL_RETRIES: u32 = 5;

/// Arguments of `cargo xtask inspect`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Show what a session folder holds right now: the schema of inbound.db and \
outbound.db, messages by status, due and claimed messages with their ages, outbound rows not yet \
delivered, the tool in flight, the heartbeat's age and the stuck decision the host's sweep would \
take now.\n\n\
Read-only: both files are opened as readers and nothing is written or created. A WAL-mode file \
or a hot journal is reported as a problem, not fixed.",
    after_help = "Exit status: 0 when no problem was found, 1 when the report lists problems \
(hot journal, WAL, missing or unmigrated file, ...), 2 when the folder cannot be inspected."
)]
pub struct InspectArgs {
    /// The session folder (`DATA_DIR/v2-sessions/<agent_group_id>/<session_id>`)
    #[arg(value_name = "SESSION_DIR")]
    pub session: PathBuf,

    /// Print a machine-readable JSON report on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

/// Why the folder could not be inspected at all.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The folder does not exist.
    #[error("session folder {0} does not exist")]
    NotFound(PathBuf),
    /// The path is not a folder.
    #[error("{0} is not a folder (pass the session folder holding inbound.db and outbound.db)")]
    NotADirectory(PathBuf),
    /// The folder cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything `cargo xtask inspect` found.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// The session folder.
    pub session: PathBuf,
    /// The instant ages are measured from (ISO format).
    pub now: String,
    /// inbound.db, then outbound.db.
    pub files: Vec<FileReport>,
    /// What inbound.db holds, when it could be read.
    pub inbound: Option<InboundReport>,
    /// What outbound.db holds, when it could be read.
    pub outbound: Option<OutboundReport>,
    /// Outbound rows (agent replies and host replies) not yet delivered, oldest seq first;
    /// `None` when either file could not be read.
    pub undelivered: Option<Vec<UndeliveredRow>>,
    /// How many rows are undelivered (the list shows at most [`MAX_ROWS`]).
    pub undelivered_count: Option<usize>,
    /// The heartbeat file.
    pub heartbeat: HeartbeatReport,
    /// The stuck decision the sweep would take now, when outbound.db could be read.
    pub stuck_decision: Option<DecisionReport>,
    /// Everything that needs an operator's attention, in words.
    pub problems: Vec<String>,
}

impl InspectReport {
    /// True when the report lists at least one problem.
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// One of the two files.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Which file.
    pub kind: FileKind,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes; `None` when it does not exist.
    pub size: Option<u64>,
    /// Its schema, when it could be read.
    pub schema: Option<SchemaReport>,
    /// The header says WAL journal mode.
    pub wal_mode: bool,
    /// A `-journal` file next to it (hot when its writer died).
    pub journal: Option<PathBuf>,
    /// A `-wal` or `-shm` file next to it.
    pub wal_files: Vec<PathBuf>,
    /// How its content was read: `file` (a normal read-only connection), `snapshot` (an
    /// immutable snapshot of the main file, for a WAL-mode file) or `nothing`.
    pub read: &'static str,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
}

/// A file's schema.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaReport {
    /// `current`, `older` (migrations pending), `legacy` (never migrated) or `empty`.
    pub state: &'static str,
    /// The newest migration recorded in the file.
    pub version: Option<String>,
    /// How many migrations the file records.
    pub applied: usize,
    /// Migrations this build knows that the file lacks.
    pub pending: Vec<String>,
    /// The legacy generation (G0..G8) of a never-migrated file.
    pub legacy_generation: Option<String>,
}

/// What inbound.db holds.
#[derive(Debug, Clone, Serialize)]
pub struct InboundReport {
    /// `messages_in` rows by status (a NULL status counts as `pending`).
    pub by_status: BTreeMap<String, i64>,
    /// Pending rows that wake the agent and are due now (at most [`MAX_ROWS`], oldest first).
    pub due: Vec<MessageRow>,
    /// How many rows are due now.
    pub due_count: usize,
    /// Pending rows not due yet: a scheduled task or a retry after a container died.
    pub scheduled: Vec<MessageRow>,
    /// How many rows are scheduled for later.
    pub scheduled_count: usize,
    /// `host_replies` rows (the host's own replies, e.g. command denials).
    pub host_replies: i64,
    /// `delivered` rows (outbound rows the host has settled).
    pub delivered: i64,
}

/// A `messages_in` row.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    /// Its id.
    pub id: String,
    /// Its seq.
    pub seq: Option<i64>,
    /// Its kind.
    pub kind: String,
    /// Retries so far.
    pub tries: i64,
    /// Milliseconds since it was written.
    pub age_ms: Option<i64>,
    /// Not due before this.
    pub process_after: Option<String>,
    /// Milliseconds until it is due (negative: overdue).
    pub due_in_ms: Option<i64>,
    /// The start of its text.
    pub text: String,
}

/// What outbound.db holds.
#[derive(Debug, Clone, Serialize)]
pub struct OutboundReport {
    /// `messages_out` rows.
    pub messages_out: i64,
    /// `processing_ack` rows by status.
    pub acks: BTreeMap<String, i64>,
    /// `processing` acks: what the container is working on (at most [`MAX_ROWS`]).
    pub claims: Vec<ClaimRow>,
    /// How many claims there are.
    pub claim_count: usize,
    /// The tool in flight.
    pub tool: Option<ToolRow>,
}

/// A `processing` ack.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimRow {
    /// The claimed message.
    pub message_id: String,
    /// Its seq in inbound.db, when found there.
    pub seq: Option<i64>,
    /// Its status in inbound.db, when found there.
    pub status: Option<String>,
    /// When it was claimed, as stored.
    pub claimed_at: String,
    /// Milliseconds since.
    pub age_ms: Option<i64>,
}

/// The tool in flight (`container_state`).
#[derive(Debug, Clone, Serialize)]
pub struct ToolRow {
    /// The tool.
    pub name: String,
    /// Its declared timeout.
    pub declared_timeout_ms: Option<i64>,
    /// When it started, as stored.
    pub started_at: Option<String>,
    /// Milliseconds since.
    pub running_ms: Option<i64>,
}

/// An outbound row not yet delivered.
#[derive(Debug, Clone, Serialize)]
pub struct UndeliveredRow {
    /// `container` (messages_out) or `host` (host_replies).
    pub source: &'static str,
    /// Its id.
    pub id: String,
    /// Its seq.
    pub seq: Option<i64>,
    /// The message it answers.
    pub in_reply_to: Option<String>,
    /// Milliseconds since it was written.
    pub age_ms: Option<i64>,
    /// Not delivered before this.
    pub deliver_after: Option<String>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// The start of its text.
    pub text: String,
}

/// The heartbeat file.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatReport {
    /// Its path.
    pub path: PathBuf,
    /// Its mtime; `None` when there is none yet.
    pub mtime: Option<String>,
    /// Milliseconds since; `None` when there is none yet.
    pub age_ms: Option<i64>,
}

/// The sweep's stuck decision now.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionReport {
    /// `healthy` (leave a running container alone) or `kill`.
    pub decision: &'static str,
    /// Why it would kill.
    pub reason: Option<String>,
    /// `decide_now` (the sweep's own function) or `snapshot` (a WAL file's main file).
    pub from: &'static str,
    /// The claims of pending messages the sweep would retry once no container runs.
    pub would_retry: Vec<String>,
}

/// `cargo xtask inspect`: prints the report and returns the exit code.
pub fn main(args: &InspectArgs) -> ExitCode {
    let report = match inspect(&args.session, SystemClock.now()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inspect: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("inspect: cannot write the JSON report: {e}");
                return ExitCode::from(EXIT_FATAL);
            }
        }
    } else {
        print!("{}", render(&report));
    }
    if report.has_problems() {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}

/// An open read-only connection and how it was opened.
struct Reader {
    conn: SqliteConnection,
    snapshot: bool,
}

/// Inspects the session folder `dir`, measuring ages from `now`. Writes nothing.
pub fn inspect(dir: &Path, now: Timestamp) -> Result<InspectReport, InspectError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(InspectError::NotADirectory(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(InspectError::NotFound(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(InspectError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let mut problems = Vec::new();
    let paths = sessionbus_store::SessionPaths::for_host(dir);
    let (in_file, mut in_reader) = open_file(dir, &paths.inbound, FileKind::Inbound, &mut problems);
    let (out_file, mut out_reader) =
        open_file(dir, &paths.outbound, FileKind::Outbound, &mut problems);

    let inbound = in_reader.as_mut().and_then(|r| {
        read_inbound(&mut r.conn, now)
            .map_err(|e| problems.push(format!("inbound.db: cannot read: {e}")))
            .ok()
    });
    let mut outbound = out_reader.as_mut().and_then(|r| {
        read_outbound(&mut r.conn, now)
            .map_err(|e| problems.push(format!("outbound.db: cannot read: {e}")))
            .ok()
    });

    // Claims: their seq and status in inbound.db.
    if let (Some(out), Some(r)) = (outbound.as_mut(), in_reader.as_mut()) {
        let ids: Vec<String> = out.claims.iter().map(|c| c.message_id.clone()).collect();
        match statuses_of(&mut r.conn, &ids) {
            Ok(found) => {
                for c in &mut out.claims {
                    if let Some((seq, status)) = found.get(&c.message_id) {
                        c.seq = *seq;
                        c.status = Some(status.clone());
                    }
                }
            }
            Err(e) => problems.push(format!("inbound.db: cannot look up claimed messages: {e}")),
        }
    }

    let undelivered = match (in_reader.as_mut(), out_reader.as_mut()) {
        (Some(i), Some(o)) => match read_undelivered(&mut i.conn, &mut o.conn, now) {
            Ok(rows) => Some(rows),
            Err(e) => {
                problems.push(format!("cannot list undelivered rows: {e}"));
                None
            }
        },
        _ => None,
    };
    let undelivered_count = undelivered.as_ref().map(Vec::len);
    let undelivered = undelivered.map(|mut v| {
        v.truncate(MAX_ROWS);
        v
    });

    let hb_path = paths.heartbeat.clone();
    let mtime = match heartbeat::mtime(&hb_path) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("heartbeat: {e}"));
            None
        }
    };
    let heartbeat_report = HeartbeatReport {
        path: hb_path,
        mtime: mtime.map(Timestamp::to_iso),
        age_ms: mtime.map(|m| now.millis_since(m)),
    };

    // Close both files before the sweep's own reader opens outbound.db.
    let out_snapshot = out_reader.as_ref().map(|r| r.snapshot);
    drop(in_reader);
    drop(out_reader);
    let would_retry: Vec<String> = outbound
        .as_ref()
        .map(|o| {
            o.claims
                .iter()
                .filter(|c| c.status.as_deref().is_none_or(|s| s == "pending"))
                .map(|c| c.message_id.clone())
                .collect()
        })
        .unwrap_or_default();
    // The sweep's own pure rule on what was read (decide_now would open inbound.db as its
    // writer, and inspect writes nothing).
    let stuck_decision = outbound.as_ref().map(|out| {
        let tool = out.tool.as_ref().map(|t| ToolInFlight {
            name: t.name.clone(),
            declared_timeout_ms: t.declared_timeout_ms,
            started_at: t
                .started_at
                .as_deref()
                .and_then(|s| Timestamp::parse(s).ok()),
        });
        let claims: Vec<liveness::Claim> = out
            .claims
            .iter()
            .filter(|c| c.status.as_deref().is_none_or(|s| s == "pending"))
            .map(|c| liveness::Claim {
                message_id: c.message_id.clone(),
                claimed_at: Timestamp::parse(&c.claimed_at).unwrap_or(Timestamp::EPOCH),
            })
            .collect();
        let d = liveness::decide(now, mtime, tool.as_ref(), &claims);
        let how = if out_snapshot == Some(true) {
            "snapshot"
        } else {
            "decide"
        };
        decision_report(&d, how, would_retry)
    });

    Ok(InspectReport {
        session: dir.to_path_buf(),
        now: now.to_iso(),
        files: vec![in_file, out_file],
        inbound,
        outbound,
        undelivered,
        undelivered_count,
        heartbeat: heartbeat_report,
        stuck_decision,
        problems,
    })
}

fn decision_report(
    d: &StuckDecision,
    from: &'static str,
    would_retry: Vec<String>,
) -> DecisionReport {
    match d {
        StuckDecision::Healthy => DecisionReport {
            decision: "healthy",
            reason: None,
            from,
            would_retry,
        },
        StuckDecision::Kill { reason } => DecisionReport {
            decision: "kill",
            reason: Some(reason.to_string()),
            from,
            would_retry,
        },
    }
}

fn migrate_hint(dir: &Path) -> String {
    format!("cargo xtask migrate --session {}", dir.display())
}

/// Looks at one file without writing: its size, journal and WAL files, header and schema.
/// Returns a reader when its content can be read.
fn open_file(
    dir: &Path,
    path: &Path,
    kind: FileKind,
    problems: &mut Vec<String>,
) -> (FileReport, Option<Reader>) {
    let path = path.to_path_buf();
    let name = kind.file_name();
    let side = match kind {
        FileKind::Inbound => "the host",
        FileKind::Outbound => "the container",
    };
    let mut report = FileReport {
        kind,
        path: path.clone(),
        size: None,
        schema: None,
        wal_mode: false,
        journal: hot_journal(&path),
        wal_files: ["-wal", "-shm"]
            .iter()
            .map(|s| {
                let mut p = path.clone().into_os_string();
                p.push(s);
                PathBuf::from(p)
            })
            .filter(|p| p.exists())
            .collect(),
        read: "nothing",
        error: None,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            fail(
                &mut report,
                problems,
                format!("{name} is a symbolic link; the library refuses to open it"),
            );
            return (report, None);
        }
        Ok(m) => report.size = Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fail(
                &mut report,
                problems,
                format!(
                    "{name} is missing: the host provisions both files before a container starts"
                ),
            );
            return (report, None);
        }
        Err(e) => {
            fail(&mut report, problems, format!("{name}: {e}"));
            return (report, None);
        }
    }
    if !report.wal_files.is_empty() {
        let names: Vec<String> = report
            .wal_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        problems.push(format!(
            "{name}: {} next to it: WAL files do not work across the container mount; its \
             writer switches the file back to journal_mode=DELETE on its next open",
            names.join(" and ")
        ));
    }
    let header = match sniff_header(&path) {
        Ok(h) => h,
        Err(e) => {
            fail(
                &mut report,
                problems,
                format!("{name}: cannot read its header: {e}"),
            );
            return (report, None);
        }
    };
    let file = DbFile::new(&path, kind, Role::Operator);
    const OP: &str = "inspect";
    let mut conn = match header {
        FileHeader::NotSqlite => {
            fail(
                &mut report,
                problems,
                format!("{name} is not an SQLite database"),
            );
            return (report, None);
        }
        FileHeader::Empty => {
            fail(
                &mut report,
                problems,
                format!("{name} is empty: provision the session (the host creates both files)"),
            );
            return (report, None);
        }
        FileHeader::Sqlite { wal: true } => {
            report.wal_mode = true;
            problems.push(format!(
                "{name} is in WAL journal mode, which does not work across the container mount \
                 (the other side reads a stale snapshot). Its writer ({side}) switches it back to \
                 DELETE on its next open, or run `{}`. Shown here: the main file only, as an \
                 immutable snapshot; anything still in a -wal file is not shown.",
                migrate_hint(dir)
            ));
            match file.open_snapshot(OP) {
                Ok(c) => {
                    report.read = "snapshot";
                    c
                }
                Err(e) => {
                    report.error = Some(e.to_string());
                    return (report, None);
                }
            }
        }
        FileHeader::Sqlite { wal: false } => {
            let mut attempt = 0;
            loop {
                match file.open_reader(OP) {
                    Ok(c) => {
                        report.read = "file";
                        break c;
                    }
                    Err(DbError::HotJournal { journal, .. }) => {
                        attempt += 1;
                        if attempt < HOT_JOURNAL_RETRIES {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        let fixer = match kind {
                            FileKind::Inbound => {
                                "the host rolls it back on its next write".to_string()
                            }
                            FileKind::Outbound => {
                                "the host's sweep rolls it back once the container is stopped, \
                                 or the next container does on start-up"
                                    .to_string()
                            }
                        };
                        fail(
                            &mut report,
                            problems,
                            format!(
                                "{name} has a hot journal ({}): its writer ({side}) died \
                                 mid-transaction. The main file may hold half a transaction, so \
                                 nothing is read from it; {fixer}. inspect leaves it as it is.",
                                journal.display()
                            ),
                        );
                        return (report, None);
                    }
                    Err(e) => {
                        fail(&mut report, problems, format!("{name}: {e}"));
                        return (report, None);
                    }
                }
            }
        }
    };
    match migrate::inspect(&mut conn, &file, OP) {
        Ok(state) => {
            let schema = schema_report(&state, kind);
            let current = schema.state == "current";
            match schema.state {
                "legacy" => problems.push(format!(
                    "{name} is a legacy file ({}) that this library never migrated: run `{}`",
                    schema.legacy_generation.as_deref().unwrap_or("?"),
                    migrate_hint(dir)
                )),
                "older" => problems.push(format!(
                    "{name} lacks {} migration(s) of this build ({}): run `{}`",
                    schema.pending.len(),
                    schema.pending.join(", "),
                    migrate_hint(dir)
                )),
                "empty" => problems.push(format!(
                    "{name} holds no tables: provision the session (the host creates both files)"
                )),
                _ => {}
            }
            report.schema = Some(schema);
            if current {
                let snapshot = report.read == "snapshot";
                (report, Some(Reader { conn, snapshot }))
            } else {
                (report, None)
            }
        }
        Err(e) => {
            fail(&mut report, problems, format!("{name}: {e}"));
            (report, None)
        }
    }
}

fn fail(report: &mut FileReport, problems: &mut Vec<String>, problem: String) {
    report.error = Some(problem.clone());
    problems.push(problem);
}

fn schema_report(state: &FileState, kind: FileKind) -> SchemaReport {
    match state {
        FileState::Empty => SchemaReport {
            state: "empty",
            version: None,
            applied: 0,
            pending: state.pending(kind),
            legacy_generation: None,
        },
        FileState::Legacy { generation, .. } => SchemaReport {
            state: "legacy",
            version: None,
            applied: 0,
            pending: state.pending(kind),
            legacy_generation: Some(generation.to_string()),
        },
        FileState::Migrated { applied, pending } => SchemaReport {
            state: if pending.is_empty() {
                "current"
            } else {
                "older"
            },
            version: applied.iter().max().cloned(),
            applied: applied.len(),
            pending: pending.clone(),
            legacy_generation: None,
        },
    }
}

fn age(now: Timestamp, text: &str) -> Option<i64> {
    Timestamp::parse(text).ok().map(|t| now.millis_since(t))
}

/// The start of a JSON content's `text` field (or of the raw content).
fn preview(content: &str) -> String {
    let text = serde_json::from_str::<serde_json::Value>(content)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| content.to_owned());
    let mut out: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        out.push('…');
    }
    out
}

type PendingRow = (
    String,
    Option<i64>,
    String,
    String,
    Option<String>,
    Option<i64>,
    i64,
    String,
);

fn read_inbound(c: &mut SqliteConnection, now: Timestamp) -> QueryResult<InboundReport> {
    let counts: Vec<(Option<String>, i64)> = messages_in::table
        .group_by(messages_in::status)
        .select((messages_in::status, diesel::dsl::count_star()))
        .load(c)?;
    let mut by_status: BTreeMap<String, i64> = ["pending", "completed", "failed", "paused"]
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    for (status, n) in counts {
        *by_status
            .entry(status.unwrap_or_else(|| "pending".into()))
            .or_default() += n;
    }
    let pending: Vec<PendingRow> = messages_in::table
        .filter(
            messages_in::status
                .eq("pending")
                .or(messages_in::status.is_null()),
        )
        .order(messages_in::seq.asc())
        .select((
            messages_in::id,
            messages_in::seq,
            messages_in::kind,
            messages_in::timestamp,
            messages_in::process_after,
            messages_in::tries,
            messages_in::trigger,
            messages_in::content,
        ))
        .load(c)?;
    let mut due = Vec::new();
    let mut scheduled = Vec::new();
    for (id, seq, kind, timestamp, process_after, tries, trigger, content) in pending {
        let due_in_ms = process_after
            .as_deref()
            .and_then(|p| age(now, p))
            .map(|a| -a);
        let row = MessageRow {
            id,
            seq,
            kind,
            tries: tries.unwrap_or(0),
            age_ms: age(now, &timestamp),
            process_after,
            due_in_ms,
            text: preview(&content),
        };
        if due_in_ms.is_some_and(|d| d > 0) {
            scheduled.push(row);
        } else if trigger != 0 {
            due.push(row);
        }
    }
    let due_count = due.len();
    let scheduled_count = scheduled.len();
    due.truncate(MAX_ROWS);
    scheduled.truncate(MAX_ROWS);
    Ok(InboundReport {
        by_status,
        due,
        due_count,
        scheduled,
        scheduled_count,
        host_replies: host_replies::table.count().get_result(c)?,
        delivered: delivered::table.count().get_result(c)?,
    })
}

fn read_outbound(c: &mut SqliteConnection, now: Timestamp) -> QueryResult<OutboundReport> {
    let messages_out: i64 = messages_out::table.count().get_result(c)?;
    let acks: BTreeMap<String, i64> = processing_ack::table
        .group_by(processing_ack::status)
        .select((processing_ack::status, diesel::dsl::count_star()))
        .load::<(String, i64)>(c)?
        .into_iter()
        .collect();
    let claims: Vec<ClaimRow> = processing_ack::table
        .filter(processing_ack::status.eq("processing"))
        .order(processing_ack::status_changed.asc())
        .select((processing_ack::message_id, processing_ack::status_changed))
        .load::<(String, String)>(c)?
        .into_iter()
        .map(|(message_id, claimed_at)| ClaimRow {
            age_ms: age(now, &claimed_at),
            message_id,
            seq: None,
            status: None,
            claimed_at,
        })
        .collect();
    let claim_count = claims.len();
    let tool = container_state::table
        .find(1i64)
        .select((
            container_state::current_tool,
            container_state::tool_declared_timeout_ms,
            container_state::tool_started_at,
        ))
        .first::<(Option<String>, Option<i64>, Option<String>)>(c)
        .optional()?
        .and_then(|(name, declared_timeout_ms, started_at)| {
            name.map(|name| ToolRow {
                running_ms: started_at.as_deref().and_then(|s| age(now, s)),
                name,
                declared_timeout_ms,
                started_at,
            })
        });
    let mut claims = claims;
    claims.truncate(MAX_ROWS);
    Ok(OutboundReport {
        messages_out,
        acks,
        claims,
        claim_count,
        tool,
    })
}

/// Seq and status in inbound.db of each of `ids` that is there.
fn statuses_of(
    c: &mut SqliteConnection,
    ids: &[String],
) -> QueryResult<HashMap<String, (Option<i64>, String)>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<(String, Option<i64>, Option<String>)> = messages_in::table
            .filter(messages_in::id.eq_any(chunk))
            .select((messages_in::id, messages_in::seq, messages_in::status))
            .load(c)?;
        for (id, seq, status) in rows {
            out.insert(id, (seq, status.unwrap_or_else(|| "pending".into())));
        }
    }
    Ok(out)
}

type OutRow = (
    String,
    Option<i64>,
    Option<String>,
    String,
    Option<String>,
    String,
);

fn read_undelivered(
    inbound: &mut SqliteConnection,
    outbound: &mut SqliteConnection,
    now: Timestamp,
) -> QueryResult<Vec<UndeliveredRow>> {
    let settled: HashSet<String> = delivered::table
        .select(delivered::message_out_id)
        .load::<String>(inbound)?
        .into_iter()
        .collect();
    let attempts: HashMap<String, (i64, Option<String>)> = delivery_attempts::table
        .select((
            delivery_attempts::message_out_id,
            delivery_attempts::attempts,
            delivery_attempts::last_error,
        ))
        .load::<(String, i64, Option<String>)>(inbound)?
        .into_iter()
        .map(|(id, n, e)| (id, (n, e)))
        .collect();
    let container_rows: Vec<OutRow> = messages_out::table
        .order(messages_out::seq.asc())
        .select((
            messages_out::id,
            messages_out::seq,
            messages_out::in_reply_to,
            messages_out::timestamp,
            messages_out::deliver_after,
            messages_out::content,
        ))
        .load(outbound)?;
    let host_rows: Vec<(String, i64, Option<String>, String, String)> = host_replies::table
        .order(host_replies::seq.asc())
        .select((
            host_replies::id,
            host_replies::seq,
            host_replies::in_reply_to,
            host_replies::timestamp,
            host_replies::content,
        ))
        .load(inbound)?;
    let row = |source,
               id: String,
               seq,
               in_reply_to,
               timestamp: String,
               deliver_after,
               content: String| {
        let (attempts, last_error) = attempts.get(&id).cloned().unwrap_or((0, None));
        UndeliveredRow {
            source,
            seq,
            in_reply_to,
            age_ms: age(now, &timestamp),
            deliver_after,
            attempts,
            last_error,
            text: preview(&content),
            id,
        }
    };
    let mut out: Vec<UndeliveredRow> = container_rows
        .into_iter()
        .filter(|r| !settled.contains(&r.0))
        .map(|(id, seq, to, ts, after, content)| row("container", id, seq, to, ts, after, content))
        .chain(
            host_rows
                .into_iter()
                .filter(|r| !settled.contains(&r.0))
                .map(|(id, seq, to, ts, content)| {
                    row("host", id, Some(seq), to, ts, None, content)
                }),
        )
        .collect();
    out.sort_by_key(|r| r.seq);
    Ok(out)
}

/// A duration in words: `850 ms`, `12 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("{} in the future", human_ms(-ms));
    }
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn ago(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => format!("{} ago", human_ms(ms)),
        Some(ms) => format!("{} in the future (clock skew?)", human_ms(-ms)),
        None => "at an unreadable time".into(),
    }
}

fn seq_text(seq: Option<i64>) -> String {
    seq.map_or_else(|| "seq ?".into(), |s| format!("seq {s}"))
}

/// The report as text, for a person.
pub fn render(r: &InspectReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "session {}", r.session.display());
    let _ = writeln!(o, "inspected at {} (read-only: nothing was written)", r.now);

    let _ = writeln!(o, "\nfiles");
    for f in &r.files {
        let name = f.kind.file_name();
        let size = f
            .size
            .map_or_else(|| "missing".to_string(), |s| format!("{s} bytes"));
        let schema = match &f.schema {
            Some(s) => match s.state {
                "current" => format!(
                    "current schema (version {}, {} migrations)",
                    s.version.as_deref().unwrap_or("?"),
                    s.applied
                ),
                "older" => format!(
                    "OLDER schema (version {}, {} migration(s) pending)",
                    s.version.as_deref().unwrap_or("none"),
                    s.pending.len()
                ),
                "legacy" => format!(
                    "LEGACY {} file, never migrated",
                    s.legacy_generation.as_deref().unwrap_or("?")
                ),
                _ => "EMPTY (no tables)".to_string(),
            },
            None => "schema unknown (not read)".to_string(),
        };
        let mut extra = String::new();
        if f.wal_mode {
            extra.push_str(", WAL MODE (read as a snapshot)");
        }
        if let Some(j) = &f.journal {
            let _ = write!(extra, ", journal {} present", j.display());
        }
        let _ = writeln!(o, "  {name:<12} {schema}, {size}{extra}");
    }

    let _ = writeln!(o, "\ninbound.db (the host writes it)");
    match &r.inbound {
        None => {
            let _ = writeln!(o, "  not read (see problems)");
        }
        Some(i) => {
            let statuses: Vec<String> = i
                .by_status
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "  messages by status: {}", statuses.join(", "));
            let _ = writeln!(
                o,
                "  due now (pending, waking the agent, not scheduled later): {}",
                i.due_count
            );
            for m in &i.due {
                let _ = writeln!(
                    o,
                    "    {:<8} {}  written {}  tries {}  {:?}",
                    seq_text(m.seq),
                    m.id,
                    ago(m.age_ms),
                    m.tries,
                    m.text
                );
            }
            let _ = writeln!(
                o,
                "  scheduled for later (a retry or a task): {}",
                i.scheduled_count
            );
            for m in &i.scheduled {
                let due = m
                    .due_in_ms
                    .map_or_else(|| "?".into(), |d| human_ms(d.max(0)));
                let _ = writeln!(
                    o,
                    "    {:<8} {}  due in {due}  tries {}  {:?}",
                    seq_text(m.seq),
                    m.id,
                    m.tries,
                    m.text
                );
            }
            let _ = writeln!(
                o,
                "  host replies: {}, delivered rows: {}",
                i.host_replies, i.delivered
            );
        }
    }

    let _ = writeln!(o, "\noutbound.db (the container writes it)");
    match &r.outbound {
        None => {
            let _ = writeln!(o, "  not read (see problems)");
        }
        Some(out) => {
            let acks: Vec<String> = out.acks.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                o,
                "  replies written: {}; acks: {}",
                out.messages_out,
                if acks.is_empty() {
                    "none".into()
                } else {
                    acks.join(", ")
                }
            );
            let _ = writeln!(o, "  claimed now (processing acks): {}", out.claim_count);
            for c in &out.claims {
                let status = c.status.as_deref().map_or_else(
                    || "not in inbound.db".to_string(),
                    |s| format!("{s} in inbound.db"),
                );
                let _ = writeln!(
                    o,
                    "    {} ({}, {status}) claimed {}",
                    c.message_id,
                    seq_text(c.seq),
                    ago(c.age_ms)
                );
            }
            match &out.tool {
                None => {
                    let _ = writeln!(o, "  tool in flight: none");
                }
                Some(t) => {
                    let timeout = t.declared_timeout_ms.map_or_else(
                        || "no declared timeout".into(),
                        |ms| format!("declared timeout {}", human_ms(ms)),
                    );
                    let _ = writeln!(
                        o,
                        "  tool in flight: {} ({timeout}), started {}",
                        t.name,
                        ago(t.running_ms)
                    );
                }
            }
        }
    }

    match (&r.undelivered, r.undelivered_count) {
        (Some(rows), Some(n)) => {
            let _ = writeln!(o, "\nundelivered replies: {n}");
            for u in rows {
                let to = u.in_reply_to.as_deref().unwrap_or("-");
                let after = u
                    .deliver_after
                    .as_deref()
                    .map_or_else(String::new, |d| format!("  deliver after {d}"));
                let err = u
                    .last_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!("  last error: {e}"));
                let _ = writeln!(
                    o,
                    "  {:<8} {:<9} {}  in reply to {to}  written {}  attempts {}{after}{err}  {:?}",
                    seq_text(u.seq),
                    u.source,
                    u.id,
                    ago(u.age_ms),
                    u.attempts,
                    u.text
                );
            }
        }
        _ => {
            let _ = writeln!(o, "\nundelivered replies: unknown (both files are needed)");
        }
    }

    let _ = writeln!(
        o,
        "\nheartbeat: {}",
        match (&r.heartbeat.mtime, r.heartbeat.age_ms) {
            (Some(m), age) => format!("touched {} ({m})", ago(age)),
            _ => "none yet (no .heartbeat file: no container has started, or it is just starting)"
                .into(),
        }
    );

    let _ = writeln!(
        o,
        "\nstuck decision now (what the host's sweep does while a container runs)"
    );
    match &r.stuck_decision {
        None => {
            let _ = writeln!(o, "  unknown: outbound.db could not be read (see problems)");
        }
        Some(d) => {
            let source = if d.from == "snapshot" {
                " [from the WAL file's snapshot]"
            } else {
                ""
            };
            match &d.reason {
                None => {
                    let _ = writeln!(o, "  healthy: leave the container running{source}");
                }
                Some(reason) => {
                    let _ = writeln!(o, "  KILL: {reason}{source}");
                }
            }
            if d.would_retry.is_empty() {
                let _ = writeln!(o, "  with no container running: nothing to retry");
            } else {
                let _ = writeln!(
                    o,
                    "  with no container running: the sweep retries the claim(s) of {} and \
                     deletes them",
                    d.would_retry.join(", ")
                );
            }
        }
    }

    if r.problems.is_empty() {
        let _ = writeln!(o, "\nproblems: none");
    } else {
        let _ = writeln!(o, "\nproblems: {}", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(o, "  - {p}");
        }
    }
    o
}
