//! Auditing a template against its manifest: walk it (hashing all files, or with `--quick` only those whose stat changed) and list every difference.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::stat::SFlag;
use rayon::prelude::*;
use serde::Serialize;

use super::report::{DiffKind, Difference, Report};
use super::walk::{self, Meta, Node, Options, Progress};
use super::{Kind, Manifest, ManifestError, display_path, hex};

/// How much of the template's data an audit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Hash every file: proves the data.
    Full,
    /// Hash only files whose size, mtime, ctime or inode differs from the
    /// stat cache (or that were racily clean at build time). Trusts that
    /// nobody rewrote a file and reset both its times: a ctime can only be
    /// forged by setting the system clock.
    Quick,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
        }
    }
}

/// Full audit of the template at `dir` against `m`.
pub fn full(dir: &Path, m: &Manifest) -> Result<Report, ManifestError> {
    run(dir, m, Mode::Full, &())
}

/// Quick audit: metadata of everything, data of what the stat cache says changed.
pub fn quick(dir: &Path, m: &Manifest) -> Result<Report, ManifestError> {
    run(dir, m, Mode::Quick, &())
}

/// Whether the stat cache vouches for entry `i`'s data, given what lstat says now.
fn cache_hit(m: &Manifest, i: usize, now: &Meta, size: u64) -> bool {
    let s = &m.stats.stats[i];
    let racy = m.stats.racy_ns;
    now.size == size
        && now.ino == s.ino
        && now.dev == m.stats.dev
        && now.mtime_ns == s.mtime_ns
        && now.ctime_ns == s.ctime_ns
        // Writing data always sets the ctime (an mtime can be set back with
        // utimes, which itself sets the ctime), so the ctime alone decides.
        && s.ctime_ns < racy
}

/// Audits the template at `dir` against `m`, reporting hashed bytes to `progress`.
pub fn run(
    dir: &Path,
    m: &Manifest,
    mode: Mode,
    progress: &dyn Progress,
) -> Result<Report, ManifestError> {
    // The walk matches every node with its entry (in parallel, so the
    // comparison after it need not).
    let wanted = |n: &Node| wanted(m, mode, n);
    let walked = walk::walk(
        dir,
        &Options {
            exclude: &m.excluded,
            entries: &m.entries,
            hash: &wanted,
            // A full audit hashes nearly every file; a quick one few.
            open_first: mode == Mode::Full,
            progress,
        },
    )?;
    let mut report = Report {
        mode,
        entries: m.entries.len(),
        found: walked.nodes.len(),
        hashed_files: walked.hashed_files,
        hashed_bytes: walked.hashed_bytes,
        differences: Vec::new(),
    };
    Compare::new(dir, m, mode, &walked.nodes).run(&mut report)?;
    // Freeing ~20,000 paths takes a millisecond the report need not wait for.
    rayon::spawn(move || drop(walked));
    report.sort();
    Ok(report)
}

/// Whether the audit hashes regular file `n`. Only files the manifest has
/// as files are: an added file is reported as added whatever its data, and
/// a type change needs no data.
fn wanted(m: &Manifest, mode: Mode, n: &Node) -> bool {
    let Some(i) = n.entry else {
        return false;
    };
    match m.resolve(i).kind {
        Kind::File { size, .. } => mode == Mode::Full || !cache_hit(m, i, &n.meta, size),
        _ => false,
    }
}

/// Type word of what the walk found.
fn node_type(meta: &Meta) -> &'static str {
    match meta.file_type() {
        SFlag::S_IFDIR => "dir",
        SFlag::S_IFREG => "file",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFCHR => "char device",
        SFlag::S_IFBLK => "block device",
        _ => "socket",
    }
}

/// The type word of a manifest kind (a hard link's is its target's).
fn kind_type(k: &Kind) -> &'static str {
    k.name()
}

fn short(h: &[u8; 32]) -> String {
    hex(&h[..8])
}

fn dev(rdev: u64) -> String {
    // major/minor as Linux splits them (FreeBSD's split differs, but this is
    // only display: the comparison uses the whole number).
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
    format!("{major},{minor}")
}

