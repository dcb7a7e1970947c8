//! A complete container binary on the sessionbus runtime: it answers every chat message with
//! `echo: <text>`.
//!
//! ```text
//! echo_container [--workspace DIR] [--config PATH] [--slow-ms N] [--heartbeat-ms N]
//!                [--log-claims] [--frozen-view-ms N]
//!                [--panic-on TEXT] [--fail-on TEXT] [--hang-on TEXT]
//! ```
//!
//! - `--workspace DIR` is the session folder (`/workspace` inside a real container);
//! - `--config PATH` is the group's `container.json` (default `<workspace>/agent/container.json`):
//!   a missing file means the defaults, a malformed one is an error (exit 1);
//! - the poll loop is the runtime's [`Container::run`]: heartbeat, acks, `/clear`, replies
//!   committed together with their acks;
//! - the handler replies `echo: <text>` to each chat message, to the same address and
//!   `in_reply_to` the message, and keeps a turn counter as the provider's continuation in
//!   `session_state` (the runtime forgets it on `/clear`);
//! - SIGTERM or SIGINT stop the loop; the runtime clears its `processing` acks on the way out,
//!   so a stopped container leaves no claim behind;
//! - `--slow-ms N` sleeps N ms per batch in the handler (tests kill it mid-handling; a stop
//!   signal cuts the sleep short and the batch is answered at once);
//! - `--heartbeat-ms N` sets how often the heartbeat is touched while idle or busy (default
//!   5000);
//! - `--log-claims` prints `claimed <id> at <unix ms>` on stderr for each message as its batch
//!   reaches the handler, right after the `processing` acks are committed (the mount rig
//!   measures the time from the host's commit to the claim with it);
//! - `--frozen-view-ms N` reports a frozen view of inbound.db (a mount that never revalidates
//!   cached contents) after N ms behind the host's stamped commits instead of the runtime's
//!   default 30 s; 0 turns the check off;
//! - `--panic-on TEXT`, `--fail-on TEXT`, `--hang-on TEXT`: for a batch holding a chat message
//!   whose text contains TEXT, the handler panics, returns an error, or never returns (it
//!   ignores stop signals too: a hung agent). The runtime leaves the batch's claims for the
//!   host and notes the failure in outbound.db; a panic or an error ends the process with
//!   status 1 and one `handler panicked` / `handler failed` line; a hang prints `hanging on`,
//!   then `deadline passed` once the batch's `handlerTimeoutMs` is over (the heartbeat stops,
//!   and the host's sweep kills the process).
//!
//! One line per handled batch goes to stderr. Exit status: 0 after a clean stop, 1 when
//! start-up or the loop fails, the handler's failures included (the error names the file and
//! what to do), 2 for bad arguments.

use clap::Parser;
use sessionbus_runtime::container::{Container, ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_store::{Batch, MessageKind, NewOutbound};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The echo container's command line.
#[derive(Debug, Parser)]
#[command(
    name = "echo_container",
    about = "A sessionbus container that answers every chat message with `echo: <text>`"
)]
struct Args {
    /// The session folder holding inbound.db, outbound.db and .heartbeat
    #[arg(long, value_name = "DIR", default_value = sessionbus_store::WORKSPACE)]
    workspace: PathBuf,

    /// The group's container.json (default: <workspace>/agent/container.json); a missing file
    /// means the defaults, a malformed one is an error
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Sleep this long in the handler for every batch (to simulate a slow agent)
    #[arg(long, value_name = "N", default_value_t = 0)]
    slow_ms: u64,

    /// Touch the heartbeat this often while idle or busy
    #[arg(long, value_name = "N", default_value_t = 5000)]
    heartbeat_ms: u64,

    /// Print `claimed <id> at <unix ms>` on stderr for each message handed to the handler
    #[arg(long)]
    log_claims: bool,

    /// Report a frozen view of inbound.db after this many ms behind the host's stamped
    /// commits (default: the runtime's 30 s; 0 turns the check off)
    #[arg(long, value_name = "N")]
    frozen_view_ms: Option<u64>,

    /// Panic in the handler on a batch with a chat message whose text contains TEXT
    #[arg(long, value_name = "TEXT")]
    panic_on: Option<String>,

    /// Return an error from the handler on a batch with a chat message whose text contains TEXT
    #[arg(long, value_name = "TEXT")]
    fail_on: Option<String>,

