//! The manifest file format: header, postcard content and stat-cache sections, BLAKE3 checksum; decoding checks every invariant.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `JTXMANIF` |
//! | 8 | 2 | format version, u16 LE (1) |
//! | 10 | 2 | reserved, u16 LE, 0 |
//! | 12 | 8 | C: content section length, u64 LE |
//! | 20 | C | content section: postcard of (excluded, entries) |
//! | 20+C | 8 | S: stat-cache section length, u64 LE |
//! | 28+C | S | stat-cache section: postcard of [`StatCache`] |
//! | 28+C+S | 32 | BLAKE3 of bytes 0 .. 28+C+S |
//!
//! The template id is BLAKE3 of the content section as [`encode`] writes
//! it, except that every symlink's mode counts as 0777 (see [`IdEntry`]:
//! on Linux, where symlinks are always 0777, that is the section byte for
//! byte). Postcard's encoding of a given value is unique, so the id of a
//! decoded manifest is recomputed from its re-encoding, never taken from
//! file bytes: two files that decode alike have one id.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Entry, Kind, Manifest, ManifestError, StatCache};

pub const MAGIC: [u8; 8] = *b"JTXMANIF";
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 20;
const CHECKSUM_LEN: usize = 32;
/// PATH_MAX on Linux; FreeBSD's is 1024. Bounds what a decoded path can make
/// later code do (depth of the mtree export, length of messages).
const MAX_PATH: usize = 4096;

/// Why bytes are not a usable manifest. Messages complete the sentence
/// "manifest PATH is corrupt: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a jailtx manifest (bad magic)")]
    BadMagic,
    #[error("truncated ({len} bytes)")]
    Truncated { len: usize },
    #[error("checksum mismatch")]
    Checksum,
    #[error(
        "format version {found} is not one this jailtx reads (it reads {VERSION}), or the header is damaged"
    )]
    Version { found: u16 },
    #[error("section lengths do not add up to the file size")]
    Lengths,
    #[error("{section} section does not decode: {why}")]
    Body { section: &'static str, why: String },
    #[error("entry {index}: {why}")]
    Invalid { index: usize, why: String },
}

#[derive(Serialize)]
struct ContentRef<'a> {
    excluded: &'a [Vec<u8>],
    entries: &'a [Entry],
}

#[derive(Deserialize)]
struct Content {
    excluded: Vec<Vec<u8>>,
    entries: Vec<Entry>,
}

fn content_bytes(m: &Manifest) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(&ContentRef {
        excluded: &m.excluded,
        entries: &m.entries,
    })
}

/// The mode a symlink's entry counts with in the template id.
pub const ID_SYMLINK_MODE: u32 = 0o777;

/// An entry as the template id sees it: a symlink's permission bits count
/// as [`ID_SYMLINK_MODE`]. They are never used for access, and they are
/// not the world's: Linux makes every symlink 0777, FreeBSD 0777 less the
/// umask of the process that made it, so they would tie the id to the host
/// that unpacked the world. Every other field counts as stored. Serialized
/// exactly as [`Entry`] is, so on Linux (where a symlink's mode is always
/// 0777) the id is BLAKE3 of the content section byte for byte.
#[derive(Serialize)]
struct IdEntry<'a> {
    #[serde(with = "super::raw_bytes")]
    path: &'a [u8],
    mode: u32,
    uid: u32,
    gid: u32,
    kind: &'a Kind,
}

impl<'a> From<&'a Entry> for IdEntry<'a> {
    fn from(e: &'a Entry) -> IdEntry<'a> {
        IdEntry {
            path: &e.path,
            mode: match e.kind {
                Kind::Symlink { .. } => ID_SYMLINK_MODE,
                _ => e.mode,
            },
            uid: e.uid,
            gid: e.gid,
            kind: &e.kind,
        }
    }
}

