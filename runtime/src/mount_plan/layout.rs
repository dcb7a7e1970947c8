//! The host-side layout of a group and its sessions, and where each part appears inside the
//! container. See the [module documentation](super) for the picture.

use super::{ContainerPath, PlanError};
use sessionbus_schema::{At, Role};
use std::path::{Path, PathBuf};

/// The folder under the data dir holding one folder per group.
pub const SESSIONS_DIR: &str = "v2-sessions";
/// The container's writable area inside a session folder (the store's
/// [`CONTAINER_AREA`](sessionbus_store::CONTAINER_AREA)).
pub const CONTAINER_AREA_DIR: &str = sessionbus_store::CONTAINER_AREA;
/// The host's database inside a session folder.
pub const INBOUND_DB_FILE: &str = "inbound.db";
/// The host's generation stamps inside a session folder (the store's
/// [`STAMP_DIR_NAME`](sessionbus_store::stamp::STAMP_DIR_NAME)).
pub const STAMPS_DIR: &str = sessionbus_store::stamp::STAMP_DIR_NAME;
/// The attachments the host wrote for the agent, inside a session folder.
pub const INBOX_DIR: &str = "inbox";
/// The host's own per-group files inside a group folder; never mounted read-write.
pub const GROUP_HOST_DIR: &str = ".sessionbus-host";
/// The group's `container.json` inside [`GROUP_HOST_DIR`].
pub const CONTAINER_JSON_FILE: &str = "container.json";
/// The group's skill links inside [`GROUP_HOST_DIR`].
pub const SKILL_LINKS_DIR: &str = "skills";
/// The group's container-writable `~/.claude` inside a group folder.
pub const CLAUDE_SHARED_DIR: &str = ".claude-shared";

/// `/workspace`: the container's writable area.
pub const WORKSPACE: ContainerPath = ContainerPath::from_static("/workspace");
/// `/workspace/inbound.db`, read-only.
pub const INBOUND_TARGET: ContainerPath = ContainerPath::from_static("/workspace/inbound.db");
/// `/workspace/.inbound-generation`, read-only.
pub const STAMPS_TARGET: ContainerPath =
    ContainerPath::from_static("/workspace/.inbound-generation");
/// `/workspace/inbox`, read-only.
pub const INBOX_TARGET: ContainerPath = ContainerPath::from_static("/workspace/inbox");
/// `/workspace/agent`: the group's agent folder, writable.
pub const AGENT_TARGET: ContainerPath = ContainerPath::from_static("/workspace/agent");
/// `/workspace/agent/container.json`, read-only (the runner's
/// [`CONTAINER_JSON_PATH`](crate::config::CONTAINER_JSON_PATH)).
pub const CONTAINER_JSON_TARGET: ContainerPath =
    ContainerPath::from_static("/workspace/agent/container.json");
/// `/home/node/.claude`: the group's shared Claude folder, writable.
pub const CLAUDE_TARGET: ContainerPath = ContainerPath::from_static("/home/node/.claude");
/// `/home/node/.claude/skills`: the group's skill links, read-only.
pub const SKILL_LINKS_TARGET: ContainerPath =
    ContainerPath::from_static("/home/node/.claude/skills");
/// `/app/src`: the shared agent source, read-only.
pub const APP_SRC_TARGET: ContainerPath = ContainerPath::from_static("/app/src");
/// `/app/skills`: the shared skills, read-only (where the skill links point).
pub const SHARED_SKILLS_TARGET: ContainerPath = ContainerPath::from_static("/app/skills");
/// `/workspace/extra`: where validated additional mounts appear, one sub-path each.
pub const EXTRA_ROOT: ContainerPath = ContainerPath::from_static("/workspace/extra");

/// One session's host paths that the container sees. Build it with
/// [`SessionMounts::for_session_dir`], or by hand for another layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMounts {
    /// The session folder, host-owned (0755): the container cannot write here. Not mounted
    /// itself; no read-write mount may contain it.
    pub session_dir: PathBuf,
    /// `container/`: the container's writable area, mounted at [`WORKSPACE`].
    pub container_area: PathBuf,
    /// `inbound.db`: the host's file, mounted read-only at [`INBOUND_TARGET`].
    pub inbound: PathBuf,
    /// `.inbound-generation/`: the host's stamps, mounted read-only at [`STAMPS_TARGET`].
    pub stamps: PathBuf,
    /// `inbox/`: the host's attachments, mounted read-only at [`INBOX_TARGET`].
    pub inbox: PathBuf,
}

impl SessionMounts {
    /// The mounts of a split-layout session (the store's [`sessionbus_store::SessionPaths`]).
    pub fn from_paths(paths: &sessionbus_store::SessionPaths) -> Self {
        SessionMounts {
            session_dir: paths.dir.clone(),
            container_area: paths.container_dir.clone(),
            inbound: paths.inbound.clone(),
            stamps: paths.stamps.clone(),
            inbox: paths.inbox.clone(),
        }
    }

