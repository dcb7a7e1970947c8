//! # sessionbus-runtime
//!
//! The session bus runtime, shared by the host and the container:
//!
//! - [`config`]: the group's `container.json`, parsed into a typed [`config::ContainerConfig`]
//!   with clear errors (never silently the defaults);
//! - [`gate`]: the host's command gate for chat text starting with `/`;
//! - [`liveness`]: the host sweep's stuck decision and the retry policy, as pure functions;
//! - [`heartbeat`]: touching and reading the `.heartbeat` file's mtime;
//! - [`freshness`]: telling a slow view of inbound.db from a frozen one (a mount that never
//!   revalidates cached contents), from the host's generation stamp;
//! - [`skills`]: keeping a group's `.claude-shared/skills/` folder to one symlink per
//!   selected skill;
//! - [`mount_plan`]: the container's view of the host as an ordered, checked list of bind
//!   mounts ([`mount_plan::MountPlan`]), rendered as bubblewrap or `docker run` arguments;
//! - [`mount_security`]: the allowlist that decides which of a group's `additionalMounts` are
//!   mounted, and how (only its [`mount_security::ValidatedMount`] enters a plan);
//! - [`container`]: the container's start-up and poll loop (acks, heartbeat while the handler
//!   runs, `/clear`, replies committed with their acks);
//! - [`host`]: the host's sweep (stuck decision, kill, retries, orphan claims, wake), delivery
//!   and the command gate in front of inbound.db, with per-session error isolation;
//! - `tokio_host` (feature `tokio`): the host and the container from async code: many
//!   sessions swept and delivered concurrently on a bounded pool, the container's poll loop
//!   with an async handler;
//! - [`wake`]: waiting for the other side's commits by change notification (inotify) where
//!   the filesystem delivers it, polling where it does not, chosen per folder and reported;
//! - `operator` (feature `cli`): the operator's `sessionbus migrate | inspect | status`, the
//!   library behind the `sessionbus` binary.
//!
//! [`error::RuntimeError`] wraps the store's errors, which name file, role and operation.
//!
//! # One dependency
//!
//! A host or a container needs only this crate: the store's and the schema's types that its
//! signatures use are re-exported at its root ([`HostSession`], [`SessionPaths`],
//! [`NewMessage`], [`DueOutbound`], [`provision`], [`Ownership`], [`Clock`], ...), the common
//! ones again in [`prelude`], and both crates whole as [`store`] and [`schema`].
//!
//! # Blocking
//!
//! Every operation of this crate and of the store is synchronous: it opens a file, runs one
//! transaction and closes it (SQLite, `fsync`, `fcntl` locks), sometimes sleeps between
//! retries, and calls the caller's callbacks ([`host::ContainerControl`],
//! [`host::Deliverer`], the container's handler) on the calling thread. How long each may
//! block:
//!
//! | call | blocks for |
//! |---|---|
//! | one [`HostSession`] operation, [`host::accept_chat`] | one transaction: typically well under a millisecond on tmpfs, a few ms where an `fsync` costs that; at most about 5 s waiting for another writer's lock on inbound.db ([`schema::conn::DEFAULT_BUSY_TIMEOUT`], then `Locked`), and for a read of the container's outbound.db 250 ms of lock wait ([`schema::conn::UNTRUSTED_BUSY_TIMEOUT`]) plus bounded work with a 5 s backstop ([`schema::conn::UNTRUSTED_BUDGET`]) |
//! | [`host::sweep_session`], [`host::Sweeper::sweep`] | a handful of such operations (a quiet session: two header reads and a `stat`), plus the control's calls, which the library does not bound |
//! | [`host::deliver_session`] | for up to 1,000 due rows, two inbound.db writes each, plus each [`host::Deliverer::deliver`] call, which the library does not bound |
//! | [`heartbeat`] | a `stat` or `utimes` |
//! | [`container::Container::start`] | migrating outbound.db and a few transactions |
//! | [`container::Container::step`] | the handler's time, plus the container's own writes, which ride out another writer's lock for up to 30 s, and a final commit retried for up to 5 s |
//! | [`container::Container::run`] | until the stop flag is set (it sleeps between polls) |
//!
//! On a tokio worker thread any of these would stall every task scheduled on that worker (on
//! a current-thread runtime, all of them), so async code runs them with
//! `tokio::task::spawn_blocking`, which is what `tokio_host` does for each session's
//! work. Blocking threads are not the limit on concurrency there (tokio keeps up to 512); the
//! async host's own semaphore is.
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

pub mod config;
pub mod container;
pub mod control;
pub mod error;
pub mod freshness;
pub mod gate;
pub mod heartbeat;
pub mod host;
pub mod liveness;
pub mod mount_plan;
pub mod mount_security;
#[cfg(feature = "cli")]
pub mod operator;
pub mod skills;
#[cfg(feature = "tokio")]
pub mod tokio_host;
pub mod wake;

/// The store crate (`sessionbus-store`) whole: session views, the model, provisioning.
pub use sessionbus_store as store;

/// The schema crate (`sessionbus-schema`) whole: file openers, migrations, time.
pub use sessionbus_schema as schema;

#[doc(no_inline)]
pub use sessionbus_schema::{Clock, DbError, Seq, SystemClock, Timestamp};
#[doc(no_inline)]
pub use sessionbus_store::{
    provision, AckStatus, Address, Batch, ContainerSession, DeliveryOutcome, Destination,
    DestinationType, DueOutbound, HostSession, Layout, MessageIn, MessageKind, MessageStatus,
    NewHostReply, NewMessage, NewOutbound, NextOccurrence, OutboundSource, Ownership, Provisioned,
    Routing, SessionPaths, StoreError, SyncReport, Written,
};

/// The names most hosts and containers use, for a glob import:
/// `use sessionbus_runtime::prelude::*;`.
pub mod prelude {
    #[doc(no_inline)]
    pub use crate::container::{Container, ContainerOptions, Handled, HandlerContext, RunSummary};
    #[doc(no_inline)]
    pub use crate::control::{CallerError, ChildControl, SandboxControl, SandboxOptions};
    #[doc(no_inline)]
    pub use crate::error::RuntimeError;
    #[doc(no_inline)]
    pub use crate::host::{
        accept_chat, deliver_session, sweep_session, Accepted, ContainerControl, Deliverer,
        DeliveryReport, SweepOptions, SweepOutcome, SweepReport, Sweeper,
    };
    #[doc(no_inline)]
    pub use crate::liveness::{KillReason, RetryPolicy};
    #[cfg(feature = "tokio")]
    #[doc(no_inline)]
    pub use crate::tokio_host::{
        deliver_fn, handler_fn, run_container_async, AsyncContainerControl, AsyncDeliverer,
        AsyncHandler, AsyncHost, ContainerPolicy, HostEvent, HostHandle, HostOptions, StopToken,
        SyncControl, SyncDeliverer,
    };
    #[doc(no_inline)]
    pub use crate::{
        provision, Address, Batch, Clock, DueOutbound, HostSession, MessageIn, MessageKind,
        NewMessage, NewOutbound, Ownership, SessionPaths, SystemClock, Timestamp,
    };
}

/// The examples of `docs/quickstart.md`, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/quickstart.md")]
pub struct QuickstartExamples;
