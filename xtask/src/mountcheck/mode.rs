//! One cache mode of a mountcheck run: the host side on the folder, the platform that
//! collects replies, and the count of what was answered, lost, duplicated or torn.

use super::echo::*;
use super::*;

/// The host's "chat platform": counts the replies per message and keeps their text.
#[derive(Default)]
pub(super) struct Platform {
    pub(super) replies: BTreeMap<String, Vec<String>>,
    pub(super) unaddressed: usize,
}

impl Deliverer for Platform {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        let m = &row.message;
        let text = serde_json::from_str::<serde_json::Value>(&m.content)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| m.content.clone());
        match &m.in_reply_to {
            Some(to) => self.replies.entry(to.clone()).or_default().push(text),
            None => self.unaddressed += 1,
        }
        Ok(None)
    }
}

/// The host's side of a mode: writes, deliveries, ack syncs, and the retryable errors it rode
/// out.
pub(super) struct HostSide {
    pub(super) host: HostSession,
    pub(super) platform: Platform,
    pub(super) retries: usize,
    pub(super) errors: Vec<String>,
}

impl HostSide {
    pub(super) fn tick(&mut self) {
        match deliver_session(&self.host, &mut self.platform, 5) {
            Ok(_) => {}
            Err(e) if e.is_retryable() => self.retries += 1,
            Err(e) => self.errors.push(format!("delivery: {e}")),
        }
        match self.host.sync_acks(&|_| None) {
            Ok(_) => {}
            Err(e) if e.is_retryable() => self.retries += 1,
            Err(e) => self.errors.push(format!("ack sync: {e}")),
        }
    }
}

#[derive(QueryableByName)]
pub(super) struct ReplyRow {
    #[diesel(sql_type = Nullable<Text>)]
    pub(super) in_reply_to: Option<String>,
    #[diesel(sql_type = Text)]
    pub(super) content: String,
}

#[derive(QueryableByName)]
pub(super) struct IntegrityRow {
    #[diesel(sql_type = Text)]
    pub(super) integrity_check: String,
}

