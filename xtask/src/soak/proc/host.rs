//! The `host` role: sweeps and delivers every session, writes a random workload through the
//! command gate, and starts and kills the containers as child processes.

use super::{address, error_kind, other, sid_of, AppendLog, ProcResult, STOP};
use crate::soak::clock::OffsetClock;
use crate::soak::os;
use crate::soak::rng::Rng;
use crate::soak::{Layout, RunConfig};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::host::{
    accept_chat, deliver_session, for_each_session, sweep_session, Accepted, ContainerControl,
    Deliverer, SweepOptions,
};
use sessionbus_runtime::liveness::{KillReason, RetryPolicy};
use sessionbus_store::{DueOutbound, HostSession, NewMessage, OutboundSource, Seq, SessionPaths};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host's containers: child processes of this binary, one per session.
struct Containers {
    layout: Layout,
    exe: PathBuf,
    children: HashMap<PathBuf, (Child, bool)>,
    events: Arc<AppendLog>,
    incarnation: u32,
    fsize_starts: u32,
}

impl Containers {
    fn stop_all(&mut self, grace: Duration) {
        for (child, _) in self.children.values() {
            os::signal(child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + grace;
        for (dir, (mut child, _)) in self.children.drain() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        self.events.line(&[
                            "container_stop_timeout",
                            &dir.to_string_lossy(),
                            &child.id().to_string(),
                        ]);
                        break;
                    }
                }
            }
        }
    }
}

impl ContainerControl for Containers {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        let Some((child, fsize)) = self.children.get_mut(&session.dir) else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                let code = status
                    .code()
                    .map_or_else(|| "signal".to_string(), |c| c.to_string());
                self.events.line(&[
                    "container_exit",
                    &sid_of(session),
                    &child.id().to_string(),
                    &code,
                    if *fsize { "fsize" } else { "-" },
                ]);
                self.children.remove(&session.dir);
                false
            }
            Err(_) => {
                self.children.remove(&session.dir);
                false
            }
        }
    }

    fn kill(
        &mut self,
        session: &SessionPaths,
        reason: &KillReason,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        if let Some((mut child, _)) = self.children.remove(&session.dir) {
            let pid = child.id();
            let _ = child.kill();
            child.wait().map_err(|e| format!("wait for {pid}: {e}"))?;
            self.events.line(&[
                "stuck_kill",
                &sid_of(session),
                &pid.to_string(),
                &reason.to_string(),
                kill_kind(reason),
            ]);
        }
        Ok(())
    }

    fn start(
        &mut self,
        session: &SessionPaths,
    ) -> Result<(), sessionbus_runtime::control::CallerError> {
        if self.is_running(session) {
            return Ok(());
        }
        let sid = sid_of(session);
        let mut cmd = Command::new(&self.exe);
        cmd.args(["soak-proc", "container", "--run"])
            .arg(&self.layout.run)
            .arg("--workspace")
            .arg(&session.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut fsize = false;
        let limit_file = self.layout.control(&format!("{sid}.fsize"));
        let log = if let Ok(extra) = std::fs::read_to_string(&limit_file) {
            let _ = std::fs::remove_file(&limit_file);
            let extra: u64 = extra.trim().parse().unwrap_or(8192);
            let size = std::fs::metadata(&session.outbound).map_or(0, |m| m.len());
            os::child_file_size_limit(&mut cmd, size + extra);
            fsize = true;
            self.fsize_starts += 1;
            // A fresh log: the limit applies to every file the container writes.
            self.layout.logs.join(format!(
                "{sid}.container-fsize-{}-{}.log",
                self.incarnation, self.fsize_starts
            ))
        } else {
            self.layout.logs.join(format!("{sid}.container.log"))
        };
        if self.layout.control(&format!("{sid}.readonly")).exists() {
            os::child_read_only_file(&mut cmd, &session.inbound)
                .map_err(|e| format!("read-only set-up: {e}"))?;
        }
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stderr(stderr);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a container: {e}"))?;
        self.events.line(&[
            "container_start",
            &sid,
            &child.id().to_string(),
            if fsize { "fsize" } else { "-" },
        ]);
        self.children.insert(session.dir.clone(), (child, fsize));
        Ok(())
    }
}

/// A short name for why the host stopped a container, for the events: `idle` (nothing to do
/// for the idle limit: a stop, not a verdict), `ceiling`, `future`, `claim`.
pub fn kill_kind(reason: &KillReason) -> &'static str {
    match reason {
        KillReason::Idle { .. } => "idle",
        KillReason::HeartbeatCeiling { .. } => "ceiling",
        KillReason::HeartbeatInFuture { .. } => "future",
        KillReason::ClaimStuck { .. } => "claim",
        _ => "other",
    }
}

/// The "chat platform": appends each hand-off to the platform ledger; fails now and then.
struct Platform {
    ledger: AppendLog,
    rng: Rng,
    fail: f64,
    sid: String,
}