/// BLAKE3 (hex) of the content section as it is encoded with every
/// symlink's mode written as [`ID_SYMLINK_MODE`] (see [`IdEntry`]).
pub(super) fn content_id(m: &Manifest) -> String {
    #[derive(Serialize)]
    struct IdContent<'a> {
        excluded: &'a [Vec<u8>],
        entries: Vec<IdEntry<'a>>,
    }
    let content = IdContent {
        excluded: &m.excluded,
        entries: m.entries.iter().map(IdEntry::from).collect(),
    };
    // Encoding a Vec-backed value into a Vec cannot fail (postcard fails
    // only on unsupported serde types or a full fixed buffer); hash the
    // empty string rather than panic if it ever did.
    let bytes = postcard::to_stdvec(&content).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

pub(super) fn encode(m: &Manifest) -> Result<Vec<u8>, ManifestError> {
    let content = content_bytes(m).map_err(|e| ManifestError::Encode(e.to_string()))?;
    let stats = postcard::to_stdvec(&m.stats).map_err(|e| ManifestError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + content.len() + 8 + stats.len() + CHECKSUM_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(content.len() as u64).to_le_bytes());
    out.extend_from_slice(&content);
    out.extend_from_slice(&(stats.len() as u64).to_le_bytes());
    out.extend_from_slice(&stats);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// A postcard section that must be consumed exactly.
fn section<'a, T: Deserialize<'a>>(bytes: &'a [u8], name: &'static str) -> Result<T, DecodeError> {
    let body = |why: String| DecodeError::Body { section: name, why };
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(body(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes.len() < HEADER_LEN + 8 + CHECKSUM_LEN {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let (data, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    // Every audit starts by reading a manifest, on one thread before its
    // walk, so the checksum is computed beside the decoding (which is safe
    // on any bytes). It is judged first all the same, and before the
    // version, so that a damaged file is called damaged; the version is
    // only trusted once the bytes are.
    let (intact, decoded) = rayon::join(|| blake3::hash(data).as_bytes() == sum, || body(data));
    if !intact {
        if version != VERSION {
            return Err(DecodeError::Version { found: version });
        }
        return Err(DecodeError::Checksum);
    }
    if version != VERSION || bytes[10..12] != [0, 0] {
        return Err(DecodeError::Version { found: version });
    }
    decoded
}

/// The two sections of `data` (the file without its checksum), decoded
/// and checked: the content (the larger part) beside the stat cache.
fn body(data: &[u8]) -> Result<Manifest, DecodeError> {
    let c_len = u64_at(data, 12).ok_or(DecodeError::Lengths)?;
    let c_end = usize::try_from(c_len)
        .ok()
        .and_then(|c| HEADER_LEN.checked_add(c))
        .filter(|&e| e <= data.len())
        .ok_or(DecodeError::Lengths)?;
    let s_len = u64_at(data, c_end).ok_or(DecodeError::Lengths)?;
    let s_start = c_end + 8;
    if usize::try_from(s_len).ok() != data.len().checked_sub(s_start) {
        return Err(DecodeError::Lengths);
    }
    let (content, stats) = rayon::join(
        || {
            let c: Content = section(&data[HEADER_LEN..c_end], "content")?;
            check_content(&c.excluded, &c.entries)?;
            Ok(c)
        },
        || section::<StatCache>(&data[s_start..], "stat-cache"),
    );
    let content = content?;
    let m = Manifest {
        excluded: content.excluded,
        entries: content.entries,
        stats: stats?,
    };
    check_stats(&m)?;
    Ok(m)
}

fn invalid(index: usize, why: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        index,
        why: why.into(),
    }
}

/// A relative path of plain components: no empty, `.` or `..` component,
/// no NUL, no leading or trailing `/`.
fn plain(path: &[u8]) -> bool {
    // One search for NUL over the whole path, then one pass for the
    // components (this runs once per entry of every manifest read).
    !path.contains(&0)
        && path
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// Every invariant later code relies on (see [`Manifest`]).
pub(super) fn check(m: &Manifest) -> Result<(), DecodeError> {
    check_content(&m.excluded, &m.entries)?;
    check_stats(m)
}

/// One stat-cache record per entry.
fn check_stats(m: &Manifest) -> Result<(), DecodeError> {
    if m.stats.stats.len() != m.entries.len() {
        return Err(invalid(
            m.entries.len(),
            format!(
                "{} stat-cache records for {} entries",
                m.stats.stats.len(),
                m.entries.len()
            ),
        ));
    }
    Ok(())
}

/// The content's invariants: plain sorted paths, parents before children,
/// hard links to earlier files, sane modes and link targets.
fn check_content(excluded: &[Vec<u8>], entries: &[Entry]) -> Result<(), DecodeError> {
    for (i, x) in excluded.iter().enumerate() {
        if x.len() > MAX_PATH || !plain(x) {
            return Err(DecodeError::Body {
                section: "content",
                why: format!("excluded path {i} is not a plain relative path"),
            });
        }
    }
    let Some(root) = entries.first() else {
        return Err(invalid(0, "no root entry"));
    };
    if !root.path.is_empty() || root.kind != Kind::Dir {
        return Err(invalid(0, "the first entry is not the root directory"));
    }
    let mut dirs: HashSet<&[u8]> = HashSet::from([&b""[..]]);
    // Runs of entries share a parent (a directory's files): the set is
    // asked once per run.
    let mut last_parent: &[u8] = b"";
    for (i, e) in entries.iter().enumerate() {
        if e.mode & !0o7777 != 0 {
            return Err(invalid(
                i,
                format!("mode {:o} has bits beyond 07777", e.mode),
            ));
        }
        if i == 0 {
            continue;
        }
        if e.path.len() > MAX_PATH || !plain(&e.path) {
            return Err(invalid(i, "path is not a plain relative path"));
        }
        if entries[i - 1].path >= e.path {
            return Err(invalid(i, "entries are not sorted and unique"));
        }
        // Sorted order puts a parent before its children (a prefix sorts
        // first), so the directories seen so far are the candidates.
        let p = parent(&e.path);
        if p != last_parent {
            if !dirs.contains(p) {
                return Err(invalid(i, "its parent is not an earlier directory entry"));
            }
            last_parent = p;
        }
        if e.kind == Kind::Dir {
            dirs.insert(&e.path);
        }
        if let Kind::HardLink { to } = &e.kind {
            match entries[..i].binary_search_by(|x| x.path.as_slice().cmp(to)) {
                Ok(j) if !matches!(entries[j].kind, Kind::Dir | Kind::HardLink { .. }) => {}
                _ => {
                    return Err(invalid(
                        i,
                        "hard link to something that is not an earlier non-directory entry",
                    ));
                }
            }
        }
        if let Kind::Symlink { target } = &e.kind
            && (target.is_empty() || target.len() > MAX_PATH || target.contains(&0))
        {
            return Err(invalid(i, "symlink target is empty, too long or holds NUL"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Stat;

    fn sample() -> Manifest {
        let e = |path: &str, kind: Kind| Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            kind,
        };
        let entries = vec![
            e("", Kind::Dir),
            e("bin", Kind::Dir),
            e(
                "bin/sh",
                Kind::File {
                    size: 3,
                    blake3: *blake3::hash(b"sh\n").as_bytes(),
                },
            ),
            e(
                "bin/test",
                Kind::HardLink {
                    to: b"bin/sh".to_vec(),
                },
            ),
            e(
                "etc",
                Kind::Symlink {
                    target: b"s/etc".to_vec(),
                },
            ),
        ];
        let stats = entries
            .iter()
            .enumerate()
            .map(|(i, _)| Stat {
                ino: i as u64 + 2,
                mtime_ns: 1,
                ctime_ns: 2,
            })
            .collect();
        Manifest {
            excluded: vec![b"usr/ports".to_vec()],
            entries,
            stats: StatCache {
                dev: 7,
                racy_ns: 0,
                stats,
            },
        }
    }

    #[test]
    fn round_trip_and_id_ignores_the_stat_cache() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(&bytes[..8], b"JTXMANIF");
        assert_eq!(&bytes[8..10], &[1, 0]);
        let back = Manifest::decode(&bytes).unwrap();
        assert_eq!(back, m);
        let mut moved = m.clone();
        moved.stats.dev = 9;
        moved.stats.stats[2].ino = 99;
        assert_eq!(moved.id(), m.id(), "the id covers content only");
        let mut changed = m.clone();
        changed.entries[1].mode = 0o700;
        assert_ne!(changed.id(), m.id());
    }

    /// Issue 16: a symlink's permission bits are the unpacking host's
    /// (FreeBSD gives 0777 less the umask, Linux always 0777), so the id
    /// does not count them; every other mode does. Where symlinks are 0777
    /// the id is still BLAKE3 of the stored content section, so the ids of
    /// templates built before are unchanged.
    #[test]
    fn the_id_leaves_out_symlink_modes_only() {
        let m = sample();
        let bytes = m.encode().unwrap();
        let c_len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
        let section = &bytes[HEADER_LEN..HEADER_LEN + c_len];
        let mut linux = m.clone();
        linux.entries[4].mode = 0o777;
        let stored = linux.encode().unwrap();
        assert_eq!(
            linux.id(),
            blake3::hash(&stored[HEADER_LEN..HEADER_LEN + c_len])
                .to_hex()
                .to_string(),
            "with 0777 symlinks the id is the section's hash"
        );
        assert_ne!(blake3::hash(section).to_hex().to_string(), m.id());
        let mut freebsd = linux.clone();
        freebsd.entries[4].mode = 0o755;
        assert_eq!(freebsd.id(), linux.id(), "a symlink's mode is not counted");
        assert_ne!(freebsd.encode().unwrap(), stored, "but it is stored");
        for i in [0, 1, 2, 3] {
            let mut other = linux.clone();
            other.entries[i].mode ^= 0o020;
            assert_ne!(other.id(), linux.id(), "entry {i}: its mode is counted");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused_as_corrupt() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            let e = Manifest::decode(&b).unwrap_err();
            assert!(
                matches!(
                    e,
                    DecodeError::BadMagic | DecodeError::Checksum | DecodeError::Version { .. }
                ),
                "byte {i}: {e}"
            );
        }
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len]).is_err(), "prefix {len}");
        }
    }

    /// Re-seals `m` without the invariant checks, as a forger with the
    /// format (but not a valid tree) would.
    fn sealed(m: &Manifest) -> Vec<u8> {
        encode(m).unwrap()
    }

    #[test]
    fn checksummed_but_invalid_trees_are_refused() {
        let mut unsorted = sample();
        unsorted.entries.swap(1, 2);
        let mut dangling = sample();
        dangling.entries[3].kind = Kind::HardLink {
            to: b"bin/zz".to_vec(),
        };
        let mut escape = sample();
        escape.entries[2].path = b"bin/../x".to_vec();
        let mut orphan = sample();
        orphan.entries[2].path = b"bim/sh".to_vec();
        orphan.entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut short_stats = sample();
        short_stats.stats.stats.pop();
        let mut bad_mode = sample();
        bad_mode.entries[1].mode = 0o40755;
        for (name, m) in [
            ("unsorted", unsorted),
            ("dangling", dangling),
            ("escape", escape),
            ("orphan", orphan),
            ("short stats", short_stats),
            ("bad mode", bad_mode),
        ] {
            let e = Manifest::decode(&sealed(&m)).unwrap_err();
            assert!(matches!(e, DecodeError::Invalid { .. }), "{name}: {e}");
        }
    }

    /// One edit, `(where, value, how)`: `how` picks a change to the
    /// manifest's fields (made before encoding, so the bytes stay well-formed
    /// postcard and reach the tree checks) or to the encoded bytes of a
    /// section (which reach postcard's own checks).
    type Edit = (u16, u8, u8);

    /// Paths a forger would try: the root's, an existing one, `..`, an empty
    /// or NUL component, one with no parent, one too long.
    fn odd_path(k: u8) -> Vec<u8> {
        match k % 8 {
            0 => Vec::new(),
            1 => b"bin".to_vec(),
            2 => b"bin/sh".to_vec(),
            3 => b"bin/../x".to_vec(),
            4 => b"bin//sh".to_vec(),
            5 => b"bin/s\0h".to_vec(),
            6 => b"zz/deep".to_vec(),
            _ => vec![b'a'; MAX_PATH + 1],
        }
    }

    /// Changes one field of `m` (an entry's mode, path or kind; the order or
    /// number of entries; the stat cache; the exclusions).
    fn edit_value(m: &mut Manifest, (at, value, how): Edit) {
        let n = m.entries.len();
        let (i, j) = (usize::from(at) % n.max(1), usize::from(value) % n.max(1));
        match (how / 2) % 8 {
            _ if n == 0 => m.entries.push(m.entries.first().cloned().unwrap_or(Entry {
                path: Vec::new(),
                mode: 0,
                uid: 0,
                gid: 0,
                kind: Kind::Dir,
            })),
            // Any width of mode, file type bits included.
            0 => m.entries[i].mode = u32::from(at) << (value % 24),
            1 => m.entries[i].path = odd_path(value),
            2 => m.entries.swap(i, j),
            3 => {
                let e = m.entries[i].clone();
                m.entries.insert(j, e);
            }
            4 if value % 8 == 0 => m.entries.clear(),
            4 => {
                m.entries.remove(i);
            }
            5 => {
                m.entries[i].kind = match value % 4 {
                    0 => Kind::Dir,
                    1 => Kind::File {
                        size: u64::from(at),
                        blake3: [value; 32],
                    },
                    2 => Kind::HardLink {
                        to: odd_path(at as u8),
                    },
                    _ => Kind::Symlink {
                        target: odd_path(at as u8),
                    },
                }
            }
            6 if value % 2 == 0 => {
                m.stats.stats.pop();
            }
            6 => m.stats.stats.push(crate::manifest::Stat {
                ino: u64::from(at),
                mtime_ns: 0,
                ctime_ns: 0,
            }),
            _ => m.excluded.push(odd_path(value)),
        }
    }

    /// Changes the bytes of an encoded section.
    fn edit_bytes(target: &mut Vec<u8>, (at, value, how): Edit) {
        let at = usize::from(at) % (target.len() + 1);
        match (how / 2) % 6 {
            0 if at < target.len() => target[at] ^= value | 1,
            // Boundary values: a varint's continuation bit, zero, max.
            1 if at < target.len() => {
                target[at] = [0, 0x7f, 0x80, 0xff, value][usize::from(value % 5)]
            }
            2 => target.insert(at, value),
            3 if at < target.len() => {
                target.remove(at);
            }
            4 => target.truncate(at),
            _ => {
                // Repeat a short run: duplicated entries, names, lengths.
                let end = (at + usize::from(value % 16)).min(target.len());
                let run = target[at..end].to_vec();
                target.splice(at..at, run);
            }
        }
    }

    /// `sample()` with `edits` applied (field edits before encoding, byte
    /// edits to the content section, or to the stat cache if `stats`),
    /// framed again with lengths that match and, if `reseal`, a checksum
    /// that does: inputs that pass the magic and header and reach the later
    /// checks (lengths, postcard, the tree invariants), where random bytes
    /// never get.
    fn mutated(edits: &[Edit], stats: bool, reseal: bool) -> Vec<u8> {
        let mut m = sample();
        for &e in edits.iter().filter(|e| e.2 % 2 == 0) {
            edit_value(&mut m, e);
        }
        let mut content = content_bytes(&m).unwrap();
        let mut stat = postcard::to_stdvec(&m.stats).unwrap();
        let target = if stats { &mut stat } else { &mut content };
        for &e in edits.iter().filter(|e| e.2 % 2 == 1) {
            edit_bytes(target, e);
        }
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(content.len() as u64).to_le_bytes());
        b.extend_from_slice(&content);
        b.extend_from_slice(&(stat.len() as u64).to_le_bytes());
        b.extend_from_slice(&stat);
        let sum = if reseal {
            *blake3::hash(&b).as_bytes()
        } else {
            [0; 32]
        };
        b.extend_from_slice(&sum);
        b
    }

    /// Which check refused `bytes` (or `ok`).
    fn verdict(bytes: &[u8]) -> &'static str {
        match Manifest::decode(bytes) {
            Ok(_) => "ok",
            Err(DecodeError::BadMagic) => "magic",
            Err(DecodeError::Truncated { .. }) => "truncated",
            Err(DecodeError::Checksum) => "checksum",
            Err(DecodeError::Version { .. }) => "version",
            Err(DecodeError::Lengths) => "lengths",
            Err(DecodeError::Body { .. }) => "body",
            Err(DecodeError::Invalid { .. }) => "invalid",
        }
    }

    /// Mutations of a valid encoding, sealed again, decode or are refused
    /// without panicking, and between them reach every check past the
    /// checksum, each tree invariant included: a fuzz input that stops at
    /// the magic tests only the magic.
    #[test]
    fn mutated_manifests_reach_every_check() {
        let mut seen = std::collections::BTreeMap::new();
        let mut why = std::collections::BTreeSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let n = 1 + next() % 3;
            let edits: Vec<Edit> = (0..n)
                .map(|_| {
                    let r = next();
                    (r as u16, (r >> 16) as u8, (r >> 24) as u8)
                })
                .collect();
            let bytes = mutated(&edits, next() & 1 == 1, true);
            if let Err(DecodeError::Invalid { why: w, .. }) = Manifest::decode(&bytes) {
                why.insert(w.replace(|c: char| c.is_ascii_digit(), ""));
            }
            *seen.entry(verdict(&bytes)).or_insert(0) += 1;
        }
        for check in ["ok", "body", "invalid"] {
            assert!(
                seen.contains_key(check),
                "no mutation reached {check}: {seen:?}"
            );
        }
        assert!(
            !seen.contains_key("magic") && !seen.contains_key("checksum"),
            "{seen:?}"
        );
        for invariant in [
            "no root entry",
            "not the root directory",
            "has bits beyond",
            "not a plain relative path",
            "not sorted and unique",
            "parent is not an earlier directory",
            "hard link to something",
            "symlink target is empty",
            "stat-cache records for",
        ] {
            assert!(
                why.iter().any(|w| w.contains(invariant)),
                "no mutation broke the invariant \"{invariant}\": {why:?}"
            );
        }
        // Sections that are not sealed again stop at the checksum.
        assert_eq!(verdict(&mutated(&[(3, 1, 1)], false, false)), "checksum");
    }

    proptest::proptest! {
        /// Mutations of a valid encoding (see [`mutated`]): past the magic,
        /// the header and (resealed) the checksum, which random bytes almost
        /// never pass; `every_flipped_byte_is_refused_as_corrupt` covers those.
        #[test]
        fn decode_never_panics(
            edits in proptest::collection::vec(
                (proptest::num::u16::ANY, proptest::num::u8::ANY, proptest::num::u8::ANY),
                1..6,
            ),
            stats in proptest::bool::ANY,
            reseal in proptest::bool::weighted(0.9),
        ) {
            let _ = verdict(&mutated(&edits, stats, reseal));
        }

        /// Valid framing around arbitrary bodies reaches the postcard and
        /// invariant layers, which must refuse without panicking.
        #[test]
        fn decode_of_sealed_garbage_never_panics(
            content in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            stats in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&VERSION.to_le_bytes());
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&(content.len() as u64).to_le_bytes());
            b.extend_from_slice(&content);
            b.extend_from_slice(&(stats.len() as u64).to_le_bytes());
            b.extend_from_slice(&stats);
            let sum = blake3::hash(&b);
            b.extend_from_slice(sum.as_bytes());
            let _ = Manifest::decode(&b);
        }
    }
}
