//! The soak's processes, run as hidden `xtask soak-proc <role>` subcommands of this same
//! binary so the driver can `kill -9` and restart each while it keeps the ledger:
//!
//! - `host`: sweeps and delivers every session (`for_each_session`, `sweep_session`,
//!   `deliver_session`), writes a random workload through the command gate, and starts and
//!   kills the containers through [`ContainerControl`]. At start-up it kills the containers a
//!   killed predecessor left running (a real host stops orphaned containers the same way);
//! - `container`: the runtime's [`Container`] poll loop with an echo handler (the
//!   `echo_container` example's, with a random think time), on the run's shared clock. It
//!   misbehaves on purpose on the driver's special messages (see [`Special`]): it panics once
//!   on `panic-once:<id>`, hangs once on `hang-once:<id>`, and fails every time on
//!   `poison:<id>`;
//! - `writer`: a host CLI process writing into one session's inbound.db next to the host
//!   (host-side writers serialise through SQLite's lock); with `--fsize-extra` it runs under
//!   a file-size limit just above inbound.db's size and reports the error it gets.
//!
//! Everything a process learns goes to append-only files in the run folder (one `write` per
//! line, so a kill never leaves half a line): the ledgers (`ledger/written-*.log` after each
//! committed write, `ledger/platform-*.log` for each hand-off to the "chat platform") and the
//! events (`events/*.log`).

use super::clock::{real_ms, OffsetClock};
use super::os;
use super::rng::Rng;
use super::{Layout, RunConfig};
use clap::{Args, Subcommand};
use sessionbus_runtime::container::{Container, ContainerOptions, Handled, HandlerContext};
use sessionbus_runtime::error::RuntimeError;
use sessionbus_runtime::host::{
    accept_chat, deliver_session, for_each_session, sweep_session, Accepted, ContainerControl,
    Deliverer, SweepOptions,
};
use sessionbus_runtime::liveness::{KillReason, RetryPolicy};
use sessionbus_store::{
    Address, Batch, DbError, DueOutbound, HostSession, MessageIn, MessageKind, NewMessage,
    NewOutbound, OutboundSource, Seq, SessionPaths, StoreError,
};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by SIGTERM / SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

/// Exit status of a process that got a "disk full or file too large" error.
pub const EXIT_DISK_FULL: u8 = 3;
/// Exit status of a process that got an I/O error from the file system.
pub const EXIT_IO: u8 = 4;
/// Exit status of a process whose session file is not a usable database (garbage, truncated).
pub const EXIT_BAD_FILE: u8 = 5;
/// Exit status of any other failure.
pub const EXIT_OTHER: u8 = 1;
/// Exit status of a container whose handler panicked, failed (with an error that is not a
/// file error) or ran past its deadline: the soak's special messages do this on purpose.
pub const EXIT_HANDLER: u8 = 6;

/// A special message the driver writes (text `<kind>:<id>`, see [`Special::name`]) and
/// the soak's container misbehaves on, as a real agent's handler can:
///
/// - `panic-once:<id>`: the handler panics on the first batch holding it. The runtime leaves
///   the batch's claims and ends the run; the host counts a try and retries at once, and the
///   next container answers it. It must end answered exactly once.
/// - `hang-once:<id>`: the handler never returns from the first batch holding it (it ignores
///   stop signals too). Past `handlerTimeoutMs` (real time: the container measures its deadline
///   with `Instant`, so clock jumps never fire it) the container sets `.heartbeat` back to the
///   claim time; the driver then moves the clock past the 60 s claim tolerance and the host's
///   sweep must kill the container. A later container answers the message, exactly once.
/// - `poison:<id>`: the handler fails on every batch holding it, panicking or returning an
///   error by turns. Each failure costs the container its run and the message a try; after
///   the retry policy's last try the host marks it `failed`. It must end `failed`, never
///   answered, while every other message is answered.
///
/// "Once" is a marker in the container's own session state (`soak-once:<id>` in
/// `session_state`, [`once_key`]), written (and committed) before the handler misbehaves: a
/// later container finds it and answers. A kill between the marker and the misbehaviour only
/// means the fault did not happen for that message; the container's events (`c-<sid>.log`:
/// `handler_panic`, `handler_hang`, `handler_poison`) say what did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Special {
    /// `panic-once:<id>`.
    PanicOnce,
    /// `hang-once:<id>`.
    HangOnce,
    /// `poison:<id>`.
    Poison,
}

