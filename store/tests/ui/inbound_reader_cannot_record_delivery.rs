// The container's view of inbound.db cannot mark its own replies delivered.
use sessionbus_store::{DeliveryOutcome, InboundReader};

fn misuse(reader: &InboundReader) {
    reader.record_delivery("r1", &DeliveryOutcome::Failed);
}

fn main() {}
