// The host's view of outbound.db cannot touch the container's session state.
use sessionbus_store::OutboundReader;

fn misuse(reader: &OutboundReader) {
    reader.state_set("continuation:claude", "abc");
}

fn main() {}
