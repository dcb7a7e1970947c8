//! The fault injector: what each fault does to the running processes and files.

use super::*;

impl Driver {
    /// Injects one fault; false when it does not apply right now.
    pub(super) fn inject(&mut self, fault: Fault) -> Result<bool, String> {
        match fault {
            Fault::HandlerPanic => return self.write_special(Special::PanicOnce),
            Fault::HandlerHang => return self.write_special(Special::HangOnce),
            Fault::Poison => return self.write_special(Special::Poison),
            Fault::KillContainer => {
                let running = self.running_containers(true);
                if running.is_empty() {
                    return Ok(false);
                }
                let (i, pid) = running[self.rng.below(running.len())];
                let outbound = SessionPaths::new(self.layout.session(i)).outbound;
                self.maybe_wait_for_write_lock(pid, &[outbound]);
                os::kill9(pid);
                let txn = self.journal_left(i, "outbound.db");
                self.rec.in_txn += u64::from(txn);
                self.rec.count("kill_container");
                self.log(&format!(
                    "kill -9 container of s{i} (pid {pid}){}",
                    if txn { ", inside a transaction" } else { "" }
                ));
            }
            Fault::KillHost => {
                // A new host would stop a hung handler's container as an orphan: let this
                // host's sweep kill it first (a later host kill is as good).
                if self.handler_hang_outstanding() {
                    return Ok(false);
                }
                let Some(mut h) = self.host.take() else {
                    return Ok(false);
                };
                let files: Vec<PathBuf> = (0..self.cfg.sessions)
                    .filter(|i| self.healthy(*i))
                    .flat_map(|i| {
                        let dir = self.layout.session(i);
                        [dir.join("inbound.db"), SessionPaths::new(&dir).outbound]
                    })
                    .collect();
                self.maybe_wait_for_write_lock(h.id() as i32, &files);
                let _ = h.kill();
                let _ = h.wait();
                let txn = (0..self.cfg.sessions).any(|i| self.journal_left(i, "inbound.db"));
                self.rec.in_txn += u64::from(txn);
                self.rec.count("kill_host");
                let pause = self.rng.range(0, 400);
                self.log(&format!(
                    "kill -9 host incarnation {}{}; restart in {pause} ms",
                    self.host_k,
                    if txn { ", inside a transaction" } else { "" }
                ));
                std::thread::sleep(Duration::from_millis(pause));
                self.start_host()?;
            }
            Fault::KillWriter => {
                let Some(mut w) = self.writer.take() else {
                    return Ok(false);
                };
                let inbound = self.layout.session(self.shared_session).join("inbound.db");
                self.maybe_wait_for_write_lock(w.id() as i32, &[inbound]);
                let _ = w.kill();
                let _ = w.wait();
                let txn = self.journal_left(self.shared_session, "inbound.db");
                self.rec.in_txn += u64::from(txn);
                self.rec.count("kill_writer");
                self.log(&format!(
                    "kill -9 CLI writer {}{}",
                    self.writer_k,
                    if txn { ", inside a transaction" } else { "" }
                ));
                std::thread::sleep(Duration::from_millis(self.rng.range(0, 200)));
                self.start_writer()?;
            }
            Fault::ClockJump => {
                let delta = match self.rng.below(4) {
                    0 => self.rng.range_i64(31 * 60_000, 33 * 60_000),
                    1 => self.rng.range_i64(65_000, 120_000),
                    _ => -self.rng.range_i64(5_000, 180_000),
                };
                self.jump(delta)?;
            }
            Fault::Hang => {
                let running: Vec<(usize, i32)> = self
                    .running_containers(true)
                    .into_iter()
                    .filter(|(i, _)| *i != self.ro_session)
                    .collect();
                if running.is_empty() {
                    return Ok(false);
                }
                let (i, pid) = running[self.rng.below(running.len())];
                // Half the time, freeze it while it commits, holding outbound.db's EXCLUSIVE
                // lock (a VM pause or a disk hanging in fsync): every reader of its file waits.
                let outbound = SessionPaths::new(self.layout.session(i)).outbound;
                let mut holding = false;
                if self.rng.chance(0.5) {
                    let end = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < end && !holding {
                        holding = os::holds_exclusive_lock(pid, &outbound);
                        if !holding {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                }
                os::signal(pid, libc::SIGSTOP);
                // It may have released the lock between the look and the stop.
                holding = holding && os::holds_exclusive_lock(pid, &outbound);
                self.rec.hung.push((pid, now_ms()));
                self.rec.count("hang");
                if holding {
                    self.rec.count("hang_holding_lock");
                }
                self.log(&format!(
                    "SIGSTOP container of s{i} (pid {pid}){}",
                    if holding {
                        " while it holds outbound.db's write lock"
                    } else {
                        ""
                    }
                ));
                // Past the heartbeat ceiling: the host's sweep must find it stuck.
                let delta = self.rng.range_i64(31 * 60_000, 32 * 60_000);
                self.jump(delta)?;
            }
            Fault::DiskFullWriter => {
                if !self.oneshots.is_empty() {
                    return Ok(false);
                }
                self.fsize_k += 1;
                // Just above the file: the next page the file needs is past the limit.
                let extra = self.rng.range(1, 4095);
                let args = vec![
                    "writer".into(),
                    "--run".into(),
                    self.run_arg(),
                    "--session".into(),
                    self.shared_session.to_string(),
                    "--incarnation".into(),
                    self.fsize_k.to_string(),
                    "--fsize-extra".into(),
                    extra.to_string(),
                ];
                let log = format!("writer-fsize-{}.log", self.fsize_k);
                self.oneshots.push(self.spawn(&args, &log)?);
                self.log(&format!(
                    "disk full: a CLI writer on s{} limited to inbound.db + {extra} bytes",
                    self.shared_session
                ));
            }
            Fault::DiskFullContainer => {
                let candidates: Vec<usize> = (0..self.cfg.sessions)
                    .filter(|i| self.healthy(*i) && *i != self.ro_session)
                    .collect();
                let i = candidates[self.rng.below(candidates.len())];
                let extra = self.rng.range(1, 4095);
                std::fs::write(
                    self.layout.control(&format!("s{i}.fsize")),
                    extra.to_string(),
                )
                .map_err(err)?;
                // The next container of that session gets the limit: stop the current one.
                for p in os::find_role(&self.layout.run, "container", Some(&self.layout.session(i)))
                {
                    if p.state != 'T' && !self.handler_hung(p.pid) {
                        os::kill9(p.pid);
                    }
                }
                self.log(&format!(
                    "disk full: the next container of s{i} is limited to outbound.db + {extra} bytes"
                ));
            }
            Fault::ReadOnly => {
                if !self.rec.readonly_supported {
                    self.log("read-only inbound.db: not supported here (needs mount namespaces)");
                    return Ok(true);
                }
                let i = self.ro_session;
                File::create(self.layout.control(&format!("s{i}.readonly"))).map_err(err)?;
                for p in os::find_role(&self.layout.run, "container", Some(&self.layout.session(i)))
                {
                    if !self.handler_hung(p.pid) {
                        os::kill9(p.pid);
                    }
                }
                self.log(&format!(
                    "read-only: s{i}'s containers now see inbound.db through a read-only mount"
                ));
            }
            Fault::Garbage => {
                if self.rec.broken.is_some() {
                    return Ok(true);
                }
                let i = self.cfg.sessions - 1;
                let paths = SessionPaths::new(self.layout.session(i));
                let (file, target) = if self.rng.chance(0.5) {
                    ("inbound.db", paths.inbound)
                } else {
                    ("outbound.db", paths.outbound)
                };
                let tmp = target.with_extension("db.swap");
                let how = if self.rng.chance(0.5) {
                    let mut junk = vec![0u8; 16 * 1024];
                    self.rng.fill(&mut junk);
                    std::fs::write(&tmp, &junk).map_err(err)?;
                    "garbage"
                } else {
                    let bytes = std::fs::read(&target).map_err(err)?;
                    let keep = (bytes.len() / 3).max(100).min(bytes.len());
                    std::fs::write(&tmp, &bytes[..keep]).map_err(err)?;
                    "truncated"
                };
                std::fs::rename(&tmp, &target).map_err(err)?;
                let what = format!("{how} {file}");
                self.rec.broken = Some((i, now_ms(), what.clone()));
                self.rec.count("garbage");
                self.log(&format!("swapped a {what} into s{i}"));
            }
        }
        Ok(true)
    }

    /// Half the time, waits (up to 2 s) until `pid` is inside a write transaction on one of
    /// `files`, so that the kill that follows leaves a hot journal behind.
    pub(super) fn maybe_wait_for_write_lock(&mut self, pid: i32, files: &[PathBuf]) {
        if !self.rng.chance(0.5) {
            return;
        }
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end {
            if files.iter().any(|f| os::holds_write_lock(pid, f)) {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}