struct Compare<'a> {
    dir: &'a Path,
    m: &'a Manifest,
    mode: Mode,
    nodes: &'a [Node],
    /// Manifest entry -> node at the same path.
    node_of: Vec<Option<usize>>,
    /// Hard-link group (the entry a hard link names, or itself) -> its
    /// first member that is present now as a non-directory.
    first_present: Vec<Option<usize>>,
    /// (dev, ino) of multiply-linked nodes -> the node with the least path.
    first_node: HashMap<(u64, u64), usize>,
}

impl<'a> Compare<'a> {
    fn new(dir: &'a Path, m: &'a Manifest, mode: Mode, nodes: &'a [Node]) -> Self {
        let mut c = Compare {
            dir,
            m,
            mode,
            nodes,
            node_of: vec![None; m.entries.len()],
            first_present: vec![None; m.entries.len()],
            first_node: HashMap::new(),
        };
        for (j, n) in nodes.iter().enumerate() {
            if let Some(i) = n.entry {
                c.node_of[i] = Some(j);
            }
            if n.meta.nlink > 1 && !n.meta.is(SFlag::S_IFDIR) {
                c.first_node
                    .entry((n.meta.dev, n.meta.ino))
                    .and_modify(|k| {
                        if n.path < nodes[*k].path {
                            *k = j;
                        }
                    })
                    .or_insert(j);
            }
        }
        // Entries are sorted, so the first present member of each group is
        // the least path, as on the nodes' side.
        for i in 0..m.entries.len() {
            let present = c.node_of[i].is_some_and(|j| !nodes[j].meta.is(SFlag::S_IFDIR));
            if present {
                let g = c.group(i);
                c.first_present[g].get_or_insert(i);
            }
        }
        c
    }

    fn group(&self, i: usize) -> usize {
        match &self.m.entries[i].kind {
            Kind::HardLink { to } => self.m.find(to).unwrap_or(i),
            _ => i,
        }
    }

