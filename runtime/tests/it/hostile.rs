//! A hostile container in a real sandbox, attacking the host through everything it can
//! write, and the host shown unharmed.
//!
//! Each test provisions a data dir with two healthy sessions (the `echo_container` example in
//! bubblewrap) and one hostile session (the `hostile_container` example in bubblewrap, as the
//! same unprivileged user, with exactly a container's mounts), then runs the host's passes
//! (sweep and delivery of every session) and checks:
//!
//! - nothing outside the hostile container's own area changed: host files it aimed at (another
//!   session's inbound.db, a 0600 key, its own session's inbound.db) are intact and every
//!   file the host owns is as the host left it;
//! - no host operation blocked: each pass runs on a watchdog thread that fails the test if it
//!   does not come back (a FIFO opened blocking would hang it forever);
//! - the healthy sessions kept being served: every message answered exactly once;
//! - the hostile session got a clear typed error (or its rows refused), named per attack.
//!
//! The tests run as root (the sandbox runs as uid 1000) and need bubblewrap (Debian package
//! `bubblewrap`); without either they fail saying so.

use sessionbus_runtime::config::ContainerConfig;
use sessionbus_runtime::control::{prepare_group, CallerError, SandboxControl, SandboxOptions};
use sessionbus_runtime::host::{
    deliver_session, sweep_session, ContainerControl, Deliverer, SweepOptions, SweepReport,
};
use sessionbus_runtime::liveness::{KillReason, StuckDecision};
use sessionbus_runtime::mount_plan::GroupMounts;
use sessionbus_schema::DbError;
use sessionbus_store::{
    provision, DueOutbound, HostSession, NewMessage, Ownership, SessionPaths, StoreError,
    SystemClock,
};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const UID: u32 = 1000;
const GID: u32 = 1000;
const GROUP: &str = "g";

fn owner() -> Ownership {
    Ownership { uid: UID, gid: GID }
}

/// The example binaries, built once.
struct Examples {
    echo: PathBuf,
    hostile: PathBuf,
}

fn examples() -> &'static Examples {
    static EX: OnceLock<Examples> = OnceLock::new();
    EX.get_or_init(|| {
        let mut exe = sessionbus_testkit::child::built_executables(
            "sessionbus-runtime",
            &[
                "--example",
                "echo_container",
                "--example",
                "hostile_container",
            ],
            &["echo_container", "hostile_container"],
        )
        .expect("building the examples");
        Examples {
            echo: exe.remove("echo_container").expect("reported"),
            hostile: exe.remove("hostile_container").expect("reported"),
        }
    })
}

fn require_sandbox() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "these tests give folders to uid {UID} and must run as root"
    );
    assert!(
        Path::new("/usr/bin/bwrap").exists(),
        "bubblewrap is missing: apt-get install bubblewrap"
    );
}

/// The hostile session's control: runs `hostile_container --attack ...` once in the sandbox,
/// keeping its output; the healthy sessions' containers are echo containers.
struct Controls {
    echo: SandboxControl,
    hostile: SandboxControl,
    hostile_args: Vec<std::ffi::OsString>,
    hostile_dir: PathBuf,
    hostile_child: Option<Child>,
    hostile_started: bool,
    hostile_output: String,
    kills: Vec<String>,
}

