//! A real mount boundary for tests: a session folder seen through FUSE (`bindfs`) with a
//! chosen cache mode, so that the container side reads and writes through page and attribute
//! caches that are not coherent with the host's view of the same files, as across a Docker
//! Desktop, virtiofs or NFS mount. Tests on one local filesystem cannot see that class of bug.
//!
//! - [`CacheMode`]: `auto_cache` (contents revalidated on open once the attribute cache, one
//!   second, has expired: a fresh open sees the host's commits late, a long-lived connection
//!   never), `kernel_cache` (contents never revalidated: nothing new is ever seen) and
//!   `direct_io` (no page cache: everything is seen at once);
//! - [`BindMount`]: one mount, unmounted by its `Drop` (`fusermount -u`, retried while busy,
//!   then a lazy `fusermount -u -z`), so a failing test does not leave it behind;
//! - mounts live under [`mounts_root`] in folders named after the owning process; the first
//!   mount of a process (and [`cleanup_stale_mounts`]) unmounts those of dead processes, which
//!   is what an interrupted run (Ctrl-C, `kill -9`) leaves;
//! - [`MountedSession`]: a provisioned [`TempSession`] whose folder is mounted: the host works
//!   on [`MountedSession::host_dir`], the container on [`MountedSession::container_dir`];
//! - [`fuse_status`] / [`require_fuse`]: where `/dev/fuse`, `bindfs` or `fusermount` is
//!   missing, mount tests fail with a message saying so. They never pass silently.
//!
//! ```no_run
//! use sessionbus_testkit::mount::{require_fuse, CacheMode, MountedSession};
//!
//! require_fuse();
//! let s = MountedSession::new(CacheMode::AutoCache).unwrap();
//! // the host writes s.host_dir()/inbound.db; a container reads s.container_dir()/inbound.db
//! ```

use crate::session::TempSession;
use sessionbus_store::{HostSession, SessionPaths};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

/// How the FUSE mount caches file contents (bindfs's `-o` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CacheMode {
    /// `-o auto_cache`: cached contents are dropped when a file is opened and its size or mtime
    /// changed, as far as the attribute cache (1 s) knows. Fresh opens see the host's commits
    /// within about a second; a connection that stays open never re-opens, so it never does.
    AutoCache,
    /// `-o kernel_cache`: cached contents are kept across opens and never revalidated. A file
    /// read once is frozen for the life of the mount (virtiofs `cache=always` behaves alike).
    KernelCache,
    /// `-o direct_io`: no page cache at all; every read goes to the host's file. Everything is
    /// seen at once, but shared memory maps of the mount's files are refused.
    DirectIo,
}

impl CacheMode {
    /// Every mode, in the order reports list them.
    pub const ALL: [CacheMode; 3] = [
        CacheMode::AutoCache,
        CacheMode::DirectIo,
        CacheMode::KernelCache,
    ];

    /// The bindfs/FUSE option: `auto_cache`, `kernel_cache`, `direct_io`.
    pub fn option(self) -> &'static str {
        match self {
            CacheMode::AutoCache => "auto_cache",
            CacheMode::KernelCache => "kernel_cache",
            CacheMode::DirectIo => "direct_io",
        }
    }

    /// True when a reader that re-opens the file eventually sees every commit (the modes the
    /// library must work across); false for `kernel_cache`, where only detection is possible.
    pub fn revalidates(self) -> bool {
        !matches!(self, CacheMode::KernelCache)
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.option())
    }
}

impl FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "auto_cache" | "auto" => Ok(CacheMode::AutoCache),
            "kernel_cache" | "kernel" => Ok(CacheMode::KernelCache),
            "direct_io" | "direct" => Ok(CacheMode::DirectIo),
            other => Err(format!(
                "unknown cache mode {other:?}: expected auto_cache, kernel_cache or direct_io"
            )),
        }
    }
}

/// Why a mount could not be made or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountError {
    /// FUSE or bindfs is not usable on this machine (the message says what is missing and how
    /// to get it).
    Unavailable(String),
    /// bindfs or fusermount ran and failed, or the folders could not be prepared.
    Failed(String),
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::Unavailable(m) => write!(f, "FUSE mounts are not available here: {m}"),
            MountError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for MountError {}

