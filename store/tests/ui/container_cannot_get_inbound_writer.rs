// The mirror image: a container session hands out a reader of inbound.db, never its writer.
use sessionbus_store::{ContainerSession, InboundWriter};

fn misuse(container: &ContainerSession) -> &InboundWriter {
    container.inbound()
}

fn main() {}
