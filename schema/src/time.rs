//! Timestamps in both upstream text formats, and the clock every "now" comes from.
//!
//! Upstream writes JavaScript ISO (`2026-04-21T12:05:19.123Z`) in some columns and SQLite's
//! `datetime('now')` (`2026-04-21 12:05:19`, UTC without a zone) in others. Both mean UTC.
//! Comparing them as raw strings is wrong (`T` sorts after a space), so everything here
//! compares parsed instants, and each writer keeps the format its column already uses.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::fmt;

/// An instant in UTC, read from either upstream format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// A text that is not a timestamp in any accepted format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a timestamp in ISO-8601 or SQLite datetime format: {text:?}")]
pub struct TimestampError {
    /// The rejected text (cut to 64 characters).
    pub text: String,
}

const SQLITE_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M:%S%.f",
];

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(DateTime::UNIX_EPOCH);

    /// Wraps a chrono instant.
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Timestamp(dt)
    }

    /// Milliseconds since the Unix epoch, if representable.
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        Utc.timestamp_millis_opt(ms).single().map(Timestamp)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    /// The chrono instant.
    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }

    /// Parses either upstream format (and RFC 3339 with any offset, and a bare date).
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let t = text.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
            return Ok(Timestamp(dt.with_timezone(&Utc)));
        }
        // `2026-04-21T12:05:19` / `2026-04-21 12:05:19[.123]`: SQLite's UTC without a zone.
        let no_z = t.strip_suffix('Z').unwrap_or(t);
        for f in SQLITE_FORMATS {
            if let Ok(n) = NaiveDateTime::parse_from_str(no_z, f) {
                return Ok(Timestamp(Utc.from_utc_datetime(&n)));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            if let Some(n) = d.and_hms_opt(0, 0, 0) {
                return Ok(Timestamp(Utc.from_utc_datetime(&n)));
            }
        }
        Err(TimestampError {
            text: text.chars().take(64).collect(),
        })
    }

    /// JavaScript `toISOString()` format: `2026-04-21T12:05:19.123Z`.
    pub fn to_iso(self) -> String {
        self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }

    /// SQLite `datetime('now')` format: `2026-04-21 12:05:19` (whole seconds, UTC).
    pub fn to_sqlite(self) -> String {
        self.0.format("%Y-%m-%d %H:%M:%S").to_string()
    }

    /// SQLite's datetime format with milliseconds: `2026-04-21 12:05:19.123` (UTC). SQLite's
    /// date functions and upstream's readers accept it; used where whole seconds would lose an
    /// ordering that matters (a claim against a heartbeat touched in the same second).
    pub fn to_sqlite_millis(self) -> String {
        self.0.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
    }

    /// This instant plus a number of milliseconds (saturating at the representable range).
    pub fn plus_millis(self, ms: i64) -> Self {
        self.0
            .checked_add_signed(chrono::Duration::milliseconds(ms))
            .map(Timestamp)
            .unwrap_or(self)
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        (self.0 - earlier.0).num_milliseconds()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

/// Where "now" comes from. Every operation that needs the time takes one, so tests can move
/// time by hand (see `sessionbus_testkit::ManualClock`).
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp(Utc::now())
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_upstream_formats_mean_the_same_instant() {
        let iso = Timestamp::parse("2026-04-21T12:05:19.000Z").unwrap();
        let sql = Timestamp::parse("2026-04-21 12:05:19").unwrap();
        assert_eq!(iso, sql);
        assert_eq!(sql.to_iso(), "2026-04-21T12:05:19.000Z");
        assert_eq!(iso.to_sqlite(), "2026-04-21 12:05:19");
        let ms = Timestamp::parse("2026-04-21T12:05:19.123Z").unwrap();
        assert_eq!(ms.to_sqlite_millis(), "2026-04-21 12:05:19.123");
        assert_eq!(Timestamp::parse(&ms.to_sqlite_millis()).unwrap(), ms);
    }

    #[test]
    fn same_day_iso_sorts_by_instant_not_by_text() {
        // As raw text the ISO value sorts after the SQLite one ('T' > ' ') although it is earlier.
        let iso_earlier = "2026-04-21T08:00:00.000Z";
        let sql_later = "2026-04-21 12:00:00";
        assert!(iso_earlier > sql_later);
        assert!(Timestamp::parse(iso_earlier).unwrap() < Timestamp::parse(sql_later).unwrap());
    }

    #[test]
    fn offsets_and_fractions_are_understood() {
        let a = Timestamp::parse("2026-04-21T14:05:19.5+02:00").unwrap();
        let b = Timestamp::parse("2026-04-21 12:05:19.500").unwrap();
        assert_eq!(a, b);
        assert!(Timestamp::parse("2026-04-21").is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for s in [
            "",
            "now",
            "2026-13-01 00:00:00",
            "2026-04-21 25:00:00",
            "\0",
            "9999999-01-01",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Timestamp::parse(&s);
        }

        #[test]
        fn iso_round_trips(ms in 0i64..4_102_444_800_000) {
            let t = Timestamp::from_unix_millis(ms).unwrap();
            proptest::prop_assert_eq!(Timestamp::parse(&t.to_iso()).unwrap(), t);
            let s = Timestamp::parse(&t.to_sqlite()).unwrap();
            proptest::prop_assert_eq!(s.unix_millis(), ms - ms.rem_euclid(1000));
        }
    }
}
