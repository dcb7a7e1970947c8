//! Containers inside bubblewrap, each seeing exactly its session's mount plan.

use super::{group_of, kill_and_reap, CallerError};
use crate::config::ContainerConfig;
use crate::host::ContainerControl;
use crate::liveness::KillReason;
use crate::mount_plan::{BwrapCommand, GroupMounts, MountPlan, SessionMounts, WORKSPACE};
use crate::mount_security::{MountAllowlist, Validator};
use sessionbus_store::SessionPaths;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// Host folders mounted read-only at their own paths in every sandbox, when they exist: the
/// system's programs and libraries, nothing else of the host (`/etc` included: no host
/// configuration reaches the container).
pub const DEFAULT_SYSTEM_MOUNTS: &[&str] = &["/usr", "/bin", "/lib", "/lib64", "/sbin"];

/// How [`SandboxControl`] starts a session's container.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SandboxOptions {
    /// The container program on the host (absolute, no symlinks on the way). Its folder is
    /// mounted read-only at the same path, and it is started there as
    /// `program --workspace /workspace <args...>`.
    pub program: PathBuf,
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
    /// Host folders mounted read-only at their own paths ([`DEFAULT_SYSTEM_MOUNTS`]).
    pub system_mounts: Vec<PathBuf>,
    /// The shared agent source, mounted read-only at `/app/src`.
    pub app_src: Option<PathBuf>,
    /// The shared skills, mounted read-only at `/app/skills`.
    pub shared_skills: Option<PathBuf>,
    /// The mount allowlist for `container.json`'s `additionalMounts` (`None`: every additional
    /// mount is refused).
    pub allowlist: Option<MountAllowlist>,
    /// Give the sandbox the host's network (off: no network at all).
    pub share_net: bool,
    /// Send the containers' standard error to /dev/null.
    pub quiet: bool,
    /// Append the containers' standard error to this host file instead (it wins over
    /// `quiet`).
    pub log: Option<PathBuf>,
}

impl SandboxOptions {
    /// Options for `program` as `uid:gid` over `data_dir`, agent folders under `agents_root`,
    /// the default system mounts, no shared folders, no allowlist, no network.
    pub fn new(
        program: impl Into<PathBuf>,
        uid: u32,
        gid: u32,
        data_dir: impl Into<PathBuf>,
        agents_root: impl Into<PathBuf>,
    ) -> Self {
        SandboxOptions {
            program: program.into(),
            args: Vec::new(),
            uid,
            gid,
            data_dir: data_dir.into(),
            agents_root: agents_root.into(),
            system_mounts: DEFAULT_SYSTEM_MOUNTS
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
            app_src: None,
            shared_skills: None,
            allowlist: None,
            share_net: false,
            quiet: false,
            log: None,
        }
    }

    /// The same options with these program arguments.
    pub fn with_args(mut self, args: Vec<OsString>) -> Self {
        self.args = args;
        self
    }

    /// The same options, the containers' standard error appended to `log`.
    pub fn with_log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self
    }
}

/// Starts each session's container inside bubblewrap (`/usr/bin/bwrap`, Debian package
/// `bubblewrap`) as [`SandboxOptions::uid`], seeing exactly the session's [`MountPlan`]: its
/// writable area at `/workspace`, `inbound.db`, `inbox/` and the host's stamps read-only on
/// top, the group's agent folder with `container.json` read-only on top, `~/.claude` with the
/// skill links read-only on top, the shared folders and the validated additional mounts, and
/// the system folders read-only. No network unless asked, no capabilities, its own pid, IPC,
/// UTS and user namespaces; it dies with the host.
///
/// The group must be prepared first ([`super::prepare_group`]: its `container.json` is read
/// here for `additionalMounts`), the session provisioned with the container's ownership, and
/// every folder above them traversable by the container's user.
#[derive(Debug)]
pub struct SandboxControl {
    opts: SandboxOptions,
    children: HashMap<PathBuf, Child>,
    /// How many containers were started.
    pub starts: u32,
    /// How many were killed.
    pub kills: u32,
}

impl SandboxControl {
    /// Control over sandboxed containers started with `opts`.
    pub fn new(opts: SandboxOptions) -> Self {
        SandboxControl {
            opts,
            children: HashMap::new(),
            starts: 0,
            kills: 0,
        }
    }

    /// The options in use.
    pub fn options(&self) -> &SandboxOptions {
        &self.opts
    }

    /// The running sandbox's pid (bubblewrap's) for `session`.
    pub fn pid(&self, session: &SessionPaths) -> Option<u32> {
        self.children.get(&session.dir).map(Child::id)
    }

