//! Containers as plain child processes (no sandbox): development and tests only.

use super::{kill_and_reap, CallerError};
use crate::host::ContainerControl;
use crate::liveness::KillReason;
use sessionbus_store::SessionPaths;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `program --workspace <session dir> <args...>` as a child process per session. The
/// container opens the session folder directly (split or single layout), with every right of
/// the host process: no sandbox. `is_running` is "the child has not exited"; `kill` is
/// SIGKILL, then wait.
#[derive(Debug)]
pub struct ChildControl {
    program: PathBuf,
    /// Arguments after `--workspace DIR`; may be changed between starts.
    pub args: Vec<OsString>,
    children: HashMap<PathBuf, Child>,
    quiet: bool,
    /// How many containers were started.
    pub starts: u32,
    /// How many were killed (by the sweep or [`ChildControl::kill_now`]).
    pub kills: u32,
    /// The last kill: the pid and why.
    pub last_kill: Option<(u32, String)>,
}

impl ChildControl {
    /// Control over containers started as `program`.
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>) -> Self {
        ChildControl {
            program: program.into(),
            args,
            children: HashMap::new(),
            quiet: false,
            starts: 0,
            kills: 0,
            last_kill: None,
        }
    }

    /// Sends the containers' standard error to /dev/null instead of this process's.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// The running container's pid for `session`.
    pub fn pid(&self, session: &SessionPaths) -> Option<u32> {
        self.children.get(&session.dir).map(Child::id)
    }

    /// `kill -9` the session's container (if any) and reap it. Returns its pid.
    pub fn kill_now(&mut self, session: &SessionPaths, why: &str) -> std::io::Result<Option<u32>> {
        let Some(mut child) = self.children.remove(&session.dir) else {
            return Ok(None);
        };
        let pid = child.id();
        kill_and_reap(&mut child)?;
        self.kills += 1;
        self.last_kill = Some((pid, why.to_string()));
        Ok(Some(pid))
    }

    /// Asks the session's container to stop (SIGTERM: it finishes its batch and exits),
    /// waiting up to `grace`, then kills it. Returns how it ended.
    pub fn stop(
        &mut self,
        session: &SessionPaths,
        grace: Duration,
    ) -> std::io::Result<Option<String>> {
        let Some(mut child) = self.children.remove(&session.dir) else {
            return Ok(None);
        };
        if let Ok(raw) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own unreaped child (its pid cannot have been recycled).
            unsafe { libc::kill(raw, libc::SIGTERM) };
        }
        let end = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status.to_string())),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        let status = kill_and_reap(&mut child)?;
        Ok(Some(format!("{status} (killed after {grace:?} grace)")))
    }
}

impl ContainerControl for ChildControl {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        let Some(child) = self.children.get_mut(&session.dir) else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            // Exited (crashed or stopped by itself), or cannot be asked: not running.
            Ok(Some(_)) | Err(_) => {
                self.children.remove(&session.dir);
                false
            }
        }
    }

    fn kill(&mut self, session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        self.kill_now(session, &reason.to_string())?;
        Ok(())
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        if self.is_running(session) {
            return Ok(());
        }
        let child = Command::new(&self.program)
            .arg("--workspace")
            .arg(&session.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if self.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        self.starts += 1;
        self.children.insert(session.dir.clone(), child);
        Ok(())
    }
}

impl Drop for ChildControl {
    fn drop(&mut self) {
        // Never leave a container behind (a test that panics, a host that errors out).
        for (_, mut child) in self.children.drain() {
            let _ = kill_and_reap(&mut child);
        }
    }
}
