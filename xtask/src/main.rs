//! `cargo xtask`: parses the command line and dispatches to the command's module.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    xtask::run(xtask::Cli::parse())
}
