//! [`WatchSet`]: the host waiting for changes of many sessions' files on one inotify
//! descriptor, with a bounded cost whatever the containers do to their folders.

use super::inotify::{self, Inotify, IN_IGNORED, IN_Q_OVERFLOW, READ_BUF};
use super::{after, detect, Change, PollReason, Preference, Target, WakeError, WakeMode, SETTLE};
use sessionbus_schema::Role;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::time::{Duration, Instant};

/// Reads of the event queue per drain at most (each [`READ_BUF`] bytes).
const MAX_READS_PER_DRAIN: usize = 16;

/// Options of a [`WatchSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchSetOptions {
    /// A full pass over every session is due this often, events or not (the polling fallback:
    /// sessions in [`WakeMode::Polling`], rules that fire with time, missed events). Default
    /// 1 s, the older host's sweep interval.
    pub full_pass_every: Duration,
    /// A session is reported at most once per this interval on average, however many events
    /// its folder raises (default 10 ms); see [`WatchSetOptions::burst`].
    pub min_interval: Duration,
    /// Reports a quiet session may get back to back before the minimum interval applies
    /// (default 3: a message's claim, its reply and its completion each commit, and the
    /// reply must not wait behind the claim). The allowance refills at one per
    /// [`WatchSetOptions::min_interval`], so a flood is held to that rate.
    pub burst: u32,
    /// More events than this from one folder within [`WatchSetOptions::flood_window`] drop its
    /// watch (default 2,000: a busy session commits a few times per message).
    pub flood_events: u32,
    /// The window of [`WatchSetOptions::flood_events`] (default 1 s).
    pub flood_window: Duration,
    /// How long a flooded folder goes unwatched before its watch is set up again (default
    /// 30 s); meanwhile the full passes serve it.
    pub flood_cooldown: Duration,
    /// The share of the host's time one session may take through change reports, as its
    /// inverse (default 4: a quarter). The caller says what serving a session cost
    /// ([`WatchSet::charge`]); each session has an allowance that grows by 1 / this factor
    /// of the time passing, up to [`WatchSetOptions::cost_allowance`], and a session whose
    /// allowance is spent is not reported until it is positive again. A session served in
    /// a millisecond is never held back; one a container made expensive to serve is.
    pub cost_factor: u32,
    /// The most serving time a session can have saved up (default 500 ms).
    pub cost_allowance: Duration,
    /// Notification or polling only.
    pub preference: Preference,
}

impl Default for WatchSetOptions {
    fn default() -> Self {
        WatchSetOptions {
            full_pass_every: Duration::from_secs(1),
            min_interval: Duration::from_millis(10),
            burst: 3,
            flood_events: 2_000,
            flood_window: Duration::from_secs(1),
            flood_cooldown: Duration::from_secs(30),
            cost_factor: 4,
            cost_allowance: Duration::from_millis(500),
            preference: Preference::Auto,
        }
    }
}

impl WatchSetOptions {
    /// The same options with this full-pass interval.
    pub fn with_full_pass_every(mut self, d: Duration) -> Self {
        self.full_pass_every = d;
        self
    }

    /// The same options with this per-session minimum interval.
    pub fn with_min_interval(mut self, d: Duration) -> Self {
        self.min_interval = d;
        self
    }

    /// The same options with this burst allowance (at least 1).
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst.max(1);
        self
    }

    /// The same options with this flood limit (events per window) and cool-down.
    pub fn with_flood_limit(mut self, events: u32, window: Duration, cooldown: Duration) -> Self {
        self.flood_events = events;
        self.flood_window = window;
        self.flood_cooldown = cooldown;
        self
    }

    /// The same options with this cost factor and allowance (see
    /// [`WatchSetOptions::cost_factor`]).
    pub fn with_cost_share(mut self, factor: u32, allowance: Duration) -> Self {
        self.cost_factor = factor.max(1);
        self.cost_allowance = allowance;
        self
    }

    /// The same options with this preference.
    pub fn with_preference(mut self, p: Preference) -> Self {
        self.preference = p;
        self
    }
}

/// What [`WatchSet::wait`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready<K> {
    /// These sessions' files may have changed: serve them (each reported at most once per
    /// [`WatchSetOptions::min_interval`] on average).
    Changed(Vec<K>),
    /// A pass over every session is due: [`WatchSetOptions::full_pass_every`] has passed, or
    /// the kernel's queue overflowed and events were lost.
    FullPass,
    /// The wait's own limit passed first.
    Nothing,
}