impl Special {
    /// Every kind.
    pub const ALL: [Special; 3] = [Special::PanicOnce, Special::HangOnce, Special::Poison];

    /// Its name: the text's prefix without the colon, and the kind in the ledger.
    pub fn name(self) -> &'static str {
        match self {
            Special::PanicOnce => "panic-once",
            Special::HangOnce => "hang-once",
            Special::Poison => "poison",
        }
    }

    /// The text of the special message `id` of this kind.
    pub fn text(self, id: &str) -> String {
        format!("{}:{id}", self.name())
    }

    /// The kind of a message text, if it is a special message's.
    pub fn of_text(text: &str) -> Option<Special> {
        let (prefix, _) = text.split_once(':')?;
        Special::ALL.into_iter().find(|s| s.name() == prefix)
    }
}

/// The session-state key of the marker that says the container already misbehaved on message
/// `id` (see [`Special`]).
pub fn once_key(id: &str) -> String {
    format!("soak-once:{id}")
}

/// The text of a chat message's content (empty when it has none).
pub fn text_of(m: &MessageIn) -> String {
    m.content_json()
        .get("text")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string()
}

/// `xtask soak-proc`: one process of a soak run (started by `cargo xtask soak`, not by hand).
#[derive(Debug, Clone, Args)]
pub struct ProcArgs {
    /// The role.
    #[command(subcommand)]
    pub role: Role,
}

/// The roles.
#[derive(Debug, Clone, Subcommand)]
pub enum Role {
    /// The host: sweeps, delivers, writes, starts and kills containers.
    Host {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// This host's incarnation (1 for the first, +1 per restart).
        #[arg(long)]
        incarnation: u32,
    },
    /// One session's container.
    Container {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// The session folder.
        #[arg(long)]
        workspace: PathBuf,
    },
    /// A host CLI writer into one session's inbound.db.
    Writer {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        /// The session index.
        #[arg(long)]
        session: usize,
        /// This writer's incarnation.
        #[arg(long)]
        incarnation: u32,
        /// Run under a file-size limit of inbound.db's size plus this many bytes, write as
        /// fast as possible until a write fails, and exit with the kind of error as status.
        #[arg(long)]
        fsize_extra: Option<u64>,
    },
}

/// Runs one soak process.
pub fn main(args: &ProcArgs) -> ExitCode {
    os::on_stop_signal(&STOP);
    let result = match &args.role {
        Role::Host { run, incarnation } => host(run, *incarnation),
        Role::Container { run, workspace } => container(run, workspace),
        Role::Writer {
            run,
            session,
            incarnation,
            fsize_extra,
        } => writer(run, *session, *incarnation, *fsize_extra),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("soak-proc: {msg}");
            ExitCode::from(code)
        }
    }
}

type ProcResult = Result<(), (u8, String)>;

fn other(msg: impl std::fmt::Display) -> (u8, String) {
    (EXIT_OTHER, msg.to_string())
}

/// An append-only log: each line is one `write(2)` on an `O_APPEND` file, so concurrent
/// writers and kills never interleave or cut lines.
pub struct AppendLog {
    file: Option<File>,
}

impl AppendLog {
    /// Opens (creating) `path` for appending; a log that cannot be opened drops its lines.
    pub fn open(path: &Path) -> Self {
        let file = File::options().create(true).append(true).open(path).ok();
        AppendLog { file }
    }

