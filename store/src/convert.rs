//! Converting a single-layout session folder (the older host's, where the container can write
//! the folder that holds inbound.db) to the split layout, while no container runs.
//!
//! Everything in such a folder may have been planted, so the conversion moves entries by name
//! (`rename` moves a link or a FIFO as the entry it is, never what it points to), keeps in the
//! host's folder only what the host owns (inbound.db, `inbox/`), removes the stamp folder (it
//! is rebuilt by the next host write), and refuses where it cannot tell a planted file from the
//! host's own: an inbound.db owned by another user, a journal next to it, a link or a FIFO
//! where the host's file or folders belong.

use crate::error::{Result, StoreError};
use crate::paths::{only_we_write, Layout, SessionPaths, CONTAINER_AREA};
use crate::provision::Ownership;
use crate::stamp::STAMP_DIR_NAME;
use sessionbus_schema::migrate::{self, MigrationOutcome};
use sessionbus_schema::{At, Clock, DbError, DbFile, FileKind, Role};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The caller's word that no container runs for the session (it stopped it, or knows none was
/// started), which a conversion needs: the container's files move under it.
#[derive(Debug, Clone, Copy)]
pub struct ContainerStopped(());

impl ContainerStopped {
    /// States that no container runs for the session now and none starts until the call that
    /// takes this returns. Moving a running container's files breaks its session.
    pub fn i_have_stopped_the_container() -> Self {
        ContainerStopped(())
    }
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Converted {
    /// The session's paths in the split layout.
    pub paths: SessionPaths,
    /// Entries moved into the container's area, by name.
    pub moved: Vec<String>,
    /// inbound.db's migration, now that it sits in a folder only the host writes.
    pub inbound: MigrationOutcome,
}

const OP: &str = "convert session layout";

fn refuse(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Db(DbError::UnsafePath {
        at: At::new(path, Role::Operator, OP),
        detail: detail.into(),
    })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| {
        StoreError::Db(DbError::Io {
            at: At::new(path, Role::Operator, OP),
            source,
        })
    }
}

/// The names that stay in the host's folder.
const HOST_NAMES: &[&str] = &["inbound.db", "inbox"];

/// Converts the single-layout folder `dir` to the split layout: the container's entries
/// (outbound.db and its journal, `outbox/`, `.heartbeat`, and anything else it created) move
/// into `dir/container/`; `dir` becomes the host's (this process's user, mode 0755); inbound.db
/// is migrated. A folder already in the split layout is left as it is (`Ok(None)`).
///
/// With `container` (its uid and gid), the container's area and everything moved into it are
/// handed to that user before the area takes its name, so a container that runs as that user
/// can write its files again (an older host's files were often root's). Links are re-owned as
/// links, never followed; a non-folder with more than one name is left as it is (it may be a
/// host file the container linked into its folder: re-owning it would hand over the host's
/// file).
pub fn convert_to_split(
    dir: &Path,
    container: Option<Ownership>,
    clock: &dyn Clock,
    _stopped: ContainerStopped,
) -> Result<Option<Converted>> {
    if SessionPaths::for_host(dir).layout == Layout::Split {
        return Ok(None);
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(refuse(dir, "the session folder is not a folder"));
    }
    check_host_entries(dir)?;
    let staging = dir.join(format!(".{CONTAINER_AREA}.converting"));
    match std::fs::symlink_metadata(&staging) {
        Ok(m) if m.is_dir() => {} // an interrupted conversion: carry on where it stopped
        Ok(_) => std::fs::remove_file(&staging).map_err(io_err(&staging))?,
        Err(_) => std::fs::create_dir(&staging).map_err(io_err(&staging))?,
    }
    set_owner_mode(&staging, None, 0o755)?;
    let mut moved = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let name = entry.map_err(io_err(dir))?.file_name();
        if keeps_its_place(&name, &staging) {
            continue;
        }
        let from = dir.join(&name);
        if name == STAMP_DIR_NAME {
            remove_entry(&from)?;
            continue;
        }
        // A real folder named `container` would make the folder look split: it was the
        // container's (the host never made one in this layout), so it moves like the rest.
        std::fs::rename(&from, staging.join(&name)).map_err(io_err(&from))?;
        moved.push(name.to_string_lossy().into_owned());
    }
    // Handed over while still staged: a conversion interrupted here is carried on by the next
    // call (the folder still looks single), which hands everything over again.
    if let Some(o) = container {
        hand_over(&staging, o)?;
    }
    let area = dir.join(CONTAINER_AREA);
    std::fs::rename(&staging, &area).map_err(io_err(&area))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    set_owner_mode(dir, Some(me), 0o755)?;
    own_inbox(&dir.join("inbox"), me)?;
    let paths = SessionPaths::new(dir);
    if !only_we_write(dir) {
        return Err(refuse(
            dir,
            "the folder is still writable by others after conversion",
        ));
    }
    let inbound = migrate::migrate(
        &DbFile::new(&paths.inbound, FileKind::Inbound, Role::Host),
        clock.now(),
        migrate::IfMissing::Fail,
    )?;
    moved.sort();
    Ok(Some(Converted {
        paths,
        moved,
        inbound,
    }))
}

