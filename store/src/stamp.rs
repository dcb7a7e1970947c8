//! The host's generation stamp for inbound.db: how a container can tell a slow view of the
//! file from a frozen one.
//!
//! Across a mount that caches file contents without ever revalidating them (FUSE
//! `kernel_cache`, virtiofs `cache=always`), the container keeps reading the inbound.db it saw
//! first, forever, and nothing in the file itself can say so: every byte it reads is stale in
//! the same way. So after each commit to inbound.db the host also records the commit outside
//! the file, in a place such a cache does not hold: the **name** of an empty file in
//! [`STAMP_DIR_NAME`] next to inbound.db, `<change counter>.<host unix ms>`. The change
//! counter is SQLite's own (the 4 bytes at offset 24 of the header, bumped by every commit in
//! rollback-journal mode), read back from the host's local file after the commit. Directory
//! listings are not part of a file's cached contents, so the container sees a new name even
//! where it never sees new bytes; it compares the newest stamp with the change counter of
//! the inbound.db it reads through the mount ([`change_counter`]), and a view that stays
//! behind the stamp for far longer than any revalidation delay is frozen (the runtime's
//! `freshness` check turns that into a diagnosis).
//!
//! Stamping is best effort: the commit has already happened, so a failure to stamp is logged
//! and never turns a successful write into an error. Only the host's writes to a real
//! inbound.db are stamped (not the container's outbound.db, not in-memory fixtures).
//! Concurrent host writers each add their stamp and remove the ones their own commit
//! superseded; a stamp is only ever behind the file, never ahead of it, except one left by an
//! earlier file of the same name, which the next host write (and provisioning) removes.

use sessionbus_schema::{DbFile, FileKind, Role};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The folder, next to inbound.db, holding the host's generation stamp.
pub const STAMP_DIR_NAME: &str = ".inbound-generation";

/// One host stamp: inbound.db's change counter after a host commit, and when that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundStamp {
    /// SQLite's file change counter of inbound.db right after the commit.
    pub change_counter: u32,
    /// The host's wall clock then, in Unix milliseconds.
    pub written_at_ms: i64,
}

impl InboundStamp {
    /// The stamp's file name, `<counter>.<unix ms>`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.change_counter, self.written_at_ms)
    }

    /// Parses a stamp file name; `None` for anything else.
    pub fn parse(name: &str) -> Option<InboundStamp> {
        let (c, t) = name.split_once('.')?;
        if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(InboundStamp {
            change_counter: c.parse().ok()?,
            written_at_ms: t.parse().ok()?,
        })
    }
}

/// True when change counter `a` is older than `b` (serial-number order: the counter wraps at
/// 2^32, so "older" means less than 2^31 steps behind).
pub fn counter_behind(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

/// The stamp folder of the session folder holding `inbound`.
pub fn stamp_dir(session_dir: &Path) -> PathBuf {
    session_dir.join(STAMP_DIR_NAME)
}

/// SQLite's file change counter of the database at `path`, read from its header with plain
/// file reads (through whatever caches the path's filesystem keeps). `None` when the file is
/// missing, shorter than a header or not an SQLite database. The file may be the container's:
/// it is opened without following a link or blocking on a FIFO, and must be a regular file.
pub fn change_counter(path: &Path) -> std::io::Result<Option<u32>> {
    use sessionbus_schema::untrusted::fs::{read_regular_prefix, UntrustedFsError};
    let mut buf = [0u8; 28];
    let n = match read_regular_prefix(path, &mut buf) {
        Ok(n) => n,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(UntrustedFsError::Io { source, .. }) => return Err(source),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    if n < buf.len() {
        return Ok(None);
    }
    if &buf[..16] != b"SQLite format 3\0" {
        return Ok(None);
    }
    Ok(Some(u32::from_be_bytes([
        buf[24], buf[25], buf[26], buf[27],
    ])))
}

/// Every stamp in the session folder `session_dir`, in no particular order (empty when there
/// is no stamp folder: an older host, or no host write yet).
pub fn stamps(session_dir: &Path) -> std::io::Result<Vec<InboundStamp>> {
    let dir = stamp_dir(session_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        if let Some(s) = entry?.file_name().to_str().and_then(InboundStamp::parse) {
            out.push(s);
        }
    }
    Ok(out)
}

/// The newest stamp (by change counter) in the session folder `session_dir`.
pub fn newest_stamp(session_dir: &Path) -> std::io::Result<Option<InboundStamp>> {
    Ok(stamps(session_dir)?.into_iter().reduce(|a, b| {
        if counter_behind(a.change_counter, b.change_counter) {
            b
        } else {
            a
        }
    }))
}

/// Removes every stamp of the session folder `session_dir` (provisioning a new inbound.db:
/// stamps of an earlier file must not be compared with the new one's counter).
pub fn clear(session_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(stamp_dir(session_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Called after every successful write transaction on `file` has been committed and its
/// connection closed: stamps host commits to a real inbound.db, ignores everything else.
pub(crate) fn after_commit(file: &DbFile) {
    if file.kind() != FileKind::Inbound || file.role() != Role::Host || !file.is_file() {
        return;
    }
    if let Err(e) = stamp(file.path()) {
        tracing::warn!(
            "{}: cannot write the host's generation stamp in {STAMP_DIR_NAME}/: {e}",
            file.path().display()
        );
    }
}

/// Records inbound.db's current change counter as a stamp next to it, and removes the stamps
/// this one supersedes (older counters) and impossible ones (newer than the file itself: left
/// by an earlier file of the same name).
pub fn stamp(inbound: &Path) -> std::io::Result<()> {
    let session_dir = match inbound.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(mine) = change_counter(inbound)? else {
        return Ok(());
    };
    let dir = stamp_dir(session_dir);
    let existing = stamps(session_dir)?;
    if !existing.iter().any(|s| s.change_counter == mine) {
        std::fs::create_dir_all(&dir)?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let s = InboundStamp {
            change_counter: mine,
            written_at_ms: now_ms,
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(s.file_name()))
        {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    // List first, then read the file's counter: every stamp listed was written after its
    // commit, so the counter read afterwards is at least as new as any genuine stamp.
    let listed = stamps(session_dir)?;
    let current = change_counter(inbound)?.unwrap_or(mine);
    for s in listed {
        let superseded = counter_behind(s.change_counter, mine);
        let impossible = counter_behind(current, s.change_counter);
        if superseded || impossible {
            match std::fs::remove_file(dir.join(s.file_name())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_junk_is_ignored() {
        let s = InboundStamp {
            change_counter: 42,
            written_at_ms: 1_776_773_119_123,
        };
        assert_eq!(s.file_name(), "42.1776773119123");
        assert_eq!(InboundStamp::parse(&s.file_name()), Some(s));
        for junk in [
            "", "42", ".5", "x.5", "42.", "42.x", "-1.5", "+1.5", "42.5.tmp",
        ] {
            assert_eq!(InboundStamp::parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn counters_compare_across_the_wrap() {
        assert!(counter_behind(1, 2));
        assert!(!counter_behind(2, 2));
        assert!(!counter_behind(3, 2));
        assert!(counter_behind(u32::MAX, 0));
        assert!(!counter_behind(0, u32::MAX));
    }
}
