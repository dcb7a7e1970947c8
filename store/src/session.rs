//! Opening a session folder as the host or as the container, and provisioning one.

use crate::error::{Result, StoreError};
use crate::fileio::{self, OpError};
use crate::inbound_reader::InboundReader;
use crate::inbound_writer::{self as iw, InboundWriter, NextOccurrence, SyncReport};
use crate::model::*;
use crate::outbound_reader::OutboundReader;
use crate::outbound_writer::OutboundWriter;
use crate::validate::check_id;
use diesel::prelude::*;
use sessionbus_schema::migrate::{self, MigrationOutcome};
use sessionbus_schema::outbound::processing_ack;
use sessionbus_schema::{At, Clock, DbError, DbFile, FileKind, Role, Seq, SeqOwner, SystemClock};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The fixed paths of one session folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPaths {
    /// The folder.
    pub dir: PathBuf,
    /// `inbound.db`.
    pub inbound: PathBuf,
    /// `outbound.db`.
    pub outbound: PathBuf,
    /// `.heartbeat`.
    pub heartbeat: PathBuf,
    /// `inbox/`: attachments the host decoded for the agent.
    pub inbox: PathBuf,
    /// `outbox/`: attachments the agent produced.
    pub outbox: PathBuf,
}

/// Where the session folder is mounted inside a container.
pub const WORKSPACE: &str = "/workspace";

impl SessionPaths {
    /// The paths inside session folder `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        SessionPaths {
            inbound: dir.join(FileKind::Inbound.file_name()),
            outbound: dir.join(FileKind::Outbound.file_name()),
            heartbeat: dir.join(".heartbeat"),
            inbox: dir.join("inbox"),
            outbox: dir.join("outbox"),
            dir,
        }
    }

    /// The container's conventional paths (`/workspace/...`).
    pub fn workspace() -> Self {
        SessionPaths::new(WORKSPACE)
    }

    /// `<data_dir>/v2-sessions/<agent_group_id>/<session_id>`, refusing ids that could
    /// escape the data dir.
    pub fn in_data_dir(data_dir: &Path, agent_group_id: &str, session_id: &str) -> Result<Self> {
        let at = || At::new(data_dir, Role::Host, "locate session folder");
        check_id(at, agent_group_id)?;
        check_id(at, session_id)?;
        Ok(SessionPaths::new(
            data_dir
                .join("v2-sessions")
                .join(agent_group_id)
                .join(session_id),
        ))
    }
}

/// Owner of the container side of a session folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// The container's uid.
    pub uid: u32,
    /// The container's gid.
    pub gid: u32,
}

/// What provisioning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The folder's paths.
    pub paths: SessionPaths,
    /// inbound.db's migration.
    pub inbound: MigrationOutcome,
    /// outbound.db's migration.
    pub outbound: MigrationOutcome,
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| {
        StoreError::Db(DbError::Io {
            at: At::new(path, Role::Host, op),
            source,
        })
    }
}

