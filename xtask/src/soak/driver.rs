//! The soak's driver: it starts and follows the host, the containers and the writer, steps
//! the clock, and drains the run at the end.

use super::*;

/// Real ms now.
pub(super) fn now_ms() -> i64 {
    clock::real_ms()
}

pub(super) struct Driver {
    pub(super) layout: Layout,
    pub(super) cfg: RunConfig,
    pub(super) rng: Rng,
    pub(super) rec: DriverRecord,
    pub(super) host: Option<Child>,
    pub(super) host_k: u32,
    pub(super) writer: Option<Child>,
    pub(super) writer_k: u32,
    pub(super) fsize_k: u32,
    pub(super) oneshots: Vec<Child>,
    pub(super) offset_ms: i64,
    pub(super) max_offset_ms: i64,
    pub(super) verbose: bool,
    pub(super) ro_session: usize,
    pub(super) shared_session: usize,
    /// The run's clock, for the special messages the driver writes.
    pub(super) clock: clock::OffsetClock,
    /// Special messages written so far (their ids' counter).
    pub(super) specials: u64,
    /// How far the driver has read each container event file.
    pub(super) event_offsets: BTreeMap<PathBuf, u64>,
    /// Handler hangs seen in the events and not known dead: pid, session, real ms of the
    /// hang, the container's clock then.
    pub(super) hangs: Vec<HandlerHang>,
}

/// A container whose handler hangs on a `hang-once` message.
#[derive(Debug, Clone)]
pub(super) struct HandlerHang {
    pub(super) pid: i32,
    pub(super) sid: String,
    pub(super) real_ms: i64,
    pub(super) clock_ms: i64,
}

impl Driver {
    pub(super) fn log(&self, what: &str) {
        proc::AppendLog::open(&self.layout.events.join("driver.log")).line(&[what]);
        if self.verbose {
            eprintln!("soak: {what}");
        }
    }