impl Deliverer for Platform {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        if self.rng.chance(self.fail) {
            return Err("the chat platform is unavailable (soak)".into());
        }
        let m = &row.message;
        self.ledger.line(&[
            &self.sid,
            &m.id,
            m.in_reply_to.as_deref().unwrap_or("-"),
            &attempt.to_string(),
            match row.source {
                OutboundSource::Container => "container",
                OutboundSource::Host => "host",
            },
        ]);
        Ok(Some(format!("platform-{}", m.id)))
    }
}

/// The host's workload: random messages through the command gate, with a ledger line after
/// each committed write.
struct Workload {
    rng: Rng,
    ledger: AppendLog,
    events: Arc<AppendLog>,
    prefix: String,
    n: u64,
    recent: HashMap<String, Vec<(NewMessage, Seq)>>,
    /// A session that gets no context rows: the poison session while it runs one message per
    /// batch. There a context row newer than a due message strands it: the container's poll
    /// takes the newest due rows, a batch of one context row wakes nothing, and the older
    /// message is not handed out until a newer one that wakes the agent arrives (a runtime
    /// limitation the soak steers around; see the README's Reliability section).
    no_context: Option<String>,
}

impl Workload {
    fn next_id(&mut self, sid: &str) -> String {
        self.n += 1;
        format!("{}-{sid}-{}", self.prefix, self.n)
    }

    fn text(&mut self, id: &str) -> String {
        const WORDS: [&str; 8] = [
            "hello", "seq", "parity", "journal", "mount", "claim", "sweep", "reply",
        ];
        let n = self.rng.range(1, 6) as usize;
        let words: Vec<&str> = (0..n).map(|_| WORDS[self.rng.below(WORDS.len())]).collect();
        format!("{id}: {}", words.join(" "))
    }

    fn record(&self, sid: &str, id: &str, kind: &str, seq: Option<Seq>) {
        let seq = seq.map_or_else(|| "-".to_string(), |s| s.get().to_string());
        self.ledger.line(&[sid, id, kind, &seq]);
    }

    /// One random write into `host`'s session.
    fn write_one(&mut self, host: &HostSession) -> Result<(), RuntimeError> {
        let sid = sid_of(host.paths());
        let to = address(&sid);
        let roll = self.rng.unit();
        if roll < 0.06 {
            // Several messages in one transaction.
            let n = self.rng.range(2, 3);
            let msgs: Vec<NewMessage> = (0..n)
                .map(|_| {
                    let id = self.next_id(&sid);
                    let text = self.text(&id);
                    NewMessage::chat(&id, &text).to(to.clone())
                })
                .collect();
            let written = host.inbound().write_messages(&msgs)?;
            for (m, w) in msgs.iter().zip(&written) {
                self.record(&sid, &m.id, "chat", Some(w.seq));
                self.remember(&sid, m.clone(), w.seq);
            }
            return Ok(());
        }
        if roll < 0.08 {
            // A platform re-sending a message it already sent: must be an idempotent success.
            let Some(list) = self.recent.get(&sid).filter(|l| !l.is_empty()) else {
                return Ok(());
            };
            let (m, seq) = list[self.rng.below(list.len())].clone();
            let w = host.inbound().write_message(&m)?;
            if w.created || w.seq != seq {
                self.events.line(&[
                    "rewrite_mismatch",
                    &sid,
                    &m.id,
                    &format!("created={} seq={} (was {})", w.created, w.seq, seq),
                ]);
            }
            return Ok(());
        }
        let id = self.next_id(&sid);
        let (kind, text, admin) = if roll < 0.12 && self.no_context.as_deref() != Some(&sid) {
            ("context", self.text(&id), false)
        } else if roll < 0.12 {
            ("chat", self.text(&id), false)
        } else if roll < 0.15 {
            ("clear", "/clear".to_string(), true)
        } else if roll < 0.18 {
            ("denied", "/cost".to_string(), false)
        } else if roll < 0.20 {
            ("filtered", "/help".to_string(), false)
        } else {
            ("chat", self.text(&id), false)
        };
        let mut msg = NewMessage::chat(&id, &text).to(to);
        if kind == "context" {
            msg.trigger = false;
        }
        match accept_chat(host, &msg, || admin)? {
            Accepted::Written(w) => {
                self.record(&sid, &id, kind, Some(w.seq));
                if kind == "chat" {
                    self.remember(&sid, msg, w.seq);
                }
            }
            Accepted::Denied { reply_seq, .. } => self.record(&sid, &id, kind, Some(reply_seq)),
            Accepted::Filtered { .. } => self.record(&sid, &id, kind, None),
        }
        Ok(())
    }

    fn remember(&mut self, sid: &str, m: NewMessage, seq: Seq) {
        let list = self.recent.entry(sid.to_string()).or_default();
        if list.len() >= 32 {
            list.remove(0);
        }
        list.push((m, seq));
    }
}

