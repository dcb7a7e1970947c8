//! Starting and stopping containers: the [`ContainerControl`](crate::host::ContainerControl)
//! implementations the library ships.
//!
//! - [`ChildControl`]: the container is a plain child process on the host's own folders (no
//!   sandbox). For development and tests only: the container can then write everything the
//!   host process can.
//! - [`SandboxControl`]: the container runs inside bubblewrap (Debian package `bubblewrap`)
//!   as an unprivileged user, seeing exactly the session's [`MountPlan`](crate::mount_plan)
//!   (its writable area at `/workspace`, the host's files read-only on top, the group's
//!   folders, validated additional mounts) and nothing else of the host.
//! - [`DockerControl`]: the same plan rendered as `docker run` arguments.
//!
//! [`prepare_group`] creates a group's folders with the right owners and writes its
//! `container.json` where the container can read but never write it.

mod child;
mod docker;
mod group;
mod sandbox;

pub use child::ChildControl;
pub use docker::DockerControl;
pub use group::{prepare_group, GroupError, GroupPrepared};
pub use sandbox::{traversable_by_others, SandboxControl, SandboxOptions, DEFAULT_SYSTEM_MOUNTS};

use std::path::Path;

/// An error from the caller's side of one of the runtime's traits (a container that would not
/// start, a platform that refused a message): any error type, kept as the source of the
/// [`RuntimeError`](crate::error::RuntimeError) that reports it.
pub type CallerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The group id of a session folder `<data>/v2-sessions/<group>/<session>`: the name of its
/// parent folder.
pub fn group_of(session_dir: &Path) -> Option<&str> {
    session_dir.parent()?.file_name()?.to_str()
}

/// Kills `child` (SIGKILL) and reaps it; a child that already exited is just reaped.
fn kill_and_reap(child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    // An error here means the child already exited; `wait` reaps it either way.
    let _ = child.kill();
    child.wait()
}
