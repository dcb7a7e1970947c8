//! A tokio chat host on `sessionbus-runtime` alone: several sessions served concurrently, chat
//! from the arguments or stdin, replies handed to an async "platform" that prints them.
//!
//! ```text
//! chat-host --data-dir DIR --container PATH [--sessions N] [--sandbox UID:GID]
//!           [--timeout-secs N] [S:TEXT]...
//! ```
//!
//! Each message is `S:TEXT` (for session `sS`, counted from 0) or `TEXT` (session `s0`); with
//! none on the command line, one per line from stdin. The sender is the operator, an admin,
//! so `/clear` passes the command gate. Sessions live in `DIR/v2-sessions/chat/s<i>/`; their
//! containers are `PATH --workspace <dir> --config <container.json>` as plain children, or run
//! in bubblewrap as `UID:GID` with `--sandbox`. Each reply is printed as `s<i> <- <text>`; the
//! host exits 0 once the input has ended and every message is answered (stopping the
//! containers), 2 after `--timeout-secs` (default 60), 1 on an error.

use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{prepare_group, ChildControl, SandboxControl, SandboxOptions};
use sessionbus_runtime::host::{Accepted, ContainerControl};
use sessionbus_runtime::mount_plan::GroupMounts;
use sessionbus_runtime::tokio_host::{
    deliver_fn, AsyncHost, ContainerPolicy, HostEvent, HostOptions, SyncControl,
};
use sessionbus_runtime::{
    provision, HostSession, NewMessage, Ownership, SessionPaths, SystemClock,
};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

struct Args {
    data_dir: PathBuf,
    container: PathBuf,
    sessions: usize,
    sandbox: Option<Ownership>,
    timeout: Duration,
    messages: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut data_dir, mut container, mut sessions, mut sandbox) = (None, None, 2, None);
    let (mut timeout, mut messages) = (Duration::from_secs(60), Vec::new());
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--data-dir" => data_dir = Some(PathBuf::from(value()?)),
            "--container" => container = Some(PathBuf::from(value()?)),
            "--sessions" => sessions = value()?.parse().map_err(|e| format!("--sessions: {e}"))?,
            "--timeout-secs" => {
                timeout = Duration::from_secs(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--sandbox" => {
                let v = value()?;
                let (uid, gid) = v.split_once(':').ok_or("--sandbox takes UID:GID")?;
                let id = |s: &str| s.parse::<u32>().map_err(|e| format!("--sandbox: {e}"));
                sandbox = Some(Ownership {
                    uid: id(uid)?,
                    gid: id(gid)?,
                });
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => messages.push(arg),
        }
    }
    Ok(Args {
        data_dir: data_dir.ok_or("--data-dir DIR is required")?,
        container: container.ok_or("--container PATH is required")?,
        sessions: sessions.max(1),
        sandbox,
        timeout,
        messages,
    })
}

/// A reply the platform was handed.
struct Reply {
    session: String,
    in_reply_to: Option<String>,
    text: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match parse_args() {
        Err(e) => {
            eprintln!("chat-host: {e}");
            ExitCode::from(1)
        }
        Ok(args) => run(args).await.unwrap_or_else(|e| {
            eprintln!("chat-host: {e}");
            ExitCode::from(1)
        }),
    }
}

