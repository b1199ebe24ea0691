//! Template manifests: what a template held when jailtx built it (BLAKE3 per file), stored in the state dir and checked by `audit`.
//!
//! A manifest has two parts. The *content* (every path's type, mode, owner,
//! size, BLAKE3 of its data, link target, device number, and the excluded
//! carry-over paths) is what the template *is*; its BLAKE3 is the template
//! id. The *stat cache* (inode, mtime, ctime per path, the device) is only
//! how `audit --quick` knows, like git's index, which files it can skip
//! hashing; it is kept out of the id, so a template copied elsewhere keeps
//! its id. The file format is in [`format`] and `docs/audit.md`.

pub mod audit;
mod build;
pub mod format;
mod hash;
pub mod last_audit;
pub mod mtree;
mod report;
mod settle;
mod walk;

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::FsError;

pub use audit::Mode;
pub use build::{build, build_with};
pub use format::DecodeError;
pub use report::{DiffKind, Difference, Report, human_bytes};
pub use walk::Progress;

/// Error of every manifest operation; each names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("template directory {path} does not exist")]
    NoTemplate { path: PathBuf },
    #[error("{path} is not a directory (never followed: a template root must be a real directory)")]
    NotADirectory { path: PathBuf },
    #[error(
        "no manifest at {path}; jailtx writes one when it builds a template (`jailtx template build`, `jailtx upgrade`)"
    )]
    Missing { path: PathBuf },
    /// A manifest file jailtx did not write (a symlink, a fifo, too big…).
    #[error(transparent)]
    Unsafe(#[from] crate::fs::statefile::StateFileError),
    #[error("read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "manifest {path} is corrupt: {source}; restore it from a backup, or rebuild the template with `jailtx upgrade`"
    )]
    Corrupt { path: PathBuf, source: DecodeError },
    #[error("exclude path {path:?} must be relative to the template, without `.` or `..`")]
    BadExclude { path: PathBuf },
    #[error("stat {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {path}: {source}")]
    Hash {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read symlink {path}: {source}")]
    ReadLink {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} changed while it was being read; run again when nothing writes to the template"
    )]
    Changed { path: PathBuf },
    #[error(
        "{path} does not match the manifest ({what}); run `jailtx audit` to see how the template drifted"
    )]
    Drifted { path: PathBuf, what: String },
    #[error("encode manifest: {0}")]
    Encode(String),
    #[error(transparent)]
    Write(#[from] FsError),
}

/// What a path is. A hard link names the first path (in manifest order)
/// of the same inode; size and digest live with that first entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File {
        size: u64,
        blake3: [u8; 32],
    },
    Symlink {
        #[serde(with = "raw_bytes")]
        target: Vec<u8>,
    },
    HardLink {
        #[serde(with = "raw_bytes")]
        to: Vec<u8>,
    },
    Fifo,
    Socket,
    CharDevice {
        rdev: u64,
    },
    BlockDevice {
        rdev: u64,
    },
}

impl Kind {
    /// The type word used in reports (a hard link reports as what it links to).
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File { .. } => "file",
            Kind::Symlink { .. } => "symlink",
            Kind::HardLink { .. } => "hard link",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDevice { .. } => "char device",
            Kind::BlockDevice { .. } => "block device",
        }
    }
}

/// One path of a template. `path` is relative to the template root, `/`
/// separated, raw bytes (file names need not be UTF-8); the root is `""`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "raw_bytes")]
    pub path: Vec<u8>,
    /// Permission bits including setuid, setgid and sticky (`& 0o7777`).
    pub mode: u32,
    /// Numeric owner and group: names would need lookups in the template's
    /// own passwd, and cost a walk four times its time.
    pub uid: u32,
    pub gid: u32,
    pub kind: Kind,
}

/// A path's `--quick` fingerprint (same index as its entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// The stat-cache section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatCache {
    /// st_dev of the template root when it was built.
    pub dev: u64,
    /// Files whose ctime is at or after this instant (ns since the epoch)
    /// are "racily clean" (git's term): they may have changed again within
    /// one timestamp tick of being read, so `--quick` always hashes them.
    /// Set to a ctime the template's filesystem stamped before the files
    /// were read (see `settle`); where it cannot be measured, the instant
    /// they were read less one second.
    pub racy_ns: i64,
    pub stats: Vec<Stat>,
}

/// A template's manifest. Invariants (checked by [`Manifest::decode`],
/// upheld by [`build`]): entries are sorted by path bytes, unique, the first
/// is the root directory `""`, every other entry's parent is an earlier
/// directory entry, a hard link points at an earlier non-directory,
/// non-hard-link entry, and `stats` has one element per entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Carry-over paths left out, relative to the template, sorted.
    pub excluded: Vec<Vec<u8>>,
    pub entries: Vec<Entry>,
    pub stats: StatCache,
}

impl Manifest {
    /// The template id: BLAKE3 of the encoded content section (hex).
    pub fn id(&self) -> String {
        format::content_id(self)
    }

