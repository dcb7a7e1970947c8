//! The host sweep's stuck decision and retry policy (SPEC section 7), as pure functions of their
//! inputs: no clock, no files, no database.
//!
//! **Stuck decision** ([`decide`]), checked in this order:
//!
//! 1. *Ceiling.* If a heartbeat exists and its age (`now - heartbeat`) is strictly greater than
//!    [`heartbeat_limit_ms`] (30 min, or the declared timeout of a `Bash` tool in flight when
//!    that is longer), kill. A fresh container that has not written `.heartbeat` yet is never
//!    killed by this rule.
//! 2. *Claim stuck.* Tolerance is [`claim_tolerance_ms`] (60 s, or the declared `Bash` timeout
//!    when longer). A claim whose age is strictly greater than the tolerance, with no heartbeat
//!    strictly after the claim time (none at all counts), means kill, naming that message. When
//!    several claims are stuck, the oldest is named (the first of equals in input order).
//!
//! Decisions made where SPEC is silent:
//!
//! - "older than" is strict: an age exactly at the limit is healthy;
//! - only a tool named exactly `Bash` extends the limits; a declared timeout on any other tool
//!   is ignored, as is a negative one; the tool's start time does not enter the rule;
//! - clock skew: a heartbeat up to [`MAX_HEARTBEAT_SKEW_MS`] in the future counts as `now`;
//!   further ahead kills ([`KillReason::HeartbeatInFuture`]: the container sets the mtime, and
//!   one dated years ahead would otherwise keep a hung container below the ceiling forever); a
//!   claim in the future has a negative age (never stuck until time catches up);
//! - a declared `Bash` timeout counts at most [`MAX_DECLARED_TIMEOUT_MS`];
//! - when the ceiling and a claim both trip, the ceiling is reported.
//!
//! **Retry** ([`RetryPolicy::next_retry`], [`should_bump`]): a claimed message still pending
//! after a kill gets `tries + 1` and `process_after = now + base x 2^tries`, or fails once it has
//! had `max_tries` retries. See [`RetryPolicy::next_retry`] for the exact boundary.

use sessionbus_schema::Timestamp;
use std::fmt;

/// The heartbeat ceiling: a heartbeat older than this (30 minutes) means the container is hung,
/// unless a longer `Bash` timeout is declared.
pub const HEARTBEAT_CEILING_MS: i64 = 30 * 60 * 1000;

/// The claim tolerance: a claim older than this (60 seconds) with no heartbeat since means the
/// container is stuck on it, unless a longer `Bash` timeout is declared.
pub const CLAIM_TOLERANCE_MS: i64 = 60 * 1000;

/// The name of the only tool whose declared timeout extends the limits.
pub const BASH_TOOL: &str = "Bash";

/// How far ahead of the host's clock a heartbeat may be and still count (as now): five minutes
/// of clock skew between a VM and its host. Further ahead kills the container.
pub const MAX_HEARTBEAT_SKEW_MS: i64 = 5 * 60 * 1000;

/// The longest tool timeout a container may declare (two hours): a longer declaration counts
/// as this, so no declaration makes a hung container unkillable.
pub const MAX_DECLARED_TIMEOUT_MS: i64 = 2 * 60 * 60 * 1000;

/// The longest backoff [`RetryPolicy::next_retry`] ever schedules (one day). The default policy
/// never gets near it (its longest is 80 s); it bounds custom policies, where `base x 2^tries`
/// would otherwise overflow.
pub const MAX_BACKOFF_MS: i64 = 24 * 60 * 60 * 1000;

/// The tool the container reports in flight (its `container_state` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolInFlight {
    /// The tool's name, e.g. `Bash`.
    pub name: String,
    /// The timeout the agent declared for this call, in milliseconds, if any.
    pub declared_timeout_ms: Option<i64>,
    /// When the call started, if known (informational: the rules do not use it).
    pub started_at: Option<Timestamp>,
}

