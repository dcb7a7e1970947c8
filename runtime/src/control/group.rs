//! A group's folders on the host, with the owners the trust boundary needs, and its
//! `container.json` written where the container reads it but cannot change it.

use crate::config::ContainerConfig;
use crate::mount_plan::GroupMounts;
use sessionbus_store::Ownership;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A group's folders could not be prepared, or its `container.json` not written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// Something other than a real folder is where a folder belongs (a link, a file).
    #[error("{path}: expected a folder, found a link or a file")]
    NotAFolder {
        /// The path.
        path: PathBuf,
    },
    /// The system refused an operation.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration could not be serialised.
    #[error("{path}: cannot write the configuration: {source}")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// What [`prepare_group`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupPrepared {
    /// Folders it created.
    pub created: Vec<PathBuf>,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> GroupError + 'a {
    move |source| GroupError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Makes `path` a real folder (creating it when missing, refusing a link or a file in its
/// place) and returns whether it was created.
fn ensure_dir(path: &Path) -> Result<bool, GroupError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => Err(GroupError::NotAFolder {
            path: path.to_path_buf(),
        }),
        Err(_) => {
            std::fs::create_dir_all(path).map_err(io(path, "create"))?;
            Ok(true)
        }
    }
}

/// Prepares a group for its containers: the host's folder (`.sessionbus-host/`, mode 0755,
/// with the skill-link folder) and the group's `container.json` in it, written whole through
/// a temporary file and a rename; the agent folder and `.claude-shared/`, given to
/// `container` (its uid and gid) when they are created here. A folder that already exists is
/// left as it is (only a link or a file in its place is refused): the container's folders are
/// the container's.
pub fn prepare_group(
    group: &GroupMounts,
    container: Option<Ownership>,
    config: &ContainerConfig,
) -> Result<GroupPrepared, GroupError> {
    let mut out = GroupPrepared::default();
    let host_dir = group
        .container_json
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    for dir in [&host_dir, &group.skill_links] {
        if ensure_dir(dir)? {
            out.created.push(dir.clone());
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io(dir, "set the mode of"))?;
    }
    config.save(&group.container_json)?;
    for dir in [&group.agent_dir, &group.claude_shared] {
        if ensure_dir(dir)? {
            out.created.push(dir.clone());
            if let Some(o) = container {
                std::os::unix::fs::lchown(dir, Some(o.uid), Some(o.gid))
                    .map_err(io(dir, "hand to the container"))?;
            }
        }
    }
    Ok(out)
}

impl ContainerConfig {
    /// Writes this configuration to `path` as pretty JSON (camelCase, as the runner reads
    /// it), whole or not at all: into a new temporary file next to it (created exclusively,
    /// never through a link), synced, then renamed over `path`. Mode 0644. `path` belongs in a
    /// folder only the host writes (see [`crate::mount_plan`]).
    pub fn save(&self, path: &Path) -> Result<(), GroupError> {
        let text = serde_json::to_string_pretty(self).map_err(|source| GroupError::Serialize {
            path: path.to_path_buf(),
            source,
        })?;
        let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io(&tmp, "create"))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(io(&tmp, "write"))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path, "replace"))
    }
}
