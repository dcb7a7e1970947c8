//! [`MountPlan`]: the ordered, checked list of mounts, and its rendering as `docker` and
//! `bwrap` mount arguments.

use super::layout::*;
use super::{check_host_path, Access, ContainerPath, Mount, MountKind, MountRole, PlanError};
use crate::mount_security::ValidatedMount;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The container's mounts, in the order they must be made. Built by [`MountPlan::builder`];
/// see the [module documentation](super) for the rules it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    mounts: Vec<Mount>,
}

/// Collects a [`MountPlan`]'s inputs; [`MountPlanBuilder::build`] checks them.
#[derive(Debug, Clone)]
#[must_use]
pub struct MountPlanBuilder {
    session: SessionMounts,
    group: GroupMounts,
    app_src: Option<PathBuf>,
    shared_skills: Option<PathBuf>,
    extras: Vec<ValidatedMount>,
}

impl MountPlanBuilder {
    /// Mounts the shared agent source read-only at [`APP_SRC_TARGET`].
    pub fn app_src(mut self, host_path: impl Into<PathBuf>) -> Self {
        self.app_src = Some(host_path.into());
        self
    }

    /// Mounts the shared skills read-only at [`SHARED_SKILLS_TARGET`] (where the group's
    /// skill links point).
    pub fn shared_skills(mut self, host_path: impl Into<PathBuf>) -> Self {
        self.shared_skills = Some(host_path.into());
        self
    }

    /// Adds additional mounts that passed [`crate::mount_security`] (typically
    /// `validation.accepted`), each under [`EXTRA_ROOT`].
    pub fn extra_mounts(mut self, mounts: impl IntoIterator<Item = ValidatedMount>) -> Self {
        self.extras.extend(mounts);
        self
    }

    /// Checks the inputs and orders the mounts. See the [module documentation](super) for
    /// what is refused.
    pub fn build(self) -> Result<MountPlan, PlanError> {
        use Access::{ReadOnly as Ro, ReadWrite as Rw};
        use MountKind::{Dir, File};
        let s = self.session;
        let g = self.group;
        let mut mounts = Vec::with_capacity(10 + self.extras.len());
        let mut add = |source: PathBuf, target, access, kind, role| {
            mounts.push(Mount {
                source,
                target,
                access,
                kind,
                role,
            })
        };
        // Each nested mount after the mount it sits on (bwrap and docker mount in order).
        add(
            s.container_area,
            WORKSPACE,
            Rw,
            Dir,
            MountRole::ContainerArea,
        );
        add(s.inbound, INBOUND_TARGET, Ro, File, MountRole::Inbound);
        add(s.stamps, STAMPS_TARGET, Ro, Dir, MountRole::Stamps);
        add(s.inbox, INBOX_TARGET, Ro, Dir, MountRole::Inbox);
        add(g.agent_dir, AGENT_TARGET, Rw, Dir, MountRole::AgentDir);
        add(
            g.container_json,
            CONTAINER_JSON_TARGET,
            Ro,
            File,
            MountRole::ContainerJson,
        );
        add(
            g.claude_shared,
            CLAUDE_TARGET,
            Rw,
            Dir,
            MountRole::ClaudeShared,
        );
        add(
            g.skill_links,
            SKILL_LINKS_TARGET,
            Ro,
            Dir,
            MountRole::SkillLinks,
        );
        if let Some(p) = self.app_src {
            add(p, APP_SRC_TARGET, Ro, Dir, MountRole::AppSrc);
        }
        if let Some(p) = self.shared_skills {
            add(p, SHARED_SKILLS_TARGET, Ro, Dir, MountRole::SharedSkills);
        }
        // A parent's target is a prefix of its children's, so sorting puts it first, whatever
        // order the validations came in.
        let mut extras = self.extras;
        extras.sort_by(|a, b| a.target().cmp(b.target()));
        for e in extras {
            add(
                e.host_path().to_path_buf(),
                e.target().clone(),
                e.access(),
                e.kind(),
                MountRole::Extra,
            );
        }

        check_host_path(&s.session_dir).map_err(|reason| PlanError::InvalidHostPath {
            role: MountRole::SessionDir,
            path: s.session_dir.clone(),
            reason,
        })?;
        for m in &mounts {
            check_host_path(&m.source).map_err(|reason| PlanError::InvalidHostPath {
                role: m.role,
                path: m.source.clone(),
                reason,
            })?;
        }
        check_order(mounts.iter().map(|m| (&m.target, m.source.as_path())))?;
        check_writable_sources(&mounts, &s.session_dir)?;
        Ok(MountPlan { mounts })
    }
}

