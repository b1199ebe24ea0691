//! Why a planner made no plan, by type: the CLI maps each kind to its exit
//! code (SPEC section 2) instead of reading the message.

use crate::host::HostError;
use crate::plan::NameError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Bad input, or a state that refuses the request (a name taken, a
    /// leftover in the way): exit 2, nothing changed.
    #[error("{0}")]
    Refused(String),
    /// A name that is not one (exit 2).
    #[error(transparent)]
    Name(#[from] NameError),
    /// The host could not say what is mounted or running: not bad input.
    /// Nothing was changed, so it is a failure with the system as before.
    #[error(transparent)]
    Host(#[from] HostError),
}

impl OpsError {
    pub fn exit_code(&self) -> u8 {
        match self {
            OpsError::Refused(_) | OpsError::Name(_) => 2,
            OpsError::Host(_) => 1,
        }
    }
}

impl From<String> for OpsError {
    fn from(why: String) -> OpsError {
        OpsError::Refused(why)
    }
}

impl From<&str> for OpsError {
    fn from(why: &str) -> OpsError {
        OpsError::Refused(why.to_owned())
    }
}
