//! What a compromised container plants, for tests that show the host unharmed by it.
//!
//! Each function writes one attack into a folder the container controls, exactly as a process
//! with the container's write access could: a hot journal whose super-journal field names a
//! file of the host's, a FIFO or a symlink where a file belongs, a view or a virtual table in
//! place of a table the host reads, a generated column, a trigger, a huge row, a million claims.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// SQLite's journal magic (the first 8 bytes of a journal header, and the last 8 of a
/// super-journal record).
pub const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// A rollback journal that SQLite takes for hot (its first byte is not zero) and whose
/// super-journal record names `target`. Rolling it back makes SQLite consider `target` a
/// super-journal and delete it; opening it read-only must never do so.
pub fn super_journal_naming(target: &Path) -> Vec<u8> {
    let name = target.as_os_str().as_bytes();
    let mut j = Vec::with_capacity(512 + name.len() + 16);
    j.extend_from_slice(&JOURNAL_MAGIC);
    // nRec = 0xffffffff, then a header that is wrong in every other field.
    j.extend_from_slice(&[0xff; 4]);
    j.resize(512, 0x5a);
    j.extend_from_slice(name);
    let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
    let cksum = name
        .iter()
        .fold(0u32, |acc, b| acc.wrapping_add(u32::from(*b)));
    j.extend_from_slice(&len.to_be_bytes());
    j.extend_from_slice(&cksum.to_be_bytes());
    j.extend_from_slice(&JOURNAL_MAGIC);
    j
}

/// Creates a FIFO at `path` (a reader that opens it blocking would wait forever).
pub fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: `c` is a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `sql` on the database at `path` as an attacker with write access would: a plain
/// read-write connection, `writable_schema` allowed. Panics on failure (test setup).
pub fn tamper(path: &Path, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut c = diesel::SqliteConnection::establish(&path.to_string_lossy())
        .unwrap_or_else(|e| panic!("open {} to tamper: {e}", path.display()));
    c.batch_execute(sql)
        .unwrap_or_else(|e| panic!("tamper {}: {e}\n{sql}", path.display()));
}
