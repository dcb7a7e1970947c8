//! What validation reports: [`MountValidation`], with a [`RejectReason`] per refused mount and
//! the [`MountWarning`]s.

use super::ValidatedMount;
use crate::config::AdditionalMount;
use crate::mount_plan::ContainerPath;
use std::path::PathBuf;

/// An additional mount that was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("additional mount {}: {reason}", mount.host_path.display())]
#[non_exhaustive]
pub struct RejectedMount {
    /// The mount as configured.
    pub mount: AdditionalMount,
    /// Why it was refused.
    pub reason: RejectReason,
}

/// Why an additional mount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// There is no allowlist, so no additional mount is allowed.
    #[error("no mount allowlist (expected at {})", show(expected_at))]
    NoAllowlist {
        /// Where the allowlist was expected, if known.
        expected_at: Option<PathBuf>,
    },
    /// The host path contains NUL.
    #[error("host path contains NUL")]
    HostPathHasNul,
    /// The host path is relative (or `~user/...`).
    #[error("host path is not absolute (nor under '~/')")]
    NotAbsolute,
    /// The host path starts with `~` but `$HOME` is unknown.
    #[error("host path starts with '~' but the host's $HOME is unknown")]
    HomeUnknown,
    /// The path inside the container is unusable.
    #[error("container path {path:?} under /workspace/extra is refused: it {reason}")]
    InvalidContainerPath {
        /// The path as given, or the host path's base name.
        path: String,
        /// The broken rule.
        reason: &'static str,
    },
    /// The host path does not exist (or a symlink in it dangles).
    #[error("host path does not exist")]
    Missing,
    /// The host path could not be resolved.
    #[error("cannot resolve host path: {message}")]
    Unresolvable {
        /// The system's message.
        message: String,
    },
    /// The real path cannot be carried to the container runtime (a `,`, `"` or control
    /// character in it).
    #[error("real path {} cannot be mounted: it {reason}", real_path.display())]
    UnusableRealPath {
        /// The canonical path.
        real_path: PathBuf,
        /// The broken rule.
        reason: &'static str,
    },
    /// The real path is neither a regular file nor a folder.
    #[error("real path {} is a {kind}, neither a file nor a folder", real_path.display())]
    NotFileOrDir {
        /// The canonical path.
        real_path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A blocked pattern occurs in the real path (or in the path as given).
    #[error("{} matches blocked pattern {pattern:?}", path.display())]
    Blocked {
        /// The pattern.
        pattern: String,
        /// The path it occurs in.
        path: PathBuf,
    },
    /// The real path contains, or is inside, a path no mount may reach (the allowlist's
    /// folder, the host's data).
    #[error("real path {} overlaps the protected {}", real_path.display(), protected.display())]
    Protected {
        /// The canonical path.
        real_path: PathBuf,
        /// The protected path.
        protected: PathBuf,
    },
    /// The real path is under no allowed root.
    #[error("real path {} is under no allowed root", real_path.display())]
    NotUnderAllowedRoot {
        /// The canonical path.
        real_path: PathBuf,
    },
    /// An earlier accepted mount has the same container path.
    #[error("another additional mount already uses {target}")]
    DuplicateContainerPath {
        /// The target.
        target: ContainerPath,
    },
    /// An earlier accepted mount's container path contains this one's, or the reverse.
    #[error("{target} overlaps the additional mount at {other}")]
    NestedContainerPath {
        /// This mount's target.
        target: ContainerPath,
        /// The earlier mount's target.
        other: ContainerPath,
    },
}

/// Something the caller should know that did not refuse a mount by itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountWarning {
    /// There is no allowlist: every additional mount was refused.
    #[error(
        "no mount allowlist: {rejected} additional mount(s) refused; create it at {} \
         (outside every folder a container can reach)",
        show(expected_at)
    )]
    NoAllowlist {
        /// Where the allowlist is expected, if known.
        expected_at: Option<PathBuf>,
        /// How many mounts were refused for it.
        rejected: usize,
    },
    /// An allowed root could not be resolved and was skipped.
    #[error("allowed root {} skipped: {message}", root.display())]
    RootUnavailable {
        /// The root as written.
        root: PathBuf,
        /// Why.
        message: String,
    },
    /// A mount asked for read-write under a root that only allows reading.
    #[error(
        "additional mount {} is read-only: its allowed root {} does not allow read-write",
        host_path.display(),
        root.display()
    )]
    DowngradedToReadOnly {
        /// The mount's host path as configured.
        host_path: PathBuf,
        /// The root's real path.
        root: PathBuf,
    },
}

fn show(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "$HOME/.config/sessionbus/mount-allowlist.json, but $HOME is unknown".into(),
    }
}

/// What [`validate`](super::validate) decided, mount by mount (each list in configuration order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MountValidation {
    /// The mounts to make.
    pub accepted: Vec<ValidatedMount>,
    /// The mounts refused.
    pub rejected: Vec<RejectedMount>,
    /// Warnings (also logged with `tracing::warn!`).
    pub warnings: Vec<MountWarning>,
}
