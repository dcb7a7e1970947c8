//! Creating a session folder in the split layout, and the container's check that it can write
//! its own area.

use crate::error::{Result, StoreError};
use crate::paths::{Layout, SessionPaths};
use sessionbus_schema::migrate::{self, MigrationOutcome};
use sessionbus_schema::{At, Clock, DbError, DbFile, FileKind, Role};
use std::path::Path;

/// Owner of the container's writable area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The container's uid.
    pub uid: u32,
    /// The container's gid.
    pub gid: u32,
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Provisioned {
    /// The folder's paths.
    pub paths: SessionPaths,
    /// inbound.db's migration.
    pub inbound: MigrationOutcome,
    /// outbound.db's creation, when this call created the container's area (an existing area
    /// is the container's: its file is migrated by the container itself at start-up).
    pub outbound: Option<MigrationOutcome>,
}

const OP: &str = "provision session";

fn io_err<'a>(path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| {
        StoreError::Db(DbError::Io {
            at: At::new(path, Role::Host, OP),
            source,
        })
    }
}

fn unsafe_path(path: &Path, detail: &str) -> StoreError {
    StoreError::Db(DbError::UnsafePath {
        at: At::new(path, Role::Host, OP),
        detail: detail.into(),
    })
}

/// Creates (or brings up to date) a session folder in the split layout (see
/// [`crate::paths`]): the host's folder (mode 0755) with inbound.db in the current schema and
/// `inbox/`, and the container's area `container/` with outbound.db and `outbox/`.
///
/// The container's area is created, filled and handed over (to `container`'s uid and gid, when
/// the host runs as root and the container as an unprivileged user) only when this call
/// creates it: once it exists it belongs to the container, and nothing in it is opened,
/// changed or followed here (only the area's own entry, which sits in the host's folder, is
/// re-owned). Refuses a folder in the single layout (convert it with `sessionbus migrate`).
pub fn provision(
    paths: &SessionPaths,
    container: Option<Ownership>,
    clock: &dyn Clock,
) -> Result<Provisioned> {
    if paths.layout != Layout::Split {
        return Err(StoreError::InvalidArgument {
            at: At::new(&paths.dir, Role::Host, OP),
            detail: "new sessions are provisioned in the split layout (SessionPaths::new)".into(),
        });
    }
    if std::fs::symlink_metadata(paths.dir.join(FileKind::Outbound.file_name())).is_ok() {
        return Err(unsafe_path(
            &paths.dir,
            "the folder holds a single-layout session (outbound.db next to inbound.db); \
             convert it with `sessionbus migrate` while no container runs",
        ));
    }
    std::fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    ensure_real_dir(&paths.dir)?;
    set_mode(&paths.dir, 0o755).map_err(io_err(&paths.dir))?;
    let now = clock.now();
    let inbound = migrate::migrate(
        &DbFile::new(&paths.inbound, FileKind::Inbound, Role::Host),
        now,
        migrate::IfMissing::Create,
    )?;
    if inbound.created {
        // A new inbound.db starts a new change counter: an earlier file's stamps would say
        // the host wrote changes this file never had (see `stamp`).
        crate::stamp::clear(&paths.dir).map_err(io_err(&paths.dir))?;
    }
    set_mode(&paths.inbound, 0o644).map_err(io_err(&paths.inbound))?;
    // The stamp folder exists from the start: the container's mount plan binds it.
    for dir in [&paths.stamps, &paths.inbox] {
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::create_dir(dir).map_err(io_err(dir))?;
        }
        ensure_real_dir(dir)?;
        set_mode(dir, 0o755).map_err(io_err(dir))?;
    }
    let outbound = match std::fs::symlink_metadata(&paths.container_dir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => {
            return Err(unsafe_path(
                &paths.container_dir,
                "expected the container's folder, found a file or a link",
            ))
        }
        Err(_) => Some(create_area(paths, now)?),
    };
    if let Some(o) = container {
        if outbound.is_some() {
            // Freshly made by this call, in a folder nobody else could write yet.
            for p in [&paths.outbound, &paths.outbox] {
                std::os::unix::fs::lchown(p, Some(o.uid), Some(o.gid)).map_err(io_err(p))?;
            }
        }
        let area = &paths.container_dir;
        std::os::unix::fs::lchown(area, Some(o.uid), Some(o.gid)).map_err(io_err(area))?;
    }
    Ok(Provisioned {
        paths: paths.clone(),
        inbound,
        outbound,
    })
}

/// Creates the container's area with its outbound.db and `outbox/`, on the container's behalf
/// (the older container expects the host to create its tables).
fn create_area(
    paths: &SessionPaths,
    now: sessionbus_schema::Timestamp,
) -> Result<MigrationOutcome> {
    std::fs::create_dir(&paths.container_dir).map_err(io_err(&paths.container_dir))?;
    set_mode(&paths.container_dir, 0o755).map_err(io_err(&paths.container_dir))?;
    let out = migrate::migrate(
        &DbFile::new(&paths.outbound, FileKind::Outbound, Role::Container),
        now,
        migrate::IfMissing::Create,
    )?;
    set_mode(&paths.outbound, 0o644).map_err(io_err(&paths.outbound))?;
    std::fs::create_dir(&paths.outbox).map_err(io_err(&paths.outbox))?;
    Ok(out)
}

fn ensure_real_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(unsafe_path(
            path,
            "expected a folder, found a file or a link",
        )),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Fails with [`StoreError::NotWritable`] when this process cannot write `path` (it must
/// exist): the container checks outbound.db and its folder at start-up, so an ownership
/// mistake is reported once, clearly, instead of as a failed write later.
pub fn check_writable(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    const OP: &str = "check write access";
    let at = || At::new(path, Role::Container, OP);
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::Db(DbError::NotFound { at: at() })
        } else {
            StoreError::Db(DbError::Io {
                at: at(),
                source: e,
            })
        }
    })?;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        StoreError::InvalidArgument {
            at: at(),
            detail: "path contains NUL".into(),
        }
    })?;
    // SAFETY: `c` is a valid NUL-terminated path; access() only reads it.
    let ok = unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0;
    if ok {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    Err(StoreError::NotWritable {
        at: at(),
        path: path.to_path_buf(),
        uid,
        owner_uid: meta.uid(),
        owner_gid: meta.gid(),
        mode: meta.mode() & 0o7777,
    })
}
