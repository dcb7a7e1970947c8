//! The store's integration tests on real files.
//!
//! One test binary for most of the crate (linking one binary per file cost more than the
//! tests): each file is a module (`cargo test -p sessionbus-store --test it <module>::`).
//! `compile_fail`, `concurrency` and `invariants` stay binaries of their own: two re-run
//! their binary as a child process, one compiles programs that must fail.

mod attachments;
mod container_ops;
mod convert;
mod field;
mod host_ops;
mod older_host_files;
mod query_plans;
mod seq_props;
mod stamp;
