//! `cargo xtask demo`: a host and a container process talking through real files.
//!
//! It builds the two examples of `sessionbus-runtime` (`echo_container`, `host`), provisions a
//! fresh session under `DATA_DIR/v2-sessions/demo/demo-<timestamp>/`, and plays a short chat
//! as the host, using the runtime library directly: every message goes through the command
//! gate (a filtered `/help`, a denied `/cost`, an admin's `/clear`), is written to inbound.db,
//! and the `echo_container` child process answers in outbound.db. Mid-conversation the demo
//! `kill -9`s the container while it holds a claim, and the host's sweep retries that message
//! on a restarted container. It ends with a summary checked against what was delivered and
//! what outbound.db holds: every message answered exactly once, nothing lost, nothing
//! duplicated. The exit status is non-zero otherwise.
//!
//! Run it from the repository root on a fresh clone: `cargo xtask demo`.

use clap::Args;
use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{prepare_group, CallerError, SandboxControl, SandboxOptions};
use sessionbus_runtime::host::{
    accept_chat, deliver_session, sweep_session, Accepted, ContainerControl, Deliverer,
    SweepOptions, SweepReport,
};
use sessionbus_runtime::liveness::{KillReason, RetryPolicy};
use sessionbus_runtime::mount_plan::GroupMounts;
use sessionbus_store::{
    provision, Address, Clock, DueOutbound, HostSession, MessageStatus, NewMessage, OutboundSource,
    Ownership, Seq, SessionPaths, SystemClock,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The agent group the demo's sessions belong to.
pub const DEMO_GROUP: &str = "demo";

/// Exit status when the demo could not run, or lost or duplicated a message.
pub const EXIT_FAILED: u8 = 1;

/// The conversation: (sender, text). Alice is an admin, bob is not. The message marked in
/// [`KILL_DURING`] is the one the container is killed on.
pub const SCRIPT: [(&str, &str); 7] = [
    ("alice", "hello"),
    ("bob", "/help"),
    ("bob", "/cost"),
    ("alice", "what is a session bus?"),
    ("alice", "/clear"),
    ("alice", "are you still there?"),
    ("alice", "bye"),
];

/// Index in [`SCRIPT`] of the message during which the container is killed.
pub const KILL_DURING: usize = 5;

/// Arguments of `cargo xtask demo`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Run a host and an echo container through real files: provision a fresh session, \
send a short chat (with a filtered, a denied and an admin command), kill -9 the container \
mid-conversation and watch the host's sweep retry the message it held on a new container. Ends \
with a summary: sent, answered once, lost, duplicated.\n\n\
Builds the sessionbus-runtime examples echo_container and host first (cargo build --example ...).",
    after_help = "Exit status: 0 when every message was answered exactly once, 1 otherwise or when \
the demo could not run."
)]
pub struct DemoArgs {
    /// Data dir to create the session in (`DIR/v2-sessions/demo/demo-<timestamp>/`)
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Use this echo_container binary instead of building the examples
    #[arg(long, value_name = "PATH")]
    pub container_cmd: Option<PathBuf>,

    /// How long the container "thinks" about each batch, in ms (the kill lands meanwhile)
    #[arg(long, value_name = "MS", default_value_t = 600)]
    pub think_ms: u64,

    /// The first retry's backoff after the kill, in ms (the library's default is 5000)
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub backoff_ms: i64,

    /// Give up when a step takes longer than this
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub step_timeout_secs: u64,
}

/// What the demo counted at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Messages in the script.
    pub sent: usize,
    /// Written to inbound.db.
    pub written: usize,
    /// Denied by the command gate (answered by the host).
    pub denied: usize,
    /// Filtered by the command gate (no answer).
    pub filtered: usize,
    /// Messages that need an answer and got exactly one.
    pub answered_once: usize,
    /// Messages that need an answer and got none.
    pub lost: usize,
    /// Messages answered more than once (delivered twice, or two rows in outbound.db).
    pub duplicated: usize,
    /// Containers started.
    pub starts: u32,
    /// Containers killed.
    pub kills: u32,
    /// Claims the sweep retried.
    pub retried: usize,
}

impl DemoSummary {
    /// True when nothing was lost or duplicated.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.answered_once == self.written + self.denied
    }
}

