//! Process and file-system tools of the soak (Linux): finding processes through `/proc`,
//! `kill -9`, reaping orphans as a subreaper, and the child set-ups the faults need (a file
//! size limit, a read-only view of inbound.db in a private mount namespace).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One process as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its state letter (`R`, `S`, `T`, `Z`...).
    pub state: char,
    /// Its command line.
    pub args: Vec<String>,
}

impl ProcInfo {
    /// Dead but not reaped (or gone).
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }

    /// The value after `flag` on the command line.
    pub fn arg_after(&self, flag: &str) -> Option<&str> {
        self.args
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.args.get(i + 1))
            .map(String::as_str)
    }
}

/// Reads `/proc/<pid>` (`None` when the process is gone).
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ProcInfo {
        pid,
        ppid,
        state,
        args,
    })
}

/// Every process now.
pub fn all_procs() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(proc_info)
        .collect()
}

/// Live processes of this run playing `role` (`host`, `container`, `writer`), optionally for
/// one session folder: `soak-proc <role> --run <run> ... [--workspace <dir>]`.
pub fn find_role(run: &Path, role: &str, workspace: Option<&Path>) -> Vec<ProcInfo> {
    let run = run.to_string_lossy();
    let ws = workspace.map(|w| w.to_string_lossy().into_owned());
    all_procs()
        .into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| {
            p.args.iter().any(|a| a == "soak-proc")
                && p.args.iter().any(|a| a == role)
                && p.arg_after("--run") == Some(&*run)
                && ws
                    .as_deref()
                    .is_none_or(|w| p.arg_after("--workspace") == Some(w))
        })
        .collect()
}

/// Sends `signal` to `pid`; false when it failed (gone).
pub fn signal(pid: i32, signal: i32) -> bool {
    // SAFETY: kill(2) has no memory preconditions. The pids come from /proc scans of this run's
    // own processes (checked by command line just before) or from our children.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// Waits until `pid` is gone or a zombie; false after `timeout`.
pub fn wait_dead(pid: i32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        match proc_info(pid) {
            None => return true,
            Some(p) if p.is_zombie() => return true,
            Some(_) if Instant::now() >= end => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// `kill -9` and wait until dead. Returns whether it died.
pub fn kill9(pid: i32) -> bool {
    signal(pid, libc::SIGKILL);
    wait_dead(pid, Duration::from_secs(5))
}

/// Makes this process the reaper of its orphaned descendants (containers outliving a killed
/// host are re-parented here instead of to init, which may never reap them).
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Reaps zombie children of this process that are not in `keep` (pids held by `Child`
/// handles, which reap themselves).
pub fn reap_orphans(keep: &[u32]) {
    let me = std::process::id() as i32;
    for p in all_procs() {
        if p.ppid == me && p.is_zombie() && !keep.contains(&(p.pid as u32)) {
            let mut status = 0;
            // SAFETY: waitpid on a specific zombie child of ours; `status` is a valid out-param.
            unsafe {
                libc::waitpid(p.pid, &mut status, libc::WNOHANG);
            }
        }
    }
}

/// Installs a handler that sets `flag` on SIGTERM and SIGINT.
pub fn on_stop_signal(flag: &'static std::sync::atomic::AtomicBool) {
    static FLAG: std::sync::OnceLock<&'static std::sync::atomic::AtomicBool> =
        std::sync::OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn handler(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
    }
}

/// Limits the size of every file this process writes to `bytes` (RLIMIT_FSIZE) and ignores
/// SIGXFSZ, so a write past the limit fails with EFBIG instead of killing the process.
pub fn limit_file_size(bytes: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: plain syscalls with a valid struct.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sets up `cmd` so that the child runs with a file-size limit of `bytes` (see
/// [`limit_file_size`]).
pub fn child_file_size_limit(cmd: &mut Command, bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: between fork and exec only async-signal-safe syscalls run, on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets up `cmd` so that the child sees `file` read-only: a private mount namespace in which
/// `file` is bind-mounted onto itself read-only (what a container's `:ro` mount does). The
/// host keeps writing the same inode outside, and the child sees every committed write.
pub fn child_read_only_file(cmd: &mut Command, file: &Path) -> std::io::Result<()> {
    let path = CString::new(file.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path contains NUL"))?;
    let root = CString::new("/").map_err(|_| std::io::Error::other("NUL"))?;
    // SAFETY: between fork and exec only syscalls run, on CStrings built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                path.as_ptr(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                path.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            ))
        });
    }
    Ok(())
}

/// SQLite's lock bytes: its SHARED range starts here (PENDING_BYTE + 2). A POSIX write lock over
/// it is SQLite's EXCLUSIVE lock: the holder is committing, and every reader waits.
const SQLITE_SHARED_FIRST: u64 = 0x4000_0000 + 2;

/// Whether `pid` holds SQLite's EXCLUSIVE lock on `file` right now (from `/proc/locks`).
pub fn holds_exclusive_lock(pid: i32, file: &Path) -> bool {
    holds_lock(pid, file, true)
}

/// Whether `pid` holds any of SQLite's write locks (RESERVED, PENDING or EXCLUSIVE) on `file`
/// right now: it is inside a write transaction.
pub fn holds_write_lock(pid: i32, file: &Path) -> bool {
    holds_lock(pid, file, false)
}

fn holds_lock(pid: i32, file: &Path, exclusive: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ino) = std::fs::metadata(file).map(|m| m.ino()) else {
        return false;
    };
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let pid = pid.to_string();
    let ino = format!(":{ino}");
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // "1: POSIX  ADVISORY  WRITE 2490 fe:00:10183683 1073741824 1073742335"
        f.len() >= 8
            && f[1] == "POSIX"
            && f[3] == "WRITE"
            && f[4] == pid
            && f[5].ends_with(&ino)
            && (!exclusive
                || (f[6].parse::<u64>().is_ok_and(|a| a <= SQLITE_SHARED_FIRST)
                    && f[7].parse::<u64>().is_ok_and(|b| b >= SQLITE_SHARED_FIRST)))
    })
}

/// Whether `file` sits on a read-only mount, as this process sees it.
pub fn on_read_only_mount(file: &Path) -> bool {
    let Ok(path) = CString::new(file.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs fills a zeroed struct we own.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::statvfs(path.as_ptr(), &mut st) == 0 && (st.f_flag & libc::ST_RDONLY) != 0
    }
}

/// Whether private mount namespaces and bind mounts work here (root with CAP_SYS_ADMIN): tries
/// the read-only set-up on a scratch file in `dir` with `/bin/true`.
pub fn read_only_mounts_work(dir: &Path) -> bool {
    let probe = dir.join(".ro-probe");
    if std::fs::write(&probe, b"probe").is_err() {
        return false;
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("! (echo x > \"$0\") 2>/dev/null")
        .arg(&probe)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let ok = child_read_only_file(&mut cmd, &probe).is_ok()
        && cmd.status().map(|s| s.success()).unwrap_or(false);
    let _ = std::fs::remove_file(&probe);
    ok
}
