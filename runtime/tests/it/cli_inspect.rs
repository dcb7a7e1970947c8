//! `sessionbus inspect`, run as the real binary on real session folders: what it reports,
//! and that it never writes (both files and the whole folder are compared byte for byte
//! before and after, including a hot journal and a WAL-mode file).

use diesel::connection::SimpleConnection;
use diesel::{Connection, SqliteConnection};
use serde_json::Value;
use sessionbus_runtime::heartbeat;
use sessionbus_runtime::host::accept_chat;
use sessionbus_schema::{Clock, FileKind, SystemClock};
use sessionbus_store::{
    provision, AckStatus, ContainerSession, HostSession, NewMessage, NewOutbound, SessionPaths,
};
use sessionbus_testkit::hostile;
use sessionbus_testkit::{legacy, ManualClock};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

fn inspect(dir: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionbus"));
    cmd.arg("inspect").arg(dir);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run the sessionbus binary")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every entry under `dir`: its bytes (files) and its modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Option<Vec<u8>>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if meta.is_dir() {
                stack.push(p.clone());
                out.insert(rel, (None, meta.modified().unwrap()));
            } else if !meta.is_file() {
                let what = format!("{:?}", std::fs::read_link(&p).ok());
                out.insert(rel, (Some(what.into_bytes()), meta.modified().unwrap()));
            } else {
                out.insert(
                    rel,
                    (Some(std::fs::read(&p).unwrap()), meta.modified().unwrap()),
                );
            }
        }
    }
    out
}

/// Runs inspect (text and JSON) and checks that nothing under the folder changed.
fn inspect_read_only(dir: &Path) -> (Output, Output) {
    let before = snapshot(dir);
    let text_out = inspect(dir, false);
    let json_out = inspect(dir, true);
    let after = snapshot(dir);
    let names = |s: &BTreeMap<String, _>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&before), names(&after), "files appeared or vanished");
    for (name, (bytes, mtime)) in &before {
        let (b, m) = &after[name];
        assert!(bytes == b, "{name} changed");
        assert_eq!(mtime, m, "{name}'s mtime changed");
    }
    (text_out, json_out)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(o)))
}

fn fresh() -> (tempfile::TempDir, SessionPaths) {
    let root = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(root.path().join("v2-sessions/g/s"));
    provision(&paths, None, &SystemClock).unwrap();
    (root, paths)
}

/// A session mid-conversation: m1 claimed, m2 answered (reply not delivered), m3 due, m4
/// scheduled an hour from now, a denial not delivered, Bash in flight, a fresh heartbeat.
fn busy_session() -> (tempfile::TempDir, SessionPaths) {
    let (root, paths) = fresh();
    let host = HostSession::open(&paths.dir);
    for (id, t) in [("m1", "first"), ("m2", "second"), ("m3", "third")] {
        host.inbound()
            .write_message(&NewMessage::chat(id, t))
            .unwrap();
    }
    let mut later = NewMessage::chat("m4", "a task for later");
    later.process_after = Some(SystemClock.now().plus_millis(3_600_000));
    host.inbound().write_message(&later).unwrap();
    accept_chat(&host, &NewMessage::chat("m5", "/cost"), || false).unwrap();

    let c = ContainerSession::open(&paths.dir).unwrap();
    c.start().unwrap();
    c.outbound()
        .ack(&["m1".into()], &AckStatus::Processing)
        .unwrap();
    let m2 = host.inbound().message("m2").unwrap().unwrap();
    c.outbound()
        .commit(
            &["m2".into()],
            &AckStatus::Completed,
            &[NewOutbound::reply_to("r2", &m2, "echo: second")],
        )
        .unwrap();
    c.outbound()
        .set_tool_in_flight("Bash", Some(120_000))
        .unwrap();
    heartbeat::touch(&paths.heartbeat).unwrap();
    host.sync_acks(&|_| None).unwrap();
    (root, paths)
}

