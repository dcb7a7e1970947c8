//! `cargo xtask demo`, run as the real binary in a temp working dir (it builds the runtime's
//! examples, provisions `./data/...`, runs a host and a killed-and-restarted container).

use std::path::Path;
use std::time::Duration;

/// Runs `xtask <args>` in `cwd`, failing the test after `timeout`: the exit code and what it
/// printed (stdout, then stderr).
fn xtask_in(cwd: &Path, args: &[&str], timeout: Duration) -> (Option<i32>, String) {
    let run = super::run::xtask(Some(cwd), args, timeout);
    (run.code, format!("{}{}", run.stdout, run.stderr))
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