    /// Never return from the handler on a batch with a chat message whose text contains TEXT
    #[arg(long, value_name = "TEXT")]
    hang_on: Option<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_container: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| format!("cannot install the handler for signal {signal}: {e}"))?;
    }

    let mut opts = ContainerOptions::in_folder(&args.workspace);
    if let Some(config) = &args.config {
        opts.config_path = config.clone();
    }
    opts.config_optional = true;
    opts.heartbeat_interval = Duration::from_millis(args.heartbeat_ms.max(1));

    let mut container = Container::start(opts).map_err(|e| format!("cannot start: {e}"))?;
    if let Some(ms) = args.frozen_view_ms {
        container.set_frozen_view_after((ms > 0).then(|| Duration::from_millis(ms)));
    }
    let pid = std::process::id();
    eprintln!(
        "echo_container[{pid}]: started on {} (provider {}, batches of up to {}{})",
        args.workspace.display(),
        container.config().provider_key(),
        container.config().max_messages_per_prompt,
        match container.stale_claims_cleared() {
            0 => String::new(),
            n => format!("; cleared {n} stale claim(s) of a crashed predecessor"),
        }
    );

    // One line for a panic (where and why), instead of the default hook's two.
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("echo_container[{pid}]: panic{at}: {message}");
    }));

    let slow = Duration::from_millis(args.slow_ms);
    let result = container.run(&stop, |ctx, batch| {
        if args.log_claims {
            log_claims(batch, pid);
        }
        misbehave(args, ctx, batch, pid)?;
        echo(ctx, batch, slow, &stop, pid)
    });
    let summary = match result {
        Ok(summary) => summary,
        Err(e @ RuntimeError::HandlerPanicked { .. }) => {
            return Err(format!(
                "handler panicked; claims left for the host to retry: {e}"
            ))
        }
        Err(e @ RuntimeError::HandlerFailed { .. }) => {
            return Err(format!(
                "handler failed; claims left for the host to retry: {e}"
            ))
        }
        Err(e) => return Err(format!("poll loop stopped: {e}")),
    };
    eprintln!(
        "echo_container[{pid}]: stopped after {} batch(es): {} message(s) completed, {} failed, \
         {} /clear",
        summary.batches, summary.completed, summary.failed, summary.clears
    );
    Ok(())
}

/// The id of the first chat message of `batch` whose text contains `needle`.
fn first_with<'b>(batch: &'b Batch, needle: Option<&str>) -> Option<&'b str> {
    let needle = needle?;
    batch.messages.iter().find_map(|m| {
        let content = m.content_json();
        let text = content.get("text").and_then(|t| t.as_str()).unwrap_or("");
        (matches!(m.kind, MessageKind::Chat | MessageKind::ChatSdk) && text.contains(needle))
            .then_some(m.id.as_str())
    })
}

/// `--panic-on`, `--fail-on`, `--hang-on`: a handler that goes wrong on purpose.
fn misbehave(
    args: &Args,
    ctx: &HandlerContext,
    batch: &Batch,
    pid: u32,
) -> Result<(), RuntimeError> {
    if let Some(id) = first_with(batch, args.panic_on.as_deref()) {
        panic!("--panic-on matched message {id}");
    }
    if let Some(id) = first_with(batch, args.fail_on.as_deref()) {
        // Any error will do; a store error names a file, which is what a real one would.
        return Err(RuntimeError::Config(
            sessionbus_runtime::config::ConfigError::Invalid {
                path: PathBuf::from("--fail-on"),
                field: "text".into(),
                reason: format!("--fail-on matched message {id}"),
            },
        ));
    }
    if let Some(id) = first_with(batch, args.hang_on.as_deref()) {
        eprintln!("echo_container[{pid}]: hanging on message {id} (--hang-on); never returning");
        let mut said = false;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            if !said && ctx.time_left().is_zero() {
                eprintln!(
                    "echo_container[{pid}]: deadline passed on message {id}; the heartbeat has \
                     stopped and the host will kill this process"
                );
                said = true;
            }
        }
    }
    Ok(())
}

/// One `claimed <id> at <unix ms>` line per message of the batch, on stderr.
fn log_claims(batch: &Batch, pid: u32) {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    for m in &batch.messages {
        eprintln!("echo_container[{pid}]: claimed {} at {ms}", m.id);
    }
}

/// The agent: `echo: <text>` for every chat message of the batch, and a turn counter as the
/// continuation.
fn echo(
    ctx: &HandlerContext,
    batch: &Batch,
    slow: Duration,
    stop: &AtomicBool,
    pid: u32,
) -> Result<Handled, RuntimeError> {
    // A slow agent; a stop signal cuts the wait short and the batch is answered at once.
    let end = Instant::now() + slow;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }

    let turns_before: u64 = ctx
        .continuation()?
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut replies = Vec::new();
    for m in &batch.messages {
        if !matches!(m.kind, MessageKind::Chat | MessageKind::ChatSdk) || !m.trigger {
            continue;
        }
        let content = m.content_json();
        let text = content.get("text").and_then(|t| t.as_str()).unwrap_or("");
        replies.push(NewOutbound::reply_to(
            format!("{}-echo", m.id),
            m,
            &format!("echo: {text}"),
        ));
    }
    let turns = turns_before + replies.len() as u64;
    ctx.set_continuation(&turns.to_string())?;

    let seqs: Vec<String> = batch
        .messages
        .iter()
        .map(|m| m.seq.map_or_else(|| "?".to_string(), |s| s.to_string()))
        .collect();
    eprintln!(
        "echo_container[{pid}]: batch of {} (seq {}): {} repl{}, turn {turns} of this conversation",
        batch.messages.len(),
        seqs.join(", "),
        replies.len(),
        if replies.len() == 1 { "y" } else { "ies" },
    );
    Ok(Handled::completed(replies))
}
