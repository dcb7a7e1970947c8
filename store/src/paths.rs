//! Where a session's files live, in either of the two folder layouts.
//!
//! **Split layout** (what [`crate::provision`] creates). Nothing the host trusts sits in a
//! folder the container can write:
//!
//! ```text
//! <session>/                 the host's (0755): the container cannot create or rename here
//!   inbound.db               the host's file; the container sees it read-only
//!   .inbound-generation/     the host's commit stamps (see crate::stamp)
//!   inbox/                   attachments the host wrote for the agent
//!   container/               the container's writable area, its /workspace
//!     outbound.db            the container's file (and its journal)
//!     outbox/                attachments the agent wrote
//!     .heartbeat             touched by the container
//! ```
//!
//! Inside the container the mount plan assembles the view the older implementation expects:
//! `container/` at `/workspace` (read-write) with `inbound.db`, `inbox/` and
//! `.inbound-generation/` mounted read-only on top. So the container's view is always the
//! **single layout**: one folder holding everything, which is also how the older host lays out
//! its sessions. In that layout on the host the container can write the folder that holds
//! inbound.db, and the host cannot be protected from it (a planted journal, a replaced file):
//! such sessions keep working, and `sessionbus migrate` converts them while no container
//! runs.

use crate::error::Result;
use crate::stamp::STAMP_DIR_NAME;
use crate::validate::check_id;
use sessionbus_schema::{At, FileKind, Role};
use std::path::{Path, PathBuf};

/// Where the session folder is mounted inside a container.
pub const WORKSPACE: &str = "/workspace";

/// The name of the container's writable area inside a split-layout session folder.
pub const CONTAINER_AREA: &str = "container";

/// How a session folder is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The host's files and the container's writable area are separate folders.
    Split,
    /// One folder holds everything: the container's view, and the older host's layout.
    Single,
}

/// The fixed paths of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPaths {
    /// The session folder.
    pub dir: PathBuf,
    /// How it is laid out.
    pub layout: Layout,
    /// The folder the container writes (`dir/container` split, `dir` single).
    pub container_dir: PathBuf,
    /// `inbound.db`.
    pub inbound: PathBuf,
    /// `outbound.db`.
    pub outbound: PathBuf,
    /// `.heartbeat`.
    pub heartbeat: PathBuf,
    /// `inbox/`: attachments the host decoded for the agent.
    pub inbox: PathBuf,
    /// `outbox/`: attachments the agent produced.
    pub outbox: PathBuf,
    /// `.inbound-generation/`: the host's commit stamps.
    pub stamps: PathBuf,
}

impl SessionPaths {
    /// The split layout rooted at `dir` (what [`crate::provision`] creates).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let area = dir.join(CONTAINER_AREA);
        SessionPaths {
            inbound: dir.join(FileKind::Inbound.file_name()),
            inbox: dir.join("inbox"),
            stamps: dir.join(STAMP_DIR_NAME),
            outbound: area.join(FileKind::Outbound.file_name()),
            heartbeat: area.join(".heartbeat"),
            outbox: area.join("outbox"),
            container_dir: area,
            layout: Layout::Split,
            dir,
        }
    }

    /// The single layout rooted at `dir`: the container's view of its workspace, and a
    /// session folder the older host created.
    pub fn single(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        SessionPaths {
            inbound: dir.join(FileKind::Inbound.file_name()),
            inbox: dir.join("inbox"),
            stamps: dir.join(STAMP_DIR_NAME),
            outbound: dir.join(FileKind::Outbound.file_name()),
            heartbeat: dir.join(".heartbeat"),
            outbox: dir.join("outbox"),
            container_dir: dir.clone(),
            layout: Layout::Single,
            dir,
        }
    }

    /// The container's conventional paths (`/workspace/...`, the single layout).
    pub fn workspace() -> Self {
        SessionPaths::single(WORKSPACE)
    }

    /// The layout of `dir` as the host must treat it: split when `dir/container` is a real
    /// folder **and** `dir` itself cannot be written by anyone but this process's user (the
    /// container runs as another user); otherwise single. A folder the container can write is
    /// never taken for the split layout, whatever it holds. A folder that does not exist yet
    /// is split (what provisioning will create).
    pub fn for_host(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        if !dir.exists() || (has_area(&dir) && only_we_write(&dir)) {
            SessionPaths::new(dir)
        } else {
            SessionPaths::single(dir)
        }
    }

    /// The layout of `dir` as the container sees it: split when `dir/container` is a real
    /// folder (a container started without a sandbox, on the host's folder), single otherwise
    /// (its `/workspace`, or an older host's folder).
    pub fn for_container(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        if has_area(&dir) {
            SessionPaths::new(dir)
        } else {
            SessionPaths::single(dir)
        }
    }

    /// `<data_dir>/v2-sessions/<agent_group_id>/<session_id>` as the host sees it, refusing
    /// ids that could escape the data dir.
    pub fn in_data_dir(data_dir: &Path, agent_group_id: &str, session_id: &str) -> Result<Self> {
        let at = || At::new(data_dir, Role::Host, "locate session folder");
        check_id(at, agent_group_id)?;
        check_id(at, session_id)?;
        if session_id.starts_with('.') {
            // `.sessionbus-host/` and `.claude-shared/` sit beside the sessions of a group.
            return Err(crate::error::StoreError::InvalidId {
                at: at(),
                id: session_id.to_owned(),
                reason: "it starts with '.', which names the group's own folders",
            });
        }
        Ok(SessionPaths::for_host(
            data_dir
                .join("v2-sessions")
                .join(agent_group_id)
                .join(session_id),
        ))
    }
}

/// `dir/container` is a real folder (not a link to one).
fn has_area(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(CONTAINER_AREA)).is_ok_and(|m| m.is_dir())
}

/// `dir` is a real folder owned by this process's user that neither its group nor others may
/// write: no other user (the container's) can create, replace or rename anything in it.
pub fn only_we_write(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_layouts_place_the_container_files_apart_or_together() {
        let s = SessionPaths::new("/d/s");
        assert_eq!(s.inbound, Path::new("/d/s/inbound.db"));
        assert_eq!(s.outbound, Path::new("/d/s/container/outbound.db"));
        assert_eq!(s.heartbeat, Path::new("/d/s/container/.heartbeat"));
        assert_eq!(s.inbox, Path::new("/d/s/inbox"));
        assert_eq!(s.outbox, Path::new("/d/s/container/outbox"));
        assert_eq!(s.stamps, Path::new("/d/s/.inbound-generation"));
        let w = SessionPaths::workspace();
        assert_eq!(w.outbound, Path::new("/workspace/outbound.db"));
        assert_eq!(w.container_dir, Path::new("/workspace"));
        assert_eq!(w.layout, Layout::Single);
    }

    #[test]
    fn the_host_takes_a_folder_others_can_write_for_the_single_layout() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("s");
        assert_eq!(SessionPaths::for_host(&s).layout, Layout::Split);
        std::fs::create_dir(&s).unwrap();
        assert_eq!(SessionPaths::for_host(&s).layout, Layout::Single);
        std::fs::create_dir(s.join(CONTAINER_AREA)).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(SessionPaths::for_host(&s).layout, Layout::Split);
        // A container that can write the folder could have made `container/` itself.
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(SessionPaths::for_host(&s).layout, Layout::Single);
        assert_eq!(SessionPaths::for_container(&s).layout, Layout::Split);
    }
}
