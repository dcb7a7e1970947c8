//! The schema's integration tests: legacy adoption, plans, versions, paths and the untrusted layer.
//!
//! One test binary for most of the crate (linking one binary per file cost more than the
//! tests): each file is a module (`cargo test -p sessionbus-schema --test it <module>::`).
//! `file_errors` stays a binary of its own: it re-runs its binary as a child process.

mod atomicity;
mod bundled_sqlite;
#[path = "../common/mod.rs"]
mod common;
mod legacy_adoption;
mod paths;
mod plan;
mod table_definitions;
mod untrusted;
mod version_checks;