    pub(super) fn soak(&mut self, args: &SoakArgs) -> Result<(), String> {
        self.start_host()?;
        self.start_writer()?;
        let total_ms = args.seconds.max(1) * 1000;
        let mut schedule = self.schedule(total_ms);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(total_ms) {
            self.housekeeping()?;
            let at = start.elapsed().as_millis() as u64;
            let due: Vec<(u64, Fault, u32)> = schedule
                .iter()
                .copied()
                .filter(|(t, _, _)| *t <= at)
                .collect();
            schedule.retain(|(t, _, _)| *t > at);
            for (_, fault, tries) in due {
                if !self.inject(fault)? && tries < 50 {
                    // Not applicable now (no container running, say): try again shortly.
                    schedule.push((at + 200, fault, tries + 1));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.drain(args)
    }

    /// Every kind once at a random time, plus extra occurrences at each kind's rate.
    pub(super) fn schedule(&mut self, total_ms: u64) -> Vec<(u64, Fault, u32)> {
        let mut out = Vec::new();
        for f in Fault::ALL {
            let (lo, hi) = match f {
                Fault::ReadOnly => (0.10, 0.30),
                Fault::Garbage => (0.35, 0.55),
                _ => (0.10, 0.70),
            };
            let t = (total_ms as f64 * (lo + (hi - lo) * self.rng.unit())) as u64;
            out.push((t, f, 0));
            let extra = f.per_minute() * total_ms as f64 / 60_000.0;
            let n = extra.floor() as u64 + u64::from(self.rng.chance(extra.fract()));
            for _ in 0..n {
                let t = self.rng.range(total_ms / 20, total_ms * 95 / 100);
                out.push((t, f, 0));
            }
        }
        out.sort();
        out
    }

    pub(super) fn spawn(&self, args: &[String], log: &str) -> Result<Child, String> {
        let path = self.layout.logs.join(log);
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Command::new(self.layout.exe())
            .arg("soak-proc")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start soak-proc {args:?}: {e}"))
    }

    pub(super) fn run_arg(&self) -> String {
        self.layout.run.to_string_lossy().into_owned()
    }

    pub(super) fn start_host(&mut self) -> Result<(), String> {
        self.host_k += 1;
        let args = vec![
            "host".into(),
            "--run".into(),
            self.run_arg(),
            "--incarnation".into(),
            self.host_k.to_string(),
        ];
        self.host = Some(self.spawn(&args, "host.log")?);
        Ok(())
    }

    pub(super) fn start_writer(&mut self) -> Result<(), String> {
        self.writer_k += 1;
        let args = vec![
            "writer".into(),
            "--run".into(),
            self.run_arg(),
            "--session".into(),
            self.shared_session.to_string(),
            "--incarnation".into(),
            self.writer_k.to_string(),
        ];
        self.writer = Some(self.spawn(&args, "writer.log")?);
        Ok(())
    }

    pub(super) fn held_pids(&self) -> Vec<u32> {
        self.host
            .iter()
            .chain(self.writer.iter())
            .chain(self.oneshots.iter())
            .map(Child::id)
            .collect()
    }

    /// Reaps orphans, restarts a host or writer that exited by itself (a crash is recorded),
    /// and collects finished disk-full writers.
    pub(super) fn housekeeping(&mut self) -> Result<(), String> {
        os::reap_orphans(&self.held_pids());
        self.follow_handler_hangs()?;
        if let Some(h) = self.host.as_mut() {
            if let Ok(Some(status)) = h.try_wait() {
                let msg = format!(
                    "host incarnation {} exited by itself: {status}",
                    self.host_k
                );
                self.log(&msg);
                self.rec.host_crashes.push(msg);
                self.start_host()?;
            }
        }
        if let Some(w) = self.writer.as_mut() {
            if let Ok(Some(status)) = w.try_wait() {
                self.log(&format!("writer exited by itself: {status}"));
                self.start_writer()?;
            }
        }
        let mut still = Vec::new();
        for mut c in std::mem::take(&mut self.oneshots) {
            match c.try_wait() {
                Ok(Some(status)) => self.disk_full_writer_done(status.code()),
                Ok(None) => still.push(c),
                Err(_) => {}
            }
        }
        self.oneshots = still;
        Ok(())
    }

    pub(super) fn healthy(&self, i: usize) -> bool {
        self.rec.broken.as_ref().is_none_or(|(b, _, _)| *b != i)
    }

    pub(super) fn running_containers(&self, only_healthy: bool) -> Vec<(usize, i32)> {
        (0..self.cfg.sessions)
            .filter(|i| !only_healthy || self.healthy(*i))
            .flat_map(|i| {
                os::find_role(&self.layout.run, "container", Some(&self.layout.session(i)))
                    .into_iter()
                    .filter(|p| p.state != 'T')
                    .map(move |p| (i, p.pid))
            })
            .filter(|(_, pid)| !self.handler_hung(*pid))
            .collect()
    }

    /// Whether `pid` is a container hung in its handler that the host has yet to kill (the
    /// other faults leave it to the host).
    pub(super) fn handler_hung(&self, pid: i32) -> bool {
        self.hangs.iter().any(|h| h.pid == pid)
    }

    /// A handler hang younger than 15 s is waiting for the host's kill.
    pub(super) fn handler_hang_outstanding(&self) -> bool {
        let now = now_ms();
        self.hangs.iter().any(|h| now - h.real_ms < 15_000)
    }

    /// New lines of the containers' event files (`events/c-*.log`) since the last call.
    pub(super) fn new_container_events(&mut self) -> Vec<(i64, Vec<String>)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.layout.events) else {
            return out;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("c-") && n.ends_with(".log"))
            })
            .collect();
        files.sort();
        for path in files {
            let from = self.event_offsets.get(&path).copied().unwrap_or(0);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Some(tail) = usize::try_from(from).ok().and_then(|f| bytes.get(f..)) else {
                continue;
            };
            // Whole lines only: a line being appended right now is read next time.
            let Some(end) = tail.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            for line in String::from_utf8_lossy(&tail[..end]).lines() {
                let mut fields = line.split('\t');
                if let Some(ms) = fields.next().and_then(|m| m.parse().ok()) {
                    out.push((ms, fields.map(str::to_string).collect()));
                }
            }
            self.event_offsets.insert(path, from + end as u64 + 1);
        }
        out
    }

    /// Follows the containers' handler hangs: learns new ones from their events, forgets
    /// those whose container is gone, and once a hang's deadline has passed (real time: the
    /// container then set its heartbeat back to the claim) moves the clock past the claim
    /// tolerance, 60 s after the hung batch's claim by the run's clock. Without the step the
    /// host's claim rule would fire a minute later, after a short soak has ended.
    pub(super) fn follow_handler_hangs(&mut self) -> Result<(), String> {
        for (ms, f) in self.new_container_events() {
            if f.first().map(String::as_str) != Some("handler_hang") {
                continue;
            }
            let (Some(pid), Some(clock_ms)) = (
                f.get(2).and_then(|p| p.parse::<i32>().ok()),
                f.get(4).and_then(|c| c.parse::<i64>().ok()),
            ) else {
                continue;
            };
            let sid = f.get(1).cloned().unwrap_or_default();
            self.rec.handler_hung.push((pid, ms));
            self.log(&format!(
                "the handler of {sid}'s container (pid {pid}) hangs on {}",
                f.get(3).map_or("?", |s| s)
            ));
            self.hangs.push(HandlerHang {
                pid,
                sid,
                real_ms: ms,
                clock_ms,
            });
        }
        self.hangs
            .retain(|h| os::proc_info(h.pid).is_some_and(|p| !p.is_zombie()));
        let deadline = i64::try_from(self.cfg.handler_timeout_ms).unwrap_or(i64::MAX);
        let now = now_ms();
        let due: Vec<HandlerHang> = self
            .hangs
            .iter()
            .filter(|h| now >= h.real_ms.saturating_add(deadline).saturating_add(300))
            .cloned()
            .collect();
        for h in due {
            let past = h.clock_ms + CLAIM_TOLERANCE_MS + 1000;
            let host_now = now_ms() + self.offset_ms;
            if host_now < past {
                let delta = past - host_now + self.rng.range_i64(0, 20_000);
                self.step_clock(
                    delta,
                    &format!(
                        "clock steps past the claim tolerance of the hung handler of {} (pid {})",
                        h.sid, h.pid
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Writes one special message (see [`proc::Special`]) into a session: a poison message
    /// into the poison session, the others into any healthy session but the last (the one the
    /// garbage fault breaks). The driver writes it next to the host (host-side writers
    /// serialise through SQLite's lock) and ledgers it as the other writers do. False when the
    /// write failed (tried again shortly).
    pub(super) fn write_special(&mut self, kind: Special) -> Result<bool, String> {
        let i = match kind {
            Special::Poison => self.cfg.poison_session,
            _ => {
                let candidates: Vec<usize> = (0..self.cfg.sessions - 1)
                    .filter(|i| self.healthy(*i))
                    .collect();
                if candidates.is_empty() {
                    return Ok(false);
                }
                candidates[self.rng.below(candidates.len())]
            }
        };
        self.specials += 1;
        let sid = Layout::sid(i);
        let id = format!("d-{sid}-{}", self.specials);
        let host = HostSession::with_clock(self.layout.session(i), Arc::new(self.clock.clone()));
        let msg = NewMessage::chat(&id, &kind.text(&id)).to(proc::address(&sid));
        match host.inbound().write_message(&msg) {
            Ok(w) => {
                proc::AppendLog::open(&self.layout.ledger.join("written-driver.log")).line(&[
                    &sid,
                    &id,
                    kind.name(),
                    &w.seq.get().to_string(),
                ]);
                self.log(&format!("wrote {} into {sid}", kind.text(&id)));
                Ok(true)
            }
            Err(e) => {
                self.log(&format!(
                    "could not write {} into {sid}: {e}",
                    kind.text(&id)
                ));
                Ok(false)
            }
        }
    }

    pub(super) fn journal_left(&self, i: usize, file: &str) -> bool {
        self.layout
            .session(i)
            .join(format!("{file}-journal"))
            .exists()
    }

    /// The clock-jump fault.
    pub(super) fn jump(&mut self, delta: i64) -> Result<(), String> {
        self.rec.count("clock_jump");
        self.step_clock(delta, "clock jumps")
    }

    /// Moves the run's clock by `delta` ms; the check excuses stuck kills in the seconds after
    /// any step (see [`check`]).
    pub(super) fn step_clock(&mut self, delta: i64, what: &str) -> Result<(), String> {
        self.offset_ms += delta;
        self.max_offset_ms = self.max_offset_ms.max(self.offset_ms);
        clock::write_offset(&self.layout.run, self.offset_ms).map_err(err)?;
        self.rec.jumps.push(now_ms());
        self.log(&format!(
            "{what} {:+} s (offset now {:+} s)",
            delta / 1000,
            self.offset_ms / 1000
        ));
        Ok(())
    }

    pub(super) fn disk_full_writer_done(&mut self, code: Option<i32>) {
        match code.map(|c| c as u8) {
            Some(proc::EXIT_DISK_FULL) | Some(proc::EXIT_IO) => {
                self.rec.count("disk_full_writer");
                self.log("disk full: the limited writer got a clear error");
            }
            Some(0) => self.log("disk full: the limited writer never hit its limit"),
            other => {
                let msg = format!(
                    "the file-size-limited writer {} ended with status {other:?} (see logs/writer-fsize-{}.log)",
                    self.fsize_k, self.fsize_k
                );
                self.log(&msg);
                self.rec.unclear.push(msg);
            }
        }
        // The file must be intact right after the failed writes.
        let inbound = self.layout.session(self.shared_session).join("inbound.db");
        if let Err(e) = check::integrity_now(&inbound) {
            self.rec.corrupt_during.push(format!(
                "{} after a disk-full writer: {e}",
                inbound.display()
            ));
        }
    }

    pub(super) fn drain(&mut self, args: &SoakArgs) -> Result<(), String> {
        self.log("drain: no more faults or writes");
        File::create(self.layout.control("stop-writing")).map_err(err)?;
        if let Some(mut w) = self.writer.take() {
            os::signal(w.id() as i32, libc::SIGTERM);
            let _ = w.wait();
        }
        let finished: Vec<Child> = std::mem::take(&mut self.oneshots);
        for mut c in finished {
            let code = c.wait().ok().and_then(|s| s.code());
            self.disk_full_writer_done(code);
        }
        for i in 0..self.cfg.sessions {
            let _ = std::fs::remove_file(self.layout.control(&format!("s{i}.fsize")));
        }
        // Hung containers must be found stuck and killed by the host (the clock is past the
        // heartbeat ceiling): give it time, then wake whatever it missed.
        // So must containers hung in their handler (the driver steps the clock past the
        // claim tolerance once their deadline has passed, in `housekeeping`).
        let alive = |pid: &i32| os::proc_info(*pid).is_some_and(|p| !p.is_zombie());
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            self.housekeeping()?;
            let waiting = self.rec.hung.iter().any(|(pid, _)| alive(pid))
                || self.rec.handler_hung.iter().any(|(pid, _)| alive(pid));
            if !waiting || Instant::now() >= end {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.rec.drain_start_ms = now_ms();
        for (pid, _) in &self.rec.hung {
            os::signal(*pid, libc::SIGCONT);
        }
        // Time moves on past every retry scheduled so far.
        let target = self.max_offset_ms + 10_000;
        if target != self.offset_ms {
            self.step_clock(
                target - self.offset_ms,
                "drain: the clock moves past every retry:",
            )?;
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(args.drain_secs);
        let mut settled_twice = 0;
        while Instant::now() < deadline {
            self.housekeeping()?;
            let healthy: Vec<usize> = (0..self.cfg.sessions)
                .filter(|i| self.healthy(*i))
                .collect();
            if check::settled(&self.layout, &healthy) {
                settled_twice += 1;
                if settled_twice >= 2 {
                    self.rec.settled = true;
                    break;
                }
            } else {
                settled_twice = 0;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        self.rec.drain = start.elapsed();
        for (pid, at) in self.rec.handler_hung.clone() {
            if alive(&pid) {
                let msg = format!(
                    "container {pid}, hung in its handler at {at} past its deadline, was never \
                     killed by the host"
                );
                self.log(&msg);
                self.rec.handler_hangs_missed.push(msg);
            }
        }
        self.log(&format!(
            "drain: {} after {:.1} s",
            if self.rec.settled {
                "settled"
            } else {
                "NOT settled"
            },
            self.rec.drain.as_secs_f64()
        ));
        // The readonly fault counts once a container confirmed its read-only view.
        let ro = std::fs::read_to_string(
            self.layout
                .events
                .join(format!("c-s{}.log", self.ro_session)),
        )
        .map(|t| t.lines().filter(|l| l.contains("container_ro")).count())
        .unwrap_or(0);
        if ro > 0 {
            self.rec.count("readonly");
        }
        Ok(())
    }

    /// Stops the host (SIGTERM: it stops its containers and runs a last sweep), then kills
    /// whatever of this run is still alive.
    pub(super) fn stop_everything(&mut self) {
        let _ = File::create(self.layout.control("stop-writing"));
        if let Some(mut h) = self.host.take() {
            os::signal(h.id() as i32, libc::SIGTERM);
            let end = Instant::now() + Duration::from_secs(20);
            loop {
                match h.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < end => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        let _ = h.kill();
                        let _ = h.wait();
                        break;
                    }
                }
            }
        }
        for mut c in self
            .writer
            .take()
            .into_iter()
            .chain(self.oneshots.drain(..))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for role in ["host", "writer", "container"] {
            for p in os::find_role(&self.layout.run, role, None) {
                os::signal(p.pid, libc::SIGCONT);
                os::kill9(p.pid);
            }
        }
        os::reap_orphans(&[]);
    }
}
