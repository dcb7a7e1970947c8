//! `cargo xtask soak`, short and with a fixed seed, as the real binary: a host, containers and a
//! CLI writer as separate processes under every kind of fault (handler panics, handler hangs
//! and poison messages included), then the ledger checked against the files. Longer runs are
//! for people (see docs/reliability.md).

use std::collections::HashMap;
use std::time::Duration;

/// Runs `xtask <args>`, failing the test after `timeout`; returns the exit code, stdout and
/// stderr.
fn xtask(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let run = super::run::xtask(None, args, timeout);
    (run.code, run.stdout, run.stderr)
}

/// The `key=value` fields of the summary line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|w| w.trim_matches(['(', ')']).split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('s').to_string()))
        .collect()
}

#[test]
fn a_short_fixed_seed_soak_loses_duplicates_and_corrupts_nothing_under_every_fault() {
    let (code, stdout, stderr) = xtask(
        &["soak", "--seconds", "20", "--seed", "7"],
        Duration::from_secs(240),
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("soak: seed=7 "))
        .unwrap_or_else(|| panic!("no summary line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let f = fields(line);
    let n = |k: &str| -> u64 {
        f.get(k)
            .unwrap_or_else(|| panic!("no {k}= in {line}"))
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number in {line}"))
    };
    assert_eq!(code, Some(0), "{line}\n{stderr}");
    assert!(
        !line.contains("(not settled)"),
        "the drain did not settle: {line}\n{stderr}"
    );
    for k in [
        "lost",
        "duplicated",
        "corrupt",
        "seq_collisions",
        "parity_breaks",
        "order_breaks",
        "unclear_errors",
        "spurious_kills",
        "isolation_breaks",
        "host_crashes",
        "poison_answered",
        "collateral",
        "handler_hangs_missed",
    ] {
        assert_eq!(n(k), 0, "{k} in {line}\n{stderr}");
    }
    // Every kind of fault actually happened.
    for k in [
        "kill_container",
        "kill_host",
        "kill_writer",
        "clock_jump",
        "hang",
        "disk_full",
        "garbage",
        "handler_panic",
        "handler_hang",
        "poison",
    ] {
        assert!(n(k) > 0, "no {k} fault in {line}");
    }
    if f.get("readonly").map(String::as_str) == Some("n/a") {
        eprintln!("note: read-only mounts are not available here (not root?): {line}");
    } else {
        assert!(n("readonly") > 0, "no readonly fault in {line}");
    }
    assert!(
        n("hangs_killed") > 0,
        "the sweep never killed the hung container: {line}"
    );
    assert!(
        n("handler_hangs_killed") > 0,
        "the sweep never killed a container hung in its handler: {line}"
    );
    // Every poison message ended failed after its last try; the panic-once and hang-once
    // messages are among the answered (none of them may fail: the check counts that as lost).
    assert_eq!(n("poison_failed"), n("poison"), "{line}");
    assert!(
        n("poison_failures") > n("poison"),
        "each poison message fails once per try: {line}"
    );
    assert!(n("panic_once") > 0 && n("hang_once") > 0, "{line}");
    assert!(n("messages") > 50, "too little traffic: {line}");
    assert!(n("answered") > 0, "{line}");
    assert_eq!(
        n("messages"),
        n("answered") + n("failed") + n("context"),
        "every checked message is answered, failed or context: {line}"
    );
}
