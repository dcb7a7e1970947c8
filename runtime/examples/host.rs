//! A complete host on the sessionbus runtime, driving the `echo_container` example inside a
//! bubblewrap sandbox (or, with `--no-sandbox`, as a plain child process).
//!
//! ```text
//! host [--data-dir DIR] [--group G] [--session S] [--container-cmd PATH]
//!      [--container-uid UID] [--container-gid GID] [--no-sandbox]
//!      [--message TEXT]... [--admin] [--timeout-secs N] [--kill-after N]...
//! ```
//!
//! It provisions `DIR/v2-sessions/G/S/` in the split layout with the container's area owned by
//! the container's user (`--container-uid`/`--container-gid`, default 1000 when run as root,
//! else this process's own), prepares the group (its `container.json` in the host-owned
//! `.sessionbus-host/`, its agent folder under `DIR/agents/G`), projects the destinations and
//! the default routing into inbound.db (as the older host does before every wake), takes the
//! messages from `--message` (repeatable) or from stdin (one per line), passes each through the
//! command gate (`accept_chat`; `--admin` says whether the sender is an admin), then loops:
//! sweep (start the container when messages are due, kill it when stuck, settle what a dead
//! container had claimed) and delivery. The container runs in bubblewrap as that user and sees
//! only its session's mount plan. Each delivered reply is printed on stdout as one JSON line:
//!
//! ```text
//! {"seq":3,"id":"m-1-echo","in_reply_to":"m-1","text":"echo: hi","source":"container"}
//! ```
//!
//! Everything else (what the gate did, sweeps, kills) goes to stderr.
//!
//! Exit status: 0 when every accepted message is answered (a delivered row with
//! `in_reply_to` = its id, or a reply that names no message or one already answered, which
//! the older container writes for `/clear` and for a whole burst: it answers the oldest
//! message still unanswered; a denial is the host's answer; a filtered command needs none),
//! 1 on an error, 2 when `--timeout-secs` passed first, 3 when a message was answered more
//! than once.

use clap::Parser;
use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{
    prepare_group, CallerError, ChildControl, SandboxControl, SandboxOptions,
};
use sessionbus_runtime::host::{
    accept_chat, deliver_session, sweep_session, Accepted, ContainerControl, Deliverer,
    SweepOptions, SweepReport,
};
use sessionbus_runtime::liveness::{KillReason, RetryPolicy};
use sessionbus_runtime::mount_plan::GroupMounts;
use sessionbus_runtime::wake::{WatchSet, WatchSetOptions};
use sessionbus_store::{
    provision, Address, Destination, DestinationType, DueOutbound, HostSession, NewMessage,
    OutboundSource, Ownership, Routing, SessionPaths,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The host's command line.
#[derive(Debug, Parser)]
#[command(
    name = "host",
    about = "A sessionbus host: sends chat messages to an echo container and prints its replies \
             as JSON lines"
)]
struct Args {
    /// Data dir holding v2-sessions/<group>/<session>/
    #[arg(long, value_name = "DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Agent group id
    #[arg(long, value_name = "G", default_value = "example-group")]
    group: String,

    /// Session id
    #[arg(long, value_name = "S", default_value = "example-session")]
    session: String,

    /// The container binary (default: echo_container next to this binary); it is started as
    /// `PATH --workspace <session dir> [--container-arg ...]`
    #[arg(long, value_name = "PATH")]
    container_cmd: Option<PathBuf>,

    /// The container's user id (default: 1000 when this runs as root, else this process's)
    #[arg(long, value_name = "UID")]
    container_uid: Option<u32>,

    /// The container's group id (default: 1000 when this runs as root, else this process's)
    #[arg(long, value_name = "GID")]
    container_gid: Option<u32>,

    /// Run the container as a plain child process on the host's folders instead of in a
    /// bubblewrap sandbox (development only: it can then write everything this process can)
    #[arg(long)]
    no_sandbox: bool,

