//! The chat example's container: answers each chat message with its text reversed, numbered
//! by turn; `/clear` (handled by the runtime) starts the numbering again. Stops on SIGTERM or
//! SIGINT after the batch in progress.
//!
//! ```text
//! chat-container [--workspace DIR] [--config PATH]
//! ```
//!
//! `--workspace` is the session folder (default `/workspace`, inside a sandbox); `--config` the
//! group's `container.json` (default `<workspace>/agent/container.json`; missing means the
//! defaults). Exit status 0 after a stop, 1 when the loop fails.

use sessionbus_runtime::container::{ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::tokio_host::{run_container_async, AsyncHandler, StopToken};
use sessionbus_runtime::{Batch, MessageKind, NewOutbound};
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

/// The agent: reverses text. Its state (the turn) is the provider's continuation, which the
/// runtime forgets on `/clear`.
struct Reverse;

impl AsyncHandler for Reverse {
    async fn handle(
        &mut self,
        ctx: &HandlerContext<'_>,
        batch: &Batch,
    ) -> Result<Handled, RuntimeError> {
        let mut turn: u64 = ctx
            .continuation()?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut replies = Vec::new();
        for m in &batch.messages {
            if !matches!(m.kind, MessageKind::Chat | MessageKind::ChatSdk) || !m.trigger {
                continue;
            }
            turn += 1;
            let reversed: String = m.text().unwrap_or_default().chars().rev().collect();
            let text = format!("{reversed} (turn {turn})");
            replies.push(NewOutbound::reply_to(format!("{}-re", m.id), m, &text));
        }
        ctx.set_continuation(&turn.to_string())?;
        Ok(Handled::completed(replies))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (mut args, mut workspace, mut config) = (std::env::args().skip(1), None, None);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--workspace", Some(dir)) => workspace = Some(dir),
            ("--config", Some(path)) => config = Some(path),
            _ => {
                eprintln!("usage: chat-container [--workspace DIR] [--config PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let dir = workspace.unwrap_or_else(|| sessionbus_runtime::store::WORKSPACE.into());
    let mut opts = ContainerOptions::in_folder(dir);
    if let Some(path) = config {
        opts.config_path = path.into();
    }
    opts.config_optional = true;

    let stop = StopToken::new();
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        let Ok(mut signals) = signal(kind) else {
            eprintln!("chat-container: cannot handle signal {kind:?}");
            return ExitCode::from(1);
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            signals.recv().await;
            stop.stop();
        });
    }
    match run_container_async(opts, stop, Reverse).await {
        Ok(summary) => {
            eprintln!(
                "chat-container: stopped after {} message(s)",
                summary.completed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat-container: {e}");
            ExitCode::from(1)
        }
    }
}
