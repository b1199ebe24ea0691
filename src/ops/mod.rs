//! Planners: each turns a request and the current state into a validated
//! [`Plan`](crate::engine::Plan). They look, check and describe; they never act.

pub mod init;