    /// Appends one line of tab-separated fields, prefixed with the real time in ms.
    pub fn line(&self, fields: &[&str]) {
        if let Some(mut f) = self.file.as_ref() {
            let mut s = real_ms().to_string();
            for x in fields {
                s.push('\t');
                s.push_str(&x.replace(['\t', '\n'], " "));
            }
            s.push('\n');
            // Errors (a full disk under a file-size limit) only lose this line.
            let _ = f.write_all(s.as_bytes());
        }
    }
}

/// The short name of an error, for events and exit statuses: the `DbError` variant for file
/// errors, else the error type.
pub fn error_kind(e: &RuntimeError) -> &'static str {
    match e {
        RuntimeError::Store(s) => store_error_kind(s),
        RuntimeError::Config(_) => "Config",
        RuntimeError::Heartbeat(_) => "Heartbeat",
        RuntimeError::Panicked { .. } => "Panicked",
        RuntimeError::Control { .. } => "Control",
        // A handler's error that is a file error (a full disk under a file-size limit, say)
        // is that error; anything else the handler did is the handler's.
        RuntimeError::HandlerFailed { source, .. } => match source.as_ref() {
            RuntimeError::Store(s) => store_error_kind(s),
            _ => "Handler",
        },
        RuntimeError::HandlerPanicked { .. } | RuntimeError::HandlerTimedOut { .. } => "Handler",
        _ => "Runtime",
    }
}

/// See [`error_kind`].
pub fn store_error_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Db(d) => match d {
            DbError::NotFound { .. } => "NotFound",
            DbError::UnsafePath { .. } => "UnsafePath",
            DbError::NotADatabase { .. } => "NotADatabase",
            DbError::Corrupt { .. } => "Corrupt",
            DbError::ReadOnly { .. } => "ReadOnly",
            DbError::Locked { .. } => "Locked",
            DbError::HotJournal { .. } => "HotJournal",
            DbError::WalMode { .. } => "WalMode",
            DbError::DiskFull { .. } => "DiskFull",
            DbError::NewerThanCode { .. } => "NewerThanCode",
            DbError::NotMigrated { .. } => "NotMigrated",
            DbError::TooOld { .. } => "TooOld",
            DbError::WrongFile { .. } => "WrongFile",
            DbError::UnrecognisedShape { .. } => "UnrecognisedShape",
            DbError::Migration { .. } => "Migration",
            DbError::Io { .. } => "Io",
            DbError::Open { .. } => "Open",
            DbError::Query { .. } => "Query",
            _ => "Db",
        },
        StoreError::InvalidContent { .. } => "InvalidContent",
        StoreError::ContentTooLarge { .. } => "ContentTooLarge",
        StoreError::InvalidId { .. } => "InvalidId",
        StoreError::DuplicateId { .. } => "DuplicateId",
        StoreError::NotWritable { .. } => "NotWritable",
        StoreError::InvalidArgument { .. } => "InvalidArgument",
        _ => "Store",
    }
}

/// The exit status for an error kind.
pub fn exit_code_for(kind: &str) -> u8 {
    match kind {
        "DiskFull" => EXIT_DISK_FULL,
        "Io" => EXIT_IO,
        "NotADatabase" | "Corrupt" | "WrongFile" | "NotMigrated" | "UnrecognisedShape"
        | "TooOld" => EXIT_BAD_FILE,
        "Handler" => EXIT_HANDLER,
        _ => EXIT_OTHER,
    }
}

fn sid_of(paths: &SessionPaths) -> String {
    paths
        .dir
        .file_name()
        .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned())
}

/// The chat address of session `sid`'s messages.
pub fn address(sid: &str) -> Address {
    Address {
        platform_id: Some("soak".into()),
        channel_type: Some("soak".into()),
        thread_id: Some(sid.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// host

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

fn host(run: &Path, incarnation: u32) -> ProcResult {
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

// ---------------------------------------------------------------------------------------------
// container

fn container(run: &Path, workspace: &Path) -> ProcResult {
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

// ---------------------------------------------------------------------------------------------
// writer

fn writer(run: &Path, session: usize, incarnation: u32, fsize_extra: Option<u64>) -> ProcResult {
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
