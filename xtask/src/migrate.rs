//! `cargo xtask migrate`: brings every session's `inbound.db` and `outbound.db` to this
//! build's schema, adopting the unversioned legacy files of every generation (SPEC section 4).
//!
//! [`run`] does the work and returns a [`MigrateReport`]; it never panics on what the file
//! system holds: every per-file problem becomes a [`FileResult::Failed`] or
//! [`FileResult::Skipped`] entry, and only a data dir that cannot be scanned at all is a
//! [`MigrateError`]. [`main`] prints the report (text or JSON) and picks the exit code.
//!
//! Each file goes through `sessionbus_schema::migrate::migrate` as [`Role::Operator`], which
//! runs the whole migration in one `BEGIN IMMEDIATE` transaction (a failure leaves the file as
//! it was) and switches a WAL-mode file back to `journal_mode = DELETE`. `--dry-run` goes
//! through `sessionbus_schema::migrate::plan` instead, which opens files read-only and
//! creates nothing.
//!
//! An `outbound.db` belongs to its container while the container runs: when the session's
//! `.heartbeat` was touched less than [`LIVE_HEARTBEAT`] ago, the file is skipped (unless
//! `--force`), since a second writer across the container mount corrupts the file.

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sessionbus_schema::migrate::{FileState, Generation, MigrationOutcome, MigrationPlan};
use sessionbus_schema::{Clock, DbError, DbFile, FileKind, Role, SystemClock, Timestamp};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The folder of a data dir that holds `<agent_group_id>/<session_id>/` session folders.
pub const SESSIONS_DIR: &str = "v2-sessions";

/// The file whose mtime a running container touches, inside its session folder.
pub const HEARTBEAT_FILE: &str = ".heartbeat";

/// A `.heartbeat` touched less than this long ago means the session's container is running.
pub const LIVE_HEARTBEAT: Duration = Duration::from_secs(60);

/// With at least this many files (and stderr a terminal) a progress bar is drawn on stderr.
pub const PROGRESS_BAR_MIN_FILES: usize = 20;

/// Exit code when at least one file failed to migrate.
pub const EXIT_FAILED: u8 = 1;

/// Exit code when the command could not run at all (no such data dir, unreadable, ...).
pub const EXIT_FATAL: u8 = 2;

/// Arguments of `cargo xtask migrate`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Migrate every session's inbound.db and outbound.db to this build's schema.\n\n\
Scans DIR/v2-sessions/<agent_group_id>/<session_id>/ (or only the folders given with --session) \
and migrates each file in one transaction, adopting legacy files of any generation (G0..G8) and \
switching WAL-mode files back to journal_mode=DELETE. Every row is kept. A file that fails is \
reported and left unchanged; the other files are still migrated.\n\n\
An outbound.db whose session .heartbeat was touched within the last 60 seconds belongs to a \
running container and is skipped unless --force.",
    after_help = "Exit status: 0 when no file failed (skipped files do not count), 1 when at least \
one file failed, 2 when the data dir cannot be scanned or the arguments are wrong."
)]
pub struct MigrateArgs {
    /// Data dir holding v2-sessions/<agent_group_id>/<session_id>/ (scanned for every session)
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Migrate only this session folder (repeatable); the data dir is then not scanned
    #[arg(long = "session", value_name = "DIR")]
    pub sessions: Vec<PathBuf>,

    /// Report what would be done without writing anything (no file, journal or table is
    /// created or touched)
    #[arg(long)]
    pub dry_run: bool,

    /// Print a machine-readable JSON report on stdout instead of text
    #[arg(long)]
    pub json: bool,

    /// Also migrate outbound.db files whose container looks alive (fresh .heartbeat)
    #[arg(long)]
    pub force: bool,
}

