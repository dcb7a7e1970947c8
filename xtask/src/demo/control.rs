//! The demo's side of the platform: building the example binaries, starting and killing the
//! container, and the chat screen replies are delivered to.

use super::*;

/// Builds both examples and returns the paths of `echo_container` and `host`, as cargo
/// reports them (so `CARGO_TARGET_DIR` and `build.target-dir` are respected).
pub fn build_examples() -> Result<(PathBuf, PathBuf), String> {
    let mut exe = sessionbus_testkit::child::built_executables(
        "sessionbus-runtime",
        &["--example", "echo_container", "--example", "host"],
        &["echo_container", "host"],
    )?;
    let mut take = |name: &str| {
        exe.remove(name)
            .ok_or_else(|| format!("cargo built no `{name}` example"))
    };
    Ok((take("echo_container")?, take("host")?))
}

/// The demo's container control: `echo_container` inside a bubblewrap sandbox as an
/// unprivileged user (the library's [`SandboxControl`]), its stderr in a log file.
pub(super) struct DemoControl {
    pub(super) sandbox: SandboxControl,
    pub(super) session: SessionPaths,
    pub(super) log: PathBuf,
    pub(super) starts: u32,
    pub(super) kills: u32,
}

impl DemoControl {
    pub(super) fn pid(&self) -> Option<u32> {
        self.sandbox.pid(&self.session)
    }

    /// `kill -9` the sandbox (its init takes the container with it).
    pub(super) fn kill9(&mut self) -> Result<Option<u32>, String> {
        let pid = self
            .sandbox
            .stop(&self.session)
            .map_err(|e| e.to_string())?;
        if pid.is_some() {
            self.kills += 1;
        }
        Ok(pid)
    }

    /// SIGTERM to the container (it finishes its batch and exits), then SIGKILL after `grace`.
    pub(super) fn stop(&mut self, grace: Duration) -> Result<Option<String>, String> {
        self.sandbox
            .terminate(&self.session, grace)
            .map_err(|e| e.to_string())
    }
}

impl ContainerControl for DemoControl {
    fn is_running(&mut self, session: &SessionPaths) -> bool {
        self.sandbox.is_running(session)
    }

    fn kill(&mut self, _session: &SessionPaths, reason: &KillReason) -> Result<(), CallerError> {
        if let Some(pid) = self.kill9()? {
            println!("   host's sweep killed container pid {pid}: {reason}");
        }
        Ok(())
    }

    fn start(&mut self, session: &SessionPaths) -> Result<(), CallerError> {
        self.sandbox.start(session)?;
        self.starts += 1;
        Ok(())
    }
}

/// A delivered row, as the demo saw it.
#[derive(Debug, Clone)]
pub(super) struct Delivered {
    pub(super) seq: Option<Seq>,
    pub(super) in_reply_to: Option<String>,
    pub(super) text: String,
    pub(super) source: OutboundSource,
}

/// The demo's "chat platform": prints each reply as it arrives and keeps a record.
#[derive(Default)]
pub(super) struct Screen {
    /// How each message is named in the output: `seq 2`, or the text of a denied command.
    pub(super) labels: HashMap<String, String>,
    pub(super) delivered: Vec<Delivered>,
    pub(super) answers: HashMap<String, usize>,
}

impl Deliverer for Screen {
    fn deliver(
        &mut self,
        _session: &sessionbus_runtime::SessionPaths,
        row: &DueOutbound,
        _attempt: i64,
    ) -> Result<Option<String>, sessionbus_runtime::control::CallerError> {
        let m = &row.message;
        let text = serde_json::from_str::<serde_json::Value>(&m.content)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| m.content.clone());
        let to = m
            .in_reply_to
            .as_ref()
            .map(|id| self.labels.get(id).cloned().unwrap_or_else(|| id.clone()))
            .unwrap_or_else(|| "-".into());
        let seq = m.seq.map_or_else(|| "?".into(), |s| s.to_string());
        let who = match row.source {
            OutboundSource::Container => "",
            OutboundSource::Host => "  [host reply]",
        };
        println!("     reply seq {seq}, in reply to {to}: {text:?}{who}");
        if let Some(id) = &m.in_reply_to {
            *self.answers.entry(id.clone()).or_default() += 1;
        }
        self.delivered.push(Delivered {
            seq: m.seq,
            in_reply_to: m.in_reply_to.clone(),
            text,
            source: row.source,
        });
        Ok(Some(format!("demo-platform-{seq}")))
    }
}
