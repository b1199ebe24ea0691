//! The entries of an `etc` tree: a template's pristine copy (host-owned, read plainly) or a jail's (read only through `fs::beneath`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::fs::FsError;
use crate::fs::beneath::{DirFd, Kind, Stat};

/// One entry, as far as a merge cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        bytes: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link(PathBuf),
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A fifo, socket or device node: never merged.
    Special,
}

impl Node {
    /// Same contents (file bytes, link target, both directories); modes and
    /// owners aside.
    pub fn same(a: Option<&Node>, b: Option<&Node>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(Node::File { bytes: x, .. }), Some(Node::File { bytes: y, .. })) => x == y,
            (Some(Node::Link(x)), Some(Node::Link(y))) => x == y,
            (Some(Node::Dir { .. }), Some(Node::Dir { .. })) => true,
            _ => false,
        }
    }

    /// Same contents and, for files, the same mode: the world changed
    /// nothing the merge carries over. Owners aside (a jail's files keep
    /// their own), and so are directories' modes (directories are only
    /// ever added, never changed).
    pub fn identical(a: Option<&Node>, b: Option<&Node>) -> bool {
        Node::same(a, b) && Node::mode(a) == Node::mode(b)
    }

    /// A file's permission bits; `None` for anything else.
    pub fn mode(n: Option<&Node>) -> Option<u32> {
        match n {
            Some(Node::File { mode, .. }) => Some(*mode),
            _ => None,
        }
    }

    /// The three-way rule for a file's mode: ours' (`o`) unless it equals
    /// base's, then theirs' (`t`). A base that is not a file never equals
    /// ours, so the admin's mode stays.
    pub fn merged_mode(o: u32, b: Option<&Node>, t: u32) -> u32 {
        if Node::mode(b) == Some(o) { t } else { o }
    }

    pub fn is_dir(n: Option<&Node>) -> bool {
        matches!(n, Some(Node::Dir { .. }))
    }

    pub fn what(n: Option<&Node>) -> &'static str {
        match n {
            None => "nothing",
            Some(Node::File { .. }) => "a file",
            Some(Node::Link(_)) => "a symlink",
            Some(Node::Dir { .. }) => "a directory",
            Some(Node::Special) => "a special file",
        }
    }
}

/// Every entry below a directory, by path relative to it; parents sort
/// before their children.
pub type Tree = BTreeMap<PathBuf, Node>;

/// Reads a template's pristine `etc`: host-owned and read-only to jails, so
/// plain path-based calls are fine (symlinks are still never followed).
pub fn load(dir: &Path) -> std::io::Result<Tree> {
    let mut out = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(dir.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let p = dir.join(&r);
            let m = std::fs::symlink_metadata(&p)?;
            let (mode, uid, gid) = (m.mode() & 0o7777, m.uid(), m.gid());
            let node = if m.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&p)?)
            } else if m.is_dir() {
                stack.push(r.clone());
                Node::Dir { mode, uid, gid }
            } else if m.is_file() {
                Node::File {
                    bytes: std::fs::read(&p)?,
                    mode,
                    uid,
                    gid,
                }
            } else {
                Node::Special
            };
            out.insert(r, node);
        }
    }
    Ok(out)
}

/// The identity of a pristine tree: BLAKE3 over every entry's path, kind,
/// mode and contents. Two templates with the same id have the same `etc`, so
/// either serves as the other's base; the id survives every rename.
pub fn id(tree: &Tree) -> String {
    let mut h = blake3::Hasher::new();
    for (rel, node) in tree {
        h.update(rel.as_os_str().as_bytes());
        h.update(&[0]);
        match node {
            Node::File { bytes, mode, .. } => {
                h.update(b"f");
                h.update(&mode.to_le_bytes());
                h.update(&(bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            Node::Link(t) => {
                h.update(b"l");
                h.update(&(t.as_os_str().len() as u64).to_le_bytes());
                h.update(t.as_os_str().as_bytes());
            }
            Node::Dir { mode, .. } => {
                h.update(b"d");
                h.update(&mode.to_le_bytes());
            }
            Node::Special => {
                h.update(b"s");
            }
        }
    }
    h.finalize().to_hex().to_string()
}

/// Entry `name` of a jail-writable directory, read without following it.
/// A file too large to merge comes back as the refusal it is.
pub fn read_ours(dir: &DirFd, name: &OsStr) -> Result<Option<(Node, Stat)>, FsError> {
    let Some(st) = dir.stat(name)? else {
        return Ok(None);
    };
    let node = match st.kind {
        Kind::File => {
            let (bytes, st) = dir.read(name)?;
            return Ok(Some((
                Node::File {
                    bytes,
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                },
                st,
            )));
        }
        Kind::Symlink => Node::Link(dir.read_link(name)?),
        Kind::Dir => Node::Dir {
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
        },
        Kind::Special => Node::Special,
    };
    Ok(Some((node, st)))
}

/// Proposals (`*.jailtx-merge`) waiting below `dir`, relative to it. Best
/// effort: a directory that cannot be entered safely is skipped (the merge
/// reports it where it matters).
pub fn proposals(dir: &DirFd, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, Option<DirFd>)> = vec![(PathBuf::new(), None)];
    while let Some((rel, fd)) = stack.pop() {
        let here = match &fd {
            Some(d) => d,
            None => dir,
        };
        let Ok(names) = here.names() else { continue };
        for n in names {
            let Ok(Some(st)) = here.stat(&n) else {
                continue;
            };
            match st.kind {
                Kind::Dir if stack.len() < 64 => {
                    if let Ok(Some(sub)) = here.subdir(&n) {
                        stack.push((rel.join(&n), Some(sub)));
                    }
                }
                Kind::File | Kind::Symlink if n.as_bytes().ends_with(suffix.as_bytes()) => {
                    out.push(rel.join(&n));
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}
