//! `cargo xtask test` stops at once, naming what is missing and how to get it, instead of
//! letting tests fail later one by one.

use std::process::Command;

#[test]
fn missing_tools_are_named_with_their_packages_and_nothing_is_installed() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["test", "--no-install"])
        // No tool can be found, apt-get included.
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for (program, package) in [
        ("bwrap", "bubblewrap"),
        ("bindfs", "bindfs"),
        ("fusermount", "fuse"),
    ] {
        assert!(
            err.contains(&format!("{program} (package {package})")),
            "{program} not named: {err}"
        );
    }
    assert!(
        err.contains("install with: apt-get install -y bubblewrap bindfs fuse"),
        "{err}"
    );
    assert!(!err.contains("== building"), "nothing was built: {err}");
}
