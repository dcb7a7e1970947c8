//! Rendering a [`MountPlan`] into a sandbox command: [`BwrapCommand`] (bubblewrap, as a
//! [`Command`] to spawn) and [`DockerRunCommand`] (the `docker run` argument vector).
//!
//! Environment variables never appear in an argument vector: arguments are readable by every
//! user of the host (`/proc/<pid>/cmdline`), environments only by the process's owner and
//! root. bubblewrap gets them in its own (otherwise empty) environment and passes them on;
//! docker gets `-e NAME` arguments and reads the values from the docker client's environment
//! ([`DockerRunCommand::client_env`]).

use super::plan::check_order;
use super::{check_host_path, ContainerPath, MountPlan, MountRole, PlanError};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where [`BwrapCommand`] finds bubblewrap unless told otherwise.
pub const DEFAULT_BWRAP: &str = "/usr/bin/bwrap";

const PROC: ContainerPath = ContainerPath::from_static("/proc");
const DEV: ContainerPath = ContainerPath::from_static("/dev");
const TMP: ContainerPath = ContainerPath::from_static("/tmp");

/// A bubblewrap sandbox for a [`MountPlan`]. The rendered command line is:
///
/// ```text
/// bwrap --unshare-all --unshare-user [--share-net] [--disable-userns] --die-with-parent
///       --new-session --cap-drop ALL --uid <uid> --gid <gid>
///       [--ro-bind <dir> <dir>]...            base system folders, in the caller's order
///       --proc /proc --dev /dev --tmpfs /tmp
///       [--ro-bind <dir> <dir>]...            base system folders inside /proc, /dev or /tmp
///       <the plan's --bind / --ro-bind>...
///       [--chdir <dir>] -- <program> <args>...
/// ```
///
/// [`BwrapCommand::command`] also makes the process itself run as `uid:gid` (bubblewrap then
/// works unprivileged through a user namespace; started as root with `--uid` it refuses),
/// with no supplementary groups, from `/`, and with an environment of exactly the variables
/// given with [`BwrapCommand::env`]. `--disable-userns` (on by default, bubblewrap 0.8 or
/// later) stops the sandbox from making user namespaces of its own, a large kernel attack
/// surface.
#[derive(Debug, Clone)]
#[must_use]
pub struct BwrapCommand<'a> {
    plan: &'a MountPlan,
    bwrap: PathBuf,
    program: OsString,
    args: Vec<OsString>,
    uid: u32,
    gid: u32,
    env: Vec<(OsString, OsString)>,
    system: Vec<PathBuf>,
    share_net: bool,
    disable_userns: bool,
    chdir: Option<ContainerPath>,
}

impl<'a> BwrapCommand<'a> {
    /// Runs `program` (a path inside the sandbox, or a name looked up in the `PATH` given with
    /// [`BwrapCommand::env`]) as `uid:gid` with `plan`'s mounts.
    pub fn new(plan: &'a MountPlan, program: impl Into<OsString>, uid: u32, gid: u32) -> Self {
        BwrapCommand {
            plan,
            bwrap: PathBuf::from(DEFAULT_BWRAP),
            program: program.into(),
            args: Vec::new(),
            uid,
            gid,
            env: Vec::new(),
            system: Vec::new(),
            share_net: false,
            disable_userns: true,
            chdir: None,
        }
    }

    /// Uses this bubblewrap binary instead of [`DEFAULT_BWRAP`].
    pub fn bwrap_program(mut self, path: impl Into<PathBuf>) -> Self {
        self.bwrap = path.into();
        self
    }

    /// Adds one argument for the program.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments for the program.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the program. Nothing else of the host's environment
    /// gets through. Names must match `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Binds host folder `dir` read-only at the same path (for example `/usr`, `/lib`,
    /// `/etc`): the base system the program needs. Only folders that exist on the host.
    pub fn system_mount(mut self, dir: impl Into<PathBuf>) -> Self {
        self.system.push(dir.into());
        self
    }

