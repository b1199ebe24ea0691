//! Export of a manifest as an mtree(5) specification, with SHA-256 digests read from the template and checked against the manifest first.
//!
//! The spec uses the classic hierarchical form (a directory line makes it
//! current, `..` goes back up) that every mtree reads: FreeBSD's and
//! NetBSD's `mtree -p DIR -f SPEC`, Debian's `mtree-netbsd`, libarchive.
//! Each line carries its keywords explicitly (no `/set`), names and link
//! targets are escaped as `\ooo` octal outside a small safe set (mtree
//! unescapes them with unvis(3); glob characters must not stay bare).
//!
//! `time` is written for everything but directories: a directory's mtime
//! changes whenever a carry-over path is moved in or out, which is by
//! design. Excluded carry-over paths get `ignore optional`, so their
//! contents (and their absence) are not reported.

use std::fmt::Write as _;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat};
use rayon::prelude::*;
use sha2::Digest as _;

use super::hash::{self, Sink};
use super::walk::Meta;
use super::{Kind, Manifest, ManifestError, hex};

struct Both {
    blake3: blake3::Hasher,
    sha256: sha2::Sha256,
}

impl Sink for Both {
    fn update(&mut self, data: &[u8]) {
        self.blake3.update(data);
        self.sha256.update(data);
    }
}

/// The SHA-256 (hex) of entry `i`'s file, after checking that its data
/// still is what the manifest says: the spec must never vouch for drifted bytes.
fn sha256_of(dir: &Path, m: &Manifest, i: usize) -> Result<String, ManifestError> {
    use std::os::unix::ffi::OsStrExt;
    let e = &m.entries[i];
    let Kind::File { size, blake3 } = &e.kind else {
        return Ok(String::new());
    };
    let path = dir.join(std::ffi::OsStr::from_bytes(&e.path));
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    let fd: OwnedFd = open(&path, flags, Mode::empty()).map_err(|e| ManifestError::Open {
        path: path.clone(),
        source: e.into(),
    })?;
    let file = File::from(fd);
    let st = fstat(&file).map_err(|e| ManifestError::Stat {
        path: path.clone(),
        source: e.into(),
    })?;
    let meta = Meta::from(&st);
    if !meta.is(SFlag::S_IFREG) {
        return Err(ManifestError::Drifted {
            path,
            what: "not a regular file".into(),
        });
    }
    let mut both = Both {
        blake3: blake3::Hasher::new(),
        sha256: sha2::Sha256::new(),
    };
    let n = hash::feed(&file, meta.size, &mut both).map_err(|source| ManifestError::Hash {
        path: path.clone(),
        source,
    })?;
    if n != *size || both.blake3.finalize().as_bytes() != blake3 {
        return Err(ManifestError::Drifted {
            path,
            what: "content".into(),
        });
    }
    Ok(hex(both.sha256.finalize().as_slice()))
}

/// `bytes` escaped for an mtree name or link value.
fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"._-+,:@%~^".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\{b:03o}");
        }
    }
    s
}

fn name_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// The mtree(5) spec of template `title` at `dir` per manifest `m`.
/// Reads every file once (in parallel) for its SHA-256; fails with
/// [`ManifestError::Drifted`] if any file no longer matches the manifest.
pub fn export(dir: &Path, m: &Manifest, title: &str) -> Result<String, ManifestError> {
    let digests: Vec<String> = (0..m.entries.len())
        .into_par_iter()
        .map(|i| sha256_of(dir, m, i))
        .collect::<Result<_, _>>()?;
    // Children of each directory entry, in name order (the manifest's order
    // sorts whole paths, where `a-b` comes before `a/b`).
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); m.entries.len()];
    for i in 1..m.entries.len() {
        if let Some(p) = m.find(parent_of(&m.entries[i].path)) {
            children[p].push(i);
        }
    }
    for c in &mut children {
        c.sort_by(|&a, &b| name_of(&m.entries[a].path).cmp(name_of(&m.entries[b].path)));
    }
    let mut ignored: Vec<Vec<&[u8]>> = vec![Vec::new(); m.entries.len()];
    for x in &m.excluded {
        if let Some(p) = m.find(parent_of(x)) {
            ignored[p].push(name_of(x));
        }
    }

    let mut out = String::new();
    let _ = writeln!(out, "#mtree");
    let mut name = String::new();
    super::escape_into(&mut name, title.as_bytes());
    let _ = writeln!(out, "# jailtx manifest of {name}");
    let _ = writeln!(out, "# template id {}", m.id());
    let mut tree = String::new();
    super::escape_into(&mut tree, dir.as_os_str().as_encoded_bytes());
    let _ = writeln!(out, "# tree {tree}");
    let _ = writeln!(out);
    // Iterative depth-first walk: (directory, next child position).
    let line = |out: &mut String, i: usize, indent: &str| {
        let e = &m.entries[i];
        let name = if i == 0 {
            ".".to_string()
        } else {
            escape(name_of(&e.path))
        };
        let data = m.resolve(i);
        let t = &m.stats.stats[i];
        let _ = write!(out, "{indent}{name:<15} type=");
        let _ = match &data.kind {
            Kind::Dir => write!(out, "dir"),
            Kind::File { size, .. } => write!(out, "file size={size}"),
            Kind::Symlink { target } => write!(out, "link link={}", escape(target)),
            Kind::Fifo => write!(out, "fifo"),
            Kind::Socket => write!(out, "socket"),
            Kind::CharDevice { rdev } => write!(out, "char device={rdev:#x}"),
            Kind::BlockDevice { rdev } => write!(out, "block device={rdev:#x}"),
            // `resolve` never returns a hard link (decode checks it).
            Kind::HardLink { .. } => write!(out, "file"),
        };
        let _ = write!(out, " mode={:04o} uid={} gid={}", e.mode, e.uid, e.gid);
        if data.kind != Kind::Dir && t.mtime_ns >= 0 {
            let (s, ns) = (t.mtime_ns / 1_000_000_000, t.mtime_ns % 1_000_000_000);
            let _ = write!(out, " time={s}.{ns:09}");
        }
        if matches!(data.kind, Kind::File { .. }) {
            let di = m.find(&data.path).unwrap_or(i);
            let _ = write!(out, " sha256digest={}", digests[di]);
        }
        out.push('\n');
    };
    line(&mut out, 0, "");
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    while let Some((d, pos)) = stack.pop() {
        let kids = &children[d];
        if pos == 0 {
            for &c in kids.iter().filter(|&&c| m.entries[c].kind != Kind::Dir) {
                line(&mut out, c, "    ");
            }
            for name in &ignored[d] {
                let _ = writeln!(out, "    {:<15} ignore optional", escape(name));
            }
        }
        let next = kids[pos..]
            .iter()
            .position(|&c| m.entries[c].kind == Kind::Dir)
            .map(|k| pos + k);
        match next {
            Some(k) => {
                stack.push((d, k + 1));
                let c = kids[k];
                line(&mut out, c, "");
                stack.push((c, 0));
            }
            None => {
                let _ = writeln!(out, "..");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_octal_outside_the_safe_set() {
        assert_eq!(escape(b"ls"), "ls");
        assert_eq!(
            escape(b"a b#*[=\\\n\xff"),
            "a\\040b\\043\\052\\133\\075\\134\\012\\377"
        );
        assert_eq!(escape(b"libc.so.7"), "libc.so.7");
    }
}
