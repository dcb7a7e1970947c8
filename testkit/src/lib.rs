//! # sessionbus-testkit
//!
//! Fixtures for code that uses sessionbus, in this workspace and downstream:
//!
//! - [`TempSession`]: a real, provisioned session folder in a temp dir (copied from a pair
//!   migrated once per process), with host and container views on a shared [`ManualClock`];
//! - [`MemSession`]: the same views over two in-memory databases, for fast unit tests;
//! - [`message`] / [`reply`]: builders with sensible defaults;
//! - [`legacy`]: files as the older implementation left them, every generation G0 to G8;
//! - [`child`]: the tests' child processes (`sessionbus-test-child`), one per role;
//! - [`mount`]: a session folder seen through a real FUSE mount (bindfs) in a chosen cache
//!   mode, for the cross-mount tests;
//! - with feature `runtime`: `FakeControl` and `CapturingDeliverer`, fakes of the runtime's
//!   `ContainerControl` and `Deliverer` (also for its async host, through `SyncControl` and
//!   `SyncDeliverer`).
//!
//! Many sessions on one clock (a host serving them all sees one time):
//!
//! ```
//! use sessionbus_testkit::{ManualClock, TempSession};
//!
//! let clock = ManualClock::new();
//! let sessions = TempSession::many(3, &clock);
//! clock.advance_secs(60); // every session's views see it
//! assert_eq!(sessions[0].clock.now_millis(), sessions[2].clock.now_millis());
//! ```
//!
//! ```
//! use sessionbus_testkit::{message, TempSession};
//!
//! let s = TempSession::new();
//! s.host().inbound().write_message(&message("m1", "hello").build()).unwrap();
//! let batch = s.container().poll_after_start(10).unwrap();
//! assert_eq!(batch.messages[0].id, "m1");
//! s.clock.advance_secs(60); // time moves only when told
//! ```
#![warn(missing_docs)]

mod builders;
pub mod child;
mod clock;
#[cfg(feature = "runtime")]
mod fakes;
pub mod hostile;
pub mod legacy;
pub mod mount;
mod session;

pub use builders::{chat_address, message, reply, MessageBuilder};
pub use clock::{ManualClock, START_MILLIS};
#[cfg(feature = "runtime")]
pub use fakes::{CapturingDeliverer, FakeControl};
pub use session::{MemSession, TempSession};
