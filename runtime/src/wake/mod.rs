//! Waiting for "the other side may have written this file": change notification where the
//! filesystem delivers it, polling where it does not, chosen per folder and reported.
//!
//! Both sides follow the other's database file. A writer opens, writes and closes it, and
//! SQLite's DELETE journal is created and deleted around every commit, so a watch on the
//! folder holding the file sees each commit as `IN_CREATE` (journal), `IN_MODIFY`,
//! `IN_DELETE` (journal) and `IN_CLOSE_WRITE` (the file). The watchers here turn that into
//! one wake per commit:
//!
//! - the journal's deletion, the file's close after writing, and a file renamed or created in
//!   its place are **complete** changes: a waiter wakes at once;
//! - the journal's creation and `IN_MODIFY` are a commit **in progress**: a waiter wakes only
//!   if nothing completes it within [`SETTLE`] (a writer that keeps its file open is still
//!   noticed, a reader is not sent into a writer's lock);
//! - events on other names in the folder (the heartbeat, the container's own files) are read
//!   and dropped.
//!
//! Every wait has a timeout, and the caller polls when it passes, exactly as it did before
//! this module: notification only ever shortens a wait. Where notification cannot be
//! trusted the watcher does not try (see [`WakeMode`]):
//!
//! | folder on | mode |
//! |---|---|
//! | ext4, xfs, btrfs, tmpfs, overlayfs... also through a Linux bind mount (same inodes) | [`WakeMode::Inotify`] |
//! | FUSE (bindfs, virtiofs, Docker Desktop's file sharing), NFS, 9p, SMB, cluster filesystems | [`WakeMode::Polling`] ([`PollReason::RemoteFilesystem`]) |
//! | a filesystem type this module does not know | polling ([`PollReason::UnknownFilesystem`]) |
//! | inotify refused (`fs.inotify.max_user_instances` / `max_user_watches` reached) | polling ([`PollReason::Unavailable`]) |
//! | `SESSIONBUS_WAKE=poll` in the environment, or [`Preference::Poll`] | polling ([`PollReason::Requested`]) |
//!
//! The two watchers:
//!
//! - [`FolderWatch`] (the container): one file, its folder and the file's own inode (a file
//!   bind-mounted on its own, as the sandbox mounts inbound.db, raises its folder events in the
//!   host's folder, so only the inode watch sees the host's commits there);
//! - [`WatchSet`] (the host): one inotify descriptor with one folder watch per session, built
//!   for containers that may be hostile: every read is bounded, events are coalesced into one
//!   mark per session, a session is reported at most once per
//!   [`WatchSetOptions::min_interval`] (after a short [`WatchSetOptions::burst`]), and a session whose folder raises more than
//!   [`WatchSetOptions::flood_events`] events in a window loses its watch for
//!   [`WatchSetOptions::flood_cooldown`] ([`PollReason::Flooded`]): its flood then costs the
//!   host nothing at all, and the session is served by the periodic full pass like a polled one.

mod folder;
mod inotify;
mod poll;
mod set;

pub use folder::FolderWatch;
pub use set::{Ready, WatchSet, WatchSetOptions};

use sessionbus_schema::Role;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a commit in progress (a journal created, a file modified) may go without a
/// completing event before a waiter wakes anyway.
pub const SETTLE: Duration = Duration::from_millis(20);

/// The environment variable that turns notification off (`poll`); anything else, or its
/// absence, means [`Preference::Auto`].
pub const WAKE_ENV: &str = "SESSIONBUS_WAKE";

/// What a watcher should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    /// Notification where the filesystem delivers it, polling elsewhere.
    #[default]
    Auto,
    /// Polling only ([`PollReason::Requested`]).
    Poll,
}

impl Preference {
    /// [`Preference::Poll`] when [`WAKE_ENV`] is `poll`, else [`Preference::Auto`].
    pub fn from_env() -> Preference {
        match std::env::var_os(WAKE_ENV) {
            Some(v) if v.eq_ignore_ascii_case("poll") => Preference::Poll,
            _ => Preference::Auto,
        }
    }
}

/// How a watcher learns about changes: what a host or container logs at start, and what a
/// test asserts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeMode {
    /// Linux inotify on the folder (and the file): a commit wakes the waiter at once.
    Inotify,
    /// No notification: a wait lasts its whole timeout, and the caller polls after it.
    Polling(PollReason),
}

