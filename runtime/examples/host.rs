//! A complete host on the sessionbus runtime, driving the `echo_container` example as a child
//! process instead of a Docker container.
//!
//! ```text
//! host [--data-dir DIR] [--group G] [--session S] [--container-cmd PATH]
//!      [--message TEXT]... [--admin] [--timeout-secs N] [--kill-after N]...
//! ```
//!
//! It provisions `DIR/v2-sessions/G/S/`, writes a `container.json` there when none exists,
//! takes the messages from `--message` (repeatable) or from stdin (one per line), passes each
//! through the command gate (`accept_chat`; `--admin` says whether the sender is an admin),
//! then loops: sweep (start the container when messages are due, kill it when stuck, retry
//! what a dead container had claimed) and delivery. Each delivered reply is printed on stdout
//! as one JSON line:
//!
//! ```text
//! {"seq":3,"id":"m-1-echo","in_reply_to":"m-1","text":"echo: hi","source":"container"}
//! ```
//!
//! Everything else (what the gate did, sweeps, kills) goes to stderr.
//!
//! Exit status: 0 when every accepted message is answered (a delivered row with
//! `in_reply_to` = its id; a denial is the host's answer; a filtered command needs none),
//! 1 on an error, 2 when `--timeout-secs` passed first, 3 when a message was answered more
//! than once.

#[path = "support/child_control.rs"]
mod child_control;

use child_control::ChildControl;
use clap::Parser;
use sessionbus_runtime::host::{
    accept_chat, deliver_session, sweep_session, Accepted, Deliverer, SweepOptions, SweepReport,
};
use sessionbus_runtime::liveness::RetryPolicy;
use sessionbus_store::{
    provision, Address, DueOutbound, HostSession, NewMessage, OutboundSource, SessionPaths,
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
    answers: BTreeMap<String, usize>,
    delivered: usize,
}