    /// The file bytes: header, content, stat cache, checksum.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestError> {
        format::encode(self)
    }

    /// Parses and checks file bytes. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        format::decode(bytes)
    }

    /// The index of `path`'s entry.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.path.as_slice().cmp(path))
            .ok()
    }

    /// The entry holding `i`'s data: itself, or the one a hard link names.
    pub fn resolve(&self, i: usize) -> &Entry {
        let e = &self.entries[i];
        match &e.kind {
            Kind::HardLink { to } => self.find(to).map_or(e, |j| &self.entries[j]),
            _ => e,
        }
    }

    /// Bytes of file data a full audit reads (hard links counted once).
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Byte strings through serde as bytes rather than as a sequence of u8.
/// Postcard writes both the same way (varint length, then the bytes), so
/// the format is unchanged; decoding a path becomes one copy instead of a
/// visitor call per byte, a third of the time it takes to read a manifest.
mod raw_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        /// Self-describing formats (JSON) hand bytes over as a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

/// Where the manifest of the template directory named `template_dir_name`
/// (`mroot`, `mroot2`, `mroot.20261129`) lives: `manifests/NAME.manifest`.
/// A plan that renames a template directory renames this file with it.
pub fn path_for(manifests_dir: &Path, template_dir_name: &str) -> PathBuf {
    manifests_dir.join(format!("{template_dir_name}.manifest"))
}

/// Reads and checks a manifest file. A missing file, a checksum mismatch or
/// a malformed body is an error naming the path: never "everything drifted".
pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
    // Checked and capped (fs::statefile): a planted link, fifo or huge
    // file is refused naming it, unread.
    let bytes = crate::fs::statefile::read(path, crate::fs::statefile::Kind::Manifest)?
        .ok_or_else(|| ManifestError::Missing {
            path: path.to_owned(),
        })?;
    Manifest::decode(&bytes).map_err(|source| ManifestError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// Writes `m` to `path` atomically and durably (temp, fsync, rename, fsync
/// dir): after a crash `path` holds the old manifest or the new, whole.
pub fn write(path: &Path, m: &Manifest) -> Result<(), ManifestError> {
    let bytes = m.encode()?;
    crate::fs::write_atomic(path, &bytes, 0o600)?;
    Ok(())
}

/// The template id recorded in a manifest file (for `status`, `history`).
pub fn template_id(manifest_file: &Path) -> Result<String, ManifestError> {
    read(manifest_file).map(|m| m.id())
}

/// Exclude paths (relative, plain components) as the `/`-joined bytes the
/// manifest stores, sorted and deduplicated.
pub(crate) fn exclude_keys(exclude: &[PathBuf]) -> Result<Vec<Vec<u8>>, ManifestError> {
    use std::os::unix::ffi::OsStrExt;
    let mut keys = Vec::with_capacity(exclude.len());
    for p in exclude {
        let mut key = Vec::new();
        for c in p.components() {
            let Component::Normal(name) = c else {
                return Err(ManifestError::BadExclude { path: p.clone() });
            };
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(name.as_bytes());
        }
        if key.is_empty() {
            return Err(ManifestError::BadExclude { path: p.clone() });
        }
        keys.push(key);
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// `path` as an operator reads it inside a jail: `/usr/bin/su`, `/` for the
/// root. Bytes that are not printable UTF-8 become `\xNN`, so a hostile
/// file name cannot inject terminal escapes into a report.
pub fn display_path(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    escape_into(&mut out, path);
    out
}

/// Appends `bytes` with control characters and invalid UTF-8 as `\xNN`.
pub(crate) fn escape_into(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() || c == '\\' {
                if c == '\\' {
                    out.push_str("\\\\");
                } else {
                    for b in c.to_string().bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_path_is_keyed_by_the_template_dir_name() {
        let m = Path::new("/var/db/jailtx/manifests");
        assert_eq!(
            path_for(m, "mroot.20261129"),
            Path::new("/var/db/jailtx/manifests/mroot.20261129.manifest")
        );
    }

    #[test]
    fn excludes_must_be_plain_relative_paths() {
        let ok = exclude_keys(&["usr/ports".into(), "usr/src/".into(), "usr/ports".into()]);
        assert_eq!(
            ok.unwrap(),
            vec![b"usr/ports".to_vec(), b"usr/src".to_vec()]
        );
        for bad in ["/usr/ports", "../x", "usr/../x", "", "./x"] {
            assert!(exclude_keys(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_names_are_escaped_for_display() {
        assert_eq!(display_path(b""), "/");
        assert_eq!(display_path(b"etc/rc"), "/etc/rc");
        assert_eq!(display_path(b"a\x1b[2Jb"), "/a\\x1b[2Jb");
        assert_eq!(display_path(b"caf\xc3\xa9\xff"), "/caf\u{e9}\\xff");
        assert_eq!(display_path(b"back\\slash"), "/back\\\\slash");
    }
}
