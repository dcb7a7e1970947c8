//! `cargo xtask test`: the README's test command. It makes sure the machine has what the suite
//! needs, installing it where it can, and then runs `cargo test --workspace`.
//!
//! The suite runs real parts, so it needs more than a compiler:
//!
//! - **root**: the sandbox tests start containers as uid 1000 and the mount tests mount FUSE
//!   folders;
//! - **bubblewrap** (`bwrap`) for the sandbox tests and **bindfs** with `/dev/fuse` for the
//!   tests across a real mount: installed with apt-get when missing (`--no-install` only
//!   checks);
//! - **the older implementation's stand-in** (`peer/`, Node 20 with better-sqlite3 and Bun),
//!   when the checkout has one: `peer/setup.sh` installs its npm packages. It builds
//!   better-sqlite3 from source, which takes minutes, so it runs in the background while cargo
//!   builds the tests, and the tests start once both are done.
//!
//! Whatever cannot be provided stops the command at once with what is missing and how to get
//! it; no test is skipped for want of a tool.

use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

/// Arguments of `cargo xtask test`.
#[derive(Debug, Clone, Args)]
#[command(
    long_about = "Check (and, as root, install with apt-get) what the test suite needs: root, \
bubblewrap, bindfs and /dev/fuse, and the older implementation's stand-in under peer/ (its npm \
packages, built in the background while the tests compile). Then run cargo test --workspace \
with any arguments given after -- (for instance: -- --no-fail-fast -- --test-threads=1).",
    after_help = "Exit status: that of cargo test, or 1 when a requirement is missing."
)]
pub struct TestArgs {
    /// Only check the requirements; install nothing (what is missing stops the run)
    #[arg(long)]
    pub no_install: bool,

    /// Arguments for `cargo test --workspace` (after `--`; a second `--` passes the rest to
    /// the tests, as with cargo: `cargo xtask test -- --no-fail-fast -- --test-threads=1`)
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_args: Vec<String>,
}

/// A system tool the suite needs: the program looked for and the Debian package holding it.
struct Tool {
    program: &'static str,
    package: &'static str,
    why: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        program: "bwrap",
        package: "bubblewrap",
        why: "the hostile-container and sandbox tests run containers in it",
    },
    Tool {
        program: "bindfs",
        package: "bindfs",
        why: "the cross-mount tests see session folders through it",
    },
    Tool {
        program: "fusermount",
        package: "fuse",
        why: "the cross-mount tests unmount with it",
    },
];

/// Runs `cargo xtask test`.
pub fn main(args: &TestArgs) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cargo xtask test: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &TestArgs) -> Result<ExitCode, String> {
    require_root()?;
    provide_tools(args.no_install)?;
    require_fuse_device()?;
    let root = workspace_root();
    let peer = start_peer_setup(&root, args.no_install)?;
    eprintln!("== building the tests");
    let built = cargo_test(&root, &["--no-run"])?;
    let peer_ok = match peer {
        Some(p) => p.wait(),
        None => Ok(()),
    };
    if !built.success() {
        return Ok(ExitCode::FAILURE);
    }
    peer_ok?;
    eprintln!("== cargo test --workspace");
    let extra: Vec<&str> = args.cargo_args.iter().map(String::as_str).collect();
    let status = cargo_test(&root, &extra)?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn require_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    Err(
        "the suite must run as root: the sandbox tests start containers as uid 1000 and the \
         mount tests mount FUSE folders (run `sudo cargo xtask test`, or as root in a CI \
         container started with --device /dev/fuse --cap-add SYS_ADMIN)"
            .into(),
    )
}

/// Installs the missing tools with apt-get (unless `no_install`), then checks again.
fn provide_tools(no_install: bool) -> Result<(), String> {
    let missing: Vec<&Tool> = TOOLS.iter().filter(|t| !on_path(t.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let how = format!("apt-get install -y {}", packages.join(" "));
    let list = || {
        missing
            .iter()
            .map(|t| format!("  {} (package {}): {}", t.program, t.package, t.why))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if no_install || !on_path("apt-get") {
        return Err(format!("missing:\n{}\ninstall with: {how}", list()));
    }
    eprintln!("== installing {}", packages.join(", "));
    let update = Command::new("apt-get").arg("update").status();
    if !update.is_ok_and(|s| s.success()) {
        eprintln!("apt-get update failed; trying the install with the lists there are");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|t| !on_path(t.program))
        .map(|t| t.program)
        .collect();
    if !install.success() || !still.is_empty() {
        return Err(format!(
            "`{how}` did not provide {} ({install}):\n{}",
            still.join(", "),
            list()
        ));
    }
    Ok(())
}

fn require_fuse_device() -> Result<(), String> {
    if Path::new("/dev/fuse").exists() {
        return Ok(());
    }
    Err(
        "/dev/fuse is missing: the mount tests need a FUSE device (in a container: start it \
         with --device /dev/fuse --cap-add SYS_ADMIN)"
            .into(),
    )
}

/// True when `program` is an executable file in a folder of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `peer/setup.sh` running in the background, its output going to a log file.
struct PeerSetup {
    child: Child,
    log: PathBuf,
}

impl PeerSetup {
    /// Waits for the setup; on failure the error holds the end of its log.
    fn wait(mut self) -> Result<(), String> {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for peer/setup.sh: {e}"))?;
        if status.success() {
            eprintln!("== peer/setup.sh done (log: {})", self.log.display());
            return Ok(());
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "peer/setup.sh failed ({status}); the older implementation's stand-in needs Node 20 \
             with its headers (/usr/include/node), npm, make, g++ and python3. Its log ({}) ends:\n{}",
            self.log.display(),
            tail.join("\n")
        ))
    }
}

/// Starts `peer/setup.sh` in the background when the checkout has a peer; with `no_install`
/// only checks that it was installed.
fn start_peer_setup(root: &Path, no_install: bool) -> Result<Option<PeerSetup>, String> {
    let script = root.join("peer/setup.sh");
    if !script.exists() {
        return Ok(None);
    }
    if !on_path("node") || !on_path("npm") {
        return Err(
            "the older implementation's stand-in (peer/) needs Node 20 and npm on PATH \
                    (Debian: apt-get install -y nodejs npm)"
                .into(),
        );
    }
    if no_install {
        let marker = root.join("peer/node_modules/.sessionbus-peer-ready");
        if marker.exists() {
            return Ok(None);
        }
        return Err(format!(
            "the older implementation's stand-in is not installed ({} is missing): run `bash {}`",
            marker.display(),
            script.display()
        ));
    }
    let mut cmd = Command::new("bash");
    cmd.arg(&script);
    let log_dir = root.join("target");
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("creating {}: {e}", log_dir.display()))?;
    let log = log_dir.join("peer-setup.log");
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    eprintln!(
        "== peer/setup.sh in the background (log: {})",
        log.display()
    );
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", script.display()))?;
    Ok(Some(PeerSetup { child, log }))
}

/// `cargo test --workspace <args>` in `root`.
fn cargo_test(root: &Path, args: &[&str]) -> Result<std::process::ExitStatus, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))
}

/// The workspace root (the folder holding this crate).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}
