//! The crate's top-level error: every module's error, and the exit code of
//! SPEC section 2 that each one means.

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::engine::lock::LockError;
use crate::manifest::last_audit::LastAuditError;
use crate::metrics::MetricsError;
use crate::ops::OpsError;
use crate::statedir::StateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Fs(#[from] crate::fs::FsError),
    /// A planner made no plan: bad input (exit 2) or a host that could not
    /// say what runs (exit 1), by its type.
    #[error(transparent)]
    Ops(#[from] OpsError),
    /// Bad input caught before anything changed.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    /// `audit` (or an export) found a template that differs from its manifest.
    #[error("{0}")]
    Drift(String),
    /// Done, but something waits for the operator: `/etc` conflicts or
    /// refusals after `etc-merge` (or after an upgrade's merge). Exit 7.
    #[error("{0}")]
    Attention(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) => 2,
            Error::Drift(_) => 3,
            Error::Ops(e) => e.exit_code(),
            Error::Attention(_) => 7,
            Error::State(
                StateError::Missing(_)
                | StateError::BadEnv { .. }
                | StateError::Unsafe(_)
                | StateError::Lock(LockError::Unsafe(_)),
            ) => 2,
            Error::State(StateError::Lock(LockError::Held { .. })) => 5,
            Error::State(StateError::Engine(e)) | Error::Engine(e) => e.exit_code(),
            Error::State(StateError::Journal(j)) => j.exit_code(),
            Error::State(_) | Error::Fs(_) | Error::Io(_) => 6,
        }
    }
}

/// `metrics` reads what `status` and `history` read: its failures are
/// theirs, with their exit codes; a bad `--output` or a damaged audit
/// record is bad input (exit 2), a failed write of the file exit 6.
impl From<MetricsError> for Error {
    fn from(e: MetricsError) -> Error {
        match e {
            MetricsError::State(s) => Error::State(s),
            MetricsError::Ops(o) => Error::Ops(o),
            MetricsError::Audit(LastAuditError::Unsafe(u)) => Error::State(StateError::Unsafe(u)),
            e @ (MetricsError::Audit(_) | MetricsError::Output { .. }) => {
                Error::Usage(e.to_string())
            }
            e @ MetricsError::Write { .. } => Error::Io(e.to_string()),
        }
    }
}
