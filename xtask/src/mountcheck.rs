//! `cargo xtask mountcheck`: the host and a real container across a real mount.
//!
//! For each cache mode (`auto_cache`, `direct_io`, `kernel_cache`; see
//! [`sessionbus_testkit::mount::CacheMode`]) it provisions a fresh session folder, mounts it
//! with bindfs in that mode, and runs the `echo_container` example with its workspace on the
//! mount, while this process plays the host on the folder itself: it writes chat messages at
//! random intervals, and delivers the replies by reading outbound.db as the container wrote it
//! through the mount. Then it counts, per mode: messages sent, answered exactly once, lost,
//! duplicated, torn (a reply whose text is not `echo: <text>` of its message, or an
//! outbound.db failing `PRAGMA integrity_check`), and the time from the host's commit to the
//! container's claim (p50, p99, max; the container logs each claim with `--log-claims`).
//!
//! `auto_cache` and `direct_io` revalidate what they cache: every message must be answered
//! exactly once. `kernel_cache` never does: the container sees nothing new, and must say so
//! (the runtime's frozen-view diagnosis, from the host's generation stamp) instead of polling
//! a frozen view; that diagnosis is the expected outcome there.
//!
//! It needs `/dev/fuse`, `bindfs` and `fusermount`; without them it fails, saying which is
//! missing. Mounts are removed when done, also after a failure, and mounts a previous,
//! interrupted run left behind are removed first.

use clap::Args;
use diesel::sql_types::{Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl};
use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{prepare_group, DEFAULT_SYSTEM_MOUNTS};
use sessionbus_runtime::host::{deliver_session, Deliverer};
use sessionbus_runtime::mount_plan::{
    BwrapCommand, GroupMounts, MountPlan, SessionMounts, WORKSPACE,
};
use sessionbus_schema::{DbFile, FileKind, Role};
use sessionbus_store::{
    provision, DueOutbound, HostSession, NewMessage, Ownership, SessionPaths, SystemClock,
};
use sessionbus_testkit::mount::{cleanup_stale_mounts, fuse_status, BindMount, CacheMode};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Exit status when a mode did not behave as expected, or the check could not run (no FUSE).
pub const EXIT_FAILED: u8 = 1;

/// Arguments of `cargo xtask mountcheck`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Run the host on a session folder and the echo_container example through a bindfs \
mount of it, once per FUSE cache mode: the host writes chat messages at random intervals and \
delivers the replies; per mode it prints messages sent, answered once, lost, duplicated, torn, \
and the host-commit-to-container-claim latency (p50, p99, max).\n\n\
auto_cache and direct_io must answer every message exactly once; under kernel_cache (a mount \
that never revalidates) the container must report a frozen view instead of polling forever.\n\n\
Needs /dev/fuse, bindfs and fusermount (Debian: apt-get install -y bindfs). Builds the \
sessionbus-runtime examples first.",
    after_help = "Exit status: 0 when every mode behaved as expected, 1 otherwise or when the check \
could not run (no FUSE, no bindfs)."
)]
pub struct MountcheckArgs {
    /// A cache mode to check (repeatable): auto_cache, direct_io, kernel_cache [default: all]
    #[arg(long = "mode", value_name = "MODE")]
    pub modes: Vec<CacheMode>,

    /// Messages the host writes per mode
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub messages: usize,

    /// The host waits a random 0..=MS between two messages
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub max_gap_ms: u64,

    /// Seed of the random intervals [default: from the clock]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// The container reports a frozen view of inbound.db after this long behind the host
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub frozen_after_ms: u64,

    /// After the last message, wait this long at most for the answers
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub drain_secs: u64,

    /// Use this echo_container binary instead of building the examples
    #[arg(long, value_name = "PATH")]
    pub container_cmd: Option<PathBuf>,

    /// Print the reports as JSON instead of a table
    #[arg(long)]
    pub json: bool,

    /// Keep each mode's session folder (its path is printed) instead of removing it
    #[arg(long)]
    pub keep: bool,

    /// Run the container in bubblewrap as uid 1000 from the session's mount plan, so that
    /// inbound.db is a nested read-only bind of one file and the host's journal is hidden
    /// from the container's reader (needs root and bubblewrap)
    #[arg(long)]
    pub sandbox: bool,
}

