//! Building a manifest from a template tree: walk, hash every file once per inode, group hard links.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::sys::stat::SFlag;

use super::walk::{self, Node, Options};
use super::{Entry, Kind, Manifest, ManifestError, Stat, StatCache, exclude_keys};

/// How far before the instant a file is read its ctime must lie for
/// `--quick` to trust the cached stat: at least one tick of the coarsest
/// timestamp clock in use (Linux's coarse clock ticks every 1-10 ms; some
/// filesystems keep whole seconds). See [`StatCache::racy_ns`].
const RACY_SLACK_NS: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The manifest of the template at `dir`, leaving out `exclude` (paths
/// relative to `dir`, such as the carry-over `usr/ports`) and everything
/// below them. Never follows a symlink, never enters another filesystem
/// (a mount point is recorded as the directory it appears to be).
pub fn build(dir: &Path, exclude: &[PathBuf]) -> Result<Manifest, ManifestError> {
    build_with(dir, exclude, &())
}

/// [`build`], reporting hashed bytes to `progress`.
pub fn build_with(
    dir: &Path,
    exclude: &[PathBuf],
    progress: &dyn walk::Progress,
) -> Result<Manifest, ManifestError> {
    let excluded = exclude_keys(exclude)?;
    let start = now_ns();
    let mut nodes = walk::walk(
        dir,
        &Options {
            exclude: &excluded,
            entries: &[],
            hash: &|_| true,
            open_first: true,
            progress,
        },
    )?
    .nodes;
    nodes.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let racy_ns = settle(dir, &mut nodes, start.saturating_sub(RACY_SLACK_NS))?;
    let dev = nodes.first().map_or(0, |n| n.meta.dev);
    from_nodes(dir, excluded, nodes, dev, racy_ns)
}

/// Rounds of waiting out racily clean files, at most. A file still racy
/// after them (someone keeps writing it) simply stays racy: `--quick`
/// hashes it every time, which is slower, never wrong.
const SETTLE_ROUNDS: usize = 3;

/// Makes racily clean files clean, so that `--quick` does not re-hash them
/// forever (a template's manifest is written once, right after the files
/// were made). A file's cached stat vouches for its hash only if its ctime
/// lies before the instant it was read, less one timestamp tick (see
/// [`StatCache::racy_ns`]). For the few files changed within a tick of the
/// walk (the last ones `populate` copied, typically), this waits until the
/// clock is a tick past their ctime and reads them again: any later change
/// then gives them a new ctime. Returns the threshold to store.
fn settle(dir: &Path, nodes: &mut [Node], mut racy_ns: i64) -> Result<i64, ManifestError> {
    // Only regular files: everything else is compared in full by every audit.
    let is_racy = |n: &Node, t: i64| n.meta.is(SFlag::S_IFREG) && n.meta.ctime_ns >= t;
    for _ in 0..SETTLE_ROUNDS {
        let racy: Vec<usize> = (0..nodes.len())
            .filter(|&i| is_racy(&nodes[i], racy_ns))
            .collect();
        let Some(newest) = racy.iter().map(|&i| nodes[i].meta.ctime_ns).max() else {
            break;
        };
        // A ctime in the future (the clock was set back) is not waited for
        // beyond one tick: those files stay racy.
        let until = newest
            .saturating_add(RACY_SLACK_NS + 1)
            .min(now_ns().saturating_add(RACY_SLACK_NS + 1));
        let wait = until.saturating_sub(now_ns());
        if wait > 0 {
            std::thread::sleep(std::time::Duration::from_nanos(wait as u64));
        }
        let reread = now_ns();
        for &i in &racy {
            walk::rehash(dir, &mut nodes[i])?;
        }
        racy_ns = reread.saturating_sub(RACY_SLACK_NS);
    }
    Ok(racy_ns)
}

fn from_nodes(
    dir: &Path,
    excluded: Vec<Vec<u8>>,
    nodes: Vec<Node>,
    dev: u64,
    racy_ns: i64,
) -> Result<Manifest, ManifestError> {
    // (dev, ino) of a multiply-linked non-directory -> its first path, in
    // sorted order, which the later names point at.
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut entries = Vec::with_capacity(nodes.len());
    let mut stats = Vec::with_capacity(nodes.len());
    for n in nodes {
        let m = n.meta;
        let kind = if m.nlink > 1 && !m.is(SFlag::S_IFDIR) {
            match first.get(&(m.dev, m.ino)) {
                Some(to) => Some(Kind::HardLink { to: to.clone() }),
                None => {
                    first.insert((m.dev, m.ino), n.path.clone());
                    None
                }
            }
        } else {
            None
        };
        let kind = match kind {
            Some(k) => k,
            None => own_kind(dir, &n)?,
        };
        stats.push(Stat {
            ino: m.ino,
            mtime_ns: m.mtime_ns,
            ctime_ns: m.ctime_ns,
        });
        entries.push(Entry {
            path: n.path,
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
            kind,
        });
    }
    let m = Manifest {
        excluded,
        entries,
        stats: StatCache {
            dev,
            racy_ns,
            stats,
        },
    };
    // The walk's output meets every invariant by construction; checking
    // costs a few milliseconds and guarantees we never write a manifest that
    // the next read would refuse.
    super::format::check(&m).map_err(|e| ManifestError::Encode(e.to_string()))?;
    Ok(m)
}

/// The kind of a node that is not a later name of a hard-linked inode.
pub(super) fn own_kind(dir: &Path, n: &Node) -> Result<Kind, ManifestError> {
    let m = &n.meta;
    Ok(match m.file_type() {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File {
            size: m.size,
            blake3: n.blake3.ok_or_else(|| ManifestError::Changed {
                path: dir.join(std::ffi::OsStr::from_bytes(&n.path)),
            })?,
        },
        SFlag::S_IFLNK => Kind::Symlink {
            target: n.target.clone().unwrap_or_default(),
        },
        SFlag::S_IFIFO => Kind::Fifo,
        SFlag::S_IFCHR => Kind::CharDevice { rdev: m.rdev },
        SFlag::S_IFBLK => Kind::BlockDevice { rdev: m.rdev },
        _ => Kind::Socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn builds_every_type_and_groups_hard_links() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("bin")).unwrap();
        std::fs::create_dir_all(t.join("usr/ports/x")).unwrap();
        std::fs::write(t.join("bin/sh"), b"shell").unwrap();
        std::fs::hard_link(t.join("bin/sh"), t.join("bin/test")).unwrap();
        std::fs::write(t.join("bin/su"), b"su").unwrap();
        std::fs::set_permissions(t.join("bin/su"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        symlink("s/etc", t.join("etc")).unwrap();
        nix::unistd::mkfifo(&t.join("fifo"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        let m = build(&t, &["usr/ports".into()]).unwrap();
        let paths: Vec<&[u8]> = m.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(
            paths,
            [
                &b""[..],
                b"bin",
                b"bin/sh",
                b"bin/su",
                b"bin/test",
                b"etc",
                b"fifo",
                b"usr"
            ]
        );
        assert_eq!(m.excluded, vec![b"usr/ports".to_vec()]);
        let k = |p: &[u8]| &m.entries[m.find(p).unwrap()];
        assert_eq!(
            k(b"bin/sh").kind,
            Kind::File {
                size: 5,
                blake3: *blake3::hash(b"shell").as_bytes()
            }
        );
        assert_eq!(
            k(b"bin/test").kind,
            Kind::HardLink {
                to: b"bin/sh".to_vec()
            }
        );
        assert_eq!(k(b"bin/su").mode, 0o4755);
        assert_eq!(
            k(b"etc").kind,
            Kind::Symlink {
                target: b"s/etc".to_vec()
            }
        );
        assert_eq!(k(b"fifo").kind, Kind::Fifo);
        // Deterministic: a second build of the same tree has the same id.
        assert_eq!(build(&t, &["usr/ports".into()]).unwrap().id(), m.id());
    }

    #[test]
    fn a_symlinked_root_is_refused_not_followed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        symlink("real", d.path().join("link")).unwrap();
        assert!(matches!(
            build(&d.path().join("link"), &[]),
            Err(ManifestError::NotADirectory { .. })
        ));
        assert!(matches!(
            build(&d.path().join("absent"), &[]),
            Err(ManifestError::NoTemplate { .. })
        ));
    }
}