/// `cargo xtask demo`: runs the demo and returns the exit code.
pub fn main(args: &DemoArgs) -> ExitCode {
    match run(args) {
        Ok(summary) if summary.ok() => ExitCode::SUCCESS,
        Ok(_) => {
            println!("\nFAILED: a message was lost or answered more than once (see above)");
            ExitCode::from(EXIT_FAILED)
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

mod control;
mod setup;
pub use control::build_examples;
use control::*;
use setup::*;

/// Runs the demo, printing as it goes, and returns its summary.
pub fn run(args: &DemoArgs) -> Result<DemoSummary, String> {
    println!("sessionbus demo: a host and a container process talking only through two SQLite");
    println!("files in a session folder, and a container killed mid-conversation.\n");

    let container_cmd = match &args.container_cmd {
        Some(p) => p.clone(),
        None => {
            println!(
                "0. building the examples (cargo build --example echo_container --example host)"
            );
            let (echo, host) = build_examples()?;
            println!("   container: {}", echo.display());
            println!("   host:      {}\n", host.display());
            echo
        }
    };

    // 1. Provisioning.
    let data_dir = sandbox_data_dir(&args.data_dir)?;
    let owner = container_owner();
    let paths = new_session(&data_dir)?;
    provision(&paths, Some(owner), &SystemClock).map_err(|e| e.to_string())?;
    let group = GroupMounts::for_group(
        &data_dir,
        DEMO_GROUP,
        data_dir.join("agents").join(DEMO_GROUP),
    )
    .map_err(|e| e.to_string())?;
    let config = ContainerConfig::from_str(
        r#"{ "assistantName": "echo", "pollIntervalIdleMs": 100, "pollIntervalActiveMs": 100 }"#,
        "container.json",
    )
    .map_err(|e| e.to_string())?;
    prepare_group(&group, Some(owner), &config).map_err(|e| e.to_string())?;
    let logs = data_dir.join("demo-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let session_id = paths
        .dir
        .file_name()
        .map_or_else(|| "demo".into(), |n| n.to_string_lossy().into_owned());
    let log = logs.join(format!("{session_id}.container.log"));

    println!("1. provisioning session at {}", paths.dir.display());
    println!("   inbound.db            the host writes it, the container only reads it (messages in: even seqs)");
    println!("   outbound.db           the container writes it, the host only reads it (replies: odd seqs)");
    println!(
        "   container/            the container's writable area (its /workspace), owned by uid {}",
        owner.uid
    );
    println!("   container.json        in the group's host-owned folder, read-only for the container (poll every 100 ms)");
    println!(
        "   the container runs in a bubblewrap sandbox as uid {} and sees only its mount plan",
        owner.uid
    );
    println!("   .heartbeat            the running container touches it; the host reads its age\n");

    let host = HostSession::open(&paths.dir);
    let mut demo = Demo {
        host,
        control: DemoControl {
            sandbox: SandboxControl::new(
                SandboxOptions::new(
                    container_cmd,
                    owner.uid,
                    owner.gid,
                    &data_dir,
                    data_dir.join("agents"),
                )
                .with_args(
                    [
                        "--slow-ms",
                        &args.think_ms.to_string(),
                        "--heartbeat-ms",
                        "1000",
                    ]
                    .map(OsString::from)
                    .to_vec(),
                )
                .with_log(&log),
            ),
            session: paths.clone(),
            log: log.clone(),
            starts: 0,
            kills: 0,
        },
        screen: Screen::default(),
        opts: SweepOptions::default().with_retry(RetryPolicy {
            base_backoff_ms: args.backoff_ms,
            ..RetryPolicy::default()
        }),
        step_timeout: Duration::from_secs(args.step_timeout_secs.max(1)),
        retried: Vec::new(),
        on_first_retry: None,
    };

    println!(
        "2. conversation: alice is an admin, bob is not. The host passes each message through"
    );
    println!(
        "   its command gate, writes it to inbound.db and starts a container when one is due;"
    );
    println!(
        "   the container claims it, thinks {} ms and answers in outbound.db; the host",
        args.think_ms
    );
    println!("   delivers each answer (replies are shown as they arrive).");

    let address = Address {
        platform_id: Some("demo-chat".into()),
        channel_type: Some("demo".into()),
        thread_id: None,
    };
    let mut summary = DemoSummary {
        sent: SCRIPT.len(),
        ..DemoSummary::default()
    };
    let mut need_answer: Vec<String> = Vec::new();
    let mut killed_pid = None;
    for (i, (sender, text)) in SCRIPT.iter().enumerate() {
        let id = format!("{session_id}-{}", i + 1);
        let msg = NewMessage::chat(&id, text).to(address.clone());
        let admin = *sender == "alice";
        let accepted = accept_chat(&demo.host, &msg, || admin).map_err(|e| e.to_string())?;
        match accepted {
            Accepted::Written(w) => {
                summary.written += 1;
                demo.screen
                    .labels
                    .insert(id.clone(), format!("seq {}", w.seq));
                let who = if text.starts_with('/') {
                    format!("{sender}, an admin")
                } else {
                    sender.to_string()
                };
                println!(
                    "   host writes message seq {}: {text:?} (from {who})",
                    w.seq
                );
                need_answer.push(id.clone());
            }
            Accepted::Filtered { command } => {
                summary.filtered += 1;
                println!(
                    "   host drops {command:?} (from {sender}): a filtered command; nothing is \
                     written and no answer is due"
                );
                continue;
            }
            Accepted::Denied { command, reply_seq } => {
                summary.denied += 1;
                demo.screen
                    .labels
                    .insert(id.clone(), format!("{command:?} (never written)"));
                println!(
                    "   host denies {command:?} (from {sender}, not an admin): the container never \
                     sees it;"
                );
                println!("   the host writes its own reply instead, seq {reply_seq}");
                need_answer.push(id.clone());
            }
        }
        if i == KILL_DURING {
            demo.until("the container to claim the message", |d| {
                d.claimed(&id) || d.answered(&id)
            })?;
            if demo.answered(&id) {
                println!(
                    "   (the container answered before it could be killed; killing it now anyway)"
                );
            } else {
                println!(
                    "   container pid {} claimed it (a processing ack in outbound.db) and is thinking",
                    demo.control.pid().unwrap_or(0)
                );
            }
            let label = demo.screen.labels.get(&id).cloned().unwrap_or_default();
            let pid = demo.control.kill9()?;
            killed_pid = pid;
            println!(
                "\n3. killing container pid {} mid-conversation (kill -9: no clean-up runs; its claim",
                pid.map_or_else(|| "?".into(), |p| p.to_string())
            );
            println!("   of {label} stays in outbound.db, and the message is unanswered)");
            demo.on_first_retry = Some(
                "\n4. the host's next sweep finds no container running and a claim left behind:"
                    .into(),
            );
        }
        demo.until(&format!("an answer to {id}"), |d| d.answered(&id))?;
    }

    // Stop the container cleanly, then a last sweep (acks become `completed` in inbound.db)
    // and delivery (a late duplicate would show up here).
    if let Some(status) = demo.control.stop(Duration::from_secs(5))? {
        println!("\n   host stops the container with SIGTERM ({status})");
    }
    demo.opts.wake = false;
    demo.tick()?;

    // The record, checked against outbound.db itself.
    println!("\nreplies (seq, in reply to, text), as delivered:");
    for d in &demo.screen.delivered {
        let to = d
            .in_reply_to
            .as_ref()
            .map(|id| {
                demo.screen
                    .labels
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| id.clone())
            })
            .unwrap_or_else(|| "-".into());
        let seq = d.seq.map_or_else(|| "?".into(), |s| s.to_string());
        let src = match d.source {
            OutboundSource::Container => "container",
            OutboundSource::Host => "host",
        };
        println!("   {seq:>4}  {to:<26} [{src:<9}] {:?}", d.text);
    }
    let rows = demo
        .host
        .outbound()
        .messages_after(None, 100_000)
        .map_err(|e| e.to_string())?
        .rows;
    let mut in_outbound: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let sessionbus_store::OutboundRow::Message { message: r, .. } = r else {
            continue;
        };
        if let Some(to) = &r.in_reply_to {
            *in_outbound.entry(to.clone()).or_default() += 1;
        }
    }
    let mut not_completed = Vec::new();
    for id in &need_answer {
        let delivered = demo.screen.answers.get(id).copied().unwrap_or(0);
        let written = in_outbound.get(id).copied().unwrap_or(0);
        match delivered {
            0 => summary.lost += 1,
            1 if written <= 1 => summary.answered_once += 1,
            _ => summary.duplicated += 1,
        }
        if let Ok(Some(m)) = demo.host.inbound().message(id) {
            if m.status != MessageStatus::Completed {
                not_completed.push(format!("{id} ({})", m.status));
            }
        }
    }
    summary.starts = demo.control.starts;
    summary.kills = demo.control.kills;
    summary.retried = demo.retried.len();

    println!("\nsummary");
    println!(
        "   sent {}: {} written to inbound.db, {} denied by the gate (the host answered), {} filtered (no answer)",
        summary.sent, summary.written, summary.denied, summary.filtered
    );
    println!(
        "   needing an answer: {}, answered once: {}, lost {}, duplicated {}",
        need_answer.len(),
        summary.answered_once,
        summary.lost,
        summary.duplicated
    );
    println!(
        "   containers started: {}, killed with kill -9: {}{}; claims retried by the sweep: {}",
        summary.starts,
        summary.kills,
        killed_pid.map_or_else(String::new, |p| format!(" (pid {p})")),
        summary.retried
    );
    if not_completed.is_empty() {
        println!("   every written message is `completed` in inbound.db");
    } else {
        println!(
            "   not completed in inbound.db: {}",
            not_completed.join(", ")
        );
    }
    println!("\nlook further:");
    println!("   cargo xtask inspect {}", paths.dir.display());
    println!("   the containers' own log: {}", log.display());
    println!(
        "   a standalone host: cargo run -q -p sessionbus-runtime --example host -- --message hi"
    );
    Ok(summary)
}
