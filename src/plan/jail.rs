//! What it takes to start or stop one jail, as the plan carries it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything needed to start or stop one jail; carried inside the plan so
/// that recovery can start a jail again from the journal alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailSpec {
    pub name: String,
    /// The jail's root (`BASE/j/NAME`), a physical path.
    pub path: PathBuf,
    pub hostname: String,
    pub ip: String,
    pub exec_start: String,
    pub exec_stop: String,
    pub stop_timeout_secs: u64,
}
