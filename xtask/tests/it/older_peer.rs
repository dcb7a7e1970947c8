//! Interoperability with the OLDER implementation, both ways, through real processes and files.
//!
//! The older TypeScript host and container are still in the field. `peer/` holds stand-ins
//! written from `docs/protocol.md` and `docs/format.md` (`peer/older-host.mjs` on Node 20 with
//! better-sqlite3 12, `peer/older-container.ts` on Bun with bun:sqlite); `peer/setup.sh`
//! installs their npm dependencies, and every test here fails (never skips) naming that script
//! when they are missing.
//!
//! - Direction A, the older host with this project's container (`echo_container`): the older
//!   host keeps its single-folder layout, creates the session the way `initSessionFolder` does
//!   and never migrates it, and starts the container as a plain child process.
//! - Direction B, this project's host with the older container: the host (the `host` example, or
//!   a host loop written here on `sweep_session` / `deliver_session` / `accept_chat`) provisions
//!   the split layout and runs the older container inside bubblewrap as uid 1000 through
//!   `SandboxControl`, exactly as in production: the mount plan assembles the single-folder view
//!   the older container expects at `/workspace`.
//!
//! Scenarios, in each direction: a conversation, a burst (several messages before the container
//! starts), `/clear`, a denied admin command, `kill -9` mid-conversation, a folder the older host
//! created and nobody migrated, and a migration between the two halves of one conversation
//! (with `convert_to_split` in A7 and B7, with `cargo xtask migrate`, the operator's documented
//! path, in B8).
//! Each checks what the user sees (every message answered exactly once, by the host's JSON lines)
//! and what the files hold, read with plain SQLite (not through the library under test): every
//! message completed, nothing left claimed, host rows even and container rows odd and all seqs
//! unique across the tables, host seqs growing in the order the messages were written, replies
//! sorting after what they answer (docs/format.md §5).
//!
//! Checks are collected rather than stopping at the first: a scenario reports every assertion
//! that failed, so a library gap shows with all its consequences.
//!
//! Needs root (folders are given to uid 1000), `/usr/bin/bwrap`, Node 20 on PATH, and
//! `bash peer/setup.sh` done.

use rusqlite::{Connection, OpenFlags};
use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{
    prepare_group, CallerError, ChildControl, SandboxControl, SandboxOptions,
};
use sessionbus_runtime::host::{
    accept_chat, deliver_session, sweep_session, Accepted, ContainerControl, Deliverer,
    SweepOptions,
};
use sessionbus_runtime::liveness::{KillReason, RetryPolicy};
use sessionbus_runtime::mount_plan::GroupMounts;
use sessionbus_store::{
    convert_to_split, provision, Address, ContainerStopped, Destination, DestinationType,
    DueOutbound, HostSession, NewMessage, OutboundSource, Ownership, Routing, SessionPaths,
    SystemClock, HOST_REPLY_KIND,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The container's user in the sandbox.
const OWNER: Ownership = Ownership {
    uid: 1000,
    gid: 1000,
};
const GROUP: &str = "g";

// ---------------------------------------------------------------------------------------------
// The peer and the examples

/// Where the installed peer is.
struct Peer {
    host_script: PathBuf,
    container_wrapper: PathBuf,
}

fn peer() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    let found = PEER.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../peer")
            .canonicalize()
            .map_err(|e| format!("no peer/ folder next to xtask/: {e}"))?;
        let fix = "run `bash peer/setup.sh` first: it installs better-sqlite3 12 and Bun into \
                   peer/node_modules (a few minutes; CI starts it in the background early and \
                   runs it again, which waits for it, before the tests)";
        let marker = dir.join("node_modules/.sessionbus-peer-ready");
        if !marker.is_file() {
            return Err(format!(
                "the older-implementation peer is not installed ({} is missing): {fix}",
                marker.display()
            ));
        }
        for needed in [
            "node_modules/bun/bin/bun.exe",
            "node_modules/better-sqlite3/build/Release/better_sqlite3.node",
        ] {
            if !dir.join(needed).is_file() {
                return Err(format!(
                    "the older-implementation peer is incomplete (peer/{needed} is missing): {fix}"
                ));
            }
        }
        let node = Command::new("node")
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run `node` (the older host runs on Node 20): {e}"))?;
        let version = String::from_utf8_lossy(&node.stdout).trim().to_string();
        if !version.starts_with("v20.") {
            return Err(format!(
                "`node --version` says {version:?}: the older host (better-sqlite3 12) runs on \
                 Node 20"
            ));
        }
        Ok(Peer {
            host_script: dir.join("older-host.mjs"),
            container_wrapper: dir.join("older-container.sh"),
        })
    });
    match found {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The example binaries: `echo_container` (this project's container) and `host`.
struct Examples {
    echo: PathBuf,
    host: PathBuf,
}

fn examples() -> &'static Examples {
    static EX: OnceLock<Result<Examples, String>> = OnceLock::new();
    let built = EX.get_or_init(|| {
        let mut exe = sessionbus_testkit::child::built_executables(
            "sessionbus-runtime",
            &["--example", "echo_container", "--example", "host"],
            &["echo_container", "host"],
        )?;
        Ok(Examples {
            echo: exe.remove("echo_container").expect("reported"),
            host: exe.remove("host").expect("reported"),
        })
    });
    match built {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

fn require_root_and_bwrap() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests give the container's folders to uid 1000 and run bubblewrap: run as root"
    );
    assert!(
        Path::new("/usr/bin/bwrap").exists(),
        "/usr/bin/bwrap is missing: apt-get install bubblewrap"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes

/// What a finished process printed.
struct Finished {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        let status = self.status.map_or_else(
            || "killed by the test's timeout".to_string(),
            |s| s.to_string(),
        );
        // The last lines are enough to see what went wrong.
        let tail: Vec<&str> = self.stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{status}\n--- stdout\n{}--- stderr (last lines)\n{}",
            self.stdout,
            tail.join("\n")
        )
    }
}

/// Runs `cmd` to its end, or kills it after `timeout` (then `status` is `None`).
fn run_to_end(mut cmd: Command, timeout: Duration) -> Finished {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let t = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, t)
    };
    let (out, out_t) = drain(Box::new(child.stdout.take().unwrap()));
    let (err, err_t) = drain(Box::new(child.stderr.take().unwrap()));
    let end = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A grandchild may hold the pipes: wait a little for the readers, not forever.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !(out_t.is_finished() && err_t.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = |b: &Arc<Mutex<Vec<u8>>>| String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    Finished {
        status,
        stdout: text(&out),
        stderr: text(&err),
    }
}

