//! `sessionbus migrate`: brings every session of a data dir to this build.
//!
//! Per session folder:
//!
//! - **single layout** (an older host's folder, which the container can write): when its
//!   container is stopped it is converted to the split layout
//!   ([`sessionbus_store::convert_to_split`]), which also migrates its inbound.db; when its
//!   container runs, or that cannot be told, the folder and its inbound.db are skipped with
//!   the rule that decided it ([`crate::operator::running`]);
//! - **split layout**: inbound.db, in the host's own folder, is migrated in one transaction
//!   as [`Role::Operator`](sessionbus_schema::Role::Operator);
//! - **outbound.db**, in either layout, is never opened for writing and its journal is never
//!   rolled back: it is the container's file, migrated by its container when it starts. It is
//!   looked at through the untrusted layer only and reported
//!   ([`report::FileResult::LeftToContainer`]).
//!
//! `--dry-run` writes, creates and converts nothing: the entries say what would be done.
//! [`run`] never panics on what the file system holds (a panic in one session becomes a
//! failed entry, and the other sessions go on); only a data dir that cannot be scanned at
//! all, or an unusable list of running containers, is a [`MigrateError`]. [`main`] prints
//! the report and picks the exit code.

mod render;
pub mod report;
mod session;

pub use render::{render_entry, render_summary, PROGRESS_BAR_MIN_SESSIONS};
pub use report::{
    Change, ContainerFile, Conversion, Failure, FileReport, FileResult, MigrateReport, SkipReason,
    Summary,
};

use crate::operator::running::{RunningList, RunningListError};
use crate::operator::scan::{scan_data_dir, Found, ScanError};
use crate::operator::{panic_text, print_stderr, print_stdout, EXIT_FATAL};
use clap::Args;
use sessionbus_schema::{Clock, FileKind, SystemClock};
use sessionbus_store::Ownership;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit code when at least one entry failed.
pub const EXIT_FAILED: u8 = 1;

/// Arguments of `sessionbus migrate` (and `cargo xtask migrate`).
#[derive(Debug, Clone, Default, Args)]
#[command(
    long_about = "Bring every session of a data dir to this build.\n\n\
Scans DIR/v2-sessions/<agent_group_id>/<session_id>/ (or only the folders given with --session). \
A folder in the older single layout (where the container can write the folder holding inbound.db) \
is converted to the split layout when its container is stopped, and its inbound.db migrated. In \
the split layout inbound.db is migrated in one transaction, adopting legacy files of any \
generation and switching WAL-mode files back to journal_mode=DELETE; every row is kept. \
outbound.db is never written: it is reported, and its container migrates it when it starts.\n\n\
Which containers run: say so with --running / --running-from / --no-containers-running; without \
them a .heartbeat touched in the last 60 seconds means running (an older one was left by a \
stopped container). A session whose container runs is not converted. Every skip says which rule \
decided it.",
    after_help = "Exit status: 0 when nothing failed (skipped entries do not count), 1 when at \
least one entry failed, 2 when the data dir cannot be scanned or the arguments are wrong."
)]
pub struct MigrateArgs {
    /// Data dir holding v2-sessions/<agent_group_id>/<session_id>/ (scanned for every session)
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Migrate only this session folder (repeatable); the data dir is then not scanned
    #[arg(long = "session", value_name = "DIR")]
    pub sessions: Vec<PathBuf>,

    /// Report what would be done without writing or converting anything
    #[arg(long)]
    pub dry_run: bool,

    /// Print a machine-readable JSON report on stdout instead of text
    #[arg(long)]
    pub json: bool,

    /// Take every container as stopped, whatever its heartbeat or the lists say
    #[arg(long)]
    pub force: bool,

    /// This session folder's container is running (repeatable); every container not named
    /// here or in --running-from is then taken as stopped
    #[arg(long = "running", value_name = "SESSION_DIR")]
    pub running: Vec<PathBuf>,

    /// A file naming the session folders whose containers run, one per line (blank lines and
    /// lines starting with # are ignored); every other container is taken as stopped
    #[arg(long, value_name = "FILE")]
    pub running_from: Option<PathBuf>,

    /// No container runs for any session of the data dir (the operator stopped them all)
    #[arg(long, conflicts_with_all = ["running", "running_from"])]
    pub no_containers_running: bool,

    /// Hand the container's area of a converted folder to this user (UID:GID); by default
    /// the owner of its outbound.db (or of the folder) when that is not this user
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub container_owner: Option<Ownership>,
}

fn parse_owner(s: &str) -> Result<Ownership, String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected UID:GID"))?;
    Ok(Ownership {
        uid: u.parse().map_err(|e| format!("uid {u:?}: {e}"))?,
        gid: g.parse().map_err(|e| format!("gid {g:?}: {e}"))?,
    })
}

/// Why the command could not run at all. Problems with single files or sessions are never
/// this: they are entries of the report.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The data dir cannot be scanned.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The list of running containers cannot be used.
    #[error(transparent)]
    Running(#[from] RunningListError),
}