    /// The layout's paths inside session folder `dir` (`<data>/v2-sessions/<group>/<session>`).
    pub fn for_session_dir(dir: impl Into<PathBuf>) -> Self {
        SessionMounts::from_paths(&sessionbus_store::SessionPaths::new(dir))
    }
}

/// One group's host paths that its containers see. Build it with [`GroupMounts::for_group`],
/// or by hand for another layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMounts {
    /// The group's agent folder (caller-chosen), mounted writable at [`AGENT_TARGET`].
    pub agent_dir: PathBuf,
    /// `.sessionbus-host/container.json`, mounted read-only at [`CONTAINER_JSON_TARGET`].
    pub container_json: PathBuf,
    /// `.sessionbus-host/skills/`, the skill links, mounted read-only at
    /// [`SKILL_LINKS_TARGET`].
    pub skill_links: PathBuf,
    /// `.claude-shared/`, mounted writable at [`CLAUDE_TARGET`].
    pub claude_shared: PathBuf,
}

impl GroupMounts {
    /// The layout's paths for group `group_id` under `data_dir`
    /// (`<data_dir>/v2-sessions/<group_id>/...`), with the caller's `agent_dir`. The group id
    /// must be one plain folder name (the store's
    /// [`check_id`](sessionbus_store::validate::check_id) rules), else
    /// [`PlanError::InvalidGroupId`].
    pub fn for_group(
        data_dir: &Path,
        group_id: &str,
        agent_dir: impl Into<PathBuf>,
    ) -> Result<Self, PlanError> {
        sessionbus_store::validate::check_id(
            || At::new(data_dir, Role::Host, "locate group folder"),
            group_id,
        )
        .map_err(|source| PlanError::InvalidGroupId {
            group_id: group_id.to_owned(),
            source: Box::new(source),
        })?;
        let group = data_dir.join(SESSIONS_DIR).join(group_id);
        let host = group.join(GROUP_HOST_DIR);
        Ok(GroupMounts {
            agent_dir: agent_dir.into(),
            container_json: host.join(CONTAINER_JSON_FILE),
            skill_links: host.join(SKILL_LINKS_DIR),
            claude_shared: group.join(CLAUDE_SHARED_DIR),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_agree_with_the_rest_of_the_workspace() {
        assert_eq!(WORKSPACE.as_str(), sessionbus_store::WORKSPACE);
        assert_eq!(
            CONTAINER_JSON_TARGET.as_str(),
            crate::config::CONTAINER_JSON_PATH
        );
        assert_eq!(
            STAMPS_TARGET,
            WORKSPACE.join(STAMPS_DIR).expect("valid join")
        );
        assert_eq!(
            INBOUND_TARGET,
            WORKSPACE.join(INBOUND_DB_FILE).expect("valid join")
        );
        assert_eq!(INBOX_TARGET, WORKSPACE.join(INBOX_DIR).expect("valid join"));
        assert_eq!(
            SKILL_LINKS_TARGET,
            CLAUDE_TARGET.join(SKILL_LINKS_DIR).expect("valid join")
        );
    }

    #[test]
    fn layout_paths() {
        let s = SessionMounts::for_session_dir("/d/v2-sessions/g/s");
        assert_eq!(s.session_dir, Path::new("/d/v2-sessions/g/s"));
        assert_eq!(s.container_area, Path::new("/d/v2-sessions/g/s/container"));
        assert_eq!(s.inbound, Path::new("/d/v2-sessions/g/s/inbound.db"));
        assert_eq!(
            s.stamps,
            Path::new("/d/v2-sessions/g/s/.inbound-generation")
        );
        assert_eq!(s.inbox, Path::new("/d/v2-sessions/g/s/inbox"));

        let g = GroupMounts::for_group(Path::new("/d"), "g", "/agents/g").unwrap();
        assert_eq!(g.agent_dir, Path::new("/agents/g"));
        assert_eq!(
            g.container_json,
            Path::new("/d/v2-sessions/g/.sessionbus-host/container.json")
        );
        assert_eq!(
            g.skill_links,
            Path::new("/d/v2-sessions/g/.sessionbus-host/skills")
        );
        assert_eq!(
            g.claude_shared,
            Path::new("/d/v2-sessions/g/.claude-shared")
        );
    }

    #[test]
    fn group_ids_that_could_escape_are_refused() {
        for bad in ["", "..", ".", "a/b", "../x", "a\0b", "a\\b"] {
            match GroupMounts::for_group(Path::new("/d"), bad, "/a") {
                Err(PlanError::InvalidGroupId { group_id, .. }) => assert_eq!(group_id, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