/// A data dir that uid 1000 can traverse (tempfile makes 0700 folders).
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = base.join("data");
    std::fs::create_dir(&data).unwrap();
    (tmp, data)
}

fn session_dir(data: &Path, session: &str) -> PathBuf {
    data.join("v2-sessions").join(GROUP).join(session)
}

/// The older host on `data`/`session` with `container` as its container program.
fn older_host(data: &Path, session: &str, container: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new("node");
    cmd.arg(&peer().host_script)
        .arg("--data-dir")
        .arg(data)
        .args(["--group", GROUP, "--session", session])
        .arg("--container-cmd")
        .arg(container)
        .args(["--tick-ms", "100", "--sweep-ms", "250", "--poll-ms", "50"])
        .args(["--timeout-secs", "30"])
        .args(args);
    run_to_end(cmd, Duration::from_secs(60))
}

/// The `host` example on `data`/`session`, its container the older one, in bubblewrap.
fn rust_host(data: &Path, session: &str, args: &[&str]) -> Finished {
    let mut cmd = Command::new(&examples().host);
    cmd.arg("--data-dir")
        .arg(data)
        .args(["--group", GROUP, "--session", session])
        .arg("--container-cmd")
        .arg(&peer().container_wrapper)
        .args(["--tick-ms", "50", "--retry-backoff-ms", "100"])
        .args(["--timeout-secs", "40"])
        .args(args);
    run_to_end(cmd, Duration::from_secs(70))
}

// ---------------------------------------------------------------------------------------------
// What the user saw

/// One delivered reply: a JSON line of either host, or a row the host loop here delivered.
#[derive(Debug, Clone, serde::Deserialize)]
struct Reply {
    seq: i64,
    id: String,
    in_reply_to: Option<String>,
    text: String,
    source: String,
}

fn replies(stdout: &str) -> Vec<Reply> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The answer a message should get.
fn answer_to(text: &str) -> String {
    if text.trim().to_lowercase().starts_with("/clear") {
        "Session cleared.".into()
    } else {
        format!("echo: {text}")
    }
}

/// Checks collected, reported together.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failed.push(what.into());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, what: &str) {
        if got != want {
            self.failed
                .push(format!("{what}: got {got:?}, expected {want:?}"));
        }
    }

    fn finish(self, scenario: &str) {
        if !self.failed.is_empty() {
            panic!(
                "{scenario}: {} check(s) failed:\n- {}",
                self.failed.len(),
                self.failed.join("\n- ")
            );
        }
    }
}

/// Every message of `sent` (id, text) answered exactly once in `seen`, with its answer's text.
fn answered_once(c: &mut Checks, seen: &[Reply], sent: &[(String, String)], label: &str) {
    let mut by_text: BTreeMap<&str, usize> = BTreeMap::new();
    for r in seen {
        *by_text.entry(r.text.as_str()).or_default() += 1;
    }
    for (id, text) in sent {
        let want = answer_to(text);
        let n = by_text.get(want.as_str()).copied().unwrap_or(0);
        c.check(
            n == 1,
            format!(
                "{label}: {id} ({text:?}) answered {n} time(s) with {want:?}; replies: {seen:?}"
            ),
        );
    }
    let ids: BTreeSet<&str> = seen.iter().map(|r| r.id.as_str()).collect();
    c.check(
        ids.len() == seen.len(),
        format!("{label}: a reply was delivered twice: {seen:?}"),
    );
}

// ---------------------------------------------------------------------------------------------
// What the files hold, read with plain SQLite

#[derive(Debug)]
struct InRow {
    id: String,
    seq: i64,
    status: String,
    kind: String,
}

#[derive(Debug)]
struct OutRow {
    id: String,
    seq: i64,
    in_reply_to: Option<String>,
    text: String,
}

#[derive(Debug)]
struct Files {
    messages_in: Vec<InRow>,
    host_replies: Vec<OutRow>,
    messages_out: Vec<OutRow>,
    claims: Vec<String>,
    delivered: BTreeSet<String>,
    continuation: Option<String>,
}