/// Progress events [`run`] reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Scanning is done: this many session folders (and folder-level entries) follow.
    Found {
        /// Session folders.
        sessions: usize,
        /// Folder-level entries (links not followed, groups that could not be listed).
        others: usize,
    },
    /// Work on one session folder starts.
    Start {
        /// Its position, from 1.
        index: usize,
        /// How many in all.
        total: usize,
        /// The folder.
        path: &'a Path,
    },
    /// One session folder (or folder-level entry) is done.
    Done {
        /// Its position, from 1.
        index: usize,
        /// How many in all.
        total: usize,
        /// Its entries.
        entries: &'a [FileReport],
    },
}

/// Finds the session folders, converts and migrates (or plans) each, and returns the report.
///
/// `clock` gives the time heartbeats are compared with (and the adoption time stamped into
/// rows that lacked one). `progress` is called once after scanning, then before and after
/// each session folder.
pub fn run(
    args: &MigrateArgs,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<MigrateReport, MigrateError> {
    let running = RunningList::from_args(
        &args.running,
        args.running_from.as_deref(),
        args.no_containers_running,
    )?;
    let found = if args.sessions.is_empty() {
        scan_data_dir(&args.data_dir)?
    } else {
        named_sessions(&args.sessions)
    };
    let sessions = found
        .iter()
        .filter(|f| matches!(f, Found::Session(_)))
        .count();
    let total = found.len();
    progress(Progress::Found {
        sessions,
        others: total - sessions,
    });
    let ctx = session::Ctx {
        dry_run: args.dry_run,
        force: args.force,
        running: &running,
        now_ms: clock.now().unix_millis(),
        clock,
        owner: args.container_owner,
    };
    let mut files = Vec::new();
    for (i, f) in found.into_iter().enumerate() {
        let entries = match f {
            Found::Session(dir) => {
                progress(Progress::Start {
                    index: i + 1,
                    total,
                    path: &dir,
                });
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    session::migrate_session(&dir, &ctx)
                }));
                result.unwrap_or_else(|payload| {
                    vec![folder_entry(
                        &dir,
                        FileResult::failed_at(
                            &dir,
                            format!("internal error (a panic): {}", panic_text(&*payload)),
                        ),
                    )]
                })
            }
            Found::Link(p) => vec![folder_entry(
                &p,
                FileResult::skipped(SkipReason::SymlinkNotFollowed),
            )],
            Found::Unlisted { path, error } => vec![folder_entry(
                &path,
                FileResult::failed_at(
                    &path,
                    format!("cannot list this agent group's session folders: {error}"),
                ),
            )],
        };
        progress(Progress::Done {
            index: i + 1,
            total,
            entries: &entries,
        });
        files.extend(entries);
    }
    let summary = Summary::of(&files);
    Ok(MigrateReport {
        data_dir: args.sessions.is_empty().then(|| args.data_dir.clone()),
        dry_run: args.dry_run,
        force: args.force,
        running_list: running.is_given(),
        sqlite_version: sessionbus_schema::conn::sqlite_version(),
        sessions,
        files,
        summary,
    })
}

fn folder_entry(dir: &Path, result: FileResult) -> FileReport {
    FileReport {
        session: dir.to_path_buf(),
        path: dir.to_path_buf(),
        kind: None,
        layout: None,
        result,
    }
}

/// The folders named with `--session`, in order, without repeats. A name that is not a
/// folder becomes a failed entry.
fn named_sessions(dirs: &[PathBuf]) -> Vec<Found> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let problem = match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => None,
            Ok(m) if m.file_type().is_symlink() => {
                out.push(Found::Link(dir.clone()));
                continue;
            }
            Ok(_) => Some(format!(
                "not a directory (--session takes a session folder holding {} and {})",
                FileKind::Inbound,
                FileKind::Outbound
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Some("no such session folder".to_string())
            }
            Err(e) => Some(format!("cannot read the session folder: {e}")),
        };
        out.push(match problem {
            None => Found::Session(dir.clone()),
            Some(error) => Found::Unlisted {
                path: dir.clone(),
                error,
            },
        });
    }
    out
}

/// Runs `sessionbus migrate` with the wall clock, prints the report and returns the exit
/// code: 0, [`EXIT_FAILED`] when an entry failed, [`EXIT_FATAL`] when the command could not
/// run.
pub fn main(args: &MigrateArgs) -> ExitCode {
    let mut printer = render::Printer {
        json: args.json,
        dry_run: args.dry_run,
        stderr_is_terminal: std::io::stderr().is_terminal(),
        bar: None,
    };
    let result = run(args, &SystemClock, &mut |p| printer.on_progress(p));
    printer.finish();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            print_stderr(&format!("error: {e}"));
            if args.json {
                let doc = serde_json::json!({ "error": e.to_string() });
                print_stdout(&doc.to_string());
            }
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let printed = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => print_stdout(&text),
            Err(e) => {
                print_stderr(&format!("error: cannot encode the report as JSON: {e}"));
                return ExitCode::from(EXIT_FATAL);
            }
        }
    } else {
        print_stdout(render_summary(&report).trim_end())
    };
    if !printed {
        print_stderr("error: cannot write the report to stdout");
        return ExitCode::from(EXIT_FATAL);
    }
    if report.has_failures() {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
