// The container's view of inbound.db cannot change the default reply address.
use sessionbus_store::{InboundReader, Routing};

fn misuse(reader: &InboundReader) {
    reader.set_routing(&Routing::default());
}

fn main() {}
