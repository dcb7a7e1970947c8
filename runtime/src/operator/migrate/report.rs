//! What `sessionbus migrate` found and did, as typed values (serialised for `--json`).

use crate::operator::look::SchemaReport;
use crate::operator::running::Liveness;
use serde::Serialize;
use sessionbus_schema::migrate::{FileState, Generation, MigrationOutcome, MigrationPlan};
use sessionbus_schema::{DbError, FileKind};
use sessionbus_store::Layout;
use std::path::PathBuf;

/// Everything a migrate run found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrateReport {
    /// The data dir that was scanned; `None` when `--session` named the folders.
    pub data_dir: Option<PathBuf>,
    /// Nothing was written or converted: the results say what migrating would do.
    pub dry_run: bool,
    /// `--force`: every container was taken as stopped.
    pub force: bool,
    /// The operator said which containers run (`--running`, `--running-from`,
    /// `--no-containers-running`), so heartbeats did not decide.
    pub running_list: bool,
    /// The SQLite library linked into this binary (the bundled one, normally).
    pub sqlite_version: String,
    /// How many session folders were looked at.
    pub sessions: usize,
    /// One entry per file, per conversion, and per session folder that could not be read,
    /// in scan order.
    pub files: Vec<FileReport>,
    /// Counts, and every failure with its reason.
    pub summary: Summary,
}

impl MigrateReport {
    /// True when at least one entry failed (the command then exits non-zero).
    pub fn has_failures(&self) -> bool {
        self.summary.failed > 0
    }

    /// True when nothing was written: a dry run, or nothing migrated or converted.
    pub fn nothing_changed(&self) -> bool {
        self.dry_run || (self.summary.migrated == 0 && self.summary.converted == 0)
    }
}

/// One entry: a file of a session folder, or the folder itself (its conversion, or a
/// problem with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The session folder.
    pub session: PathBuf,
    /// The file, or the session folder for a folder-level entry.
    pub path: PathBuf,
    /// Which file of the pair; `None` for a folder-level entry.
    pub kind: Option<FileKind>,
    /// The folder's layout when the entry was decided (after a conversion: split).
    pub layout: Option<Layout>,
    /// What happened.
    #[serde(flatten)]
    pub result: FileResult,
}

/// What happened to one file or folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FileResult {
    /// inbound.db was migrated (or, in a dry run, would be).
    Migrated(Change),
    /// inbound.db already had this build's schema and `journal_mode = DELETE`.
    Current,
    /// The single-layout folder was converted to the split layout (or, in a dry run, would
    /// be).
    Converted(Conversion),
    /// outbound.db, reported and left to its container: the operator never writes it.
    LeftToContainer(ContainerFile),
    /// Left alone on purpose.
    Skipped {
        /// Why, in words (the text of `cause`).
        reason: String,
        /// Why, for programs.
        cause: SkipReason,
    },
    /// Could not be done; left as it was.
    Failed {
        /// What went wrong, without the path.
        reason: String,
        /// The full error message, with the path and the operation.
        error: String,
        /// Running the command again later may succeed (a lock, a hot journal).
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

    /// A failed result from a schema error: the reason without the location, and the full
    /// text.
    pub fn failed(e: &DbError) -> FileResult {
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

    /// A failed result about `path`, from a reason in words.
    pub fn failed_at(path: &std::path::Path, reason: String) -> FileResult {
        FileResult::Failed {
            error: format!("{}: {reason}", path.display()),
            reason,
            retryable: false,
        }
    }
}

/// What migrating inbound.db changed (or, in a dry run, would change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The legacy generation the file was adopted from, when it had no migrations table.
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
    pub fn planned(plan: &MigrationPlan) -> Change {
        let (legacy_generation, added, was_empty) = Change::from_state(&plan.state);
        Change {
            legacy_generation,
            added,
            applied: plan.would_apply.clone(),
            switched_from: plan.would_switch_from_wal.then(|| "wal".to_string()),
            was_empty,
        }
    }

    /// What migrating a file in state `state` of kind `kind` would do (no journal switch).
    pub fn would(state: &FileState, kind: FileKind) -> Change {
        let (legacy_generation, added, was_empty) = Change::from_state(state);
        Change {
            legacy_generation,
            added,
            applied: state.pending(kind),
            switched_from: None,
            was_empty,
        }
    }

    /// What migrating did.
    pub fn done(outcome: &MigrationOutcome) -> Change {
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

/// A conversion from the single to the split layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversion {
    /// Entries moved (or to move) into `container/`, by name (at most
    /// [`MAX_NAMES_LISTED`]).
    pub moved: Vec<String>,
    /// How many entries moved (or would move).
    pub moved_count: usize,
    /// Why the container was taken as stopped.
    pub liveness: Liveness,
    /// The uid and gid the container's area was (or would be) handed to; `None`: this
    /// process's user.
    pub container_owner: Option<(u32, u32)>,
}

/// The most entry names a conversion lists.
pub const MAX_NAMES_LISTED: usize = 50;

/// outbound.db as the operator found it (read through the untrusted layer only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerFile {
    /// Its size in bytes, when it is a regular file.
    pub size: Option<u64>,
    /// Its schema as the file claims it (the container's to forge), when it could be read.
    pub schema: Option<SchemaReport>,
    /// A `-journal` next to it: reported, never rolled back here.
    pub journal: Option<PathBuf>,
    /// Its header says WAL.
    pub wal_mode: bool,
    /// Whatever made it unreadable or needs a look (a FIFO, a link, a hot journal, ...).
    pub problems: Vec<String>,
}

/// Why something was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// The session folder has no such file.
    Missing,
    /// The session's container runs, so its folder is not converted.
    ContainerRunning {
        /// The rule that decided it.
        liveness: Liveness,
    },
    /// Whether the container runs cannot be told, so it is taken as running.
    CannotTell {
        /// The rule that decided it.
        liveness: Liveness,
    },
    /// inbound.db of a single-layout folder that was not converted: it sits in a folder the
    /// container can write, so it is migrated only after the conversion.
    WaitsForConversion,
    /// A symbolic link where a group or session folder belongs: not followed.
    SymlinkNotFollowed,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Missing => f.write_str("no such file in the session folder"),
            SkipReason::ContainerRunning { liveness } => write!(
                f,
                "its container is running ({liveness}); the single-layout folder is converted \
                 once it is stopped (or say which run with --running / --no-containers-running, \
                 or pass --force)"
            ),
            SkipReason::CannotTell { liveness } => write!(
                f,
                "cannot tell whether its container is running ({liveness}); say which run with \
                 --running / --no-containers-running, or pass --force"
            ),
            SkipReason::WaitsForConversion => f.write_str(
                "in a folder the container can write (single layout): migrated once the folder \
                 is converted, which waits for its container to stop",
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
    /// inbound.db files migrated (in a dry run: that would be).
    pub migrated: usize,
    /// inbound.db files already current.
    pub already_current: usize,
    /// Folders converted to the split layout (in a dry run: that would be).
    pub converted: usize,
    /// outbound.db files reported and left to their containers.
    pub left_to_container: usize,
    /// Entries skipped (missing, container running, not followed).
    pub skipped: usize,
    /// Entries that failed.
    pub failed: usize,
    /// Each failure with its reason.
    pub failures: Vec<Failure>,
}

/// One failed entry.
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
                FileResult::Converted(_) => s.converted += 1,
                FileResult::LeftToContainer(_) => s.left_to_container += 1,
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
        self.migrated
            + self.already_current
            + self.converted
            + self.left_to_container
            + self.skipped
            + self.failed
    }
}