/// Why the command could not run at all. Problems with single files or sessions are never
/// this: they are entries of the report.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The data dir does not exist.
    #[error(
        "data dir {0} does not exist (pass --data-dir DIR, the folder holding {SESSIONS_DIR}/)"
    )]
    DataDirMissing(PathBuf),
    /// The data dir is not a directory.
    #[error("data dir {0} is not a directory")]
    DataDirNotADirectory(PathBuf),
    /// The data dir has no `v2-sessions` folder.
    #[error(
        "{0} has no {SESSIONS_DIR}/ folder: is it the data dir? (expected \
         DIR/{SESSIONS_DIR}/<agent_group_id>/<session_id>/)"
    )]
    NoSessionsDir(PathBuf),
    /// The data dir or its `v2-sessions` folder cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything `cargo xtask migrate` found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// The data dir that was scanned; `None` when `--session` named the folders.
    pub data_dir: Option<PathBuf>,
    /// Nothing was written: the results say what migrating would do.
    pub dry_run: bool,
    /// Outbound files of running containers were migrated anyway.
    pub force: bool,
    /// The SQLite library linked into this binary (the bundled one, normally).
    pub sqlite_version: String,
    /// How many session folders were looked at.
    pub sessions: usize,
    /// One entry per file (and per session folder that could not be read), in scan order.
    pub files: Vec<FileReport>,
    /// Counts, and every failure with its reason.
    pub summary: Summary,
}

impl MigrateReport {
    /// True when at least one file failed (the command then exits non-zero).
    pub fn has_failures(&self) -> bool {
        self.summary.failed > 0
    }

    /// True when no file was written: a dry run, or every file already current, skipped or
    /// failed.
    pub fn nothing_changed(&self) -> bool {
        self.dry_run || self.summary.migrated == 0
    }
}

/// The result for one file of one session folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The session folder.
    pub session: PathBuf,
    /// The file (the session folder itself when the folder could not be read).
    pub path: PathBuf,
    /// Which file of the pair; `None` for a problem with the session folder itself.
    pub kind: Option<FileKind>,
    /// What happened.
    #[serde(flatten)]
    pub result: FileResult,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileResult {
    /// The file was migrated (or, in a dry run, would be).
    Migrated(Change),
    /// The file already had this build's schema and `journal_mode = DELETE`: nothing done.
    Current,
    /// The file was left alone on purpose.
    Skipped {
        /// Why, in words (the text of `cause`).
        reason: String,
        /// Why, for programs.
        cause: SkipReason,
    },
    /// The file could not be migrated; it was left as it was.
    Failed {
        /// What went wrong, without the file's path.
        reason: String,
        /// The full error message, with the file's path and the operation.
        error: String,
        /// The condition may go away by itself (a lock held too long, a hot journal):
        /// running the command again later may succeed.
        retryable: bool,
    },
}

impl FileResult {
    /// A skipped result for `cause`, with its text as the reason.
    pub fn skipped(cause: SkipReason) -> FileResult {
        FileResult::Skipped {
            reason: cause.to_string(),
            cause,
        }
    }
}

/// What migrating a file changed (or, in a dry run, would change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The legacy generation (SPEC section 4) the file was adopted from, when it had no
    /// migrations table.
    pub legacy_generation: Option<Generation>,
    /// Columns and tables adoption added, as `table.column` / `table`.
    pub added: Vec<String>,
    /// Migration versions applied, oldest first.
    pub applied: Vec<String>,
    /// The journal mode the file was switched from to `delete` (`wal`), if any.
    pub switched_from: Option<String>,
    /// The file was zero bytes long (no tables) and got the whole schema.
    pub was_empty: bool,
}

/// Why a file was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The session folder has no such file.
    Missing,
    /// The session's `.heartbeat` is fresh: its container is running and owns outbound.db.
    ContainerRunning {
        /// Seconds since the heartbeat was touched (0 when its mtime is in the future).
        heartbeat_age_secs: u64,
    },
    /// The `.heartbeat` exists but its mtime cannot be read, so the container may be running.
    HeartbeatUnreadable {
        /// The OS error.
        error: String,
    },
    /// A symbolic link where the scan expects an agent group or session folder: not followed
    /// (name the real folder with `--session` to migrate it).
    SymlinkNotFollowed,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Missing => f.write_str("no such file in the session folder"),
            SkipReason::ContainerRunning { heartbeat_age_secs } => write!(
                f,
                "its container is running ({HEARTBEAT_FILE} touched {heartbeat_age_secs}s ago); \
                 stop it first, or pass --force"
            ),
            SkipReason::HeartbeatUnreadable { error } => write!(
                f,
                "cannot tell whether its container is running ({HEARTBEAT_FILE}: {error}); \
                 pass --force to migrate it anyway"
            ),
            SkipReason::SymlinkNotFollowed => f.write_str(
                "a symbolic link, not followed; pass the real folder with --session to migrate it",
            ),
        }
    }
}

