//! `sessionbus`: the operator's command for a sessionbus data dir (`migrate`, `inspect`,
//! `status`). Install it with `cargo install --path runtime --features cli`.

use clap::Parser;
use sessionbus_runtime::operator::{run, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    run(Cli::parse())
}