fn open_ro(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn text_of(content: &str) -> String {
    serde_json::from_str::<serde_json::Value>(content)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

fn out_rows(db: &Connection, table: &str) -> rusqlite::Result<Vec<OutRow>> {
    let mut st = db.prepare(&format!(
        "SELECT id, seq, in_reply_to, content FROM {table} ORDER BY seq"
    ))?;
    let rows = st.query_map([], |r| {
        Ok(OutRow {
            id: r.get(0)?,
            seq: r.get(1)?,
            in_reply_to: r.get(2)?,
            text: text_of(&r.get::<_, String>(3)?),
        })
    })?;
    rows.collect()
}

fn has_table(db: &Connection, name: &str) -> bool {
    db.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// The session's files, in either layout.
fn files(dir: &Path) -> Result<Files, String> {
    let outbound = if dir.join("container/outbound.db").is_file() {
        dir.join("container/outbound.db")
    } else {
        dir.join("outbound.db")
    };
    let read = || -> rusqlite::Result<Files> {
        let inb = open_ro(&dir.join("inbound.db"))?;
        let mut st = inb.prepare("SELECT id, seq, status, kind FROM messages_in ORDER BY seq")?;
        let messages_in = st
            .query_map([], |r| {
                Ok(InRow {
                    id: r.get(0)?,
                    seq: r.get(1)?,
                    status: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    kind: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let host_replies = if has_table(&inb, "host_replies") {
            out_rows(&inb, "host_replies")?
        } else {
            Vec::new()
        };
        let mut st = inb.prepare("SELECT message_out_id FROM delivered")?;
        let delivered = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<BTreeSet<_>>>()?;
        let out = open_ro(&outbound)?;
        let messages_out = out_rows(&out, "messages_out")?;
        let mut st =
            out.prepare("SELECT message_id FROM processing_ack WHERE status = 'processing'")?;
        let claims = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let continuation = out
            .query_row(
                "SELECT value FROM session_state WHERE key = 'continuation:claude'",
                [],
                |r| r.get::<_, String>(0),
            )
            .ok();
        Ok(Files {
            messages_in,
            host_replies,
            messages_out,
            claims,
            delivered,
            continuation,
        })
    };
    read().map_err(|e| format!("reading {}: {e}", dir.display()))
}

/// The files agree with `sent` (every message written, in this order): completed, unclaimed,
/// answered once in outbound.db, every reply delivered, seq parity, uniqueness and order.
fn check_files(c: &mut Checks, dir: &Path, sent: &[(String, String)]) {
    let f = match files(dir) {
        Ok(f) => f,
        Err(e) => {
            c.check(false, e);
            return;
        }
    };
    let by_id: BTreeMap<&str, &InRow> = f.messages_in.iter().map(|r| (r.id.as_str(), r)).collect();
    for (id, text) in sent {
        match by_id.get(id.as_str()) {
            Some(r) => c.check(
                r.status == "completed",
                format!(
                    "files: {id} ({text:?}) is {:?} in messages_in, not completed",
                    r.status
                ),
            ),
            None => c.check(
                false,
                format!("files: {id} ({text:?}) is not in messages_in"),
            ),
        }
        let want = answer_to(text);
        let n = f.messages_out.iter().filter(|o| o.text == want).count();
        c.check(
            n == 1,
            format!("files: {n} messages_out row(s) say {want:?} (for {id}), expected 1"),
        );
    }
    c.check(
        f.claims.is_empty(),
        format!(
            "files: processing claims left in outbound.db: {:?}",
            f.claims
        ),
    );
    let undelivered: Vec<&str> = f
        .messages_out
        .iter()
        .chain(&f.host_replies)
        .filter(|o| !f.delivered.contains(&o.id))
        .map(|o| o.id.as_str())
        .collect();
    c.check(
        undelivered.is_empty(),
        format!("files: replies never recorded delivered: {undelivered:?}"),
    );

    // Parity and uniqueness (docs/format.md §5). The library writes every host reply twice, in
    // one transaction: into host_replies and, for the older implementation (which knows only
    // messages_in: its even-seq allocation and its lookups by seq must see the reply), as a
    // `completed` messages_in row of kind HOST_REPLY_KIND with the same id and seq. Such a
    // mirror is the same message, not a second use of its seq; every host reply must have one.
    let is_mirror = |r: &InRow| {
        r.kind == HOST_REPLY_KIND
            && f.host_replies
                .iter()
                .any(|h| h.id == r.id && h.seq == r.seq)
    };
    for h in &f.host_replies {
        c.check(
            f.messages_in.iter().any(|r| {
                r.id == h.id
                    && r.seq == h.seq
                    && r.kind == HOST_REPLY_KIND
                    && r.status == "completed"
            }),
            format!(
                "files: host reply {} (seq {}) has no completed mirror in messages_in",
                h.id, h.seq
            ),
        );
    }
    let mut all = BTreeMap::new();
    for r in f.messages_in.iter().filter(|r| !is_mirror(r)) {
        c.check(
            r.seq % 2 == 0,
            format!("files: messages_in {} has odd seq {}", r.id, r.seq),
        );
        if let Some(other) = all.insert(r.seq, r.id.clone()) {
            c.check(
                false,
                format!("files: seq {} used by {other} and {}", r.seq, r.id),
            );
        }
    }
    for r in &f.host_replies {
        c.check(
            r.seq % 2 == 0,
            format!("files: host reply {} has odd seq {}", r.id, r.seq),
        );
        if let Some(other) = all.insert(r.seq, r.id.clone()) {
            c.check(
                false,
                format!("files: seq {} used by {other} and {}", r.seq, r.id),
            );
        }
    }
    for r in &f.messages_out {
        c.check(
            r.seq % 2 == 1,
            format!("files: messages_out {} has even seq {}", r.id, r.seq),
        );
        if let Some(other) = all.insert(r.seq, r.id.clone()) {
            c.check(
                false,
                format!("files: seq {} used by {other} and {}", r.seq, r.id),
            );
        }
    }
    // Host seqs grow in the order the messages were written.
    let order: Vec<&str> = f
        .messages_in
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| sent.iter().any(|(s, _)| s == id))
        .collect();
    let want: Vec<&str> = sent.iter().map(|(id, _)| id.as_str()).collect();
    c.eq(order, want, "files: messages_in ids in seq order");
    // Replies sort after what they answer.
    for o in f.messages_out.iter().chain(&f.host_replies) {
        if let Some(to) = o.in_reply_to.as_deref().and_then(|id| by_id.get(id)) {
            c.check(
                o.seq > to.seq,
                format!(
                    "files: reply {} (seq {}) sorts before {} (seq {})",
                    o.id, o.seq, to.id, to.seq
                ),
            );
        }
    }
}

fn continuation(dir: &Path) -> Option<String> {
    files(dir).ok().and_then(|f| f.continuation)
}

fn pairs(prefix: &str, suffix: &str, texts: &[&str]) -> Vec<(String, String)> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("{prefix}-{}{suffix}", i + 1), (*t).to_string()))
        .collect()
}

/// `--message` arguments for `texts`.
fn message_args<'a>(texts: &[&'a str]) -> Vec<&'a str> {
    texts.iter().flat_map(|t| ["--message", *t]).collect()
}