#[derive(Debug)]
struct Entry {
    target: Target,
    wd: Option<i32>,
    mode: WakeMode,
    /// When the session may next be reported, if it changed.
    due: Option<Instant>,
    /// Reports allowed now (up to the burst), as of `credit_at`.
    credit: f64,
    credit_at: Instant,
    window_start: Instant,
    window_events: u32,
    /// A flooded session's watch comes back at this time.
    rearm_at: Option<Instant>,
    /// Serving time the session may still take (seconds; negative when overspent), as of
    /// `allowance_at`.
    allowance: f64,
    allowance_at: Instant,
    /// Not reported before this time (its allowance is overspent until then).
    not_before: Option<Instant>,
}

/// Many sessions' folders on one inotify descriptor (the host's side).
///
/// Each session is a key `K` and a file (its `outbound.db`); the set watches the file's
/// folder and reports, from [`WatchSet::wait`], which sessions changed. Built for folders a
/// hostile container writes:
///
/// - events are read into one fixed 4 KiB buffer, at most 16 reads (64 KiB) per drain, and
///   reduced to one mark per session (coalesced);
/// - a session is reported at most [`WatchSetOptions::burst`] times back to back, then at most
///   once per [`WatchSetOptions::min_interval`];
/// - a folder raising more than [`WatchSetOptions::flood_events`] events in
///   [`WatchSetOptions::flood_window`] loses its watch for
///   [`WatchSetOptions::flood_cooldown`] ([`PollReason::Flooded`]), so the kernel stops
///   queueing its events at all; the full passes serve it meanwhile;
/// - a session whose serving the caller reports as expensive ([`WatchSet::charge`]) gets at
///   most a share of the host's time ([`WatchSetOptions::cost_factor`]) once its allowance
///   is spent;
/// - a queue overflow (events lost) makes the next result a [`Ready::FullPass`], never more
///   often than the minimum interval.
///
/// ```
/// use sessionbus_runtime::wake::{Ready, WatchSet, WatchSetOptions};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut set = WatchSet::new(WatchSetOptions::default());
/// let mode = set.watch("session-a", &dir.path().join("outbound.db"));
/// println!("session-a: {mode}");
/// assert_eq!(set.wait(Duration::ZERO), Ready::FullPass); // the first pass is due at once
/// std::fs::write(dir.path().join("outbound.db"), b"x").unwrap();
/// if !mode.is_polling() {
///     assert_eq!(set.wait(Duration::from_millis(900)), Ready::Changed(vec!["session-a"]));
/// }
/// ```
#[derive(Debug)]
pub struct WatchSet<K> {
    opts: WatchSetOptions,
    ino: Result<Inotify, WakeError>,
    entries: HashMap<K, Entry>,
    /// Watch descriptor to the sessions watching that folder.
    by_wd: HashMap<i32, Vec<K>>,
    /// Sessions with a mark (`due` set): only these are looked at per wake.
    dirty: Vec<K>,
    /// Sessions whose watch was dropped for flooding.
    flooded: Vec<K>,
    buf: Vec<u8>,
    last_full: Option<Instant>,
    overflowed: bool,
}

impl<K: Clone + Eq + Hash> WatchSet<K> {
    /// An empty set. Where inotify cannot be had at all, every session polls (see
    /// [`WatchSet::watch`]'s returned mode).
    pub fn new(opts: WatchSetOptions) -> WatchSet<K> {
        let ino = Inotify::new().map_err(|e| {
            WakeError::os(
                Role::Host,
                "create an inotify instance for",
                Path::new("(sessions)"),
                &e,
            )
        });
        WatchSet {
            opts,
            ino,
            entries: HashMap::new(),
            by_wd: HashMap::new(),
            dirty: Vec::new(),
            flooded: Vec::new(),
            buf: vec![0; READ_BUF],
            last_full: None,
            overflowed: false,
        }
    }

    /// Follows `file` (a session's outbound.db) under `key`, replacing what was followed
    /// under that key, and returns the mode chosen for it.
    pub fn watch(&mut self, key: K, file: &Path) -> WakeMode {
        self.unwatch(&key);
        let target = Target::of(file);
        let mut entry = Entry {
            mode: detect(Role::Host, &target.dir, self.opts.preference),
            target,
            wd: None,
            due: None,
            credit: f64::from(self.opts.burst.max(1)),
            credit_at: Instant::now(),
            window_start: Instant::now(),
            window_events: 0,
            rearm_at: None,
            allowance: self.opts.cost_allowance.as_secs_f64(),
            allowance_at: Instant::now(),
            not_before: None,
        };
        if entry.mode == WakeMode::Inotify {
            match self.add(&key, &entry.target) {
                Ok(wd) => entry.wd = Some(wd),
                Err(e) => entry.mode = WakeMode::Polling(PollReason::Unavailable(e)),
            }
        }
        let mode = entry.mode.clone();
        self.entries.insert(key, entry);
        mode
    }

