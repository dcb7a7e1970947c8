//! Open-work-close around the schema layer's openers: every store operation goes through
//! [`read`] or [`write`], so the cross-mount rules hold everywhere by construction.

use crate::error::StoreError;
use diesel::SqliteConnection;
use sessionbus_schema::migrate::{self, check_schema, Access};
use sessionbus_schema::{Clock, DbError, DbFile, FileKind, Role, SystemClock};
use std::time::{Duration, Instant};

/// How often, and how long apart, a reader retries a hot journal before reporting it. A
/// journal can look hot for a moment across a mount where the writer's lock is not visible.
const HOT_JOURNAL_RETRIES: u32 = 5;
const HOT_JOURNAL_PAUSE: Duration = Duration::from_millis(20);

/// An error inside an operation: diesel's (classified against the file afterwards) or ours.
pub(crate) enum OpError {
    Diesel(diesel::result::Error),
    Store(StoreError),
}

/// A seq that cannot be allocated, as a store error naming where.
pub(crate) fn no_seq(
    at: sessionbus_schema::At,
) -> impl FnOnce(sessionbus_schema::SeqError) -> OpError {
    move |source| OpError::Store(StoreError::SeqSpace { at, source })
}

impl From<diesel::result::Error> for OpError {
    fn from(e: diesel::result::Error) -> Self {
        OpError::Diesel(e)
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}

impl From<DbError> for OpError {
    fn from(e: DbError) -> Self {
        OpError::Store(StoreError::Db(e))
    }
}

impl OpError {
    pub(crate) fn into_store(self, file: &DbFile, op: &'static str) -> StoreError {
        match self {
            OpError::Diesel(e) => StoreError::Db(file.err(op, e)),
            OpError::Store(e) => e,
        }
    }
}

/// Opens a fresh read-only connection (with the schema check), retrying a hot journal
/// briefly.
pub(crate) fn open_read(file: &DbFile, op: &'static str) -> Result<SqliteConnection, StoreError> {
    let mut conn = open_read_unchecked(file, op)?;
    check_schema(&mut conn, file, Access::Read, op)?;
    Ok(conn)
}

/// How the container reads inbound.db: with the typed queries (a file this library migrated)
/// or with the legacy ones built for what the file holds (see [`crate::inbound_shape`]).
pub(crate) enum InboundView {
    /// Migrated by this library.
    Current,
    /// An older host's file the container can serve as it is.
    Legacy(crate::inbound_shape::LegacyShape),
}

/// Like [`read`], for the container's reads of inbound.db: a file the library has not
/// migrated (an older host's) is served as it is when it has what the container needs.
pub(crate) fn read_inbound<T>(
    file: &DbFile,
    op: &'static str,
    mut f: impl FnMut(&mut SqliteConnection, &InboundView) -> Result<T, OpError>,
) -> Result<T, StoreError> {
    let (retries, pause) = retries_for(file);
    let mut attempt = 0;
    loop {
        let result = open_read_unchecked(file, op).and_then(|mut conn| {
            let view = inbound_view(&mut conn, file, op)?;
            f(&mut conn, &view).map_err(|e| e.into_store(file, op))
        });
        match result {
            Err(e) if file.is_file() && torn_read(&e) && attempt < retries => {
                attempt += 1;
                std::thread::sleep(pause);
            }
            other => return other,
        }
    }
}

/// Current, or legacy when the file is not migrated (or too old for this build) but holds
/// every column the container needs; else the schema check's own error.
fn inbound_view(
    conn: &mut SqliteConnection,
    file: &DbFile,
    op: &'static str,
) -> Result<InboundView, StoreError> {
    match check_schema(conn, file, Access::Read, op) {
        Ok(()) => Ok(InboundView::Current),
        Err(e @ (DbError::NotMigrated { .. } | DbError::TooOld { .. })) => {
            let shape =
                crate::inbound_shape::LegacyShape::read(conn).map_err(|q| file.err(op, q))?;
            if shape.missing().is_empty() {
                Ok(InboundView::Legacy(shape))
            } else {
                Err(e.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens a fresh read-only connection without the schema check, retrying a hot journal
/// briefly.
fn open_read_unchecked(file: &DbFile, op: &'static str) -> Result<SqliteConnection, StoreError> {
    let (retries, _) = retries_for(file);
    let mut attempt = 0;
    loop {
        match file.open_reader(op) {
            Ok(conn) => return Ok(conn),
            Err(DbError::HotJournal { .. }) if attempt < retries.min(HOT_JOURNAL_RETRIES) => {
                attempt += 1;
                std::thread::sleep(HOT_JOURNAL_PAUSE);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How often a read of `file` is retried, and after how long. The host's reads of the
/// container's file retry twice, briefly: a hostile container can make every one of them fail,
/// and each retry is time the other sessions of a sweep wait.
fn retries_for(file: &DbFile) -> (u32, Duration) {
    if file.is_untrusted() {
        (2, Duration::from_millis(10))
    } else {
        (TORN_READ_RETRIES, TORN_READ_PAUSE)
    }
}

/// How often, and how long apart, a read of the other side's file is retried when it failed
/// the way a commit in progress on the other side of the mount makes it fail.
const TORN_READ_RETRIES: u32 = 10;
const TORN_READ_PAUSE: Duration = Duration::from_millis(20);

/// True for the errors a read-only reader gets when the writer commits at the same moment on
/// the other side of a mount, where the writer's locks are not visible: the pages read mix two
/// versions of the file (`Corrupt`, `NotADatabase`), or the writer's journal looked hot and the
/// read-only connection could not roll it back, and the journal was gone by the time the error
/// was classified (`ReadOnly`; a journal still there is a `HotJournal`, which [`open_read`]
/// retries on its own and then reports). A read never writes, so a `ReadOnly` here is never a
/// refused write of the caller's.
fn torn_read(e: &StoreError) -> bool {
    matches!(
        e.as_db(),
        Some(DbError::Corrupt { .. } | DbError::NotADatabase { .. } | DbError::ReadOnly { .. })
    )
}

/// Runs read-only `f` on a fresh read-only connection that is closed afterwards. A read that
/// fails as a commit in progress across the mount makes it fail (see [`torn_read`]) is run
/// again on a new connection, a few times, before the error is reported.
pub(crate) fn read<T>(
    file: &DbFile,
    op: &'static str,
    mut f: impl FnMut(&mut SqliteConnection) -> Result<T, OpError>,
) -> Result<T, StoreError> {
    let (retries, pause) = retries_for(file);
    let mut attempt = 0;
    loop {
        let result = open_read(file, op)
            .and_then(|mut conn| f(&mut conn).map_err(|e| e.into_store(file, op)));
        match result {
            Err(e) if file.is_file() && torn_read(&e) && attempt < retries => {
                attempt += 1;
                std::thread::sleep(pause);
            }
            other => return other,
        }
    }
}

/// Runs `f` once on a fresh read-only connection that is closed afterwards (raw connections
/// handed to callers: what they run is theirs, so a refused write is reported as it is).
pub(crate) fn read_once<T>(
    file: &DbFile,
    op: &'static str,
    f: impl FnOnce(&mut SqliteConnection) -> Result<T, OpError>,
) -> Result<T, StoreError> {
    let mut conn = open_read(file, op)?;
    f(&mut conn).map_err(|e| e.into_store(file, op))
}

/// Opens the file as its writer (with the schema check).
///
/// The host migrates its own file when it opens one an older host left behind (it is that
/// file's writer): a file not migrated yet, or behind this build, is brought up to date in one
/// transaction first (the older implementation keeps reading and writing it: only tables,
/// indexes and triggers are added). The container's file is migrated only by its container
/// (at start-up), never here.
pub(crate) fn open_write(file: &DbFile, op: &'static str) -> Result<SqliteConnection, StoreError> {
    let mut conn = file.open_writer(op)?;
    match check_schema(&mut conn, file, Access::Write, op) {
        Ok(()) => Ok(conn),
        Err(DbError::NotMigrated { .. } | DbError::TooOld { .. })
            if file.role() == Role::Host && file.kind() == FileKind::Inbound =>
        {
            drop(conn);
            // The adoption backfills no time the host decides on: the system clock will do.
            migrate::migrate(
                file,
                SystemClock.now(),
                sessionbus_schema::migrate::IfMissing::Fail,
            )?;
            let mut conn = file.open_writer(op)?;
            check_schema(&mut conn, file, Access::Write, op)?;
            Ok(conn)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `f` in one `BEGIN IMMEDIATE` transaction on a fresh writer connection, then closes it
/// (closing is what makes the write visible across the mount).
///
/// On the container's own file (role container, kind outbound) a `Locked` failure (the busy
/// timeout passed while another container process, the runner or a tool server, held the
/// lock) is retried with exponential backoff and jitter within [`LOCKED_RETRY_BUDGET`]: under
/// CPU load two writers can each hold the lock long enough for the other's busy timeout to
/// pass, and the write must not be lost for that. A failed attempt rolled back entirely, so
/// running `f` again is safe. Other files keep a single attempt (the host's inbound.db writes
/// are timed by the host's own loop).
pub(crate) fn write<T>(
    file: &DbFile,
    op: &'static str,
    mut f: impl FnMut(&mut SqliteConnection) -> Result<T, OpError>,
) -> Result<T, StoreError> {
    with_lock_retries(file, || write_once(file, op, &mut f))
}

/// One attempt of [`write`].
fn write_once<T>(
    file: &DbFile,
    op: &'static str,
    f: &mut impl FnMut(&mut SqliteConnection) -> Result<T, OpError>,
) -> Result<T, StoreError> {
    let mut conn = open_write(file, op)?;
    let out = conn
        .immediate_transaction(|c| f(c))
        .map_err(|e| e.into_store(file, op));
    drop(conn);
    if out.is_ok() {
        // After the close: the host's generation stamp for inbound.db (see `stamp`).
        crate::stamp::after_commit(file);
    }
    out
}

/// The total time a write (or own read) of the container's own file keeps retrying `Locked`
/// before the error is reported: each attempt already waited the busy timeout (5 s) for the
/// lock, so this covers about five attempts.
pub(crate) const LOCKED_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// The first pause between attempts; it doubles each time, up to [`LOCKED_RETRY_MAX_PAUSE`].
const LOCKED_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(20);
const LOCKED_RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// True for the file whose lock-wait failures are retried: the container's own outbound.db,
/// which several container processes write.
fn retries_locked(file: &DbFile) -> bool {
    file.role() == Role::Container && file.kind() == FileKind::Outbound
}

/// Runs `attempt` and, on the container's own file, runs it again after a `Locked` failure
/// with exponential backoff and jitter while [`LOCKED_RETRY_BUDGET`] lasts (counting the time
/// the attempts themselves took).
fn with_lock_retries<T>(
    file: &DbFile,
    mut attempt: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if !retries_locked(file) {
        return attempt();
    }
    let start = Instant::now();
    let mut pause = LOCKED_RETRY_FIRST_PAUSE;
    loop {
        match attempt() {
            Err(e) if matches!(e.as_db(), Some(DbError::Locked { .. })) => {
                // Jitter: a pause between half and all of the nominal one, so two writers that
                // failed together do not retry together.
                let wait = pause.mul_f64(0.5 + 0.5 * jitter());
                if start.elapsed() + wait >= LOCKED_RETRY_BUDGET {
                    return Err(e);
                }
                tracing::debug!("{e}; retrying in {wait:?}");
                std::thread::sleep(wait);
                pause = (pause * 2).min(LOCKED_RETRY_MAX_PAUSE);
            }
            other => return other,
        }
    }
}

/// A number in `[0, 1)`, different on each call and in each process (std's randomly keyed
/// hasher; no random-number crate needed for spreading retries).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // The top 53 bits as the mantissa of a number in [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs read-only `f` on the writer's own file, without a transaction (the container reading
/// its own outbound.db, the host its own inbound.db). On the container's file a `Locked`
/// failure is retried like a [`write`]'s.
pub(crate) fn read_own<T>(
    file: &DbFile,
    op: &'static str,
    mut f: impl FnMut(&mut SqliteConnection) -> Result<T, OpError>,
) -> Result<T, StoreError> {
    with_lock_retries(file, || {
        let mut conn = open_write(file, op)?;
        // Each statement runs once on this connection: no persistent statement cache.
        sessionbus_schema::conn::one_shot(&mut conn);
        f(&mut conn).map_err(|e| e.into_store(file, op))
    })
}
