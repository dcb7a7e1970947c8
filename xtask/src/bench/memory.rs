//! Resident memory of a container over a long run. The container is a separate process (this
//! binary, `bench --memory-child DIR`) running the runtime's real poll step
//! (`Container::step`): the parent plays the host, writes batches of ten messages, tells the
//! child to step, syncs the acks, and at each checkpoint asks the child for its `VmRSS` and
//! `VmHWM` (peak resident set) from `/proc/self/status`.

use super::fixture::{fixed_clock, Sessions, CHANNEL_TYPE, PLATFORM_ID, THREAD_ID};
use super::{err, BenchResult};
use sessionbus_runtime::container::{Container, ContainerOptions, Handled, RunSummary};
use sessionbus_store::{Address, HostSession, MessageIn, NewMessage, NewOutbound, NextOccurrence};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

/// Messages the host writes per step (the container's default batch size).
const BATCH: u64 = 10;

/// Memory of the container process after `messages` messages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryPoint {
    /// Messages handled so far.
    pub messages: u64,
    /// Resident set now, in KiB.
    pub rss_kib: u64,
    /// Peak resident set so far, in KiB.
    pub peak_rss_kib: u64,
}

fn no_next(_: &MessageIn) -> Option<NextOccurrence> {
    None
}

/// Runs the container child over `checkpoints.last()` messages and reports memory at each
/// checkpoint.
pub fn measure(sessions: &Sessions, checkpoints: &[u64]) -> BenchResult<Vec<MemoryPoint>> {
    let paths = sessions.fresh("memory")?;
    let exe = std::env::current_exe().map_err(err)?;
    let mut child = Command::new(exe)
        .args(["bench", "--memory-child"])
        .arg(&paths.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(err)?;
    let mut to_child = child.stdin.take().ok_or("child stdin")?;
    let mut from_child = BufReader::new(child.stdout.take().ok_or("child stdout")?);
    let mut ask = |line: &str| -> BenchResult<String> {
        writeln!(to_child, "{line}").map_err(err)?;
        to_child.flush().map_err(err)?;
        let mut answer = String::new();
        from_child.read_line(&mut answer).map_err(err)?;
        if answer.is_empty() {
            return Err("the container child exited".into());
        }
        Ok(answer.trim().to_string())
    };
    let ready = ask("hello")?;
    if ready != "ready" {
        return Err(format!("container child: {ready}"));
    }
    let host = HostSession::with_clock(&paths.dir, fixed_clock());
    let address = Address {
        platform_id: Some(PLATFORM_ID.into()),
        channel_type: Some(CHANNEL_TYPE.into()),
        thread_id: Some(THREAD_ID.into()),
    };
    let mut points = Vec::new();
    let mut wanted: Vec<u64> = checkpoints.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let total = wanted.last().copied().unwrap_or(0);
    let mut done = 0u64;
    let mut next = 0usize;
    while done < total {
        let msgs: Vec<NewMessage> = (done..done + BATCH)
            .map(|k| {
                NewMessage::chat(format!("m-{k}"), &format!("message {k}")).to(address.clone())
            })
            .collect();
        host.inbound().write_messages(&msgs).map_err(err)?;
        let answer = ask("step")?;
        if answer != format!("ok {BATCH}") {
            return Err(format!("container child after {done} messages: {answer}"));
        }
        let synced = host.sync_acks(&no_next).map_err(err)?;
        if synced.completed.len() as u64 != BATCH {
            return Err(format!(
                "synced {} acks, expected {BATCH}",
                synced.completed.len()
            ));
        }
        done += BATCH;
        if next < wanted.len() && done >= wanted[next] {
            let answer = ask("rss")?;
            let mut parts = answer.split_whitespace().skip(1).map(str::parse::<u64>);
            let (Some(Ok(rss)), Some(Ok(peak))) = (parts.next(), parts.next()) else {
                return Err(format!("container child rss answer: {answer}"));
            };
            while next < wanted.len() && done >= wanted[next] {
                points.push(MemoryPoint {
                    messages: wanted[next],
                    rss_kib: rss,
                    peak_rss_kib: peak,
                });
                next += 1;
            }
        }
    }
    let _ = ask("quit");
    let status = child.wait().map_err(err)?;
    if !status.success() {
        return Err(format!("container child exited with {status}"));
    }
    Ok(points)
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
pub fn own_rss() -> BenchResult<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(err)?;
    let field = |name: &str| -> BenchResult<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The child: a container on session folder `dir`, stepping when told.
pub fn child_main(dir: &Path) -> ExitCode {
    match child(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench memory child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn child(dir: &Path) -> BenchResult<()> {
    let opts = ContainerOptions {
        config_optional: true,
        clock: fixed_clock(),
        ..ContainerOptions::in_folder(dir)
    };
    let mut container = Container::start(opts).map_err(err)?;
    let mut summary = RunSummary::default();
    let mut handler = |_: &sessionbus_runtime::container::HandlerContext<'_>,
                       batch: &sessionbus_store::Batch| {
        Ok(Handled::completed(
            batch
                .messages
                .iter()
                .map(|m| NewOutbound::reply_to(format!("r-{}", m.id), m, "echo"))
                .collect(),
        ))
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(err)?;
        match line.trim() {
            "hello" => writeln!(out, "ready").map_err(err)?,
            "step" => {
                let before = summary.completed;
                while container.step(&mut handler, &mut summary).map_err(err)? {}
                writeln!(out, "ok {}", summary.completed - before).map_err(err)?;
            }
            "rss" => {
                let (rss, peak) = own_rss()?;
                writeln!(out, "rss {rss} {peak}").map_err(err)?;
            }
            "quit" => return Ok(()),
            other => return Err(format!("unknown command {other:?}")),
        }
        out.flush().map_err(err)?;
    }
    Ok(())
}
