// The container's view of inbound.db cannot rewrite the destinations (the host's ACL).
use sessionbus_store::InboundReader;

fn misuse(reader: &InboundReader) {
    reader.replace_destinations(&[]);
}

fn main() {}
