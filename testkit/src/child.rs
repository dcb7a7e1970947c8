//! The tests' child processes: `sessionbus-test-child`, a program of this crate with one
//! subcommand per role (see its source for the list), found by building it with cargo.
//!
//! Cargo only tells a test the path of its own package's binaries, so this asks cargo to build
//! the program (a no-op when it is up to date) and reads the path from cargo's JSON messages;
//! a custom target dir is respected. The build happens once per test process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The name of the child program.
pub const PROGRAM: &str = "sessionbus-test-child";

/// A command that runs the child program; add the subcommand and its arguments.
///
/// # Panics
///
/// When cargo cannot build the program: a test cannot go on without its child.
pub fn command() -> Command {
    Command::new(program())
}

/// The path of the built child program.
///
/// # Panics
///
/// When cargo cannot build the program.
pub fn program() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(|| built_executable("sessionbus-testkit", &["--bin", PROGRAM], PROGRAM))
    {
        Ok(p) => p.clone(),
        Err(e) => panic!("building {PROGRAM}: {e}"),
    }
}

/// Builds `target_args` (for instance `["--example", "host"]`) of `package` with cargo and
/// returns the executable named `name` from cargo's JSON messages.
pub fn built_executable(
    package: &str,
    target_args: &[&str],
    name: &str,
) -> Result<PathBuf, String> {
    let mut found = built_executables(package, target_args, &[name])?;
    found
        .remove(name)
        .ok_or_else(|| format!("cargo built no executable named {name}"))
}

/// Builds `target_args` of `package` with cargo in one run (for instance
/// `["--example", "echo_container", "--example", "host"]`) and returns the executable of each
/// of `names`, as cargo's JSON messages report it (so a custom target dir is respected); an
/// error names the first one cargo did not report.
pub fn built_executables(
    package: &str,
    target_args: &[&str],
    names: &[&str],
) -> Result<BTreeMap<String, PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "-p", package])
        .args(target_args)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {package} {target_args:?} failed: {}",
            out.status
        ));
    }
    let mut found = BTreeMap::new();
    for v in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
    {
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            if names.contains(&name) {
                found.insert(name.to_string(), PathBuf::from(exe));
            }
        }
    }
    match names.iter().find(|n| !found.contains_key(**n)) {
        Some(missing) => Err(format!("cargo built no executable named {missing}")),
        None => Ok(found),
    }
}