impl ToolInFlight {
    /// The declared timeout if this is a `Bash` call with a positive one, capped at
    /// [`MAX_DECLARED_TIMEOUT_MS`]; `None` otherwise.
    pub fn bash_timeout_ms(&self) -> Option<i64> {
        if self.name == BASH_TOOL {
            self.declared_timeout_ms
                .filter(|t| *t > 0)
                .map(|t| t.min(MAX_DECLARED_TIMEOUT_MS))
        } else {
            None
        }
    }
}

/// A `processing` ack: the container claimed this message at this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The claimed `messages_in` id.
    pub message_id: String,
    /// The ack's `status_changed`.
    pub claimed_at: Timestamp,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StuckDecision {
    /// Leave the container running.
    Healthy,
    /// Stop the container.
    Kill {
        /// Why.
        reason: KillReason,
    },
}

/// Why a container is to be stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillReason {
    /// The heartbeat is older than the ceiling.
    HeartbeatCeiling {
        /// The heartbeat's age in milliseconds.
        age_ms: i64,
        /// The limit it exceeded ([`heartbeat_limit_ms`]).
        limit_ms: i64,
    },
    /// The heartbeat's mtime is further in the future than clock skew explains
    /// ([`MAX_HEARTBEAT_SKEW_MS`]): no live container writes that.
    HeartbeatInFuture {
        /// How far ahead of now, in milliseconds.
        ahead_ms: i64,
    },
    /// Nothing happened in the session for longer than the idle limit (no message written,
    /// claimed or delivered, as the host saw it): the container is stopped, not failed.
    Idle {
        /// How long nothing happened, in milliseconds.
        idle_ms: i64,
        /// The limit.
        limit_ms: i64,
    },
    /// A claim is older than the tolerance and no heartbeat came after it.
    ClaimStuck {
        /// The claimed message.
        message_id: String,
        /// The claim's age in milliseconds.
        claim_age_ms: i64,
        /// The tolerance it exceeded ([`claim_tolerance_ms`]).
        tolerance_ms: i64,
    },
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillReason::HeartbeatCeiling { age_ms, limit_ms } => {
                write!(
                    f,
                    "heartbeat is {age_ms} ms old, over the {limit_ms} ms ceiling"
                )
            }
            KillReason::Idle { idle_ms, limit_ms } => write!(
                f,
                "idle for {idle_ms} ms (nothing written, claimed or delivered), over the \
                 {limit_ms} ms idle limit"
            ),
            KillReason::HeartbeatInFuture { ahead_ms } => write!(
                f,
                "heartbeat is {ahead_ms} ms in the future, more than clock skew explains"
            ),
            KillReason::ClaimStuck {
                message_id,
                claim_age_ms,
                tolerance_ms,
            } => write!(
                f,
                "message {message_id} claimed {claim_age_ms} ms ago with no heartbeat since \
                 (tolerance {tolerance_ms} ms)"
            ),
        }
    }
}

/// The heartbeat age above which the container is killed: max(30 min, declared `Bash` timeout).
pub fn heartbeat_limit_ms(tool: Option<&ToolInFlight>) -> i64 {
    extended(HEARTBEAT_CEILING_MS, tool)
}

/// The claim age above which a claim with no later heartbeat kills the container:
/// max(60 s, declared `Bash` timeout).
pub fn claim_tolerance_ms(tool: Option<&ToolInFlight>) -> i64 {
    extended(CLAIM_TOLERANCE_MS, tool)
}

fn extended(base: i64, tool: Option<&ToolInFlight>) -> i64 {
    tool.and_then(ToolInFlight::bash_timeout_ms)
        .map_or(base, |t| t.max(base))
}

