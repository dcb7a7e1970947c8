//! The container's read-only view of `inbound.db`.

use crate::error::Result;
use crate::fileio::{self, InboundView, OpError};
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
///
/// A file this library has not migrated (an older host's, of any generation) is read as it
/// is when it has what the container needs: see `inbound_shape` (absent columns read as their
/// defaults, absent tables as empty).
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
        fileio::read_inbound(&self.file, "read pending messages", |c, view| match view {
            InboundView::Current => Ok(pending_rows(c)?),
            InboundView::Legacy(shape) => Ok(shape.pending(c)?),
        })
    }

    /// The largest host seq (over `messages_in` and `host_replies`).
    pub fn max_seq(&self) -> Result<Option<Seq>> {
        fileio::read_inbound(&self.file, "read max seq", |c, view| match view {
            InboundView::Current => Ok(max_host_seq(c)?),
            InboundView::Legacy(shape) => Ok(shape.max_seq(c)?),
        })
    }

    /// The `messages_in` row with this seq.
    pub fn message_by_seq(&self, seq: Seq) -> Result<Option<MessageIn>> {
        fileio::read_inbound(&self.file, "look up message by seq", |c, view| {
            by_seq(c, view, seq)
        })
    }

    /// The even-seq target for "edit/react to N": a `messages_in` row (whose id came from the
    /// platform) or a host reply (its platform id once delivered).
    pub fn host_seq_target(&self, seq: Seq) -> Result<Option<SeqTarget>> {
        fileio::read_inbound(&self.file, "look up host seq", |c, view| {
            // A host reply first: its `messages_in` mirror (for the older implementation)
            // carries the same seq, but the platform knows the reply by its delivered id.
            let has_replies = match view {
                InboundView::Current => true,
                InboundView::Legacy(shape) => shape.has_host_replies(),
            };
            let reply: Option<MessageOut> = if has_replies {
                host_replies::table
                    .filter(host_replies::seq.eq(seq.0))
                    .select(crate::rows::HostReplyRow::as_select())
                    .get_result(c)
                    .optional()?
                    .map(MessageOut::from)
            } else {
                None
            };
            if let Some(r) = reply {
                let platform = platform_id_in(c, view, &r.id)?;
                return Ok(Some(SeqTarget {
                    seq,
                    source: OutboundSource::Host,
                    platform_message_id: platform.unwrap_or_else(|| r.id.clone()),
                    id: r.id,
                    address: r.address,
                }));
            }
            Ok(by_seq(c, view, seq)?.map(|m| SeqTarget {
                seq,
                source: OutboundSource::Host,
                platform_message_id: m.id.clone(),
                id: m.id,
                address: m.address,
            }))
        })
    }

    /// The platform's id for a delivered outbound row (`delivered.platform_message_id`).
    pub fn delivered_platform_id(&self, message_out_id: &str) -> Result<Option<String>> {
        fileio::read_inbound(&self.file, "read delivered platform id", |c, view| {
            platform_id_in(c, view, message_out_id)
        })
    }

    /// The default reply address; all `None` when the table or row is missing.
    pub fn routing(&self) -> Result<Routing> {
        fileio::read_inbound(&self.file, "read routing", |c, view| {
            if matches!(view, InboundView::Legacy(s) if !s.has_routing()) {
                return Ok(Routing::default());
            }
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
        fileio::read_inbound(&self.file, "resolve destination", |c, view| {
            if matches!(view, InboundView::Legacy(s) if !s.has_destinations()) {
                return Ok(None);
            }
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
        fileio::read_inbound(&self.file, "read destinations", |c, view| {
            if matches!(view, InboundView::Legacy(s) if !s.has_destinations()) {
                return Ok(Vec::new());
            }
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

/// The `messages_in` row with this seq, in either view.
fn by_seq(
    c: &mut SqliteConnection,
    view: &InboundView,
    seq: Seq,
) -> Result<Option<MessageIn>, OpError> {
    match view {
        InboundView::Current => Ok(messages_in::table
            .filter(messages_in::seq.eq(seq.0))
            .select(InRow::as_select())
            .get_result(c)
            .optional()?
            .map(MessageIn::from)),
        InboundView::Legacy(shape) => Ok(shape.by_seq(c, seq)?),
    }
}

/// The platform id a delivered row got, in either view.
fn platform_id_in(
    c: &mut SqliteConnection,
    view: &InboundView,
    id: &str,
) -> Result<Option<String>, OpError> {
    match view {
        InboundView::Current => Ok(platform_id_of(c, id)?),
        InboundView::Legacy(shape) => Ok(shape.platform_id(c, id)?),
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