/// What to run in one mode (the library form of the arguments).
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Messages the host writes.
    pub messages: usize,
    /// The host waits a random 0..=this between two messages.
    pub max_gap: Duration,
    /// Seed of the random intervals.
    pub seed: u64,
    /// The container's frozen-view threshold.
    pub frozen_after: Duration,
    /// How long to wait for answers after the last message.
    pub drain: Duration,
    /// Keep the session folder afterwards.
    pub keep: bool,
    /// Run the container in bubblewrap as uid 1000 with the session's mount plan built from
    /// the mount: `inbound.db` a nested read-only bind of the one file, so the host's journal
    /// is not visible to the container's reader.
    pub sandbox: bool,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            messages: 40,
            max_gap: Duration::from_millis(200),
            seed: 1,
            frozen_after: Duration::from_millis(3000),
            drain: Duration::from_secs(20),
            keep: false,
            sandbox: false,
        }
    }
}

/// Commit-to-claim latency over the claimed messages, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Messages measured.
    pub n: usize,
    /// Median.
    pub p50_ms: i64,
    /// 99th percentile (nearest rank).
    pub p99_ms: i64,
    /// Slowest.
    pub max_ms: i64,
}

impl Latency {
    /// Percentiles of `samples` (nearest rank); `None` when empty.
    pub fn of(samples: &[i64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let rank = |q: f64| {
            let k = (q * v.len() as f64).ceil() as usize;
            v[k.clamp(1, v.len()) - 1]
        };
        Some(Latency {
            n: v.len(),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: v[v.len() - 1],
        })
    }
}

/// What one mode did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeReport {
    /// The cache mode.
    pub mode: String,
    /// Messages the host wrote.
    pub sent: usize,
    /// Messages with exactly one reply (delivered once, one row in outbound.db, right text).
    pub answered_once: usize,
    /// Messages with no reply at all.
    pub lost: usize,
    /// Messages with more than one reply (delivered twice, or two rows).
    pub duplicated: usize,
    /// Replies whose text or address is wrong, delivered replies missing from outbound.db,
    /// plus every reply when outbound.db fails its integrity check.
    pub torn: usize,
    /// Messages the container claimed more than once.
    pub claimed_twice: usize,
    /// Host commit to container claim, over the claimed messages.
    pub latency: Option<Latency>,
    /// `PRAGMA integrity_check` of outbound.db, read by the host on its side.
    pub outbound_integrity: String,
    /// Retryable errors the host rode out (a hot journal the container's commit left visible
    /// for a moment: its locks do not cross the mount).
    pub host_retries: usize,
    /// How the container ended.
    pub container_exit: String,
    /// The container's frozen-view diagnosis, when it gave one.
    pub diagnosis: Option<String>,
    /// Wall time of the mode, in ms.
    pub elapsed_ms: u64,
    /// The mode behaved as it must (see [`ModeReport::expectation`]).
    pub ok: bool,
    /// What this mode must do.
    pub expectation: String,
}

impl ModeReport {
    /// What `mode` must do: answer everything exactly once, or (kernel_cache) report the frozen
    /// view.
    pub fn expectation(mode: CacheMode) -> &'static str {
        if mode.revalidates() {
            "every message answered exactly once, nothing torn"
        } else {
            "the container reports a frozen view; nothing duplicated or torn"
        }
    }
}

