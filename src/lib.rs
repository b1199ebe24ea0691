//! jailtx: journaled transactions over jails that share one read-only template.

// Errors carry the paths and sources an operator needs and are made at most
// once per failed command; boxing them would buy nothing measurable.
#![allow(clippy::result_large_err)]
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod etcmerge;
pub mod fs;
pub mod host;
pub mod journal;
pub mod manifest;
pub mod ops;
pub mod statedir;
pub mod world;

pub use error::Error;
