//! Telling a slow view of inbound.db from a frozen one (the container's side of
//! [`sessionbus_store::stamp`]).
//!
//! Across a mount, the container's view of inbound.db may lag the host's commits by an
//! attribute-cache timeout (about a second on FUSE and virtiofs in their revalidating modes).
//! A mount that caches file contents and never revalidates them (FUSE `kernel_cache`,
//! virtiofs `cache=always`) freezes the view instead: every poll succeeds and returns the
//! same old rows, and the session hangs without a single error. The host stamps each commit
//! outside the file (the stamp's file *name* carries inbound.db's change counter), and
//! [`FreshnessWatch`] compares the newest stamp with the change counter of the inbound.db
//! this container reads. A view that stays behind the same stamp for longer than the
//! threshold ([`DEFAULT_FROZEN_VIEW_AFTER`]) is reported as [`FrozenView`], with what to fix.
//!
//! A stale cache can also make inbound.db look malformed (old pages from the cache mixed with
//! pages it never held, read fresh). While the view is behind a stamp, the poll loop treats a
//! failed read of the file as a symptom and retries; if the view never catches up, the frozen
//! view is what gets reported, not a corrupt file.
//!
//! Nothing is reported when there is no stamp (an older host, or no host write yet) or when
//! the view catches up; durations are measured on this process's monotonic clock, so the
//! host's and the container's wall clocks need not agree.

use sessionbus_store::stamp::{self, counter_behind, InboundStamp};
use sessionbus_store::SessionPaths;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the view may stay behind one host stamp before it is reported as frozen. Far
/// longer than any revalidation delay of a coherent mount (an attribute-cache timeout of a
/// second or so), so a slow view is never mistaken for a frozen one.
pub const DEFAULT_FROZEN_VIEW_AFTER: Duration = Duration::from_secs(30);

/// How often [`FreshnessWatch::check`] actually reads the stamp folder and the header.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The diagnosis: inbound.db as this container reads it has stayed behind a commit the host
/// stamped, for far longer than a coherent mount would take to show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenView {
    /// inbound.db as this container reads it.
    pub inbound: PathBuf,
    /// The change counter this container reads in inbound.db's header.
    pub seen_counter: u32,
    /// The change counter the host stamped after its newest commit.
    pub host_counter: u32,
    /// When the host stamped it (its wall clock, Unix milliseconds).
    pub host_written_at_ms: i64,
    /// How long this container has seen its view behind that stamp.
    pub behind_for: Duration,
}

impl fmt::Display for FrozenView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = sessionbus_store::Timestamp::from_unix_millis(self.host_written_at_ms)
            .map(|t| t.to_iso())
            .unwrap_or_else(|| format!("unix ms {}", self.host_written_at_ms));
        write!(
            f,
            "{}: this container's view of inbound.db is frozen: the host committed change \
             #{} at {when} (stamped in {}/), but inbound.db read through this mount still shows \
             change #{} after {:.1} s. The mount caches file contents without ever revalidating \
             them (FUSE `kernel_cache`, virtiofs `cache=always`, NFS `nocto`), so no new \
             message will ever be seen: remount the session folder with revalidation (FUSE \
             `auto_cache` or `direct_io`, virtiofs `cache=auto`, NFS with close-to-open \
             consistency) and restart the container",
            self.inbound.display(),
            self.host_counter,
            stamp::STAMP_DIR_NAME,
            self.seen_counter,
            self.behind_for.as_secs_f64(),
        )
    }
}

/// Watches one session folder's inbound.db for a frozen view. Cheap: at most one directory
/// listing and one 28-byte header read per [`CHECK_INTERVAL`].
#[derive(Debug, Clone)]
pub struct FreshnessWatch {
    paths: SessionPaths,
    after: Option<Duration>,
    /// The stamp the view is behind, and since when.
    behind: Option<(InboundStamp, Instant)>,
    last_check: Option<Instant>,
}

impl FreshnessWatch {
    /// A watch over the session folder `paths` that reports a view behind the same stamp for
    /// `after` (`None`: never report).
    pub fn new(paths: SessionPaths, after: Option<Duration>) -> Self {
        FreshnessWatch {
            paths,
            after,
            behind: None,
            last_check: None,
        }
    }

    /// The threshold in use (`None`: disabled).
    pub fn after(&self) -> Option<Duration> {
        self.after
    }

    /// Changes the threshold (`None` disables the watch).
    pub fn set_after(&mut self, after: Option<Duration>) {
        self.after = after;
        self.behind = None;
    }

