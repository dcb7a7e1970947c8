//! The runtime's integration tests: real files, real processes, real sandboxes and mounts.
//!
//! One test binary for the whole crate (linking one binary per file cost more than the
//! tests): each file is a module, named as its tests are filtered (`cargo test -p sessionbus-runtime
//! --test it <module>::`).

#[cfg(feature = "cli")]
mod cli_inspect;
#[cfg(feature = "cli")]
mod cli_migrate;
#[cfg(feature = "cli")]
mod cli_status;
mod config_file;
mod examples_e2e;
mod handler_failures;
mod heartbeat_file;
mod host_rules;
mod hostile;
mod loop_sweep;
mod mount;
mod mount_plan;
mod mount_sandbox;
mod mount_security;
mod skills_sync;
mod sweep_frozen_commit;
#[cfg(feature = "tokio")]
mod tokio_host;
mod wake;
