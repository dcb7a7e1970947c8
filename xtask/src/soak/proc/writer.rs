//! The `writer` role: a host CLI process writing into one session's inbound.db next to the
//! host, optionally under a file-size limit until a write fails.

use super::{address, exit_code_for, other, sid_of, store_error_kind, AppendLog, ProcResult, STOP};
use crate::soak::clock::OffsetClock;
use crate::soak::os;
use crate::soak::rng::Rng;
use crate::soak::{Layout, RunConfig};
use sessionbus_store::{HostSession, NewMessage};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn writer(
    run: &Path,
    session: usize,
    incarnation: u32,
    fsize_extra: Option<u64>,
) -> ProcResult {
    let layout = Layout::new(run);
    let cfg = RunConfig::load(&layout).map_err(other)?;
    let clock = OffsetClock::follow(run);
    let dir = layout.session(session);
    let host = HostSession::with_clock(&dir, Arc::new(clock));
    let sid = sid_of(host.paths());
    let me = match fsize_extra {
        Some(_) => format!("f{incarnation}"),
        None => format!("w{incarnation}"),
    };
    let ledger = AppendLog::open(&layout.ledger.join(format!("written-{me}.log")));
    let events = AppendLog::open(&layout.events.join(format!("{me}.log")));
    let mut rng = Rng::derive(cfg.seed, 4000 + u64::from(incarnation));
    if let Some(extra) = fsize_extra {
        let size = std::fs::metadata(&host.paths().inbound).map_or(0, |m| m.len());
        os::limit_file_size(size + extra).map_err(other)?;
        events.line(&["fsize_limit", &sid, &(size + extra).to_string()]);
    }
    let mut n = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("{me}-{n}");
        let msg = NewMessage::chat(&id, &format!("{id}: from the host CLI")).to(address(&sid));
        match host.inbound().write_message(&msg) {
            Ok(w) => ledger.line(&[&sid, &id, "chat", &w.seq.get().to_string()]),
            Err(e) => {
                let kind = store_error_kind(&e);
                events.line(&["write_error", &sid, kind, &e.to_string()]);
                if fsize_extra.is_some() {
                    return Err((exit_code_for(kind), format!("[{kind}] {e}")));
                }
            }
        }
        if fsize_extra.is_some() {
            if n >= 100_000 {
                return Ok(());
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(
            rng.range(cfg.writer_min_ms, cfg.writer_max_ms),
        ));
    }
    Ok(())
}
