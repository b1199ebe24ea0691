//! FreeBSD release `MANIFEST` files (the SHA-256 list of the distribution sets that bsdinstall checks) and checking an archive against one.
//!
//! The format is what `release/scripts/make-manifest.sh` prints: one line
//! per set, six fields separated by tabs,
//!
//! ```text
//! base.txz<TAB>SHA-256 (64 hex digits)<TAB>entries<TAB>base<TAB>"Base system (MANDATORY)"<TAB>on
//! ```
//!
//! name, checksum of the compressed file, number of archive entries (`tar
//! tvf | wc -l`), set name, quoted description, installed by default
//! (`on`/`off`). The parser is strict: the file is untrusted input that
//! decides whether an archive is installed, so a line it cannot read whole
//! is refused, never skipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// A MANIFEST larger than this is not one (FreeBSD's are under 2 KiB).
pub const MAX_LEN: u64 = 1 << 20;

/// One distribution set listed in a MANIFEST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEntry {
    /// The archive's file name (`base.txz`).
    pub name: String,
    pub sha256: [u8; 32],
    /// The number of archive entries (what `tar tvf` lists).
    pub entries: u64,
    /// The set's name (`base`, `kernel_dbg`).
    pub dist: String,
    /// Without the quotes make-manifest.sh puts around it.
    pub description: String,
    pub default: bool,
}

/// Why text is not a MANIFEST. `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    pub line: usize,
    pub why: String,
}

/// Why an archive was not accepted against a MANIFEST: each message is one
/// line for exit 2, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("--dist-manifest {path}: {why}; give the release's MANIFEST file itself")]
    Unreadable { path: PathBuf, why: String },
    #[error(
        "--dist-manifest {path}: not a FreeBSD release MANIFEST ({source}); give the MANIFEST file of the release, unedited"
    )]
    Malformed { path: PathBuf, source: ParseError },
    #[error(
        "--from-tar {archive}: {name:?} is not listed in {manifest}; give the MANIFEST of the release the archive comes from (the archive is looked up by its file name)"
    )]
    NotListed {
        archive: PathBuf,
        name: String,
        manifest: PathBuf,
    },
    #[error(
        "--from-tar {archive}: SHA-256 {found} differs from {listed} listed in {manifest}; the archive is damaged or not the release's: download it and its MANIFEST again"
    )]
    Mismatch {
        archive: PathBuf,
        manifest: PathBuf,
        found: String,
        listed: String,
    },
    #[error("--from-tar {archive}: {why}")]
    Archive { archive: PathBuf, why: String },
}

/// Parses a MANIFEST. Never panics, whatever the bytes: text that is not
/// UTF-8, holds a control character other than tab and newline, has a line
/// of other than six fields, a checksum that is not 64 hex digits, a count
/// that is not a decimal number, a name that is not a file name, or a name
/// listed twice is refused, naming the line. Empty lines are skipped.
pub fn parse(bytes: &[u8]) -> Result<Vec<DistEntry>, ParseError> {
    let mut out: Vec<DistEntry> = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let bad = |why: String| ParseError { line, why };
        if let Some(&c) = raw.iter().find(|&&c| (c < 0x20 && c != b'\t') || c == 0x7f) {
            return Err(bad(format!("holds the control character 0x{c:02x}")));
        }
        let text = std::str::from_utf8(raw).map_err(|_| bad("is not UTF-8 text".into()))?;
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split('\t').collect();
        let [name, sum, count, dist, description, default] = fields[..] else {
            return Err(bad(format!(
                "has {} tab-separated fields, not 6 (name, sha256, file count, set, description, default)",
                fields.len()
            )));
        };
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            return Err(bad(format!("{name:?} is not a file name")));
        }
        let sha256 =
            unhex(sum).ok_or_else(|| bad("the sha256 field is not 64 hex digits".into()))?;
        let entries = if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) {
            count.parse::<u64>().ok()
        } else {
            None
        }
        .ok_or_else(|| bad(format!("the file count {count:?} is not a number")))?;
        if dist.is_empty() {
            return Err(bad("the set name is empty".into()));
        }
        let default = match default {
            "on" => true,
            "off" => false,
            other => return Err(bad(format!("the default {other:?} is neither on nor off"))),
        };
        if out.iter().any(|e| e.name == name) {
            return Err(bad(format!("{name:?} is listed twice")));
        }
        let description = description
            .strip_prefix('"')
            .and_then(|d| d.strip_suffix('"'))
            .unwrap_or(description);
        out.push(DistEntry {
            name: name.to_owned(),
            sha256,
            entries,
            dist: dist.to_owned(),
            description: description.to_owned(),
            default,
        });
    }
    Ok(out)
}

