//! `cargo xtask migrate` is the operator's `sessionbus migrate` (the runtime's operator
//! library): the same arguments, report and exit codes. The command's behaviour is tested in
//! depth through the `sessionbus` binary (runtime/tests/it/cli_migrate.rs); this checks that the
//! xtask entry point reaches that code.

use serde_json::Value;
use sessionbus_schema::FileKind;
use sessionbus_store::{Layout, SessionPaths};
use sessionbus_testkit::legacy::{self, SessionStateShape, Style};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn xtask_migrate_converts_migrates_and_leaves_outbound_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("v2-sessions/g/s");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o777)).unwrap();
    legacy::create(
        &s.join("inbound.db"),
        FileKind::Inbound,
        3,
        Style::Created,
        3,
    )
    .unwrap();
    legacy::create_with(
        &s.join("outbound.db"),
        FileKind::Outbound,
        2,
        Style::Created,
        SessionStateShape::Current,
        3,
    )
    .unwrap();
    let outbound = std::fs::read(s.join("outbound.db")).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["migrate", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["converted"], 1, "{r:#}");
    assert_eq!(r["summary"]["migrated"], 1, "{r:#}");
    assert_eq!(r["summary"]["left_to_container"], 1, "{r:#}");
    let split = SessionPaths::for_host(&s);
    assert_eq!(split.layout, Layout::Split);
    assert_eq!(std::fs::read(&split.outbound).unwrap(), outbound);

    let help = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["migrate", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--no-containers-running"), "{text}");
}
