//! # sessionbus-testkit
//!
//! Fixtures for code that uses sessionbus, in this workspace and downstream:
//! legacy files of every generation ([`legacy`]), and more to come.
#![warn(missing_docs)]

pub mod legacy;
