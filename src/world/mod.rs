//! Worlds: filling a staging tree from a directory, an archive or a command,
//! and shaping it into a template (plus, the first time, the skel).

mod archive;
pub mod bundle;
mod check;
mod cmd;
pub mod distmanifest;
mod shape;

pub use archive::{ArchiveKind, extract, scan};
pub use check::{check_tree, dirs as checked_dirs, open_world};
pub use cmd::dest_command;
pub use shape::{LINKS, MAKE_CONF_LINE, MOVES, shape, unshape};

use std::path::{Path, PathBuf};

use crate::fs::{self, FsError};
use crate::host::{Host, HostError};
pub use crate::plan::Source;

/// Where each template keeps its world's own `etc`, relative to the template.
pub const PRISTINE_ETC: &str = "usr/share/jailtx/pristine/etc";

/// Where each template keeps pristine copies of its world's configuration
/// (`etc` and [`PRISTINE_KEPT`]), relative to the template.
pub const PRISTINE: &str = "usr/share/jailtx/pristine";

/// How much of a skel-bound directory is kept pristine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The whole directory: all of it is configuration.
    Tree,
    /// Only its top-level dotfiles (files and symlinks named `.*`): the rest
    /// of the directory is an account's data, not the world's configuration.
    DotFiles,
}

/// The world's configuration kept pristine in every template: (path in the
/// world, path below [`PRISTINE`], what of it). The second path is where the
/// directory lives in the skel and in `js/NAME`, so the pristine copy of a
/// file sits at the same relative path as the jail's. Only `etc` is merged
/// (by `etcmerge`; see `docs/etc-merge.md`); the others are kept so that any two template
/// versions can be compared, and for a later merge.
pub const PRISTINE_KEPT: [(&str, &str, Kept); 3] = [
    ("etc", "etc", Kept::Tree),
    ("usr/local/etc", "usr-local/etc", Kept::Tree),
    ("root", "root", Kept::DotFiles),
];

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
    /// A world whose shape the layout cannot take (see `check`).
    #[error("the world's `{}` {why}; fix the world, then run the command again", rel.display())]
    Unfit { rel: PathBuf, why: String },
    #[error("{path} is {what}; give the world's own directory")]
    Top { path: PathBuf, what: &'static str },
    #[error("bundle {path}: {why}")]
    Bundle { path: PathBuf, why: String },
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
}

/// Checks, before any transaction, that `source` is a world the layout can
/// take: a `--from-dir` tree (through no-follow opens) or a `--from-tar`
/// archive (by reading all of it) of the right shape, with `carry_over`'s
/// paths real directories or absent. A `--from-cmd` world does not exist
/// yet: `populate` checks it before it is renamed into place, and `shape`
/// again (a refusal there fails the transaction, which is rolled back:
/// exit 1). The message is one line, for exit 2.
pub fn check_source(source: &Source, carry_over: &[PathBuf]) -> Result<(), String> {
    match source {
        Source::Dir(d) => open_world(d)
            .and_then(|top| check_tree(&top, carry_over, false))
            .map_err(|e| format!("--from-dir {}: {e}", d.display())),
        Source::Tar(t) => scan(t, carry_over).map_err(|e| match e {
            // The archive is named once, by the option.
            WorldError::Extract { why, .. } => format!("--from-tar {}: {why}", t.display()),
            e => format!("--from-tar {}: {e}", t.display()),
        }),
        // Staged by the planner (see `bundle::stage`), which says why it refused.
        Source::Cmd(_) | Source::Bundle(_) => Ok(()),
    }
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
    if let Source::Bundle(crate::plan::BundleSource {
        file,
        id,
        keys,
        require_signature,
        ..
    }) = source
    {
        // Normally staged before the transaction began (the planner checks
        // the tree's id there, for an exit 2); unpacked here only when a
        // plan runs without that (a plan file, a staged tree removed).
        let keys = keys
            .iter()
            .map(|k| crate::trust::TrustedKey::from_base64(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| WorldError::Bundle {
                path: file.clone(),
                why: format!("a key of the plan: {why}"),
            })?;
        return bundle::stage(file, &keys, *require_signature, id, to, None);
    }
    let partial = partial_path(to);
    fs::remove_tree(&partial)?;
    match source {
        Source::Dir(dir) => {
            // Checked by the planner already; again here, as the tree may
            // have changed since (a resumed run, a race): the copy itself
            // opens the top without following it and copies links as links.
            check_tree(&open_world(dir)?, &[], false)?;
            fs::copy_tree(dir, &partial)?;
        }
        Source::Tar(archive) => {
            fs::create_dir_durable(&partial, 0o755)?;
            extract(archive, &partial)?;
        }
        Source::Cmd(cmd) => {
            fs::create_dir_durable(&partial, 0o755)?;
            let dest = partial.display().to_string();
            // The destination is never pasted into the line: it is `$1` and
            // `$DEST`, and `{dest}` becomes a quoted "${DEST}".
            // No timeout: an installworld may take hours.
            host.run_command(
                &dest_command(cmd),
                std::slice::from_ref(&dest),
                &[
                    ("DESTDIR".into(), dest.clone()),
                    ("DEST".into(), dest.clone()),
                ],
                None,
            )?;
        }
        Source::Bundle(_) => {}
    }
    // Whatever filled it, the world is checked before it is published
    // under its real name: the command may have made anything, even
    // replaced `partial` itself with a link.
    check_tree(&open_world(&partial)?, &[], false)?;
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