// ---------------------------------------------------------------------------------------------
// A host loop on the library (direction B, where the example host does not fit)

/// Collects what the host delivers.
#[derive(Default)]
struct Collect {
    seen: Vec<Reply>,
}

impl Deliverer for Collect {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, CallerError> {
        let m = &row.message;
        self.seen.push(Reply {
            seq: m.seq.map_or(-1, |s| s.get()),
            id: m.id.clone(),
            in_reply_to: m.in_reply_to.clone(),
            text: text_of(&m.content),
            source: match row.source {
                OutboundSource::Container => "container".into(),
                OutboundSource::Host => "host".into(),
            },
        });
        Ok(None)
    }
}

/// The container control of the loop: the sandbox, or a plain child on a single-layout folder.
enum Ctl {
    Sandbox(SandboxControl),
    Child(ChildControl),
}

impl ContainerControl for Ctl {
    fn is_running(&mut self, s: &SessionPaths) -> bool {
        match self {
            Ctl::Sandbox(c) => c.is_running(s),
            Ctl::Child(c) => c.is_running(s),
        }
    }
    fn kill(&mut self, s: &SessionPaths, r: &KillReason) -> Result<(), CallerError> {
        match self {
            Ctl::Sandbox(c) => c.kill(s, r),
            Ctl::Child(c) => c.kill(s, r),
        }
    }
    fn start(&mut self, s: &SessionPaths) -> Result<(), CallerError> {
        match self {
            Ctl::Sandbox(c) => c.start(s),
            Ctl::Child(c) => c.start(s),
        }
    }
}

impl Ctl {
    fn stop(&mut self, s: &SessionPaths) {
        match self {
            Ctl::Sandbox(c) => {
                let _ = c.terminate(s, Duration::from_secs(2));
            }
            Ctl::Child(c) => {
                let _ = c.stop(s, Duration::from_secs(2));
            }
        }
    }
}

const ADDRESS: (&str, &str) = ("cli", "local");

fn address() -> Address {
    Address {
        channel_type: Some(ADDRESS.0.into()),
        platform_id: Some(ADDRESS.1.into()),
        thread_id: None,
    }
}

/// A provisioned split session in `data` with its group prepared, and the sandbox control that
/// runs the older container on it.
fn sandboxed_session(data: &Path, session: &str) -> (HostSession, Ctl) {
    let paths = SessionPaths::in_data_dir(data, GROUP, session).unwrap();
    provision(&paths, Some(OWNER), &SystemClock).unwrap();
    let group = GroupMounts::for_group(data, GROUP, data.join("agents").join(GROUP)).unwrap();
    let config = ContainerConfig::from_str("{}", "container.json").unwrap();
    prepare_group(&group, Some(OWNER), &config).unwrap();
    let ctl = SandboxControl::new(SandboxOptions::new(
        &peer().container_wrapper,
        OWNER.uid,
        OWNER.gid,
        data,
        data.join("agents"),
    ));
    (HostSession::open(&paths.dir), Ctl::Sandbox(ctl))
}

/// What [`converse`] saw: the replies delivered, the messages written (id, text), and why it
/// stopped early, if it did.
struct Conversation {
    seen: Vec<Reply>,
    sent: Vec<(String, String)>,
    result: Result<(), String>,
}

/// A conversation: each message goes through the gate once the previous one is answered (by
/// its expected text); the host sweeps (waking the container) and delivers meanwhile. Returns
/// what was delivered and the ids written, or why it stopped.
fn converse(
    host: &HostSession,
    ctl: &mut Ctl,
    prefix: &str,
    texts: &[&str],
    admin: bool,
) -> Conversation {
    let wiring = host
        .inbound()
        .replace_destinations(&[Destination {
            name: "cli".into(),
            display_name: Some("the terminal".into()),
            kind: DestinationType::Channel,
            channel_type: Some(ADDRESS.0.into()),
            platform_id: Some(ADDRESS.1.into()),
            agent_group_id: None,
        }])
        .and_then(|()| {
            host.inbound().set_routing(&Routing {
                channel_type: Some(ADDRESS.0.into()),
                platform_id: Some(ADDRESS.1.into()),
                thread_id: None,
            })
        });
    if let Err(e) = wiring {
        return Conversation {
            seen: Vec::new(),
            sent: Vec::new(),
            result: Err(format!("projecting the wiring: {e}")),
        };
    }
    let opts = SweepOptions::default().with_retry(RetryPolicy {
        base_backoff_ms: 100,
        ..RetryPolicy::default()
    });
    let mut out = Collect::default();
    let mut written = Vec::new();
    let mut result = Ok(());
    'messages: for (i, text) in texts.iter().enumerate() {
        let id = format!("{prefix}-{}", i + 1);
        let want = match accept_chat(host, &NewMessage::chat(&id, text).to(address()), || admin) {
            Ok(Accepted::Written(_)) => {
                written.push((id.clone(), (*text).to_string()));
                answer_to(text)
            }
            Ok(Accepted::Denied { command, .. }) => {
                format!("Permission denied: {command} requires admin access.")
            }
            Ok(Accepted::Filtered { .. }) => continue,
            Err(e) => {
                result = Err(format!("accept_chat({id}): {e}"));
                break;
            }
        };
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Err(e) = sweep_session(host, ctl, &|_| None, opts) {
                if !e.is_retryable() {
                    result = Err(format!("sweep while waiting for {id}: {e}"));
                    break 'messages;
                }
            }
            if let Err(e) = deliver_session(host, &mut out, 5) {
                if !e.is_retryable() {
                    result = Err(format!("delivery while waiting for {id}: {e}"));
                    break 'messages;
                }
            }
            if out.seen.iter().any(|r| r.text == want) {
                break;
            }
            if Instant::now() >= end {
                result = Err(format!("no answer {want:?} to {id} within 30 s"));
                break 'messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Stop the container, then one last sweep (acks synced) and delivery.
    ctl.stop(host.paths());
    let last = opts.with_wake(false);
    if let Err(e) = sweep_session(host, ctl, &|_| None, last) {
        result = result.and(Err(format!("the last sweep: {e}")));
    }
    if let Err(e) = deliver_session(host, &mut out, 5) {
        result = result.and(Err(format!("the last delivery: {e}")));
    }
    Conversation {
        seen: out.seen,
        sent: written,
        result,
    }
}

// =============================================================================================
// Direction A: the older host, this project's container

#[test]
fn a1_older_host_conversation_with_the_rust_container() {
    peer();
    let (_tmp, data) = data_dir();
    let texts = ["first", "second", "third"];
    let mut args = vec!["--converse", "--id-prefix", "t"];
    args.extend(message_args(&texts));
    let run = older_host(&data, "s", &examples().echo, &args);
    let sent = pairs("t", ":g", &texts);
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("older host did not finish: {}", run.describe()),
    );
    let seen = replies(&run.stdout);
    answered_once(&mut c, &seen, &sent, "replies");
    for (id, _) in &sent {
        let named = seen
            .iter()
            .filter(|r| r.in_reply_to.as_deref() == Some(id))
            .count();
        c.check(
            named == 1,
            format!("replies: {named} reply(ies) name {id} in in_reply_to"),
        );
    }
    check_files(&mut c, &session_dir(&data, "s"), &sent);
    c.finish("A1 older host + Rust container: conversation");
}