    /// Reads the newest stamp and this container's change counter (at most once per
    /// [`CHECK_INTERVAL`]) and reports a frozen view. An unreadable stamp folder or header is
    /// not an error here: the poll that reads inbound.db reports real file errors.
    pub fn check(&mut self, now: Instant) -> Option<FrozenView> {
        self.after?;
        if self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < CHECK_INTERVAL)
        {
            return None;
        }
        self.last_check = Some(now);
        // Stamps first: each was written after its commit, so a header read afterwards is
        // at least that new on a coherent view.
        let newest = stamp::newest_stamp(&self.paths.dir).ok().flatten();
        let seen = stamp::change_counter(&self.paths.inbound).ok().flatten();
        self.observe(now, newest, seen)
    }

    /// Reads the newest stamp and this container's change counter now and, when the view is
    /// behind the stamp, returns both (the counter seen, the stamp). Changes nothing: the
    /// poll loop asks this when a read of inbound.db fails, because a cache that serves some
    /// pages stale and reads others fresh makes a file look malformed.
    pub fn behind_now(&self) -> Option<(u32, InboundStamp)> {
        self.after?;
        let newest = stamp::newest_stamp(&self.paths.dir).ok().flatten()?;
        let seen = stamp::change_counter(&self.paths.inbound).ok().flatten()?;
        counter_behind(seen, newest.change_counter).then_some((seen, newest))
    }

    /// The decision, without I/O: `newest` is the newest host stamp, `seen` the change counter
    /// this container reads, `now` this process's monotonic time.
    pub fn observe(
        &mut self,
        now: Instant,
        newest: Option<InboundStamp>,
        seen: Option<u32>,
    ) -> Option<FrozenView> {
        let after = self.after?;
        let (Some(newest), Some(seen)) = (newest, seen) else {
            self.behind = None;
            return None;
        };
        if !counter_behind(seen, newest.change_counter) {
            self.behind = None;
            return None;
        }
        match self.behind {
            // Still behind the stamp first seen ahead: the clock keeps running.
            Some((first, since)) if counter_behind(seen, first.change_counter) => {
                let behind_for = now.saturating_duration_since(since);
                if behind_for >= after {
                    return Some(FrozenView {
                        inbound: self.paths.inbound.clone(),
                        seen_counter: seen,
                        host_counter: newest.change_counter,
                        host_written_at_ms: newest.written_at_ms,
                        behind_for,
                    });
                }
                None
            }
            // Behind for the first time, or the view moved past the stamp it was behind (it
            // is slow, not frozen): start over with the newest stamp.
            _ => {
                self.behind = Some((newest, now));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(c: u32) -> Option<InboundStamp> {
        Some(InboundStamp {
            change_counter: c,
            written_at_ms: 1_776_773_119_000 + i64::from(c),
        })
    }

    fn watch(after_ms: u64) -> FreshnessWatch {
        FreshnessWatch::new(
            SessionPaths::new("/workspace"),
            Some(Duration::from_millis(after_ms)),
        )
    }

    #[test]
    fn a_view_behind_the_same_stamp_for_the_threshold_is_frozen() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = watch(1000);
        assert_eq!(w.observe(ms(0), st(5), Some(5)), None);
        assert_eq!(w.observe(ms(100), st(6), Some(5)), None);
        assert_eq!(w.observe(ms(900), st(7), Some(5)), None);
        let frozen = w.observe(ms(1100), st(8), Some(5)).expect("frozen");
        assert_eq!(frozen.seen_counter, 5);
        assert_eq!(frozen.host_counter, 8);
        assert_eq!(frozen.behind_for, Duration::from_millis(1000));
        let text = frozen.to_string();
        for needle in ["frozen", "#8", "#5", "kernel_cache", "remount"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn a_slow_view_that_keeps_moving_is_never_frozen() {
        let t0 = Instant::now();
        let mut w = watch(1000);
        // The view always lags one commit behind, but moves: each stamp it was behind is
        // reached, so the clock starts over.
        for i in 0..100u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 300);
            assert_eq!(w.observe(now, st(i + 1), Some(i)), None, "step {i}");
        }
    }

    #[test]
    fn no_stamp_no_header_or_caught_up_resets() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut w = watch(1000);
        assert_eq!(w.observe(ms(0), st(6), Some(5)), None);
        assert_eq!(w.observe(ms(500), None, Some(5)), None);
        assert_eq!(w.observe(ms(1500), st(6), Some(5)), None, "clock restarted");
        assert_eq!(w.observe(ms(1600), st(6), None), None);
        assert_eq!(w.observe(ms(2600), st(6), Some(5)), None, "clock restarted");
        assert_eq!(w.observe(ms(2700), st(6), Some(6)), None);
        assert_eq!(w.observe(ms(9000), st(6), Some(7)), None, "ahead is fine");
    }

    #[test]
    fn disabled_never_reports() {
        let t0 = Instant::now();
        let mut w = FreshnessWatch::new(SessionPaths::new("/workspace"), None);
        assert_eq!(w.observe(t0, st(9), Some(1)), None);
        assert_eq!(
            w.observe(t0 + Duration::from_secs(3600), st(9), Some(1)),
            None
        );
        assert_eq!(w.check(t0), None);
    }
}
