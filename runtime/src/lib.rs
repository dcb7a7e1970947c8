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
//! - [`wake`]: waiting for the other side's commits by change notification (inotify) where
//!   the filesystem delivers it, polling where it does not, chosen per folder and reported;
//! - `operator` (feature `cli`): the operator's `sessionbus migrate | inspect | status`, the
//!   library behind the `sessionbus` binary.
//!
//! [`error::RuntimeError`] wraps the store's errors, which name file, role and operation.
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
pub mod wake;
