//! The container's view of the host: a typed, ordered list of bind mounts ([`MountPlan`]),
//! rendered for bubblewrap ([`BwrapCommand`]) or docker ([`DockerRunCommand`]).
//!
//! The container is hostile: whatever it can write is attacker input to the root host. So
//! nothing the host trusts is mounted read-write, and nothing the host trusts lives in a folder
//! the container can write. On the host:
//!
//! ```text
//! <data>/v2-sessions/<group>/<session>/      host-owned, 0755
//!     inbound.db                             -> /workspace/inbound.db               ro
//!     .inbound-generation/                   -> /workspace/.inbound-generation      ro
//!     inbox/                                 -> /workspace/inbox                    ro
//!     container/                             -> /workspace                          rw
//! <data>/v2-sessions/<group>/.sessionbus-host/   host-owned, never mounted read-write
//!     container.json                         -> /workspace/agent/container.json     ro
//!     skills/                                -> /home/node/.claude/skills           ro
//! <data>/v2-sessions/<group>/.claude-shared/ -> /home/node/.claude                  rw
//! <agent dir of the group>                   -> /workspace/agent                    rw
//! shared agent source (optional)             -> /app/src                            ro
//! shared skills (optional)                   -> /app/skills                         ro
//! validated additional mounts                -> /workspace/extra/<name>  ro unless granted
//! ```
//!
//! [`MountPlan::builder`] takes these as [`SessionMounts`] and [`GroupMounts`] (derived from
//! the layout by [`SessionMounts::for_session_dir`] and [`GroupMounts::for_group`]) plus the
//! optional shared folders and the additional mounts that passed
//! [`crate::mount_security`] (a [`ValidatedMount`](crate::mount_security::ValidatedMount)
//! comes from nowhere else). The plan:
//!
//! - lists the mounts in the order above, so that a mount nested in another comes after it
//!   (the read-only files and folders inside the writable `/workspace`, `container.json`
//!   inside the writable agent folder, the skill links inside the writable `~/.claude`);
//!   additional mounts come last, sorted by target so that a parent comes before its child;
//! - refuses two mounts at one target ([`PlanError::DuplicateTarget`]) and a mount that a
//!   later one would hide ([`PlanError::Shadowed`]);
//! - refuses relative or unnormalised host paths ([`PlanError::InvalidHostPath`]): host paths
//!   are emitted as given and must already be absolute and canonical (symlinks resolved);
//! - refuses a writable mount whose host folder contains a read-only mount's source or the
//!   session folder ([`PlanError::WritableOverHostOwned`]): through it the container could
//!   write what the host trusts.
//!
//! A nested mount point inside a writable mount (for example `/workspace/inbound.db` inside
//! `container/`) is created by bubblewrap or docker as an empty file or folder in the host
//! folder behind the writable mount, which is the container's own; the host must never read
//! those placeholders as its own files. Nested targets are resolved inside the sandbox's
//! mount namespace, so a symlink the container planted there (say `/workspace/inbox ->
//! /etc`) can only redirect the mount inside its own view; [`MountPlan::verify_sources`]
//! checks the host side (every source present, of its kind, and not a symlink) just before a
//! start.
//!
//! Nothing here spawns a process: [`BwrapCommand::command`] returns a
//! [`std::process::Command`] for the caller to run, and [`DockerRunCommand::args`] the
//! argument vector for `docker`.

mod command;
mod layout;
mod paths;
mod plan;

pub use command::{BwrapCommand, DockerRunCommand, DEFAULT_BWRAP};
pub use layout::*;
pub use paths::{ContainerPath, ContainerPathError, MAX_PATH_BYTES};
pub use plan::{MountPlan, MountPlanBuilder};

pub(crate) use paths::check_host_path;

use sessionbus_store::StoreError;
use std::fmt;
use std::path::PathBuf;

/// Whether the container may write through a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The container can read but not write (`--ro-bind`, `readonly`).
    ReadOnly,
    /// The container can read and write (`--bind`).
    ReadWrite,
}

/// What a mount's source is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountKind {
    /// A regular file (bound onto a file).
    File,
    /// A folder.
    Dir,
}