impl WakeMode {
    /// True for [`WakeMode::Polling`].
    pub fn is_polling(&self) -> bool {
        matches!(self, WakeMode::Polling(_))
    }

    /// A short stable name: `inotify` or `polling`.
    pub fn name(&self) -> &'static str {
        match self {
            WakeMode::Inotify => "inotify",
            WakeMode::Polling(_) => "polling",
        }
    }
}

impl fmt::Display for WakeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WakeMode::Inotify => f.write_str("inotify"),
            WakeMode::Polling(reason) => write!(f, "polling ({reason})"),
        }
    }
}

/// Why a watcher polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollReason {
    /// The folder is on a filesystem where the other side's writes raise no local events.
    RemoteFilesystem {
        /// `statfs` `f_type`.
        magic: i64,
        /// The filesystem's usual name.
        name: &'static str,
    },
    /// The folder's filesystem type is not known to deliver events.
    UnknownFilesystem {
        /// `statfs` `f_type`.
        magic: i64,
    },
    /// inotify could not be used (instance or watch limit, the folder missing, ...).
    Unavailable(WakeError),
    /// The folder raised more events than [`WatchSetOptions::flood_events`] in a window: its
    /// watch is dropped until the cool-down has passed.
    Flooded,
    /// The caller or [`WAKE_ENV`] asked for polling.
    Requested,
}

impl fmt::Display for PollReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollReason::RemoteFilesystem { magic, name } => {
                write!(
                    f,
                    "{name} filesystem (type {magic:#x}) delivers no events for remote writers"
                )
            }
            PollReason::UnknownFilesystem { magic } => {
                write!(
                    f,
                    "filesystem type {magic:#x} is not known to deliver events"
                )
            }
            PollReason::Unavailable(e) => write!(f, "{e}"),
            PollReason::Flooded => f.write_str("too many events; watch dropped for a while"),
            PollReason::Requested => write!(f, "requested ({WAKE_ENV}=poll or by the caller)"),
        }
    }
}

/// Why notification could not be set up for a file: the role, what was being done, the path
/// and the system's error number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WakeError {
    /// A system call failed.
    #[error("{role}: cannot {op} {}: {}", path.display(), std::io::Error::from_raw_os_error(*errno))]
    Os {
        /// Who was setting up the watch.
        role: Role,
        /// What was being done (`create an inotify instance for`, `watch`, ...).
        op: &'static str,
        /// The folder or file.
        path: PathBuf,
        /// `errno`.
        errno: i32,
    },
}

impl WakeError {
    fn os(role: Role, op: &'static str, path: &Path, e: &std::io::Error) -> WakeError {
        WakeError::Os {
            role,
            op,
            path: path.to_path_buf(),
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// What one wait of a [`FolderWatch`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The file may have changed (one wake for however many events had arrived).
    Changed,
    /// The timeout passed without a change being reported.
    TimedOut,
}

/// Decides the mode for the folder `dir` without watching anything: polling when the
/// preference asks for it or the filesystem cannot deliver events, else inotify.
pub fn detect(role: Role, dir: &Path, preference: Preference) -> WakeMode {
    if preference == Preference::Poll {
        return WakeMode::Polling(PollReason::Requested);
    }
    match poll::fs_kind(role, dir) {
        Ok(kind) => kind
            .poll_reason()
            .map_or(WakeMode::Inotify, WakeMode::Polling),
        Err(e) => WakeMode::Polling(PollReason::Unavailable(e)),
    }
}

/// `t + d`, or a time far enough ahead to mean "never" when that cannot be represented (a
/// caller's `Duration::MAX`): no wait or option can make this module panic.
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}

/// How much an event says about a followed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// Not about the file.
    None,
    /// A commit in progress.
    Partial,
    /// A commit finished, or the file was replaced.
    Complete,
}

/// A followed database file: its folder, its name and its journal's name.
#[derive(Debug, Clone)]
struct Target {
    dir: PathBuf,
    file: PathBuf,
    name: OsString,
    journal: OsString,
}

impl Target {
    /// The target for `file`; its folder is `.` when the path has none.
    fn of(file: &Path) -> Target {
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = file.file_name().unwrap_or(OsStr::new("")).to_os_string();
        let mut journal = name.clone();
        journal.push("-journal");
        Target {
            dir,
            file: file.to_path_buf(),
            name,
            journal,
        }
    }

