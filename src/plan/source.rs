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
    /// A template bundle (`template pack`), already shaped. Appended
    /// last: postcard encodes the variant by its position.
    Bundle(BundleSource),
}

/// A bundle as a plan carries it: installed after its signature
/// (`FILE.minisig`) verifies against `keys` and its unpacked tree's manifest
/// has the template id `id` (both checked when the plan was made, and again
/// by `populate` if it has to unpack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSource {
    pub file: PathBuf,
    /// The template id the bundle's header names (64 hex digits).
    pub id: String,
    /// The `[trust]` keys (base64 lines) trusted when the plan was made.
    pub keys: Vec<String>,
    /// `[trust] require_signature` when the plan was made.
    pub require_signature: bool,
    /// The manifest the planner wrote for the tree it staged before the
    /// transaction (`manifests/mroot2.manifest`), which the undo of
    /// `populate` removes with the tree.
    pub staged_manifest: Option<PathBuf>,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Dir(p) => write!(f, "dir {}", p.display()),
            Source::Tar(p) => write!(f, "archive {}", p.display()),
            Source::Cmd(c) => write!(f, "command `{c}`"),
            Source::Bundle(BundleSource { file, id, .. }) => write!(
                f,
                "bundle {} (template {})",
                file.display(),
                id.chars().take(12).collect::<String>()
            ),
        }
    }
}