    /// An extra argument for the container (repeatable), e.g. --container-arg=--slow-ms=200
    #[arg(long = "container-arg", value_name = "ARG", allow_hyphen_values = true)]
    container_args: Vec<OsString>,

    /// A chat message to send (repeatable); without any, messages are read from stdin, one
    /// per line
    #[arg(long = "message", value_name = "TEXT")]
    messages: Vec<String>,

    /// The sender is an admin (admin commands such as /cost pass the gate instead of being
    /// denied)
    #[arg(long)]
    admin: bool,

    /// Give up (exit 2) when not every message is answered after this long
    #[arg(long, value_name = "N", default_value_t = 60)]
    timeout_secs: u64,

    /// kill -9 the container as soon as it has claimed a message once N replies were
    /// delivered (repeatable: one kill per value), to watch the sweep recover
    #[arg(long = "kill-after", value_name = "N")]
    kill_after: Vec<usize>,

    /// Message ids are PREFIX-1, PREFIX-2, ... (default: m<unix millis>)
    #[arg(long, value_name = "PREFIX")]
    id_prefix: Option<String>,

    /// The first retry's backoff after a container died holding a message (doubles per try)
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    retry_backoff_ms: i64,

    /// How often the host sweeps and delivers
    #[arg(long, value_name = "MS", default_value_t = 50)]
    tick_ms: u64,

    /// When the session has no container.json yet, write one with this poll interval
    #[arg(long, value_name = "MS", default_value_t = 100)]
    poll_ms: u64,

    /// When the session has no container.json yet, write one with this maxMessagesPerPrompt
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,
}

/// Exit status when the timeout passed before every message was answered.
const EXIT_TIMEOUT: u8 = 2;
/// Exit status when a message was answered more than once.
const EXIT_DUPLICATE: u8 = 3;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("host: {e}");
            ExitCode::from(1)
        }
    }
}

/// One delivered reply, as printed on stdout (fields in this order).
#[derive(serde::Serialize)]
struct ReplyLine<'a> {
    seq: Option<i64>,
    id: &'a str,
    in_reply_to: Option<&'a str>,
    text: &'a str,
    source: &'static str,
}

/// Prints each delivered row as one JSON line and counts the answers per message.
#[derive(Default)]
struct JsonLines {
    /// Messages sent, in order.
    sent: Vec<String>,
    answers: BTreeMap<String, usize>,
    /// Replies that answered nothing still unanswered (a second answer).
    extra: usize,
    delivered: usize,
}

impl Deliverer for JsonLines {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        let m = &row.message;
        let content: serde_json::Value =
            serde_json::from_str(&m.content).unwrap_or(serde_json::Value::Null);
        let line = ReplyLine {
            seq: m.seq.map(|s| s.get()),
            id: &m.id,
            in_reply_to: m.in_reply_to.as_deref(),
            text: content.get("text").and_then(|t| t.as_str()).unwrap_or(""),
            source: match row.source {
                OutboundSource::Container => "container",
                OutboundSource::Host => "host",
            },
        };
        let line = serde_json::to_string(&line)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        self.delivered += 1;
        // A reply naming a message not yet answered answers it; one naming no message (or one
        // already answered: the older container names the newest message of a burst for all
        // its replies) answers the oldest message still unanswered.
        let named = m
            .in_reply_to
            .clone()
            .filter(|to| self.sent.contains(to) && !self.answers.contains_key(to));
        let to = named.or_else(|| {
            self.sent
                .iter()
                .find(|id| !self.answers.contains_key(*id))
                .cloned()
        });
        match to {
            Some(to) => *self.answers.entry(to).or_default() += 1,
            None => self.extra += 1,
        }
        Ok(None)
    }
}

/// The container control in use: sandboxed, or a plain child with `--no-sandbox`.
enum Control {
    Sandbox(SandboxControl),
    Child(ChildControl),
}

