//! `sessionbus inspect SESSION_DIR [--json]`: what a session folder holds right now, for an
//! operator looking at a stuck or odd conversation.
//!
//! It reports the layout, the schema of each file, `messages_in` by status, the due and the
//! scheduled messages with their ages, the claims, the outbound rows not yet delivered, the
//! tool in flight, the heartbeat's age, and the stuck decision the host's sweep would take
//! now ([`crate::liveness::decide`] on what was read).
//!
//! **Read-only**: nothing is written, created or converted. inbound.db in the host's own
//! folder is opened with the schema crate's read-only connections (a WAL-mode file as an
//! immutable snapshot, so no `-wal`/`-shm` appears); outbound.db, its journal, `.heartbeat`,
//! and in the single layout every name of the folder, are reached only through
//! [`sessionbus_schema::untrusted`] (see [`crate::operator::look`]): a FIFO or a link there
//! is reported within milliseconds, a hot journal is reported and never rolled back.
//!
//! **Bounded**: every list holds at most [`MAX_ROWS`] rows, counts are `count(*)`, values are
//! cut in SQL, and counting undelivered rows looks at no more than [`MAX_SCANNED_ROWS`] rows.
//!
//! [`inspect`] does the work and returns an [`InspectReport`]; [`main`] prints it.

mod read;
mod render;

pub use read::{MAX_ROWS, MAX_SCANNED_ROWS, PREVIEW_CHARS};
pub use render::render;

use crate::liveness::{self, StuckDecision, ToolInFlight};
use crate::operator::look::{look_at_inbound, look_at_outbound, FileLook};
use crate::operator::running::{look_at_heartbeat, HeartbeatLook};
use crate::operator::{print_stderr, print_stdout, EXIT_FATAL};
use clap::Args;
use serde::Serialize;
use sessionbus_schema::{Clock, SystemClock, Timestamp};
use sessionbus_store::{Layout, SessionPaths};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status when the report lists at least one problem.
pub const EXIT_PROBLEMS: u8 = 1;

/// Arguments of `sessionbus inspect` (and `cargo xtask inspect`).
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Show what a session folder holds right now: its layout, the schema of \
inbound.db and outbound.db, messages by status, due and scheduled messages with their ages, \
claims, outbound rows not yet delivered, the tool in flight, the heartbeat's age and the stuck \
decision the host's sweep would take now.\n\n\
Read-only: nothing is written, created or converted. The container's files are read through the \
untrusted-file layer only (a FIFO or a link is reported, a hot journal is never rolled back), \
and every list is capped.",
    after_help = "Exit status: 0 when no problem was found, 1 when the report lists problems \
(hot journal, WAL, missing or unmigrated file, FIFO or link, ...), 2 when the folder cannot be \
inspected."
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
    /// The path is not a folder (or is a link to one, which is not followed).
    #[error("{0} is not a folder (pass the session folder holding inbound.db)")]
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

/// Everything `sessionbus inspect` found.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// The session folder.
    pub session: PathBuf,
    /// Its layout as the host treats it.
    pub layout: Layout,
    /// The instant ages are measured from (ISO format).
    pub now: String,
    /// inbound.db, then outbound.db.
    pub files: Vec<FileLook>,
    /// What inbound.db holds, when it could be read.
    pub inbound: Option<InboundReport>,
    /// What outbound.db holds, when it could be read.
    pub outbound: Option<OutboundReport>,
    /// Outbound rows (agent replies and host replies) not yet delivered, oldest seq first
    /// (at most [`MAX_ROWS`]); `None` when either file could not be read.
    pub undelivered: Option<Vec<UndeliveredRow>>,
    /// How many rows are undelivered.
    pub undelivered_count: Option<usize>,
    /// False when the count stopped at [`MAX_SCANNED_ROWS`] rows (there may be more).
    pub undelivered_count_complete: bool,
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

/// What inbound.db holds.
#[derive(Debug, Clone, Serialize)]
pub struct InboundReport {
    /// `messages_in` rows by status (a NULL status counts as `pending`; at most [`MAX_ROWS`]
    /// statuses).
    pub by_status: BTreeMap<String, i64>,
    /// Pending rows that wake the agent and are due now (at most [`MAX_ROWS`], by seq).
    pub due: Vec<MessageRow>,
    /// How many rows are due now.
    pub due_count: i64,
    /// Pending rows not due yet: a scheduled task or a retry (at most [`MAX_ROWS`]).
    pub scheduled: Vec<MessageRow>,
    /// How many rows are scheduled for later.
    pub scheduled_count: i64,
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
    /// `processing_ack` rows by status (at most [`MAX_ROWS`] statuses).
    pub acks: BTreeMap<String, i64>,
    /// `processing` acks, oldest first: what the container is working on (at most
    /// [`MAX_ROWS`]).
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
    /// Its mtime; `None` when there is none (or it is not a regular file).
    pub mtime: Option<String>,
    /// Milliseconds since; `None` when there is none.
    pub age_ms: Option<i64>,
}

/// The sweep's stuck decision now.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionReport {
    /// `healthy` (leave a running container alone) or `kill`.
    pub decision: &'static str,
    /// Why it would kill.
    pub reason: Option<String>,
    /// `decide` (the sweep's rule on what was read).
    pub from: &'static str,
    /// The claims of pending messages the sweep would retry once no container runs.
    pub would_retry: Vec<String>,
}