/// Decides whether a running container is stuck. See the module documentation for the rules.
pub fn decide(
    now: Timestamp,
    heartbeat: Option<Timestamp>,
    tool: Option<&ToolInFlight>,
    claims: &[Claim],
) -> StuckDecision {
    // The container sets the heartbeat's mtime. Slightly ahead (clock skew between a VM and
    // its host) counts as now; far ahead is no heartbeat a live container writes, and would
    // keep a hung one below the ceiling forever.
    if let Some(ahead_ms) = heartbeat
        .map(|hb| hb.millis_since(now))
        .filter(|ahead| *ahead > MAX_HEARTBEAT_SKEW_MS)
    {
        return StuckDecision::Kill {
            reason: KillReason::HeartbeatInFuture { ahead_ms },
        };
    }
    let heartbeat = heartbeat.map(|hb| hb.min(now));
    if let Some(hb) = heartbeat {
        let age_ms = now.millis_since(hb);
        let limit_ms = heartbeat_limit_ms(tool);
        if age_ms > limit_ms {
            return StuckDecision::Kill {
                reason: KillReason::HeartbeatCeiling { age_ms, limit_ms },
            };
        }
    }
    let tolerance_ms = claim_tolerance_ms(tool);
    let mut worst: Option<(&Claim, i64)> = None;
    for claim in claims {
        let age = now.millis_since(claim.claimed_at);
        let heartbeat_since = heartbeat.is_some_and(|hb| hb > claim.claimed_at);
        if age > tolerance_ms && !heartbeat_since && worst.is_none_or(|(_, w)| age > w) {
            worst = Some((claim, age));
        }
    }
    match worst {
        Some((claim, claim_age_ms)) => StuckDecision::Kill {
            reason: KillReason::ClaimStuck {
                message_id: claim.message_id.clone(),
                claim_age_ms,
                tolerance_ms,
            },
        },
        None => StuckDecision::Healthy,
    }
}

/// How a message the container failed to finish is retried.
///
/// The first retry is immediate by default: a container is mostly killed or lost for reasons
/// that are not the message's (stuck on something else, the host restarting, a crash in a tool),
/// and a retry that waits while later messages are answered shows the user replies out of
/// order. A message that fails again backs off from its second retry on, doubling each time,
/// so a poison message costs a bounded number of container starts before it is marked failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The backoff of the first retry that waits, in milliseconds (default 5000); each later
    /// retry doubles it.
    pub base_backoff_ms: i64,
    /// How many retries a message gets before it is marked failed (default 5).
    pub max_tries: i64,
    /// The first retry is due at once (default true); off, it waits `base_backoff_ms` too.
    pub immediate_first_retry: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_backoff_ms: 5000,
            max_tries: 5,
            immediate_first_retry: true,
        }
    }
}

/// What to do with one claimed message still pending after its container stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Keep it pending with these values.
    Retry {
        /// The new `tries`.
        tries: i64,
        /// The new `process_after`.
        process_after: Timestamp,
    },
    /// Mark it failed.
    Fail,
}

impl RetryPolicy {
    /// The backoff before retry number `tries + 1`: `base x 2^tries` milliseconds, or with
    /// [`RetryPolicy::immediate_first_retry`] 0 for the first and `base x 2^(tries - 1)` after
    /// it (a negative `tries` counts as 0), never more than [`MAX_BACKOFF_MS`].
    pub fn backoff_ms(&self, tries: i64) -> i64 {
        let tries = tries.max(0);
        let tries = if self.immediate_first_retry {
            if tries == 0 {
                return 0;
            }
            tries - 1
        } else {
            tries
        };
        let exp = u32::try_from(tries).unwrap_or(u32::MAX);
        let factor = 2i64.checked_pow(exp).unwrap_or(i64::MAX);
        self.base_backoff_ms
            .max(0)
            .saturating_mul(factor)
            .min(MAX_BACKOFF_MS)
    }