impl Control {
    fn pid(&self, session: &SessionPaths) -> Option<u32> {
        match self {
            Control::Sandbox(c) => c.pid(session),
            Control::Child(c) => c.pid(session),
        }
    }

    fn counts(&self) -> (u32, u32) {
        match self {
            Control::Sandbox(c) => (c.starts, c.kills),
            Control::Child(c) => (c.starts, c.kills),
        }
    }

    /// `kill -9` the container now (the sandbox's init, which takes the sandbox with it).
    fn kill9(&mut self, session: &SessionPaths, why: &str) -> Result<(), String> {
        match self {
            Control::Child(c) => c.kill_now(session, why).map(|_| ()),
            Control::Sandbox(c) => c.stop(session).map(|_| ()),
        }
        .map_err(|e| e.to_string())
    }

    /// Asks the container to stop (SIGTERM, a grace period, then SIGKILL).
    fn stop(&mut self, session: &SessionPaths) -> Result<Option<String>, String> {
        match self {
            Control::Child(c) => c
                .stop(session, Duration::from_secs(5))
                .map_err(|e| e.to_string()),
            Control::Sandbox(c) => Ok(c
                .stop(session)
                .map_err(|e| e.to_string())?
                .map(|p| format!("sandbox {p} stopped"))),
        }
    }
}

impl ContainerControl for Control {
    fn is_running(&mut self, s: &SessionPaths) -> bool {
        match self {
            Control::Sandbox(c) => c.is_running(s),
            Control::Child(c) => c.is_running(s),
        }
    }
    fn kill(&mut self, s: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        match self {
            Control::Sandbox(c) => c.kill(s, reason),
            Control::Child(c) => c.kill(s, reason),
        }
    }
    fn start(&mut self, s: &SessionPaths) -> Result<(), CallerError> {
        match self {
            Control::Sandbox(c) => c.start(s),
            Control::Child(c) => c.start(s),
        }
    }
}

