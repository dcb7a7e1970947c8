//! `cargo xtask mountcheck`: the host on a session folder, the real `echo_container` through a
//! bindfs mount of it. In the modes that revalidate (`auto_cache`, `direct_io`) every message
//! the host writes at random intervals is answered exactly once, and every reply the container
//! writes through the mount reaches the host intact; under `kernel_cache` the container says
//! its view is frozen. Latencies are reported, never asserted.
//!
//! Without `/dev/fuse` or bindfs these tests fail, saying so.

use sessionbus_testkit::mount::{require_fuse, CacheMode};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use xtask::mountcheck::{run_mode, table, ModeReport, RigOptions};

fn echo() -> &'static PathBuf {
    static ECHO: OnceLock<PathBuf> = OnceLock::new();
    ECHO.get_or_init(|| {
        xtask::demo::build_examples()
            .unwrap_or_else(|e| panic!("building the examples: {e}"))
            .0
    })
}

fn opts(messages: usize, seed: u64) -> RigOptions {
    RigOptions {
        messages,
        max_gap: Duration::from_millis(150),
        seed,
        frozen_after: Duration::from_millis(1500),
        drain: Duration::from_secs(20),
        keep: false,
        sandbox: false,
    }
}

fn check(mode: CacheMode, opts: &RigOptions) -> ModeReport {
    require_fuse();
    let r = run_mode(mode, opts, echo()).unwrap_or_else(|e| panic!("{mode}: {e}"));
    eprint!("{}", table(std::slice::from_ref(&r)));
    r
}

fn assert_exactly_once(r: &ModeReport, n: usize) {
    assert_eq!(r.sent, n, "{r:#?}");
    assert_eq!(r.answered_once, n, "every message answered once: {r:#?}");
    assert_eq!((r.lost, r.duplicated, r.torn), (0, 0, 0), "{r:#?}");
    assert_eq!(r.claimed_twice, 0, "{r:#?}");
    assert_eq!(r.outbound_integrity, "ok", "{r:#?}");
    assert!(r.diagnosis.is_none(), "no frozen view: {r:#?}");
    assert_eq!(
        r.latency.map(|l| l.n),
        Some(n),
        "every claim was logged: {r:#?}"
    );
    assert!(r.ok, "{r:#?}");
}

#[test]
fn auto_cache_every_message_is_answered_exactly_once_across_the_mount() {
    let r = check(CacheMode::AutoCache, &opts(25, 11));
    assert_exactly_once(&r, 25);
}

#[test]
fn direct_io_every_message_is_answered_exactly_once_across_the_mount() {
    let r = check(CacheMode::DirectIo, &opts(25, 12));
    assert_exactly_once(&r, 25);
}

#[test]
fn kernel_cache_the_real_container_reports_a_frozen_view() {
    let r = check(CacheMode::KernelCache, &opts(5, 13));
    let d = r
        .diagnosis
        .as_deref()
        .unwrap_or_else(|| panic!("no frozen-view diagnosis: {r:#?}"));
    for needle in ["frozen", "inbound.db", "kernel_cache", "remount"] {
        assert!(d.contains(needle), "{needle}: {d}");
    }
    assert!(
        r.container_exit.contains("exit status: 1"),
        "the container stopped on its own: {r:#?}"
    );
    assert_eq!((r.duplicated, r.torn), (0, 0), "{r:#?}");
    assert!(r.ok, "{r:#?}");
}

#[test]
fn the_command_prints_one_row_per_mode() {
    require_fuse();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "mountcheck",
            "--messages",
            "4",
            "--max-gap-ms",
            "50",
            "--frozen-after-ms",
            "1500",
            "--seed",
            "3",
            "--container-cmd",
        ])
        .arg(echo())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "sent",
        "answered once",
        "lost",
        "duplicated",
        "torn",
        "p50",
        "p99",
        "max",
        "(seed 3)",
        "frozen view reported",
    ] {
        assert!(stdout.contains(needle), "{needle:?} missing:\n{stdout}");
    }
    for mode in CacheMode::ALL {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(mode.option()))
            .unwrap_or_else(|| panic!("no row for {mode}:\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], "4", "sent: {row}");
        if mode.revalidates() {
            assert_eq!(&cols[2..6], ["4", "0", "0", "0"], "{row}");
            assert!(row.trim_end().ends_with("ok"), "{row}");
        }
    }
}

/// The split layout's container, sandboxed: `inbound.db` is a nested read-only bind of the
/// one file, so the host's rollback journal is not visible to the container's reader while
/// the host commits. Through each revalidating cache mode, every message is still answered
/// exactly once and nothing it reads or writes is torn.
#[test]
fn with_the_hosts_journal_hidden_every_message_is_answered_exactly_once() {
    for (mode, seed) in [(CacheMode::DirectIo, 31), (CacheMode::AutoCache, 37)] {
        let o = RigOptions {
            sandbox: true,
            ..opts(25, seed)
        };
        let r = check(mode, &o);
        assert_exactly_once(&r, 25);
    }
}
