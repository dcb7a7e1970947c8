//! A thin, safe layer over Linux inotify: one non-blocking descriptor, watches added and
//! removed by path, a bounded wait for readability and a bounded, checked parse of the events
//! read. Nothing here allocates per event or trusts the kernel's buffer layout beyond what it
//! checks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// A file's commit is complete or a new file appeared (see [`super::classify`]).
pub(super) const IN_CLOSE_WRITE: u32 = libc::IN_CLOSE_WRITE;
/// A file was renamed into the folder.
pub(super) const IN_MOVED_TO: u32 = libc::IN_MOVED_TO;
/// A file's contents changed (a commit in progress, or a writer that keeps its file open).
pub(super) const IN_MODIFY: u32 = libc::IN_MODIFY;
/// A name was created in the folder (a journal at the start of a commit, or a new file).
pub(super) const IN_CREATE: u32 = libc::IN_CREATE;
/// A name was removed from the folder (a journal at the end of a commit).
pub(super) const IN_DELETE: u32 = libc::IN_DELETE;
/// The watched object itself was removed.
pub(super) const IN_DELETE_SELF: u32 = libc::IN_DELETE_SELF;
/// The watched object itself was moved.
pub(super) const IN_MOVE_SELF: u32 = libc::IN_MOVE_SELF;
/// The watch was removed (explicitly, or because its object is gone).
pub(super) const IN_IGNORED: u32 = libc::IN_IGNORED;
/// The kernel's event queue overflowed: events were lost.
pub(super) const IN_Q_OVERFLOW: u32 = libc::IN_Q_OVERFLOW;
/// The filesystem holding the watched object was unmounted.
pub(super) const IN_UNMOUNT: u32 = libc::IN_UNMOUNT;

/// Mask of a folder watch: writers open-write-close, and SQLite's DELETE journal is created
/// and deleted around every commit.
pub(super) const DIR_MASK: u32 = IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_MODIFY
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK;

/// Mask of a watch on one file (its inode, seen through any path: a file bind-mounted on its
/// own into a container's folder raises its folder events in the host's folder, not there).
pub(super) const FILE_MASK: u32 =
    IN_CLOSE_WRITE | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF | libc::IN_DONT_FOLLOW;

/// Bytes read per `read(2)`: room for at least 15 events with the longest name (the kernel
/// refuses a buffer smaller than one such event).
pub(super) const READ_BUF: usize = 4096;

/// Size of `struct inotify_event` without its name.
const HEADER: usize = 16;

/// One inotify descriptor (non-blocking, close-on-exec), closed on drop.
#[derive(Debug)]
pub(super) struct Inotify {
    fd: OwnedFd,
}

impl Inotify {
    /// A new instance (fails with `EMFILE` past `fs.inotify.max_user_instances`).
    pub(super) fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes only flags and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just opened and own exclusively.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds (or updates) a watch on `path` and returns its descriptor (fails with `ENOSPC`
    /// past `fs.inotify.max_user_watches`).
    pub(super) fn add(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `c` is a valid NUL-terminated path; the descriptor is ours.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(wd)
        }
    }

    /// Removes a watch. A watch the kernel already dropped (its object is gone) is not an
    /// error.
    pub(super) fn remove(&self, wd: i32) {
        // SAFETY: plain syscall on our descriptor; a stale `wd` yields EINVAL, ignored.
        unsafe {
            libc::inotify_rm_watch(self.fd.as_raw_fd(), wd);
        }
    }

    /// Waits up to `timeout` for events to read. `Ok(false)` on timeout or a signal.
    pub(super) fn ready(&self, timeout: Duration) -> io::Result<bool> {
        // Rounded up: a wait never returns before its time, so callers do not spin.
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128);
        let ms = i32::try_from(ms).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(rc > 0 && pfd.revents & libc::POLLIN != 0)
    }

    /// Reads what is queued into `buf` (at most its length); 0 when nothing is.
    pub(super) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n >= 0 {
                return Ok(usize::try_from(n).unwrap_or(0));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(e),
            }
        }
    }
}

/// One event as read: the watch, what happened, and the name inside a watched folder (empty
/// for an event on the watched object itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Event<'a> {
    /// The watch descriptor (-1 for a queue overflow).
    pub wd: i32,
    /// `IN_*` bits.
    pub mask: u32,
    /// The name, without its NUL padding.
    pub name: &'a [u8],
}

/// The events in `buf` (as filled by one read). A truncated or malformed tail is dropped:
/// the kernel never writes one, and a bad parse must not become an out-of-bounds read.
pub(super) fn events(buf: &[u8]) -> impl Iterator<Item = Event<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let head = buf.get(off..off.checked_add(HEADER)?)?;
        let word = |i: usize| -> Option<[u8; 4]> { head.get(i..i + 4)?.try_into().ok() };
        let wd = i32::from_ne_bytes(word(0)?);
        let mask = u32::from_ne_bytes(word(4)?);
        let len = usize::try_from(u32::from_ne_bytes(word(12)?)).ok()?;
        let start = off + HEADER;
        let raw = buf.get(start..start.checked_add(len)?)?;
        off = start + len;
        let name = match raw.iter().position(|&b| b == 0) {
            Some(end) => raw.get(..end).unwrap_or(raw),
            None => raw,
        };
        Some(Event { wd, mask, name })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(wd: i32, mask: u32, name: &str, pad: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        let len = if name.is_empty() { 0 } else { name.len() + pad };
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        if len > 0 {
            v.extend_from_slice(name.as_bytes());
            v.resize(v.len() + pad, 0);
        }
        v
    }

    #[test]
    fn events_are_parsed_and_a_bad_tail_is_dropped() {
        let mut buf = encode(3, IN_CLOSE_WRITE, "inbound.db", 6);
        buf.extend(encode(4, IN_IGNORED, "", 0));
        let all: Vec<Event> = events(&buf).collect();
        assert_eq!(
            all,
            vec![
                Event {
                    wd: 3,
                    mask: IN_CLOSE_WRITE,
                    name: b"inbound.db"
                },
                Event {
                    wd: 4,
                    mask: IN_IGNORED,
                    name: b""
                },
            ]
        );
        // A header announcing more name than the buffer holds ends the parse.
        let mut bad = encode(5, IN_MODIFY, "x", 3);
        bad.truncate(bad.len() - 1);
        buf.extend(bad);
        assert_eq!(events(&buf).count(), 2);
        // A length near u32::MAX cannot overflow the offset.
        let mut huge = encode(6, IN_MODIFY, "", 0);
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(events(&huge).count(), 0);
        assert_eq!(events(&[1, 2, 3]).count(), 0);
    }
}