    fn add(&mut self, key: &K, target: &Target) -> Result<i32, WakeError> {
        let ino = self.ino.as_ref().map_err(Clone::clone)?;
        let wd = ino
            .add(&target.dir, inotify::DIR_MASK)
            .map_err(|e| WakeError::os(Role::Host, "watch", &target.dir, &e))?;
        let keys = self.by_wd.entry(wd).or_default();
        if !keys.contains(key) {
            keys.push(key.clone());
        }
        Ok(wd)
    }

    /// Stops following `key`.
    pub fn unwatch(&mut self, key: &K) {
        if let Some(entry) = self.entries.remove(key) {
            if let Some(wd) = entry.wd {
                self.drop_wd_key(wd, key);
            }
        }
    }

    /// Removes `key` from `wd`'s sessions, and the watch itself when no session is left.
    fn drop_wd_key(&mut self, wd: i32, key: &K) {
        if let Some(keys) = self.by_wd.get_mut(&wd) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_wd.remove(&wd);
                if let Ok(ino) = &self.ino {
                    ino.remove(wd);
                }
            }
        }
    }

    /// Tells the set that serving `key` (after a report) took `cost`, to be taken from the
    /// session's allowance (see [`WatchSetOptions::cost_factor`]): a container that makes its
    /// session expensive to serve (a schema SQLite takes long to parse, say) cannot make the
    /// host spend most of its time on it by committing often.
    pub fn charge(&mut self, key: &K, cost: Duration) {
        let opts = self.opts;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let now = Instant::now();
        let factor = f64::from(opts.cost_factor.max(1));
        let cap = opts.cost_allowance.as_secs_f64();
        let saved =
            (e.allowance + now.duration_since(e.allowance_at).as_secs_f64() / factor).min(cap);
        e.allowance = saved - cost.as_secs_f64();
        e.allowance_at = now;
        e.not_before = (e.allowance < 0.0).then(|| {
            after(
                now,
                Duration::from_secs_f64((-e.allowance * factor).clamp(0.0, 3600.0)),
            )
        });
        if let (Some(d), Some(t)) = (e.due, e.not_before) {
            e.due = Some(d.max(t));
        }
    }

    /// The mode of `key` now (`None` when not followed).
    pub fn mode(&self, key: &K) -> Option<&WakeMode> {
        self.entries.get(key).map(|e| &e.mode)
    }

    /// How many sessions are followed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no session is followed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many sessions are followed by notification, and how many poll.
    pub fn counts(&self) -> (usize, usize) {
        let notified = self
            .entries
            .values()
            .filter(|e| e.mode == WakeMode::Inotify)
            .count();
        (notified, self.entries.len() - notified)
    }

    /// Waits up to `limit` for something to do: sessions whose files changed, or a full pass.
    /// The first call returns [`Ready::FullPass`] at once.
    pub fn wait(&mut self, limit: Duration) -> Ready<K> {
        let end = after(Instant::now(), limit);
        loop {
            let now = Instant::now();
            self.rearm_flooded(now);
            let full_at = self.full_pass_at(now);
            if now >= full_at {
                self.last_full = Some(now);
                self.overflowed = false;
                for k in std::mem::take(&mut self.dirty) {
                    if let Some(e) = self.entries.get_mut(&k) {
                        e.due = None;
                    }
                }
                return Ready::FullPass;
            }
            let mut changed = Vec::new();
            let mut next = full_at.min(end);
            let entries = &mut self.entries;
            let opts = self.opts;
            self.dirty.retain(|k| {
                let Some(e) = entries.get_mut(k) else {
                    return false;
                };
                match e.due {
                    Some(d) if d <= now => {
                        e.due = None;
                        e.credit = credit(&opts, e, now) - 1.0;
                        e.credit_at = now;
                        changed.push(k.clone());
                        false
                    }
                    Some(d) => {
                        next = next.min(d);
                        true
                    }
                    None => false,
                }
            });
            if !changed.is_empty() {
                return Ready::Changed(changed);
            }
            if now >= end {
                return Ready::Nothing;
            }
            if let Some(t) = self.next_rearm() {
                next = next.min(t);
            }
            let wait = next.saturating_duration_since(now);
            let readable = match &self.ino {
                Ok(ino) if !self.by_wd.is_empty() => ino.ready(wait).unwrap_or_else(|e| {
                    tracing::warn!("host: waiting for change events: {e}");
                    std::thread::sleep(wait);
                    false
                }),
                _ => {
                    std::thread::sleep(wait);
                    false
                }
            };
            if readable {
                self.drain();
            }
        }
    }

    /// When the next full pass is due: at once for the first, after an overflow no sooner than
    /// the minimum interval, else [`WatchSetOptions::full_pass_every`] after the last.
    fn full_pass_at(&self, now: Instant) -> Instant {
        match self.last_full {
            None => now,
            Some(last) if self.overflowed => after(last, self.opts.min_interval),
            Some(last) => after(last, self.opts.full_pass_every),
        }
    }

    /// When the next flooded session gets its watch back.
    fn next_rearm(&self) -> Option<Instant> {
        self.flooded
            .iter()
            .filter_map(|k| self.entries.get(k).and_then(|e| e.rearm_at))
            .min()
    }

    /// Flooded sessions whose cool-down has passed get their watch back (and count as
    /// changed: their events went unseen).
    fn rearm_flooded(&mut self, now: Instant) {
        if self.flooded.is_empty() {
            return;
        }
        let entries = &self.entries;
        let mut keys = Vec::new();
        self.flooded
            .retain(|k| match entries.get(k).and_then(|e| e.rearm_at) {
                Some(t) if t <= now => {
                    keys.push(k.clone());
                    false
                }
                Some(_) => true,
                None => false,
            });
        for key in keys {
            let Some(target) = self.entries.get(&key).map(|e| e.target.clone()) else {
                continue;
            };
            let added = self.add(&key, &target);
            if let Some(e) = self.entries.get_mut(&key) {
                e.rearm_at = None;
                e.window_start = now;
                e.window_events = 0;
                match added {
                    Ok(wd) => {
                        e.wd = Some(wd);
                        e.mode = WakeMode::Inotify;
                        if e.due.is_none() {
                            e.due = Some(now);
                            self.dirty.push(key.clone());
                        }
                    }
                    Err(err) => e.mode = WakeMode::Polling(PollReason::Unavailable(err)),
                }
            }
        }
    }

    /// Reads queued events (bounded) and marks the sessions they concern.
    fn drain(&mut self) {
        let now = Instant::now();
        for _ in 0..MAX_READS_PER_DRAIN {
            let n = match &self.ino {
                Ok(ino) => match ino.read(&mut self.buf) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!("host: reading change events: {e}");
                        0
                    }
                },
                Err(_) => 0,
            };
            if n == 0 {
                return;
            }
            let buf = std::mem::take(&mut self.buf);
            for ev in inotify::events(buf.get(..n).unwrap_or(&[])) {
                if ev.mask & IN_Q_OVERFLOW != 0 {
                    self.overflowed = true;
                    continue;
                }
                let Some(keys) = self.by_wd.get(&ev.wd).cloned() else {
                    continue;
                };
                if ev.mask & IN_IGNORED != 0 {
                    // The folder is gone: its sessions poll until watched again.
                    self.by_wd.remove(&ev.wd);
                    for k in &keys {
                        if let Some(e) = self.entries.get_mut(k) {
                            e.wd = None;
                            if e.due.is_none() {
                                e.due = Some(now);
                                self.dirty.push(k.clone());
                            }
                        }
                    }
                    continue;
                }
                for k in keys {
                    self.note(&k, ev.mask, ev.name, now);
                }
            }
            self.buf = buf;
        }
    }

    /// One event for session `key`: flood accounting, then the mark.
    fn note(&mut self, key: &K, mask: u32, name: &[u8], now: Instant) {
        let opts = self.opts;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if now.duration_since(e.window_start) >= opts.flood_window {
            e.window_start = now;
            e.window_events = 0;
        }
        e.window_events = e.window_events.saturating_add(1);
        if e.window_events > opts.flood_events {
            tracing::warn!(
                "host: {} raised over {} change events in {:?}; not watched for {:?}",
                e.target.dir.display(),
                opts.flood_events,
                opts.flood_window,
                opts.flood_cooldown
            );
            e.mode = WakeMode::Polling(PollReason::Flooded);
            e.rearm_at = Some(after(now, opts.flood_cooldown));
            e.due = None;
            let wd = e.wd.take();
            self.flooded.push(key.clone());
            if let Some(wd) = wd {
                self.drop_wd_key(wd, key);
            }
            return;
        }
        let c = credit(&opts, e, now);
        let earliest = if c >= 1.0 {
            now
        } else {
            after(now, opts.min_interval.mul_f64((1.0 - c).clamp(0.0, 1.0)))
        };
        let earliest = e.not_before.map_or(earliest, |t| t.max(earliest));
        let at = match e.target.folder_event(mask, name) {
            Change::None => return,
            Change::Complete => earliest,
            Change::Partial => earliest.max(after(now, SETTLE)),
        };
        match e.due {
            Some(d) => e.due = Some(d.min(at)),
            None => {
                e.due = Some(at);
                self.dirty.push(key.clone());
            }
        }
    }
}

/// The reports `e` may have at `now`: its allowance refilled at one per minimum interval, up
/// to the burst.
fn credit(opts: &WatchSetOptions, e: &Entry, now: Instant) -> f64 {
    let burst = f64::from(opts.burst.max(1));
    let min = opts.min_interval.as_secs_f64();
    if min <= 0.0 {
        return burst;
    }
    (e.credit + now.duration_since(e.credit_at).as_secs_f64() / min).min(burst)
}