impl Controls {
    fn collect_hostile_output(&mut self) {
        if let Some(mut child) = self.hostile_child.take() {
            let _ = child.kill();
            if let Ok(out) = child.wait_with_output() {
                self.hostile_output
                    .push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
    }
}

impl ContainerControl for Controls {
    fn is_running(&mut self, s: &SessionPaths) -> bool {
        if s.dir == self.hostile_dir {
            let running = self
                .hostile_child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if !running {
                self.collect_hostile_output();
            }
            return running;
        }
        self.echo.is_running(s)
    }

    fn kill(&mut self, s: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        if s.dir == self.hostile_dir {
            self.kills.push(reason.to_string());
            self.collect_hostile_output();
            return Ok(());
        }
        self.echo.kill(s, reason)
    }

    fn start(&mut self, s: &SessionPaths) -> Result<(), CallerError> {
        if s.dir == self.hostile_dir {
            if !self.hostile_started {
                self.hostile_started = true;
                let mut cmd = self.hostile.command(s)?;
                cmd.stdout(Stdio::piped());
                self.hostile_child = Some(cmd.spawn()?);
            }
            return Ok(());
        }
        self.echo.start(s)
    }
}

/// The chat platform: counts the replies per message.
#[derive(Default)]
struct Platform {
    answers: HashMap<String, usize>,
    delivered: Vec<String>,
}

impl Deliverer for Platform {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        _: i64,
    ) -> Result<Option<String>, CallerError> {
        if let Some(to) = &row.message.in_reply_to {
            *self.answers.entry(to.clone()).or_default() += 1;
        }
        self.delivered.push(row.message.id.clone());
        Ok(None)
    }
}

/// Every file's bytes and owner under `dir`, links as their targets' text, except the paths
/// for which `skip` says so.
type Snapshot = BTreeMap<PathBuf, (Vec<u8>, u32, u32)>;

fn snapshot(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if skip(&p) {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let bytes = if m.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .map(|t| t.to_string_lossy().into_owned().into_bytes())
                    .unwrap_or_default()
            } else if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else if m.is_file() {
                std::fs::read(&p).unwrap_or_default()
            } else {
                b"special".to_vec()
            };
            out.insert(p, (bytes, m.uid(), m.mode()));
        }
    }
    out
}

struct World {
    _root: tempfile::TempDir,
    data: PathBuf,
    /// A host folder outside the data dir with a 0600 key.
    canary: PathBuf,
    healthy: Vec<SessionPaths>,
    hostile: SessionPaths,
    controls: Controls,
    platform: Platform,
}

impl World {
    fn new(attack: &str, hang: bool) -> World {
        require_sandbox();
        let ex = examples();
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let canary = root.path().join("host-secrets");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("key"), b"the host's private key").unwrap();
        std::fs::set_permissions(canary.join("key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let group = GroupMounts::for_group(&data, GROUP, data.join("agents").join(GROUP)).unwrap();
        let config = ContainerConfig::from_str(
            r#"{ "pollIntervalIdleMs": 20, "pollIntervalActiveMs": 20 }"#,
            "container.json",
        )
        .unwrap();
        prepare_group(&group, Some(owner()), &config).unwrap();
        let session = |name: &str| {
            let p = SessionPaths::in_data_dir(&data, GROUP, name).unwrap();
            provision(&p, Some(owner()), &SystemClock).unwrap();
            p
        };
        let healthy = vec![session("healthy-1"), session("healthy-2")];
        let hostile = session("hostile");
        for (i, s) in healthy.iter().enumerate() {
            let host = HostSession::open(&s.dir);
            for k in 0..3 {
                host.inbound()
                    .write_message(&NewMessage::chat(format!("h{i}-{k}"), "hello"))
                    .unwrap();
            }
        }
        HostSession::open(&hostile.dir)
            .inbound()
            .write_message(&NewMessage::chat("bait", "attack now"))
            .unwrap();
        let mut hostile_args: Vec<std::ffi::OsString> = vec!["--attack".into(), attack.into()];
        if hang {
            hostile_args.push("--hang".into());
        }
        let controls = Controls {
            echo: SandboxControl::new(sandbox_options(&ex.echo, &data)),
            hostile: SandboxControl::new(
                sandbox_options(&ex.hostile, &data).with_args(hostile_args.clone()),
            ),
            hostile_args,
            hostile_dir: hostile.dir.clone(),
            hostile_child: None,
            hostile_started: false,
            hostile_output: String::new(),
            kills: Vec::new(),
        };
        World {
            _root: root,
            data,
            canary,
            healthy,
            hostile,
            controls,
            platform: Platform::default(),
        }
    }

    /// Points the attack at these host paths (before the first pass starts the container).
    fn aim(&mut self, targets: &[PathBuf]) {
        let mut args = self.controls.hostile_args.clone();
        for t in targets {
            args.push("--target".into());
            args.push(t.into());
        }
        self.controls.hostile =
            SandboxControl::new(sandbox_options(&examples().hostile, &self.data).with_args(args));
    }

    /// What must not change whatever the hostile container does: every file under the root
    /// except the containers' own areas and folders, and the files the host itself keeps
    /// writing (inbound.db and its stamps).
    fn host_owned(&self) -> Snapshot {
        let root = self.data.parent().unwrap().to_path_buf();
        snapshot(&root, &|p: &Path| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == sessionbus_store::CONTAINER_AREA
                || name == "agents"
                || name == ".claude-shared"
                || name == "inbound.db"
                || name == ".inbound-generation"
        })
    }

