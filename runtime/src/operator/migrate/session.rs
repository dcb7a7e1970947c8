//! One session folder's migration: convert it when it is in the single layout and its
//! container is stopped, migrate its inbound.db, report its outbound.db.

use super::report::{
    Change, ContainerFile, Conversion, FileReport, FileResult, SkipReason, MAX_NAMES_LISTED,
};
use crate::operator::look::{look_at_inbound, look_at_outbound};
use crate::operator::running::{self, Liveness, RunningList, Verdict};
use sessionbus_schema::untrusted::UntrustedDir;
use sessionbus_schema::{Clock, DbFile, FileKind, Role, Timestamp};
use sessionbus_store::{
    convert_to_split, ContainerStopped, Layout, Ownership, SessionPaths, StoreError,
};
use std::path::Path;

/// The most names of a folder a dry run lists to say what a conversion would move.
const MAX_NAMES_READ: usize = 100_000;

/// What one session's migration needs to know.
pub(crate) struct Ctx<'a> {
    /// Write nothing.
    pub dry_run: bool,
    /// Take every container as stopped.
    pub force: bool,
    /// Which containers the operator said run.
    pub running: &'a RunningList,
    /// Now, in milliseconds since the Unix epoch (heartbeats are compared with it).
    pub now_ms: i64,
    /// The clock conversions migrate with (rows that lacked a timestamp get its time).
    pub clock: &'a dyn Clock,
    /// Who the container's area is handed to on conversion.
    pub owner: Option<Ownership>,
}

fn entry(paths: &SessionPaths, kind: Option<FileKind>, result: FileResult) -> FileReport {
    let path = match kind {
        None => paths.dir.clone(),
        Some(FileKind::Inbound) => paths.inbound.clone(),
        Some(FileKind::Outbound) => paths.outbound.clone(),
    };
    FileReport {
        session: paths.dir.clone(),
        path,
        kind,
        layout: Some(paths.layout),
        result,
    }
}

/// Every entry for the session folder `dir`.
pub(crate) fn migrate_session(dir: &Path, ctx: &Ctx<'_>) -> Vec<FileReport> {
    let mut out = Vec::new();
    let mut paths = SessionPaths::for_host(dir);
    let mut inbound_done = false;
    if paths.layout == Layout::Single {
        let liveness = running::decide(&paths, ctx.running, ctx.force, ctx.now_ms);
        match liveness.verdict() {
            Verdict::Running | Verdict::Unknown => {
                let cause = if liveness.verdict() == Verdict::Running {
                    SkipReason::ContainerRunning { liveness }
                } else {
                    SkipReason::CannotTell { liveness }
                };
                out.push(entry(&paths, None, FileResult::skipped(cause)));
                out.push(entry(
                    &paths,
                    Some(FileKind::Inbound),
                    FileResult::skipped(SkipReason::WaitsForConversion),
                ));
                out.push(outbound_entry(&paths));
                return out;
            }
            Verdict::Stopped if ctx.dry_run => {
                let owner = ctx.owner.or_else(|| owner_of_container_files(dir));
                out.push(entry(&paths, None, would_convert(&paths, liveness, owner)));
                out.push(entry(&paths, Some(FileKind::Inbound), plan_single(&paths)));
                out.push(outbound_entry(&paths));
                return out;
            }
            Verdict::Stopped => {
                match convert(dir, ctx, liveness) {
                    Ok(Some((conversion, inbound, split))) => {
                        out.push(entry(&split, None, conversion));
                        out.push(entry(&split, Some(FileKind::Inbound), inbound));
                        paths = split;
                        inbound_done = true;
                    }
                    // Split by now (another operator converted it): go on as split.
                    Ok(None) => paths = SessionPaths::for_host(dir),
                    Err(e) => {
                        out.push(entry(&paths, None, store_failure(&e)));
                        out.push(entry(
                            &paths,
                            Some(FileKind::Inbound),
                            FileResult::skipped(SkipReason::WaitsForConversion),
                        ));
                        // Where the conversion stopped, the container's files may be in
                        // either place: report them as the folder looks now.
                        out.push(outbound_entry(&SessionPaths::for_host(dir)));
                        return out;
                    }
                }
            }
        }
    }
    if !inbound_done {
        out.push(entry(
            &paths,
            Some(FileKind::Inbound),
            migrate_inbound(&paths, ctx),
        ));
    }
    out.push(outbound_entry(&paths));
    out
}

/// Converts `dir`, whose container was found stopped. `Ok(None)`: it was split already.
fn convert(
    dir: &Path,
    ctx: &Ctx<'_>,
    liveness: Liveness,
) -> Result<Option<(FileResult, FileResult, SessionPaths)>, StoreError> {
    let owner = ctx.owner.or_else(|| owner_of_container_files(dir));
    let stopped = ContainerStopped::i_have_stopped_the_container();
    let Some(done) = convert_to_split(dir, owner, ctx.clock, stopped)? else {
        return Ok(None);
    };
    let moved_count = done.moved.len();
    let moved = done.moved.iter().take(MAX_NAMES_LISTED).cloned().collect();
    let inbound = if done.inbound.changed() {
        FileResult::Migrated(Change::done(&done.inbound))
    } else {
        FileResult::Current
    };
    Ok(Some((
        FileResult::Converted(Conversion {
            moved,
            moved_count,
            liveness,
            container_owner: owner.map(|o| (o.uid, o.gid)),
        }),
        inbound,
        done.paths,
    )))
}

