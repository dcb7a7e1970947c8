//! The check's findings: counts of what held and what broke, and the one summary line.

use std::collections::BTreeMap;
use std::time::Duration;

/// What the check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Seconds of faults.
    pub seconds: u64,
    /// Sessions.
    pub sessions: usize,
    /// Messages committed in the checked sessions (rows of `messages_in` plus denied commands).
    pub messages: u64,
    /// Answered exactly once and delivered.
    pub answered: u64,
    /// Marked failed after the last try.
    pub failed: u64,
    /// Context rows (no answer expected).
    pub context: u64,
    /// Messages of the broken session, not checked.
    pub abandoned: u64,
    /// `panic-once` messages checked (each must be answered exactly once).
    pub panic_once: u64,
    /// `hang-once` messages checked (each must be answered exactly once).
    pub hang_once: u64,
    /// `poison` messages checked.
    pub poison: u64,
    /// Of those, how many ended `failed` after the last try, unanswered.
    pub poison_failed: u64,
    /// Poison messages that got an answer: the handler never answers one.
    pub poison_answered: u64,
    /// Other messages that ended `failed` for having shared a batch with a poison message.
    pub collateral: u64,
    /// Handler failures on poison messages (container events).
    pub poison_failures: u64,
    /// Containers hung in their handler that the host's sweep killed as stuck.
    pub handler_hangs_killed: u64,
    /// Containers hung in their handler that nobody killed.
    pub handler_hangs_missed: u64,
    /// Containers the host stopped for the idle rule.
    pub idle_stops: u64,
    /// Ordinary batches that took longer than the handler's deadline (a loaded machine).
    pub late_batches: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Kills that left a journal behind.
    pub in_txn: u64,
    /// Claims the host's sweep retried.
    pub retried: u64,
    /// Hung containers the sweep killed as stuck.
    pub hangs_killed: u64,
    /// Hung containers nobody killed before the drain woke them: the stuck detection missed.
    pub hangs_missed: u64,
    /// Hand-offs repeated after a crash between hand-off and record.
    pub redelivered: u64,
    /// Committed but unanswered, undelivered or gone.
    pub lost: u64,
    /// Answered or delivered more than once.
    pub duplicated: u64,
    /// Files failing `integrity_check` (or not in delete mode).
    pub corrupt: u64,
    /// Seqs used twice, or not the seq the write returned.
    pub seq_collisions: u64,
    /// Host seqs that are odd, container seqs that are even, or missing seqs.
    pub parity_breaks: u64,
    /// Replies that sort before what they answer.
    pub order_breaks: u64,
    /// Errors that were not a clear one (disk full not reported as such, say).
    pub unclear: u64,
    /// Healthy containers killed as stuck.
    pub spurious_kills: u64,
    /// Healthy sessions that stopped answering after the broken one broke.
    pub isolation_breaks: u64,
    /// Host processes that exited without being killed.
    pub host_crashes: u64,
    /// The read-only fault could be set up here (mount namespaces: root).
    pub readonly_supported: bool,
    /// The drain settled.
    pub settled: bool,
    /// Drain time.
    pub drain: Duration,
    /// The first problems found, for the reader.
    pub details: Vec<String>,
}

impl Report {
    /// True when nothing was lost, duplicated or corrupt and every invariant held.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.corrupt == 0
            && self.seq_collisions == 0
            && self.parity_breaks == 0
            && self.order_breaks == 0
            && self.unclear == 0
            && self.spurious_kills == 0
            && self.hangs_missed == 0
            && self.isolation_breaks == 0
            && self.host_crashes == 0
            && self.poison_answered == 0
            && self.collateral == 0
            && self.handler_hangs_missed == 0
    }

    /// The one summary line.
    pub fn summary_line(&self) -> String {
        let f = |k: &str| self.faults.get(k).copied().unwrap_or(0);
        format!(
            "soak: seed={} seconds={} sessions={} messages={} answered={} failed={} context={} \
             abandoned={} panic_once={} hang_once={} poison_failed={} | faults: \
             kill_container={} kill_host={} kill_writer={} clock_jump={} \
             hang={} disk_full={} (writer={} container={}) readonly={} garbage={} \
             handler_panic={} handler_hang={} poison={} (in_txn={} retried={} hangs_killed={} \
             hang_holding_lock={} redelivered={} handler_hangs_killed={} poison_failures={} \
             idle_stops={} late_batches={}) | lost={} duplicated={} corrupt={} \
             seq_collisions={} parity_breaks={} order_breaks={} unclear_errors={} \
             spurious_kills={} hangs_missed={} isolation_breaks={} host_crashes={} \
             poison_answered={} collateral={} handler_hangs_missed={} drain={:.1}s{}",
            self.seed,
            self.seconds,
            self.sessions,
            self.messages,
            self.answered,
            self.failed,
            self.context,
            self.abandoned,
            self.panic_once,
            self.hang_once,
            self.poison_failed,
            f("kill_container"),
            f("kill_host"),
            f("kill_writer"),
            f("clock_jump"),
            f("hang"),
            f("disk_full_writer") + f("disk_full_container"),
            f("disk_full_writer"),
            f("disk_full_container"),
            if self.readonly_supported {
                f("readonly").to_string()
            } else {
                "n/a".to_string()
            },
            f("garbage"),
            f("handler_panic"),
            f("handler_hang"),
            self.poison,
            self.in_txn,
            self.retried,
            self.hangs_killed,
            f("hang_holding_lock"),
            self.redelivered,
            self.handler_hangs_killed,
            self.poison_failures,
            self.idle_stops,
            self.late_batches,
            self.lost,
            self.duplicated,
            self.corrupt,
            self.seq_collisions,
            self.parity_breaks,
            self.order_breaks,
            self.unclear,
            self.spurious_kills,
            self.hangs_missed,
            self.isolation_breaks,
            self.host_crashes,
            self.poison_answered,
            self.collateral,
            self.handler_hangs_missed,
            self.drain.as_secs_f64(),
            if self.settled { "" } else { " (not settled)" },
        )
    }

    pub(super) fn problem(&mut self, what: String) {
        if self.details.len() < 40 {
            self.details.push(what);
        }
    }
}