/// Every reply row of outbound.db (host side) by `in_reply_to`, and its integrity check.
pub(super) fn outbound_rows(
    path: &Path,
) -> Result<(BTreeMap<String, Vec<String>>, String), String> {
    let file = DbFile::new(path, FileKind::Outbound, Role::Host);
    let mut last = String::new();
    for _ in 0..50 {
        let attempt = (|| -> Result<_, String> {
            let mut c = file
                .open_reader("mountcheck tally")
                .map_err(|e| e.to_string())?;
            let rows: Vec<ReplyRow> =
                diesel::sql_query("SELECT in_reply_to, content FROM messages_out")
                    .load(&mut c)
                    .map_err(|e| e.to_string())?;
            let integrity: Vec<IntegrityRow> = diesel::sql_query("PRAGMA integrity_check")
                .load(&mut c)
                .map_err(|e| e.to_string())?;
            let mut by = BTreeMap::<String, Vec<String>>::new();
            for r in rows {
                let text = serde_json::from_str::<serde_json::Value>(&r.content)
                    .ok()
                    .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or(r.content);
                by.entry(r.in_reply_to.unwrap_or_default())
                    .or_default()
                    .push(text);
            }
            let integrity = integrity
                .into_iter()
                .map(|r| r.integrity_check)
                .collect::<Vec<_>>()
                .join("; ");
            Ok((by, integrity))
        })();
        match attempt {
            Ok(v) => return Ok(v),
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Err(format!("cannot read outbound.db: {last}"))
}

/// One mode: a fresh session folder mounted in `mode`, the echo container through the mount,
/// this process as the host on the folder itself.
pub fn run_mode(mode: CacheMode, opts: &RigOptions, echo: &Path) -> Result<ModeReport, String> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("sessionbus-mountcheck-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let paths = SessionPaths::in_data_dir(tmp.path(), "mountcheck", mode.option())
        .map_err(|e| e.to_string())?;
    let config = r#"{"assistantName":"echo","pollIntervalIdleMs":10,"pollIntervalActiveMs":10}"#;
    let (mut container, mount) = if opts.sandbox {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let owner = Ownership {
            uid: SANDBOX_UID,
            gid: SANDBOX_UID,
        };
        provision(&paths, Some(owner), &SystemClock).map_err(|e| e.to_string())?;
        let group = GroupMounts::for_group(
            tmp.path(),
            "mountcheck",
            tmp.path().join("agents/mountcheck"),
        )
        .map_err(|e| e.to_string())?;
        let config =
            ContainerConfig::from_str(config, "container.json").map_err(|e| e.to_string())?;
        prepare_group(&group, Some(owner), &config).map_err(|e| e.to_string())?;
        let mount = BindMount::with_access(&paths.dir, mode, true).map_err(|e| e.to_string())?;
        let cmd = sandboxed_echo(echo, mount.mount_point(), &group, opts.frozen_after)?;
        (EchoProcess::spawn(cmd, echo)?, mount)
    } else {
        provision(&paths, None, &SystemClock).map_err(|e| e.to_string())?;
        let agent = paths.dir.join("agent");
        std::fs::create_dir_all(&agent).map_err(|e| format!("{}: {e}", agent.display()))?;
        std::fs::write(agent.join("container.json"), config)
            .map_err(|e| format!("{}: {e}", agent.display()))?;
        let mount = BindMount::new(&paths.dir, mode).map_err(|e| e.to_string())?;
        (
            EchoProcess::start(echo, mount.mount_point(), opts.frozen_after)?,
            mount,
        )
    };
    let start_deadline = Instant::now() + Duration::from_secs(15);
    while !container.log.lock().map(|l| l.started).unwrap_or(false) {
        if container.exited() || Instant::now() >= start_deadline {
            let lines = container
                .log
                .lock()
                .map(|l| l.lines.join("\n"))
                .unwrap_or_default();
            return Err(format!(
                "{mode}: the container did not start ({}):\n{lines}",
                container
                    .exit
                    .as_deref()
                    .unwrap_or("still starting after 15 s")
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut host = HostSide {
        host: HostSession::open(&paths.dir),
        platform: Platform::default(),
        retries: 0,
        errors: Vec::new(),
    };
    let mut rng = Rng::new(opts.seed ^ (mode as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let max_gap = u64::try_from(opts.max_gap.as_millis()).unwrap_or(u64::MAX);
    let mut sent: Vec<(String, String, i64)> = Vec::new(); // id, text, commit ms
    let mut next = Instant::now();
    for i in 1..=opts.messages {
        next += Duration::from_millis(rng.below(max_gap.saturating_add(1)));
        while Instant::now() < next {
            host.tick();
            let left = next.saturating_duration_since(Instant::now());
            std::thread::sleep(left.min(Duration::from_millis(10)));
        }
        let id = format!("mc-{}-{i}", mode.option());
        let text = format!("message {i} of {} ({mode})", opts.messages);
        let mut tries = 0;
        loop {
            match host
                .host
                .inbound()
                .write_message(&NewMessage::chat(&id, &text))
            {
                Ok(_) => break,
                Err(e) if e.is_retryable() && tries < 20 => {
                    tries += 1;
                    host.retries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("{mode}: the host cannot write {id}: {e}")),
            }
        }
        sent.push((id, text, unix_ms()));
    }

    // Drain: until everything is answered, the container is gone, or time is up.
    let drain_end = Instant::now() + opts.drain;
    loop {
        host.tick();
        let all = sent
            .iter()
            .all(|(id, _, _)| host.platform.replies.contains_key(id));
        if all || container.exited() || Instant::now() >= drain_end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    container.stop(Duration::from_secs(5));
    // Whatever the container committed on its way out.
    host.tick();

    let (rows, integrity) = outbound_rows(&paths.outbound)?;
    let log = container.log.lock().map_err(|_| "log lock poisoned")?;
    let mut answered_once = 0;
    let mut lost = 0;
    let mut duplicated = 0;
    let mut torn = 0;
    let mut claimed_twice = 0;
    let mut latencies = Vec::new();
    for (id, text, commit_ms) in &sent {
        let expected = format!("echo: {text}");
        let delivered = host.platform.replies.get(id).map_or(&[][..], Vec::as_slice);
        let stored = rows.get(id).map_or(&[][..], Vec::as_slice);
        let bad = delivered
            .iter()
            .chain(stored.iter())
            .filter(|t| **t != expected)
            .count();
        torn += bad + delivered.len().saturating_sub(stored.len());
        match (delivered.len(), stored.len()) {
            (0, 0) => lost += 1,
            (1, 1) if bad == 0 => answered_once += 1,
            (d, s) if d > 1 || s > 1 => duplicated += 1,
            _ => {}
        }
        if let Some(claims) = log.claims.get(id) {
            if claims.len() > 1 {
                claimed_twice += 1;
            }
            latencies.push((claims[0] - commit_ms).max(0));
        }
    }
    // Replies to nothing the host sent.
    torn += host.platform.unaddressed;
    torn += rows
        .iter()
        .filter(|(to, _)| !sent.iter().any(|(id, _, _)| id == *to))
        .map(|(_, v)| v.len())
        .sum::<usize>();
    if integrity != "ok" {
        torn = torn.max(rows.values().map(Vec::len).sum::<usize>().max(1));
    }
    let diagnosis = log
        .lines
        .iter()
        .find(|l| l.contains("view of inbound.db is frozen"))
        .map(|l| {
            l.split_once("poll loop stopped: ")
                .map_or(l.as_str(), |(_, d)| d)
                .to_string()
        });
    let container_exit = container
        .exit
        .clone()
        .unwrap_or_else(|| "still running".into());
    let clean = duplicated == 0 && torn == 0 && claimed_twice == 0 && integrity == "ok";
    let ok = if mode.revalidates() {
        clean && answered_once == sent.len() && lost == 0 && host.errors.is_empty()
    } else {
        clean && diagnosis.is_some()
    };
    if !ok {
        eprintln!("{mode}: host errors: {:?}", host.errors);
        eprintln!("{mode}: container stderr (last lines):");
        for l in log.lines.iter().rev().take(15).rev() {
            eprintln!("  {l}");
        }
    }
    let report = ModeReport {
        mode: mode.option().to_string(),
        sent: sent.len(),
        answered_once,
        lost,
        duplicated,
        torn,
        claimed_twice,
        latency: Latency::of(&latencies),
        outbound_integrity: integrity,
        host_retries: host.retries,
        container_exit,
        diagnosis,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ok,
        expectation: ModeReport::expectation(mode).to_string(),
    };
    let container_lines = log.lines.clone();
    drop(log);
    drop(container);
    mount.unmount().map_err(|e| e.to_string())?;
    if opts.keep {
        let _ = std::fs::write(
            tmp.path().join("container.log"),
            container_lines.join("\n") + "\n",
        );
        let kept = tmp.keep();
        eprintln!("{mode}: session folder kept at {}", kept.display());
    }
    Ok(report)
}
