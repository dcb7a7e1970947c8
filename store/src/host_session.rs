//! The host's view of a session: it writes inbound.db and reads outbound.db, nothing else.

use crate::bookkeeping::SweepView;
use crate::error::Result;
use crate::fileio;
use crate::inbound_writer::{self as iw, InboundWriter, NextOccurrence, SyncReport};
use crate::model::*;
use crate::outbound_reader::{OutboundReader, OutboundRow, RefusedRow};
use crate::paths::SessionPaths;
use sessionbus_schema::{Clock, DbFile, FileKind, Role, Seq, SystemClock, Timestamp};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The host's session view: writes inbound.db, reads outbound.db, nothing else. There is no
/// way to write the container's file through it: its reader opens read-only connections only,
/// and the schema layer refuses a host writer of outbound.db.
#[derive(Clone, Debug)]
pub struct HostSession {
    paths: SessionPaths,
    inbound: InboundWriter,
    outbound: OutboundReader,
}

/// How many outbound rows a delivery pass reads per table at most (the byte bound of
/// [`crate::outbound_reader::MAX_PASS_BYTES`] may end a window sooner).
const DELIVERY_SCAN: i64 = 1000;

/// How many windows one delivery pass reads at most per table while catching up over rows
/// that are all settled.
const MAX_WINDOWS: usize = 64;

/// How many rows scheduled for later one session may hold at once; a row past this is refused.
pub const MAX_HELD_ROWS: i64 = 10_000;

/// The two tables outbound rows come from, as named in the host's bookkeeping.
fn source_name(source: OutboundSource) -> &'static str {
    match source {
        OutboundSource::Container => iw::CURSOR_MESSAGES_OUT,
        OutboundSource::Host => iw::CURSOR_HOST_REPLIES,
    }
}

/// One table's window of a delivery pass.
struct Window {
    source: OutboundSource,
    rows: Vec<OutboundRow>,
    /// The window was cut (by rows or bytes): rows above its end are unread.
    cut: bool,
}

impl Window {
    fn end(&self) -> Option<i64> {
        self.cut
            .then(|| self.rows.last().map(|r| r.seq().get()))
            .flatten()
    }
}