#[test]
fn a2_older_host_burst_before_the_rust_container_starts() {
    peer();
    let (_tmp, data) = data_dir();
    let texts = ["one", "two", "three", "four", "five"];
    let mut args = vec!["--id-prefix", "t"];
    args.extend(message_args(&texts));
    let run = older_host(&data, "s", &examples().echo, &args);
    let sent = pairs("t", ":g", &texts);
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("older host did not finish: {}", run.describe()),
    );
    c.check(
        run.stderr.contains("started container") && !run.stderr.contains("a message was written"),
        "the burst was written before the container started".to_string(),
    );
    answered_once(&mut c, &replies(&run.stdout), &sent, "replies");
    check_files(&mut c, &session_dir(&data, "s"), &sent);
    c.finish("A2 older host + Rust container: burst");
}

#[test]
fn a3_older_host_clear_resets_the_rust_containers_conversation() {
    peer();
    let (_tmp, data) = data_dir();
    let texts = ["before", "/clear", "after"];
    let mut args = vec!["--admin", "--converse", "--id-prefix", "t"];
    args.extend(message_args(&texts));
    let run = older_host(&data, "s", &examples().echo, &args);
    let sent = pairs("t", ":g", &texts);
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("older host did not finish: {}", run.describe()),
    );
    answered_once(&mut c, &replies(&run.stdout), &sent, "replies");
    let dir = session_dir(&data, "s");
    check_files(&mut c, &dir, &sent);
    // The turn counter restarted at /clear: one turn since.
    c.eq(
        continuation(&dir),
        Some("1".to_string()),
        "continuation after /clear",
    );
    c.finish("A3 older host + Rust container: /clear");
}

#[test]
fn a4_older_host_denies_an_admin_command_without_reaching_the_rust_container() {
    peer();
    let (_tmp, data) = data_dir();
    // A burst: the gate decides on every message before the container starts.
    let texts = ["hello", "/cost", "/help", "bye"];
    let mut args = vec!["--id-prefix", "t"];
    args.extend(message_args(&texts));
    let run = older_host(&data, "s", &examples().echo, &args);
    let sent = vec![
        ("t-1:g".to_string(), "hello".to_string()),
        ("t-4:g".to_string(), "bye".to_string()),
    ];
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("older host did not finish: {}", run.describe()),
    );
    let seen = replies(&run.stdout);
    answered_once(&mut c, &seen, &sent, "replies");
    // The older host's gate (docs/format.md §9 and 10): the denial is INSERTed through its
    // read-only handle on outbound.db, which fails; nothing reaches messages_in or the chat.
    c.check(
        run.stderr
            .contains("/cost denied (not an admin): the denial could not be written")
            && run.stderr.contains("readonly"),
        format!(
            "the older host's denial write did not fail as upstream's does: {}",
            run.describe()
        ),
    );
    c.check(
        !seen.iter().any(|r| r.text.contains("Permission denied")),
        format!("a denial reached the chat: {seen:?}"),
    );
    c.check(
        run.stderr.contains("/help is filtered"),
        "/help was not filtered",
    );
    let dir = session_dir(&data, "s");
    check_files(&mut c, &dir, &sent);
    if let Ok(f) = files(&dir) {
        c.eq(
            f.messages_in.len(),
            2,
            "messages_in rows (the commands never reach it)",
        );
    }
    c.finish("A4 older host + Rust container: denied admin command");
}