/// Counts over every entry of a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files migrated (in a dry run: that would be migrated).
    pub migrated: usize,
    /// Files that were already current.
    pub already_current: usize,
    /// Files skipped (missing, or owned by a running container).
    pub skipped: usize,
    /// Files (and session folders) that failed.
    pub failed: usize,
    /// Each failure with its reason.
    pub failures: Vec<Failure>,
}

/// One failed file or session folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The file or folder.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl Summary {
    /// Counts the entries of `files`.
    pub fn of(files: &[FileReport]) -> Summary {
        let mut s = Summary::default();
        for f in files {
            match &f.result {
                FileResult::Migrated(_) => s.migrated += 1,
                FileResult::Current => s.already_current += 1,
                FileResult::Skipped { .. } => s.skipped += 1,
                FileResult::Failed { reason, .. } => {
                    s.failed += 1;
                    s.failures.push(Failure {
                        path: f.path.clone(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        s
    }

    /// The number of entries counted.
    pub fn total(&self) -> usize {
        self.migrated + self.already_current + self.skipped + self.failed
    }
}

/// Progress events [`run`] reports while it works.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Scanning is done: this many entries will follow, from this many session folders.
    Found {
        /// Entries that will be reported.
        entries: usize,
        /// Session folders.
        sessions: usize,
    },
    /// Work on one file starts (folder-level entries have no start).
    Start {
        /// Its position, from 1.
        index: usize,
        /// How many entries in all.
        total: usize,
        /// The file.
        path: &'a Path,
    },
    /// One entry is done.
    Done {
        /// Its position, from 1.
        index: usize,
        /// How many entries in all.
        total: usize,
        /// Its result.
        file: &'a FileReport,
    },
}

/// Something found by scanning: a session folder, or a folder-level entry (a problem, a
/// symlink not followed).
enum Target {
    Session(PathBuf),
    Problem(FileReport),
}

/// One entry to produce: a file to migrate, or a folder-level entry already decided.
enum Job {
    File(PathBuf, FileKind),
    Done(FileReport),
}

/// Finds the session folders, migrates (or plans) each file and returns the report.
///
/// `now` is the time heartbeats are compared with (and the adoption time stamped into rows
/// that lacked one). `progress` is called once after scanning, then before each file and
/// after each entry.
pub fn run(
    args: &MigrateArgs,
    now: SystemTime,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<MigrateReport, MigrateError> {
    let targets = if args.sessions.is_empty() {
        scan(&args.data_dir)?
    } else {
        named_sessions(&args.sessions)
    };
    let sessions = targets
        .iter()
        .filter(|t| matches!(t, Target::Session(_)))
        .count();
    let jobs: Vec<Job> = targets
        .into_iter()
        .flat_map(|t| match t {
            Target::Problem(p) => vec![Job::Done(p)],
            Target::Session(dir) => [FileKind::Inbound, FileKind::Outbound]
                .into_iter()
                .map(|kind| Job::File(dir.clone(), kind))
                .collect(),
        })
        .collect();
    let total = jobs.len();
    progress(Progress::Found {
        entries: total,
        sessions,
    });

    let stamp = timestamp(now);
    let mut files = Vec::with_capacity(total);
    for (i, job) in jobs.into_iter().enumerate() {
        let entry = match job {
            Job::Done(entry) => entry,
            Job::File(dir, kind) => {
                let path = dir.join(kind.file_name());
                progress(Progress::Start {
                    index: i + 1,
                    total,
                    path: &path,
                });
                FileReport {
                    result: migrate_file(&dir, kind, args, now, stamp),
                    session: dir,
                    path,
                    kind: Some(kind),
                }
            }
        };
        progress(Progress::Done {
            index: i + 1,
            total,
            file: &entry,
        });
        files.push(entry);
    }
    let summary = Summary::of(&files);
    Ok(MigrateReport {
        data_dir: args.sessions.is_empty().then(|| args.data_dir.clone()),
        dry_run: args.dry_run,
        force: args.force,
        sqlite_version: sessionbus_schema::conn::sqlite_version(),
        sessions,
        files,
        summary,
    })
}

/// `now` as a schema timestamp (the wall clock if `now` is out of range).
fn timestamp(now: SystemTime) -> Timestamp {
    now.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .and_then(Timestamp::from_unix_millis)
        .unwrap_or_else(|| SystemClock.now())
}

/// The folders named with `--session`, in order, without repeats. A name that is not a
/// folder becomes a failed entry.
fn named_sessions(dirs: &[PathBuf]) -> Vec<Target> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let problem = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => None,
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
            None => Target::Session(dir.clone()),
            Some(reason) => Target::Problem(folder_problem(dir, reason)),
        });
    }
    out
}

/// A failed entry about a folder rather than a file.
fn folder_problem(dir: &Path, reason: String) -> FileReport {
    folder_entry(
        dir,
        FileResult::Failed {
            error: format!("{}: {reason}", dir.display()),
            reason,
            retryable: false,
        },
    )
}

fn folder_entry(dir: &Path, result: FileResult) -> FileReport {
    FileReport {
        session: dir.to_path_buf(),
        path: dir.to_path_buf(),
        kind: None,
        result,
    }
}

/// What a data dir folder holds that matters to the scan.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SubDir {
    /// A real folder.
    Dir(PathBuf),
    /// A symbolic link: not followed (it could lead anywhere), reported as skipped.
    Link(PathBuf),
}