impl HostSession {
    /// Opens a session folder as the host, with the system clock, in the layout the folder
    /// has (see [`SessionPaths::for_host`]). Opens no file yet: every operation opens what it
    /// needs and closes it.
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        HostSession::with_clock(dir, Arc::new(SystemClock))
    }

    /// Opens a session folder as the host with the given clock.
    pub fn with_clock(dir: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Self {
        HostSession::with_paths(SessionPaths::for_host(dir), clock)
    }

    /// A host view of explicit paths.
    pub fn with_paths(paths: SessionPaths, clock: Arc<dyn Clock>) -> Self {
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

    /// The container's claims (`processing` acks) on pending messages, read through the
    /// bounded reader: what the host can act on. Claims of messages that are not pending
    /// (however many the container wrote) are never read.
    pub fn pending_claims(&self) -> Result<Vec<Claim>> {
        let pending = self.inbound.pending_ids()?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .outbound
            .acks(&pending)?
            .into_iter()
            .filter(|a| a.status == AckStatus::Processing)
            .map(|a| Claim {
                message_id: a.message_id,
                claimed_at: a.status_changed,
            })
            .collect())
    }

    /// Syncs acks: a `completed` ack marks its pending message completed, a `failed` ack marks
    /// it failed. For each completed recurring task, `next_occurrence` may return the next
    /// occurrence, inserted in the same transaction. Reads only the pending messages and their
    /// acks, never the whole history.
    pub fn sync_acks(
        &self,
        next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    ) -> Result<SyncReport> {
        // One open of the own file for the pending ids and whether a recurring series waits
        // to be continued: an idle session needs nothing more (each open is a schema parse).
        let (pending, open_series) = fileio::read_own(self.inbound.file(), "sync acks", |c| {
            Ok((iw::pending_ids(c)?, iw::has_open_series(c)?))
        })?;
        if pending.is_empty() && !open_series {
            return Ok(SyncReport::default());
        }
        let acks = if pending.is_empty() {
            Vec::new()
        } else {
            self.outbound.acks(&pending)?
        };
        self.apply_acks(pending.len(), &acks, next_occurrence)
    }

    /// Applies the final acks among `acks` (read for the `pending` pending messages), and
    /// continues the series of finished recurring tasks: exactly once, whoever finished them
    /// (a row still carrying a recurrence after a later row of its series exists only has the
    /// recurrence cleared).
    pub fn apply_acks(
        &self,
        pending: usize,
        acks: &[Ack],
        next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    ) -> Result<SyncReport> {
        self.apply_final_acks(pending, acks, next_occurrence, || {
            fileio::read_own(self.inbound.file(), "sync acks", |c| {
                Ok(iw::has_open_series(c)?)
            })
        })
    }

    /// [`HostSession::apply_acks`] for the pending messages of a sweep's `view` (read in the
    /// sweep's one open of the own file), without opening the file again to learn whether a
    /// recurring series waits: an idle session's sync then opens nothing.
    pub fn apply_acks_in(
        &self,
        view: &SweepView,
        acks: &[Ack],
        next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
    ) -> Result<SyncReport> {
        self.apply_final_acks(view.pending.len(), acks, next_occurrence, || {
            Ok(view.open_series)
        })
    }

    fn apply_final_acks(
        &self,
        pending: usize,
        acks: &[Ack],
        next_occurrence: &dyn Fn(&MessageIn) -> Option<NextOccurrence>,
        open_series: impl FnOnce() -> Result<bool>,
    ) -> Result<SyncReport> {
        const OP: &str = "sync acks";
        let finals: Vec<Ack> = acks
            .iter()
            .filter(|a| matches!(a.status, AckStatus::Completed | AckStatus::Failed))
            .cloned()
            .collect();
        if finals.is_empty() && !open_series()? {
            return Ok(SyncReport {
                still_pending: pending,
                ..SyncReport::default()
            });
        }
        let file = self.inbound.file();
        let now = self.clock().now();
        let mut report = fileio::write(file, OP, |c| {
            iw::apply_final_acks(c, file, &finals, next_occurrence, now)
        })?;
        report.still_pending = pending.saturating_sub(report.completed.len() + report.failed.len());
        Ok(report)
    }

    /// Outbound rows due for delivery: agent replies (`messages_out`) and the host's own
    /// replies (`host_replies`), merged in seq order, with `deliver_after` unset or past, not
    /// yet in `delivered`; at most `limit`.
    ///
    /// Cost follows what is undelivered, not history: a cursor per table in inbound.db marks
    /// the seq below which everything is settled, and one window above it is read per table
    /// (bounded in rows and bytes). A row not due yet is *held* (noted in inbound.db) and the
    /// cursor passes it, so a reply scheduled far ahead never makes each pass re-read the rows
    /// after it; held rows are delivered once due. A row of the container's that breaks a
    /// limit (see [`OutboundReader`](crate::OutboundReader)) is recorded failed (when its id can be named) and
    /// passed too.
    pub fn due_outbound(&self, limit: usize) -> Result<Vec<DueOutbound>> {
        let now = self.clock().now();
        let mut plan = Settle::default();
        // One open of the own file for what every pass reads first: the held rows that have
        // come due, both cursors and the host replies above the host cursor (each open costs
        // a schema parse; this used to take three).
        let (held, mut out_cursor, mut host_cursor, host_rows) =
            fileio::read_own(self.inbound.file(), "read delivery cursors", |c| {
                let held = crate::bookkeeping::held_due(c, now.unix_millis(), DELIVERY_SCAN)?;
                let out_cursor = iw::cursor(c, iw::CURSOR_MESSAGES_OUT)?;
                let host_cursor = iw::cursor(c, iw::CURSOR_HOST_REPLIES)?;
                let rows = iw::host_replies_after(c, host_cursor, DELIVERY_SCAN)?;
                Ok((held, out_cursor, host_cursor, rows))
            })?;
        let mut due = self.held_rows_due(held, &mut plan)?;
        let mut first_host_rows = Some(host_rows);
        // Windows follow each other while every row of the last one could be passed (a host
        // catching up over settled history); a pass reads at most MAX_WINDOWS of them.
        for _ in 0..MAX_WINDOWS {
            let windows = self.read_windows(out_cursor, host_cursor, first_host_rows.take())?;
            let caught_up = self.walk_windows(&windows, now, &mut plan, &mut due)?;
            match caught_up {
                Some((o, h)) if due.len() < limit => {
                    out_cursor = o.unwrap_or(out_cursor);
                    host_cursor = h.unwrap_or(host_cursor);
                }
                _ => break,
            }
        }
        plan.apply(&self.inbound, now)?;
        due.sort_by_key(|d| d.message.seq);
        due.dedup_by(|a, b| a.message.id == b.message.id);
        due.truncate(limit);
        Ok(due)
    }

    /// One window per table above the cursors; the host replies above `host_cursor` are
    /// read unless given.
    fn read_windows(
        &self,
        out_cursor: i64,
        host_cursor: i64,
        host_rows: Option<Vec<MessageOut>>,
    ) -> Result<[Window; 2]> {
        let container = self
            .outbound
            .messages_after(Seq::new(out_cursor).ok(), DELIVERY_SCAN)?;
        let host_rows = match host_rows {
            Some(rows) => rows,
            None => fileio::read_own(self.inbound.file(), "read host replies", |c| {
                Ok(iw::host_replies_after(c, host_cursor, DELIVERY_SCAN)?)
            })?,
        };
        Ok([
            Window {
                source: OutboundSource::Container,
                cut: container.more,
                rows: container.rows,
            },
            Window {
                source: OutboundSource::Host,
                cut: host_rows.len() as i64 >= DELIVERY_SCAN,
                rows: host_rows
                    .into_iter()
                    .filter_map(|message| {
                        Some(OutboundRow::Message {
                            seq: message.seq?,
                            message,
                        })
                    })
                    .collect(),
            },
        ])
    }

    /// Sorts one pair of windows into due rows, rows to hold, refused rows and cursor moves.
    /// Returns the new cursors when another window should be read (some table was cut and
    /// every row of both windows could be passed), else `None`.
    #[allow(clippy::type_complexity)]
    fn walk_windows(
        &self,
        windows: &[Window; 2],
        now: Timestamp,
        plan: &mut Settle,
        due: &mut Vec<DueOutbound>,
    ) -> Result<Option<(Option<i64>, Option<i64>)>> {
        let ids: Vec<String> = windows
            .iter()
            .flat_map(|w| w.rows.iter())
            .filter_map(|r| match r {
                OutboundRow::Message { message: m, .. } => Some(m.id.clone()),
                OutboundRow::Refused(r) => r.id.clone(),
            })
            .collect();
        let (settled, attempts, held_now) = if ids.is_empty() {
            Default::default()
        } else {
            fileio::read_own(self.inbound.file(), "read delivery state", |c| {
                Ok((
                    iw::delivered_among(c, &ids)?,
                    iw::attempts_among(c, &ids)?,
                    crate::bookkeeping::held_among(c, &ids)?,
                ))
            })?
        };
        // Rows at or below the horizon are complete in both tables: merging them in seq order
        // cannot skip an unread row of the other table.
        let horizon = windows.iter().filter_map(Window::end).min();
        let below = |seq: i64| horizon.is_none_or(|h| seq <= h);
        let mut all_passed = true;
        let mut ends = [None, None];
        for (w, end) in windows.iter().zip(ends.iter_mut()) {
            let mut passable = true;
            for row in &w.rows {
                let seq = row.seq().get();
                let step = match row {
                    OutboundRow::Refused(r) => {
                        plan.refused.push(r.clone());
                        true
                    }
                    OutboundRow::Message { message: m, .. } if settled.contains_key(&m.id) => true,
                    OutboundRow::Message { message: m, .. } if held_now.contains(&m.id) => true,
                    OutboundRow::Message { message: m, .. } => match future_ms(m, now) {
                        Some(at_ms) => {
                            plan.hold.push((w.source, seq, m.id.clone(), at_ms));
                            true
                        }
                        None => {
                            if below(seq) {
                                due.push(DueOutbound {
                                    attempts: attempts.get(&m.id).copied().unwrap_or(0),
                                    source: w.source,
                                    message: m.clone(),
                                });
                            }
                            false
                        }
                    },
                };
                passable &= step;
                if passable {
                    plan.advance(w.source, seq);
                    *end = Some(seq);
                }
            }
            all_passed &= passable;
        }
        let more = windows.iter().any(|w| w.cut);
        Ok((all_passed && more).then_some((ends[0], ends[1])))
    }

    /// Held rows whose time has come (`held`, as read with the cursors), read back by seq
    /// (refused ones noted in `plan`).
    fn held_rows_due(
        &self,
        held: Vec<(String, i64)>,
        plan: &mut Settle,
    ) -> Result<Vec<DueOutbound>> {
        let file = self.inbound.file();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let (container, host): (Vec<_>, Vec<_>) = held
            .iter()
            .partition(|(source, _)| source == iw::CURSOR_MESSAGES_OUT);
        let mut rows: Vec<(OutboundSource, OutboundRow)> = Vec::new();
        if !container.is_empty() {
            let seqs: Vec<Seq> = container
                .iter()
                .filter_map(|(_, s)| Seq::new(*s).ok())
                .collect();
            rows.extend(
                self.outbound
                    .messages_at(&seqs)?
                    .into_iter()
                    .map(|r| (OutboundSource::Container, r)),
            );
        }
        if !host.is_empty() {
            let seqs: Vec<i64> = host.iter().map(|(_, s)| *s).collect();
            let found = fileio::read_own(file, "read held rows", |c| {
                Ok(crate::bookkeeping::host_replies_at(c, &seqs)?)
            })?;
            rows.extend(found.into_iter().filter_map(|message| {
                let row = OutboundRow::Message {
                    seq: message.seq?,
                    message,
                };
                Some((OutboundSource::Host, row))
            }));
        }
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|(_, r)| match r {
                OutboundRow::Message { message: m, .. } => Some(m.id.clone()),
                OutboundRow::Refused(_) => None,
            })
            .collect();
        let (settled, attempts) = fileio::read_own(file, "read delivery state", |c| {
            Ok((iw::delivered_among(c, &ids)?, iw::attempts_among(c, &ids)?))
        })?;
        let mut due = Vec::new();
        for (source, row) in rows {
            match row {
                OutboundRow::Message { message: m, .. } if !settled.contains_key(&m.id) => due
                    .push(DueOutbound {
                        attempts: attempts.get(&m.id).copied().unwrap_or(0),
                        source,
                        message: m,
                    }),
                OutboundRow::Refused(r) => plan.refused.push(r),
                OutboundRow::Message { .. } => {}
            }
        }
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

    /// Reads the attachments the agent produced for `message_id` (`outbox/<message_id>/` in
    /// the container's area), bounded in count and size, refusing links, FIFOs and anything
    /// but regular files (see [`crate::attachments`]).
    pub fn read_outbox_attachments(&self, message_id: &str) -> Result<Vec<crate::Attachment>> {
        crate::attachments::read_outbox(&self.paths.container_dir, message_id)
    }
}