/// An error as the line it prints.
fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn run(args: Args) -> Result<ExitCode, String> {
    std::fs::create_dir_all(&args.data_dir).map_err(text)?;
    let data_dir = args.data_dir.canonicalize().map_err(text)?;
    let container = args.container.canonicalize().map_err(text)?;
    let agents = data_dir.join("agents");
    let group = GroupMounts::for_group(&data_dir, "chat", agents.join("chat")).map_err(text)?;
    let quick = r#"{"pollIntervalIdleMs": 100, "pollIntervalActiveMs": 50}"#;
    let config = ContainerConfig::from_str(quick, "container.json").map_err(text)?;
    prepare_group(&group, args.sandbox, &config).map_err(text)?;
    let control: Box<dyn ContainerControl + Send> = match args.sandbox {
        None => {
            let extra = vec!["--config".into(), group.container_json.clone().into()];
            Box::new(ChildControl::new(container, extra))
        }
        Some(o) => Box::new(SandboxControl::new(SandboxOptions::new(
            container, o.uid, o.gid, &data_dir, agents,
        ))),
    };

    // The "platform": an async deliverer that hands each reply to the main loop.
    let (reply_tx, mut replies) = mpsc::channel::<Reply>(64);
    let platform = deliver_fn(move |session: SessionPaths, row, _attempt| {
        let reply_tx = reply_tx.clone();
        async move {
            let reply = Reply {
                session: session
                    .dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into(),
                in_reply_to: row.message.in_reply_to.clone(),
                text: row.message.text().unwrap_or_default(),
            };
            reply_tx
                .send(reply)
                .await
                .map_err(|_| "the chat is closed")?;
            Ok(None)
        }
    });
    let opts = HostOptions::default()
        .with_tick(Duration::from_millis(100))
        .with_on_shutdown(ContainerPolicy::Stop);
    let host = AsyncHost::new(SyncControl::new(control), platform, opts);
    let handle = host.handle();
    let mut events = handle.subscribe();
    let running = tokio::spawn(host.run());

    let mut dirs = Vec::new();
    for i in 0..args.sessions {
        let paths = SessionPaths::in_data_dir(&data_dir, "chat", &format!("s{i}")).map_err(text)?;
        provision(&paths, args.sandbox, &SystemClock).map_err(text)?;
        handle.add_session(HostSession::open(&paths.dir));
        dirs.push(paths.dir);
    }

    // The input: the arguments, else stdin, line by line.
    let (line_tx, mut lines) = mpsc::channel::<String>(16);
    if args.messages.is_empty() {
        tokio::spawn(async move {
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = stdin.next_line().await {
                if line_tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    } else {
        for m in args.messages {
            line_tx.send(m).await.map_err(text)?;
        }
        drop(line_tx);
    }

    let mut waiting = HashSet::new();
    let (mut input_open, mut sent) = (true, 0);
    let deadline = tokio::time::sleep(args.timeout);
    tokio::pin!(deadline);
    let code = loop {
        if !input_open && waiting.is_empty() {
            break ExitCode::SUCCESS;
        }
        tokio::select! {
            line = lines.recv(), if input_open => {
                let Some(line) = line else {
                    input_open = false;
                    continue;
                };
                let to = line.split_once(':').and_then(|(n, t)| Some((n.parse().ok()?, t)));
                let (i, chat) = match to {
                    Some((i, chat)) if i < dirs.len() => (i, chat),
                    _ => (0, line.as_str()),
                };
                if chat.trim().is_empty() {
                    continue;
                }
                sent += 1;
                let id = format!("c{sent}");
                let msg = NewMessage::chat(&id, chat);
                match handle.accept_chat(&dirs[i], msg, || true).await.map_err(text)? {
                    Accepted::Filtered { command } => eprintln!("chat-host: {command} is filtered"),
                    _ => {
                        waiting.insert(id);
                    }
                }
            }
            Some(reply) = replies.recv() => {
                println!("{} <- {}", reply.session, reply.text);
                if let Some(id) = &reply.in_reply_to {
                    waiting.remove(id);
                }
            }
            Ok(HostEvent::Session(pass)) = events.recv() => {
                for e in pass.errors() {
                    eprintln!("chat-host: {e}");
                }
            }
            () = &mut deadline => {
                eprintln!("chat-host: timed out; {} message(s) unanswered", waiting.len());
                break ExitCode::from(2);
            }
        }
    };
    handle.shutdown();
    let summary = running.await.map_err(text)?;
    eprintln!(
        "chat-host: {} passes, {} replies delivered, {} container(s) stopped",
        summary.passes,
        summary.delivered,
        summary.containers_stopped.len()
    );
    Ok(code)
}
