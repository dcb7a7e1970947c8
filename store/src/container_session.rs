//! The container's view of a session: it writes outbound.db and reads inbound.db, nothing
//! else.

use crate::error::{Result, StoreError};
use crate::inbound_reader::InboundReader;
use crate::model::*;
use crate::outbound_writer::OutboundWriter;
use crate::paths::SessionPaths;
use crate::provision::check_writable;
use sessionbus_schema::migrate;
use sessionbus_schema::{Clock, DbFile, FileKind, Role, Seq, SeqOwner, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;

/// The container's session view: writes outbound.db, reads inbound.db, nothing else.
#[derive(Clone, Debug)]
pub struct ContainerSession {
    paths: SessionPaths,
    inbound: InboundReader,
    outbound: OutboundWriter,
}

impl ContainerSession {
    /// Opens a session folder as the container, with the system clock, in the layout it has
    /// (see [`SessionPaths::for_container`]). Checks that this process can write outbound.db
    /// and its folder; opens nothing else yet.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        ContainerSession::with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens a session folder as the container with the given clock.
    pub fn with_clock(dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Result<Self> {
        ContainerSession::with_paths(SessionPaths::for_container(dir), clock)
    }

    /// Opens explicit paths as the container (its `/workspace` view, or a split-layout folder
    /// when it runs without a sandbox). Checks that this process can write its own area and
    /// outbound.db (when it exists: start-up creates it otherwise).
    pub fn with_paths(paths: SessionPaths, clock: Arc<dyn Clock>) -> Result<Self> {
        if paths.outbound.exists() {
            check_writable(&paths.outbound)?;
        }
        check_writable(&paths.container_dir)?;
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

    /// Start-up: checks that inbound.db can be served (an older host's unmigrated file of any
    /// generation can), then brings outbound.db to the current schema (creating it when missing, and
    /// rolling back a hot journal a killed predecessor left: the container is its file's
    /// writer), deletes `processing` acks a crashed predecessor left, and resets the tool
    /// state. Returns the number of stale acks.
    pub fn start(&self) -> Result<usize> {
        // First whether the host's file can be served at all (any generation with what the
        // container needs): a folder this container cannot serve is left exactly as it was,
        // its own file included.
        self.inbound.max_seq()?;
        migrate::migrate(
            self.outbound.file(),
            self.clock().now(),
            sessionbus_schema::migrate::IfMissing::Create,
        )?;
        let n = self.outbound.clear_stale_claims()?;
        self.outbound.reset_container_state()?;
        Ok(n)
    }

    /// Polls for the next batch: pending, due, un-acked rows, `system` rows excluded (they are
    /// answers to the agent's own questions), `on_wake` rows only on the first poll after
    /// start ([`ContainerSession::poll_after_start`]); the newest `limit` by seq, returned oldest first. Reads only pending rows.
    ///
    /// Two rules keep one message from holding up or taking down others:
    ///
    /// - **A retry goes alone.** When a message that wakes the agent has been tried before
    ///   (`tries > 0`: its batch failed), the batch is that message alone, the oldest such
    ///   first. The host counts a try for every message of a failed batch, so a message the
    ///   handler always fails on (a poison message) would otherwise take the messages claimed
    ///   with it to `failed` too; alone, it fails alone and they are answered.
    /// - **A batch wakes when it can.** When the newest `limit` rows are all context rows
    ///   (`trigger` false) but an older row would wake the agent, the batch is the newest
    ///   `limit` rows that end at that row, instead of a batch that wakes nothing and leaves
    ///   the older message unanswered until a newer one arrives.
    pub fn poll(&self, limit: usize) -> Result<Batch> {
        self.poll_batch(false, limit)
    }

    /// The first poll after [`ContainerSession::start`]: as [`ContainerSession::poll`], and
    /// `on_wake` rows are included (the host writes them for a container's first look only).
    pub fn poll_after_start(&self, limit: usize) -> Result<Batch> {
        self.poll_batch(true, limit)
    }

    fn poll_batch(&self, first_poll: bool, limit: usize) -> Result<Batch> {
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
        // Newest first, as read.
        let mut open: Vec<MessageIn> = candidates
            .into_iter()
            .filter(|m| !acked.contains(&m.id))
            .collect();
        if let Some(at) = open.iter().rposition(|m| m.trigger && m.tries > 0) {
            let retry = open.swap_remove(at);
            return Ok(Batch {
                messages: vec![retry],
            });
        }
        let newest_waking = open.iter().position(|m| m.trigger).unwrap_or(0);
        let start = (newest_waking + 1).saturating_sub(limit);
        let mut messages: Vec<MessageIn> = open.into_iter().skip(start).take(limit).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_can_move_between_threads() {
        fn is<T: Send + Sync>() {}
        is::<crate::HostSession>();
        is::<ContainerSession>();
    }
}