/// When `m` is not due yet: its `deliver_after` in Unix milliseconds.
fn future_ms(m: &MessageOut, now: Timestamp) -> Option<i64> {
    m.deliver_after
        .as_ref()
        .and_then(TimeText::instant)
        .filter(|t| *t > now)
        .map(Timestamp::unix_millis)
}

/// What one delivery pass writes back: cursors, rows to hold, rows refused.
#[derive(Default)]
struct Settle {
    cursors: HashMap<&'static str, i64>,
    hold: Vec<(OutboundSource, i64, String, i64)>,
    refused: Vec<RefusedRow>,
}

impl Settle {
    fn advance(&mut self, source: OutboundSource, seq: i64) {
        let e = self.cursors.entry(source_name(source)).or_insert(seq);
        *e = (*e).max(seq);
    }

    fn apply(self, inbound: &InboundWriter, now: Timestamp) -> Result<()> {
        if self.cursors.is_empty() && self.hold.is_empty() && self.refused.is_empty() {
            return Ok(());
        }
        for r in &self.refused {
            tracing::warn!(
                "outbound row seq {} ({}) refused: {}",
                r.seq.get(),
                r.id.as_deref().unwrap_or("no valid id"),
                r.reason
            );
        }
        let mut seen = HashSet::new();
        let refused: Vec<String> = self
            .refused
            .iter()
            .filter_map(|r| r.id.clone())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let hold: Vec<(&'static str, i64, String, i64)> = self
            .hold
            .into_iter()
            .map(|(s, seq, id, at)| (source_name(s), seq, id, at))
            .collect();
        inbound.settle_delivery_pass(&self.cursors, &hold, &refused, now)
    }
}