    /// One pass of the host over every session: sweep, then delivery; each on a watchdog.
    fn pass(&mut self) -> BTreeMap<String, Result<SweepReport, String>> {
        let mut out = BTreeMap::new();
        let sessions: Vec<SessionPaths> = self
            .healthy
            .iter()
            .chain(std::iter::once(&self.hostile))
            .cloned()
            .collect();
        for s in sessions {
            let name = s.dir.file_name().unwrap().to_string_lossy().into_owned();
            let host = HostSession::open(&s.dir);
            let result = watchdog(&name, || {
                let r = sweep_session(
                    &host,
                    &mut self.controls,
                    &|_| None,
                    SweepOptions::default(),
                )
                .map_err(|e| e.to_string());
                let d = deliver_session(&host, &mut self.platform, 3).map_err(|e| e.to_string());
                r.and_then(|r| d.map(|_| r))
            });
            out.insert(name, result);
        }
        out
    }

    /// Passes until the healthy sessions are answered and the hostile container has run.
    fn run_until_served(&mut self) -> Vec<BTreeMap<String, Result<SweepReport, String>>> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut passes = Vec::new();
        loop {
            passes.push(self.pass());
            let served = self.healthy_answered();
            let hostile_done =
                self.controls.hostile_started && !self.controls.is_running(&self.hostile.clone());
            if served && hostile_done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not served in time: answers {:?}, hostile output:\n{}",
                self.platform.answers,
                self.controls.hostile_output
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        passes
    }

    fn healthy_answered(&self) -> bool {
        (0..self.healthy.len())
            .flat_map(|i| (0..3).map(move |k| format!("h{i}-{k}")))
            .all(|id| self.platform.answers.get(&id) == Some(&1))
    }

    /// The checks every attack must pass.
    fn assert_unharmed(&self, before: &Snapshot) {
        assert_eq!(
            std::fs::read(self.canary.join("key")).unwrap(),
            b"the host's private key"
        );
        let key_mode = std::fs::metadata(self.canary.join("key")).unwrap().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let after = self.host_owned();
        for (path, was) in before {
            assert_eq!(after.get(path), Some(was), "{} changed", path.display());
        }
        for path in after.keys() {
            assert!(before.contains_key(path), "{} appeared", path.display());
        }
        for s in self.healthy.iter().chain(std::iter::once(&self.hostile)) {
            assert!(s.inbound.is_file(), "{} is gone", s.inbound.display());
            let m = std::fs::symlink_metadata(&s.inbound).unwrap();
            assert_eq!(m.uid(), 0, "{} changed owner", s.inbound.display());
            let host = HostSession::open(&s.dir);
            host.inbound().pending().unwrap();
        }
        for (id, n) in &self.platform.answers {
            assert!(*n <= 1, "{id} answered {n} times");
        }
        assert!(self.healthy_answered(), "{:?}", self.platform.answers);
        // Nothing but what the host wrote is in the hostile session's inbound.db.
        let host = HostSession::open(&self.hostile.dir);
        assert!(host.inbound().message("bait").unwrap().is_some());
    }

