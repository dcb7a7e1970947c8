//! Containers run by Docker from the same mount plan.

use super::{group_of, CallerError};
use crate::host::ContainerControl;
use crate::liveness::KillReason;
use crate::mount_plan::{DockerRunCommand, GroupMounts, MountPlan, SessionMounts, WORKSPACE};
use sessionbus_store::SessionPaths;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Starts each session's container with `docker run`, from the session's [`MountPlan`]
/// rendered as `--mount` options (see [`DockerRunCommand`]): the same view bubblewrap gives,
/// in the image's file system. Containers are named `sessionbus-<group>-<session>`; running
/// means `docker inspect` says so; a kill is `docker kill`.
#[derive(Debug, Clone)]
pub struct DockerControl {
    /// The `docker` client.
    pub docker: PathBuf,
    /// The image to run.
    pub image: String,
    /// The program inside the image, started as `program --workspace /workspace <args...>`.
    pub program: OsString,
    /// Arguments after `--workspace /workspace`.
    pub args: Vec<OsString>,
    /// The container's user.
    pub uid: u32,
    /// The container's group.
    pub gid: u32,
    /// The data dir holding `v2-sessions/<group>/<session>/`.
    pub data_dir: PathBuf,
    /// The folder holding each group's agent folder (`<agents_root>/<group>`).
    pub agents_root: PathBuf,
}

impl DockerControl {
    /// The container name of `session`.
    pub fn name(&self, session: &SessionPaths) -> String {
        let group = group_of(&session.dir).unwrap_or("group");
        let sid = session
            .dir
            .file_name()
            .map_or_else(|| "session".into(), |s| s.to_string_lossy().into_owned());
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        format!("sessionbus-{}-{}", clean(group), clean(&sid))
    }

    /// The `docker` arguments that start `session`'s container (`run --rm -d ...`).
    pub fn run_args(&self, session: &SessionPaths) -> Result<Vec<OsString>, CallerError> {
        let group =
            group_of(&session.dir).ok_or("not a session folder under v2-sessions/<group>/")?;
        let plan = MountPlan::builder(
            SessionMounts::from_paths(session),
            GroupMounts::for_group(&self.data_dir, group, self.agents_root.join(group))?,
        )
        .build()?;
        let mut args = DockerRunCommand::new(
            &plan,
            self.name(session),
            &self.image,
            self.program.clone(),
            self.uid,
            self.gid,
        )
        .args_for_program(
            [
                OsString::from("--workspace"),
                OsString::from(WORKSPACE.as_str()),
            ]
            .into_iter()
            .chain(self.args.iter().cloned()),
        )
        .args()?;
        // Detached: the host does not hold a `docker` process per container.
        args.insert(1, "-d".into());
        Ok(args)
    }

    fn docker(&self, args: &[OsString]) -> Result<std::process::Output, CallerError> {
        Ok(Command::new(&self.docker)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }
}

impl ContainerControl for DockerControl {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        let args = ["inspect", "-f", "{{.State.Running}}", &self.name(session)].map(OsString::from);
        self.docker(&args)
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"))
    }

    fn kill(&mut self, session: &SessionPaths, _reason: &KillReason) -> Result<(), CallerError> {
        let out = self.docker(&["kill".into(), self.name(session).into()])?;
        if out.status.success() || !self.is_running(session) {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .trim()
                .to_string()
                .into())
        }
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        let out = self.docker(&self.run_args(session)?)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr)
                .trim()
                .to_string()
                .into())
        }
    }
}
