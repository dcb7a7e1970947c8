//! `sessionbus status [--data-dir DIR] [--json]`: one line per session of a data dir.
//!
//! For each `DATA/v2-sessions/<agent_group_id>/<session_id>/`: its layout, inbound.db's schema
//! state, how many messages are pending and due, the heartbeat's age, whether the container's
//! file (outbound.db) can be read, and the first problem found. Each session costs a bounded
//! amount of work (two opens, a schema survey and `count(*)` queries; the container's file
//! only through the untrusted layer), and a session that is broken, or whose look panics,
//! is one line saying so: the listing goes on. With `--json` each line is one JSON object.

use crate::operator::look::{look_at_inbound, look_at_outbound, Reader};
use crate::operator::running::{look_at_heartbeat, HeartbeatLook, FRESH_HEARTBEAT};
use crate::operator::scan::{scan_data_dir, Found};
use crate::operator::{human_ms, panic_text, print_stderr, print_stdout, EXIT_FATAL};
use clap::Args;
use diesel::sql_types::{BigInt, Text};
use diesel::{QueryableByName, RunQueryDsl};
use serde::Serialize;
use sessionbus_schema::{Clock, SystemClock, Timestamp};
use sessionbus_store::{Layout, SessionPaths};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status when at least one session has a problem.
pub const EXIT_PROBLEMS: u8 = 1;

/// Arguments of `sessionbus status`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "One line per session of a data dir (DIR/v2-sessions/<agent_group_id>/<session_id>/): \
its layout, inbound.db's schema, pending and due messages, the heartbeat's age, whether the \
container's outbound.db can be read, and the first problem. Read-only and bounded per session; \
a broken session is a line like any other.",
    after_help = "Exit status: 0 when no session has a problem, 1 when at least one has, 2 when \
the data dir cannot be scanned."
)]
pub struct StatusArgs {
    /// Data dir holding v2-sessions/<agent_group_id>/<session_id>/
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Print one JSON object per session (one per line) instead of text
    #[arg(long)]
    pub json: bool,
}

/// One session's status.
#[derive(Debug, Clone, Serialize)]
pub struct SessionStatus {
    /// The session folder.
    pub session: PathBuf,
    /// Its layout as the host treats it; `None` for a link that was not followed.
    pub layout: Option<Layout>,
    /// inbound.db's schema state (`current`, `older`, `legacy`, `empty`), `None` when it could
    /// not be read.
    pub inbound: Option<&'static str>,
    /// Pending messages, when inbound.db could be read.
    pub pending: Option<i64>,
    /// Pending messages due now that wake the agent.
    pub due: Option<i64>,
    /// Milliseconds since the heartbeat was touched; `None` when there is none.
    pub heartbeat_age_ms: Option<i64>,
    /// The heartbeat is fresh (its container looks alive).
    pub heartbeat_fresh: bool,
    /// outbound.db could be opened and its schema read (through the untrusted layer).
    pub container_file_readable: bool,
    /// outbound.db's schema state as the file claims it, when read.
    pub outbound: Option<&'static str>,
    /// Problems found, the first ones (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<String>,
}

/// The most problems one status line carries.
pub const MAX_PROBLEMS: usize = 5;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn counts(r: &mut Reader, now: Timestamp) -> diesel::QueryResult<(i64, i64)> {
    let pending: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM messages_in WHERE status = 'pending' OR status IS NULL",
    )
    .get_result(&mut r.conn)?;
    let due: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM messages_in WHERE (status = 'pending' OR status IS NULL) \
         AND trigger != 0 AND kind != 'system' AND (process_after IS NULL \
         OR julianday(process_after) IS NULL OR julianday(process_after) <= julianday(?))",
    )
    .bind::<Text, _>(now.to_iso())
    .get_result(&mut r.conn)?;
    Ok((pending.n, due.n))
}

