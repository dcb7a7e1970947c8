//! [`FolderWatch`]: one side waiting for the other side's commits to one file.

use super::inotify::{self, Inotify, IN_IGNORED, IN_Q_OVERFLOW, READ_BUF};
use super::{
    after, detect, Change, PollReason, Preference, Target, Wake, WakeError, WakeMode, SETTLE,
};
use sessionbus_schema::Role;
use std::path::Path;
use std::time::{Duration, Instant};

/// Reads of the event queue per wait at most (each [`READ_BUF`] bytes). Whatever is left is
/// read by the next wait, which then returns at once: a flood costs one wake per wait.
const MAX_READS_PER_WAIT: usize = 16;

/// How often a watch that went away (its file replaced, not created yet) is set up again.
const REARM_EVERY: Duration = Duration::from_secs(1);

/// Waits for changes of one file: the folder holding it and the file itself.
///
/// ```
/// use sessionbus_runtime::wake::{FolderWatch, Preference, Wake};
/// use sessionbus_schema::Role;
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir().unwrap();
/// let file = dir.path().join("inbound.db");
/// std::fs::write(&file, b"v1").unwrap();
/// let mut watch = FolderWatch::new(Role::Container, &file, Preference::Auto);
/// println!("waking by {}", watch.mode());
/// std::fs::write(&file, b"v2").unwrap();
/// if !watch.mode().is_polling() {
///     assert_eq!(watch.wait(Duration::from_secs(30)), Wake::Changed);
/// }
/// ```
#[derive(Debug)]
pub struct FolderWatch {
    role: Role,
    target: Target,
    mode: WakeMode,
    armed: Option<Armed>,
    /// When a commit in progress was first seen, not yet followed by its end.
    partial_since: Option<Instant>,
}

#[derive(Debug)]
struct Armed {
    ino: Inotify,
    dir_wd: Option<i32>,
    file_wd: Option<i32>,
    last_rearm: Instant,
    buf: Vec<u8>,
}

impl FolderWatch {
    /// Watches `file` (which need not exist yet; its folder must) for `role`, choosing the
    /// mode with [`detect`]. Never fails: where notification cannot be set up the watch
    /// polls, and [`FolderWatch::mode`] says why.
    pub fn new(role: Role, file: &Path, preference: Preference) -> FolderWatch {
        let target = Target::of(file);
        let mut watch = FolderWatch {
            role,
            mode: detect(role, &target.dir, preference),
            target,
            armed: None,
            partial_since: None,
        };
        if watch.mode == WakeMode::Inotify {
            if let Err(e) = watch.arm() {
                watch.mode = WakeMode::Polling(PollReason::Unavailable(e));
            }
        }
        watch
    }

    /// How this watch learns about changes.
    pub fn mode(&self) -> &WakeMode {
        &self.mode
    }

    /// The followed file.
    pub fn file(&self) -> &Path {
        &self.target.file
    }

    fn arm(&mut self) -> Result<(), WakeError> {
        let ino = Inotify::new().map_err(|e| {
            WakeError::os(
                self.role,
                "create an inotify instance for",
                &self.target.dir,
                &e,
            )
        })?;
        let dir_wd = ino
            .add(&self.target.dir, inotify::DIR_MASK)
            .map_err(|e| WakeError::os(self.role, "watch", &self.target.dir, &e))?;
        // The file may not exist yet: the folder's watch sees it appear.
        let file_wd = ino.add(&self.target.file, inotify::FILE_MASK).ok();
        self.armed = Some(Armed {
            ino,
            dir_wd: Some(dir_wd),
            file_wd,
            last_rearm: Instant::now(),
            buf: vec![0; READ_BUF],
        });
        Ok(())
    }

    /// Gives up notification after an error reading events: the watch polls from now on.
    fn demote(&mut self, e: WakeError) {
        tracing::warn!(
            "{}: change notification off, polling: {e}",
            self.target.file.display()
        );
        self.armed = None;
        self.mode = WakeMode::Polling(PollReason::Unavailable(e));
    }

    /// Waits up to `timeout` for the file to change. Returns [`Wake::Changed`] as soon as a
    /// commit ends (however many events it raised, and whatever else had queued since the
    /// last wait), [`Wake::TimedOut`] when the timeout passes first. A polling watch always
    /// sleeps the whole timeout.
    pub fn wait(&mut self, timeout: Duration) -> Wake {
        let end = after(Instant::now(), timeout);
        loop {
            let now = Instant::now();
            if let Some(since) = self.partial_since {
                if now >= since + SETTLE {
                    self.partial_since = None;
                    return Wake::Changed;
                }
            }
            if now >= end {
                return Wake::TimedOut;
            }
            let until = self
                .partial_since
                .map_or(end, |since| (since + SETTLE).min(end));
            let Some(armed) = self.armed.as_mut() else {
                std::thread::sleep(until - now);
                continue;
            };
            match armed.ino.ready(until - now) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    let e =
                        WakeError::os(self.role, "wait for change events of", &self.target.dir, &e);
                    self.demote(e);
                    continue;
                }
            }
            match self.drain() {
                Ok(Change::Complete) => {
                    self.partial_since = None;
                    return Wake::Changed;
                }
                Ok(Change::Partial) => {
                    self.partial_since.get_or_insert(now);
                }
                Ok(Change::None) => {}
                Err(e) => self.demote(e),
            }
        }
    }

    /// Reads what is queued (at most [`MAX_READS_PER_WAIT`] buffers) and returns the most
    /// that any event said about the file.
    fn drain(&mut self) -> Result<Change, WakeError> {
        let Some(armed) = self.armed.as_mut() else {
            return Ok(Change::None);
        };
        let mut most = Change::None;
        let mut lost_watch = false;
        for _ in 0..MAX_READS_PER_WAIT {
            let n = armed.ino.read(&mut armed.buf).map_err(|e| {
                WakeError::os(self.role, "read change events of", &self.target.dir, &e)
            })?;
            if n == 0 {
                break;
            }
            for ev in inotify::events(armed.buf.get(..n).unwrap_or(&[])) {
                let change = if ev.mask & IN_Q_OVERFLOW != 0 {
                    Change::Complete
                } else if Some(ev.wd) == armed.dir_wd {
                    if ev.mask & IN_IGNORED != 0 {
                        armed.dir_wd = None;
                        lost_watch = true;
                    }
                    self.target.folder_event(ev.mask, ev.name)
                } else if Some(ev.wd) == armed.file_wd {
                    if ev.mask & IN_IGNORED != 0 {
                        armed.file_wd = None;
                        lost_watch = true;
                    }
                    Target::file_event(ev.mask)
                } else {
                    Change::None
                };
                most = most.max(change);
            }
        }
        // The file replaced or created: follow the new inode (at most once a second, so a
        // file that keeps disappearing cannot make this spin).
        let now = Instant::now();
        let due = lost_watch
            || armed.file_wd.is_none()
            || (most == Change::Complete && now.duration_since(armed.last_rearm) >= REARM_EVERY);
        if due {
            armed.last_rearm = now;
            if armed.dir_wd.is_none() {
                armed.dir_wd = armed.ino.add(&self.target.dir, inotify::DIR_MASK).ok();
            }
            // Adding a watch to the inode already watched returns the same descriptor.
            armed.file_wd = armed.ino.add(&self.target.file, inotify::FILE_MASK).ok();
        }
        Ok(most)
    }
}