/// Sub-folders and symlinks of `dir`, sorted by name; plain files are left out.
fn sub_dirs(dir: &Path) -> std::io::Result<Vec<SubDir>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            out.push(SubDir::Dir(entry.path()));
        } else if ft.is_symlink() {
            out.push(SubDir::Link(entry.path()));
        }
    }
    out.sort_by(|a, b| sub_dir_path(a).cmp(sub_dir_path(b)));
    Ok(out)
}

fn sub_dir_path(d: &SubDir) -> &Path {
    match d {
        SubDir::Dir(p) | SubDir::Link(p) => p,
    }
}

fn link_entry(path: &Path) -> Target {
    Target::Problem(folder_entry(
        path,
        FileResult::skipped(SkipReason::SymlinkNotFollowed),
    ))
}

/// Every `v2-sessions/<agent_group_id>/<session_id>/` folder of a data dir. An agent group
/// folder that cannot be listed becomes a failed entry; the others are still scanned.
fn scan(data_dir: &Path) -> Result<Vec<Target>, MigrateError> {
    match std::fs::metadata(data_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(MigrateError::DataDirNotADirectory(data_dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MigrateError::DataDirMissing(data_dir.to_path_buf()))
        }
        Err(source) => {
            return Err(MigrateError::Io {
                path: data_dir.to_path_buf(),
                source,
            })
        }
    }
    let root = data_dir.join(SESSIONS_DIR);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(MigrateError::NoSessionsDir(data_dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MigrateError::NoSessionsDir(data_dir.to_path_buf()))
        }
        Err(source) => return Err(MigrateError::Io { path: root, source }),
    }
    let groups = sub_dirs(&root).map_err(|source| MigrateError::Io {
        path: root.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for group in groups {
        let group = match group {
            SubDir::Dir(p) => p,
            SubDir::Link(p) => {
                out.push(link_entry(&p));
                continue;
            }
        };
        match sub_dirs(&group) {
            Ok(sessions) => out.extend(sessions.into_iter().map(|s| match s {
                SubDir::Dir(p) => Target::Session(p),
                SubDir::Link(p) => link_entry(&p),
            })),
            Err(e) => out.push(Target::Problem(folder_problem(
                &group,
                format!("cannot list this agent group's session folders: {e}"),
            ))),
        }
    }
    Ok(out)
}

/// How long ago the session's `.heartbeat` was touched; `None` when there is none.
fn heartbeat_age(session: &Path, now: SystemTime) -> std::io::Result<Option<Duration>> {
    let meta = match std::fs::metadata(session.join(HEARTBEAT_FILE)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mtime = meta.modified()?;
    // A heartbeat from the future (clocks differ across the mount) counts as fresh.
    Ok(Some(now.duration_since(mtime).unwrap_or(Duration::ZERO)))
}

/// Migrates (or plans) one file of a session folder.
fn migrate_file(
    session: &Path,
    kind: FileKind,
    args: &MigrateArgs,
    now: SystemTime,
    stamp: Timestamp,
) -> FileResult {
    let path = session.join(kind.file_name());
    if let Err(e) = std::fs::symlink_metadata(&path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return FileResult::skipped(SkipReason::Missing);
        }
        // Anything else: let the schema crate's opener report it with its context.
    }
    if kind == FileKind::Outbound && !args.force {
        match heartbeat_age(session, now) {
            Ok(Some(age)) if age < LIVE_HEARTBEAT => {
                return FileResult::skipped(SkipReason::ContainerRunning {
                    heartbeat_age_secs: age.as_secs(),
                })
            }
            Ok(_) => {}
            Err(e) => {
                return FileResult::skipped(SkipReason::HeartbeatUnreadable {
                    error: e.to_string(),
                })
            }
        }
    }
    let file = DbFile::new(path, kind, Role::Operator);
    if args.dry_run {
        match sessionbus_schema::migrate::plan(&file) {
            Ok(plan) if plan.is_current() => FileResult::Current,
            Ok(plan) => FileResult::Migrated(Change::planned(&plan)),
            Err(e) => failed(&e),
        }
    } else {
        match sessionbus_schema::migrate::migrate(&file, stamp, false) {
            Ok(outcome) if !outcome.changed() => FileResult::Current,
            Ok(outcome) => FileResult::Migrated(Change::done(&outcome)),
            Err(e) => failed(&e),
        }
    }
}

impl Change {
    fn from_state(state: &FileState) -> (Option<Generation>, Vec<String>, bool) {
        match state {
            FileState::Legacy {
                generation,
                missing,
            } => (Some(*generation), missing.clone(), false),
            FileState::Empty => (None, Vec::new(), true),
            FileState::Migrated { .. } => (None, Vec::new(), false),
        }
    }

    /// What a dry run found migrating would do.
    fn planned(plan: &MigrationPlan) -> Change {
        let (legacy_generation, added, was_empty) = Change::from_state(&plan.state);
        Change {
            legacy_generation,
            added,
            applied: plan.would_apply.clone(),
            switched_from: plan.would_switch_from_wal.then(|| "wal".to_string()),
            was_empty,
        }
    }

    /// What migrating did.
    fn done(outcome: &MigrationOutcome) -> Change {
        let (legacy_generation, added, was_empty) = Change::from_state(&outcome.before);
        Change {
            legacy_generation,
            added,
            applied: outcome.applied.clone(),
            switched_from: outcome.switched_from.clone(),
            was_empty: was_empty || outcome.created,
        }
    }
}

/// A failed entry from a schema error: the reason without the location, and the full text.
fn failed(e: &DbError) -> FileResult {
    let error = e.to_string();
    let at = e.at().to_string();
    let reason = error
        .strip_prefix(&at)
        .map(|rest| rest.trim_start_matches(':').trim_start())
        .filter(|rest| !rest.is_empty())
        .unwrap_or(&error)
        .to_string();
    FileResult::Failed {
        reason,
        error,
        retryable: e.is_retryable(),
    }
}

/// One line of text for an entry: status word, path, and what was done.
pub fn render_entry(entry: &FileReport, dry_run: bool) -> String {
    let path = entry.path.display();
    match &entry.result {
        FileResult::Migrated(change) => {
            let status = if dry_run { "would migrate" } else { "migrated" };
            format!("{status:<13} {path}: {}", render_change(change, dry_run))
        }
        FileResult::Current => format!("{:<13} {path}", "current"),
        FileResult::Skipped { reason, .. } => format!("{:<13} {path}: {reason}", "skipped"),
        FileResult::Failed { reason, .. } => format!("{:<13} {path}: {reason}", "FAILED"),
    }
}

fn render_change(c: &Change, dry_run: bool) -> String {
    let mut parts = Vec::new();
    if let Some(g) = c.legacy_generation {
        let mut s = if dry_run {
            format!("legacy {g} file to adopt")
        } else {
            format!("adopted legacy {g} file")
        };
        if !c.added.is_empty() {
            let verb = if dry_run { "adding" } else { "added" };
            s.push_str(&format!(" ({verb} {})", c.added.join(", ")));
        }
        parts.push(s);
    }
    if c.was_empty {
        parts.push(if dry_run {
            "empty file to initialise".to_string()
        } else {
            "initialised empty file".to_string()
        });
    }
    if !c.applied.is_empty() {
        let n = c.applied.len();
        let noun = if n == 1 { "migration" } else { "migrations" };
        let verb = if dry_run { "to apply" } else { "applied" };
        parts.push(format!("{n} {noun} {verb} ({})", c.applied.join(", ")));
    }
    if let Some(mode) = &c.switched_from {
        parts.push(if dry_run {
            format!(
                "would switch from {} to DELETE journal mode",
                mode.to_uppercase()
            )
        } else {
            format!(
                "switched from {} to DELETE journal mode",
                mode.to_uppercase()
            )
        });
    }
    parts.join("; ")
}

/// The text printed after the per-file lines: counts, each failure, and whether anything
/// changed.
pub fn render_summary(report: &MigrateReport) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let migrated = if report.dry_run {
        "would be migrated"
    } else {
        "migrated"
    };
    if report.files.is_empty() {
        match &report.data_dir {
            Some(dir) => out.push_str(&format!(
                "No session folders under {}.\n",
                dir.join(SESSIONS_DIR).display()
            )),
            None => out.push_str("No session folders.\n"),
        }
    }
    out.push_str(&format!(
        "Summary ({} in {}): {} {migrated}, {} already current, {} skipped, {} failed\n",
        plural(s.total(), "file", "files"),
        plural(report.sessions, "session folder", "session folders"),
        s.migrated,
        s.already_current,
        s.skipped,
        s.failed
    ));
    if !s.failures.is_empty() {
        out.push_str("Failed:\n");
        for f in &s.failures {
            out.push_str(&format!("  {}: {}\n", f.path.display(), f.reason));
        }
    }
    if report.dry_run {
        out.push_str("Dry run: nothing was written.\n");
    } else if s.migrated == 0 {
        if s.total() > 0 && s.already_current == s.total() {
            out.push_str("Nothing changed: every file is already current.\n");
        } else {
            out.push_str("Nothing changed.\n");
        }
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints progress while [`run`] works: the per-file lines (text mode), warnings (JSON
/// mode), and a progress bar on stderr when it is a terminal and there are many files.
struct Printer {
    json: bool,
    dry_run: bool,
    stderr_is_terminal: bool,
    bar: Option<ProgressBar>,
}

impl Printer {
    fn on_progress(&mut self, p: Progress<'_>) {
        match p {
            Progress::Found { entries, .. } => {
                if self.stderr_is_terminal && entries >= PROGRESS_BAR_MIN_FILES {
                    let bar = ProgressBar::with_draw_target(
                        Some(u64::try_from(entries).unwrap_or(u64::MAX)),
                        ProgressDrawTarget::stderr(),
                    );
                    if let Ok(style) =
                        ProgressStyle::with_template("{bar:40} {pos}/{len} files {wide_msg}")
                    {
                        bar.set_style(style);
                    }
                    self.bar = Some(bar);
                }
            }
            Progress::Start { path, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(path.display().to_string());
                }
            }
            Progress::Done { file, .. } => {
                if self.json {
                    // stdout is the JSON report: tell the operator about problems on stderr.
                    let worth_a_warning = match &file.result {
                        FileResult::Skipped { cause, .. } => *cause != SkipReason::Missing,
                        FileResult::Failed { .. } => true,
                        FileResult::Migrated(_) | FileResult::Current => false,
                    };
                    if worth_a_warning {
                        let line = format!("warning: {}", render_entry(file, self.dry_run));
                        self.to_stderr(&line);
                    }
                } else {
                    let line = render_entry(file, self.dry_run);
                    // A closed stdout is reported once, when the summary cannot be written.
                    let _ = match &self.bar {
                        Some(bar) => bar.suspend(|| print_stdout(&line)),
                        None => print_stdout(&line),
                    };
                }
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
        }
    }

    fn to_stderr(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| print_stderr(line)),
            None => print_stderr(line),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Writes a line to stdout; a closed stdout (`| head`) is not worth a panic.
fn print_stdout(line: &str) -> bool {
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

/// Writes a line to stderr, ignoring a closed stderr.
fn print_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs `cargo xtask migrate` with the wall clock, prints the report and returns the exit
/// code: 0, [`EXIT_FAILED`] when a file failed, [`EXIT_FATAL`] when the command could not run.
pub fn main(args: &MigrateArgs) -> ExitCode {
    let mut printer = Printer {
        json: args.json,
        dry_run: args.dry_run,
        stderr_is_terminal: std::io::stderr().is_terminal(),
        bar: None,
    };
    let result = run(args, SystemTime::now(), &mut |p| printer.on_progress(p));
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
