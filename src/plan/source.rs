//! Where a world comes from, as the plan carries it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a world comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Dir(PathBuf),
    Tar(PathBuf),
    /// A shell command line; `{dest}` stands for the directory to fill,
    /// which reaches the command quoted (see `world::dest_command`).
    Cmd(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dir(p) => write!(f, "dir {}", p.display()),
            Source::Tar(p) => write!(f, "archive {}", p.display()),
            Source::Cmd(c) => write!(f, "command `{c}`"),
        }
    }
}