/// The status of the session folder `dir` at `now`. Reads only; never panics on what the
/// folder holds.
pub fn session_status(dir: &Path, now: Timestamp) -> SessionStatus {
    let paths = SessionPaths::for_host(dir);
    let mut problems = Vec::new();
    if paths.layout == Layout::Single {
        problems.push("single layout: convert it with `sessionbus migrate`".to_string());
    }
    let (inbound, mut in_reader) = look_at_inbound(&paths, &mut problems);
    problems.extend(inbound.schema_note.clone());
    let (pending, due) = match in_reader.as_mut().map(|r| counts(r, now)) {
        Some(Ok((p, d))) => (Some(p), Some(d)),
        Some(Err(e)) => {
            problems.push(format!("inbound.db: cannot count messages: {e}"));
            (None, None)
        }
        None => (None, None),
    };
    drop(in_reader);
    let (outbound, out_reader) = look_at_outbound(&paths, &mut problems);
    problems.extend(outbound.schema_note.clone());
    drop(out_reader);
    let (heartbeat_age_ms, heartbeat_fresh) = match look_at_heartbeat(&paths) {
        HeartbeatLook::Missing => (None, false),
        HeartbeatLook::Touched { mtime_ms } => {
            let age = now.unix_millis().saturating_sub(mtime_ms);
            let fresh = age < 0 || u128::from(age.unsigned_abs()) < FRESH_HEARTBEAT.as_millis();
            (Some(age), fresh)
        }
        HeartbeatLook::Unusable(detail) => {
            problems.push(format!("heartbeat: {detail}"));
            (None, false)
        }
    };
    problems.truncate(MAX_PROBLEMS);
    SessionStatus {
        session: dir.to_path_buf(),
        layout: Some(paths.layout),
        inbound: inbound.schema.as_ref().map(|s| s.state),
        pending,
        due,
        heartbeat_age_ms,
        heartbeat_fresh,
        container_file_readable: outbound.schema.is_some(),
        outbound: outbound.schema.as_ref().map(|s| s.state),
        problems,
    }
}

fn broken(dir: &Path, layout: Option<Layout>, problem: String) -> SessionStatus {
    SessionStatus {
        session: dir.to_path_buf(),
        layout,
        inbound: None,
        pending: None,
        due: None,
        heartbeat_age_ms: None,
        heartbeat_fresh: false,
        container_file_readable: false,
        outbound: None,
        problems: vec![problem],
    }
}

/// One status for each thing found in a data dir, in scan order.
pub fn status_of(found: &[Found], now: Timestamp, each: &mut dyn FnMut(&SessionStatus)) {
    for f in found {
        let s = match f {
            Found::Session(dir) => std::panic::catch_unwind(|| session_status(dir, now))
                .unwrap_or_else(|p| {
                    broken(
                        dir,
                        None,
                        format!("internal error (a panic): {}", panic_text(&*p)),
                    )
                }),
            Found::Link(p) => broken(p, None, "a symbolic link: not followed".into()),
            Found::Unlisted { path, error } => broken(
                path,
                None,
                format!("cannot list this agent group's folder: {error}"),
            ),
        };
        each(&s);
    }
}

/// One line of text for a session.
pub fn render_line(s: &SessionStatus) -> String {
    let layout = match s.layout {
        Some(Layout::Split) => "split",
        Some(Layout::Single) => "SINGLE",
        None => "-",
    };
    let counts = match (s.pending, s.due) {
        (Some(p), Some(d)) => format!("pending {p} due {d}"),
        _ => "pending ? due ?".to_string(),
    };
    let heartbeat = match s.heartbeat_age_ms {
        Some(ms) if s.heartbeat_fresh => format!("heartbeat {} ago (fresh)", human_ms(ms.max(0))),
        Some(ms) => format!("heartbeat {} ago", human_ms(ms)),
        None => "no heartbeat".into(),
    };
    let container = match (s.container_file_readable, s.outbound) {
        (true, Some(state)) => format!("outbound.db readable ({state})"),
        _ => "outbound.db UNREADABLE".into(),
    };
    let problem = s
        .problems
        .first()
        .map_or_else(|| "ok".to_string(), |p| format!("PROBLEM: {p}"));
    format!(
        "{}  {layout}  inbound {}  {counts}  {heartbeat}  {container}  {problem}",
        s.session.display(),
        s.inbound.unwrap_or("unreadable"),
    )
}

/// `sessionbus status`: prints a line per session and returns the exit code.
pub fn main(args: &StatusArgs) -> ExitCode {
    let found = match scan_data_dir(&args.data_dir) {
        Ok(f) => f,
        Err(e) => {
            print_stderr(&format!("error: {e}"));
            return ExitCode::from(EXIT_FATAL);
        }
    };
    if found.is_empty() && !args.json {
        print_stdout(&format!(
            "No session folders under {}.",
            args.data_dir
                .join(crate::operator::scan::SESSIONS_DIR)
                .display()
        ));
    }
    let mut with_problems = 0usize;
    status_of(&found, SystemClock.now(), &mut |s| {
        if !s.problems.is_empty() {
            with_problems += 1;
        }
        let line = if args.json {
            serde_json::to_string(s).unwrap_or_else(|e| {
                serde_json::json!({ "session": s.session, "error": e.to_string() }).to_string()
            })
        } else {
            render_line(s)
        };
        print_stdout(&line);
    });
    if with_problems > 0 {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::SUCCESS
    }
}