#[test]
fn a_busy_session_is_reported_in_full_and_left_untouched() {
    let (_root, paths) = busy_session();
    let (t, j) = inspect_read_only(&paths.dir);
    assert!(t.status.success(), "{}", text(&t));
    let out = text(&t);
    for needle in [
        "inbound.db   current schema",
        "outbound.db  current schema",
        "messages by status: completed 1, failed 0, paused 0, pending 3",
        "due now (pending, waking the agent, not scheduled later): 2",
        "scheduled for later (a retry or a task): 1",
        "\"a task for later\"",
        "claimed now (processing acks): 1",
        "m1 (seq 2, pending in inbound.db) claimed",
        "tool in flight: Bash (declared timeout 2 min 0 s)",
        "undelivered replies: 2",
        "echo: second",
        "Permission denied: /cost requires admin access.",
        "heartbeat: touched",
        "healthy: leave the container running",
        "the sweep retries the claim(s) of m1",
        "problems: none",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    assert!(j.status.success(), "{}", text(&j));
    let v = json(&j);
    assert_eq!(v["files"][0]["schema"]["state"], "current");
    assert_eq!(v["files"][1]["schema"]["state"], "current");
    assert_eq!(v["inbound"]["by_status"]["pending"], 3);
    assert_eq!(v["inbound"]["by_status"]["completed"], 1);
    assert_eq!(v["inbound"]["due_count"], 2);
    let due: Vec<&str> = v["inbound"]["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(due, ["m1", "m3"]);
    assert_eq!(v["inbound"]["scheduled"][0]["id"], "m4");
    assert!(v["inbound"]["scheduled"][0]["due_in_ms"].as_i64().unwrap() > 3_000_000);
    assert_eq!(v["outbound"]["claims"][0]["message_id"], "m1");
    assert!(v["outbound"]["claims"][0]["age_ms"].as_i64().unwrap() >= 0);
    assert_eq!(v["outbound"]["tool"]["name"], "Bash");
    assert_eq!(v["undelivered_count"], 2);
    let sources: Vec<&str> = v["undelivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"container") && sources.contains(&"host"),
        "{sources:?}"
    );
    assert!(v["heartbeat"]["age_ms"].as_i64().unwrap() >= 0);
    assert_eq!(v["stuck_decision"]["decision"], "healthy");
    assert_eq!(v["stuck_decision"]["from"], "decide");
    assert_eq!(v["stuck_decision"]["would_retry"][0], "m1");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn an_old_claim_with_no_heartbeat_since_is_reported_as_a_kill() {
    let (_root, paths) = fresh();
    HostSession::open(&paths.dir)
        .inbound()
        .write_message(&NewMessage::chat("m1", "hi"))
        .unwrap();
    // The container claimed m1 five minutes ago; its last heartbeat is ten minutes old.
    let now = SystemClock.now();
    let then = ManualClock::at_millis(now.plus_millis(-5 * 60_000).unix_millis());
    let c = ContainerSession::with_clock(&paths.dir, then.shared()).unwrap();
    c.outbound()
        .ack(&["m1".into()], &AckStatus::Processing)
        .unwrap();
    heartbeat::touch_at(&paths.heartbeat, now.plus_millis(-10 * 60_000)).unwrap();

    let (t, j) = inspect_read_only(&paths.dir);
    assert!(t.status.success(), "{}", text(&t));
    let out = text(&t);
    assert!(out.contains("KILL: message m1 claimed"), "{out}");
    assert!(out.contains("heartbeat: touched 10 min"), "{out}");
    let v = json(&j);
    assert_eq!(v["stuck_decision"]["decision"], "kill");
    assert!(v["stuck_decision"]["reason"]
        .as_str()
        .unwrap()
        .contains("tolerance 60000 ms"));
}

#[test]
fn a_hot_journal_is_reported_not_rolled_back() {
    let (_root, paths) = busy_session();
    leave_hot_journal(&paths.outbound);
    let journal = paths.container_dir.join("outbound.db-journal");
    assert!(journal.exists());

    let (t, j) = inspect_read_only(&paths.dir);
    assert_eq!(t.status.code(), Some(1), "{}", text(&t));
    let out = text(&t);
    assert!(out.contains("outbound.db has a hot journal"), "{out}");
    assert!(out.contains("leaves it as it is"), "{out}");
    // inbound.db is still read.
    assert!(
        out.contains("due now (pending, waking the agent, not scheduled later): 2"),
        "{out}"
    );
    let v = json(&j);
    assert_eq!(v["files"][1]["read"], "nothing");
    assert!(v["files"][1]["journal"].as_str().is_some());
    assert!(v["outbound"].is_null());
    assert!(v["stuck_decision"].is_null());
    assert!(journal.exists(), "the journal is still there");
}

#[test]
fn a_wal_file_is_reported_and_read_as_a_snapshot_without_creating_anything() {
    let (_root, paths) = busy_session();
    {
        let mut c = SqliteConnection::establish(&paths.inbound.to_string_lossy()).unwrap();
        c.batch_execute("PRAGMA journal_mode = WAL;").unwrap();
    }
    assert!(!paths.dir.join("inbound.db-wal").exists());

    let (t, j) = inspect_read_only(&paths.dir);
    assert_eq!(t.status.code(), Some(1), "{}", text(&t));
    let out = text(&t);
    assert!(out.contains("inbound.db is in WAL journal mode"), "{out}");
    assert!(out.contains("sessionbus migrate --session"), "{out}");
    assert!(out.contains("WAL MODE (read as a snapshot)"), "{out}");
    let v = json(&j);
    assert_eq!(v["files"][0]["read"], "snapshot");
    assert_eq!(v["files"][0]["wal_mode"], true);
    assert_eq!(v["inbound"]["due_count"], 2, "the snapshot is still read");
    assert_eq!(v["stuck_decision"]["decision"], "healthy");
    assert!(!paths.dir.join("inbound.db-wal").exists());
    assert!(!paths.dir.join("inbound.db-shm").exists());
}

#[test]
fn a_legacy_file_is_reported_with_the_migrate_command() {
    let (_root, paths) = fresh();
    std::fs::remove_file(&paths.inbound).unwrap();
    legacy::create(
        &paths.inbound,
        FileKind::Inbound,
        3,
        legacy::Style::Created,
        2,
    )
    .unwrap();
    let (t, j) = inspect_read_only(&paths.dir);
    assert_eq!(t.status.code(), Some(1), "{}", text(&t));
    let out = text(&t);
    assert!(out.contains("LEGACY G3 file"), "{out}");
    assert!(out.contains("sessionbus migrate --session"), "{out}");
    let v = json(&j);
    assert_eq!(v["files"][0]["schema"]["state"], "legacy");
    assert_eq!(v["files"][0]["schema"]["legacy_generation"], "G3");
    assert!(v["inbound"].is_null());
}

#[test]
fn a_missing_folder_exits_2_and_a_missing_file_is_a_problem() {
    let root = tempfile::tempdir().unwrap();
    let o = inspect(&root.path().join("nope"), false);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("does not exist"), "{}", text(&o));

    let (_root, paths) = fresh();
    std::fs::remove_file(&paths.outbound).unwrap();
    let (t, _) = inspect_read_only(&paths.dir);
    assert_eq!(t.status.code(), Some(1));
    assert!(text(&t).contains("outbound.db is missing"), "{}", text(&t));
    assert!(!paths.outbound.exists(), "nothing was created");
}

/// Leaves a real hot journal next to `db`: a child process (`sessionbus-test-child write-and-abort`) writes
/// inside a transaction with a tiny page cache, so pages spill, and aborts before COMMIT.
fn leave_hot_journal(db: &Path) {
    let out = sessionbus_testkit::child::command()
        .arg("write-and-abort")
        .arg(db)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child must die mid-transaction");
    assert!(
        sessionbus_schema::error::hot_journal(db).is_some(),
        "no journal left behind"
    );
}

/// Runs inspect on `dir` and returns how long it took (text run), checking it is read-only.
fn timed(dir: &Path) -> (Output, Output, std::time::Duration) {
    let started = std::time::Instant::now();
    let (t, j) = inspect_read_only(dir);
    (t, j, started.elapsed())
}

fn journal_of(p: &Path) -> std::path::PathBuf {
    let mut j = p.as_os_str().to_owned();
    j.push("-journal");
    j.into()
}

#[test]
fn fifos_in_the_containers_area_are_problems_within_milliseconds() {
    for target in ["outbound", "journal", "heartbeat"] {
        let (_root, paths) = busy_session();
        let at = match target {
            "outbound" => paths.outbound.clone(),
            "journal" => journal_of(&paths.outbound),
            _ => paths.heartbeat.clone(),
        };
        let _ = std::fs::remove_file(&at);
        hostile::mkfifo(&at);
        let (t, j, took) = timed(&paths.dir);
        // Two runs of the binary: well under a second each unless something blocked.
        assert!(
            took < std::time::Duration::from_secs(5),
            "{target}: {took:?}"
        );
        assert_eq!(t.status.code(), Some(1), "{target}: {}", text(&t));
        let v = json(&j);
        let problems = v["problems"].to_string();
        assert!(problems.contains("a FIFO"), "{target}: {problems}");
        // inbound.db is still read.
        assert_eq!(v["inbound"]["due_count"], 2, "{target}");
    }
}

#[test]
fn symlinks_in_the_containers_area_are_never_followed() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret.db");
    for target in ["outbound", "journal", "heartbeat"] {
        let (_root, paths) = busy_session();
        // A real database the link points at: following it would read it.
        std::fs::copy(&paths.outbound, &secret).unwrap();
        let at = match target {
            "outbound" => paths.outbound.clone(),
            "journal" => journal_of(&paths.outbound),
            _ => paths.heartbeat.clone(),
        };
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(&secret, &at).unwrap();
        let before = std::fs::read(&secret).unwrap();
        let (t, j, took) = timed(&paths.dir);
        assert!(
            took < std::time::Duration::from_secs(5),
            "{target}: {took:?}"
        );
        assert_eq!(t.status.code(), Some(1), "{target}: {}", text(&t));
        let v = json(&j);
        assert!(
            v["problems"].to_string().contains("a symbolic link"),
            "{target}: {:#}",
            v["problems"]
        );
        if target == "heartbeat" {
            assert!(v["heartbeat"]["mtime"].is_null(), "a link is no heartbeat");
        } else {
            assert!(
                v["outbound"].is_null(),
                "{target}: nothing read through the link"
            );
        }
        assert_eq!(std::fs::read(&secret).unwrap(), before);
    }
}

#[test]
fn a_planted_super_journal_is_reported_and_nothing_is_deleted() {
    let (root, paths) = busy_session();
    let victim = root.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::fs::write(
        journal_of(&paths.outbound),
        hostile::super_journal_naming(&victim),
    )
    .unwrap();
    let (t, _j, took) = timed(&paths.dir);
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    assert_eq!(t.status.code(), Some(1));
    assert!(text(&t).contains("hot journal"), "{}", text(&t));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
}

#[test]
fn a_single_layout_folder_is_inspected_through_the_untrusted_layer() {
    let (_root, paths) = busy_session();
    // Lay the same files out the older host's way: one folder, writable by the container.
    let old = paths.dir.parent().unwrap().join("old");
    std::fs::create_dir(&old).unwrap();
    for (from, to) in [
        (&paths.inbound, "inbound.db"),
        (&paths.outbound, "outbound.db"),
        (&paths.heartbeat, ".heartbeat"),
    ] {
        std::fs::copy(from, old.join(to)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (t, j) = inspect_read_only(&old);
    assert_eq!(t.status.code(), Some(1), "{}", text(&t));
    let out = text(&t);
    assert!(out.contains("layout SINGLE"), "{out}");
    assert!(out.contains("sessionbus migrate --session"), "{out}");
    let v = json(&j);
    assert_eq!(v["layout"], "single");
    assert_eq!(v["files"][0]["untrusted"], true);
    assert_eq!(v["files"][0]["schema"]["state"], "current");
    assert_eq!(v["inbound"]["due_count"], 2);
    assert_eq!(v["outbound"]["claim_count"], 1);
    assert_eq!(
        v["problems"].as_array().unwrap().len(),
        1,
        "{:#}",
        v["problems"]
    );

    // A FIFO in place of inbound.db there is a problem too, at once.
    std::fs::remove_file(old.join("inbound.db")).unwrap();
    hostile::mkfifo(&old.join("inbound.db"));
    let (t, j, took) = timed(&old);
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(t.status.code(), Some(1));
    assert!(json(&j)["problems"].to_string().contains("a FIFO"));
}

#[test]
fn lists_are_capped_and_counts_complete() {
    let (_root, paths) = fresh();
    let host = HostSession::open(&paths.dir);
    let c = ContainerSession::open(&paths.dir).unwrap();
    c.start().unwrap();
    let ids: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    for id in &ids {
        host.inbound()
            .write_message(&NewMessage::chat(id, "x".repeat(500).as_str()))
            .unwrap();
    }
    c.outbound().ack(&ids, &AckStatus::Processing).unwrap();
    let replies: Vec<NewOutbound> = ids
        .iter()
        .take(250)
        .enumerate()
        .map(|(i, id)| {
            let m = host.inbound().message(id).unwrap().unwrap();
            NewOutbound::reply_to(format!("r{i}"), &m, "y")
        })
        .collect();
    c.outbound()
        .commit(&[], &AckStatus::Processing, &replies)
        .unwrap();
    let (t, j) = inspect_read_only(&paths.dir);
    assert!(t.status.code().is_some(), "{}", text(&t));
    let v = json(&j);
    assert_eq!(v["inbound"]["due_count"], 300);
    assert_eq!(v["inbound"]["due"].as_array().unwrap().len(), 20);
    assert_eq!(v["outbound"]["claim_count"], 300);
    assert_eq!(v["outbound"]["claims"].as_array().unwrap().len(), 20);
    assert_eq!(v["undelivered_count"], 250);
    assert_eq!(v["undelivered_count_complete"], true);
    assert_eq!(v["undelivered"].as_array().unwrap().len(), 20);
    let preview = v["inbound"]["due"][0]["text"].as_str().unwrap();
    assert!(preview.chars().count() <= 61, "{preview}");
}
