// The host's view of outbound.db cannot write an outbound message (upstream's denial-reply bug).
use sessionbus_store::{NewOutbound, OutboundReader};

fn misuse(reader: &OutboundReader) {
    reader.write(&NewOutbound::chat("r1", "Permission denied"));
}

fn main() {}