    fn hostile_errors(passes: &[BTreeMap<String, Result<SweepReport, String>>]) -> Vec<String> {
        passes
            .iter()
            .filter_map(|p| p.get("hostile"))
            .filter_map(|r| match r {
                Ok(rep) => rep.outbound_unreadable.clone(),
                Err(e) => Some(e.clone()),
            })
            .collect()
    }
}

fn sandbox_options(program: &Path, data: &Path) -> SandboxOptions {
    let mut o = SandboxOptions::new(program, UID, GID, data, data.join("agents"));
    o.quiet = true;
    o
}

/// Runs `f` on this thread while a watchdog fails the test when it takes minutes: a host
/// operation that blocks (a FIFO opened for reading, a lock never released) never returns.
fn watchdog<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let name = what.to_string();
    let guard = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            eprintln!("host operation on {name} blocked for 120 s");
            std::process::abort();
        }
    });
    let out = f();
    let _ = tx.send(());
    let _ = guard.join();
    out
}

#[test]
fn a_hot_journal_naming_host_files_is_never_rolled_back() {
    let mut w = World::new("super-journal", false);
    let targets = vec![
        w.healthy[0].inbound.clone(),
        w.canary.join("key"),
        w.hostile.inbound.clone(),
        w.data.clone(),
    ];
    w.aim(&targets);
    let before = w.host_owned();
    let passes = w.run_until_served();
    w.assert_unharmed(&before);
    let out = &w.controls.hostile_output;
    assert!(out.contains("step plant outbound.db-journal"), "{out}");
    let errors = World::hostile_errors(&passes);
    assert!(
        errors.iter().any(|e| e.contains("hot journal")),
        "{errors:?}"
    );
    assert!(w.hostile.container_dir.join("outbound.db-journal").exists());
    for t in &targets {
        assert!(t.exists(), "{} is gone", t.display());
    }
}

#[test]
fn replaced_files_and_a_forged_outbound_db_are_refused() {
    let mut w = World::new("replace-files", false);
    let before = w.host_owned();
    let passes = w.run_until_served();
    w.assert_unharmed(&before);
    let out = &w.controls.hostile_output;
    assert!(
        out.contains("step rename inbound.db away: refused"),
        "{out}"
    );
    assert!(out.contains("step write over inbound.db: refused"), "{out}");
    let errors = World::hostile_errors(&passes);
    assert!(errors.iter().any(|e| e.contains("view")), "{errors:?}");
}

#[test]
fn planted_triggers_views_and_a_changed_schema_never_run() {
    let mut w = World::new("schema", false);
    let before = w.host_owned();
    let passes = w.run_until_served();
    w.assert_unharmed(&before);
    let errors = World::hostile_errors(&passes);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("refusing the file's schema")),
        "{errors:?}"
    );
}

#[test]
fn fifos_and_links_where_files_belong_fail_without_blocking() {
    let mut w = World::new("fifos", false);
    let key = w.canary.join("key");
    w.aim(&[key]);
    let before = w.host_owned();
    let passes = w.run_until_served();
    w.assert_unharmed(&before);
    let errors = World::hostile_errors(&passes);
    assert!(errors.iter().any(|e| e.contains("FIFO")), "{errors:?}");
    // The outbox traps: each a typed error, at once.
    let host = HostSession::open(&w.hostile.dir);
    for id in ["linked", "filelink", "fifo"] {
        let err = watchdog(id, || host.read_outbox_attachments(id)).unwrap_err();
        assert!(
            matches!(err, StoreError::Db(DbError::UnsafePath { .. })),
            "{id}: {err}"
        );
    }
}