#[test]
fn a5_older_host_kills_the_rust_container_mid_conversation_and_retries() {
    peer();
    let (_tmp, data) = data_dir();
    let texts = ["one", "two", "three"];
    let mut args = vec![
        "--converse",
        "--id-prefix",
        "t",
        "--kill-after",
        "1",
        "--container-arg=--slow-ms=1500",
    ];
    args.extend(message_args(&texts));
    let run = older_host(&data, "s", &examples().echo, &args);
    let sent = pairs("t", ":g", &texts);
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("older host did not finish: {}", run.describe()),
    );
    c.check(
        run.stderr.contains("kill -9 after 1 delivered"),
        "the container was not killed while it held a claim",
    );
    c.check(
        run.stderr.contains("sweep: retry of t-2:g"),
        "the killed claim was not retried with backoff",
    );
    answered_once(&mut c, &replies(&run.stdout), &sent, "replies");
    check_files(&mut c, &session_dir(&data, "s"), &sent);
    c.finish("A5 older host + Rust container: kill -9 mid-conversation");
}

#[test]
fn a6_the_rust_container_takes_over_an_older_hosts_unmigrated_folder() {
    peer();
    let (_tmp, data) = data_dir();
    let mut c = Checks::default();
    // The older host talks with the older container first: the folder, its files and their
    // history are all the older implementation's, never migrated.
    let first = ["one", "two"];
    let mut args = vec!["--converse", "--id-prefix", "t"];
    args.extend(message_args(&first));
    let run = older_host(&data, "s", &peer().container_wrapper, &args);
    c.check(
        run.ok(),
        format!(
            "first half (older container) did not finish: {}",
            run.describe()
        ),
    );
    // Then the container is upgraded: the same older host, the same folder, the Rust container.
    let second = ["three", "four"];
    let mut args = vec!["--converse", "--id-prefix", "u"];
    args.extend(message_args(&second));
    let run2 = older_host(&data, "s", &examples().echo, &args);
    c.check(
        run2.ok(),
        format!(
            "the Rust container on the older host's folder: {}",
            run2.describe()
        ),
    );
    let seen2 = replies(&run2.stdout);
    answered_once(
        &mut c,
        &seen2,
        &pairs("u", ":g", &second),
        "second half replies",
    );
    c.check(
        seen2
            .iter()
            .all(|r| r.text == "echo: three" || r.text == "echo: four"),
        format!("the second half re-delivered or answered old messages: {seen2:?}"),
    );
    let mut sent = pairs("t", ":g", &first);
    sent.extend(pairs("u", ":g", &second));
    check_files(&mut c, &session_dir(&data, "s"), &sent);
    c.finish("A6 Rust container on an older host's never-migrated folder");
}

#[test]
fn a7_migrated_between_halves_the_rust_host_continues_the_older_hosts_conversation() {
    peer();
    let (_tmp, data) = data_dir();
    let mut c = Checks::default();
    // First half: the older host with the Rust container.
    let first = ["one", "two"];
    let mut args = vec!["--converse", "--id-prefix", "t"];
    args.extend(message_args(&first));
    let run = older_host(&data, "s", &examples().echo, &args);
    c.check(
        run.ok(),
        format!(
            "first half (older host + Rust container): {}",
            run.describe()
        ),
    );
    // The older host stopped; the operator converts the folder (inbound.db is migrated).
    let dir = session_dir(&data, "s");
    match convert_to_split(
        &dir,
        None,
        &SystemClock,
        ContainerStopped::i_have_stopped_the_container(),
    ) {
        Ok(Some(_)) => {}
        Ok(None) => c.check(false, "convert_to_split found nothing to convert"),
        Err(e) => c.check(false, format!("convert_to_split: {e}")),
    }
    // Second half: the Rust host and the Rust container (a plain child: the moved files stay
    // the older host's, root's).
    let second = ["three", "four"];
    let mut cmd = Command::new(&examples().host);
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["--group", GROUP, "--session", "s", "--no-sandbox"])
        .arg("--container-cmd")
        .arg(&examples().echo)
        .args([
            "--tick-ms",
            "50",
            "--poll-ms",
            "50",
            "--timeout-secs",
            "30",
            "--id-prefix",
            "u",
        ])
        .args(message_args(&second));
    let run2 = run_to_end(cmd, Duration::from_secs(60));
    c.check(
        run2.ok(),
        format!("second half (Rust host): {}", run2.describe()),
    );
    let seen2 = replies(&run2.stdout);
    answered_once(
        &mut c,
        &seen2,
        &pairs("u", "", &second),
        "second half replies",
    );
    c.check(
        seen2
            .iter()
            .all(|r| r.text == "echo: three" || r.text == "echo: four"),
        format!("the Rust host re-delivered or answered first-half messages: {seen2:?}"),
    );
    let mut sent = pairs("t", ":g", &first);
    sent.extend(pairs("u", "", &second));
    check_files(&mut c, &dir, &sent);
    c.finish("A7 older host + Rust container, migrated, then the Rust host");
}

// =============================================================================================
// Direction B: this project's host, the older container in bubblewrap

#[test]
fn b1_rust_host_conversation_with_the_older_container_in_a_sandbox() {
    peer();
    require_root_and_bwrap();
    let (_tmp, data) = data_dir();
    let (host, mut ctl) = sandboxed_session(&data, "s");
    let texts = ["first", "second", "third"];
    let Conversation { seen, sent, result } = converse(&host, &mut ctl, "t", &texts, false);
    let mut c = Checks::default();
    c.check(result.is_ok(), format!("{result:?}; delivered {seen:?}"));
    answered_once(&mut c, &seen, &sent, "replies");
    for (id, _) in &sent {
        let named = seen
            .iter()
            .filter(|r| r.in_reply_to.as_deref() == Some(id))
            .count();
        c.check(
            named == 1,
            format!("replies: {named} reply(ies) name {id} in in_reply_to"),
        );
    }
    if let Ctl::Sandbox(s) = &ctl {
        c.eq(
            s.starts,
            1,
            "containers started (one for the whole conversation)",
        );
    }
    check_files(&mut c, &host.paths().dir, &sent);
    c.finish("B1 Rust host + older container: conversation");
}

