//! Role separation is a property of the types: each UI test below tries one forbidden operation
//! and must fail to compile with the error recorded next to it in `tests/ui/*.stderr`.
//!
//! - `InboundReader` (the container's view of inbound.db) cannot write messages, replace the
//!   destinations, set routing, record a delivery, or write a host reply;
//! - `OutboundReader` (the host's view of outbound.db) cannot ack, write an outbound message,
//!   set session state, set a tool in flight, or delete claims;
//! - a `HostSession` cannot hand out (nor build) an `OutboundWriter`, a `ContainerSession`
//!   cannot hand out an `InboundWriter`;
//! - the host's reader of outbound.db cannot be turned into a writer through its `DbFile`
//!   (`host.outbound().file().open_writer(..)` does not compile: the file is not handed out).
//!
//! The snapshots are tied to the one toolchain of this machine (rustc 1.95). Regenerate them
//! with `TRYBUILD=overwrite cargo test -p sessionbus-store --test compile_fail` after a
//! deliberate change, and read the diff: each must still say "no method" / "private" /
//! "mismatched types" for the operation its file names.

#[test]
fn reader_types_have_no_write_methods() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
