//! `embed_migrations!` reads the migration folders at compile time but cannot tell cargo to
//! rebuild when a new migration folder appears; this does (diesel's documented recipe).
fn main() {
    println!("cargo:rerun-if-changed=migrations/inbound");
    println!("cargo:rerun-if-changed=migrations/outbound");
}
