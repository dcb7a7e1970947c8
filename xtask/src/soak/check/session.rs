//! One healthy session's files against the ledgers: integrity, seqs, replies, deliveries, the
//! special messages, and isolation from the broken session.

use super::files::{integrity, journal, open_ro};
use super::Report;
use crate::soak::proc::Special;
use crate::soak::{Layout, RunConfig};
use rusqlite::Connection;
use sessionbus_schema::{DbFile, FileKind, Role};
use sessionbus_store::HOST_REPLY_KIND;
use std::collections::{HashMap, HashSet};

struct InRow {
    seq: Option<i64>,
    status: String,
    tries: i64,
    trigger: i64,
    special: Option<Special>,
    /// A host reply's mirror (kind `host-reply`), not a message.
    mirror: bool,
}

struct OutRow {
    id: String,
    seq: Option<i64>,
    in_reply_to: Option<String>,
}

/// For a message still pending after the drain: a note when context rows newer than it are
/// pending too. The container's poll hands out the newest due rows, up to
/// `maxMessagesPerPrompt`: when those are all context rows the batch wakes nothing, and an
/// older message waits until a newer one that wakes the agent arrives.
fn behind_context(ins: &HashMap<String, InRow>, m: &InRow) -> String {
    let newer = ins
        .values()
        .filter(|o| o.status == "pending" && o.trigger == 0 && !o.mirror && o.seq > m.seq)
        .count();
    if newer == 0 {
        String::new()
    } else {
        format!(
            ", behind {newer} newer pending context row(s): a batch of the newest due rows \
             that holds only context wakes nothing"
        )
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn check_session(
    layout: &Layout,
    cfg: &RunConfig,
    i: usize,
    written: &[(i64, Vec<String>)],
    handed: &HashMap<String, Vec<i64>>,
    broke_at: Option<i64>,
    r: &mut Report,
) {
    let sid = Layout::sid(i);
    let dir = layout.session(i);
    let inbound_path = dir.join("inbound.db");
    let outbound_path = sessionbus_store::SessionPaths::new(&dir).outbound;

    // Roll back what killed writers left, the library's way (its writer open), then check.
    for (path, kind) in [
        (&inbound_path, FileKind::Inbound),
        (&outbound_path, FileKind::Outbound),
    ] {
        if journal(path).exists() {
            if let Err(e) = DbFile::new(path, kind, Role::Host).open_writer("soak: recover") {
                r.problem(format!(
                    "{}: cannot recover the hot journal: {e}",
                    path.display()
                ));
            }
        }
        if let Err(e) = integrity(path) {
            r.corrupt += 1;
            r.problem(format!("{}: {e}", path.display()));
        }
    }

    let read = || -> Result<_, String> {
        let inbound = open_ro(&inbound_path)?;
        let outbound = open_ro(&outbound_path)?;
        let mut ins: HashMap<String, InRow> = HashMap::new();
        let mut st = inbound
            .prepare(
                "SELECT id, seq, coalesce(status, 'pending'), coalesce(tries, 0), trigger, \
                 content, kind = ?1 FROM messages_in",
            )
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([HOST_REPLY_KIND], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    InRow {
                        seq: row.get(1)?,
                        status: row.get(2)?,
                        tries: row.get(3)?,
                        trigger: row.get(4)?,
                        special: row
                            .get::<_, Option<String>>(5)?
                            .and_then(|c| serde_json::from_str::<serde_json::Value>(&c).ok())
                            .and_then(|v| {
                                v.get("text")
                                    .and_then(|t| t.as_str())
                                    .and_then(Special::of_text)
                            }),
                        mirror: row.get::<_, Option<bool>>(6)?.unwrap_or(false),
                    },
                ))
            })
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (id, row) = row.map_err(|e| e.to_string())?;
            ins.insert(id, row);
        }
        let outs = |c: &Connection, sql: &str| -> Result<Vec<OutRow>, String> {
            c.prepare(sql)
                .and_then(|mut st| {
                    st.query_map([], |row| {
                        Ok(OutRow {
                            id: row.get(0)?,
                            seq: row.get(1)?,
                            in_reply_to: row.get(2)?,
                        })
                    })?
                    .collect::<Result<_, _>>()
                })
                .map_err(|e| format!("{sql}: {e}"))
        };
        let host_replies = outs(&inbound, "SELECT id, seq, in_reply_to FROM host_replies")?;
        let messages_out = outs(&outbound, "SELECT id, seq, in_reply_to FROM messages_out")?;
        let delivered: HashMap<String, String> = inbound
            .prepare("SELECT message_out_id, status FROM delivered")
            .and_then(|mut st| {
                st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| e.to_string())?;
        // Why the handler last failed on each message (the container's notes).
        let notes: HashMap<String, String> = outbound
            .prepare("SELECT message_id, reason FROM failure_notes")
            .and_then(|mut st| {
                st.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| e.to_string())?;
        Ok((ins, host_replies, messages_out, delivered, notes))
    };
    let (mut ins, host_replies, messages_out, delivered, notes) = match read() {
        Ok(v) => v,
        Err(e) => {
            r.corrupt += 1;
            r.problem(format!("{sid}: cannot read the files: {e}"));
            return;
        }
    };

    // Host replies' mirrors: each the same id and seq as its reply; then set aside.
    let reply_seqs: HashMap<&str, Option<i64>> = host_replies
        .iter()
        .map(|m| (m.id.as_str(), m.seq))
        .collect();
    ins.retain(|id, m| {
        if !m.mirror {
            return true;
        }
        match reply_seqs.get(id.as_str()) {
            Some(seq) if *seq == m.seq => {}
            Some(seq) => {
                r.seq_collisions += 1;
                r.problem(format!(
                    "{sid}: host reply {id} has seq {seq:?} but its messages_in mirror {:?}",
                    m.seq
                ));
            }
            None => {
                r.duplicated += 1;
                r.problem(format!("{sid}: messages_in mirror {id} of no host reply"));
            }
        }
        false
    });

    // Seqs: unique over both files, parity by side, replies after what they answer.
    let mut seqs: HashMap<i64, usize> = HashMap::new();
    for (id, m) in &ins {
        match m.seq {
            Some(s) if s % 2 == 0 => *seqs.entry(s).or_default() += 1,
            other => {
                r.parity_breaks += 1;
                r.problem(format!("{sid}: messages_in {id} has seq {other:?}"));
                if let Some(s) = other {
                    *seqs.entry(s).or_default() += 1;
                }
            }
        }
    }
    for (table, rows, even) in [
        ("host_replies", &host_replies, true),
        ("messages_out", &messages_out, false),
    ] {
        for m in rows {
            match m.seq {
                Some(s) if (s % 2 == 0) == even => *seqs.entry(s).or_default() += 1,
                other => {
                    r.parity_breaks += 1;
                    r.problem(format!("{sid}: {table} {} has seq {other:?}", m.id));
                    if let Some(s) = other {
                        *seqs.entry(s).or_default() += 1;
                    }
                }
            }
        }
    }
    for (s, n) in &seqs {
        if *n > 1 {
            r.seq_collisions += (*n - 1) as u64;
            r.problem(format!("{sid}: seq {s} used {n} times"));
        }
    }

    // Replies per message.
    let mut replies: HashMap<&str, Vec<&OutRow>> = HashMap::new();
    for m in &messages_out {
        match m.in_reply_to.as_deref() {
            Some(to) => replies.entry(to).or_default().push(m),
            None => {
                r.duplicated += 1;
                r.problem(format!("{sid}: messages_out {} answers nothing", m.id));
            }
        }
        if let (Some(to), Some(seq)) = (m.in_reply_to.as_deref(), m.seq) {
            match ins.get(to) {
                Some(q) if q.seq.is_some_and(|qs| qs < seq) => {}
                Some(q) => {
                    r.order_breaks += 1;
                    r.problem(format!(
                        "{sid}: reply {} (seq {seq}) sorts before {to} (seq {:?})",
                        m.id, q.seq
                    ));
                }
                None => {
                    r.duplicated += 1;
                    r.problem(format!(
                        "{sid}: reply {} answers unknown message {to}",
                        m.id
                    ));
                }
            }
        }
    }
    let mut denials: HashMap<&str, usize> = HashMap::new();
    for m in &host_replies {
        if let Some(to) = m.in_reply_to.as_deref() {
            *denials.entry(to).or_default() += 1;
        }
    }

    // Every reply delivered, once.
    for m in messages_out.iter().chain(host_replies.iter()) {
        let attempts = handed.get(&m.id).map_or(&[][..], Vec::as_slice);
        match delivered.get(&m.id).map(String::as_str) {
            None => {
                r.lost += 1;
                r.problem(format!("{sid}: reply {} was never delivered", m.id));
            }
            Some("delivered") if attempts.is_empty() => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: reply {} is recorded delivered but was never handed over",
                    m.id
                ));
            }
            Some("delivered") => {}
            Some(other) => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: reply {} recorded {other} after {} attempts",
                    m.id,
                    attempts.len()
                ));
            }
        }
        let firsts = attempts.iter().filter(|a| **a == 1).count();
        if firsts > 1 {
            r.duplicated += 1;
            r.problem(format!(
                "{sid}: reply {} handed over {firsts} times as a first attempt",
                m.id
            ));
        }
        r.redelivered += attempts.len().saturating_sub(1) as u64;
    }

    // Every message: answered exactly once, or failed after the last try.
    let mut answered_ids: HashSet<&str> = HashSet::new();
    for (id, m) in &ins {
        r.messages += 1;
        let n = replies.get(id.as_str()).map_or(0, Vec::len);
        if m.trigger == 0 {
            r.context += 1;
            if n > 0 {
                r.duplicated += 1;
                r.problem(format!("{sid}: context row {id} got {n} replies"));
            }
            continue;
        }
        match m.special {
            Some(Special::PanicOnce) => r.panic_once += 1,
            Some(Special::HangOnce) => r.hang_once += 1,
            Some(Special::Poison) => r.poison += 1,
            None => {}
        }
        if m.special == Some(Special::Poison) {
            match (m.status.as_str(), n) {
                ("failed", 0) if m.tries >= cfg.max_tries => {
                    r.failed += 1;
                    r.poison_failed += 1;
                }
                ("failed", 0) => {
                    r.lost += 1;
                    r.problem(format!(
                        "{sid}: poison message {id} failed after only {} tries",
                        m.tries
                    ));
                }
                (status, 0) => {
                    r.lost += 1;
                    r.problem(format!(
                        "{sid}: poison message {id} is still {status} (tries {}) after the \
                         drain{}",
                        m.tries,
                        behind_context(&ins, m)
                    ));
                }
                (status, n) => {
                    r.poison_answered += 1;
                    r.problem(format!(
                        "{sid}: poison message {id} got {n} replies (status {status})"
                    ));
                }
            }
            continue;
        }
        match (m.status.as_str(), n) {
            ("completed", 1) => {
                r.answered += 1;
                answered_ids.insert(id);
            }
            ("failed", _)
                if notes
                    .get(id)
                    .is_some_and(|why| why.contains("poison message")) =>
            {
                r.collateral += 1;
                r.problem(format!(
                    "{sid}: {id} ended failed after sharing a batch with a poison message: {}",
                    notes.get(id).map_or("", String::as_str)
                ));
            }
            ("failed", _) if m.special.is_some() => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: {} message {id} ended failed (tries {}); the handler fails on it \
                     only once",
                    m.special.map_or("?", Special::name),
                    m.tries
                ));
            }
            ("completed", 0) => {
                r.lost += 1;
                r.problem(format!("{sid}: {id} completed without a reply"));
            }
            ("failed", 0 | 1) if m.tries >= cfg.max_tries => r.failed += 1,
            ("failed", 0 | 1) => {
                r.lost += 1;
                r.problem(format!("{sid}: {id} failed after only {} tries", m.tries));
            }
            (_, n) if n > 1 => {
                r.duplicated += 1;
                r.problem(format!("{sid}: {id} answered {n} times"));
            }
            (status, _) => {
                r.lost += 1;
                r.problem(format!(
                    "{sid}: {id} is still {status} (tries {}) after the drain{}",
                    m.tries,
                    behind_context(&ins, m)
                ));
            }
        }
    }
    for (to, n) in &denials {
        r.messages += 1;
        if ins.contains_key(*to) {
            r.duplicated += 1;
            r.problem(format!("{sid}: {to} was both written and denied"));
        } else if *n == 1 {
            r.answered += 1;
            answered_ids.insert(to);
        } else {
            r.duplicated += 1;
            r.problem(format!("{sid}: denied command {to} answered {n} times"));
        }
    }

    // The ledger: what a writer saw committed is in the file, with the seq it was given.
    let mut after_break = (0u64, 0u64);
    for (ms, f) in written.iter().filter(|(_, f)| f.first() == Some(&sid)) {
        let (Some(id), Some(kind)) = (f.get(1), f.get(2)) else {
            continue;
        };
        let seq: Option<i64> = f.get(3).and_then(|s| s.parse().ok());
        match kind.as_str() {
            "denied" => {
                if !denials.contains_key(id.as_str()) {
                    r.lost += 1;
                    r.messages += 1;
                    r.problem(format!("{sid}: denied {id} has no host reply"));
                }
            }
            "filtered" => {
                if ins.contains_key(id) || replies.contains_key(id.as_str()) {
                    r.duplicated += 1;
                    r.problem(format!("{sid}: filtered {id} reached the files"));
                }
                continue;
            }
            _ => match ins.get(id) {
                None => {
                    r.lost += 1;
                    r.messages += 1;
                    r.problem(format!(
                        "{sid}: {id} was committed but is not in messages_in"
                    ));
                }
                Some(m) if m.seq != seq => {
                    r.seq_collisions += 1;
                    r.problem(format!(
                        "{sid}: {id} was written as seq {seq:?} but the file says {:?}",
                        m.seq
                    ));
                }
                Some(_) => {}
            },
        }
        if broke_at.is_some_and(|b| *ms > b) && kind != "context" {
            after_break.0 += 1;
            after_break.1 += u64::from(answered_ids.contains(id.as_str()));
        }
    }
    if after_break.0 > 0 && after_break.1 == 0 {
        r.isolation_breaks += 1;
        r.problem(format!(
            "{sid}: none of the {} messages written after the broken session broke was answered",
            after_break.0
        ));
    }
}