/// What a mount is for in the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MountRole {
    /// The session's `container/` at `/workspace`.
    ContainerArea,
    /// The session's `inbound.db`.
    Inbound,
    /// The session's `.inbound-generation/`.
    Stamps,
    /// The session's `inbox/`.
    Inbox,
    /// The group's agent folder.
    AgentDir,
    /// The group's `container.json`.
    ContainerJson,
    /// The group's `.claude-shared/`.
    ClaudeShared,
    /// The group's skill links.
    SkillLinks,
    /// The shared agent source.
    AppSrc,
    /// The shared skills.
    SharedSkills,
    /// A validated additional mount.
    Extra,
    /// A base system folder of a [`BwrapCommand`] (never part of a [`MountPlan`]).
    System,
    /// The session folder itself: not mounted, but checked as the host-owned parent of the
    /// session's mounts (never the role of a [`Mount`]).
    SessionDir,
}

impl fmt::Display for MountRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MountRole::ContainerArea => "container area",
            MountRole::Inbound => "inbound.db",
            MountRole::Stamps => "generation stamps",
            MountRole::Inbox => "inbox",
            MountRole::AgentDir => "agent folder",
            MountRole::ContainerJson => "container.json",
            MountRole::ClaudeShared => ".claude-shared",
            MountRole::SkillLinks => "skill links",
            MountRole::AppSrc => "shared agent source",
            MountRole::SharedSkills => "shared skills",
            MountRole::Extra => "additional mount",
            MountRole::System => "system mount",
            MountRole::SessionDir => "session folder",
        })
    }
}

/// One bind mount of a [`MountPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Mount {
    /// The host path, absolute and canonical, emitted as is.
    pub source: PathBuf,
    /// Where it appears inside the container.
    pub target: ContainerPath,
    /// Whether the container may write through it.
    pub access: Access,
    /// A file or a folder.
    pub kind: MountKind,
    /// What it is for.
    pub role: MountRole,
}

/// Why a mount plan or a command rendered from it was refused. Every variant names the path
/// or value concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A host path is relative, unnormalised, or holds a character the renderers cannot carry.
    #[error("{role} {}: host path is refused: it {reason}", path.display())]
    InvalidHostPath {
        /// What the path is for.
        role: MountRole,
        /// The path as given.
        path: PathBuf,
        /// The broken rule.
        reason: &'static str,
    },
    /// A path meant for inside the container is invalid.
    #[error(transparent)]
    InvalidContainerPath(#[from] ContainerPathError),
    /// A group id would not be one plain folder name.
    #[error("group id {group_id:?} is refused: {source}")]
    InvalidGroupId {
        /// The id as given.
        group_id: String,
        /// The store's check, naming the data dir and the rule.
        #[source]
        source: Box<StoreError>,
    },
    /// Two mounts would land on one target.
    #[error("two mounts at {target}: {} and {}", first.display(), second.display())]
    DuplicateTarget {
        /// The target.
        target: ContainerPath,
        /// The first mount's host path.
        first: PathBuf,
        /// The second mount's host path.
        second: PathBuf,
    },
    /// A mount comes before a mount on one of its parents, which would hide it.
    #[error("the mount at {hidden} would be hidden by the later mount at {by}")]
    Shadowed {
        /// The earlier, nested target.
        hidden: ContainerPath,
        /// The later target on one of its parents.
        by: ContainerPath,
    },
    /// A writable mount's host folder contains a host-owned path, so the container could
    /// write what the host trusts.
    #[error(
        "{role} {} is mounted writable at {target} but contains the host-owned {}",
        writable.display(),
        host_owned.display()
    )]
    WritableOverHostOwned {
        /// What the writable mount is for.
        role: MountRole,
        /// Its host path.
        writable: PathBuf,
        /// Its target.
        target: ContainerPath,
        /// The host-owned path inside it.
        host_owned: PathBuf,
    },
    /// A mount's source is not what the plan says (missing, a symlink, the wrong kind).
    #[error("{role} {}: mount source {problem}", path.display())]
    Source {
        /// What the mount is for.
        role: MountRole,
        /// The host path.
        path: PathBuf,
        /// What is wrong, e.g. `does not exist`.
        problem: &'static str,
    },
    /// Inspecting a mount's source failed.
    #[error("{role} {}: cannot inspect mount source: {source}", path.display())]
    SourceIo {
        /// What the mount is for.
        role: MountRole,
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An argument of a command is refused (empty program, a bad environment variable name,
    /// a container name or image docker would misread).
    #[error("{what} {value:?} is refused: it {reason}")]
    InvalidArgument {
        /// What the value is, e.g. `environment variable name`.
        what: &'static str,
        /// The value, lossily as text.
        value: String,
        /// The broken rule.
        reason: &'static str,
    },
}
