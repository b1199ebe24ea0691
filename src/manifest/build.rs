//! Building a manifest from a template tree: walk, hash every file once per inode, group hard links.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;

use super::settle::{FsClock, RootClock, settle};
use super::walk::{self, Node, Options};
use super::{Entry, Kind, Manifest, ManifestError, Stat, StatCache, exclude_keys};

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
    // Taken before any file is read: see `settle` for why that order.
    let mut clock = RootClock::open(dir);
    let floor = clock.floor();
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
    let racy_ns = settle(&mut nodes, floor, &mut clock, &mut |n| walk::rehash(dir, n))?;
    let dev = nodes.first().map_or(0, |n| n.meta.dev);
    from_nodes(dir, excluded, nodes, dev, racy_ns)
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

    /// Issue 15: the build waited a fixed second for racy files on every
    /// filesystem. Files written right before the build are settled in one
    /// tick of the filesystem's clock, and a same-size rewrite with its
    /// mtime put back right after the build is still caught by `--quick`.
    #[test]
    fn a_tree_written_just_before_is_settled_without_a_fixed_second() {
        use crate::manifest::audit;
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("etc")).unwrap();
        for i in 0..50 {
            std::fs::write(t.join(format!("etc/f{i}")), format!("file {i:03}")).unwrap();
        }
        let started = std::time::Instant::now();
        let m = build(&t, &[]).unwrap();
        let took = started.elapsed();
        // The old sleep alone was a second; a tick is 1-10 ms (none with
        // multigrain timestamps). Generous for a loaded machine.
        assert!(took < std::time::Duration::from_millis(600), "{took:?}");
        let q = audit::quick(&t, &m).unwrap();
        assert_eq!(
            (q.hashed_files, q.is_clean()),
            (0, true),
            "nothing left racy"
        );

        let f = t.join("etc/f7");
        let before = nix::sys::stat::stat(&f).unwrap();
        std::fs::write(&f, b"FILE 007").unwrap();
        let mtime = nix::sys::time::TimeSpec::new(before.st_mtime, before.st_mtime_nsec);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &f,
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        let after = nix::sys::stat::stat(&f).unwrap();
        assert_eq!(
            (after.st_size, after.st_mtime_nsec),
            (before.st_size, before.st_mtime_nsec)
        );
        let q = audit::quick(&t, &m).unwrap();
        assert_eq!(q.hashed_files, 1, "only the rewritten file is read");
        assert_eq!(
            q.differences
                .iter()
                .map(|d| (d.path.as_str(), d.kind))
                .collect::<Vec<_>>(),
            [("/etc/f7", super::super::DiffKind::Content)]
        );
    }

    /// The racy rule as `--quick` applies it: a file whose cached ctime is
    /// at or after the stored threshold is hashed even though its stat
    /// matches, so a change its stat cannot show is still found.
    #[test]
    fn quick_hashes_a_file_marked_racy_whatever_its_stat() {
        use crate::manifest::audit;
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("a"), b"aaa").unwrap();
        std::fs::write(t.join("b"), b"bbb").unwrap();
        let mut m = build(&t, &[]).unwrap();
        // As if `b` had been rewritten (same size) within the tick its
        // hash was taken in: the manifest's hash is not the data's, and
        // the stat says nothing changed.
        let i = m.find(b"b").unwrap();
        m.entries[i].kind = Kind::File {
            size: 3,
            blake3: *blake3::hash(b"xxx").as_bytes(),
        };
        assert!(
            audit::quick(&t, &m).unwrap().is_clean(),
            "trusted while clean"
        );
        m.stats.racy_ns = m.stats.stats[i].ctime_ns;
        let q = audit::quick(&t, &m).unwrap();
        // `a` too when it was stamped in the same tick as `b`.
        let racy = m
            .stats
            .stats
            .iter()
            .skip(1)
            .filter(|s| s.ctime_ns >= m.stats.racy_ns);
        assert_eq!(q.hashed_files, racy.count() as u64, "only the racy files");
        assert_eq!(
            q.differences
                .iter()
                .map(|d| d.path.as_str())
                .collect::<Vec<_>>(),
            ["/b"]
        );
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