    /// The path whose inode node `j` shares (its own path if none).
    fn inode_leader(&self, j: usize) -> &'a [u8] {
        let n = &self.nodes[j];
        if n.meta.nlink <= 1 {
            return &n.path;
        }
        let k = self
            .first_node
            .get(&(n.meta.dev, n.meta.ino))
            .copied()
            .unwrap_or(j);
        &self.nodes[k].path
    }

    fn describe_entry(&self, i: usize) -> String {
        let e = &self.m.entries[i];
        let own = format!("{:04o} {}:{}", e.mode, e.uid, e.gid);
        match &e.kind {
            Kind::File { size, blake3 } => {
                format!("file {own}, {size} bytes, blake3 {}", short(blake3))
            }
            Kind::Symlink { target } => format!("symlink -> {}", lossy(target)),
            Kind::HardLink { to } => format!("hard link to {} ({own})", display_path(to)),
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } => {
                format!("{} {} {own}", e.kind.name(), dev(*rdev))
            }
            k => format!("{} {own}", k.name()),
        }
    }

    fn describe_node(&self, j: usize) -> String {
        let n = &self.nodes[j];
        let m = &n.meta;
        let own = format!("{:04o} {}:{}", m.mode & 0o7777, m.uid, m.gid);
        let leader = self.inode_leader(j);
        if leader != n.path.as_slice() {
            return format!("hard link to {} ({own})", display_path(leader));
        }
        match m.file_type() {
            SFlag::S_IFREG => format!("file {own}, {} bytes", m.size),
            SFlag::S_IFLNK => format!(
                "symlink -> {}",
                lossy(n.target.as_deref().unwrap_or_default())
            ),
            SFlag::S_IFCHR | SFlag::S_IFBLK => {
                format!("{} {} {own}", node_type(m), dev(m.rdev))
            }
            _ => format!("{} {own}", node_type(m)),
        }
    }

    fn run(&self, r: &mut Report) -> Result<(), ManifestError> {
        // The entries in parallel: the ~20,000 comparisons of a clean
        // template come after the walk, when nothing else is left to run.
        // The order is the report's sort's business.
        let found = (0..self.m.entries.len())
            .into_par_iter()
            .with_min_len(1024)
            .try_fold(Vec::new, |mut out, i| {
                self.entry(i, &mut out)?;
                Ok::<_, ManifestError>(out)
            })
            .try_reduce(Vec::new, |mut a, mut b| {
                a.append(&mut b);
                Ok(a)
            })?;
        r.differences.extend(found);
        for (j, n) in self.nodes.iter().enumerate() {
            // A node with an entry is that entry's (paths are unique).
            if n.entry.is_some() {
                continue;
            }
            r.differences.push(Difference {
                path: display_path(&n.path),
                kind: DiffKind::Added,
                new_setid: n.meta.is_setid_file(),
                expected: None,
                actual: Some(self.describe_node(j)),
            });
            if n.foreign {
                r.differences.push(mount_diff(n));
            }
        }
        Ok(())
    }

    /// Differences at manifest entry `i`.
    fn entry(&self, i: usize, out: &mut Vec<Difference>) -> Result<(), ManifestError> {
        let Some(j) = self.node_of[i] else {
            out.push(Difference {
                path: display_path(&self.m.entries[i].path),
                kind: DiffKind::Removed,
                new_setid: false,
                expected: Some(self.describe_entry(i)),
                actual: None,
            });
            return Ok(());
        };
        let start = out.len();
        self.pair(i, j, out)?;
        // Any difference at a setuid/setgid file makes it one the manifest
        // does not vouch for: flag them all.
        if self.nodes[j].meta.is_setid_file() {
            for d in &mut out[start..] {
                d.new_setid = true;
            }
        }
        Ok(())
    }

    /// Differences between manifest entry `i` and node `j` at the same path.
    fn pair(&self, i: usize, j: usize, out: &mut Vec<Difference>) -> Result<(), ManifestError> {
        let e = &self.m.entries[i];
        let data = self.m.resolve(i);
        let n = &self.nodes[j];
        let now = &n.meta;
        let mut diff = |kind, expected: String, actual: String| {
            out.push(Difference {
                path: display_path(&e.path),
                kind,
                new_setid: false,
                expected: Some(expected),
                actual: Some(actual),
            })
        };
        if n.foreign {
            let d = mount_diff(n);
            diff(
                DiffKind::Mount,
                "not a mount point".into(),
                d.actual.unwrap_or_default(),
            );
        }
        let (want, have) = (kind_type(&data.kind), node_type(now));
        if want != have {
            diff(
                DiffKind::Type,
                self.describe_entry(i),
                self.describe_node(j),
            );
            return Ok(());
        }
        if e.mode != now.mode & 0o7777 {
            diff(
                DiffKind::Mode,
                format!("{:04o}", e.mode),
                format!("{:04o}", now.mode & 0o7777),
            );
        }
        if (e.uid, e.gid) != (now.uid, now.gid) {
            diff(
                DiffKind::Owner,
                format!("{}:{}", e.uid, e.gid),
                format!("{}:{}", now.uid, now.gid),
            );
        }
        match &data.kind {
            Kind::File { size, blake3 } => {
                let got = match n.blake3 {
                    Some(h) => Some(h),
                    // Asked for but not produced: the inode's hashing name
                    // vanished mid-walk. Never report "same" unread data.
                    None if wanted(self.m, self.mode, n) => {
                        return Err(ManifestError::Changed {
                            path: self.dir.join(std::ffi::OsStr::from_bytes(&n.path)),
                        });
                    }
                    None => None,
                };
                let differs = *size != now.size || got.is_some_and(|h| h != *blake3);
                if differs {
                    let actual = match got {
                        Some(h) => format!("{} bytes, blake3 {}", now.size, short(&h)),
                        None => format!("{} bytes", now.size),
                    };
                    diff(
                        DiffKind::Content,
                        format!("{size} bytes, blake3 {}", short(blake3)),
                        actual,
                    );
                }
            }
            Kind::Symlink { target } => {
                let t = n.target.as_deref().unwrap_or_default();
                if t != target.as_slice() {
                    diff(DiffKind::Link, lossy(target), lossy(t));
                }
            }
            Kind::CharDevice { rdev } | Kind::BlockDevice { rdev } if *rdev != now.rdev => {
                diff(DiffKind::Content, dev(*rdev), dev(now.rdev));
            }
            _ => {}
        }
        let first = self.first_present[self.group(i)];
        // A name that heads its group, on an inode of one link: nothing to
        // compare (both sides would name this very path).
        let alone = first == Some(i) && now.nlink <= 1;
        if !now.is(SFlag::S_IFDIR) && !alone {
            // Hard-link structure: the first present name of the manifest's
            // group must be the first name sharing the inode now.
            let expected = first.map_or(e.path.as_slice(), |k| self.m.entries[k].path.as_slice());
            let actual = self.inode_leader(j);
            if expected != actual {
                let say = |p: &[u8]| {
                    if p == n.path.as_slice() {
                        "its own inode".to_string()
                    } else {
                        format!("same inode as {}", display_path(p))
                    }
                };
                diff(DiffKind::Link, say(expected), say(actual));
            }
        }
        Ok(())
    }
}