/// The container's user: as given, else 1000 when running as root, else this process's.
fn container_owner(args: &Args) -> Ownership {
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let default = |own: u32| if euid == 0 { 1000 } else { own };
    Ownership {
        uid: args.container_uid.unwrap_or_else(|| default(euid)),
        gid: args.container_gid.unwrap_or_else(|| default(egid)),
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let data_dir = std::path::absolute(&args.data_dir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().map_err(|e| e.to_string())?;
    let owner = container_owner(args);
    let paths = SessionPaths::in_data_dir(&data_dir, &args.group, &args.session)
        .map_err(|e| e.to_string())?;
    provision(&paths, Some(owner), &sessionbus_store::SystemClock).map_err(|e| e.to_string())?;
    eprintln!("host: session folder {}", paths.dir.display());
    let group = GroupMounts::for_group(
        &data_dir,
        &args.group,
        data_dir.join("agents").join(&args.group),
    )
    .map_err(|e| e.to_string())?;
    prepare_group(&group, Some(owner), &default_config(args)?).map_err(|e| e.to_string())?;
    eprintln!("host: wrote {}", group.container_json.display());

    let program = match &args.container_cmd {
        Some(p) => p
            .canonicalize()
            .map_err(|e| format!("{}: {e}", p.display()))?,
        None => default_container_cmd()?,
    };
    let mut control = if args.no_sandbox {
        let mut extra: Vec<OsString> = vec!["--config".into(), group.container_json.clone().into()];
        extra.extend(args.container_args.iter().cloned());
        Control::Child(ChildControl::new(program, extra))
    } else {
        eprintln!(
            "host: containers run in bubblewrap as uid {} gid {}",
            owner.uid, owner.gid
        );
        Control::Sandbox(SandboxControl::new(
            SandboxOptions::new(
                program,
                owner.uid,
                owner.gid,
                &data_dir,
                data_dir.join("agents"),
            )
            .with_args(args.container_args.clone()),
        ))
    };
    let host = HostSession::open(&paths.dir);
    let address = Address {
        platform_id: Some("cli".into()),
        channel_type: Some("example".into()),
        thread_id: None,
    };
    project_wiring(&host, &address)?;
    let texts = if args.messages.is_empty() {
        read_stdin_messages()?
    } else {
        args.messages.clone()
    };
    let prefix = args.id_prefix.clone().unwrap_or_else(|| {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("m{ms}")
    });
    let mut printer = JsonLines::default();
    let mut expected = BTreeSet::new();
    for (i, text) in texts.iter().enumerate() {
        let id = format!("{prefix}-{}", i + 1);
        let msg = NewMessage::chat(&id, text).to(address.clone());
        match accept_chat(&host, &msg, || args.admin).map_err(|e| e.to_string())? {
            Accepted::Written(w) => {
                eprintln!("host: wrote {id} (seq {}): {text}", w.seq);
                expected.insert(id.clone());
                printer.sent.push(id);
            }
            Accepted::Filtered { command } => {
                eprintln!("host: {command} is filtered: dropped, no answer expected");
            }
            Accepted::Denied { command, reply_seq } => {
                eprintln!(
                    "host: {command} denied (not an admin): denial written as seq {reply_seq}"
                );
                expected.insert(id.clone());
                printer.sent.push(id);
            }
        }
    }

    let opts = SweepOptions::default().with_retry(RetryPolicy {
        base_backoff_ms: args.retry_backoff_ms,
        ..RetryPolicy::default()
    });
    let mut kills: Vec<usize> = args.kill_after.clone();
    kills.sort_unstable();
    kills.reverse(); // next threshold last
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let answered = |p: &JsonLines| expected.iter().all(|id| p.answers.contains_key(id));
    // Between passes, wait for the container's commits to outbound.db (inotify where the
    // folder's filesystem delivers it), a tick at most.
    let mut wake = WatchSet::new(WatchSetOptions::default().with_full_pass_every(tick));
    eprintln!("host: waking on {}", wake.watch((), &paths.outbound));

    while !answered(&printer) {
        if Instant::now() >= deadline {
            let missing: Vec<&String> = expected
                .iter()
                .filter(|id| !printer.answers.contains_key(*id))
                .collect();
            eprintln!(
                "host: timed out after {} s; unanswered: {missing:?}",
                args.timeout_secs
            );
            let _ = control.stop(&paths);
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        let was_running = control.pid(&paths);
        match sweep_session(&host, &mut control, &|_| None, opts) {
            Ok(report) => log_sweep(&report, was_running, control.pid(&paths)),
            Err(e) if e.is_retryable() => eprintln!("host: sweep will retry: {e}"),
            Err(e) => return Err(format!("sweep failed: {e}")),
        }
        match deliver_session(&host, &mut printer, 5) {
            Ok(_) => {}
            Err(e) if e.is_retryable() => eprintln!("host: delivery will retry: {e}"),
            Err(e) => return Err(format!("delivery failed: {e}")),
        }
        if let Some(&n) = kills.last() {
            if printer.delivered >= n && !answered(&printer) {
                // Kill mid-conversation: once the container holds a claim.
                let claimed = host.pending_claims().map(|c| !c.is_empty());
                if let (Ok(true), Some(pid)) = (claimed, control.pid(&paths)) {
                    kills.pop();
                    control.kill9(&paths, "--kill-after")?;
                    eprintln!(
                        "host: kill -9 container pid {pid} after {} delivered replies \
                         (--kill-after {n}), while it held a claim",
                        printer.delivered
                    );
                }
            }
        }
        let _ = wake.wait(tick);
    }

    // Every message is answered: stop the container, then one last sweep (acks become
    // `completed` in inbound.db) and delivery (anything late shows).
    if let Some(status) = control.stop(&paths)? {
        eprintln!("host: container stopped ({status})");
    }
    let last = opts.with_wake(false);
    sweep_session(&host, &mut control, &|_| None, last).map_err(|e| e.to_string())?;
    deliver_session(&host, &mut printer, 5).map_err(|e| e.to_string())?;

    let dups: Vec<(&String, &usize)> = printer.answers.iter().filter(|(_, n)| **n > 1).collect();
    if !dups.is_empty() || printer.extra > 0 {
        eprintln!(
            "host: answered more than once: {dups:?} ({} extra replies)",
            printer.extra
        );
        return Ok(ExitCode::from(EXIT_DUPLICATE));
    }
    let (starts, kills) = control.counts();
    eprintln!(
        "host: all {} message(s) answered; {starts} container start(s), {kills} kill(s)",
        expected.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Projects what the container needs to address its replies, before any wake (the older
/// container drops a reply it cannot route): one destination for the chat, and the default
/// routing to it.
fn project_wiring(host: &HostSession, address: &Address) -> Result<(), String> {
    host.inbound()
        .replace_destinations(&[Destination {
            name: "cli".into(),
            display_name: Some("the example chat".into()),
            kind: DestinationType::Channel,
            channel_type: address.channel_type.clone(),
            platform_id: address.platform_id.clone(),
            agent_group_id: None,
        }])
        .map_err(|e| e.to_string())?;
    host.inbound()
        .set_routing(&Routing {
            channel_type: address.channel_type.clone(),
            platform_id: address.platform_id.clone(),
            thread_id: address.thread_id.clone(),
        })
        .map_err(|e| e.to_string())
}

fn log_sweep(r: &SweepReport, was_running: Option<u32>, now_running: Option<u32>) {
    if r.killed {
        if let (Some(pid), Some(sessionbus_runtime::liveness::StuckDecision::Kill { reason })) =
            (was_running, &r.decision)
        {
            eprintln!("host: sweep killed container pid {pid}: {reason}");
        }
    }
    for id in &r.retried {
        eprintln!("host: sweep retried the claim of {id} (the container died holding it)");
    }
    for id in &r.failed {
        eprintln!("host: sweep marked {id} failed after its last try");
    }
    if r.claims_settled > 0 {
        eprintln!(
            "host: sweep settled {} claim(s) of the stopped container",
            r.claims_settled
        );
    }
    if let Some(why) = &r.outbound_unreadable {
        eprintln!("host: outbound.db unreadable this time: {why}");
    }
    if r.woke {
        if let Some(pid) = now_running {
            eprintln!("host: started container pid {pid} (messages are due)");
        }
    }
}

/// `echo_container` in the folder of this binary (cargo puts examples side by side).
fn default_container_cmd() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidate = dir.join("echo_container");
    if candidate.is_file() {
        candidate.canonicalize().map_err(|e| e.to_string())
    } else {
        Err(format!(
            "no echo_container next to {}; build it with `cargo build --example echo_container \
             -p sessionbus-runtime` or pass --container-cmd PATH",
            exe.display()
        ))
    }
}

/// The group's `container.json` for the echo container: quick polls.
fn default_config(args: &Args) -> Result<ContainerConfig, String> {
    let mut cfg = serde_json::json!({
        "assistantName": "echo",
        "pollIntervalIdleMs": args.poll_ms.max(1),
        "pollIntervalActiveMs": args.poll_ms.max(1),
    });
    if let Some(n) = args.batch_size {
        cfg["maxMessagesPerPrompt"] = n.into();
    }
    ContainerConfig::from_str(&cfg.to_string(), "container.json").map_err(|e| e.to_string())
}

fn read_stdin_messages() -> Result<Vec<String>, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("host: type messages, one per line; end with Ctrl-D");
    }
    let mut out = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        if !line.trim().is_empty() {
            out.push(line);
        }
    }
    Ok(out)
}