    /// The mount plan a container of `session` gets now: the session's and its group's
    /// folders, the shared folders, and the additional mounts of the group's `container.json`
    /// that pass the allowlist (the others are refused, with a warning).
    pub fn plan(&self, session: &SessionPaths) -> Result<MountPlan, CallerError> {
        let group = group_of(&session.dir).ok_or_else(|| {
            format!(
                "{}: not a session folder under <data>/v2-sessions/<group>/",
                session.dir.display()
            )
        })?;
        let group_mounts = GroupMounts::for_group(
            &self.opts.data_dir,
            group,
            self.opts.agents_root.join(group),
        )?;
        let config = ContainerConfig::load(&group_mounts.container_json)?;
        let validation = Validator::new()
            .protect(&self.opts.data_dir)
            .validate(self.opts.allowlist.as_ref(), &config.additional_mounts);
        let mut builder = MountPlan::builder(SessionMounts::from_paths(session), group_mounts)
            .extra_mounts(validation.accepted);
        if let Some(src) = &self.opts.app_src {
            builder = builder.app_src(src);
        }
        if let Some(skills) = &self.opts.shared_skills {
            builder = builder.shared_skills(skills);
        }
        let plan = builder.build()?;
        plan.verify_sources()?;
        Ok(plan)
    }

    /// Stops `session`'s sandbox (if any) and reaps it. bubblewrap is the sandbox's init:
    /// when it goes, everything in the sandbox goes with it, so the container gets no chance
    /// to clean up (a claim it held is settled by the host's next sweep). Returns its pid.
    pub fn stop(&mut self, session: &SessionPaths) -> std::io::Result<Option<u32>> {
        let Some(mut child) = self.children.remove(&session.dir) else {
            return Ok(None);
        };
        let pid = child.id();
        kill_and_reap(&mut child)?;
        Ok(Some(pid))
    }

    /// Asks `session`'s container to stop: SIGTERM to every process inside the sandbox (the
    /// runner finishes its batch and exits, and the sandbox with it), then, after `grace`,
    /// [`SandboxControl::stop`]. Returns how it ended.
    pub fn terminate(
        &mut self,
        session: &SessionPaths,
        grace: std::time::Duration,
    ) -> std::io::Result<Option<String>> {
        let Some(child) = self.children.get_mut(&session.dir) else {
            return Ok(None);
        };
        for pid in descendants(child.id()) {
            // SAFETY: kill(2) with a pid read from /proc just now; the processes are the
            // sandbox's, children of our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let end = std::time::Instant::now() + grace;
        while std::time::Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                let text = status.to_string();
                self.children.remove(&session.dir);
                return Ok(Some(text));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(self
            .stop(session)?
            .map(|pid| format!("sandbox {pid} killed after {grace:?} grace")))
    }

    /// The bubblewrap command that starts `session`'s container (not started).
    pub fn command(&self, session: &SessionPaths) -> Result<std::process::Command, CallerError> {
        let plan = self.plan(session)?;
        let program_dir = self
            .opts
            .program
            .parent()
            .ok_or("the container program has no folder")?;
        for (what, path) in [
            ("the container program", program_dir),
            ("the data dir", &self.opts.data_dir),
        ] {
            if !traversable_by_others(path) {
                return Err(format!(
                    "{what} {} is not reachable by uid {}: every folder above it needs o+x",
                    path.display(),
                    self.opts.uid
                )
                .into());
            }
        }
        let mut system = self.opts.system_mounts.clone();
        if !system.iter().any(|s| program_dir.starts_with(s)) {
            system.push(program_dir.to_path_buf());
        }
        let mut cmd = BwrapCommand::new(&plan, &self.opts.program, self.opts.uid, self.opts.gid)
            .arg("--workspace")
            .arg(WORKSPACE.as_str())
            .args(self.opts.args.iter().cloned())
            .system_mounts(system)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/home/node")
            .share_net(self.opts.share_net)
            .command()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.opts.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            });
        Ok(cmd)
    }
}

impl ContainerControl for SandboxControl {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        let Some(child) = self.children.get_mut(&session.dir) else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(_)) | Err(_) => {
                self.children.remove(&session.dir);
                false
            }
        }
    }

    fn kill(&mut self, session: &SessionPaths, _reason: &KillReason) -> Result<(), CallerError> {
        if self.stop(session)?.is_some() {
            self.kills += 1;
        }
        Ok(())
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        if self.is_running(session) {
            return Ok(());
        }
        let child = self
            .command(session)?
            .spawn()
            .map_err(|e| format!("cannot start bubblewrap for {}: {e}", session.dir.display()))?;
        self.starts += 1;
        self.children.insert(session.dir.clone(), child);
        Ok(())
    }
}

impl Drop for SandboxControl {
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = kill_and_reap(&mut child);
        }
    }
}

/// Every descendant of process `pid`, from `/proc/<pid>/task/<pid>/children`, children before
/// their own children.
fn descendants(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) else {
            continue;
        };
        for child in text
            .split_ascii_whitespace()
            .filter_map(|t| t.parse::<u32>().ok())
        {
            if let Ok(raw) = i32::try_from(child) {
                out.push(raw);
            }
            queue.push(child);
        }
    }
    out
}

/// True when `path` and every folder above it can be traversed by anyone (mode `o+x`), which a
/// sandbox started as another user needs for each mount source.
pub fn traversable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}
