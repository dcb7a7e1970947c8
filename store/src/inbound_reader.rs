//! The container's read-only view of `inbound.db`.

use crate::error::Result;
use crate::fileio::{self, OpError};
use crate::inbound_writer::{max_host_seq, pending_rows};
use crate::model::*;
use crate::rows::{DestinationRow, InRow};
use diesel::prelude::*;
use sessionbus_schema::inbound::{
    delivered, destinations, host_replies, messages_in, session_routing,
};
use sessionbus_schema::{DbFile, Seq};

/// Reads `inbound.db` (container side). It has no write method, and its connections are
/// opened with `mode=ro`, so SQLite refuses writes too. Every call is a fresh open: nothing
/// here keeps a view of the host's file between two reads (destinations are rewritten
/// mid-session, and a long-lived view across the mount goes stale).
#[derive(Debug, Clone)]
pub struct InboundReader {
    file: DbFile,
}

impl InboundReader {
    pub(crate) fn new(file: DbFile) -> Self {
        InboundReader { file }
    }

    /// The file this reads.
    pub fn file(&self) -> &DbFile {
        &self.file
    }

    /// Pending rows, newest seq first (through the `(status, seq)` index).
    pub fn pending(&self) -> Result<Vec<MessageIn>> {
        fileio::read(&self.file, "read pending messages", |c| {
            Ok(pending_rows(c)?)
        })
    }

    /// The largest host seq (over `messages_in` and `host_replies`).
    pub fn max_seq(&self) -> Result<Option<Seq>> {
        fileio::read(&self.file, "read max seq", |c| Ok(max_host_seq(c)?))
    }

    /// The `messages_in` row with this seq.
    pub fn message_by_seq(&self, seq: Seq) -> Result<Option<MessageIn>> {
        fileio::read(&self.file, "look up message by seq", |c| {
            Ok(messages_in::table
                .filter(messages_in::seq.eq(seq.0))
                .select(InRow::as_select())
                .get_result(c)
                .optional()?
                .map(MessageIn::from))
        })
    }

    /// The even-seq target for "edit/react to N": a `messages_in` row (whose id came from the
    /// platform) or a host reply (its platform id once delivered).
    pub fn host_seq_target(&self, seq: Seq) -> Result<Option<SeqTarget>> {
        fileio::read(&self.file, "look up host seq", |c| {
            if let Some(m) = messages_in::table
                .filter(messages_in::seq.eq(seq.0))
                .select(InRow::as_select())
                .get_result(c)
                .optional()?
                .map(MessageIn::from)
            {
                return Ok(Some(SeqTarget {
                    seq,
                    source: OutboundSource::Host,
                    platform_message_id: m.id.clone(),
                    id: m.id,
                    address: m.address,
                }));
            }
            let reply: Option<MessageOut> = host_replies::table
                .filter(host_replies::seq.eq(seq.0))
                .select(crate::rows::HostReplyRow::as_select())
                .get_result(c)
                .optional()?
                .map(MessageOut::from);
            match reply {
                None => Ok(None),
                Some(r) => {
                    let platform = platform_id_of(c, &r.id)?;
                    Ok(Some(SeqTarget {
                        seq,
                        source: OutboundSource::Host,
                        platform_message_id: platform.unwrap_or_else(|| r.id.clone()),
                        id: r.id,
                        address: r.address,
                    }))
                }
            }
        })
    }

    /// The platform's id for a delivered outbound row (`delivered.platform_message_id`).
    pub fn delivered_platform_id(&self, message_out_id: &str) -> Result<Option<String>> {
        fileio::read(&self.file, "read delivered platform id", |c| {
            platform_id_of(c, message_out_id).map_err(OpError::from)
        })
    }

    /// The default reply address; all `None` when the table or row is missing.
    pub fn routing(&self) -> Result<Routing> {
        fileio::read(&self.file, "read routing", |c| {
            let row: Option<(Option<String>, Option<String>, Option<String>)> =
                session_routing::table
                    .find(1i64)
                    .select((
                        session_routing::channel_type,
                        session_routing::platform_id,
                        session_routing::thread_id,
                    ))
                    .get_result(c)
                    .optional()?;
            Ok(row
                .map(|(channel_type, platform_id, thread_id)| Routing {
                    channel_type,
                    platform_id,
                    thread_id,
                })
                .unwrap_or_default())
        })
    }

    /// A destination by name; `None` means the agent may not send there.
    pub fn destination(&self, name: &str) -> Result<Option<Destination>> {
        fileio::read(&self.file, "resolve destination", |c| {
            Ok(destinations::table
                .find(name)
                .select(DestinationRow::as_select())
                .get_result(c)
                .optional()?
                .map(Destination::from))
        })
    }

    /// Every destination, by name.
    pub fn destinations(&self) -> Result<Vec<Destination>> {
        fileio::read(&self.file, "read destinations", |c| {
            Ok(destinations::table
                .order(destinations::name.asc())
                .select(DestinationRow::as_select())
                .load(c)?
                .into_iter()
                .map(Destination::from)
                .collect())
        })
    }

    /// Runs raw SQL through a fresh read-only connection of this reader. Writes fail: the
    /// connection is `mode=ro`, so SQLite itself refuses them with
    /// [`sessionbus_schema::DbError::ReadOnly`].
    pub fn with_raw_connection<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> QueryResult<T>,
    ) -> Result<T> {
        fileio::read_once(&self.file, "raw read", |c| Ok(f(c)?))
    }
}

fn platform_id_of(c: &mut SqliteConnection, id: &str) -> QueryResult<Option<String>> {
    Ok(delivered::table
        .find(id)
        .select(delivered::platform_message_id)
        .get_result::<Option<String>>(c)
        .optional()?
        .flatten())
}
