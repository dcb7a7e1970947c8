//! End to end: `chat-host` serving several sessions, each container a `chat-container` process
//! started through the runtime's `ChildControl` (or `SandboxControl`: bubblewrap, as uid 1000;
//! the tests run as root), through real files; and the container alone stopping on SIGTERM.

use sessionbus_runtime::{provision, SessionPaths, SystemClock};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST: &str = env!("CARGO_BIN_EXE_chat-host");
const CONTAINER: &str = env!("CARGO_BIN_EXE_chat-container");
/// Generous: the machine may be busy. No test checks how fast anything is.
const LONG: Duration = Duration::from_secs(180);

/// Waits for `child` to exit (killing it after [`LONG`]) and returns its status and output.
fn finish(mut child: Child) -> (std::process::ExitStatus, String, String) {
    let end = Instant::now() + LONG;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("still running after {LONG:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

fn host(data: &std::path::Path, sessions: &str, messages: &[&str]) -> Command {
    let mut cmd = Command::new(HOST);
    cmd.args([
        "--data-dir",
        data.to_str().unwrap(),
        "--container",
        CONTAINER,
    ])
    .args(["--sessions", sessions, "--timeout-secs", "170"])
    .args(messages)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

#[test]
fn the_host_serves_three_sessions_through_real_containers() {
    let data = tempfile::tempdir().unwrap();
    let msgs = [
        "0:hello", "1:abc", "0:world", "2:/clear", "2:xyz", "1:/help",
    ];
    let child = host(data.path(), "3", &msgs)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (status, out, err) = finish(child);
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "s0 <- dlrow (turn 2)",
            "s0 <- olleh (turn 1)",
            "s1 <- cba (turn 1)",
            "s2 <- Session cleared.",
            "s2 <- zyx (turn 1)",
        ],
        "stderr:\n{err}"
    );
    assert!(err.contains("/help is filtered"), "{err}");
    assert!(err.contains("3 container(s) stopped"), "{err}");
}

#[test]
fn the_host_serves_sessions_in_bubblewrap() {
    let data = tempfile::tempdir().unwrap();
    // The sandbox's user must reach the data dir.
    let open = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(data.path(), open).unwrap();
    let msgs = ["--sandbox", "1000:1000", "0:hello", "1:/clear", "1:abc"];
    let child = host(data.path(), "2", &msgs)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let (status, out, err) = finish(child);
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let want = [
        "s0 <- olleh (turn 1)",
        "s1 <- Session cleared.",
        "s1 <- cba (turn 1)",
    ];
    assert_eq!(lines, want, "stderr:\n{err}");
}

#[test]
fn the_host_reads_chat_from_stdin() {
    let data = tempfile::tempdir().unwrap();
    let mut child = host(data.path(), "2", &[])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"1:ping\n\n")
        .unwrap();
    let (status, out, err) = finish(child);
    assert!(status.success(), "{status}\nstderr:\n{err}");
    assert_eq!(out, "s1 <- gnip (turn 1)\n", "stderr:\n{err}");
}

#[test]
fn the_container_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let paths = SessionPaths::in_data_dir(data.path(), "chat", "s0").unwrap();
    provision(&paths, None, &SystemClock).unwrap();
    let child = Command::new(CONTAINER)
        .args(["--workspace", paths.dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + LONG;
    while !paths.heartbeat.exists() {
        assert!(Instant::now() < end, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, _, err) = finish(child);
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("stopped after 0 message(s)"), "{err}");
}
