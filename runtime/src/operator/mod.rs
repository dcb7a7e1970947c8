//! The operator's tools for a data dir, behind the `cli` feature: what the `sessionbus`
//! binary runs (`sessionbus migrate`, `sessionbus inspect SESSION_DIR`, `sessionbus status`),
//! and what `cargo xtask migrate` / `cargo xtask inspect` call too.
//!
//! Each command is a module with its clap arguments, a function that does the work and
//! returns a typed report (tests call it without parsing text), and a `main` that prints the
//! report as text or JSON and picks the exit code:
//!
//! - [`migrate`]: converts single-layout session folders to the split layout while no
//!   container runs, migrates each `inbound.db`, and reports each `outbound.db` without ever
//!   opening it for writing (its container migrates it on start);
//! - [`inspect`]: what one session folder holds, read-only and bounded;
//! - [`status`]: one line per session of a data dir.
//!
//! The operator runs as root next to containers that may be hostile, so everything a
//! container can write is attacker input here: `outbound.db`, its journal and `.heartbeat`
//! (and, in the single layout, every name in the session folder) are reached only through
//! [`sessionbus_schema::untrusted`] (no link followed, no FIFO blocked on, a read-only VFS
//! that never rolls a journal back), and every read is bounded ([`look`]).

pub mod inspect;
pub mod look;
pub mod migrate;
pub mod running;
pub mod scan;
pub mod status;

use std::io::Write;
use std::process::ExitCode;

/// Exit code when the command could not run at all (bad arguments, no data dir, ...).
pub const EXIT_FATAL: u8 = 2;

/// The command line: `sessionbus <command> [options]`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "sessionbus",
    about = "Operator tools for sessionbus data dirs: migrate, inspect, status",
    version
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command of `sessionbus`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Convert single-layout sessions to the split layout and migrate every inbound.db.
    Migrate(migrate::MigrateArgs),
    /// Show what a session folder holds right now, without writing anything.
    Inspect(inspect::InspectArgs),
    /// One line per session of a data dir: layout, schema, pending work, heartbeat.
    Status(status::StatusArgs),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Migrate(args) => migrate::main(&args),
        Command::Inspect(args) => inspect::main(&args),
        Command::Status(args) => status::main(&args),
    }
}

/// Writes a line to stdout; false when stdout is closed (`| head`), which is not worth a
/// panic.
pub(crate) fn print_stdout(line: &str) -> bool {
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

/// Writes a line to stderr, ignoring a closed stderr.
pub(crate) fn print_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The panic message of a caught panic, for a report entry.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A duration in words: `850 ms`, `12.3 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_ms(ms: i64) -> String {
    if ms < 0 {
        return format!("{} in the future", human_ms(ms.saturating_neg()));
    }
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}
