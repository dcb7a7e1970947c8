//! `cargo xtask demo`, run as the real binary in a temp working dir (it builds the runtime's
//! examples, provisions `./data/...`, runs a host and a killed-and-restarted container).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `xtask <args>` in `cwd`, failing the test after `timeout`.
fn xtask_in(cwd: &Path, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the xtask binary");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xtask {args:?} timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!("{}{}", out.join().unwrap(), err.join().unwrap());
    (status.code(), text)
}

#[test]
fn the_demo_answers_every_message_exactly_once_across_a_kill() {
    let cwd = tempfile::tempdir().unwrap();
    // Generous: the first run may have to build the examples.
    let (code, out) = xtask_in(cwd.path(), &["demo"], Duration::from_secs(300));
    assert_eq!(code, Some(0), "{out}");
    for needle in [
        "/data/v2-sessions/demo/demo-",
        "the container runs in a bubblewrap sandbox as uid",
        "host writes message seq 2: \"hello\"",
        "host drops \"/help\"",
        "host denies \"/cost\"",
        "reply seq 3, in reply to seq 2: \"echo: hello\"",
        "\"Session cleared.\"",
        "3. killing container pid ",
        "4. the host's next sweep",
        "retried:",
        "replies (seq, in reply to, text)",
        "answered once: 6, lost 0, duplicated 0",
        "killed with kill -9: 1",
        "claims retried by the sweep: 1",
        "every written message is `completed` in inbound.db",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }

    // The session it left behind is consistent, and inspect says so.
    let groups = cwd.path().join("data/v2-sessions/demo");
    let sessions: Vec<_> = std::fs::read_dir(&groups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (code, report) = xtask_in(
        cwd.path(),
        &["inspect", &sessions[0].to_string_lossy()],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("messages by status: completed 5, failed 0, paused 0, pending 0"),
        "{report}"
    );
    assert!(report.contains("undelivered replies: 0"), "{report}");
    assert!(
        report.contains("claimed now (processing acks): 0"),
        "{report}"
    );
}
