//! The chat example's container: answers each chat message with its text reversed, numbered
//! by turn; `/clear` (handled by the runtime) starts the numbering again. SIGTERM stops it
//! after the batch in progress.
//!
//! `chat-container [--workspace DIR] [--config PATH]`: the session folder (default
//! `/workspace`, in a sandbox) and the group's `container.json` (default
//! `<workspace>/agent/container.json`; missing means the defaults). Exit status 0 after a
//! stop, 1 when the loop fails or the arguments are wrong.

use sessionbus_runtime::container::{ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::tokio_host::{run_container_async, AsyncHandler, StopToken};
use sessionbus_runtime::{Batch, MessageKind, NewOutbound};
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

/// The agent. Its state, the turn, is the provider's continuation, which `/clear` forgets.
struct Reverse;

impl AsyncHandler for Reverse {
    async fn handle(
        &mut self,
        ctx: &HandlerContext<'_>,
        batch: &Batch,
    ) -> Result<Handled, RuntimeError> {
        let saved = ctx.continuation()?;
        let mut turn: u64 = saved.and_then(|c| c.parse().ok()).unwrap_or(0);
        let mut replies = Vec::new();
        for m in &batch.messages {
            if matches!(m.kind, MessageKind::Chat | MessageKind::ChatSdk) && m.trigger {
                turn += 1;
                let reversed: String = m.text().unwrap_or_default().chars().rev().collect();
                let text = format!("{reversed} (turn {turn})");
                replies.push(NewOutbound::reply_to(format!("{}-re", m.id), m, &text));
            }
        }
        ctx.set_continuation(&turn.to_string())?;
        Ok(Handled::completed(replies))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(n) => {
            eprintln!("chat-container: stopped after {n} message(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat-container: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> Result<u64, String> {
    let (mut args, mut workspace, mut config) = (std::env::args().skip(1), None, None);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--workspace", Some(dir)) => workspace = Some(dir),
            ("--config", Some(path)) => config = Some(path),
            _ => return Err("usage: chat-container [--workspace DIR] [--config PATH]".into()),
        }
    }
    let dir = workspace.unwrap_or_else(|| sessionbus_runtime::store::WORKSPACE.into());
    let mut opts = ContainerOptions::in_folder(dir);
    opts.config_path = config.map_or(opts.config_path, Into::into);
    opts.config_optional = true;

    let stop = StopToken::new();
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let on_term = stop.clone();
    tokio::spawn(async move {
        term.recv().await;
        on_term.stop();
    });
    let summary = run_container_async(opts, stop, Reverse).await;
    Ok(summary.map_err(|e| e.to_string())?.completed)
}
