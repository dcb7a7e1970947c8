//! The project commands' tests, the interoperability tests against the older implementation, and the tidy checks.
//!
//! One test binary for the whole crate (linking one binary per file cost more than the
//! tests): each file is a module, named as its tests are filtered (`cargo test -p xtask
//! --test it <module>::`).

mod bench;
mod demo;
mod inspect;
mod migrate;
mod mountcheck;
mod older_peer;
mod run;
mod soak;
mod test_suite;
mod tidy;
