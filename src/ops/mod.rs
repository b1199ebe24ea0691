//! Planners: each turns a request and the current state into a validated
//! [`Plan`](crate::plan::Plan). They look, check and describe; they never act.

pub mod bundle;
pub mod due;
mod error;
pub mod init;
pub mod jail;
pub mod records;
mod running_on;
pub mod template;
pub mod upgrade;
pub mod validate;

pub use error::OpsError;
