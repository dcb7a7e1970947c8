//! `cargo xtask inspect` is the operator's `sessionbus inspect` (the runtime's operator
//! library). Its behaviour is tested in depth through the `sessionbus` binary
//! (runtime/tests/it/cli_inspect.rs); this checks that the xtask entry point reaches that code.

use serde_json::Value;
use sessionbus_schema::SystemClock;
use sessionbus_store::{provision, SessionPaths};
use std::process::Command;

#[test]
fn xtask_inspect_reports_a_provisioned_session() {
    let root = tempfile::tempdir().unwrap();
    let paths = SessionPaths::new(root.path().join("v2-sessions/g/s"));
    provision(&paths, None, &SystemClock).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["inspect", "--json"])
        .arg(&paths.dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layout"], "split");
    assert_eq!(v["files"][1]["untrusted"], true);
    assert_eq!(v["files"][1]["schema"]["state"], "current");
    assert_eq!(v["stuck_decision"]["decision"], "healthy");
}