/// `cargo xtask mountcheck`: runs the check and returns the exit code.
pub fn main(args: &MountcheckArgs) -> ExitCode {
    match run(args) {
        Ok(reports) => {
            if args.json {
                match serde_json::to_string_pretty(&reports) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("mountcheck: {e}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                }
            }
            if reports.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                eprintln!("\nmountcheck FAILED: a mode did not behave as expected (see above)");
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("mountcheck: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Runs every selected mode and prints the table (unless `--json`).
pub fn run(args: &MountcheckArgs) -> Result<Vec<ModeReport>, String> {
    fuse_status().map_err(|e| format!("{e}; nothing was checked"))?;
    for p in cleanup_stale_mounts() {
        eprintln!(
            "mountcheck: unmounted {} (left by an interrupted run)",
            p.display()
        );
    }
    let echo = match &args.container_cmd {
        Some(p) => p.clone(),
        None => crate::demo::build_examples()?.0,
    };
    let modes = if args.modes.is_empty() {
        CacheMode::ALL.to_vec()
    } else {
        args.modes.clone()
    };
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let opts = RigOptions {
        messages: args.messages,
        max_gap: Duration::from_millis(args.max_gap_ms),
        seed,
        frozen_after: Duration::from_millis(args.frozen_after_ms),
        drain: Duration::from_secs(args.drain_secs),
        keep: args.keep,
        sandbox: args.sandbox,
    };
    if !args.json {
        println!(
            "mountcheck: {} messages per mode, 0-{} ms apart (seed {seed}); the host on the \
             session folder, {} through a bindfs mount of it",
            opts.messages,
            args.max_gap_ms,
            echo.file_name()
                .map_or("echo_container".into(), |n| n.to_string_lossy())
        );
    }
    let mut reports = Vec::new();
    for mode in modes {
        if !args.json {
            eprintln!("mountcheck: {mode} ...");
        }
        reports.push(run_mode(mode, &opts, &echo)?);
    }
    if !args.json {
        print!("{}", table(&reports));
    }
    Ok(reports)
}

/// The report table, one row per mode, then the diagnoses and a verdict per mode.
pub fn table(reports: &[ModeReport]) -> String {
    let ms = |l: Option<Latency>, f: fn(&Latency) -> i64| {
        l.map_or_else(|| "-".to_string(), |l| format!("{} ms", f(&l)))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\n{:<13} {:>5} {:>14} {:>5} {:>11} {:>5} {:>9} {:>9} {:>9}   {}\n",
        "mode",
        "sent",
        "answered once",
        "lost",
        "duplicated",
        "torn",
        "p50",
        "p99",
        "max",
        "result"
    ));
    for r in reports {
        out.push_str(&format!(
            "{:<13} {:>5} {:>14} {:>5} {:>11} {:>5} {:>9} {:>9} {:>9}   {}\n",
            r.mode,
            r.sent,
            r.answered_once,
            r.lost,
            r.duplicated,
            r.torn,
            ms(r.latency, |l| l.p50_ms),
            ms(r.latency, |l| l.p99_ms),
            ms(r.latency, |l| l.max_ms),
            verdict(r),
        ));
    }
    out.push_str("(p50/p99/max: from the host's commit to the container's claim)\n");
    for r in reports {
        if let Some(d) = &r.diagnosis {
            out.push_str(&format!("\n{}: the container said: {d}\n", r.mode));
        }
        if r.host_retries > 0 {
            out.push_str(&format!(
                "{}: the host rode out {} retryable read error(s) (the container's commit in \
                 progress: its locks do not cross the mount)\n",
                r.mode, r.host_retries
            ));
        }
        if !r.ok {
            out.push_str(&format!(
                "{}: FAILED: expected {}; container {}; outbound.db integrity: {}\n",
                r.mode, r.expectation, r.container_exit, r.outbound_integrity
            ));
        }
    }
    out
}

fn verdict(r: &ModeReport) -> String {
    match (r.ok, &r.diagnosis) {
        (true, Some(_)) => format!(
            "ok: frozen view reported (container {})",
            short_exit(&r.container_exit)
        ),
        (true, None) => "ok".into(),
        (false, _) => "FAILED".into(),
    }
}

fn short_exit(s: &str) -> String {
    s.strip_prefix("exit status: ")
        .map_or_else(|| s.to_string(), |c| format!("exited {c}"))
}

/// A small deterministic generator for the intervals (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn below(&mut self, n: u64) -> u64 {
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

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the container's stderr said.
#[derive(Default)]
struct ContainerLog {
    started: bool,
    /// Claim times (Unix ms) per message id, in order.
    claims: HashMap<String, Vec<i64>>,
    lines: Vec<String>,
}

/// The container process, its stderr parsed by a thread.
struct EchoProcess {
    child: Option<Child>,
    log: Arc<Mutex<ContainerLog>>,
    exit: Option<String>,
}

/// The echo container's arguments after `--workspace DIR`.
fn echo_args(frozen_after: Duration) -> Vec<String> {
    vec![
        "--log-claims".into(),
        format!("--frozen-view-ms={}", frozen_after.as_millis().max(1)),
        "--heartbeat-ms=1000".into(),
    ]
}

/// The sandboxed container's command: bubblewrap as uid 1000 with the session's mount plan,
/// every source taken through the mount at `mount_point` (its writable area at `/workspace`,
/// `inbound.db` a nested read-only bind of the one file on top).
fn sandboxed_echo(
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
const SANDBOX_UID: u32 = 1000;

impl EchoProcess {
    fn start(echo: &Path, workspace: &Path, frozen_after: Duration) -> Result<EchoProcess, String> {
        let mut cmd = Command::new(echo);
        cmd.arg("--workspace")
            .arg(workspace)
            .args(echo_args(frozen_after));
        EchoProcess::spawn(cmd, echo)
    }

    fn spawn(mut cmd: Command, echo: &Path) -> Result<EchoProcess, String> {
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

    fn exited(&mut self) -> bool {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                self.exit = Some(status.to_string());
                self.child = None;
            }
        }
        self.child.is_none()
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(&mut self, grace: Duration) {
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
fn parse_claim(line: &str) -> Option<(String, i64)> {
    let rest = &line[line.find("]: claimed ")? + "]: claimed ".len()..];
    let (id, at) = rest.rsplit_once(" at ")?;
    Some((id.to_string(), at.trim().parse().ok()?))
}

/// The host's "chat platform": counts the replies per message and keeps their text.
#[derive(Default)]
struct Platform {
    replies: BTreeMap<String, Vec<String>>,
    unaddressed: usize,
}

impl Deliverer for Platform {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        let m = &row.message;
        let text = serde_json::from_str::<serde_json::Value>(&m.content)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| m.content.clone());
        match &m.in_reply_to {
            Some(to) => self.replies.entry(to.clone()).or_default().push(text),
            None => self.unaddressed += 1,
        }
        Ok(None)
    }
}

/// The host's side of a mode: writes, deliveries, ack syncs, and the retryable errors it rode
/// out.
struct HostSide {
    host: HostSession,
    platform: Platform,
    retries: usize,
    errors: Vec<String>,
}

impl HostSide {
    fn tick(&mut self) {
        match deliver_session(&self.host, &mut self.platform, 5) {
            Ok(_) => {}
            Err(e) if e.is_retryable() => self.retries += 1,
            Err(e) => self.errors.push(format!("delivery: {e}")),
        }
        match self.host.sync_acks(&|_| None) {
            Ok(_) => {}
            Err(e) if e.is_retryable() => self.retries += 1,
            Err(e) => self.errors.push(format!("ack sync: {e}")),
        }
    }
}

#[derive(QueryableByName)]
struct ReplyRow {
    #[diesel(sql_type = Nullable<Text>)]
    in_reply_to: Option<String>,
    #[diesel(sql_type = Text)]
    content: String,
}

#[derive(QueryableByName)]
struct IntegrityRow {
    #[diesel(sql_type = Text)]
    integrity_check: String,
}

/// Every reply row of outbound.db (host side) by `in_reply_to`, and its integrity check.
fn outbound_rows(path: &Path) -> Result<(BTreeMap<String, Vec<String>>, String), String> {
    let file = DbFile::new(path, FileKind::Outbound, Role::Host);
    let mut last = String::new();
    for _ in 0..50 {
        let attempt = (|| -> Result<_, String> {
            let mut c = file
                .open_reader("mountcheck tally")
                .map_err(|e| e.to_string())?;
            let rows: Vec<ReplyRow> =
                diesel::sql_query("SELECT in_reply_to, content FROM messages_out")
                    .load(&mut c)
                    .map_err(|e| e.to_string())?;
            let integrity: Vec<IntegrityRow> = diesel::sql_query("PRAGMA integrity_check")
                .load(&mut c)
                .map_err(|e| e.to_string())?;
            let mut by = BTreeMap::<String, Vec<String>>::new();
            for r in rows {
                let text = serde_json::from_str::<serde_json::Value>(&r.content)
                    .ok()
                    .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or(r.content);
                by.entry(r.in_reply_to.unwrap_or_default())
                    .or_default()
                    .push(text);
            }
            let integrity = integrity
                .into_iter()
                .map(|r| r.integrity_check)
                .collect::<Vec<_>>()
                .join("; ");
            Ok((by, integrity))
        })();
        match attempt {
            Ok(v) => return Ok(v),
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Err(format!("cannot read outbound.db: {last}"))
}

/// One mode: a fresh session folder mounted in `mode`, the echo container through the mount,
/// this process as the host on the folder itself.
pub fn run_mode(mode: CacheMode, opts: &RigOptions, echo: &Path) -> Result<ModeReport, String> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("sessionbus-mountcheck-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let paths = SessionPaths::in_data_dir(tmp.path(), "mountcheck", mode.option())
        .map_err(|e| e.to_string())?;
    let config = r#"{"assistantName":"echo","pollIntervalIdleMs":10,"pollIntervalActiveMs":10}"#;
    let (mut container, mount) = if opts.sandbox {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let owner = Ownership {
            uid: SANDBOX_UID,
            gid: SANDBOX_UID,
        };
        provision(&paths, Some(owner), &SystemClock).map_err(|e| e.to_string())?;
        let group = GroupMounts::for_group(
            tmp.path(),
            "mountcheck",
            tmp.path().join("agents/mountcheck"),
        )
        .map_err(|e| e.to_string())?;
        let config =
            ContainerConfig::from_str(config, "container.json").map_err(|e| e.to_string())?;
        prepare_group(&group, Some(owner), &config).map_err(|e| e.to_string())?;
        let mount = BindMount::with_access(&paths.dir, mode, true).map_err(|e| e.to_string())?;
        let cmd = sandboxed_echo(echo, mount.mount_point(), &group, opts.frozen_after)?;
        (EchoProcess::spawn(cmd, echo)?, mount)
    } else {
        provision(&paths, None, &SystemClock).map_err(|e| e.to_string())?;
        let agent = paths.dir.join("agent");
        std::fs::create_dir_all(&agent).map_err(|e| format!("{}: {e}", agent.display()))?;
        std::fs::write(agent.join("container.json"), config)
            .map_err(|e| format!("{}: {e}", agent.display()))?;
        let mount = BindMount::new(&paths.dir, mode).map_err(|e| e.to_string())?;
        (
            EchoProcess::start(echo, mount.mount_point(), opts.frozen_after)?,
            mount,
        )
    };
    let start_deadline = Instant::now() + Duration::from_secs(15);
    while !container.log.lock().map(|l| l.started).unwrap_or(false) {
        if container.exited() || Instant::now() >= start_deadline {
            let lines = container
                .log
                .lock()
                .map(|l| l.lines.join("\n"))
                .unwrap_or_default();
            return Err(format!(
                "{mode}: the container did not start ({}):\n{lines}",
                container
                    .exit
                    .as_deref()
                    .unwrap_or("still starting after 15 s")
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut host = HostSide {
        host: HostSession::open(&paths.dir),
        platform: Platform::default(),
        retries: 0,
        errors: Vec::new(),
    };
    let mut rng = Rng::new(opts.seed ^ (mode as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let max_gap = u64::try_from(opts.max_gap.as_millis()).unwrap_or(u64::MAX);
    let mut sent: Vec<(String, String, i64)> = Vec::new(); // id, text, commit ms
    let mut next = Instant::now();
    for i in 1..=opts.messages {
        next += Duration::from_millis(rng.below(max_gap.saturating_add(1)));
        while Instant::now() < next {
            host.tick();
            let left = next.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
        let id = format!("mc-{}-{i}", mode.option());
        let text = format!("message {i} of {} ({mode})", opts.messages);
        let mut tries = 0;
        loop {
            match host
                .host
                .inbound()
                .write_message(&NewMessage::chat(&id, &text))
            {
                Ok(_) => break,
                Err(e) if e.is_retryable() && tries < 20 => {
                    tries += 1;
                    host.retries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("{mode}: the host cannot write {id}: {e}")),
            }
        }
        sent.push((id, text, unix_ms()));
    }

    // Drain: until everything is answered, the container is gone, or time is up.
    let drain_end = Instant::now() + opts.drain;
    loop {
        host.tick();
        let all = sent
            .iter()
            .all(|(id, _, _)| host.platform.replies.contains_key(id));
        if all || container.exited() || Instant::now() >= drain_end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    container.stop(Duration::from_secs(5));
    // Whatever the container committed on its way out.
    host.tick();

    let (rows, integrity) = outbound_rows(&paths.outbound)?;
    let log = container.log.lock().map_err(|_| "log lock poisoned")?;
    let mut answered_once = 0;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut torn = 0;
    let mut claimed_twice = 0;
    let mut latencies = Vec::new();
    for (id, text, commit_ms) in &sent {
        let expected = format!("echo: {text}");
        let delivered = host.platform.replies.get(id).map_or(&[][..], Vec::as_slice);
        let stored = rows.get(id).map_or(&[][..], Vec::as_slice);
        let bad = delivered
            .iter()
            .chain(stored.iter())
            .filter(|t| **t != expected)
            .count();
        torn += bad + delivered.len().saturating_sub(stored.len());
        match (delivered.len(), stored.len()) {
            (0, 0) => lost += 1,
            (1, 1) if bad == 0 => answered_once += 1,
            (d, s) if d > 1 || s > 1 => duplicated += 1,
            _ => {}
        }
        if let Some(claims) = log.claims.get(id) {
            if claims.len() > 1 {
                claimed_twice += 1;
            }
            latencies.push((claims[0] - commit_ms).max(0));
        }
    }
    // Replies to nothing the host sent.
    torn += host.platform.unaddressed;
    torn += rows
        .iter()
        .filter(|(to, _)| !sent.iter().any(|(id, _, _)| id == *to))
        .map(|(_, v)| v.len())
        .sum::<usize>();
    if integrity != "ok" {
        torn = torn.max(rows.values().map(Vec::len).sum::<usize>().max(1));
    }
    let diagnosis = log
        .lines
        .iter()
        .find(|l| l.contains("view of inbound.db is frozen"))
        .map(|l| {
            l.split_once("poll loop stopped: ")
                .map_or(l.as_str(), |(_, d)| d)
                .to_string()
        });
    let container_exit = container
        .exit
        .clone()
        .unwrap_or_else(|| "still running".into());
    let clean = duplicated == 0 && torn == 0 && claimed_twice == 0 && integrity == "ok";
    let ok = if mode.revalidates() {
        clean && answered_once == sent.len() && lost == 0 && host.errors.is_empty()
    } else {
        clean && diagnosis.is_some()
    };
    if !ok {
        eprintln!("{mode}: host errors: {:?}", host.errors);
        eprintln!("{mode}: container stderr (last lines):");
        for l in log.lines.iter().rev().take(15).rev() {
            eprintln!("  {l}");
        }
    }
    let report = ModeReport {
        mode: mode.option().to_string(),
        sent: sent.len(),
        answered_once,
        lost,
        duplicated,
        torn,
        claimed_twice,
        latency: Latency::of(&latencies),
        outbound_integrity: integrity,
        host_retries: host.retries,
        container_exit,
        diagnosis,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ok,
        expectation: ModeReport::expectation(mode).to_string(),
    };
    let container_lines = log.lines.clone();
    drop(log);
    drop(container);
    mount.unmount().map_err(|e| e.to_string())?;
    if opts.keep {
        let _ = std::fs::write(
            tmp.path().join("container.log"),
            container_lines.join("\n") + "\n",
        );
        let kept = tmp.keep();
        eprintln!("{mode}: session folder kept at {}", kept.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        assert_eq!(Latency::of(&[]), None);
        let l = Latency::of(&[5]).unwrap();
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (5, 5, 5));
        let v: Vec<i64> = (1..=100).rev().collect();
        let l = Latency::of(&v).unwrap();
        assert_eq!((l.n, l.p50_ms, l.p99_ms, l.max_ms), (100, 50, 99, 100));
    }

    #[test]
    fn claim_lines_parse() {
        assert_eq!(
            parse_claim("echo_container[42]: claimed mc-auto_cache-3 at 1776773119123"),
            Some(("mc-auto_cache-3".into(), 1_776_773_119_123))
        );
        assert_eq!(parse_claim("echo_container[42]: batch of 1 (seq 2)"), None);
    }

    #[test]
    fn the_generator_stays_in_range_and_repeats_from_a_seed() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.below(201);
            assert!(x <= 200);
            assert_eq!(x, b.below(201));
        }
    }
}