    /// [`BwrapCommand::system_mount`] for each of `dirs`, in order.
    pub fn system_mounts<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, dirs: I) -> Self {
        self.system.extend(dirs.into_iter().map(Into::into));
        self
    }

    /// Shares the host's network (default: none, not even loopback to the host's).
    pub fn share_net(mut self, share: bool) -> Self {
        self.share_net = share;
        self
    }

    /// Whether to pass `--disable-userns` (default true; needs bubblewrap 0.8 or later).
    pub fn disable_nested_userns(mut self, disable: bool) -> Self {
        self.disable_userns = disable;
        self
    }

    /// The program's working folder inside the sandbox.
    pub fn chdir(mut self, dir: ContainerPath) -> Self {
        self.chdir = Some(dir);
        self
    }

    /// The bubblewrap arguments (without the program name `bwrap` itself).
    pub fn render_args(&self) -> Result<Vec<OsString>, PlanError> {
        check_program(&self.program, &self.args)?;
        for (name, value) in &self.env {
            check_env(name, value)?;
        }
        let mut system = Vec::with_capacity(self.system.len());
        for dir in &self.system {
            check_host_path(dir).map_err(|reason| PlanError::InvalidHostPath {
                role: MountRole::System,
                path: dir.clone(),
                reason,
            })?;
            let text = dir.to_str().ok_or_else(|| PlanError::InvalidHostPath {
                role: MountRole::System,
                path: dir.clone(),
                reason: "is not UTF-8 (it is also the path inside the sandbox)",
            })?;
            system.push((ContainerPath::new(text)?, dir.as_path()));
        }
        let (proc_, dev, tmp) = (PROC, DEV, TMP);
        let fixed = [
            (&proc_, Path::new("proc")),
            (&dev, Path::new("dev")),
            (&tmp, Path::new("tmpfs")),
        ];
        // A system folder inside /proc, /dev or /tmp (the container program built under
        // /tmp, say) goes after the fresh mount there, or that mount would hide it.
        let (outer, nested): (Vec<_>, Vec<_>) = system.into_iter().partition(|(t, _)| {
            !fixed
                .iter()
                .any(|(f, _)| Path::new(t.as_str()).starts_with(f.as_str()))
        });
        check_order(
            outer
                .iter()
                .map(|(t, s)| (t, *s))
                .chain(fixed)
                .chain(nested.iter().map(|(t, s)| (t, *s)))
                .chain(
                    self.plan
                        .mounts()
                        .iter()
                        .map(|m| (&m.target, m.source.as_path())),
                ),
        )?;

        let mut a: Vec<OsString> = Vec::new();
        push(&mut a, &["--unshare-all", "--unshare-user"]);
        if self.share_net {
            push(&mut a, &["--share-net"]);
        }
        if self.disable_userns {
            push(&mut a, &["--disable-userns"]);
        }
        push(
            &mut a,
            &["--die-with-parent", "--new-session", "--cap-drop", "ALL"],
        );
        let (uid, gid) = (self.uid.to_string(), self.gid.to_string());
        push(&mut a, &["--uid", &uid, "--gid", &gid]);
        let ro_bind = |a: &mut Vec<OsString>, dir: &Path| {
            a.push("--ro-bind".into());
            a.push(dir.as_os_str().to_owned());
            a.push(dir.as_os_str().to_owned());
        };
        for (_, dir) in &outer {
            ro_bind(&mut a, dir);
        }
        push(
            &mut a,
            &["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"],
        );
        for (_, dir) in &nested {
            ro_bind(&mut a, dir);
        }
        a.extend(self.plan.bwrap_args());
        if let Some(dir) = &self.chdir {
            a.push("--chdir".into());
            a.push(dir.as_str().into());
        }
        a.push("--".into());
        a.push(self.program.clone());
        a.extend(self.args.iter().cloned());
        Ok(a)
    }

    /// The command to spawn: bubblewrap with [`BwrapCommand::render_args`], run as
    /// `uid:gid` from `/` with only the given environment. Standard input and output are
    /// left to the caller.
    pub fn command(&self) -> Result<Command, PlanError> {
        let args = self.render_args()?;
        let mut cmd = Command::new(&self.bwrap);
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            // Run bubblewrap itself unprivileged; std also drops supplementary groups when
            // the parent is root.
            .uid(self.uid)
            .gid(self.gid);
        Ok(cmd)
    }
}

/// A `docker run` for a [`MountPlan`]. [`DockerRunCommand::args`] renders:
///
/// ```text
/// run --rm --name <name> --user <uid>:<gid> --cap-drop ALL
///     --security-opt no-new-privileges [--network none] [-e NAME]...
///     <the plan's --mount pairs>... <image> <program> <args>...
/// ```
///
/// `--cap-drop ALL` and `no-new-privileges` match what bubblewrap does for an unprivileged
/// sandbox user. Environment values are not in the arguments: set
/// [`DockerRunCommand::client_env`] on the `docker` client's process, from which `-e NAME`
/// takes them (a name unset there is left unset in the container).
#[derive(Debug, Clone)]
#[must_use]
pub struct DockerRunCommand<'a> {
    plan: &'a MountPlan,
    name: String,
    image: String,
    program: OsString,
    args: Vec<OsString>,
    uid: u32,
    gid: u32,
    env: Vec<(OsString, OsString)>,
    share_net: bool,
}

impl<'a> DockerRunCommand<'a> {
    /// Runs `program` in `image` as `uid:gid`, in a container called `name`, with `plan`'s
    /// mounts.
    pub fn new(
        plan: &'a MountPlan,
        name: impl Into<String>,
        image: impl Into<String>,
        program: impl Into<OsString>,
        uid: u32,
        gid: u32,
    ) -> Self {
        DockerRunCommand {
            plan,
            name: name.into(),
            image: image.into(),
            program: program.into(),
            args: Vec::new(),
            uid,
            gid,
            env: Vec::new(),
            share_net: false,
        }
    }