impl Deliverer for JsonLines {
    fn deliver(&mut self, row: &DueOutbound, _attempt: i64) -> Result<Option<String>, String> {
        let m = &row.message;
        let content: serde_json::Value =
            serde_json::from_str(&m.content).unwrap_or(serde_json::Value::Null);
        let line = ReplyLine {
            seq: m.seq.map(|s| s.0),
            id: &m.id,
            in_reply_to: m.in_reply_to.as_deref(),
            text: content.get("text").and_then(|t| t.as_str()).unwrap_or(""),
            source: match row.source {
                OutboundSource::Container => "container",
                OutboundSource::Host => "host",
            },
        };
        let line = serde_json::to_string(&line).map_err(|e| e.to_string())?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
        self.delivered += 1;
        if let Some(to) = &m.in_reply_to {
            *self.answers.entry(to.clone()).or_default() += 1;
        }
        Ok(None)
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let paths = SessionPaths::in_data_dir(&args.data_dir, &args.group, &args.session)
        .map_err(|e| e.to_string())?;
    provision(&paths, None, &sessionbus_store::SystemClock).map_err(|e| e.to_string())?;
    eprintln!("host: session folder {}", paths.dir.display());
    write_default_config(&paths.dir, args)?;

    let program = match &args.container_cmd {
        Some(p) => p.clone(),
        None => default_container_cmd()?,
    };
    let mut control = ChildControl::new(program, args.container_args.clone());
    let host = HostSession::open(&paths.dir);
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
    let address = Address {
        platform_id: Some("cli".into()),
        channel_type: Some("example".into()),
        thread_id: None,
    };
    let mut expected = BTreeSet::new();
    for (i, text) in texts.iter().enumerate() {
        let id = format!("{prefix}-{}", i + 1);
        let msg = NewMessage::chat(&id, text).to(address.clone());
        match accept_chat(&host, &msg, || args.admin).map_err(|e| e.to_string())? {
            Accepted::Written(w) => {
                eprintln!("host: wrote {id} (seq {}): {text}", w.seq);
                expected.insert(id);
            }
            Accepted::Filtered { command } => {
                eprintln!("host: {command} is filtered: dropped, no answer expected");
            }
            Accepted::Denied { command, reply_seq } => {
                eprintln!(
                    "host: {command} denied (not an admin): denial written as seq {reply_seq}"
                );
                expected.insert(id);
            }
        }
    }

    let opts = SweepOptions {
        retry: RetryPolicy {
            base_backoff_ms: args.retry_backoff_ms,
            ..RetryPolicy::default()
        },
        wake: true,
    };
    let mut printer = JsonLines::default();
    let mut kills: Vec<usize> = args.kill_after.clone();
    kills.sort_unstable();
    kills.reverse(); // next threshold last
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let tick = Duration::from_millis(args.tick_ms.max(1));
    let answered = |p: &JsonLines| expected.iter().all(|id| p.answers.contains_key(id));

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
            let _ = control.stop(Duration::from_secs(5));
            return Ok(ExitCode::from(EXIT_TIMEOUT));
        }
        match sweep_session(&host, &mut control, &|_| None, opts) {
            Ok(report) => log_sweep(&report, &control),
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
                if matches!(claimed, Ok(true)) && control.pid().is_some() {
                    kills.pop();
                    let pid = control.kill_now(&format!(
                        "kill -9 after {} delivered replies (--kill-after {n})",
                        printer.delivered
                    ))?;
                    if let Some(pid) = pid {
                        eprintln!(
                            "host: kill -9 container pid {pid} after {} delivered replies \
                             (--kill-after {n}), while it held a claim",
                            printer.delivered
                        );
                    }
                }
            }
        }
        std::thread::sleep(tick);
    }

    // Every message is answered: stop the container (SIGTERM: it clears its claims), then one
    // last sweep (acks become `completed` in inbound.db) and delivery (anything late shows).
    if let Some(status) = control.stop(Duration::from_secs(5))? {
        eprintln!("host: container stopped ({status})");
    }
    let last = SweepOptions {
        wake: false,
        ..opts
    };
    sweep_session(&host, &mut control, &|_| None, last).map_err(|e| e.to_string())?;
    deliver_session(&host, &mut printer, 5).map_err(|e| e.to_string())?;

    let dups: Vec<(&String, &usize)> = printer.answers.iter().filter(|(_, n)| **n > 1).collect();
    if !dups.is_empty() {
        eprintln!("host: answered more than once: {dups:?}");
        return Ok(ExitCode::from(EXIT_DUPLICATE));
    }
    eprintln!(
        "host: all {} message(s) answered; {} container start(s), {} kill(s)",
        expected.len(),
        control.starts,
        control.kills
    );
    Ok(ExitCode::SUCCESS)
}

fn log_sweep(r: &SweepReport, control: &ChildControl) {
    if r.killed {
        if let Some((pid, why)) = &control.last_kill {
            eprintln!("host: sweep killed container pid {pid}: {why}");
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
    if r.woke {
        if let Some(pid) = control.pid() {
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
        Ok(candidate)
    } else {
        Err(format!(
            "no echo_container next to {}; build it with `cargo build --example echo_container \
             -p sessionbus-runtime` or pass --container-cmd PATH",
            exe.display()
        ))
    }
}

/// The group's `container.json` lives at `agent/container.json` in the folder the container
/// sees as `/workspace`. When there is none, write one with quick polls.
fn write_default_config(dir: &Path, args: &Args) -> Result<(), String> {
    let agent = dir.join("agent");
    let path = agent.join("container.json");
    if path.exists() {
        eprintln!("host: using the existing {}", path.display());
        return Ok(());
    }
    let mut cfg = serde_json::json!({
        "assistantName": "echo",
        "pollIntervalIdleMs": args.poll_ms.max(1),
        "pollIntervalActiveMs": args.poll_ms.max(1),
    });
    if let Some(n) = args.batch_size {
        cfg["maxMessagesPerPrompt"] = n.into();
    }
    std::fs::create_dir_all(&agent).map_err(|e| format!("{}: {e}", agent.display()))?;
    std::fs::write(&path, format!("{cfg:#}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("host: wrote {}", path.display());
    Ok(())
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
