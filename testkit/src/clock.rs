//! A clock that moves only when told to.

use sessionbus_schema::{Clock, Timestamp};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A manual clock: starts at a fixed instant and moves only through [`ManualClock::set`] and
/// [`ManualClock::advance_ms`]. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

/// The instant a new [`ManualClock`] starts at: 2026-04-21T12:00:00.000Z.
pub const START_MILLIS: i64 = 1_776_772_800_000;

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::at_millis(START_MILLIS)
    }
}

impl ManualClock {
    /// A clock at [`START_MILLIS`].
    pub fn new() -> Self {
        ManualClock::default()
    }

    /// A clock at `ms` milliseconds since the Unix epoch.
    pub fn at_millis(ms: i64) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(ms)),
        }
    }

    /// A clock at the instant `text` (either upstream format); panics on a bad literal, as
    /// test fixtures do.
    pub fn at(text: &str) -> Self {
        let t = Timestamp::parse(text).unwrap_or_else(|e| panic!("ManualClock::at: {e}"));
        ManualClock::at_millis(t.unix_millis())
    }

    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.unix_millis(), Ordering::SeqCst);
    }

    /// Moves the time by `ms` (negative moves it back).
    pub fn advance_ms(&self, ms: i64) {
        self.millis.fetch_add(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs` seconds.
    pub fn advance_secs(&self, secs: i64) {
        self.advance_ms(secs * 1000);
    }

    /// The time, in milliseconds since the Unix epoch.
    pub fn now_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }

    /// The clock as the shared trait object sessions take.
    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let ms = self.millis.load(Ordering::SeqCst);
        Timestamp::from_unix_millis(ms).unwrap_or_else(|| sessionbus_schema::SystemClock.now())
    }
}