    /// Adds one argument for the program.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments for the program.
    pub fn args_for_program<I: IntoIterator<Item = S>, S: Into<OsString>>(
        mut self,
        args: I,
    ) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Passes an environment variable (see [`DockerRunCommand::client_env`]). Names must match
    /// `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Uses docker's default network instead of `--network none`.
    pub fn share_net(mut self, share: bool) -> Self {
        self.share_net = share;
        self
    }

    /// The arguments after `docker` itself, starting with `run`.
    pub fn args(&self) -> Result<Vec<OsString>, PlanError> {
        check_program(&self.program, &self.args)?;
        check_container_name(&self.name)?;
        check_image(&self.image)?;
        for (name, value) in &self.env {
            check_env(name, value)?;
        }
        let mut a = Vec::new();
        let user = format!("{}:{}", self.uid, self.gid);
        push(
            &mut a,
            &["run", "--rm", "--name", &self.name, "--user", &user],
        );
        push(
            &mut a,
            &["--cap-drop", "ALL", "--security-opt", "no-new-privileges"],
        );
        if !self.share_net {
            push(&mut a, &["--network", "none"]);
        }
        for (name, _) in &self.env {
            a.push("-e".into());
            a.push(name.clone());
        }
        a.extend(self.plan.docker_args());
        a.push(self.image.as_str().into());
        a.push(self.program.clone());
        a.extend(self.args.iter().cloned());
        Ok(a)
    }

    /// The variables to set in the `docker` client's environment, for its `-e NAME`
    /// arguments.
    pub fn client_env(&self) -> &[(OsString, OsString)] {
        &self.env
    }
}

fn push(args: &mut Vec<OsString>, items: &[&str]) {
    args.extend(items.iter().map(OsString::from));
}

fn refused(what: &'static str, value: &OsStr, reason: &'static str) -> PlanError {
    PlanError::InvalidArgument {
        what,
        value: value.to_string_lossy().into_owned(),
        reason,
    }
}

fn check_program(program: &OsStr, args: &[OsString]) -> Result<(), PlanError> {
    if program.is_empty() {
        return Err(refused("program", program, "is empty"));
    }
    for a in std::iter::once(program).chain(args.iter().map(OsString::as_os_str)) {
        if a.as_bytes().contains(&0) {
            return Err(refused("program argument", a, "contains NUL"));
        }
    }
    Ok(())
}

fn check_env(name: &OsStr, value: &OsStr) -> Result<(), PlanError> {
    let ok = match name.as_bytes() {
        [first, rest @ ..] => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        [] => false,
    };
    if !ok {
        return Err(refused(
            "environment variable name",
            name,
            "does not match [A-Za-z_][A-Za-z0-9_]*",
        ));
    }
    if value.as_bytes().contains(&0) {
        return Err(refused(
            "environment variable",
            name,
            "has a value with NUL",
        ));
    }
    Ok(())
}

/// docker's own rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn check_container_name(name: &str) -> Result<(), PlanError> {
    let ok = match name.as_bytes() {
        [first, rest @ ..] => {
            first.is_ascii_alphanumeric()
                && !rest.is_empty()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b))
        }
        [] => false,
    };
    if ok {
        Ok(())
    } else {
        Err(refused(
            "container name",
            OsStr::new(name),
            "does not match [a-zA-Z0-9][a-zA-Z0-9_.-]+",
        ))
    }
}

fn check_image(image: &str) -> Result<(), PlanError> {
    let reason = if image.is_empty() {
        "is empty"
    } else if image.starts_with('-') {
        "starts with '-' (docker would read an option)"
    } else if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "contains white space or a control character"
    } else {
        return Ok(());
    };
    Err(refused("image", OsStr::new(image), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_rules() {
        for ok in ["A", "_x", "PATH", "a_1"] {
            assert!(check_env(OsStr::new(ok), OsStr::new("v")).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A=B", "A-B", "A B", "-e"] {
            assert!(
                check_env(OsStr::new(bad), OsStr::new("v")).is_err(),
                "{bad}"
            );
        }
        assert!(check_env(OsStr::new("A"), OsStr::new("a\0b")).is_err());
        for ok in ["ab", "sessionbus-g1.s_2", "A1"] {
            assert!(check_container_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "-ab", ".ab", "a b", "a/b", "a:b"] {
            assert!(check_container_name(bad).is_err(), "{bad}");
        }
        for bad in ["", "--privileged", "a b", "a\nb"] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
        assert!(check_image("ghcr.io/x/agent:1.2@sha256:abc").is_ok());
        assert!(check_program(OsStr::new(""), &[]).is_err());
        assert!(check_program(OsStr::new("sh"), &["a\0".into()]).is_err());
        assert!(check_program(OsStr::new("sh"), &["-c".into()]).is_ok());
    }
}
