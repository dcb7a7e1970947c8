//! # sessionbus-store
//!
//! Role-enforced access to a session's two files. The host opens a session with
//! [`HostSession`] and gets a writer for inbound.db and a reader for outbound.db; the
//! container opens it with [`ContainerSession`] and gets the opposite. Reader types have no
//! write methods, and their connections are opened read-only (`mode=ro`) so that SQLite
//! refuses writes too. Every operation opens the file, works in one transaction and closes it.
//!
//! The host's side:
//!
//! ```
//! use sessionbus_store::{provision, HostSession, NewMessage, SessionPaths};
//! use sessionbus_schema::SystemClock;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let paths = SessionPaths::new(dir.path().join("session"));
//! provision(&paths, None, &SystemClock).unwrap();
//!
//! let host = HostSession::open(&paths.dir);
//! let written = host.inbound().write_message(&NewMessage::chat("m1", "hello")).unwrap();
//! assert_eq!(written.seq.get() % 2, 0); // host seqs are even
//! assert_eq!(host.inbound().count_due().unwrap(), 1);
//! ```
//!
//! The container's side:
//!
//! ```
//! use sessionbus_store::{provision, AckStatus, ContainerSession, HostSession, NewMessage,
//!     NewOutbound, SessionPaths};
//! use sessionbus_schema::SystemClock;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let paths = SessionPaths::new(dir.path().join("session"));
//! provision(&paths, None, &SystemClock).unwrap();
//! HostSession::open(&paths.dir).inbound().write_message(&NewMessage::chat("m1", "hi")).unwrap();
//!
//! let container = ContainerSession::open(&paths.dir).unwrap();
//! container.start().unwrap();
//! let batch = container.poll_after_start(10).unwrap();
//! let msg = &batch.messages[0];
//! container.outbound().ack(&batch.ids(), &AckStatus::Processing).unwrap();
//! // The reply and the completed ack commit together.
//! let seqs = container.outbound()
//!     .commit(&batch.ids(), &AckStatus::Completed, &[NewOutbound::reply_to("r1", msg, "echo: hi")])
//!     .unwrap();
//! assert!(seqs[0] > msg.seq.unwrap()); // replies sort after what they answer, and are odd
//! ```
// Library code must not panic on input or on what the filesystem does: no unwrap, expect,
// panic or unchecked indexing outside tests (clippy enforces it; CI denies warnings).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
#![warn(missing_docs)]

pub mod attachments;
mod bookkeeping;
mod container_session;
mod convert;
pub mod error;
mod fileio;
mod host_session;
mod inbound_reader;
mod inbound_shape;
mod inbound_writer;
mod model;
mod outbound_reader;
mod outbound_writer;
pub mod paths;
mod provision;
mod rows;
// Used by the runtime crate of this workspace; not part of the API.
#[doc(hidden)]
pub mod stamp;
#[doc(hidden)]
pub mod validate;

pub use attachments::Attachment;
pub use bookkeeping::{ClaimRecord, SweepView, SweepViewParts};
pub use container_session::ContainerSession;
pub use convert::{convert_to_split, ContainerStopped, Converted};
pub use error::{Result, StoreError};
pub use host_session::{HostSession, MAX_HELD_ROWS};
pub use inbound_reader::InboundReader;
pub use inbound_writer::{InboundWriter, NextOccurrence, SyncReport, HOST_REPLY_KIND};
pub use model::*;
pub use outbound_reader::{
    OutboundReader, OutboundRow, OutboundWindow, RefusedRow, MAX_CLAIMS_READ, MAX_PASS_BYTES,
};
pub use outbound_writer::{
    continuation_key, OutboundWriter, LEGACY_CONTINUATION_KEY, MAX_FAILURE_NOTES,
    MAX_FAILURE_REASON_BYTES,
};
pub use paths::{Layout, SessionPaths, CONTAINER_AREA, WORKSPACE};
pub use provision::{check_writable, provision, Ownership, Provisioned};
pub use sessionbus_schema::{Clock, DbError, Seq, SystemClock, Timestamp};