/// 64 hex digits (either case) as 32 bytes.
fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        let digit = |b: u8| (b as char).to_digit(16);
        *o = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// Checks `archive` against the MANIFEST at `manifest` before anything is
/// extracted: its file name must be listed, and the SHA-256 of its bytes
/// (read as they lie on disk, streaming) must be the listed one. Returns
/// the entry it matched. Both files are opened as archives are (no symlink
/// followed, no fifo waited on, regular files only).
pub fn verify(archive: &Path, manifest: &Path) -> Result<DistEntry, DistError> {
    let unreadable = |why: String| DistError::Unreadable {
        path: manifest.to_owned(),
        why,
    };
    let file = super::archive::open_regular(manifest).map_err(unreadable)?;
    let mut text = Vec::new();
    file.take(MAX_LEN + 1)
        .read_to_end(&mut text)
        .map_err(|e| unreadable(e.to_string()))?;
    if text.len() as u64 > MAX_LEN {
        return Err(unreadable(format!(
            "larger than {} KiB, which no MANIFEST is",
            MAX_LEN >> 10
        )));
    }
    let listed = parse(&text).map_err(|source| DistError::Malformed {
        path: manifest.to_owned(),
        source,
    })?;
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry =
        listed
            .into_iter()
            .find(|e| e.name == name)
            .ok_or_else(|| DistError::NotListed {
                archive: archive.to_owned(),
                name: name.clone(),
                manifest: manifest.to_owned(),
            })?;
    let found = sha256_of(archive)?;
    if found != entry.sha256 {
        return Err(DistError::Mismatch {
            archive: archive.to_owned(),
            manifest: manifest.to_owned(),
            found: crate::manifest::hex(&found),
            listed: crate::manifest::hex(&entry.sha256),
        });
    }
    Ok(entry)
}

