//! [`ContainerControl`] for a container that is a plain child process (the `echo_container`
//! example) rather than a Docker container. Shared by `examples/host.rs` and the end-to-end
//! tests through `#[path]`, so both drive containers the same way.
#![allow(dead_code)] // each includer uses a different part

use sessionbus_runtime::host::ContainerControl;
use sessionbus_runtime::liveness::KillReason;
use sessionbus_store::SessionPaths;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `program --workspace <session dir> <args...>` as a child process; `is_running` is
/// "the child has not exited" (`try_wait`), `kill` is SIGKILL then wait.
pub struct ChildControl {
    program: PathBuf,
    /// Arguments after `--workspace DIR`; may be changed between starts.
    pub args: Vec<OsString>,
    child: Option<Child>,
    /// How many containers were started.
    pub starts: u32,
    /// How many were killed through [`ContainerControl::kill`] or [`ChildControl::kill_now`].
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
            child: None,
            starts: 0,
            kills: 0,
            last_kill: None,
        }
    }

    /// The running child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9` the running child (if any) and reap it. Returns its pid.
    pub fn kill_now(&mut self, why: &str) -> Result<Option<u32>, String> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = child.id();
        // An error here means the child already exited; `wait` reaps it either way.
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| format!("cannot wait for container pid {pid}: {e}"))?;
        self.kills += 1;
        self.last_kill = Some((pid, why.to_string()));
        Ok(Some(pid))
    }

    /// Asks the running child to stop (SIGTERM, so it clears its claims), waiting up to
    /// `grace`, then kills it. Returns its exit status text.
    pub fn stop(&mut self, grace: Duration) -> Result<Option<String>, String> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = child.id();
        if let Ok(raw) = i32::try_from(pid) {
            // SAFETY: kill(2) with a pid we own (our unreaped child, so not recycled).
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
        let _ = child.kill();
        let status = child
            .wait()
            .map_err(|e| format!("cannot wait for container pid {pid}: {e}"))?;
        Ok(Some(format!("{status} (killed after {grace:?} grace)")))
    }
}

impl ContainerControl for ChildControl {
    fn is_running(&mut self, _session: &SessionPaths) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            // Exited (crashed or stopped by itself), or cannot be asked: not running.
            Ok(Some(_)) | Err(_) => {
                self.child = None;
                false
            }
        }
    }

    fn kill(&mut self, _session: &SessionPaths, reason: &KillReason) -> Result<(), String> {
        self.kill_now(&reason.to_string()).map(|_| ())
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), String> {
        if self.is_running(session) {
            return Ok(());
        }
        let child = Command::new(&self.program)
            .arg("--workspace")
            .arg(&session.dir)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        self.starts += 1;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for ChildControl {
    fn drop(&mut self) {
        // Never leave a container behind (a test that panics, a host that errors out).
        let _ = self.kill_now("the host is going away");
    }
}
