//! # xtask
//!
//! Operator tasks for a sessionbus data dir, run as `cargo xtask <command>` (the workspace's
//! `.cargo/config.toml` aliases `cargo xtask` to `cargo run --package xtask --`).
//!
//! Each command is one module holding its clap arguments, a library-like function that does
//! the work and returns a report (so tests can call it without parsing text), and the code
//! that prints that report. The binary (`src/main.rs`) only parses the command line and
//! dispatches. Commands:
//!
//! - [`migrate`]: `sessionbus migrate` (the runtime's operator library, feature `cli`):
//!   convert single-layout sessions while their containers are stopped, migrate every
//!   `inbound.db`, report every `outbound.db` (its container migrates it);
//! - [`demo`]: a host and an echo container process talking through real files, with a
//!   `kill -9` mid-conversation that the sweep recovers from;
//! - [`inspect`]: `sessionbus inspect`, what one session folder holds right now (read-only);
//! - [`bench`](mod@bench): the library against a raw-SQLite baseline doing the same SQL work, polls
//!   against history size, a sweep of many sessions, a container's memory over a long run.
//! - [`soak`]: a host, containers and a second host-side writer as separate processes under a
//!   random workload and a fault injector (kill -9, clock jumps, full disk, read-only mount,
//!   garbage file), then the ledger checked against the files;
//! - [`test_suite`]: `cargo xtask test`, the README's test command: provides what the suite
//!   needs (root, bubblewrap, bindfs, the older implementation's stand-in) or says what is
//!   missing, then runs `cargo test --workspace`;
//! - [`mountcheck`]: the host on a session folder and the echo container through a bindfs
//!   mount of it, per FUSE cache mode: answered once, lost, duplicated, torn, and the latency
//!   from the host's commit to the container's claim.
//!
//! Further commands are added the same way: a module here and a variant of [`Command`].
#![warn(missing_docs)]

pub mod bench;
pub mod demo;
pub mod mountcheck;
pub mod soak;
pub mod test_suite;

use std::process::ExitCode;

/// `cargo xtask migrate`: the same code as the operator's `sessionbus migrate`.
pub use sessionbus_runtime::operator::migrate;

/// `cargo xtask inspect`: the same code as the operator's `sessionbus inspect`.
pub use sessionbus_runtime::operator::inspect;

/// The command line: `cargo xtask <command> [options]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Operator tasks for sessionbus data dirs",
    version
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command of `cargo xtask`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Convert single-layout sessions to the split layout and migrate every inbound.db
    /// (the same as `sessionbus migrate`).
    Migrate(migrate::MigrateArgs),
    /// Run a host and an echo container through real files, kill the container mid-way,
    /// and show every message answered exactly once.
    Demo(demo::DemoArgs),
    /// Show what a session folder holds right now, without writing anything (the same as
    /// `sessionbus inspect`).
    Inspect(inspect::InspectArgs),
    /// Measure the library against a raw-SQLite baseline doing the same work.
    Bench(Box<bench::BenchArgs>),
    /// Run a host, containers and a CLI writer under random faults; check nothing was lost,
    /// duplicated or corrupted.
    Soak(soak::SoakArgs),
    /// One process of a soak run (started by `soak`).
    #[command(name = "soak-proc", hide = true)]
    SoakProc(soak::proc::ProcArgs),
    /// Run the host on a session folder and the echo container through a FUSE mount of it,
    /// per cache mode; count what was answered once, lost, duplicated or torn.
    Mountcheck(mountcheck::MountcheckArgs),
    /// Check and provide what the test suite needs (root, bubblewrap, bindfs, the older
    /// implementation's stand-in), then run `cargo test --workspace`.
    Test(test_suite::TestArgs),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Migrate(args) => migrate::main(&args),
        Command::Demo(args) => demo::main(&args),
        Command::Inspect(args) => inspect::main(&args),
        Command::Bench(args) => bench::main(&args),
        Command::Soak(args) => soak::main(&args),
        Command::SoakProc(args) => soak::proc::main(&args),
        Command::Mountcheck(args) => mountcheck::main(&args),
        Command::Test(args) => test_suite::main(&args),
    }
}
