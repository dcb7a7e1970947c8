//! The `container` role: the runtime's poll loop with an echo handler that misbehaves on
//! purpose on the driver's special messages.

use super::{
    error_kind, exit_code_for, once_key, other, sid_of, text_of, AppendLog, ProcResult, Special,
    STOP,
};
use crate::soak::clock::OffsetClock;
use crate::soak::os;
use crate::soak::rng::Rng;
use crate::soak::{Layout, RunConfig};
use sessionbus_runtime::container::{Container, ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_store::{Batch, MessageIn, MessageKind, NewOutbound, SessionPaths};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) fn container(run: &Path, workspace: &Path) -> ProcResult {
    let layout = Layout::new(run);
    let cfg = RunConfig::load(&layout).map_err(other)?;
    let clock = OffsetClock::follow(run);
    let paths = SessionPaths::new(workspace);
    let sid = sid_of(&paths);
    let pid = std::process::id();
    if os::on_read_only_mount(&paths.inbound) {
        AppendLog::open(&layout.events.join(format!("c-{sid}.log"))).line(&[
            "container_ro",
            &sid,
            &pid.to_string(),
        ]);
    }
    let mut opts = ContainerOptions::in_folder(workspace);
    opts.config_optional = true;
    opts.heartbeat_interval = Duration::from_millis(cfg.heartbeat_ms.max(1));
    opts.clock = Arc::new(clock);
    let fail = |e: RuntimeError| {
        let kind = error_kind(&e);
        (
            exit_code_for(kind),
            format!("container {sid} [{kind}]: {e}"),
        )
    };
    let mut c = Container::start(opts).map_err(fail)?;
    let mut rng = Rng::derive(cfg.seed, 3000 + u64::from(pid));
    let slow_max = cfg.slow_max_ms;
    let events = AppendLog::open(&layout.events.join(format!("c-{sid}.log")));
    c.run(&STOP, |ctx: &HandlerContext, batch: &Batch| {
        misbehave(ctx, batch, &events, &sid, pid)?;
        // Think for a while (a kill often lands here, with the claim held).
        let think = Duration::from_millis(rng.range(0, slow_max));
        let end = Instant::now() + think;
        while Instant::now() < end && !STOP.load(Ordering::SeqCst) {
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(10)));
        }
        let turns: u64 = ctx
            .continuation()?
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let replies: Vec<NewOutbound> = batch
            .messages
            .iter()
            .filter(|m| wakes(m))
            .map(|m| {
                NewOutbound::reply_to(
                    format!("{}-echo", m.id),
                    m,
                    &format!("echo: {}", text_of(m)),
                )
            })
            .collect();
        ctx.set_continuation(&(turns + replies.len() as u64).to_string())?;
        if ctx.time_left().is_zero() {
            // Slower than the deadline without misbehaving (a loaded machine): the runtime
            // discards this result and the batch is retried; worth knowing, not a failure.
            events.line(&["late_batch", &sid, &pid.to_string(), &batch.ids().join(",")]);
        }
        Ok(Handled::completed(replies))
    })
    .map_err(fail)?;
    Ok(())
}

/// A chat message that wakes the agent (the only kind the echo handler answers).
fn wakes(m: &MessageIn) -> bool {
    matches!(m.kind, MessageKind::Chat | MessageKind::ChatSdk) && m.trigger
}

/// The soak container's misbehaviour on the driver's special messages (see [`Special`]):
/// fails on a poison message, else hangs or panics on the first `hang-once` / `panic-once`
/// message of the batch that has no marker yet (writing the marker first). Returns `Ok` when
/// the batch is to be answered as usual.
fn misbehave(
    ctx: &HandlerContext,
    batch: &Batch,
    events: &AppendLog,
    sid: &str,
    pid: u32,
) -> Result<(), RuntimeError> {
    let mut specials: Vec<(Special, &MessageIn)> = batch
        .messages
        .iter()
        .filter(|m| wakes(m))
        .filter_map(|m| Special::of_text(&text_of(m)).map(|k| (k, m)))
        .collect();
    // Poison first (it fails whatever else the batch holds), then hangs, then panics.
    specials.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
    for (kind, m) in specials {
        let pid = pid.to_string();
        match kind {
            Special::Poison => {
                // Panic and error by turns, so that both ways of failing reach the host.
                let how = if m.tries % 2 == 0 { "panic" } else { "error" };
                events.line(&[
                    "handler_poison",
                    sid,
                    &pid,
                    &m.id,
                    &m.tries.to_string(),
                    how,
                ]);
                if how == "panic" {
                    panic!("soak: poison message {}", m.id);
                }
                return Err(RuntimeError::Config(
                    sessionbus_runtime::config::ConfigError::Invalid {
                        path: PathBuf::from("soak-poison"),
                        field: "text".into(),
                        reason: format!("soak: poison message {}", m.id),
                    },
                ));
            }
            Special::HangOnce | Special::PanicOnce => {
                let key = once_key(&m.id);
                if ctx.outbound().state_get(&key)?.is_some() {
                    continue;
                }
                // Committed before the misbehaviour: the next container answers.
                ctx.outbound().state_set(&key, kind.name())?;
                if kind == Special::PanicOnce {
                    events.line(&["handler_panic", sid, &pid, &m.id]);
                    panic!("soak: panic-once on message {}", m.id);
                }
                let clock_ms = ctx.session().clock().now().unix_millis();
                events.line(&["handler_hang", sid, &pid, &m.id, &clock_ms.to_string()]);
                // A hung agent: never returns, deaf to stop signals; the host must kill it.
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
    Ok(())
}
