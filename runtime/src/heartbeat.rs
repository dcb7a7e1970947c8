//! The `.heartbeat` file: the container touches its mtime, the host reads it (docs/format.md
//! §1, §6 and §7). No database write is involved.
//!
//! Every function takes the file's path (inside the container by convention
//! `/workspace/.heartbeat`; see [`heartbeat_path`]), so the same code serves any folder.
//!
//! - [`touch`] / [`touch_at`] (container): set the access and modification times, creating an
//!   empty file when missing. A session folder that is gone is not an error
//!   ([`Touched::FolderGone`]): the host may have removed it while the container winds down.
//! - [`mtime`] / [`age_ms`] (host): the file's mtime, `None` while the file does not exist (a
//!   fresh container that has not touched it yet).
//!
//! ```
//! use sessionbus_runtime::heartbeat::{self, Touched};
//! use sessionbus_schema::Timestamp;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = heartbeat::heartbeat_path(dir.path());
//! assert_eq!(heartbeat::mtime(&path).unwrap(), None);
//!
//! let then = Timestamp::parse("2026-04-21T12:00:00.000Z").unwrap();
//! assert_eq!(heartbeat::touch_at(&path, then).unwrap(), Touched::Created);
//! assert_eq!(heartbeat::mtime(&path).unwrap(), Some(then));
//! assert_eq!(heartbeat::age_ms(&path, then.plus_millis(1500)).unwrap(), Some(1500));
//! ```

use sessionbus_schema::Timestamp;
use std::fs::{File, FileTimes, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The heartbeat file's name inside a session folder.
pub const HEARTBEAT_FILE_NAME: &str = ".heartbeat";

/// The heartbeat file of the session folder `session_dir`.
pub fn heartbeat_path(session_dir: &Path) -> PathBuf {
    session_dir.join(HEARTBEAT_FILE_NAME)
}

/// What [`touch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// The file did not exist; it was created (empty) with the given times.
    Created,
    /// The existing file's times were set.
    Updated,
    /// The folder holding the file does not exist (any more); nothing was done.
    FolderGone,
}

/// A heartbeat file that could not be touched or read. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatError {
    /// A filesystem call failed.
    #[error("{}: cannot {op} heartbeat file: {source}", path.display())]
    Io {
        /// The heartbeat file.
        path: PathBuf,
        /// What was being done: `open`, `create`, `set times of`, `read mtime of`.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A time that one side cannot represent (an mtime outside the timestamp range, or a
    /// timestamp the filesystem's clock type cannot hold).
    #[error("{}: heartbeat time out of range", path.display())]
    OutOfRange {
        /// The heartbeat file.
        path: PathBuf,
    },
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> HeartbeatError + 'a {
    move |source| HeartbeatError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Sets the heartbeat file's times to the system clock's now, creating the file if missing.
pub fn touch(path: &Path) -> Result<Touched, HeartbeatError> {
    touch_system(path, SystemTime::now())
}

/// Sets the heartbeat file's times to `when` (for a controlled clock), creating the file if
/// missing.
pub fn touch_at(path: &Path, when: Timestamp) -> Result<Touched, HeartbeatError> {
    let t = to_system_time(when).ok_or_else(|| HeartbeatError::OutOfRange {
        path: path.to_path_buf(),
    })?;
    touch_system(path, t)
}

fn touch_system(path: &Path, when: SystemTime) -> Result<Touched, HeartbeatError> {
    let times = FileTimes::new().set_accessed(when).set_modified(when);
    // Open-then-create, retried once: another toucher may create the file between the two.
    for _ in 0..2 {
        // Read-only is enough to set explicit times for the file's owner, and works on a file
        // without write permission.
        match File::open(path) {
            Ok(f) => {
                f.set_times(times).map_err(io(path, "set times of"))?;
                return Ok(Touched::Updated);
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(path, "open")(e)),
        }
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => {
                f.set_times(times).map_err(io(path, "set times of"))?;
                return Ok(Touched::Created);
            }
            // The file is still missing, so its folder is: the session is gone.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Touched::FolderGone),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(path, "create")(e)),
        }
    }
    Err(io(path, "create")(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "the file kept appearing and disappearing",
    )))
}

/// The heartbeat file's mtime; `None` when the file (or its folder) does not exist. The name
/// is in the container's folder: it is never followed (a link's own mtime is read) nor opened
/// (a FIFO there cannot block).
pub fn mtime(path: &Path) -> Result<Option<Timestamp>, HeartbeatError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, "read mtime of")(e)),
    };
    let modified = meta.modified().map_err(io(path, "read mtime of"))?;
    from_system_time(modified)
        .map(Some)
        .ok_or_else(|| HeartbeatError::OutOfRange {
            path: path.to_path_buf(),
        })
}

/// Milliseconds from the heartbeat file's mtime to `now`; `None` when the file does not exist.
/// Negative when the mtime is after `now` (clock skew between the two sides).
pub fn age_ms(path: &Path, now: Timestamp) -> Result<Option<i64>, HeartbeatError> {
    Ok(mtime(path)?.map(|m| now.millis_since(m)))
}

/// A system time as a [`Timestamp`] (whole milliseconds, rounded towards the past).
fn from_system_time(t: SystemTime) -> Option<Timestamp> {
    let ms = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).ok()?,
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_millis()).ok()?;
            let partial = i64::from(d.subsec_nanos() % 1_000_000 != 0);
            whole.checked_add(partial)?.checked_neg()?
        }
    };
    Timestamp::from_unix_millis(ms)
}

fn to_system_time(t: Timestamp) -> Option<SystemTime> {
    let ms = t.unix_millis();
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_conversion_round_trips_and_floors() {
        for ms in [0i64, 1, 1_776_773_119_123, -1, -1000, -86_400_001] {
            let ts = Timestamp::from_unix_millis(ms).unwrap();
            let st = to_system_time(ts).unwrap();
            assert_eq!(from_system_time(st), Some(ts), "{ms}");
        }
        // Sub-millisecond parts round towards the past on both sides of the epoch.
        let after = UNIX_EPOCH + Duration::from_micros(1500);
        assert_eq!(from_system_time(after).map(Timestamp::unix_millis), Some(1));
        let before = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(
            from_system_time(before).map(Timestamp::unix_millis),
            Some(-2)
        );
    }

    #[test]
    fn an_unrepresentable_mtime_is_none_not_a_panic() {
        // ~35 million years: a SystemTime can hold it, a Timestamp cannot.
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(1 << 50)) {
            assert_eq!(from_system_time(far), None);
        }
        if let Some(far) = UNIX_EPOCH.checked_sub(Duration::from_secs(1 << 50)) {
            assert_eq!(from_system_time(far), None);
        }
    }

    #[test]
    fn heartbeat_path_is_in_the_folder() {
        assert_eq!(
            heartbeat_path(Path::new("/workspace")),
            Path::new("/workspace/.heartbeat")
        );
    }
}
