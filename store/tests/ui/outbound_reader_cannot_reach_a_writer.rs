// The host's reader of outbound.db does not hand out its file, so no writer connection to the
// container's file can be opened through it.
use sessionbus_store::HostSession;

fn misuse(host: &HostSession) {
    let _ = host.outbound().file().open_writer("write the container's file");
}

fn main() {}
