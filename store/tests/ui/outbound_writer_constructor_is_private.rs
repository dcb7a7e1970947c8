// Nor can the host build an OutboundWriter itself from the reader's file.
use sessionbus_store::{HostSession, InboundReader, OutboundWriter, SystemClock};
use std::sync::Arc;

fn misuse(host: &HostSession, inbound: InboundReader) {
    let file = host.outbound().file().clone();
    OutboundWriter::new(file, inbound, Arc::new(SystemClock));
}

fn main() {}