/// Creates (or brings up to date) a session folder as the host: both files in the current
/// schema, `inbox/` and `outbox/`. With `container` set (the host runs as root, the container
/// as an unprivileged user), the folder, outbound.db and `outbox/` belong to the container and
/// inbound.db stays the host's, readable by everyone. Run before any container starts: this
/// is the only time the host creates outbound.db.
pub fn provision(
    paths: &SessionPaths,
    container: Option<Ownership>,
    clock: &dyn Clock,
) -> Result<Provisioned> {
    const OP: &str = "provision session";
    std::fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir, OP))?;
    let now = clock.now();
    let inbound = migrate::migrate(
        &DbFile::new(&paths.inbound, FileKind::Inbound, Role::Host),
        now,
        true,
    )?;
    if inbound.created {
        // A new inbound.db starts a new change counter: an earlier file's stamps would say
        // the host wrote changes this file never had (see `stamp`).
        crate::stamp::clear(&paths.dir).map_err(io_err(&paths.dir, OP))?;
    }
    let outbound = migrate::migrate(
        &DbFile::new(&paths.outbound, FileKind::Outbound, Role::Host),
        now,
        true,
    )?;
    for d in [&paths.inbox, &paths.outbox] {
        match std::fs::symlink_metadata(d) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(StoreError::Db(DbError::UnsafePath {
                    at: At::new(d, Role::Host, OP),
                    detail: "expected a folder, found a link or a file".into(),
                }))
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir(d).map_err(io_err(d, OP))?,
        }
    }
    set_mode(&paths.inbound, 0o644).map_err(io_err(&paths.inbound, OP))?;
    set_mode(&paths.outbound, 0o644).map_err(io_err(&paths.outbound, OP))?;
    if let Some(o) = container {
        for p in [&paths.dir, &paths.outbound, &paths.outbox] {
            std::os::unix::fs::lchown(p, Some(o.uid), Some(o.gid)).map_err(io_err(p, OP))?;
        }
    }
    Ok(Provisioned {
        paths: paths.clone(),
        inbound,
        outbound,
    })
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Proof, stated by the caller, that no container runs for a session: the host stopped it (or
/// knows none was started). It unlocks the host's only write into outbound.db.
#[derive(Debug, Clone, Copy)]
pub struct NoContainerRunning(());

impl NoContainerRunning {
    /// States that the caller has stopped this session's container, or knows that none runs.
    /// Writing outbound.db while a container runs breaks the one-writer rule and can corrupt
    /// the file across the mount: call this only after the container is gone.
    pub fn i_have_stopped_the_container() -> Self {
        NoContainerRunning(())
    }
}

/// The host's session view: writes inbound.db, reads outbound.db, nothing else.
#[derive(Clone, Debug)]
pub struct HostSession {
    paths: SessionPaths,
    inbound: InboundWriter,
    outbound: OutboundReader,
}

/// How many outbound rows above the delivery cursor one delivery read looks at.
const DELIVERY_SCAN: i64 = 1000;

impl HostSession {
    /// Opens a session folder as the host, with the system clock. Opens no file yet: every
    /// operation opens what it needs and closes it.
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        HostSession::with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens a session folder as the host with the given clock.
    pub fn with_clock(dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        let paths = SessionPaths::new(dir);
        HostSession::from_files(
            paths.clone(),
            DbFile::new(&paths.inbound, FileKind::Inbound, Role::Host),
            DbFile::new(&paths.outbound, FileKind::Outbound, Role::Host),
            clock,
        )
    }

    /// A host view over explicit files (in-memory fixtures use this).
    pub fn from_files(
        paths: SessionPaths,
        inbound: DbFile,
        outbound: DbFile,
        clock: Arc<dyn Clock>,
    ) -> Self {
        HostSession {
            paths,
            inbound: InboundWriter::new(inbound.as_role(Role::Host), clock),
            outbound: OutboundReader::new(outbound.as_role(Role::Host)),
        }
    }

    /// The folder's paths.
    pub fn paths(&self) -> &SessionPaths {
        &self.paths
    }

    /// The writer of inbound.db.
    pub fn inbound(&self) -> &InboundWriter {
        &self.inbound
    }

    /// The reader of outbound.db.
    pub fn outbound(&self) -> &OutboundReader {
        &self.outbound
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.inbound.clock()
    }

    /// Syncs acks: a `completed` ack marks its pending message completed, a `failed` ack marks
    /// it failed. For each completed recurring task, `next_occurrence` may return the next
    /// occurrence, inserted in the same transaction. Reads only the pending messages and their
    /// acks, never the whole history.
    pub fn sync_acks(
        &self,
        next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    ) -> Result<SyncReport> {
        const OP: &str = "sync acks";
        let file = self.inbound.file();
        let pending = fileio::read_own(file, OP, |c| Ok(iw::pending_ids(c)?))?;
        if pending.is_empty() {
            return Ok(SyncReport::default());
        }
        let finals: Vec<Ack> = self
            .outbound
            .acks(&pending)?
            .into_iter()
            .filter(|a| matches!(a.status, AckStatus::Completed | AckStatus::Failed))
            .collect();
        if finals.is_empty() {
            return Ok(SyncReport {
                still_pending: pending.len(),
                ..SyncReport::default()
            });
        }
        let now = self.clock().now();
        let mut report = fileio::write(file, OP, |c| {
            iw::apply_final_acks(c, file, &finals, next_occurrence, now)
        })?;
        report.still_pending = pending
            .len()
            .saturating_sub(report.completed.len() + report.failed.len());
        Ok(report)
    }

    /// Outbound rows due for delivery: agent replies (`messages_out`) and the host's own
    /// replies (`host_replies`), merged in seq order, with `deliver_after` unset or past, not
    /// yet in `delivered`; at most `limit`. Cost follows what is undelivered, not history: a
    /// cursor in inbound.db marks the seq below which everything is settled. Rows above it are
    /// read in windows of `DELIVERY_SCAN` until `limit` due rows are found or both tables are
    /// exhausted, so that a row scheduled for later (which holds the cursor back) never hides
    /// the rows written after it.
    pub fn due_outbound(&self, limit: usize) -> Result<Vec<DueOutbound>> {
        const OP: &str = "read due outbound";
        let file = self.inbound.file();
        let now = self.clock().now();
        let (out_cursor, host_cursor, first_host_rows) = fileio::read_own(file, OP, |c| {
            let oc = iw::cursor(c, iw::CURSOR_MESSAGES_OUT)?;
            let hc = iw::cursor(c, iw::CURSOR_HOST_REPLIES)?;
            Ok((oc, hc, iw::host_replies_after(c, hc, DELIVERY_SCAN)?))
        })?;
        let mut out_rows: Vec<MessageOut> = Vec::new();
        let mut host_rows: Vec<MessageOut> = Vec::new();
        let mut settled = std::collections::HashMap::new();
        let mut attempts = std::collections::HashMap::new();
        // Per table: where the next window starts, or `None` once the table is exhausted.
        let mut out_next = Some(out_cursor);
        let mut host_next = Some(host_cursor);
        let mut first_host_rows = Some(first_host_rows);
        loop {
            let o = match out_next {
                Some(after) => self.outbound.messages_after(Seq(after), DELIVERY_SCAN)?,
                None => Vec::new(),
            };
            let h = match (host_next, first_host_rows.take()) {
                (Some(_), Some(rows)) => rows,
                (Some(after), None) => fileio::read_own(file, OP, |c| {
                    Ok(iw::host_replies_after(c, after, DELIVERY_SCAN)?)
                })?,
                (None, _) => Vec::new(),
            };
            let window_end = |rows: &[MessageOut], next: Option<i64>| match next {
                Some(_) if rows.len() as i64 == DELIVERY_SCAN => {
                    rows.last().and_then(|m| m.seq).map(|s| s.0)
                }
                _ => None,
            };
            out_next = window_end(&o, out_next);
            host_next = window_end(&h, host_next);
            let ids: Vec<String> = o.iter().chain(h.iter()).map(|m| m.id.clone()).collect();
            // Nothing above the cursors (the idle case): no delivery state to look up, and no
            // second open of the file.
            if !ids.is_empty() {
                let (s, a) = fileio::read_own(file, OP, |c| {
                    Ok((iw::delivered_among(c, &ids)?, iw::attempts_among(c, &ids)?))
                })?;
                settled.extend(s);
                attempts.extend(a);
            }
            out_rows.extend(o);
            host_rows.extend(h);
            // Rows at or below the horizon are complete in both tables: merging them in seq
            // order cannot skip an unread row of the other table.
            let horizon = [out_next, host_next].into_iter().flatten().min();
            let due_below = out_rows
                .iter()
                .chain(host_rows.iter())
                .filter(|m| horizon.is_none_or(|h| m.seq.is_some_and(|s| s.0 <= h)))
                .filter(|m| !settled.contains_key(&m.id))
                .filter(|m| m.deliver_after.as_ref().is_none_or(|t| t.is_due(now)))
                .count();
            if horizon.is_none() || due_below >= limit {
                break;
            }
        }
        let horizon = [out_next, host_next].into_iter().flatten().min();
        let advance = |rows: &[MessageOut]| {
            rows.iter()
                .take_while(|m| settled.contains_key(&m.id))
                .filter_map(|m| m.seq)
                .last()
        };
        let new_out = advance(&out_rows);
        let new_host = advance(&host_rows);
        if new_out.is_some() || new_host.is_some() {
            fileio::write(file, "advance delivery cursor", |c| {
                if let Some(s) = new_out {
                    iw::advance_cursor(c, iw::CURSOR_MESSAGES_OUT, s.0)?;
                }
                if let Some(s) = new_host {
                    iw::advance_cursor(c, iw::CURSOR_HOST_REPLIES, s.0)?;
                }
                Ok(())
            })?;
        }
        let mut due: Vec<DueOutbound> = out_rows
            .into_iter()
            .map(|m| (OutboundSource::Container, m))
            .chain(host_rows.into_iter().map(|m| (OutboundSource::Host, m)))
            .filter(|(_, m)| horizon.is_none_or(|h| m.seq.is_some_and(|s| s.0 <= h)))
            .filter(|(_, m)| !settled.contains_key(&m.id))
            .filter(|(_, m)| m.deliver_after.as_ref().is_none_or(|t| t.is_due(now)))
            .map(|(source, message)| DueOutbound {
                attempts: attempts.get(&message.id).copied().unwrap_or(0),
                source,
                message,
            })
            .collect();
        due.sort_by_key(|d| d.message.seq);
        due.truncate(limit);
        Ok(due)
    }

    /// Writes an attachment for the agent at `inbox/<message_id>/<name>`, refusing planted
    /// symlinks, names that escape the folder and existing files (see [`crate::attachments`]).
    pub fn write_inbox_attachment(
        &self,
        message_id: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf> {
        crate::attachments::write_inbox(&self.paths.dir, message_id, name, bytes)
    }

    /// Reads the attachments the agent produced for `message_id` (`outbox/<message_id>/`),
    /// refusing symlinks and non-files (see [`crate::attachments`]).
    pub fn read_outbox_attachments(&self, message_id: &str) -> Result<Vec<crate::Attachment>> {
        crate::attachments::read_outbox(&self.paths.dir, message_id)
    }

    /// The host's only write into outbound.db, for after it stopped the container.
    pub fn stopped_container(&self, _proof: NoContainerRunning) -> StoppedContainerOutbound {
        StoppedContainerOutbound {
            file: self.outbound.file().clone().as_role(Role::Host),
        }
    }
}

/// Host write access to outbound.db, legal only while no container runs (see
/// [`NoContainerRunning`]).
#[derive(Debug, Clone)]
pub struct StoppedContainerOutbound {
    file: DbFile,
}

impl StoppedContainerOutbound {
    /// Deletes the orphan `processing` acks of the stopped container, so the next container is
    /// not killed for its predecessor's claims. Returns how many.
    pub fn delete_orphan_claims(&self) -> Result<usize> {
        fileio::write(&self.file, "delete orphan claims", |c| {
            Ok(diesel::delete(
                processing_ack::table
                    .filter(processing_ack::status.eq(AckStatus::Processing.as_str())),
            )
            .execute(c)?)
        })
    }

    /// Rolls back a hot journal a killed container left behind, by opening the file as its
    /// writer (SQLite rolls back on open). Returns whether there was one.
    pub fn recover_hot_journal(&self) -> Result<bool> {
        if sessionbus_schema::error::hot_journal(self.file.path()).is_none() {
            return Ok(false);
        }
        fileio::write(&self.file, "recover hot journal", |_c| Ok::<_, OpError>(()))?;
        Ok(true)
    }
}

/// The container's session view: writes outbound.db, reads inbound.db, nothing else.
#[derive(Clone, Debug)]
pub struct ContainerSession {
    paths: SessionPaths,
    inbound: InboundReader,
    outbound: OutboundWriter,
}

impl ContainerSession {
    /// Opens a session folder as the container, with the system clock. Checks that this
    /// process can write outbound.db and its folder; opens nothing else yet.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        ContainerSession::with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens a session folder as the container with the given clock.
    pub fn with_clock(dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Result<Self> {
        let paths = SessionPaths::new(dir);
        check_writable(&paths.outbound)?;
        check_writable(&paths.dir)?;
        Ok(ContainerSession::over_files(
            paths.clone(),
            DbFile::new(&paths.inbound, FileKind::Inbound, Role::Container),
            DbFile::new(&paths.outbound, FileKind::Outbound, Role::Container),
            clock,
        ))
    }

    /// A container view over explicit files, for test fixtures (`MemSession`). Only with the
    /// `fixtures` feature: it hands out an [`OutboundWriter`], which host code must never get.
    #[cfg(feature = "fixtures")]
    pub fn from_files(
        paths: SessionPaths,
        inbound: DbFile,
        outbound: DbFile,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ContainerSession::over_files(paths, inbound, outbound, clock)
    }

    fn over_files(
        paths: SessionPaths,
        inbound: DbFile,
        outbound: DbFile,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let reader = InboundReader::new(inbound.as_role(Role::Container));
        ContainerSession {
            paths,
            outbound: OutboundWriter::new(outbound.as_role(Role::Container), reader.clone(), clock),
            inbound: reader,
        }
    }

    /// The folder's paths.
    pub fn paths(&self) -> &SessionPaths {
        &self.paths
    }

    /// The reader of inbound.db.
    pub fn inbound(&self) -> &InboundReader {
        &self.inbound
    }

    /// The writer of outbound.db.
    pub fn outbound(&self) -> &OutboundWriter {
        &self.outbound
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.outbound.clock()
    }

    /// Start-up: brings outbound.db to the current schema, deletes `processing` acks a
    /// crashed predecessor left, and resets the tool state. Returns the number of stale acks.
    pub fn start(&self) -> Result<usize> {
        migrate::migrate(self.outbound.file(), self.clock().now(), false)?;
        let n = self.outbound.clear_stale_claims()?;
        self.outbound.reset_container_state()?;
        Ok(n)
    }

    /// Polls for the next batch: pending, due, un-acked rows, `system` rows excluded (they are
    /// answers to the agent's own questions), `on_wake` rows only on the first poll after
    /// start; the newest `limit` by seq, returned oldest first. Reads only pending rows.
    pub fn poll(&self, first_poll: bool, limit: usize) -> Result<Batch> {
        if limit == 0 {
            return Err(StoreError::InvalidArgument {
                at: self.inbound.file().at("poll"),
                detail: "batch size must be at least 1".into(),
            });
        }
        let now = self.clock().now();
        let candidates: Vec<MessageIn> = self
            .inbound
            .pending()?
            .into_iter()
            .filter(|m| m.kind != MessageKind::System)
            .filter(|m| first_poll || !m.on_wake)
            .filter(|m| m.process_after.as_ref().is_none_or(|t| t.is_due(now)))
            .collect();
        if candidates.is_empty() {
            return Ok(Batch::default());
        }
        let ids: Vec<String> = candidates.iter().map(|m| m.id.clone()).collect();
        let acked = self.outbound.acked_among(&ids)?;
        let mut messages: Vec<MessageIn> = candidates
            .into_iter()
            .filter(|m| !acked.contains(&m.id))
            .take(limit)
            .collect();
        messages.reverse();
        Ok(Batch { messages })
    }

    /// The host's answer to a question the agent asked: the pending, un-acked `system` row
    /// whose JSON content has `questionId` equal to `question_id` (the JSON field, not a
    /// substring of the text).
    pub fn find_answer(&self, question_id: &str) -> Result<Option<MessageIn>> {
        let mut answers: Vec<MessageIn> = self
            .inbound
            .pending()?
            .into_iter()
            .filter(|m| m.kind == MessageKind::System)
            .filter(|m| {
                m.content_json().get("questionId").and_then(|v| v.as_str()) == Some(question_id)
            })
            .collect();
        if answers.is_empty() {
            return Ok(None);
        }
        let ids: Vec<String> = answers.iter().map(|m| m.id.clone()).collect();
        let acked = self.outbound.acked_among(&ids)?;
        answers.retain(|m| !acked.contains(&m.id));
        Ok(answers.pop())
    }

    /// What seq `seq` refers to: even seqs are the host's rows, odd ones this container's.
    /// For an outbound row the platform id is the one the host recorded on delivery, else the
    /// internal id. Every read of inbound.db here is fresh.
    pub fn lookup_seq(&self, seq: Seq) -> Result<Option<SeqTarget>> {
        match seq.owner() {
            SeqOwner::Host => self.inbound.host_seq_target(seq),
            SeqOwner::Container => {
                let Some(m) = self.outbound.message_by_seq(seq)? else {
                    return Ok(None);
                };
                let platform = self.inbound.delivered_platform_id(&m.id)?;
                Ok(Some(SeqTarget {
                    seq,
                    source: OutboundSource::Container,
                    platform_message_id: platform.unwrap_or_else(|| m.id.clone()),
                    id: m.id,
                    address: m.address,
                }))
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_can_move_between_threads() {
        fn is<T: Send + Sync>() {}
        is::<HostSession>();
        is::<ContainerSession>();
    }
}
