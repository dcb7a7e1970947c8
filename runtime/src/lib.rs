//! # sessionbus-runtime
//!
//! The pure, file-level pieces of the session bus runtime, shared by the host and the container:
//!
//! - [`config`]: the group's `container.json`, parsed into a typed [`config::ContainerConfig`]
//!   with clear errors (never silently the defaults);
//! - [`gate`]: the host's command gate for chat text starting with `/`;
//! - [`liveness`]: the host sweep's stuck decision and the retry policy, as pure functions;
//! - [`heartbeat`]: touching and reading the `.heartbeat` file's mtime;
//! - [`skills`]: keeping a group's `.claude-shared/skills/` folder to one symlink per
//!   selected skill.
#![warn(missing_docs)]

pub mod config;
pub mod gate;
pub mod heartbeat;
pub mod liveness;
pub mod skills;