#[test]
fn b2_rust_host_burst_answered_by_the_older_container_in_one_query() {
    peer();
    require_root_and_bwrap();
    let (_tmp, data) = data_dir();
    let texts = ["one", "two", "three", "four", "five"];
    let mut args = vec!["--id-prefix", "t"];
    args.extend(message_args(&texts));
    let run = rust_host(&data, "s", &args);
    let sent = pairs("t", "", &texts);
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("Rust host did not finish: {}", run.describe()),
    );
    let seen = replies(&run.stdout);
    answered_once(&mut c, &seen, &sent, "replies");
    // docs/protocol.md §2.1: a burst's replies all name the newest message of the channel.
    c.check(
        seen.iter().all(|r| r.in_reply_to.as_deref() == Some("t-5")),
        format!("the burst was not answered as one query: {seen:?}"),
    );
    check_files(&mut c, &session_dir(&data, "s"), &sent);
    c.finish("B2 Rust host + older container: burst");
}

#[test]
fn b3_rust_host_clear_resets_the_older_containers_conversation() {
    peer();
    require_root_and_bwrap();
    let (_tmp, data) = data_dir();
    let (host, mut ctl) = sandboxed_session(&data, "s");
    let texts = ["before", "/clear", "after"];
    let Conversation { seen, sent, result } = converse(&host, &mut ctl, "t", &texts, true);
    let mut c = Checks::default();
    c.check(result.is_ok(), format!("{result:?}; delivered {seen:?}"));
    answered_once(&mut c, &seen, &sent, "replies");
    let cleared: Vec<&Reply> = seen
        .iter()
        .filter(|r| r.text == "Session cleared.")
        .collect();
    c.check(
        cleared.len() == 1 && cleared[0].in_reply_to.is_none() && cleared[0].source == "container",
        format!(
            "`Session cleared.` should come once from the container, naming no message: {seen:?}"
        ),
    );
    check_files(&mut c, &host.paths().dir, &sent);
    c.eq(
        continuation(&host.paths().dir),
        Some("1".to_string()),
        "continuation after /clear",
    );
    c.finish("B3 Rust host + older container: /clear");
}

#[test]
fn b4_rust_host_denies_an_admin_command_with_a_host_reply() {
    peer();
    require_root_and_bwrap();
    let (_tmp, data) = data_dir();
    let texts = ["hello", "/cost", "/help", "bye"];
    let mut args = vec!["--id-prefix", "t"];
    args.extend(message_args(&texts));
    let run = rust_host(&data, "s", &args);
    let sent = vec![
        ("t-1".to_string(), "hello".to_string()),
        ("t-4".to_string(), "bye".to_string()),
    ];
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("Rust host did not finish: {}", run.describe()),
    );
    let seen = replies(&run.stdout);
    answered_once(&mut c, &seen, &sent, "replies");
    let denials: Vec<&Reply> = seen
        .iter()
        .filter(|r| r.text == "Permission denied: /cost requires admin access.")
        .collect();
    c.check(
        denials.len() == 1
            && denials[0].source == "host"
            && denials[0].seq % 2 == 0
            && denials[0].in_reply_to.as_deref() == Some("t-2"),
        format!("the denial should be one host reply (even seq) to t-2: {seen:?}"),
    );
    c.check(
        !seen.iter().any(|r| r.text.contains("/help")),
        format!("/help should be dropped silently: {seen:?}"),
    );
    let dir = session_dir(&data, "s");
    check_files(&mut c, &dir, &sent);
    if let Ok(f) = files(&dir) {
        // The denial's mirror (kind HOST_REPLY_KIND, completed) is there for the older
        // implementation; it never reaches an agent.
        let kinds: Vec<&str> = f.messages_in.iter().map(|r| r.kind.as_str()).collect();
        c.eq(
            kinds,
            vec!["chat", HOST_REPLY_KIND, "chat"],
            "messages_in kinds (the commands never reach it; the denial's mirror does)",
        );
        c.eq(f.host_replies.len(), 1, "host_replies rows");
    }
    c.finish("B4 Rust host + older container: denied admin command");
}

#[test]
fn b5_rust_host_kills_the_older_container_mid_query_and_retries() {
    peer();
    require_root_and_bwrap();
    let (_tmp, data) = data_dir();
    let texts = ["one", "two", "three"];
    let mut args = vec![
        "--id-prefix",
        "t",
        "--kill-after",
        "0",
        "--container-arg=--slow-ms=2000",
    ];
    args.extend(message_args(&texts));
    let run = rust_host(&data, "s", &args);
    let sent = pairs("t", "", &texts);
    let mut c = Checks::default();
    c.check(
        run.ok(),
        format!("Rust host did not finish: {}", run.describe()),
    );
    c.check(
        run.stderr.contains("host: kill -9 container pid"),
        format!(
            "the container was not killed while it held a claim: {}",
            run.describe()
        ),
    );
    c.check(
        run.stderr.contains("sweep retried the claim of"),
        "no claim of the killed container was retried",
    );
    answered_once(&mut c, &replies(&run.stdout), &sent, "replies");
    check_files(&mut c, &session_dir(&data, "s"), &sent);
    c.finish("B5 Rust host + older container: kill -9 mid-query");
}

