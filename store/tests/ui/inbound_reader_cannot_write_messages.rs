// The container's view of inbound.db has no way to write a message.
use sessionbus_store::{InboundReader, NewMessage};

fn misuse(reader: &InboundReader) {
    reader.write_messages(&[NewMessage::chat("m1", "hello")]);
}

fn main() {}
