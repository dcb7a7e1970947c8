// The host's view of outbound.db cannot ack a message on the container's behalf.
use sessionbus_store::{AckStatus, OutboundReader};

fn misuse(reader: &OutboundReader) {
    reader.ack(&["m1".to_string()], &AckStatus::Completed);
}

fn main() {}