#[test]
fn b6_the_rust_host_serves_an_older_hosts_unmigrated_folder() {
    peer();
    let (_tmp, data) = data_dir();
    let mut c = Checks::default();
    // The older host and the older container talk first, in the single layout.
    let first = ["one", "two"];
    let mut args = vec!["--converse", "--id-prefix", "t"];
    args.extend(message_args(&first));
    let run = older_host(&data, "s", &peer().container_wrapper, &args);
    c.check(
        run.ok(),
        format!("first half (older host): {}", run.describe()),
    );
    // Then the Rust host takes the folder as it is: single layout, never migrated. A single
    // folder cannot be sandboxed safely, so the container is a plain child process on it.
    let dir = session_dir(&data, "s");
    let host = HostSession::open(&dir);
    c.eq(
        host.paths().layout,
        sessionbus_store::Layout::Single,
        "layout of the older folder",
    );
    let mut ctl = Ctl::Child(ChildControl::new(&peer().container_wrapper, vec![]));
    let second = ["three", "four"];
    let Conversation {
        seen,
        sent: sent2,
        result,
    } = converse(&host, &mut ctl, "u", &second, false);
    c.check(
        result.is_ok(),
        format!("Rust host on the older folder: {result:?}; delivered {seen:?}"),
    );
    answered_once(
        &mut c,
        &seen,
        &pairs("u", "", &second),
        "second half replies",
    );
    c.check(
        seen.iter()
            .all(|r| r.text == "echo: three" || r.text == "echo: four"),
        format!("the Rust host re-delivered the older host's replies: {seen:?}"),
    );
    let mut sent = pairs("t", ":g", &first);
    sent.extend(sent2);
    check_files(&mut c, &dir, &sent);
    c.finish("B6 Rust host on an older host's never-migrated folder");
}

/// An older session on both older sides ("one", "two"), then the operator's `step` on the
/// session folder, then the Rust host with the older container in bubblewrap as uid 1000
/// ("three", "four"): the second half answered once, no first-half reply re-delivered, both
/// files holding every message.
fn older_session_then_rust_host(
    name: &str,
    step: &str,
    operator: impl FnOnce(&mut Checks, &Path, &Path),
) {
    peer();
    require_root_and_bwrap();
    let (_tmp, data) = data_dir();
    let mut c = Checks::default();
    // First half: the older implementation on both sides.
    let first = ["one", "two"];
    let mut args = vec!["--converse", "--id-prefix", "t"];
    args.extend(message_args(&first));
    let run = older_host(&data, "s", &peer().container_wrapper, &args);
    c.check(
        run.ok(),
        format!(
            "first half (older host + older container): {}",
            run.describe()
        ),
    );
    let dir = session_dir(&data, "s");
    operator(&mut c, &data, &dir);
    // Second half: the Rust host, the older container in bubblewrap as uid 1000.
    let second = ["three", "four"];
    let mut args = vec!["--id-prefix", "u"];
    args.extend(message_args(&second));
    let run2 = rust_host(&data, "s", &args);
    c.check(
        run2.ok(),
        format!(
            "second half (Rust host + sandboxed older container, after {step}): {}",
            run2.describe()
        ),
    );
    let seen2 = replies(&run2.stdout);
    answered_once(
        &mut c,
        &seen2,
        &pairs("u", "", &second),
        "second half replies",
    );
    c.check(
        seen2
            .iter()
            .all(|r| r.text == "echo: three" || r.text == "echo: four"),
        format!("the Rust host re-delivered first-half replies: {seen2:?}"),
    );
    let mut sent = pairs("t", ":g", &first);
    sent.extend(pairs("u", "", &second));
    check_files(&mut c, &dir, &sent);
    c.finish(name);
}

#[test]
fn b7_migrated_between_halves_the_rust_host_continues_with_the_older_container() {
    older_session_then_rust_host(
        "B7 older host + older container, migrated, then the Rust host",
        "convert_to_split",
        |c, _data, dir| {
            // The operator converts the folder for the Rust host, the container area handed
            // to the sandbox's user.
            match convert_to_split(
                dir,
                Some(OWNER),
                &SystemClock,
                ContainerStopped::i_have_stopped_the_container(),
            ) {
                Ok(Some(_)) => {}
                Ok(None) => c.check(false, "convert_to_split found nothing to convert"),
                Err(e) => c.check(false, format!("convert_to_split: {e}")),
            }
            // The container's files moved into its area must be the container's now: it
            // writes outbound.db (and its journal next to it), outbox/ and .heartbeat.
            let area = dir.join("container");
            for name in ["outbound.db", "outbox", ".heartbeat"] {
                use std::os::unix::fs::MetadataExt;
                if let Ok(m) = std::fs::symlink_metadata(area.join(name)) {
                    c.check(
                        m.uid() == OWNER.uid && m.gid() == OWNER.gid,
                        format!(
                            "after convert_to_split(.., Some({}:{})): container/{name} belongs \
                             to {}:{}, so the container cannot write it",
                            OWNER.uid,
                            OWNER.gid,
                            m.uid(),
                            m.gid()
                        ),
                    );
                }
            }
        },
    );
}

#[test]
fn b8_after_cargo_xtask_migrate_the_rust_host_continues_an_older_session() {
    older_session_then_rust_host(
        "B8 older session, `cargo xtask migrate`, then the Rust host",
        "cargo xtask migrate",
        |c, data, dir| {
            // The operator's documented path: `cargo xtask migrate --session DIR
            // --no-containers-running --container-owner 1000:1000`. The operator stopped the
            // older deployment, so it says so (the caller's word decides before a heartbeat,
            // and the heartbeat of the container that just stopped is still fresh). The older
            // stand-in ran its container as root, so the operator names the sandbox's user
            // that the container's area goes to (by default it would stay root's, the owner
            // of outbound.db).
            let migrate = xtask::migrate::MigrateArgs {
                data_dir: data.to_path_buf(),
                sessions: vec![dir.to_path_buf()],
                no_containers_running: true,
                container_owner: Some(OWNER),
                ..Default::default()
            };
            match xtask::migrate::run(&migrate, &SystemClock, &mut |_| {}) {
                Ok(report) => c.check(
                    report.summary.failed == 0,
                    format!("cargo xtask migrate failed: {:?}", report.summary.failures),
                ),
                Err(e) => c.check(false, format!("cargo xtask migrate: {e}")),
            }
        },
    );
}