/// Whom the container's area goes to: the owner of the first of the folder's outbound.db,
/// `.heartbeat`, `outbox/` and the folder itself that is not this process's user (`lstat`
/// only: nothing is opened or followed). `None` leaves it to this user (a container run as
/// the same user).
fn owner_of_container_files(dir: &Path) -> Option<Ownership> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let single = SessionPaths::single(dir);
    [single.outbound, single.heartbeat, single.outbox, single.dir]
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .find(|m| m.uid() != me)
        .map(|m| Ownership {
            uid: m.uid(),
            gid: m.gid(),
        })
}

/// What a conversion of the single-layout folder would move, read without following names.
fn would_convert(paths: &SessionPaths, liveness: Liveness, owner: Option<Ownership>) -> FileResult {
    let names = UntrustedDir::open(&paths.dir)
        .map_err(|e| e.to_string())
        .and_then(|d| d.names(MAX_NAMES_READ).map_err(|e| e.to_string()));
    match names {
        Ok(Some(mut names)) => {
            names.sort();
            let moved: Vec<String> = names
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| {
                    ![
                        "inbound.db",
                        "inbox",
                        sessionbus_store::stamp::STAMP_DIR_NAME,
                    ]
                    .contains(&n.as_str())
                })
                .collect();
            FileResult::Converted(Conversion {
                moved_count: moved.len(),
                moved: moved.into_iter().take(MAX_NAMES_LISTED).collect(),
                liveness,
                container_owner: owner.map(|o| (o.uid, o.gid)),
            })
        }
        Ok(None) => FileResult::failed_at(
            &paths.dir,
            format!("the folder holds more than {MAX_NAMES_READ} names; not converted"),
        ),
        Err(e) => FileResult::failed_at(&paths.dir, format!("cannot list the folder: {e}")),
    }
}

/// A dry run's view of the inbound.db of a single-layout folder: read through the untrusted
/// layer (the folder is the container's), never with a path-following open.
fn plan_single(paths: &SessionPaths) -> FileResult {
    let mut problems = Vec::new();
    let (look, _reader) = look_at_inbound(paths, &mut problems);
    match (&look.state, &look.error) {
        (Some(state), _) if state.is_current() => FileResult::Current,
        (Some(state), _) => FileResult::Migrated(Change::would(state, FileKind::Inbound)),
        (None, _) if look.wal_mode => FileResult::Migrated(Change {
            switched_from: Some("wal".into()),
            ..Change::default()
        }),
        (None, _) if look.missing && look.journal.is_none() => {
            FileResult::skipped(SkipReason::Missing)
        }
        (None, error) => FileResult::failed_at(
            &look.path,
            error.clone().unwrap_or_else(|| problems.join("; ")),
        ),
    }
}

/// Migrates (or plans) the inbound.db of a split-layout folder: a folder only the host
/// writes, so the schema crate's own writer (as the operator) is used.
fn migrate_inbound(paths: &SessionPaths, ctx: &Ctx<'_>) -> FileResult {
    if let Err(e) = std::fs::symlink_metadata(&paths.inbound) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return FileResult::skipped(SkipReason::Missing);
        }
    }
    let file = DbFile::new(&paths.inbound, FileKind::Inbound, Role::Operator);
    if ctx.dry_run {
        match sessionbus_schema::migrate::plan(&file) {
            Ok(plan) if plan.is_current() => FileResult::Current,
            Ok(plan) => FileResult::Migrated(Change::planned(&plan)),
            Err(e) => FileResult::failed(&e),
        }
    } else {
        let now = Timestamp::from_unix_millis(ctx.now_ms).unwrap_or_else(|| ctx.clock.now());
        match sessionbus_schema::migrate::migrate(
            &file,
            now,
            sessionbus_schema::migrate::IfMissing::Fail,
        ) {
            Ok(outcome) if !outcome.changed() => FileResult::Current,
            Ok(outcome) => FileResult::Migrated(Change::done(&outcome)),
            Err(e) => FileResult::failed(&e),
        }
    }
}

/// outbound.db, looked at through the untrusted layer and left to its container.
fn outbound_entry(paths: &SessionPaths) -> FileReport {
    let mut problems = Vec::new();
    let (look, reader) = look_at_outbound(paths, &mut problems);
    drop(reader);
    let result = if look.missing && look.journal.is_none() {
        FileResult::skipped(SkipReason::Missing)
    } else {
        FileResult::LeftToContainer(ContainerFile {
            size: look.size,
            schema: look.schema,
            journal: look.journal,
            wal_mode: look.wal_mode,
            problems,
        })
    };
    entry(paths, Some(FileKind::Outbound), result)
}

fn store_failure(e: &StoreError) -> FileResult {
    match e {
        StoreError::Db(db) => FileResult::failed(db),
        other => FileResult::Failed {
            reason: other.to_string(),
            error: other.to_string(),
            retryable: false,
        },
    }
}
