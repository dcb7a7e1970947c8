//! The soak's clock: the system clock plus an offset the driver moves (forward and back) by
//! rewriting one file. The host, the host CLI writer and every container read the same file,
//! so a jump reaches both sides of the mount within a few milliseconds, as an NTP step on the
//! one kernel they share would.

use sessionbus_store::{Clock, Timestamp};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The offset file's name in the run folder (milliseconds, as decimal text).
pub const OFFSET_FILE: &str = "clock-offset-ms";

/// How often each process re-reads the offset file.
const REFRESH: Duration = Duration::from_millis(20);

/// Milliseconds since the epoch on the system clock.
pub fn real_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads the offset file (0 when missing or unreadable).
pub fn read_offset(run: &Path) -> i64 {
    std::fs::read_to_string(run.join(OFFSET_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Writes the offset file atomically (write, then rename over).
pub fn write_offset(run: &Path, offset_ms: i64) -> std::io::Result<()> {
    let tmp = run.join(format!("{OFFSET_FILE}.tmp"));
    std::fs::write(&tmp, format!("{offset_ms}\n"))?;
    std::fs::rename(&tmp, run.join(OFFSET_FILE))
}

/// The system clock shifted by the run's offset, refreshed by a background thread.
#[derive(Debug, Clone)]
pub struct OffsetClock {
    offset: Arc<AtomicI64>,
}

impl OffsetClock {
    /// Follows the offset file of `run` from now on (a detached thread re-reads it).
    pub fn follow(run: &Path) -> Self {
        let offset = Arc::new(AtomicI64::new(read_offset(run)));
        let shared = Arc::clone(&offset);
        let run: PathBuf = run.to_path_buf();
        std::thread::spawn(move || loop {
            std::thread::sleep(REFRESH);
            shared.store(read_offset(&run), Ordering::SeqCst);
        });
        OffsetClock { offset }
    }

    /// The offset in effect, in milliseconds.
    pub fn offset_ms(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let ms = real_ms().saturating_add(self.offset_ms());
        Timestamp::from_unix_millis(ms)
            .or_else(|| Timestamp::from_unix_millis(real_ms()))
            .unwrap_or_else(|| sessionbus_store::SystemClock.now())
    }
}
