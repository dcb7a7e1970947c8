//! Session fixtures: a real folder in a temp dir, or a pair of in-memory databases.

use crate::clock::ManualClock;
use diesel::{Connection, SqliteConnection};
use sessionbus_schema::{migrate, Clock, DbFile, FileKind, Role};
use sessionbus_store::{provision, ContainerSession, HostSession, SessionPaths};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A provisioned session folder in its own temp dir, with a manual clock its views share (its
/// own, or one shared with other sessions: [`TempSession::with_clock`]). The folder is
/// removed when this is dropped.
pub struct TempSession {
    /// The temp dir (kept alive by this value).
    pub root: tempfile::TempDir,
    /// The session folder's paths.
    pub paths: SessionPaths,
    /// The clock both views share (clones share the time).
    pub clock: ManualClock,
}

/// A migrated pair of files made once per process; each [`TempSession`] copies it, which is
/// faster than migrating again.
fn template() -> Result<&'static PathBuf, String> {
    static T: OnceLock<Result<(tempfile::TempDir, PathBuf), String>> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let paths = SessionPaths::new(dir.path().join("template"));
        provision(&paths, None, &sessionbus_schema::SystemClock).map_err(|e| e.to_string())?;
        Ok((dir, paths.dir))
    })
    .as_ref()
    .map(|(_, p)| p)
    .map_err(Clone::clone)
}

impl TempSession {
    /// A fresh session folder holding both files in the current schema, `inbox/` and `outbox/`.
    pub fn new() -> Self {
        TempSession::try_new().unwrap_or_else(|e| panic!("TempSession: {e}"))
    }

    /// Like [`TempSession::new`], returning the error.
    pub fn try_new() -> Result<Self, String> {
        TempSession::try_with_clock(ManualClock::new())
    }

    /// A fresh session folder whose views use `clock`, a clone of a clock other sessions
    /// share (a host serving many sessions sees one time).
    pub fn with_clock(clock: &ManualClock) -> Self {
        TempSession::try_with_clock(clock.clone()).unwrap_or_else(|e| panic!("TempSession: {e}"))
    }

    /// `n` fresh session folders (each in its own temp dir) on one shared `clock`.
    pub fn many(n: usize, clock: &ManualClock) -> Vec<Self> {
        (0..n).map(|_| TempSession::with_clock(clock)).collect()
    }

    /// Like [`TempSession::with_clock`], returning the error.
    pub fn try_with_clock(clock: ManualClock) -> Result<Self, String> {
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let paths = SessionPaths::new(root.path().join("v2-sessions/group-1/session-1"));
        std::fs::create_dir_all(&paths.container_dir).map_err(|e| e.to_string())?;
        let t = SessionPaths::new(template()?);
        std::fs::copy(&t.inbound, &paths.inbound).map_err(|e| e.to_string())?;
        std::fs::copy(&t.outbound, &paths.outbound).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&paths.inbox).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&paths.outbox).map_err(|e| e.to_string())?;
        Ok(TempSession { root, paths, clock })
    }

    /// The session folder (the host's).
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// The container's writable area inside it (outbound.db, outbox/, .heartbeat).
    pub fn container_dir(&self) -> &Path {
        &self.paths.container_dir
    }

    /// The data dir holding `v2-sessions/`.
    pub fn data_dir(&self) -> &Path {
        self.root.path()
    }

    /// The host's view, on the shared clock.
    pub fn host(&self) -> HostSession {
        HostSession::with_paths(self.paths.clone(), self.clock.shared())
    }

    /// The container's view, on the shared clock.
    pub fn container(&self) -> ContainerSession {
        ContainerSession::with_paths(self.paths.clone(), self.clock.shared())
            .unwrap_or_else(|e| panic!("TempSession::container: {e}"))
    }
}

impl Default for TempSession {
    fn default() -> Self {
        TempSession::new()
    }
}

/// A host and a container view over the same pair of in-memory databases (SQLite's `memdb`
/// VFS): role-true (the readers are `mode=ro`) and fast, for unit tests. Not a substitute for
/// [`TempSession`] where behaviour depends on real files.
pub struct MemSession {
    // Keeps both databases alive: a memdb database lives while a connection is open.
    _keep: [SqliteConnection; 2],
    inbound: DbFile,
    outbound: DbFile,
    /// The clock both views share.
    pub clock: ManualClock,
}

impl MemSession {
    /// A fresh, migrated pair.
    pub fn new() -> Self {
        MemSession::try_new().unwrap_or_else(|e| panic!("MemSession: {e}"))
    }

    /// Like [`MemSession::new`], returning the error.
    pub fn try_new() -> Result<Self, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let clock = ManualClock::new();
        let mut keep = Vec::new();
        let mut files = Vec::new();
        for kind in [FileKind::Inbound, FileKind::Outbound] {
            let name = format!("sessionbus_{}_{id}", kind.file_name().replace('.', "_"));
            let conn = SqliteConnection::establish(&format!("file:/{name}?vfs=memdb"))
                .map_err(|e| e.to_string())?;
            keep.push(conn);
            let file = DbFile::memdb(&name, kind, kind.writer());
            migrate::migrate(
                &file,
                clock.now(),
                sessionbus_schema::migrate::IfMissing::Create,
            )
            .map_err(|e| e.to_string())?;
            files.push(file);
        }
        let outbound = files.pop().ok_or("no outbound")?;
        let inbound = files.pop().ok_or("no inbound")?;
        let keep: [SqliteConnection; 2] = keep.try_into().map_err(|_| "keepers".to_string())?;
        Ok(MemSession {
            _keep: keep,
            inbound,
            outbound,
            clock,
        })
    }

    /// The host's view.
    pub fn host(&self) -> HostSession {
        HostSession::from_files(
            SessionPaths::new("memdb"),
            self.inbound.clone().as_role(Role::Host),
            self.outbound.clone().as_role(Role::Host),
            self.clock.shared(),
        )
    }

    /// The container's view.
    pub fn container(&self) -> ContainerSession {
        ContainerSession::from_files(
            SessionPaths::new("memdb"),
            self.inbound.clone().as_role(Role::Container),
            self.outbound.clone().as_role(Role::Container),
            self.clock.shared(),
        )
    }
}

impl Default for MemSession {
    fn default() -> Self {
        MemSession::new()
    }
}
