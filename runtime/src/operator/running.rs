//! Deciding whether a session's container is running, and saying which rule decided it.
//!
//! The operator's word comes first: a [`RunningList`] built from `--running SESSION_DIR`,
//! `--running-from FILE` and `--no-containers-running` says which containers run, and every
//! other session's is taken as stopped. Without it, the container's `.heartbeat` decides: one
//! touched less than [`FRESH_HEARTBEAT`] ago (or in the future) means running, an older one
//! was left by a stopped container, none means none ran. The heartbeat is the container's
//! file, so it is only `lstat`ed relative to a no-follow folder descriptor
//! ([`sessionbus_schema::untrusted::fs::entry_info`]): never followed, never opened. A
//! heartbeat that is a link, a FIFO or anything but a regular file tells nothing, and a
//! session whose liveness is unknown is treated as running.

use serde::Serialize;
use sessionbus_schema::untrusted::fs::entry_info;
use sessionbus_schema::untrusted::NodeKind;
use sessionbus_store::SessionPaths;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A `.heartbeat` touched less than this long ago means its container is running.
pub const FRESH_HEARTBEAT: Duration = Duration::from_secs(60);

/// The most lines `--running-from` reads (a list of running containers is never longer).
pub const MAX_RUNNING_LINES: usize = 100_000;

/// The operator's statement of which containers run.
#[derive(Debug, Clone, Default)]
pub struct RunningList {
    /// Session folders named running, each with where it was named (`--running`,
    /// `--running-from FILE`), keyed by the folder as the file system resolves it.
    named: BTreeMap<PathBuf, String>,
    /// The operator said which containers run (a list, possibly empty, or no container).
    given: bool,
    /// `--no-containers-running`.
    none: bool,
}

/// Why a `--running-from` file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RunningListError {
    /// The file could not be read.
    #[error("cannot read the list of running containers {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file has more lines than any real list.
    #[error("{path}: more than {MAX_RUNNING_LINES} lines; not a list of running containers")]
    TooLong {
        /// The file.
        path: PathBuf,
    },
    /// `--no-containers-running` together with containers named running.
    #[error("--no-containers-running contradicts --running / --running-from naming {0}")]
    Contradiction(PathBuf),
}

/// The folder as the file system resolves it (for comparing names), or as given.
fn key(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

impl RunningList {
    /// Builds the list from the command line: folders named with `--running`, the file of
    /// `--running-from` (one session folder per line; blank lines and lines starting with `#`
    /// are ignored) and `--no-containers-running`.
    pub fn from_args(
        running: &[PathBuf],
        running_from: Option<&Path>,
        no_containers_running: bool,
    ) -> Result<RunningList, RunningListError> {
        let mut list = RunningList {
            named: BTreeMap::new(),
            given: no_containers_running || !running.is_empty() || running_from.is_some(),
            none: no_containers_running,
        };
        for dir in running {
            list.named.insert(key(dir), "--running".into());
        }
        if let Some(file) = running_from {
            let text = std::fs::read_to_string(file).map_err(|source| RunningListError::Read {
                path: file.to_path_buf(),
                source,
            })?;
            for (n, line) in text.lines().enumerate() {
                if n >= MAX_RUNNING_LINES {
                    return Err(RunningListError::TooLong {
                        path: file.to_path_buf(),
                    });
                }
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                list.named.insert(
                    key(Path::new(line)),
                    format!("--running-from {}", file.display()),
                );
            }
        }
        if let (true, Some(first)) = (list.none, list.named.keys().next()) {
            return Err(RunningListError::Contradiction(first.clone()));
        }
        Ok(list)
    }

    /// True when the operator said which containers run (so heartbeats do not decide).
    pub fn is_given(&self) -> bool {
        self.given
    }
}

/// Which rule decided whether a session's container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Liveness {
    /// `--force`: treated as stopped whatever else is known.
    Forced,
    /// The operator named it running.
    NamedRunning {
        /// Where: `--running` or `--running-from FILE`.
        by: String,
    },
    /// The operator listed the running containers and this session's is not among them.
    NotNamed,
    /// The operator said no container runs (`--no-containers-running`).
    NoneRunning,
    /// No `.heartbeat`: no container has touched it.
    NoHeartbeat,
    /// The `.heartbeat` was touched less than [`FRESH_HEARTBEAT`] ago.
    FreshHeartbeat {
        /// Seconds since.
        age_secs: u64,
    },
    /// The `.heartbeat`'s mtime is in the future (clocks differ): taken as running.
    FutureHeartbeat {
        /// Seconds ahead.
        ahead_secs: u64,
    },
    /// The `.heartbeat` is older than [`FRESH_HEARTBEAT`]: a stopped container left it.
    StaleHeartbeat {
        /// Seconds since.
        age_secs: u64,
    },
    /// The `.heartbeat` tells nothing: not a regular file, or it cannot be looked at.
    HeartbeatUnusable {
        /// What it is, or the error.
        detail: String,
    },
}