pub(super) fn host(run: &Path, incarnation: u32) -> ProcResult {
    let layout = Layout::new(run);
    let cfg = RunConfig::load(&layout).map_err(other)?;
    let clock = OffsetClock::follow(run);
    let me = format!("h{incarnation}");
    let events = Arc::new(AppendLog::open(&layout.events.join(format!("{me}.log"))));
    events.line(&["host_start", "-", &std::process::id().to_string()]);

    // Containers a killed predecessor left running: stop them before the first sweep, so that
    // "not running" is true when the sweep cleans up their claims.
    for p in os::find_role(run, "container", None) {
        let dead = os::kill9(p.pid);
        events.line(&[
            "orphan_kill",
            p.arg_after("--workspace").unwrap_or("?"),
            &p.pid.to_string(),
            if dead { "dead" } else { "still-alive" },
        ]);
    }

    let exe = layout.exe();
    let sessions: Vec<HostSession> = (0..cfg.sessions)
        .map(|i| HostSession::with_clock(layout.session(i), Arc::new(clock.clone())))
        .collect();
    let mut control = Containers {
        layout: layout.clone(),
        exe,
        children: HashMap::new(),
        events: Arc::clone(&events),
        incarnation,
        fsize_starts: 0,
    };
    let mut platform = Platform {
        ledger: AppendLog::open(&layout.ledger.join(format!("platform-{me}.log"))),
        rng: Rng::derive(cfg.seed, 1000 + u64::from(incarnation)),
        fail: cfg.delivery_fail,
        sid: String::new(),
    };
    let mut work = Workload {
        rng: Rng::derive(cfg.seed, 2000 + u64::from(incarnation)),
        ledger: AppendLog::open(&layout.ledger.join(format!("written-{me}.log"))),
        events: Arc::clone(&events),
        prefix: me.clone(),
        n: 0,
        recent: HashMap::new(),
        no_context: (cfg.poison_batch < 2).then(|| Layout::sid(cfg.poison_session)),
    };
    let opts = SweepOptions::default().with_retry(RetryPolicy {
        base_backoff_ms: cfg.base_backoff_ms,
        max_tries: cfg.max_tries,
        ..RetryPolicy::default()
    });
    let tick = Duration::from_millis(cfg.tick_ms.max(1));
    // Probability that one session gets a write in one tick.
    let p_write = (cfg.rate * cfg.tick_ms as f64 / 1000.0 / cfg.sessions.max(1) as f64).min(1.0);
    let mut seen_errors: HashSet<(String, &'static str)> = HashSet::new();
    let mut note_error = |events: &AppendLog, sid: &str, what: &str, e: &RuntimeError| {
        let kind = error_kind(e);
        if seen_errors.insert((sid.to_string(), kind)) {
            events.line(&["error", sid, kind, what, &e.to_string()]);
        }
    };
    let stop_writing = layout.control("stop-writing");

    while !STOP.load(Ordering::SeqCst) {
        if !stop_writing.exists() {
            let targets: Vec<usize> = (0..sessions.len())
                .filter(|_| work.rng.chance(p_write))
                .collect();
            for i in targets {
                if let Err(e) = work.write_one(&sessions[i]) {
                    note_error(&events, &sid_of(sessions[i].paths()), "write", &e);
                }
            }
        }
        let outcomes = for_each_session(&sessions, |h| {
            let report = sweep_session(h, &mut control, &|_| None, opts)?;
            platform.sid = sid_of(h.paths());
            deliver_session(h, &mut platform, cfg.delivery_attempts)?;
            Ok(report)
        });
        for o in outcomes {
            let sid = o
                .session
                .file_name()
                .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned());
            match o.result {
                Ok(r) => {
                    for id in &r.retried {
                        events.line(&["retry", &sid, id]);
                    }
                    for id in &r.failed {
                        events.line(&["fail", &sid, id]);
                    }
                }
                Err(e) => note_error(&events, &sid, "sweep/deliver", &e),
            }
        }
        std::thread::sleep(tick);
    }

    // A clean stop: containers get SIGTERM (they clear their claims), then a last sweep and
    // delivery with no wake-up.
    control.stop_all(Duration::from_secs(5));
    let last = opts.with_wake(false);
    for o in for_each_session(&sessions, |h| {
        sweep_session(h, &mut control, &|_| None, last)?;
        platform.sid = sid_of(h.paths());
        deliver_session(h, &mut platform, cfg.delivery_attempts)?;
        Ok(())
    }) {
        if let Err(e) = o.result {
            let sid = o
                .session
                .file_name()
                .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned());
            note_error(&events, &sid, "final sweep", &e);
        }
    }
    events.line(&["host_stop", "-", &std::process::id().to_string()]);
    Ok(())
}