/// The FUSE device.
pub const FUSE_DEVICE: &str = "/dev/fuse";

/// Checks that FUSE mounts can be made: `/dev/fuse` opens read-write, `bindfs` and a
/// `fusermount` run. Checked once per process.
pub fn fuse_status() -> Result<(), MountError> {
    static STATUS: OnceLock<Result<(), MountError>> = OnceLock::new();
    STATUS
        .get_or_init(|| check_fuse(Path::new(FUSE_DEVICE)))
        .clone()
}

/// [`fuse_status`] against another device path (tests of the message itself).
pub fn check_fuse(device: &Path) -> Result<(), MountError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MountError::Unavailable(format!(
                "{} is missing: this machine or container has no FUSE device (in Docker: \
                 --device /dev/fuse --cap-add SYS_ADMIN)",
                device.display()
            )))
        }
        Err(e) => {
            return Err(MountError::Unavailable(format!(
                "cannot open {}: {e} (it needs read and write access; run as root or \
                 give this user access to the device)",
                device.display()
            )))
        }
    }
    match Command::new("bindfs")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => {
            return Err(MountError::Unavailable(format!(
                "bindfs does not run ({e}): install it (Debian/Ubuntu: apt-get install -y bindfs)"
            )))
        }
    }
    fusermount().map(|_| ())
}

/// The `fusermount` binary to unmount with (`fusermount`, else `fusermount3`).
fn fusermount() -> Result<&'static str, MountError> {
    static FOUND: OnceLock<Option<&'static str>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["fusermount", "fusermount3"].into_iter().find(|bin| {
                Command::new(bin)
                    .arg("-V")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            })
        })
        .ok_or_else(|| {
            MountError::Unavailable(
                "neither fusermount nor fusermount3 runs: install fuse (Debian/Ubuntu: \
                 apt-get install -y bindfs pulls it in)"
                    .into(),
            )
        })
}

/// Panics with a clear message when FUSE mounts cannot be made: mount tests fail on such a
/// machine instead of passing without having run.
pub fn require_fuse() {
    if let Err(e) = fuse_status() {
        panic!(
            "this test needs a real FUSE mount and does not pass without one. {e}. \
             (CI installs bindfs in .ci/run.)"
        );
    }
}

/// The folder holding every mount point made by this module: `<temp dir>/sessionbus-mounts`.
/// Each mount point is `<pid>-<n>-<mode>`, so a later process can tell whose it was.
pub fn mounts_root() -> PathBuf {
    std::env::temp_dir().join("sessionbus-mounts")
}

/// Mount points currently listed in `/proc/mounts` (octal escapes decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|p| PathBuf::from(unescape_mount_field(p)))
        .collect()
}

/// True when `path` is a mount point right now.
pub fn is_mounted(path: &Path) -> bool {
    mount_points().iter().any(|p| p == path)
}

fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pid a mount point folder under [`mounts_root`] was made by.
fn owner_pid(mount_point: &Path) -> Option<u32> {
    let name = mount_point.file_name()?.to_str()?;
    name.split('-').next()?.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Unmounts every mount under [`mounts_root`] whose process is gone (an interrupted run) and
/// removes its empty folder. Returns the mount points it unmounted. Mounts of live processes,
/// this one included, are left alone.
pub fn cleanup_stale_mounts() -> Vec<PathBuf> {
    let root = mounts_root();
    let me = std::process::id();
    let stale = |p: &Path| {
        p.parent() == Some(root.as_path())
            && owner_pid(p).is_some_and(|pid| pid != me && !process_alive(pid))
    };
    let mut done = Vec::new();
    for mp in mount_points() {
        if stale(&mp) && unmount_path(&mp).is_ok() {
            done.push(mp);
        }
    }
    // Folders of dead processes that are no longer mount points: remove them when empty (a
    // non-empty one is left alone rather than risk deleting through a mount).
    if let Ok(entries) = std::fs::read_dir(&root) {
        let mounted = mount_points();
        for e in entries.flatten() {
            let p = e.path();
            if stale(&p) && !mounted.contains(&p) {
                let _ = std::fs::remove_dir(&p);
            }
        }
    }
    done
}

/// Unmounts `mount_point`: `fusermount -u`, retried for a while when busy (a process still
/// has a file open there), then lazily (`-u -z`: detached now, released when the last user
/// closes). Ok when it is no longer a mount point.
pub fn unmount_path(mount_point: &Path) -> Result<(), MountError> {
    let bin = fusermount()?;
    let run = |lazy: bool| -> String {
        let mut cmd = Command::new(bin);
        cmd.arg("-u");
        if lazy {
            cmd.arg("-z");
        }
        match cmd
            .arg(mount_point)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
        {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("cannot run {bin}: {e}"),
        }
    };
    let mut last = String::new();
    for attempt in 0..10 {
        if !is_mounted(mount_point) {
            return Ok(());
        }
        last = run(false);
        if !is_mounted(mount_point) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20 * (attempt + 1)));
    }
    let lazy = run(true);
    if is_mounted(mount_point) {
        return Err(MountError::Failed(format!(
            "{}: still mounted after `{bin} -u` ({last}) and `{bin} -u -z` ({lazy})",
            mount_point.display()
        )));
    }
    Ok(())
}