/// What a [`Liveness`] means for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No container runs: its files may be moved.
    Stopped,
    /// A container runs.
    Running,
    /// It cannot be told; treated as running.
    Unknown,
}

impl Liveness {
    /// What the rule decided.
    pub fn verdict(&self) -> Verdict {
        match self {
            Liveness::Forced
            | Liveness::NotNamed
            | Liveness::NoneRunning
            | Liveness::NoHeartbeat
            | Liveness::StaleHeartbeat { .. } => Verdict::Stopped,
            Liveness::NamedRunning { .. }
            | Liveness::FreshHeartbeat { .. }
            | Liveness::FutureHeartbeat { .. } => Verdict::Running,
            Liveness::HeartbeatUnusable { .. } => Verdict::Unknown,
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = FRESH_HEARTBEAT.as_secs();
        match self {
            Liveness::Forced => f.write_str("--force: taken as stopped"),
            Liveness::NamedRunning { by } => write!(f, "named running by {by}"),
            Liveness::NotNamed => {
                f.write_str("not among the running containers the operator listed")
            }
            Liveness::NoneRunning => f.write_str("--no-containers-running"),
            Liveness::NoHeartbeat => f.write_str("no .heartbeat: no container has run"),
            Liveness::FreshHeartbeat { age_secs } => {
                write!(f, ".heartbeat touched {age_secs}s ago (under {secs}s)")
            }
            Liveness::FutureHeartbeat { ahead_secs } => {
                write!(f, ".heartbeat mtime {ahead_secs}s in the future")
            }
            Liveness::StaleHeartbeat { age_secs } => write!(
                f,
                ".heartbeat last touched {age_secs}s ago ({secs}s or more): left by a stopped \
                 container"
            ),
            Liveness::HeartbeatUnusable { detail } => {
                write!(f, "cannot tell from .heartbeat: {detail}")
            }
        }
    }
}

/// What the `.heartbeat` of a session is, looked at without following or opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatLook {
    /// There is none.
    Missing,
    /// A regular file with this mtime (milliseconds since the Unix epoch).
    Touched {
        /// Its mtime.
        mtime_ms: i64,
    },
    /// Something else, or an error: in words.
    Unusable(String),
}

/// Looks at `paths.heartbeat` with `lstat` relative to a no-follow folder descriptor.
pub fn look_at_heartbeat(paths: &SessionPaths) -> HeartbeatLook {
    match entry_info(&paths.heartbeat) {
        Ok(None) => HeartbeatLook::Missing,
        Ok(Some(info)) if info.kind == NodeKind::Regular => HeartbeatLook::Touched {
            mtime_ms: info.mtime_ms,
        },
        Ok(Some(info)) => HeartbeatLook::Unusable(format!(
            "{} is {}, not a regular file",
            paths.heartbeat.display(),
            info.kind.describe()
        )),
        Err(e) => HeartbeatLook::Unusable(e.to_string()),
    }
}

/// Decides whether the container of the session at `paths` runs, at `now_ms` (milliseconds
/// since the Unix epoch).
pub fn decide(paths: &SessionPaths, list: &RunningList, force: bool, now_ms: i64) -> Liveness {
    if force {
        return Liveness::Forced;
    }
    if list.given {
        if let Some(by) = list.named.get(&key(&paths.dir)) {
            return Liveness::NamedRunning { by: by.clone() };
        }
        return if list.none {
            Liveness::NoneRunning
        } else {
            Liveness::NotNamed
        };
    }
    match look_at_heartbeat(paths) {
        HeartbeatLook::Missing => Liveness::NoHeartbeat,
        HeartbeatLook::Unusable(detail) => Liveness::HeartbeatUnusable { detail },
        HeartbeatLook::Touched { mtime_ms } => {
            let age = now_ms.saturating_sub(mtime_ms);
            let secs = |ms: i64| u64::try_from(ms / 1000).unwrap_or(0);
            if age < 0 {
                Liveness::FutureHeartbeat {
                    ahead_secs: secs(age.saturating_neg()),
                }
            } else if u128::from(age.unsigned_abs()) < FRESH_HEARTBEAT.as_millis() {
                Liveness::FreshHeartbeat {
                    age_secs: secs(age),
                }
            } else {
                Liveness::StaleHeartbeat {
                    age_secs: secs(age),
                }
            }
        }
    }
}
