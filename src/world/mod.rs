//! Worlds: filling a staging tree from a directory, an archive or a command,
//! and shaping it into a template (plus, the first time, the skel).

mod archive;
mod shape;

pub use archive::{ArchiveKind, extract};
pub use shape::{LINKS, MAKE_CONF_LINE, MOVES, shape, unshape};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::{self, FsError};
use crate::host::{Host, HostError};

/// Where a world comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Dir(PathBuf),
    Tar(PathBuf),
    /// A shell command line; `{dest}` is replaced by the directory to fill.
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

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("extract {archive}: {why}")]
    Extract { archive: PathBuf, why: String },
    #[error("shape {path}: {why}")]
    Shape { path: PathBuf, why: String },
}

/// The side name a world is filled under before it is renamed into place.
pub fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".jailtx-partial");
    to.with_file_name(name)
}

/// Fills `to` from `source`, idempotently: the world is built under a side
/// name, made durable (one syncfs on Linux), and renamed into place, so an existing
/// `to` is always complete and a half-built one is always under the side name.
pub fn populate(source: &Source, to: &Path, host: &dyn Host) -> Result<(), WorldError> {
    if std::fs::symlink_metadata(to).is_ok() {
        fs::fsync_parent(to)?;
        return Ok(());
    }
    let partial = partial_path(to);
    fs::remove_tree(&partial)?;
    match source {
        Source::Dir(dir) => {
            fs::copy_tree(dir, &partial)?;
        }
        Source::Tar(archive) => {
            fs::create_dir_durable(&partial, 0o755)?;
            extract(archive, &partial)?;
        }
        Source::Cmd(cmd) => {
            fs::create_dir_durable(&partial, 0o755)?;
            let line = cmd.replace("{dest}", &partial.display().to_string());
            // No timeout: an installworld may take hours.
            host.run_command(
                &line,
                &[("DESTDIR".into(), partial.display().to_string())],
                None,
            )?;
        }
    }
    fs::sync_tree(&partial)?;
    fs::rename_durable(&partial, to)?;
    Ok(())
}

/// Takes a populated world away again, whole or half built.
pub fn unpopulate(to: &Path) -> Result<(), WorldError> {
    fs::remove_tree(&partial_path(to))?;
    fs::remove_tree(to)?;
    Ok(())
}