    /// The next step for a message whose row has `tries` retries so far.
    ///
    /// The boundary: `tries < max_tries` retries, `tries >= max_tries` fails. With the default
    /// policy the backoffs are 0, 5, 10, 20 and 40 s for `tries` 0 to 4 (new `tries` 1 to 5);
    /// the sweep that then finds `tries = 5` marks the message failed. So a message is handed to
    /// a container at most six times: the first attempt and five retries. A negative `tries`
    /// (not written by any known writer) counts as 0.
    pub fn next_retry(&self, tries: i64, now: Timestamp) -> RetryAction {
        let tries = tries.max(0);
        if tries >= self.max_tries {
            return RetryAction::Fail;
        }
        RetryAction::Retry {
            tries: tries + 1,
            process_after: now.plus_millis(self.backoff_ms(tries)),
        }
    }
}

/// Whether a claimed message should get a retry step now: not when it is already scheduled for
/// a future retry (`process_after` strictly after `now`), so a sweep that runs again before the
/// retry is due does not bump it twice. `None` or a `process_after` at or before `now` bumps.
pub fn should_bump(process_after: Option<Timestamp>, now: Timestamp) -> bool {
    process_after.is_none_or(|p| p <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1000;

    fn t0() -> Timestamp {
        Timestamp::parse("2026-04-21T12:00:00.000Z").unwrap()
    }

    /// The instant `ms` milliseconds after (negative: before) t0.
    fn at(ms: i64) -> Timestamp {
        t0().plus_millis(ms)
    }

    fn tool(name: &str, timeout: Option<i64>) -> ToolInFlight {
        ToolInFlight {
            name: name.into(),
            declared_timeout_ms: timeout,
            started_at: Some(at(-1000)),
        }
    }

    fn claim(id: &str, ms: i64) -> Claim {
        Claim {
            message_id: id.into(),
            claimed_at: at(ms),
        }
    }

    fn ceiling(age_ms: i64, limit_ms: i64) -> StuckDecision {
        StuckDecision::Kill {
            reason: KillReason::HeartbeatCeiling { age_ms, limit_ms },
        }
    }

    fn stuck(id: &str, claim_age_ms: i64, tolerance_ms: i64) -> StuckDecision {
        StuckDecision::Kill {
            reason: KillReason::ClaimStuck {
                message_id: id.into(),
                claim_age_ms,
                tolerance_ms,
            },
        }
    }

    #[test]
    fn ceiling_table() {
        use StuckDecision::Healthy;
        let c = HEARTBEAT_CEILING_MS;
        let bash45 = tool("Bash", Some(45 * MIN));
        let read45 = tool("Read", Some(45 * MIN));
        let bash10 = tool("Bash", Some(10 * MIN));
        // (heartbeat offset from now, tool, expected); now = t0, no claims.
        let cases: Vec<(Option<i64>, Option<&ToolInFlight>, StuckDecision)> = vec![
            (None, None, Healthy), // fresh container: no heartbeat file yet
            (Some(-c + 1), None, Healthy),
            (Some(-c), None, Healthy), // exactly at the ceiling
            (Some(-c - 1), None, ceiling(c + 1, c)),
            (Some(-3 * c), None, ceiling(3 * c, c)),
            (Some(5 * MIN), None, Healthy), // clock skew: heartbeat in the future
            // A longer declared Bash timeout raises the ceiling.
            (Some(-c - 1), Some(&bash45), Healthy),
            (Some(-45 * MIN), Some(&bash45), Healthy),
            (
                Some(-45 * MIN - 1),
                Some(&bash45),
                ceiling(45 * MIN + 1, 45 * MIN),
            ),
            // The same timeout on another tool does not.
            (Some(-c - 1), Some(&read45), ceiling(c + 1, c)),
            // A shorter Bash timeout does not lower it.
            (Some(-c), Some(&bash10), Healthy),
            (Some(-c - 1), Some(&bash10), ceiling(c + 1, c)),
        ];
        for (i, (hb, tool, want)) in cases.into_iter().enumerate() {
            let got = decide(t0(), hb.map(at), tool, &[]);
            assert_eq!(got, want, "case {i}: heartbeat {hb:?} tool {tool:?}");
        }
    }

    #[test]
    fn claim_table() {
        use StuckDecision::Healthy;
        let tol = CLAIM_TOLERANCE_MS;
        let bash5 = tool("Bash", Some(5 * MIN));
        let grep5 = tool("Grep", Some(5 * MIN));
        // (heartbeat offset, claim offset, tool, expected); now = t0.
        let cases: Vec<(Option<i64>, i64, Option<&ToolInFlight>, StuckDecision)> = vec![
            // No heartbeat file at all.
            (None, -tol + 1, None, Healthy),
            (None, -tol, None, Healthy),
            (None, -tol - 1, None, stuck("m", tol + 1, tol)),
            // A heartbeat before the claim does not help.
            (Some(-tol - 5), -tol - 1, None, stuck("m", tol + 1, tol)),
            // A heartbeat at exactly the claim time is not "after" it.
            (Some(-tol - 1), -tol - 1, None, stuck("m", tol + 1, tol)),
            // A heartbeat 1 ms after the claim clears it.
            (Some(-tol), -tol - 1, None, Healthy),
            (Some(-1), -10 * MIN, None, Healthy),
            // Clock skew: heartbeat in the future is after the claim.
            (Some(MIN), -10 * MIN, None, Healthy),
            // A claim in the future is never stuck.
            (None, MIN, None, Healthy),
            // A Bash timeout widens the tolerance; another tool's does not.
            (None, -tol - 1, Some(&bash5), Healthy),
            (None, -5 * MIN, Some(&bash5), Healthy),
            (
                None,
                -5 * MIN - 1,
                Some(&bash5),
                stuck("m", 5 * MIN + 1, 5 * MIN),
            ),
            (None, -tol - 1, Some(&grep5), stuck("m", tol + 1, tol)),
        ];
        for (i, (hb, c, tool, want)) in cases.into_iter().enumerate() {
            let got = decide(t0(), hb.map(at), tool, &[claim("m", c)]);
            assert_eq!(
                got, want,
                "case {i}: heartbeat {hb:?} claim {c} tool {tool:?}"
            );
        }
    }

    #[test]
    fn no_claims_and_a_recent_heartbeat_is_healthy() {
        assert_eq!(
            decide(t0(), Some(at(-1)), None, &[]),
            StuckDecision::Healthy
        );
    }

    #[test]
    fn the_oldest_stuck_claim_is_named() {
        let claims = [
            claim("young", -2 * MIN),
            claim("old", -9 * MIN),
            claim("fresh", -1000),
            claim("old-twin", -9 * MIN),
        ];
        assert_eq!(
            decide(t0(), None, None, &claims),
            stuck("old", 9 * MIN, CLAIM_TOLERANCE_MS)
        );
    }

    #[test]
    fn a_heartbeat_between_claims_clears_only_the_earlier_ones() {
        let claims = [claim("early", -9 * MIN), claim("late", -3 * MIN)];
        assert_eq!(
            decide(t0(), Some(at(-5 * MIN)), None, &claims),
            stuck("late", 3 * MIN, CLAIM_TOLERANCE_MS)
        );
    }

    #[test]
    fn the_ceiling_wins_over_a_stuck_claim() {
        let hb = -HEARTBEAT_CEILING_MS - 1;
        let got = decide(t0(), Some(at(hb)), None, &[claim("m", -40 * MIN)]);
        assert_eq!(got, ceiling(HEARTBEAT_CEILING_MS + 1, HEARTBEAT_CEILING_MS));
    }

    #[test]
    fn limits_only_grow_for_bash_with_a_positive_timeout() {
        assert_eq!(heartbeat_limit_ms(None), HEARTBEAT_CEILING_MS);
        assert_eq!(claim_tolerance_ms(None), CLAIM_TOLERANCE_MS);
        let cases = [
            ("Bash", Some(2 * MIN), HEARTBEAT_CEILING_MS, 2 * MIN),
            ("Bash", Some(40 * MIN), 40 * MIN, 40 * MIN),
            ("Bash", None, HEARTBEAT_CEILING_MS, CLAIM_TOLERANCE_MS),
            ("Bash", Some(-5), HEARTBEAT_CEILING_MS, CLAIM_TOLERANCE_MS),
            (
                "bash",
                Some(40 * MIN),
                HEARTBEAT_CEILING_MS,
                CLAIM_TOLERANCE_MS,
            ),
            (
                "WebFetch",
                Some(40 * MIN),
                HEARTBEAT_CEILING_MS,
                CLAIM_TOLERANCE_MS,
            ),
        ];
        for (name, timeout, hb, claim) in cases {
            let t = tool(name, timeout);
            assert_eq!(heartbeat_limit_ms(Some(&t)), hb, "{name} {timeout:?}");
            assert_eq!(claim_tolerance_ms(Some(&t)), claim, "{name} {timeout:?}");
        }
    }

    #[test]
    fn kill_reasons_read_well_in_logs() {
        let r = KillReason::ClaimStuck {
            message_id: "msg-1".into(),
            claim_age_ms: 61_000,
            tolerance_ms: 60_000,
        };
        assert_eq!(
            r.to_string(),
            "message msg-1 claimed 61000 ms ago with no heartbeat since (tolerance 60000 ms)"
        );
        let r = KillReason::HeartbeatCeiling {
            age_ms: 1_800_001,
            limit_ms: 1_800_000,
        };
        assert_eq!(
            r.to_string(),
            "heartbeat is 1800001 ms old, over the 1800000 ms ceiling"
        );
    }

    #[test]
    fn a_declared_timeout_counts_at_most_two_hours() {
        let huge = tool("Bash", Some(i64::MAX));
        assert_eq!(heartbeat_limit_ms(Some(&huge)), MAX_DECLARED_TIMEOUT_MS);
        assert_eq!(claim_tolerance_ms(Some(&huge)), MAX_DECLARED_TIMEOUT_MS);
        // Hung with the largest declaration there is: killed once past the cap.
        let d = decide(
            at(MAX_DECLARED_TIMEOUT_MS + 1),
            Some(at(0)),
            Some(&huge),
            &[],
        );
        assert!(matches!(
            d,
            StuckDecision::Kill {
                reason: KillReason::HeartbeatCeiling { .. }
            }
        ));
    }

    #[test]
    fn a_heartbeat_far_in_the_future_kills_and_a_slightly_early_one_counts_as_now() {
        let d = decide(t0(), Some(at(MAX_HEARTBEAT_SKEW_MS + 1)), None, &[]);
        assert!(matches!(
            d,
            StuckDecision::Kill {
                reason: KillReason::HeartbeatInFuture { .. }
            }
        ));
        assert_eq!(
            decide(t0(), Some(at(MAX_HEARTBEAT_SKEW_MS)), None, &[]),
            StuckDecision::Healthy
        );
    }

    #[test]
    fn retry_table() {
        let p = RetryPolicy::default();
        assert_eq!(p.base_backoff_ms, 5000);
        assert_eq!(p.max_tries, 5);
        assert!(p.immediate_first_retry);
        let cases = [
            (-3, Some((1, 0))),
            (0, Some((1, 0))), // the first retry is immediate: replies stay in order
            (1, Some((2, 5_000))),
            (2, Some((3, 10_000))),
            (3, Some((4, 20_000))),
            (4, Some((5, 40_000))), // the last retry
            (5, None),              // exactly at max_tries: failed
            (6, None),
            (i64::MAX, None),
        ];
        for (tries, want) in cases {
            let got = p.next_retry(tries, t0());
            let want = match want {
                Some((n, backoff)) => RetryAction::Retry {
                    tries: n,
                    process_after: at(backoff),
                },
                None => RetryAction::Fail,
            };
            assert_eq!(got, want, "tries {tries}");
        }
    }

    #[test]
    fn a_message_gets_five_retries_then_fails() {
        let p = RetryPolicy::default();
        let mut tries = 0;
        let mut retries = 0;
        while let RetryAction::Retry { tries: next, .. } = p.next_retry(tries, t0()) {
            assert_eq!(next, tries + 1);
            tries = next;
            retries += 1;
        }
        assert_eq!(retries, 5);
        assert_eq!(tries, 5);
    }

    #[test]
    fn custom_policies_are_bounded() {
        let p = RetryPolicy {
            base_backoff_ms: 1000,
            max_tries: 1000,
            immediate_first_retry: false,
        };
        assert_eq!(p.backoff_ms(0), 1000);
        assert_eq!(p.backoff_ms(3), 8000);
        assert_eq!(p.backoff_ms(62), MAX_BACKOFF_MS);
        assert_eq!(p.backoff_ms(900), MAX_BACKOFF_MS);
        assert_eq!(
            p.next_retry(900, t0()),
            RetryAction::Retry {
                tries: 901,
                process_after: at(MAX_BACKOFF_MS)
            }
        );
        let never = RetryPolicy {
            base_backoff_ms: 5000,
            max_tries: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(never.next_retry(0, t0()), RetryAction::Fail);
        let negative = RetryPolicy {
            base_backoff_ms: -5,
            max_tries: 5,
            ..RetryPolicy::default()
        };
        assert_eq!(negative.backoff_ms(2), 0);
    }

    #[test]
    fn should_bump_table() {
        let cases = [
            (None, true),
            (Some(-MIN), true),
            (Some(-1), true),
            (Some(0), true), // due exactly now: not in the future
            (Some(1), false),
            (Some(80_000), false),
        ];
        for (pa, want) in cases {
            assert_eq!(should_bump(pa.map(at), t0()), want, "process_after {pa:?}");
        }
    }

    #[test]
    fn a_retry_is_not_bumped_again_before_it_is_due() {
        let p = RetryPolicy::default();
        let RetryAction::Retry { process_after, .. } = p.next_retry(2, t0()) else {
            panic!("tries 2 retries");
        };
        assert!(!should_bump(Some(process_after), at(9_999)));
        assert!(should_bump(Some(process_after), at(10_000)));
    }

    proptest::proptest! {
        #[test]
        fn decide_never_panics(
            hb in proptest::option::of(-10_000_000_000i64..10_000_000_000),
            name in "(Bash|Read)",
            timeout in proptest::option::of(proptest::num::i64::ANY),
            claims in proptest::collection::vec(-10_000_000_000i64..10_000_000_000, 0..5),
        ) {
            let t = tool(&name, timeout);
            let claims: Vec<Claim> = claims.iter().map(|c| claim("x", *c)).collect();
            let _ = decide(t0(), hb.map(at), Some(&t), &claims);
        }

        #[test]
        fn a_heartbeat_within_a_minute_is_always_healthy(
            hb in -CLAIM_TOLERANCE_MS..=0i64,
            claims in proptest::collection::vec(-10_000_000i64..0, 0..5),
        ) {
            // Claims made before the heartbeat are cleared by it; claims after it are at most a
            // minute old, within tolerance.
            let claims: Vec<Claim> = claims.iter().map(|c| claim("x", *c)).collect();
            proptest::prop_assert_eq!(decide(t0(), Some(at(hb)), None, &claims), StuckDecision::Healthy);
        }

        #[test]
        fn backoff_is_monotonic_and_bounded(a in 0i64..100, b in 0i64..100) {
            let p = RetryPolicy::default();
            let (lo, hi) = (a.min(b), a.max(b));
            proptest::prop_assert!(p.backoff_ms(lo) <= p.backoff_ms(hi));
            proptest::prop_assert!(p.backoff_ms(hi) <= MAX_BACKOFF_MS);
        }
    }
}
