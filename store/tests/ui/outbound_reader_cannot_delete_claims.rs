// The host's view of outbound.db cannot delete claims: that needs `stopped_container` and a
// `NoContainerRunning` proof.
use sessionbus_store::OutboundReader;

fn misuse(reader: &OutboundReader) {
    reader.delete_orphan_claims();
}

fn main() {}
