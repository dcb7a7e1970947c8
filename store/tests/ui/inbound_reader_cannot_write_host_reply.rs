// The container's view of inbound.db cannot forge a host-originated reply.
use sessionbus_store::{InboundReader, NewHostReply};

fn misuse(reader: &InboundReader, reply: &NewHostReply) {
    reader.write_host_reply(reply);
}

fn main() {}