/// SHA-256 of the file at `archive`, read in pieces (never whole in memory).
fn sha256_of(archive: &Path) -> Result<[u8; 32], DistError> {
    let err = |why: String| DistError::Archive {
        archive: archive.to_owned(),
        why,
    };
    let mut file = super::archive::open_regular(archive).map_err(err)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e.to_string())),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finalize().as_slice());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "e85b256930a2fbc04b80334106afecba0f11e52e32ffa197a88d7319cf059840";

    /// Lines as make-manifest.sh prints them (FreeBSD 14).
    fn sample() -> String {
        format!(
            "base-dbg.txz\t{}\t63\tbase_dbg\t\"Base system (Debugging)\"\toff\n\
             base.txz\t{BASE}\t26492\tbase\t\"Base system (MANDATORY)\"\ton\n\
             kernel.txz\t{}\t1017\tkernel\t\"Kernel (MANDATORY)\"\ton\n",
            "0".repeat(64),
            "AB".repeat(32),
        )
    }

    #[test]
    fn reads_the_release_format() {
        let m = parse(sample().as_bytes()).unwrap();
        assert_eq!(m.len(), 3);
        let base = &m[1];
        assert_eq!(base.name, "base.txz");
        assert_eq!(crate::manifest::hex(&base.sha256), BASE);
        assert_eq!(
            (base.entries, base.dist.as_str(), base.default),
            (26492, "base", true)
        );
        assert_eq!(base.description, "Base system (MANDATORY)");
        assert!(!m[0].default);
        assert_eq!(m[2].sha256, [0xab; 32], "upper-case hex is read");
        // No final newline, and blank lines, are fine.
        assert_eq!(parse(sample().trim_end().as_bytes()).unwrap(), m);
        assert_eq!(parse(b"").unwrap(), vec![]);
    }

    #[test]
    fn refuses_what_it_cannot_read_whole() {
        let line = |f: &[&str]| f.join("\t");
        let good = ["base.txz", BASE, "3", "base", "\"d\"", "on"];
        let with = |i: usize, v: &str| {
            let mut f = good;
            f[i] = v;
            line(&f)
        };
        let short = BASE[..63].to_string();
        let nonhex = format!("{}g", &BASE[..63]);
        let cases: Vec<(String, &str)> = vec![
            (line(&good[..5]), "5 tab-separated fields"),
            (format!("{}\textra", line(&good)), "7 tab-separated fields"),
            (good.join(" "), "1 tab-separated fields"),
            (with(1, &short), "not 64 hex digits"),
            (with(1, &nonhex), "not 64 hex digits"),
            (with(1, &format!("{BASE}0")), "not 64 hex digits"),
            (with(2, "-3"), "not a number"),
            (with(2, "+3"), "not a number"),
            (with(2, ""), "not a number"),
            (with(2, "99999999999999999999999"), "not a number"),
            (with(0, ""), "not a file name"),
            (with(0, "../base.txz"), "not a file name"),
            (with(0, ".."), "not a file name"),
            (with(3, ""), "set name is empty"),
            (with(5, "yes"), "neither on nor off"),
            (format!("{}\r", line(&good)), "control character 0x0d"),
            (with(4, "\"a\x1b[2Jb\""), "control character 0x1b"),
            (with(4, "\"a\0b\""), "control character 0x00"),
            (format!("{}\n{}", line(&good), line(&good)), "listed twice"),
        ];
        for (text, want) in cases {
            let e = parse(text.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
        let e = parse(b"base.txz\t\xff\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.why.contains("UTF-8"), "{e}");
        // The line is counted from 1, blank lines included.
        let e = parse(format!("{}\n\nx", line(&good)).as_bytes()).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn verifies_by_name_and_checksum() {
        let d = tempfile::tempdir().unwrap();
        let archive = d.path().join("base.txz");
        std::fs::write(&archive, b"not really xz").unwrap();
        let sum = crate::manifest::hex(&sha2::Sha256::digest(b"not really xz"));
        let manifest = d.path().join("MANIFEST");
        let write = |text: String| std::fs::write(&manifest, text).unwrap();
        write(format!("base.txz\t{sum}\t1\tbase\t\"Base\"\ton\n"));
        assert_eq!(verify(&archive, &manifest).unwrap().dist, "base");

        write(format!("kernel.txz\t{sum}\t1\tkernel\t\"K\"\ton\n"));
        let e = verify(&archive, &manifest).unwrap_err();
        assert!(matches!(e, DistError::NotListed { .. }), "{e}");

        write(format!("base.txz\t{BASE}\t1\tbase\t\"Base\"\ton\n"));
        let e = verify(&archive, &manifest).unwrap_err();
        assert!(matches!(e, DistError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains(&sum), "{e}");

        write("base.txz\tnot-a-sum\t1\tbase\t\"Base\"\ton\n".into());
        let e = verify(&archive, &manifest).unwrap_err();
        assert!(matches!(e, DistError::Malformed { .. }), "{e}");

        let link = d.path().join("MANIFEST.link");
        std::os::unix::fs::symlink(&manifest, &link).unwrap();
        let e = verify(&archive, &link).unwrap_err();
        assert!(matches!(e, DistError::Unreadable { .. }), "{e}");

        std::fs::write(&manifest, vec![b'x'; MAX_LEN as usize + 1]).unwrap();
        let e = verify(&archive, &manifest).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse(&bytes);
        }
    }
}
