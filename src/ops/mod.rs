//! Planners: each turns a request and the current state into a validated
//! [`Plan`](crate::engine::Plan). They look, check and describe; they never act.

pub mod init;
pub mod jail;
pub mod records;
pub mod template;
pub mod upgrade;
pub mod validate;
