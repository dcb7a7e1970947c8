//! `sessionbus status`, run as the real binary over a data dir holding good, broken and
//! single-layout sessions: one line per session, whatever each holds, and nothing written.

use serde_json::Value;
use sessionbus_schema::{FileKind, SystemClock};
use sessionbus_store::{provision, HostSession, NewMessage, SessionPaths};
use sessionbus_testkit::{hostile, legacy};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn status(data: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionbus"));
    cmd.arg("status").arg("--data-dir").arg(data);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run the sessionbus binary")
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let what = if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            "dir".to_string()
        } else if m.is_file() {
            format!("{:?}", std::fs::read(&p).unwrap())
        } else {
            format!("special {:?}", std::fs::read_link(&p).ok())
        };
        out.insert(p, format!("{what} {:?}", m.modified().unwrap()));
    }
    out
}

fn provisioned(data: &Path, id: &str) -> SessionPaths {
    let p = SessionPaths::new(data.join("v2-sessions/g").join(id));
    provision(&p, None, &SystemClock).unwrap();
    p
}

#[test]
fn status_lists_every_session_good_broken_or_single() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path();

    let good = provisioned(data, "a-good");
    let host = HostSession::open(&good.dir);
    for id in ["m1", "m2"] {
        host.inbound()
            .write_message(&NewMessage::chat(id, "hi"))
            .unwrap();
    }
    std::fs::write(&good.heartbeat, b"").unwrap();

    let broken = provisioned(data, "b-broken");
    std::fs::write(&broken.inbound, b"not a database at all, just words").unwrap();
    std::fs::remove_file(&broken.outbound).unwrap();
    hostile::mkfifo(&broken.outbound);

    let linked = provisioned(data, "c-linked");
    std::fs::remove_file(&linked.outbound).unwrap();
    std::os::unix::fs::symlink(&good.inbound, &linked.outbound).unwrap();
    hostile::mkfifo(&linked.heartbeat);

    let old = data.join("v2-sessions/g/d-single");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o777)).unwrap();
    legacy::create(
        &old.join("inbound.db"),
        FileKind::Inbound,
        3,
        legacy::Style::Created,
        2,
    )
    .unwrap();

    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), data.join("v2-sessions/g/e-link")).unwrap();

    let before = snapshot(data);
    let started = Instant::now();
    let t = status(data, false);
    let j = status(data, true);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(snapshot(data), before, "status wrote something");

    let text = String::from_utf8_lossy(&t.stdout).into_owned();
    assert_eq!(t.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].contains("split  inbound current  pending 2 due 2"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains("(fresh)") && lines[0].ends_with("ok"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("PROBLEM"), "{}", lines[1]);
    assert!(lines[1].contains("outbound.db UNREADABLE"), "{}", lines[1]);
    assert!(lines[3].contains("SINGLE  inbound legacy"), "{}", lines[3]);
    assert!(lines[4].contains("symbolic link"), "{}", lines[4]);

    let rows: Vec<Value> = String::from_utf8_lossy(&j.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["inbound"], "current");
    assert_eq!(rows[0]["pending"], 2);
    assert_eq!(rows[0]["container_file_readable"], true);
    assert_eq!(rows[0]["outbound"], "current");
    assert_eq!(rows[0]["problems"].as_array().unwrap().len(), 0);
    assert_eq!(rows[1]["inbound"], Value::Null);
    assert_eq!(rows[1]["container_file_readable"], false);
    assert!(
        rows[1]["problems"].to_string().contains("a FIFO"),
        "{}",
        rows[1]
    );
    assert_eq!(rows[2]["container_file_readable"], false);
    let p2 = rows[2]["problems"].to_string();
    assert!(
        p2.contains("a symbolic link") && p2.contains("a FIFO"),
        "{p2}"
    );
    assert_eq!(rows[3]["layout"], "single");
    assert_eq!(rows[3]["inbound"], "legacy");
    assert!(rows[4]["layout"].is_null());

    let missing = status(&data.join("nope"), false);
    assert_eq!(missing.status.code(), Some(2));
}