fn mount_diff(n: &Node) -> Difference {
    Difference {
        path: display_path(&n.path),
        kind: DiffKind::Mount,
        new_setid: false,
        expected: None,
        actual: Some("another filesystem is mounted here; its contents were not audited".into()),
    }
}

/// Link targets for display: escaped like paths, without the leading `/`.
fn lossy(b: &[u8]) -> String {
    let mut s = String::new();
    super::escape_into(&mut s, b);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::build;

    fn kinds(r: &Report) -> Vec<(&str, DiffKind)> {
        r.differences
            .iter()
            .map(|d| (d.path.as_str(), d.kind))
            .collect()
    }

    fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("sub/deep")).unwrap();
        std::fs::create_dir_all(t.join("ports/x")).unwrap();
        std::fs::write(t.join("a"), b"aaa").unwrap();
        std::fs::hard_link(t.join("a"), t.join("b")).unwrap();
        std::fs::write(t.join("sub/deep/c"), b"ccc").unwrap();
        std::os::unix::fs::symlink("a", t.join("link")).unwrap();
        (d, t)
    }

    #[test]
    fn hard_link_groups_compare_by_their_first_present_name() {
        let (_d, t) = tree();
        let m = build(&t, &[]).unwrap();
        assert!(full(&t, &m).unwrap().is_clean());
        // The group's first name goes: the rest of the group is still one
        // inode, so only the removal is reported.
        std::fs::remove_file(t.join("a")).unwrap();
        assert_eq!(kinds(&full(&t, &m).unwrap()), [("/a", DiffKind::Removed)]);
        // A new name for an existing inode is an addition that says so.
        std::fs::hard_link(t.join("b"), t.join("c")).unwrap();
        let r = quick(&t, &m).unwrap();
        assert_eq!(
            kinds(&r),
            [("/a", DiffKind::Removed), ("/c", DiffKind::Added)]
        );
        assert_eq!(
            r.differences[1].actual.as_deref(),
            Some("hard link to /b (0644 0:0)")
        );
    }

    #[test]
    fn a_removed_directory_lists_everything_below_it_and_excludes_stay_out() {
        let (_d, t) = tree();
        let m = build(&t, &["ports".into()]).unwrap();
        std::fs::write(t.join("ports/x/new"), b"moved in").unwrap();
        std::fs::remove_dir_all(t.join("sub")).unwrap();
        assert_eq!(
            kinds(&full(&t, &m).unwrap()),
            [
                ("/sub", DiffKind::Removed),
                ("/sub/deep", DiffKind::Removed),
                ("/sub/deep/c", DiffKind::Removed)
            ]
        );
    }

    #[test]
    fn quick_trusts_the_stat_cache_and_full_does_not() {
        let (_d, t) = tree();
        let m = build(&t, &[]).unwrap();
        let q = quick(&t, &m).unwrap();
        assert_eq!((q.hashed_files, q.is_clean()), (0, true));
        let f = full(&t, &m).unwrap();
        assert_eq!(
            (f.hashed_files, f.is_clean()),
            (2, true),
            "a/b once, c once"
        );
        // A forged stat cache entry (as if the file had been swapped for one
        // with other data and identical times) is what --quick cannot see.
        let mut forged = m.clone();
        let i = forged.find(b"sub/deep/c").unwrap();
        forged.entries[i].kind = Kind::File {
            size: 3,
            blake3: *blake3::hash(b"xxx").as_bytes(),
        };
        assert!(quick(&t, &forged).unwrap().is_clean());
        assert_eq!(
            kinds(&full(&t, &forged).unwrap()),
            [("/sub/deep/c", DiffKind::Content)]
        );
    }
}