/// One bindfs mount of a folder, unmounted when dropped.
#[derive(Debug)]
pub struct BindMount {
    source: PathBuf,
    mount_point: PathBuf,
    mode: CacheMode,
    mounted: bool,
}

impl BindMount {
    /// Mounts `source` with bindfs in `mode` at a new mount point under [`mounts_root`]. The
    /// first mount of a process first unmounts the stale mounts of dead processes.
    pub fn new(source: &Path, mode: CacheMode) -> Result<BindMount, MountError> {
        BindMount::with_access(source, mode, false)
    }

    /// Like [`BindMount::new`]; with `allow_other`, users other than the mounting one may use
    /// the mount too (a sandboxed container running as another user; needs root, or
    /// `user_allow_other` in /etc/fuse.conf).
    pub fn with_access(
        source: &Path,
        mode: CacheMode,
        allow_other: bool,
    ) -> Result<BindMount, MountError> {
        BindMount::with_options(source, mode, allow_other, &[])
    }

    /// Like [`BindMount::with_access`], with more FUSE options after the cache mode (each one
    /// `name` or `name=value`, such as `entry_timeout=3600`: a name looked up through the
    /// mount stays cached for an hour, which makes the window a real mount's 1 s default
    /// leaves open last as long as a test needs it).
    pub fn with_options(
        source: &Path,
        mode: CacheMode,
        allow_other: bool,
        options: &[&str],
    ) -> Result<BindMount, MountError> {
        fuse_status()?;
        static CLEANUP: Once = Once::new();
        CLEANUP.call_once(|| {
            for p in cleanup_stale_mounts() {
                eprintln!("sessionbus-testkit: unmounted stale mount {}", p.display());
            }
        });
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let root = mounts_root();
        std::fs::create_dir_all(&root)
            .map_err(|e| MountError::Failed(format!("{}: {e}", root.display())))?;
        let mount_point = root.join(format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            mode.option()
        ));
        std::fs::create_dir(&mount_point)
            .map_err(|e| MountError::Failed(format!("{}: {e}", mount_point.display())))?;
        let source = std::path::absolute(source)
            .map_err(|e| MountError::Failed(format!("{}: {e}", source.display())))?;
        let fail = |m: String| {
            let _ = std::fs::remove_dir(&mount_point);
            Err(MountError::Failed(m))
        };
        // --no-allow-other: only this user needs the mount, and it works without
        // `user_allow_other` in /etc/fuse.conf when not root.
        // bindfs adds `-o allow_other` unless told not to.
        let mut cmd = Command::new("bindfs");
        if !allow_other {
            cmd.arg("--no-allow-other");
        }
        let option = std::iter::once(mode.option())
            .chain(options.iter().copied())
            .collect::<Vec<_>>()
            .join(",");
        let out = match cmd
            .arg("-o")
            .arg(&option)
            .arg(&source)
            .arg(&mount_point)
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) => o,
            Err(e) => return fail(format!("cannot run bindfs: {e}")),
        };
        if !out.status.success() {
            return fail(format!(
                "bindfs -o {} {} {} failed ({}): {}",
                option,
                source.display(),
                mount_point.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // bindfs returns once the mount exists; make sure before anyone relies on it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_mounted(&mount_point) {
            if Instant::now() >= deadline {
                return fail(format!(
                    "bindfs succeeded but {} is not in /proc/mounts",
                    mount_point.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(BindMount {
            source,
            mount_point,
            mode,
            mounted: true,
        })
    }

    /// The folder that is mounted (the host's side).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Where it is mounted (the container's side).
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The cache mode.
    pub fn mode(&self) -> CacheMode {
        self.mode
    }

    /// Unmounts now and removes the mount point, reporting a failure (dropping does the same
    /// silently).
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), MountError> {
        if !self.mounted {
            return Ok(());
        }
        unmount_path(&self.mount_point)?;
        self.mounted = false;
        let _ = std::fs::remove_dir(&self.mount_point);
        Ok(())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("sessionbus-testkit: {e}");
        }
    }
}

/// A provisioned session folder ([`TempSession`]) mounted through FUSE: the host works on the
/// folder itself, the container through the mount. Dropping unmounts, then removes the folder.
pub struct MountedSession {
    /// The mount (declared first: dropped before the folder it shows).
    pub mount: BindMount,
    /// The session folder on the host's side.
    pub session: TempSession,
}

impl MountedSession {
    /// A fresh session folder, mounted in `mode`.
    pub fn new(mode: CacheMode) -> Result<MountedSession, MountError> {
        let session = TempSession::try_new().map_err(MountError::Failed)?;
        let mount = BindMount::new(session.dir(), mode)?;
        Ok(MountedSession { mount, session })
    }

    /// A fresh session folder, mounted in `mode` with more FUSE options (see
    /// [`BindMount::with_options`]).
    pub fn with_options(mode: CacheMode, options: &[&str]) -> Result<MountedSession, MountError> {
        let session = TempSession::try_new().map_err(MountError::Failed)?;
        let mount = BindMount::with_options(session.dir(), mode, false, options)?;
        Ok(MountedSession { mount, session })
    }

    /// The session folder as the host sees it (the real folder).
    pub fn host_dir(&self) -> &Path {
        self.session.dir()
    }

    /// The same folder as the container sees it (through the mount).
    pub fn container_dir(&self) -> &Path {
        self.mount.mount_point()
    }

    /// The container's paths (inbound.db, outbound.db, `.heartbeat` through the mount).
    pub fn container_paths(&self) -> SessionPaths {
        SessionPaths::new(self.container_dir())
    }

    /// The host's view on the system clock (processes on both sides compare real times).
    pub fn host(&self) -> HostSession {
        HostSession::open(self.host_dir())
    }

    /// The cache mode.
    pub fn mode(&self) -> CacheMode {
        self.mount.mode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in CacheMode::ALL {
            assert_eq!(m.to_string().parse::<CacheMode>(), Ok(m));
        }
        assert_eq!("direct-io".parse::<CacheMode>(), Ok(CacheMode::DirectIo));
        assert!("writeback".parse::<CacheMode>().is_err());
        assert!(!CacheMode::KernelCache.revalidates());
    }

    #[test]
    fn a_missing_device_is_named_in_the_error() {
        let e = check_fuse(Path::new("/nonexistent/fuse")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, MountError::Unavailable(_)), "{e:?}");
        assert!(
            text.contains("/nonexistent/fuse is missing"),
            "the message says what is missing: {text}"
        );
    }

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_mount_field(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_field(r"/tmp/a\134b"), r"/tmp/a\b");
        assert_eq!(unescape_mount_field(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mount_field(r"/tmp/end\04"), r"/tmp/end\04");
    }

    #[test]
    fn owners_come_from_the_folder_name() {
        assert_eq!(
            owner_pid(Path::new("/tmp/sessionbus-mounts/123-4-auto_cache")),
            Some(123)
        );
        assert_eq!(owner_pid(Path::new("/tmp/sessionbus-mounts/x-4")), None);
    }
}
