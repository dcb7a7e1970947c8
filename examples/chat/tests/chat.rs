//! End to end: `chat-host` serving several sessions, each container a `chat-container` process
//! started through the runtime's `ChildControl` or `SandboxControl` (bubblewrap, as uid 1000:
//! the tests run as root), through real files; and the container alone stopping on SIGTERM.

use sessionbus_runtime::{provision, SessionPaths, SystemClock};
use std::fs::Permissions;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const HOST: &str = env!("CARGO_BIN_EXE_chat-host");
const CONTAINER: &str = env!("CARGO_BIN_EXE_chat-container");
/// Generous: the machine may be busy. No test checks how fast anything is.
const LONG: Duration = Duration::from_secs(180);

/// Waits for `child` to exit (killing it after [`LONG`]); its status, stdout and stderr.
fn finish(mut child: Child) -> (ExitStatus, String, String) {
    let end = Instant::now() + LONG;
    let status = loop {
        match child.try_wait().unwrap() {
            Some(status) => break status,
            None if Instant::now() > end => {
                let _ = child.kill();
                panic!("still running after {LONG:?}");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    (status, out, err)
}

/// Runs `chat-host` over a new data dir with `args` (split at spaces), `input` on stdin; its
/// sorted stdout lines and stderr, once it exited 0.
fn chat(args: &str, input: &str) -> (Vec<String>, String) {
    let data = tempfile::tempdir().unwrap();
    // A sandboxed container's user must reach the data dir.
    std::fs::set_permissions(data.path(), Permissions::from_mode(0o755)).unwrap();
    let dir = data.path().to_str().unwrap();
    let mut child = Command::new(HOST)
        .args([
            "--data-dir",
            dir,
            "--container",
            CONTAINER,
            "--timeout-secs",
            "170",
        ])
        .args(args.split(' '))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let (status, out, err) = finish(child);
    assert!(status.success(), "{status}\nstdout:\n{out}\nstderr:\n{err}");
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    (lines, err)
}

#[test]
fn the_host_serves_three_sessions_through_child_processes() {
    let args = "--sessions 3 0:hello 1:abc 0:world 2:/clear 2:xyz 1:/help";
    let (lines, err) = chat(args, "");
    let want = "s0 <- dlrow (turn 2)|s0 <- olleh (turn 1)|s1 <- cba (turn 1)|\
                s2 <- Session cleared.|s2 <- zyx (turn 1)";
    assert_eq!(lines.join("|"), want, "stderr:\n{err}");
    assert!(err.contains("/help is filtered"), "{err}");
    assert!(err.contains("3 container(s) stopped"), "{err}");
}

#[test]
fn the_host_serves_sessions_in_bubblewrap_with_chat_from_stdin() {
    let input = "0:hi\n1:/clear\n1:abc\n";
    let (lines, err) = chat("--sessions 2 --sandbox 1000:1000", input);
    let want = "s0 <- ih (turn 1)|s1 <- Session cleared.|s1 <- cba (turn 1)";
    assert_eq!(lines.join("|"), want, "stderr:\n{err}");
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
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, _, err) = finish(child);
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("stopped after 0 message(s)"), "{err}");
}