#[test]
fn a_fifo_or_a_link_in_place_of_outbound_db_is_a_typed_error() {
    for attack in ["fifo-outbound", "symlinks"] {
        let mut w = World::new(attack, false);
        let key = w.canary.join("key");
        w.aim(&[key]);
        let before = w.host_owned();
        let passes = w.run_until_served();
        w.assert_unharmed(&before);
        let errors = World::hostile_errors(&passes);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("FIFO") || e.contains("symbolic link")),
            "{attack}: {errors:?}"
        );
    }
}

#[test]
fn huge_rows_and_sparse_attachments_are_refused_not_loaded() {
    let mut w = World::new("huge", false);
    let before = w.host_owned();
    w.run_until_served();
    let host = HostSession::open(&w.hostile.dir);
    for _ in 0..3 {
        deliver_session(&host, &mut w.platform, 3).unwrap();
    }
    // The rows over the limits are settled without delivery; the files reply is delivered
    // (its text is fine), but its attachments are refused before anything is read.
    assert!(!w.platform.delivered.iter().any(|id| id == "big"));
    assert!(host.due_outbound(10).unwrap().is_empty());
    let err = host.read_outbox_attachments("files").unwrap_err();
    assert!(
        matches!(err, StoreError::AttachmentsTooLarge { .. }),
        "{err}"
    );
    w.assert_unharmed(&before);
}

#[test]
fn a_million_claims_cost_the_sweep_nothing() {
    let mut w = World::new("claims", false);
    let before = w.host_owned();
    let passes = w.run_until_served();
    w.assert_unharmed(&before);
    // Every pass of the hostile session completed: its junk claims are not of any pending
    // message, so the sweep never read them. (While the container writes them, it holds its
    // file's lock: a pass then reports the lock and moves on.)
    for p in &passes {
        if let Some(Err(e)) = p.get("hostile") {
            assert!(e.contains("locked"), "hostile session: {e}");
        }
    }
}

#[test]
fn a_reply_scheduled_for_the_far_future_does_not_pin_the_cursor() {
    let mut w = World::new("far-future", false);
    let before = w.host_owned();
    w.run_until_served();
    let host = HostSession::open(&w.hostile.dir);
    for _ in 0..20 {
        if deliver_session(&host, &mut w.platform, 3)
            .unwrap()
            .delivered
            .is_empty()
        {
            break;
        }
    }
    let now_rows = w
        .platform
        .delivered
        .iter()
        .filter(|id| id.starts_with("now-"))
        .count();
    assert_eq!(now_rows, 1500);
    assert!(!w.platform.delivered.iter().any(|id| id == "later"));
    assert!(host.due_outbound(10).unwrap().is_empty());
    w.assert_unharmed(&before);
}

#[test]
fn writes_beyond_the_containers_area_are_refused_by_the_sandbox() {
    let mut w = World::new("escape", false);
    let targets = vec![w.canary.join("key"), w.healthy[0].inbound.clone()];
    w.aim(&targets);
    let before = w.host_owned();
    w.run_until_served();
    w.assert_unharmed(&before);
    let out = &w.controls.hostile_output;
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("step ")).collect();
    assert!(steps.len() >= 10, "{out}");
    for line in steps {
        assert!(
            line.contains(": refused"),
            "the sandbox let this through: {line}"
        );
    }
}

#[test]
fn a_container_that_makes_itself_unkillable_is_killed() {
    let mut w = World::new("unkillable", true);
    let before = w.host_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut killed = None;
    while killed.is_none() {
        for (name, r) in w.pass() {
            if name == "hostile" {
                if let Ok(rep) = r {
                    if let Some(StuckDecision::Kill { reason }) = rep.decision {
                        killed = Some(reason);
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the hostile container was never killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        matches!(killed, Some(KillReason::HeartbeatInFuture { .. })),
        "{killed:?}"
    );
    while !w.healthy_answered() {
        w.pass();
        assert!(Instant::now() < deadline, "healthy sessions not served");
    }
    w.assert_unharmed(&before);
}
