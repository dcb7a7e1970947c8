//! The echo container of a mountcheck run: started as a child (or in bubblewrap) on the
//! mount, its claims read from its log.

use super::*;
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if n == 0 {
            0
        } else {
            x % n
        }
    }
}

pub(super) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the container's stderr said.
#[derive(Default)]
pub(super) struct ContainerLog {
    pub(super) started: bool,
    /// Claim times (Unix ms) per message id, in order.
    pub(super) claims: HashMap<String, Vec<i64>>,
    pub(super) lines: Vec<String>,
}

/// The container process, its stderr parsed by a thread.
pub(super) struct EchoProcess {
    pub(super) child: Option<Child>,
    pub(super) log: Arc<Mutex<ContainerLog>>,
    pub(super) exit: Option<String>,
}

/// The echo container's arguments after `--workspace DIR`.
pub(super) fn echo_args(frozen_after: Duration) -> Vec<String> {
    vec![
        "--log-claims".into(),
        format!("--frozen-view-ms={}", frozen_after.as_millis().max(1)),
        "--heartbeat-ms=1000".into(),
    ]
}

/// The sandboxed container's command: bubblewrap as uid 1000 with the session's mount plan,
/// every source taken through the mount at `mount_point` (its writable area at `/workspace`,
/// `inbound.db` a nested read-only bind of the one file on top).
pub(super) fn sandboxed_echo(
    echo: &Path,
    mount_point: &Path,
    group: &GroupMounts,
    frozen_after: Duration,
) -> Result<Command, String> {
    let plan = MountPlan::builder(
        SessionMounts::from_paths(&SessionPaths::new(mount_point)),
        group.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let echo_dir = echo.parent().ok_or("the echo container has no folder")?;
    let system = DEFAULT_SYSTEM_MOUNTS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .chain(std::iter::once(echo_dir.to_path_buf()));
    BwrapCommand::new(&plan, echo, SANDBOX_UID, SANDBOX_UID)
        .arg("--workspace")
        .arg(WORKSPACE.as_str())
        .args(echo_args(frozen_after))
        .system_mounts(system)
        .env("PATH", "/usr/bin:/bin")
        .command()
        .map_err(|e| e.to_string())
}

/// The sandboxed container's user.
pub(super) const SANDBOX_UID: u32 = 1000;

impl EchoProcess {
    pub(super) fn start(
        echo: &Path,
        workspace: &Path,
        frozen_after: Duration,
    ) -> Result<EchoProcess, String> {
        let mut cmd = Command::new(echo);
        cmd.arg("--workspace")
            .arg(workspace)
            .args(echo_args(frozen_after));
        EchoProcess::spawn(cmd, echo)
    }

    pub(super) fn spawn(mut cmd: Command, echo: &Path) -> Result<EchoProcess, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", echo.display()))?;
        let log = Arc::new(Mutex::new(ContainerLog::default()));
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                if line.contains(": started on ") {
                    l.started = true;
                }
                if let Some((id, at)) = parse_claim(&line) {
                    l.claims.entry(id).or_default().push(at);
                }
                l.lines.push(line);
            }
        });
        Ok(EchoProcess {
            child: Some(child),
            log,
            exit: None,
        })
    }

    pub(super) fn exited(&mut self) -> bool {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.exit = Some(status.to_string());
                self.child = None;
            }
        }
        self.child.is_none()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub(super) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(raw) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child, not yet reaped, so its pid is not recycled.
            unsafe { libc::kill(raw, libc::SIGTERM) };
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(format!("stopped by the host ({status})"));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let status = child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        self.exit = Some(format!("killed after {grace:?} ({status})"));
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `echo_container[pid]: claimed <id> at <unix ms>`.
pub(super) fn parse_claim(line: &str) -> Option<(String, i64)> {
    let rest = &line[line.find("]: claimed ")? + "]: claimed ".len()..];
    let (id, at) = rest.rsplit_once(" at ")?;
    Some((id.to_string(), at.trim().parse().ok()?))
}
