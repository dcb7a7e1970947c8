//! Errors of store operations: the schema layer's [`DbError`] plus what the store itself
//! checks (content, ids, duplicates, ownership).

use sessionbus_schema::{At, DbError, Seq, SeqError};
use std::path::PathBuf;

/// What went wrong in a store operation. Every variant names the file, the role and the
/// operation through its [`At`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file itself: not found, locked, hot journal, read-only, corrupt, WAL, schema...
    #[error(transparent)]
    Db(#[from] DbError),
    /// A message's content is not valid JSON; nothing was written.
    #[error("{at}: message {id:?}: content is not valid JSON: {detail}")]
    InvalidContent {
        /// Where.
        at: At,
        /// The message id.
        id: String,
        /// The parser's message.
        detail: String,
    },
    /// A message's content is larger than the limit; nothing was written.
    #[error("{at}: message {id:?}: content is {size} bytes, over the limit of {limit}")]
    ContentTooLarge {
        /// Where.
        at: At,
        /// The message id.
        id: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An id that could escape a folder or confuse a peer (`/`, `..`, NUL, control
    /// characters, empty or too long); nothing was written.
    #[error("{at}: invalid id {id:?}: {reason}")]
    InvalidId {
        /// Where.
        at: At,
        /// The id (escaped by `{:?}`).
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The id exists with different content (chat platforms reuse ids): nothing was written.
    #[error(
        "{at}: message id {id:?} already exists with different content \
         (seq {existing_seq:?}, status {existing_status})"
    )]
    DuplicateId {
        /// Where.
        at: At,
        /// The id.
        id: String,
        /// The existing row's seq.
        existing_seq: Option<Seq>,
        /// The existing row's status.
        existing_status: String,
    },
    /// This process cannot write a file it must write (ownership of the session folder).
    #[error(
        "{at}: {path} is not writable by this process (uid {uid}): owner uid {owner_uid}, \
         gid {owner_gid}, mode {mode:o}"
    )]
    NotWritable {
        /// Where.
        at: At,
        /// The file or folder.
        path: PathBuf,
        /// This process's effective uid.
        uid: u32,
        /// The file's owner.
        owner_uid: u32,
        /// The file's group.
        owner_gid: u32,
        /// The file's permission bits.
        mode: u32,
    },
    /// A message's attachments break a limit (count, size per file, size in all); nothing of
    /// them was loaded.
    #[error("{at}: attachments refused: {detail}")]
    AttachmentsTooLarge {
        /// Where.
        at: At,
        /// Which limit.
        detail: String,
    },
    /// No seq can be allocated (the file's largest is at the top of the range).
    #[error("{at}: {source}")]
    SeqSpace {
        /// Where.
        at: At,
        /// Why.
        #[source]
        source: SeqError,
    },
    /// A caller's argument cannot be used (e.g. a batch size of 0).
    #[error("{at}: invalid argument: {detail}")]
    InvalidArgument {
        /// Where.
        at: At,
        /// What is wrong.
        detail: String,
    },
}

impl StoreError {
    /// True for conditions that pass by themselves (lock, hot journal): retry later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Db(e) if e.is_retryable())
    }

    /// The schema-layer error, when this is one.
    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            StoreError::Db(e) => Some(e),
            _ => None,
        }
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