impl MountPlan {
    /// Starts a plan for one session of one group.
    pub fn builder(session: SessionMounts, group: GroupMounts) -> MountPlanBuilder {
        MountPlanBuilder {
            session,
            group,
            app_src: None,
            shared_skills: None,
            extras: Vec::new(),
        }
    }

    /// The mounts, in the order they must be made.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The mount for `target`, if the plan has one.
    pub fn mount_at(&self, target: &ContainerPath) -> Option<&Mount> {
        self.mounts.iter().find(|m| &m.target == target)
    }

    /// `docker run` arguments, a `--mount` pair per mount, in order:
    /// `--mount type=bind,source=<host>,target=<container>[,readonly]`.
    ///
    /// `--mount` rather than `-v`: `-v` creates a missing host path as an empty root-owned
    /// folder (a missing `inbound.db` would become a folder in the host's session folder),
    /// while `--mount` refuses to start; and `-v` splits on `:`, which host paths may hold.
    /// `--mount` splits on `,` and quotes with `"`, which the plan refuses in every path.
    pub fn docker_args(&self) -> Vec<OsString> {
        let mut args = Vec::with_capacity(self.mounts.len() * 2);
        for m in &self.mounts {
            let mut spec = OsString::from("type=bind,source=");
            spec.push(&m.source);
            spec.push(",target=");
            spec.push(m.target.as_str());
            if m.access == Access::ReadOnly {
                spec.push(",readonly");
            }
            args.push(OsString::from("--mount"));
            args.push(spec);
        }
        args
    }

    /// bubblewrap arguments, `--bind <host> <container>` or `--ro-bind <host> <container>` per
    /// mount, in order. bubblewrap creates missing mount points itself.
    pub fn bwrap_args(&self) -> Vec<OsString> {
        let mut args = Vec::with_capacity(self.mounts.len() * 3);
        for m in &self.mounts {
            args.push(OsString::from(match m.access {
                Access::ReadOnly => "--ro-bind",
                Access::ReadWrite => "--bind",
            }));
            args.push(m.source.clone().into_os_string());
            args.push(OsString::from(m.target.as_str()));
        }
        args
    }

