// A host session hands out a reader of outbound.db, never its writer.
use sessionbus_store::{HostSession, OutboundWriter};

fn misuse(host: &HostSession) -> &OutboundWriter {
    host.outbound()
}

fn main() {}
