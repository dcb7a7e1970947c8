//! Which of a group's `additionalMounts` (from `container.json`, which the container's side
//! of the world can influence) the host actually mounts.
//!
//! The host reads a [`MountAllowlist`] from a file the container can never reach
//! ([`MountAllowlist::default_path`], `$HOME/.config/sessionbus/mount-allowlist.json`), and
//! [`validate`] (or a configured [`Validator`]) checks each
//! [`AdditionalMount`](crate::config::AdditionalMount) against it. A mount is accepted only
//! when all of these hold, in this order:
//!
//! 1. there is an allowlist (without one every mount is refused, with one warning saying
//!    where the file is expected);
//! 2. the host path has no NUL and is absolute, or `~`/`~/...` expanded from `$HOME`;
//! 3. the container path `<p>` (the configured `containerPath`, or the host path's base
//!    name) is not empty, does not start with `/`, and `/workspace/extra/<p>` is a valid
//!    [`ContainerPath`](crate::mount_plan::ContainerPath) (no `..` or `.` component, no `:`,
//!    `,`, NUL or control character);
//! 4. the host path exists; its real path (every symlink resolved with
//!    [`std::fs::canonicalize`]) is what gets mounted, and what every later rule looks at;
//! 5. the real path can be carried to the container runtime (no `,`, `"` or control
//!    character);
//! 6. no blocked pattern ([`DEFAULT_BLOCKED_PATTERNS`] and the file's) occurs in the real
//!    path, nor in the path as given, ignoring ASCII case;
//! 7. the real path neither contains nor lies inside a protected path: the allowlist's folder
//!    (a container able to write the allowlist could grant itself anything on its next start)
//!    and whatever the caller adds with [`Validator::protect`] (the host's data dir);
//! 8. the real path is under the real path of an allowed root, the root itself included,
//!    compared by path components (`/data2` is not under `/data`);
//! 9. it is a regular file or a folder;
//! 10. no earlier accepted mount has the same container path, or one containing it or inside
//!     it.
//!
//! An accepted mount is read-write only when it asks to be (`"readonly": false`) and its
//! allowed root allows it (the deepest matching root decides); otherwise it is read-only, with
//! a [`MountWarning::DowngradedToReadOnly`]. Rejections and warnings are returned and logged
//! with `tracing::warn!`.
//!
//! Blocked patterns look at the mounted path only, not at what is inside it: mounting a
//! folder that holds a `.ssh` folder exposes it. Validate right before every start: the real
//! path is resolved now, and a symlink swapped later (by anyone who can write above it, for
//! example another container with a read-write mount there) would be followed by the mount.
//! Keep allowed roots out of every folder a container can write.

mod allowlist;
mod report;
mod validate;

pub use allowlist::{
    AllowedRoot, AllowlistError, MountAllowlist, DEFAULT_ALLOWLIST_RELATIVE,
    DEFAULT_BLOCKED_PATTERNS, MAX_ALLOWLIST_BYTES,
};
pub use report::{MountValidation, MountWarning, RejectReason, RejectedMount};
pub use validate::{validate, ValidatedMount, Validator};

use std::path::PathBuf;

/// `$HOME` when it is set and absolute.
pub(crate) fn home_from_env() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}
