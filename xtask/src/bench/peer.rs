//! `--peer`: the older implementation's idle polls (a Node reproduction of docs/protocol.md
//! section 3's statements, `xtask/bench-peer/peer.js`, on better-sqlite3) on the very session
//! files the idle-poll workload measured, so the three columns compare like with like. When
//! Node or better-sqlite3 is missing the peer column says why and the bench goes on.

use super::{progress, Figure};
use serde::Serialize;
use sessionbus_store::SessionPaths;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The peer's figures for one history size.
#[derive(Debug, Clone, Serialize)]
pub struct PeerPoint {
    /// Finished messages in the session.
    pub history: u64,
    /// Polls per run.
    pub ops: usize,
    /// `pending_poll`, `due_outbound`, `ack_sync`: microseconds per poll over the runs.
    pub polls: Vec<(String, Figure)>,
}

/// The peer column.
#[derive(Debug, Clone, Serialize)]
pub struct Peer {
    /// Whether the peer ran.
    pub available: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// better-sqlite3's version, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub better_sqlite3: Option<String>,
    /// Node's version, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Per history size.
    pub points: Vec<PeerPoint>,
}

impl Peer {
    fn unavailable(reason: String) -> Peer {
        Peer {
            available: false,
            reason: Some(reason),
            better_sqlite3: None,
            node: None,
            points: Vec::new(),
        }
    }

    /// The peer's median for `poll` at `history`.
    pub fn median(&self, poll: &str, history: u64) -> Option<f64> {
        self.points
            .iter()
            .find(|p| p.history == history)
            .and_then(|p| p.polls.iter().find(|(name, _)| name == poll))
            .map(|(_, f)| f.median)
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-peer/peer.js")
}

/// Runs the peer on each `(history, session)`; `ops` polls per run at the smallest history,
/// fewer at larger ones (its polls grow with history: at least 3).
pub fn measure(histories: &[(u64, SessionPaths)], ops: usize, runs: usize) -> Peer {
    let script = script();
    if !script.is_file() {
        return Peer::unavailable(format!("{} is missing", script.display()));
    }
    let mut peer = Peer {
        available: true,
        reason: None,
        better_sqlite3: None,
        node: None,
        points: Vec::new(),
    };
    for (h, paths) in histories {
        let scaled = (ops as u64 * 1_000 / (*h).max(1)).clamp(3, ops.max(3) as u64) as usize;
        progress(&format!(
            "peer (older implementation's statements, Node): history {h}, {scaled} polls x {runs} runs"
        ));
        // Its ack sync writes inbound.db (an UPDATE per completed ack, changing nothing here):
        // run on copies, so the library's files stay as they were.
        let copy = |from: &Path| -> Result<PathBuf, String> {
            let to = from.with_extension("peer.db");
            std::fs::copy(from, &to).map_err(|e| format!("copy {}: {e}", from.display()))?;
            Ok(to)
        };
        let files = copy(&paths.inbound).and_then(|i| Ok((i, copy(&paths.outbound)?)));
        let (inbound, outbound) = match files {
            Ok(f) => f,
            Err(e) => return Peer::unavailable(e),
        };
        let out = Command::new("node")
            .arg(&script)
            .arg(&inbound)
            .arg(&outbound)
            .arg(scaled.to_string())
            .arg(runs.max(1).to_string())
            .output();
        let _ = std::fs::remove_file(&inbound);
        let _ = std::fs::remove_file(&outbound);
        let out = match out {
            Ok(o) => o,
            Err(e) => return Peer::unavailable(format!("cannot run node: {e}")),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = match serde_json::from_str(text.trim()) {
            Ok(v) => v,
            Err(e) => {
                return Peer::unavailable(format!(
                    "peer printed no report ({e}; exit {}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        if v["available"] != serde_json::Value::Bool(true) {
            return Peer::unavailable(
                v["reason"]
                    .as_str()
                    .unwrap_or("the peer reported itself unavailable")
                    .to_string(),
            );
        }
        peer.better_sqlite3 = v["better_sqlite3"].as_str().map(str::to_string);
        peer.node = v["node"].as_str().map(str::to_string);
        let polls = ["pending_poll", "due_outbound", "ack_sync"]
            .iter()
            .map(|name| {
                let runs: Vec<f64> = v["polls"][*name]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                    .unwrap_or_default();
                (name.to_string(), Figure::of(runs))
            })
            .collect();
        peer.points.push(PeerPoint {
            history: *h,
            ops: scaled,
            polls,
        });
    }
    peer
}