fn keeps_its_place(name: &OsString, staging: &Path) -> bool {
    HOST_NAMES.iter().any(|h| name == *h) || staging.file_name() == Some(name.as_os_str())
}

/// Refuses what cannot be told apart from a container's forgery: inbound.db owned by another
/// user or not a regular file, a journal next to it (hot, or planted: a rollback would run it),
/// `inbox` as anything but a real folder.
fn check_host_entries(dir: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let inbound = dir.join("inbound.db");
    match std::fs::symlink_metadata(&inbound) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(refuse(&inbound, "inbound.db is not a regular file"))
        }
        Ok(m) if m.uid() != me && m.uid() != 0 => {
            return Err(refuse(
                &inbound,
                format!(
                    "inbound.db belongs to uid {}, not to the host: the container may have put \
                     its own file there; check it before converting",
                    m.uid()
                ),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(io_err(&inbound)(e)),
    }
    let journal = dir.join("inbound.db-journal");
    if std::fs::symlink_metadata(&journal).is_ok() {
        return Err(refuse(
            &journal,
            "inbound.db has a journal next to it: a host that died mid-write, or one the \
             container planted (rolling it back would run it). Check it, remove it if planted, \
             and convert again",
        ));
    }
    let inbox = dir.join("inbox");
    if let Ok(m) = std::fs::symlink_metadata(&inbox) {
        if !m.is_dir() {
            return Err(refuse(&inbox, "inbox is not a real folder"));
        }
    }
    Ok(())
}

/// Removes one entry as what it is (a link, a file, or a folder and everything in it, links
/// never followed).
fn remove_entry(path: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    if m.is_dir() {
        std::fs::remove_dir_all(path).map_err(io_err(path))
    } else {
        std::fs::remove_file(path).map_err(io_err(path))
    }
}

fn set_owner_mode(path: &Path, owner: Option<u32>, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(uid) = owner {
        std::os::unix::fs::lchown(path, Some(uid), None).map_err(io_err(path))?;
    }
    // The entry is a real folder in a folder only the host writes now: no link to follow.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Gives `root` and everything under it to `owner`: links re-owned as links (`lchown`), never
/// followed; a non-folder with more than one name left as it is (see [`convert_to_split`]).
/// Iterative, so a deep tree the container made cannot exhaust the stack. The container is
/// stopped ([`ContainerStopped`]), so nothing changes the tree while it is walked.
fn hand_over(root: &Path, owner: Ownership) -> Result<()> {
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let m = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if m.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(io_err(&path))? {
                todo.push(entry.map_err(io_err(&path))?.path());
            }
        } else if m.nlink() > 1 {
            tracing::warn!(
                path = %path.display(),
                links = m.nlink(),
                "converting a session: not handing a file with several names to the container"
            );
            continue;
        }
        std::os::unix::fs::lchown(&path, Some(owner.uid), Some(owner.gid))
            .map_err(io_err(&path))?;
    }
    Ok(())
}

/// Makes `inbox/` and everything in it the host's (links re-owned as links, never followed),
/// so the container can no longer change what the host writes there.
fn own_inbox(inbox: &Path, uid: u32) -> Result<()> {
    let Ok(m) = std::fs::symlink_metadata(inbox) else {
        return Ok(());
    };
    std::os::unix::fs::lchown(inbox, Some(uid), None).map_err(io_err(inbox))?;
    if m.is_dir() {
        for entry in std::fs::read_dir(inbox).map_err(io_err(inbox))? {
            own_inbox(&entry.map_err(io_err(inbox))?.path(), uid)?;
        }
    }
    Ok(())
}
