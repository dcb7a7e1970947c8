//! What the check reads: the session files through plain read-only connections (integrity,
//! settled or not) and the ledger and event logs the processes append to.

use crate::soak::Layout;
use rusqlite::{Connection, OpenFlags};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

pub(super) fn open_ro(path: &Path) -> Result<Connection, String> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    c.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    c.execute_batch("PRAGMA mmap_size = 0")
        .map_err(|e| e.to_string())?;
    Ok(c)
}

pub(super) fn journal(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-journal");
    s.into()
}

/// `PRAGMA integrity_check` and the journal mode of one file; a file with a journal next to
/// it (a writer at work, or a hot journal awaiting its writer) is left for the final check.
pub fn integrity_now(path: &Path) -> Result<(), String> {
    if journal(path).exists() {
        return Ok(());
    }
    integrity(path)
}

pub(super) fn integrity(path: &Path) -> Result<(), String> {
    let c = open_ro(path)?;
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| format!("integrity_check: {e}"))?;
    if rows != ["ok"] {
        return Err(format!("integrity_check: {}", rows.join("; ")));
    }
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("journal mode is {mode}, not delete"));
    }
    Ok(())
}

fn strings(c: &Connection, sql: &str) -> Result<Vec<String>, String> {
    c.prepare(sql)
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| format!("{sql}: {e}"))
}

fn count(c: &Connection, sql: &str) -> Result<i64, String> {
    c.query_row(sql, [], |r| r.get(0))
        .map_err(|e| format!("{sql}: {e}"))
}

/// Whether every listed session is settled: no pending message that wakes the agent, no
/// claim of a pending message, every reply delivered. (A claim on a message the host has
/// settled stays in outbound.db until the next container starts: after a handler failure on
/// the last try, say, the message is `failed` and nothing wakes a container again.)
pub fn settled(layout: &Layout, sessions: &[usize]) -> bool {
    sessions.iter().all(|i| {
        let dir = layout.session(*i);
        let attempt = || -> Result<bool, String> {
            let inbound = open_ro(&dir.join("inbound.db"))?;
            let outbound = open_ro(&sessionbus_store::SessionPaths::new(&dir).outbound)?;
            let pending = count(
                &inbound,
                "SELECT count(*) FROM messages_in \
                 WHERE coalesce(status, 'pending') = 'pending' AND trigger = 1",
            )?;
            if pending > 0 {
                return Ok(false);
            }
            let still: HashSet<String> = strings(
                &inbound,
                "SELECT id FROM messages_in WHERE coalesce(status, 'pending') = 'pending'",
            )?
            .into_iter()
            .collect();
            let claimed = strings(
                &outbound,
                "SELECT message_id FROM processing_ack WHERE status = 'processing'",
            )?;
            if claimed.iter().any(|id| still.contains(id)) {
                return Ok(false);
            }
            let delivered: HashSet<String> =
                strings(&inbound, "SELECT message_out_id FROM delivered")?
                    .into_iter()
                    .collect();
            let mut out = strings(&outbound, "SELECT id FROM messages_out")?;
            out.extend(strings(&inbound, "SELECT id FROM host_replies")?);
            Ok(out.iter().all(|id| delivered.contains(id)))
        };
        attempt().unwrap_or(false)
    })
}

/// A line of a ledger or event file: the real time and the fields.
pub(super) fn lines(dir: &Path, prefix: &str) -> Vec<(i64, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for l in text.lines() {
            let mut fields = l.split('\t');
            let Some(ms) = fields.next().and_then(|m| m.parse().ok()) else {
                continue;
            };
            out.push((ms, fields.map(str::to_string).collect()));
        }
    }
    out
}
