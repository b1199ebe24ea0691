//! Which template a jail's mounted root is, told by the directory's identity
//! rather than by a name, so `status` is right at every instant of a switch.
//!
//! Names lie during and after a switch: the templates are renamed while the
//! jails run (a mount holds the directory, not its name), FreeBSD's
//! `mount -p` prints the source path as given at mount time, and a
//! rolled-back canary stays mounted from the archive's name. A template's
//! manifest records the inode (and device) of its root when it was built,
//! and a rename keeps both; so the manifest whose root is the directory the
//! jail's mount shows is the jail's template, under whatever names the
//! directory and the manifest have at that instant.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::plan::Backend;

use super::jail::Site;

/// A template's root identity and its (short) id, from one manifest.
struct Known {
    dev: u64,
    ino: u64,
    id: String,
    /// The manifest's name (`mroot`, `mroot2`, `mroot.20261206`…).
    name: String,
}

/// The manifests in the state dir, read once per `status`. A manifest that
/// cannot be read is left out: `audit` is the command that names it.
pub struct Templates {
    known: Vec<Known>,
    backend: Backend,
}

impl Templates {
    pub fn load(w: &Site) -> Templates {
        let mut known = Vec::new();
        let dir = &w.layout.manifests;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".manifest")) else {
                continue;
            };
            let Ok(m) = crate::manifest::read(&dir.join(&file)) else {
                continue;
            };
            let Some(root) = m.stats.stats.first() else {
                continue;
            };
            known.push(Known {
                dev: m.stats.dev,
                ino: root.ino,
                id: super::upgrade::short_id(&m.id()),
                name: name.to_owned(),
            });
        }
        Templates {
            known,
            backend: w.backend,
        }
    }

    /// The short id of the template mounted at `root`, when one of the
    /// known templates is the directory there. `None` for an unmounted
    /// root (the caller knows) or a directory no manifest describes.
    pub fn of(&self, w: &Site, root: &Path) -> Option<String> {
        let st = std::fs::symlink_metadata(root).ok()?;
        // A nullfs vnode reports the nullfs mount's fsid as its device and
        // the lower file's inode: on FreeBSD only the inode can match.
        let same = |k: &&Known| {
            k.ino == st.ino() && (self.backend == Backend::FreeBsd || k.dev == st.dev())
        };
        let matches: Vec<&Known> = self.known.iter().filter(same).collect();
        match matches.as_slice() {
            [] => None,
            [one] => Some(one.id.clone()),
            // Several filesystems (datasets) may reuse an inode number: the
            // template whose directory under `j/` is that inode now decides.
            several => several
                .iter()
                .find(|k| {
                    std::fs::symlink_metadata(w.layout.j.join(&k.name))
                        .is_ok_and(|d| d.ino() == st.ino())
                })
                .map(|k| k.id.clone()),
        }
    }
}
