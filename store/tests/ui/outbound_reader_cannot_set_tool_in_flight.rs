// The host's view of outbound.db cannot record a tool in flight.
use sessionbus_store::OutboundReader;

fn misuse(reader: &OutboundReader) {
    reader.set_tool_in_flight("Bash", Some(60_000));
}

fn main() {}