    /// What an event of the folder's watch says about the file.
    fn folder_event(&self, mask: u32, name: &[u8]) -> Change {
        use inotify::*;
        use std::os::unix::ffi::OsStrExt;
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) != 0 {
            return Change::Complete;
        }
        let journal = name == self.journal.as_bytes();
        if !journal && name != self.name.as_bytes() {
            return Change::None;
        }
        if mask & (IN_MOVED_TO | IN_DELETE) != 0 {
            Change::Complete
        } else if mask & (IN_CLOSE_WRITE | IN_CREATE) != 0 {
            if journal {
                Change::Partial
            } else {
                Change::Complete
            }
        } else if mask & IN_MODIFY != 0 {
            Change::Partial
        } else {
            Change::None
        }
    }

    /// What an event of the file's own watch says.
    fn file_event(mask: u32) -> Change {
        use inotify::*;
        if mask & (IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) != 0 {
            Change::Complete
        } else if mask & IN_MODIFY != 0 {
            Change::Partial
        } else {
            Change::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::inotify::*;
    use super::*;

    #[test]
    fn a_commit_is_complete_only_when_it_ends() {
        let t = Target::of(Path::new("/s/inbound.db"));
        assert_eq!(t.dir, Path::new("/s"));
        let j = b"inbound.db-journal";
        let f = b"inbound.db";
        assert_eq!(t.folder_event(IN_CREATE, j), Change::Partial);
        assert_eq!(t.folder_event(IN_MODIFY, j), Change::Partial);
        assert_eq!(t.folder_event(IN_CLOSE_WRITE, j), Change::Partial);
        assert_eq!(t.folder_event(IN_MODIFY, f), Change::Partial);
        assert_eq!(t.folder_event(IN_DELETE, j), Change::Complete);
        assert_eq!(t.folder_event(IN_CLOSE_WRITE, f), Change::Complete);
        assert_eq!(t.folder_event(IN_MOVED_TO, f), Change::Complete);
        assert_eq!(t.folder_event(IN_CREATE, f), Change::Complete);
        // Other names in the folder are nobody's business.
        assert_eq!(t.folder_event(IN_CLOSE_WRITE, b".heartbeat"), Change::None);
        assert_eq!(
            t.folder_event(IN_DELETE, b"outbound.db-journal"),
            Change::None
        );
        assert_eq!(t.folder_event(IN_CLOSE_WRITE, b"inbound.dbx"), Change::None);
        assert_eq!(t.folder_event(IN_DELETE_SELF, b""), Change::Complete);
        assert_eq!(Target::file_event(IN_CLOSE_WRITE), Change::Complete);
        assert_eq!(Target::file_event(IN_MODIFY), Change::Partial);
        assert_eq!(Target::file_event(IN_IGNORED), Change::None);
    }

    #[test]
    fn a_duration_past_what_an_instant_holds_means_never() {
        let now = Instant::now();
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(86_400));
        assert_eq!(
            after(now, Duration::from_millis(5)),
            now + Duration::from_millis(5)
        );
        let mut set: WatchSet<u8> = WatchSet::new(
            WatchSetOptions::default()
                .with_full_pass_every(Duration::MAX)
                .with_min_interval(Duration::MAX),
        );
        assert_eq!(set.wait(Duration::ZERO), Ready::FullPass);
        assert_eq!(set.wait(Duration::from_millis(10)), Ready::Nothing);
    }

    #[test]
    fn modes_print_their_reason() {
        assert_eq!(WakeMode::Inotify.to_string(), "inotify");
        let m = WakeMode::Polling(PollReason::RemoteFilesystem {
            magic: 0x6969,
            name: "nfs",
        });
        assert!(m.is_polling());
        assert_eq!(m.name(), "polling");
        assert!(m.to_string().contains("nfs"), "{m}");
        let e = WakeError::Os {
            role: Role::Host,
            op: "watch",
            path: PathBuf::from("/x"),
            errno: libc::ENOSPC,
        };
        let text = PollReason::Unavailable(e).to_string();
        assert!(text.starts_with("host: cannot watch /x: "), "{text}");
        assert_eq!(
            detect(Role::Host, Path::new("/"), Preference::Poll),
            WakeMode::Polling(PollReason::Requested)
        );
    }
}
