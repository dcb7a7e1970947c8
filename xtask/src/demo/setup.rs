//! The demo's session: provisioning it in a data dir the sandbox user can reach, and the
//! steps of the conversation.

use super::control::*;
use super::*;

/// The demo's host: the session, the container control and the screen.
pub(super) struct Demo {
    pub(super) host: HostSession,
    pub(super) control: DemoControl,
    pub(super) screen: Screen,
    pub(super) opts: SweepOptions,
    pub(super) step_timeout: Duration,
    pub(super) retried: Vec<String>,
    /// Printed before the first retry report (section 4's heading).
    pub(super) on_first_retry: Option<String>,
}

impl Demo {
    /// One host tick: sweep (wake, kill, retry) then delivery, reporting what happened.
    pub(super) fn tick(&mut self) -> Result<(), String> {
        let was_running = self.control.pid().is_some();
        match sweep_session(&self.host, &mut self.control, &|_| None, self.opts) {
            Ok(r) => self.show_sweep(&r, was_running)?,
            Err(e) if e.is_retryable() => println!("   (sweep will retry: {e})"),
            Err(e) => return Err(format!("sweep failed: {e}")),
        }
        match deliver_session(&self.host, &mut self.screen, 5) {
            Ok(_) => Ok(()),
            Err(e) if e.is_retryable() => {
                println!("   (delivery will retry: {e})");
                Ok(())
            }
            Err(e) => Err(format!("delivery failed: {e}")),
        }
    }

    pub(super) fn show_sweep(&mut self, r: &SweepReport, was_running: bool) -> Result<(), String> {
        for id in &r.retried {
            if let Some(heading) = self.on_first_retry.take() {
                println!("{heading}");
            }
            let msg = self.host.inbound().message(id).map_err(|e| e.to_string())?;
            let (tries, due_at) = match &msg {
                Some(m) => (
                    m.tries,
                    m.process_after
                        .as_ref()
                        .map_or_else(|| "now".to_string(), |t| t.as_str().to_string()),
                ),
                None => (0, "?".to_string()),
            };
            let label = self
                .screen
                .labels
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.clone());
            let backoff = self.opts.retry.backoff_ms(tries - 1);
            println!("   sweep: claim of {id} ({label}) retried:");
            println!(
                "          it stays pending in inbound.db with tries {tries}, not before {due_at} UTC"
            );
            if backoff == 0 {
                println!(
                    "          (a first retry is due at once: a kill is mostly not the message's fault, and\n\
                     \x20          waiting would answer later messages first; a message that fails again\n\
                     \x20          backs off from {:.1} s, doubling, and is marked failed after {} retries)",
                    self.opts.retry.base_backoff_ms as f64 / 1000.0,
                    self.opts.retry.max_tries
                );
            } else {
                println!(
                    "          (a backoff of {:.1} s, doubling with each try; marked failed once it has had {} retries)",
                    backoff as f64 / 1000.0,
                    self.opts.retry.max_tries
                );
            }
            self.retried.push(id.clone());
        }
        for id in &r.failed {
            println!("   sweep: {id} marked failed after its last try");
        }
        if r.claims_settled > 0 {
            println!(
                "   sweep: settled {} claim(s) of the stopped container in inbound.db (the host \
                 never writes outbound.db; the next container clears them there)",
                r.claims_settled
            );
            if !r.woke {
                println!(
                    "   (no container runs until a message is due: the host waits for the backoff)"
                );
            }
        }
        if r.woke {
            let pid = self
                .control
                .pid()
                .map_or_else(|| "?".into(), |p| p.to_string());
            let why = if self.control.starts == 1 {
                "a message is due and no container runs"
            } else if was_running {
                "the previous one was stopped"
            } else {
                "a message is due again"
            };
            println!("   host starts container pid {pid} ({why})");
        }
        Ok(())
    }

    /// Ticks until `done` says so, or fails after the step timeout.
    pub(super) fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&Demo) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            self.tick()?;
            if done(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {} s waiting for {what}; the container's log is {}",
                    self.step_timeout.as_secs(),
                    self.control.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn answered(&self, id: &str) -> bool {
        self.screen.answers.get(id).copied().unwrap_or(0) > 0
    }

    pub(super) fn claimed(&self, id: &str) -> bool {
        self.host
            .pending_claims()
            .map(|c| c.iter().any(|c| c.message_id == id))
            .unwrap_or(false)
    }
}

/// The container's user: uid/gid 1000 when the demo runs as root (the container must not be
/// root), else the demo's own.
pub(super) fn container_owner() -> Ownership {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        Ownership {
            uid: 1000,
            gid: 1000,
        }
    } else {
        Ownership { uid, gid }
    }
}

/// The data dir as an absolute, canonical path that the container's user can reach (every
/// folder above it `o+x`): bubblewrap runs as that user and must reach each mount source.
pub(super) fn sandbox_data_dir(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let abs = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if sessionbus_runtime::control::traversable_by_others(&abs) {
        return Ok(abs);
    }
    // A checkout under a private home folder: the sandbox's user cannot reach it. Use a folder
    // under the system's temp dir instead, and say so.
    let fallback = std::env::temp_dir().join("sessionbus-demo").join("data");
    std::fs::create_dir_all(&fallback).map_err(|e| format!("{}: {e}", fallback.display()))?;
    for d in [fallback.as_path(), fallback.parent().unwrap_or(&fallback)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", d.display()))?;
    }
    println!(
        "   note: {} is not reachable by the container's user (a folder above it lacks o+x);\n   \
         using {} instead\n",
        abs.display(),
        fallback.display()
    );
    let fallback = fallback
        .canonicalize()
        .map_err(|e| format!("{}: {e}", fallback.display()))?;
    if !sessionbus_runtime::control::traversable_by_others(&fallback) {
        return Err(format!(
            "neither {} nor {} is reachable by the container's user; pass --data-dir",
            abs.display(),
            fallback.display()
        ));
    }
    Ok(fallback)
}

/// A session id for this run: `demo-YYYYMMDD-HHMMSS`, with a suffix when taken.
pub(super) fn new_session(data_dir: &Path) -> Result<SessionPaths, String> {
    let iso = SystemClock.now().to_iso(); // 2026-04-21T12:05:19.123Z
    let digits: String = iso.chars().take(19).filter(char::is_ascii_digit).collect();
    let base = format!(
        "demo-{}-{}",
        &digits[..8.min(digits.len())],
        &digits[8.min(digits.len())..]
    );
    for n in 1..1000 {
        let id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let paths =
            SessionPaths::in_data_dir(data_dir, DEMO_GROUP, &id).map_err(|e| e.to_string())?;
        if !paths.dir.exists() {
            return Ok(paths);
        }
    }
    Err(format!("no free session id under {}", data_dir.display()))
}
