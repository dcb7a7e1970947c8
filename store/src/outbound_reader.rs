//! The host's read-only view of `outbound.db`.

use crate::error::Result;
use crate::fileio;
use crate::model::*;
use crate::outbound_writer::acks_for;
use crate::rows::{ContainerStateRow, OutRow};
use diesel::prelude::*;
use sessionbus_schema::outbound::{container_state, messages_out, processing_ack};
use sessionbus_schema::{DbFile, Seq};

/// Reads `outbound.db` (host side). It has no write method, and its connections are opened
/// with `mode=ro`; every call is a fresh open. A hot journal left by a container killed
/// mid-transaction is retried briefly, then reported as the retryable
/// [`sessionbus_schema::DbError::HotJournal`].
#[derive(Debug, Clone)]
pub struct OutboundReader {
    file: DbFile,
}

impl OutboundReader {
    pub(crate) fn new(file: DbFile) -> Self {
        OutboundReader { file }
    }

    /// The file this reads.
    pub fn file(&self) -> &DbFile {
        &self.file
    }

    /// `processing` acks: the messages the container has claimed (through the status index).
    pub fn claims(&self) -> Result<Vec<Claim>> {
        fileio::read(&self.file, "read claims", |c| Ok(claims_on(c)?))
    }

    /// The tool in flight and the claims, in one open (what the stuck decision reads).
    pub fn liveness(&self) -> Result<(Option<ContainerState>, Vec<Claim>)> {
        fileio::read(&self.file, "read liveness", |c| {
            Ok((container_state_on(c)?, claims_on(c)?))
        })
    }

    /// Acks for `ids` (primary-key lookups: cost bounded by `ids`).
    pub fn acks(&self, ids: &[String]) -> Result<Vec<Ack>> {
        fileio::read(&self.file, "read acks", |c| Ok(acks_for(c, ids)?))
    }

    /// The tool in flight, if the row exists.
    pub fn container_state(&self) -> Result<Option<ContainerState>> {
        fileio::read(&self.file, "read container state", |c| {
            Ok(container_state_on(c)?)
        })
    }

    /// `messages_out` rows with seq above `after`, oldest first, at most `limit`.
    pub fn messages_after(&self, after: Seq, limit: i64) -> Result<Vec<MessageOut>> {
        fileio::read(&self.file, "read outbound messages", |c| {
            Ok(crate::rows::first_n(
                messages_out::table
                    .filter(messages_out::seq.gt(after.0))
                    .order(messages_out::seq.asc())
                    .select(OutRow::as_select()),
                c,
                limit,
            )?
            .into_iter()
            .map(MessageOut::from)
            .collect())
        })
    }

    /// Runs raw SQL through a fresh read-only connection. Writes fail: SQLite refuses them
    /// with [`sessionbus_schema::DbError::ReadOnly`].
    pub fn with_raw_connection<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Result<T> {
        fileio::read_once(&self.file, "raw read", |c| Ok(f(c)?))
    }
}

/// `processing` acks, through the status index.
fn claims_on(c: &mut SqliteConnection) -> QueryResult<Vec<Claim>> {
    let rows: Vec<(String, String)> = processing_ack::table
        .filter(processing_ack::status.eq(AckStatus::Processing.as_str()))
        .select((processing_ack::message_id, processing_ack::status_changed))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(message_id, at)| Claim {
            message_id,
            claimed_at: TimeText(at),
        })
        .collect())
}

/// The single `container_state` row, if there is one.
fn container_state_on(c: &mut SqliteConnection) -> QueryResult<Option<ContainerState>> {
    Ok(container_state::table
        .find(1i64)
        .select(ContainerStateRow::as_select())
        .get_result(c)
        .optional()?
        .map(ContainerState::from))
}