    /// Checks each source on the host, just before a start: it exists, is not a symlink (the
    /// plan takes canonical paths), and is a file or folder as the plan says. Missing sources
    /// would otherwise be created by the container runtime, or the start would fail halfway.
    pub fn verify_sources(&self) -> Result<(), PlanError> {
        for m in &self.mounts {
            let problem = |problem| PlanError::Source {
                role: m.role,
                path: m.source.clone(),
                problem,
            };
            let meta = match std::fs::symlink_metadata(&m.source) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(problem("does not exist")),
                Err(source) => {
                    return Err(PlanError::SourceIo {
                        role: m.role,
                        path: m.source.clone(),
                        source,
                    })
                }
            };
            let t = meta.file_type();
            if t.is_symlink() {
                return Err(problem("is a symbolic link (plans take canonical paths)"));
            }
            match m.kind {
                MountKind::Dir if !t.is_dir() => return Err(problem("is not a folder")),
                MountKind::File if !t.is_file() => return Err(problem("is not a regular file")),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Refuses two mounts at one target, and a mount followed by a mount on one of its parents
/// (which would hide it). `items` are (target, host path for messages), in mount order.
pub(crate) fn check_order<'a>(
    items: impl IntoIterator<Item = (&'a ContainerPath, &'a Path)>,
) -> Result<(), PlanError> {
    let items: Vec<_> = items.into_iter().collect();
    for (i, (earlier, first)) in items.iter().enumerate() {
        for (later, second) in items.iter().skip(i + 1) {
            if earlier == later {
                return Err(PlanError::DuplicateTarget {
                    target: (*earlier).clone(),
                    first: first.to_path_buf(),
                    second: second.to_path_buf(),
                });
            }
            if earlier.starts_with(later) {
                return Err(PlanError::Shadowed {
                    hidden: (*earlier).clone(),
                    by: (*later).clone(),
                });
            }
        }
    }
    Ok(())
}

/// Refuses a writable mount whose host folder is, or contains, a read-only mount's source or
/// the session folder. Compared by components on the canonical paths the plan requires.
fn check_writable_sources(mounts: &[Mount], session_dir: &Path) -> Result<(), PlanError> {
    let host_owned: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.access == Access::ReadOnly)
        .map(|m| m.source.as_path())
        .chain(std::iter::once(session_dir))
        .collect();
    for w in mounts.iter().filter(|m| m.access == Access::ReadWrite) {
        if let Some(owned) = host_owned.iter().find(|p| p.starts_with(&w.source)) {
            return Err(PlanError::WritableOverHostOwned {
                role: w.role,
                writable: w.source.clone(),
                target: w.target.clone(),
                host_owned: owned.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(agent_dir: &str) -> Result<MountPlan, PlanError> {
        let session = SessionMounts::for_session_dir("/d/v2-sessions/g/s");
        let group = GroupMounts::for_group(Path::new("/d"), "g", agent_dir)?;
        MountPlan::builder(session, group)
            .app_src("/opt/app")
            .build()
    }

    #[test]
    fn the_layout_in_mount_order() {
        let p = plan("/agents/g").unwrap();
        let got: Vec<(&str, Access)> = p
            .mounts()
            .iter()
            .map(|m| (m.target.as_str(), m.access))
            .collect();
        use Access::*;
        assert_eq!(
            got,
            [
                ("/workspace", ReadWrite),
                ("/workspace/inbound.db", ReadOnly),
                ("/workspace/.inbound-generation", ReadOnly),
                ("/workspace/inbox", ReadOnly),
                ("/workspace/agent", ReadWrite),
                ("/workspace/agent/container.json", ReadOnly),
                ("/home/node/.claude", ReadWrite),
                ("/home/node/.claude/skills", ReadOnly),
                ("/app/src", ReadOnly),
            ]
        );
        assert_eq!(
            p.mount_at(&INBOUND_TARGET).map(|m| m.kind),
            Some(MountKind::File)
        );
    }

    #[test]
    fn relative_and_unnormalised_host_paths_are_refused() {
        for bad in [
            "agents/g",
            "/agents/../g",
            "/agents/./g",
            "/agents/g/",
            "/a,b",
        ] {
            match plan(bad) {
                Err(PlanError::InvalidHostPath { role, path, .. }) => {
                    assert_eq!(role, MountRole::AgentDir);
                    assert_eq!(path, Path::new(bad));
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_writable_folder_over_host_owned_files_is_refused() {
        for bad in ["/d", "/d/v2-sessions", "/d/v2-sessions/g/s", "/"] {
            match plan(bad) {
                Err(PlanError::WritableOverHostOwned { role, .. }) => {
                    assert_eq!(role, MountRole::AgentDir, "{bad}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // Beside the host's files, or inside the container's own area, is fine.
        plan("/d/v2-sessions/g/agent").unwrap();
        plan("/d/v2-sessions/g/s/container/agent").unwrap();
    }

    #[test]
    fn order_checks() {
        let a = ContainerPath::from_static("/a");
        let ab = ContainerPath::from_static("/a/b");
        let ax = ContainerPath::from_static("/ax");
        let h = Path::new("/h");
        assert!(check_order([(&a, h), (&ab, h), (&ax, h)]).is_ok());
        assert!(matches!(
            check_order([(&ab, h), (&a, h)]),
            Err(PlanError::Shadowed { hidden, by }) if hidden == ab && by == a
        ));
        assert!(matches!(
            check_order([(&a, h), (&ax, h), (&a, Path::new("/i"))]),
            Err(PlanError::DuplicateTarget { target, second, .. })
                if target == a && second == Path::new("/i")
        ));
    }
}
