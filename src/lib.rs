//! jailtx: journaled transactions over jails that share one read-only template.

// Errors carry the paths and sources an operator needs and are made at most
// once per failed command; boxing them would buy nothing measurable.
#![allow(clippy::result_large_err)]

// The layers, bottom to top; a module imports only from layers below its own
// (`scripts/check-layers` enforces this table, `tests/layers.rs` runs it):
//
//   plan, fs         pure data (plans, actions, names) / safe file primitives
//   config, manifest, journal
//                    settings and layout / template manifests / the
//                    write-ahead log of plans
//   host, trust      mounts and jails (Linux, FreeBSD, recording), given specs
//                    / the `[trust]` keys and minisign signature checks
//   world            filling and shaping a world (runs commands on a host)
//   engine           runs plans through the journal on a host
//   ops              planners: input and state in, a plan out
//   etcmerge         the /etc three-way merge planner
//   statedir         the locked state dir: engine, journal and history
//   metrics          the state as Prometheus text (read only)
//   error, cli       exit codes by error type / the command line
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod etcmerge;
pub mod fs;
pub mod host;
pub mod journal;
pub mod manifest;
pub mod metrics;
pub mod ops;
pub mod plan;
pub mod statedir;
pub mod trust;
pub mod world;

pub use error::Error;
