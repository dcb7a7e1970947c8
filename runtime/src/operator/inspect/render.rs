//! `sessionbus inspect`'s text report, for a person.

use super::InspectReport;
use crate::operator::human_ms;
use std::fmt::Write as _;

fn ago(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 0 => format!("{} ago", human_ms(ms)),
        Some(ms) => format!("{} in the future (clock skew?)", human_ms(-ms)),
        None => "at an unreadable time".into(),
    }
}

fn seq_text(seq: Option<i64>) -> String {
    seq.map_or_else(|| "seq ?".into(), |s| format!("seq {s}"))
}

/// The report as text, for a person.
pub fn render(r: &InspectReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "session {}", r.session.display());
    let layout = match r.layout {
        sessionbus_store::Layout::Split => "split (the container writes only container/)",
        sessionbus_store::Layout::Single => {
            "SINGLE (the container can write the folder holding inbound.db)"
        }
    };
    let _ = writeln!(o, "layout {layout}");
    let _ = writeln!(o, "inspected at {} (read-only: nothing was written)", r.now);

    let _ = writeln!(o, "\nfiles");
    for f in &r.files {
        let name = f.kind.file_name();
        let size = match f.size {
            _ if f.missing => "missing".to_string(),
            Some(s) => format!("{s} bytes"),
            None => "not a regular file".to_string(),
        };
        let schema = match &f.schema {
            Some(s) => match s.state {
                "current" => format!(
                    "current schema (version {}, {} migrations)",
                    s.version.as_deref().unwrap_or("?"),
                    s.applied
                ),
                "older" => format!(
                    "OLDER schema (version {}, {} migration(s) pending)",
                    s.version.as_deref().unwrap_or("none"),
                    s.pending.len()
                ),
                "legacy" => format!(
                    "LEGACY {} file, never migrated",
                    s.legacy_generation.as_deref().unwrap_or("?")
                ),
                _ => "EMPTY (no tables)".to_string(),
            },
            None => "schema unknown (not read)".to_string(),
        };
        let mut extra = String::new();
        if f.wal_mode && f.read == "snapshot" {
            extra.push_str(", WAL MODE (read as a snapshot)");
        } else if f.wal_mode {
            extra.push_str(", WAL MODE (not read)");
        }
        if f.untrusted {
            extra.push_str(", read as the container's (untrusted)");
        }
        if let Some(j) = &f.journal {
            let _ = write!(extra, ", journal {} present", j.display());
        }
        let _ = writeln!(o, "  {name:<12} {schema}, {size}{extra}");
    }

    let _ = writeln!(o, "\ninbound.db (the host writes it)");
    match &r.inbound {
        None => {
            let _ = writeln!(o, "  not read (see problems)");
        }
        Some(i) => {
            let statuses: Vec<String> = i
                .by_status
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "  messages by status: {}", statuses.join(", "));
            let _ = writeln!(
                o,
                "  due now (pending, waking the agent, not scheduled later): {}",
                i.due_count
            );
            for m in &i.due {
                let _ = writeln!(
                    o,
                    "    {:<8} {}  written {}  tries {}  {:?}",
                    seq_text(m.seq),
                    m.id,
                    ago(m.age_ms),
                    m.tries,
                    m.text
                );
            }
            let _ = writeln!(
                o,
                "  scheduled for later (a retry or a task): {}",
                i.scheduled_count
            );
            for m in &i.scheduled {
                let due = m
                    .due_in_ms
                    .map_or_else(|| "?".into(), |d| human_ms(d.max(0)));
                let _ = writeln!(
                    o,
                    "    {:<8} {}  due in {due}  tries {}  {:?}",
                    seq_text(m.seq),
                    m.id,
                    m.tries,
                    m.text
                );
            }
            let _ = writeln!(
                o,
                "  host replies: {}, delivered rows: {}",
                i.host_replies, i.delivered
            );
        }
    }

    let _ = writeln!(o, "\noutbound.db (the container writes it)");
    match &r.outbound {
        None => {
            let _ = writeln!(o, "  not read (see problems)");
        }
        Some(out) => {
            let acks: Vec<String> = out.acks.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                o,
                "  replies written: {}; acks: {}",
                out.messages_out,
                if acks.is_empty() {
                    "none".into()
                } else {
                    acks.join(", ")
                }
            );
            let _ = writeln!(o, "  claimed now (processing acks): {}", out.claim_count);
            for c in &out.claims {
                let status = c.status.as_deref().map_or_else(
                    || "not in inbound.db".to_string(),
                    |s| format!("{s} in inbound.db"),
                );
                let _ = writeln!(
                    o,
                    "    {} ({}, {status}) claimed {}",
                    c.message_id,
                    seq_text(c.seq),
                    ago(c.age_ms)
                );
            }
            match &out.tool {
                None => {
                    let _ = writeln!(o, "  tool in flight: none");
                }
                Some(t) => {
                    let timeout = t.declared_timeout_ms.map_or_else(
                        || "no declared timeout".into(),
                        |ms| format!("declared timeout {}", human_ms(ms)),
                    );
                    let _ = writeln!(
                        o,
                        "  tool in flight: {} ({timeout}), started {}",
                        t.name,
                        ago(t.running_ms)
                    );
                }
            }
        }
    }

    match (&r.undelivered, r.undelivered_count) {
        (Some(rows), Some(n)) => {
            let more = if r.undelivered_count_complete {
                ""
            } else {
                " (at least: the count stopped scanning)"
            };
            let _ = writeln!(o, "\nundelivered replies: {n}{more}");
            for u in rows {
                let to = u.in_reply_to.as_deref().unwrap_or("-");
                let after = u
                    .deliver_after
                    .as_deref()
                    .map_or_else(String::new, |d| format!("  deliver after {d}"));
                let err = u
                    .last_error
                    .as_deref()
                    .map_or_else(String::new, |e| format!("  last error: {e}"));
                let _ = writeln!(
                    o,
                    "  {:<8} {:<9} {}  in reply to {to}  written {}  attempts {}{after}{err}  {:?}",
                    seq_text(u.seq),
                    u.source,
                    u.id,
                    ago(u.age_ms),
                    u.attempts,
                    u.text
                );
            }
        }
        _ => {
            let _ = writeln!(o, "\nundelivered replies: unknown (both files are needed)");
        }
    }

    let _ = writeln!(
        o,
        "\nheartbeat: {}",
        match (&r.heartbeat.mtime, r.heartbeat.age_ms) {
            (Some(m), age) => format!("touched {} ({m})", ago(age)),
            _ => "none yet (no .heartbeat file: no container has started, or it is just starting)"
                .into(),
        }
    );

    let _ = writeln!(
        o,
        "\nstuck decision now (what the host's sweep does while a container runs)"
    );
    match &r.stuck_decision {
        None => {
            let _ = writeln!(o, "  unknown: outbound.db could not be read (see problems)");
        }
        Some(d) => {
            match &d.reason {
                None => {
                    let _ = writeln!(o, "  healthy: leave the container running");
                }
                Some(reason) => {
                    let _ = writeln!(o, "  KILL: {reason}");
                }
            }
            if d.would_retry.is_empty() {
                let _ = writeln!(o, "  with no container running: nothing to retry");
            } else {
                let _ = writeln!(
                    o,
                    "  with no container running: the sweep retries the claim(s) of {} and \
                     deletes them",
                    d.would_retry.join(", ")
                );
            }
        }
    }

    if r.problems.is_empty() {
        let _ = writeln!(o, "\nproblems: none");
    } else {
        let _ = writeln!(o, "\nproblems: {}", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(o, "  - {p}");
        }
    }
    o
}