/// `sessionbus inspect`: prints the report and returns the exit code.
pub fn main(args: &InspectArgs) -> ExitCode {
    let now = SystemClock.now();
    let result = std::panic::catch_unwind(|| inspect(&args.session, now));
    let report = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            print_stderr(&format!("inspect: {e}"));
            return ExitCode::from(EXIT_FATAL);
        }
        Err(payload) => {
            print_stderr(&format!(
                "inspect: internal error (a panic): {}",
                crate::operator::panic_text(&*payload)
            ));
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let printed = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => print_stdout(&s),
            Err(e) => {
                print_stderr(&format!("inspect: cannot write the JSON report: {e}"));
                return ExitCode::from(EXIT_FATAL);
            }
        }
    } else {
        print_stdout(render(&report).trim_end())
    };
    if !printed {
        return ExitCode::from(EXIT_FATAL);
    }
    if report.has_problems() {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}

/// Inspects the session folder `dir`, measuring ages from `now`. Writes nothing.
pub fn inspect(dir: &Path, now: Timestamp) -> Result<InspectReport, InspectError> {
    match std::fs::symlink_metadata(dir) {
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
    let paths = SessionPaths::for_host(dir);
    if paths.layout == Layout::Single {
        problems.push(format!(
            "the folder is in the single layout: the container can write the folder that holds \
             inbound.db. Convert it with `sessionbus migrate --session {}` while its container \
             is stopped",
            dir.display()
        ));
    }
    let (in_file, mut in_reader) = look_at_inbound(&paths, &mut problems);
    problems.extend(in_file.schema_note.clone());
    let (out_file, mut out_reader) = look_at_outbound(&paths, &mut problems);
    problems.extend(out_file.schema_note.clone());

    let inbound = in_reader.as_mut().and_then(|r| {
        read::read_inbound(&mut r.conn, now)
            .map_err(|e| problems.push(format!("inbound.db: cannot read: {e}")))
            .ok()
    });
    let mut outbound = out_reader.as_mut().and_then(|r| {
        read::read_outbound(&mut r.conn, now)
            .map_err(|e| problems.push(format!("outbound.db: cannot read: {e}")))
            .ok()
    });
    if let (Some(out), Some(r)) = (outbound.as_mut(), in_reader.as_mut()) {
        let ids: Vec<String> = out.claims.iter().map(|c| c.message_id.clone()).collect();
        match read::statuses_of(&mut r.conn, &ids) {
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
    let mut undelivered_count_complete = true;
    let (undelivered, undelivered_count) = match (in_reader.as_mut(), out_reader.as_mut()) {
        (Some(i), Some(o)) => match read::read_undelivered(&mut i.conn, &mut o.conn, now) {
            Ok((rows, n, complete)) => {
                undelivered_count_complete = complete;
                (Some(rows), Some(n))
            }
            Err(e) => {
                problems.push(format!("cannot list undelivered rows: {e}"));
                (None, None)
            }
        },
        _ => (None, None),
    };
    drop(in_reader);
    drop(out_reader);

    let (mtime, heartbeat) = heartbeat_report(&paths, now, &mut problems);
    let stuck_decision = outbound.as_ref().map(|out| decision(out, now, mtime));
    Ok(InspectReport {
        session: dir.to_path_buf(),
        layout: paths.layout,
        now: now.to_iso(),
        files: vec![in_file, out_file],
        inbound,
        outbound,
        undelivered,
        undelivered_count,
        undelivered_count_complete,
        heartbeat,
        stuck_decision,
        problems,
    })
}

fn heartbeat_report(
    paths: &SessionPaths,
    now: Timestamp,
    problems: &mut Vec<String>,
) -> (Option<Timestamp>, HeartbeatReport) {
    let mtime = match look_at_heartbeat(paths) {
        HeartbeatLook::Missing => None,
        HeartbeatLook::Touched { mtime_ms } => Timestamp::from_unix_millis(mtime_ms),
        HeartbeatLook::Unusable(detail) => {
            problems.push(format!("heartbeat: {detail}"));
            None
        }
    };
    let report = HeartbeatReport {
        path: paths.heartbeat.clone(),
        mtime: mtime.map(Timestamp::to_iso),
        age_ms: mtime.map(|m| now.millis_since(m)),
    };
    (mtime, report)
}

/// The sweep's own pure rule on what was read.
fn decision(out: &OutboundReport, now: Timestamp, mtime: Option<Timestamp>) -> DecisionReport {
    let pending = |c: &&ClaimRow| c.status.as_deref().is_none_or(|s| s == "pending");
    let would_retry: Vec<String> = out
        .claims
        .iter()
        .filter(pending)
        .map(|c| c.message_id.clone())
        .collect();
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
        .filter(pending)
        .map(|c| liveness::Claim {
            message_id: c.message_id.clone(),
            claimed_at: Timestamp::parse(&c.claimed_at).unwrap_or(Timestamp::EPOCH),
        })
        .collect();
    let (decision, reason) = match liveness::decide(now, mtime, tool.as_ref(), &claims) {
        StuckDecision::Healthy => ("healthy", None),
        StuckDecision::Kill { reason } => ("kill", Some(reason.to_string())),
    };
    DecisionReport {
        decision,
        reason,
        from: "decide",
        would_retry,
    }
}
