//! Template bundles: one file holding a shaped template tree, its manifest and a small header, packed on one host and installed on others.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `JTXBNDL\0` |
//! | 8 | 2 | format version, u16 LE (1) |
//! | 10 | 2 | reserved, u16 LE, 0 |
//! | 12 | 4 | H: header length, u32 LE (at most 64 KiB) |
//! | 16 | H | header: JSON ([`Header`]) |
//! | 16+H | 8 | M: manifest length, u64 LE |
//! | 24+H | M | the template's manifest file, as `manifests/NAME.manifest` holds it |
//! | 24+H+M | rest | payload: one zstd frame of a tar stream of the tree, root `./` |
//!
//! A signature (`FILE.minisig`) covers the whole file. Installing reads it
//! twice: a first pass verifies the signature while it checks every tar
//! entry ([`super::archive`]'s scan, shaped rules), before any byte lands;
//! the second unpacks and verifies the signature again over what it read,
//! so a file swapped between the passes fails the step. The landed tree's
//! manifest must then have the header's template id.

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{self, Kind as MKind, Manifest};
use crate::trust::{self, SignerInfo, TrustedKey};

use super::WorldError;
use super::archive::{ArchiveKind, decompress, extract_from, scan_from};

pub const MAGIC: [u8; 8] = *b"JTXBNDL\0";
pub const VERSION: u16 = 1;
const MAX_HEADER: u32 = 64 << 10;
/// As `fs::statefile` caps a manifest file.
const MAX_MANIFEST: u64 = crate::fs::statefile::MAX_MANIFEST_BYTES;
/// zstd's own default level: see the README ("Bundles") for the measurement.
const ZSTD_LEVEL: i32 = 3;

/// What a bundle says about itself (JSON in the file; not part of the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The bundle format version (also in the binary header).
    pub format: u16,
    /// The template id: the id of the manifest the bundle carries.
    pub template_id: String,
    /// Where the template came from, as its packer knew it.
    pub source: String,
    /// When it was packed (RFC 3339, UTC).
    pub created: String,
    /// The world's `freebsd-version -u` (from `bin/freebsd-version`), when found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freebsd_version: Option<String>,
    /// `uname -r` of the host that packed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uname_r: Option<String>,
    /// The payload's compression: `zstd`.
    pub compression: String,
}

fn bad(path: &Path, why: impl std::fmt::Display) -> WorldError {
    WorldError::Bundle {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// The userland version a FreeBSD world's `bin/freebsd-version` script
/// holds (`USERLAND_VERSION="14.2-RELEASE-p1"`), read without following a
/// link and capped.
pub fn freebsd_version(world: &Path) -> Option<String> {
    let dir = crate::fs::beneath::open_root(world)
        .ok()?
        .walk(Path::new("bin"))
        .ok()??;
    let name = std::ffi::OsStr::new("freebsd-version");
    if dir.stat(name).ok()??.kind != crate::fs::beneath::Kind::File {
        return None;
    }
    let (bytes, _) = dir.read(name).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix("USERLAND_VERSION=")?;
        let v = v.trim_matches('"');
        (!v.is_empty()
            && v.len() < 64
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
        .then(|| v.to_owned())
    })
}

/// Writes the bundle of the template at `template`, whose manifest is `m`,
/// to `out` atomically (a side file, fsynced, renamed, the directory
/// fsynced). Every entry is taken from the manifest in its order, and each
/// file's bytes are hashed as they are written: a template that drifted
/// from its manifest is refused, never packed. Returns the bundle's size.
pub fn pack(template: &Path, m: &Manifest, header: &Header, out: &Path) -> Result<u64, WorldError> {
    let side = crate::fs::temp_path(out);
    let result = write_bundle(template, m, header, &side).and_then(|size| {
        crate::fs::rename_durable(&side, out)?;
        Ok(size)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&side);
    }
    result
}

fn write_bundle(
    template: &Path,
    m: &Manifest,
    header: &Header,
    side: &Path,
) -> Result<u64, WorldError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| bad(side, e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(side)
        .map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let head = serde_json::to_vec(header).map_err(|e| bad(side, e))?;
    let manifest_bytes = m.encode().map_err(|e| bad(side, e))?;
    w.write_all(&MAGIC).map_err(io)?;
    w.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    w.write_all(&0u16.to_le_bytes()).map_err(io)?;
    w.write_all(&(head.len() as u32).to_le_bytes())
        .map_err(io)?;
    w.write_all(&head).map_err(io)?;
    w.write_all(&(manifest_bytes.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&manifest_bytes).map_err(io)?;
    let mut z = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL).map_err(io)?;
    {
        let mut tar = tar::Builder::new(&mut z);
        for e in &m.entries {
            append_entry(&mut tar, template, e)?;
        }
        tar.finish().map_err(io)?;
    }
    let w = z.finish().map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(file.metadata().map_err(io)?.len())
}

/// One manifest entry as a tar entry: owner and mode from the manifest
/// (what the id covers), mtime from the file.
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    template: &Path,
    e: &manifest::Entry,
) -> Result<(), WorldError> {
    use std::os::unix::fs::MetadataExt;
    let rel = Path::new(std::ffi::OsStr::from_bytes(&e.path));
    let on_disk = if e.path.is_empty() {
        template.to_owned()
    } else {
        template.join(rel)
    };
    let shown = manifest::display_path(&e.path);
    let drift = |what: &str| {
        bad(
            template,
            format!("{shown} {what}; the template drifted from its manifest: run `jailtx audit`"),
        )
    };
    let meta = std::fs::symlink_metadata(&on_disk).map_err(|_| drift("is missing"))?;
    let name: PathBuf = if e.path.is_empty() {
        PathBuf::from(".")
    } else {
        rel.to_owned()
    };
    let mut h = tar::Header::new_gnu();
    h.set_mode(e.mode & 0o7777);
    h.set_uid(e.uid.into());
    h.set_gid(e.gid.into());
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(0);
    let io = |err: std::io::Error| bad(template, format!("{shown}: {err}"));
    match &e.kind {
        MKind::HardLink { to } => {
            h.set_entry_type(tar::EntryType::Link);
            let to = Path::new(std::ffi::OsStr::from_bytes(to));
            tar.append_link(&mut h, &name, to).map_err(io)?;
        }
        MKind::Dir => {
            if !meta.is_dir() {
                return Err(drift("is no longer a directory"));
            }
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, &name, std::io::empty())
                .map_err(io)?;
        }
        MKind::File { size, blake3 } => {
            let file =
                trust::open_regular(&on_disk).map_err(|_| drift("is not the file it was"))?;
            if file.metadata().map_err(io)?.len() != *size {
                return Err(drift("changed size"));
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            let mut hashing = HashingReader {
                inner: file.take(*size),
                hasher: blake3::Hasher::new(),
            };
            tar.append_data(&mut h, &name, &mut hashing).map_err(io)?;
            if hashing.hasher.finalize().as_bytes() != blake3 {
                return Err(drift("changed content"));
            }
        }
        MKind::Symlink { target } => {
            let now = std::fs::read_link(&on_disk).map_err(|_| drift("is no longer a symlink"))?;
            if now.as_os_str().as_bytes() != target.as_slice() {
                return Err(drift("points elsewhere"));
            }
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, &name, &now).map_err(io)?;
        }
        MKind::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut h, &name, std::io::empty())
                .map_err(io)?;
        }
        MKind::CharDevice { rdev } | MKind::BlockDevice { rdev } => {
            let char_dev = matches!(e.kind, MKind::CharDevice { .. });
            h.set_entry_type(if char_dev {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            h.set_device_major(nix::libc::major(*rdev as nix::libc::dev_t) as u32)
                .map_err(io)?;
            h.set_device_minor(nix::libc::minor(*rdev as nix::libc::dev_t) as u32)
                .map_err(io)?;
            tar.append_data(&mut h, &name, std::io::empty())
                .map_err(io)?;
        }
        MKind::Socket => {
            return Err(bad(
                template,
                format!("{shown} is a socket, which no archive holds; remove it from the template"),
            ));
        }
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A bundle's header and manifest, read and checked (first pass), with its
/// signer when it is signed.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub header: Header,
    pub manifest: Manifest,
    pub signer: Option<SignerInfo>,
}

/// Reads the binary header, the JSON header and the manifest from the
/// start of `r`, checking each.
fn read_front(path: &Path, r: &mut dyn Read) -> Result<(Header, Manifest), WorldError> {
    let short = |_| bad(path, "truncated: not a whole jailtx bundle");
    let mut fixed = [0u8; 16];
    r.read_exact(&mut fixed).map_err(short)?;
    if fixed[..8] != MAGIC {
        return Err(bad(path, "not a jailtx bundle (bad magic)"));
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    if version != VERSION {
        return Err(bad(
            path,
            format!("bundle format version {version}; this jailtx reads {VERSION}"),
        ));
    }
    let hlen = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
    if hlen > MAX_HEADER {
        return Err(bad(path, "header too long: not a jailtx bundle"));
    }
    let mut head = vec![0u8; hlen as usize];
    r.read_exact(&mut head).map_err(short)?;
    let header: Header = serde_json::from_slice(&head)
        .map_err(|_| bad(path, "the header does not decode: a damaged bundle"))?;
    let mut mlen = [0u8; 8];
    r.read_exact(&mut mlen).map_err(short)?;
    let mlen = u64::from_le_bytes(mlen);
    if mlen > MAX_MANIFEST {
        return Err(bad(path, "manifest too long: a damaged bundle"));
    }
    let mut mbytes = Vec::new();
    r.take(mlen).read_to_end(&mut mbytes).map_err(short)?;
    if mbytes.len() as u64 != mlen {
        return Err(bad(path, "truncated: not a whole jailtx bundle"));
    }
    let manifest = Manifest::decode(&mbytes)
        .map_err(|e| bad(path, format!("its manifest is corrupt: {e}")))?;
    if header.format != VERSION || header.compression != "zstd" {
        return Err(bad(path, "the header names another format or compression"));
    }
    if manifest.id() != header.template_id {
        return Err(bad(
            path,
            "the header's template id is not its manifest's: a damaged bundle",
        ));
    }
    Ok((header, manifest))
}

/// The signed-input rule for `path`: its signature parsed and its key
/// trusted, or, without a signature, refused under `require_signature`.
fn signature<'k>(
    path: &Path,
    keys: &'k [TrustedKey],
    require_signature: bool,
) -> Result<Option<trust::Checked<'k>>, WorldError> {
    match trust::signature_of(path, keys)? {
        Some(c) => Ok(Some(c)),
        None if require_signature => Err(crate::trust::TrustError::Unsigned {
            path: path.to_owned(),
            hint: " ([trust] require_signature is on)",
        }
        .into()),
        None => Ok(None),
    }
}

/// First pass: verifies the signature over the whole file while checking
/// every entry of the payload as [`super::scan`] checks an archive (shaped
/// rules), landing nothing. A damaged or re-signed file is refused by its
/// signature first: a scan error counts only once the signature held.
pub fn inspect(
    path: &Path,
    keys: &[TrustedKey],
    require_signature: bool,
    carry_over: &[PathBuf],
) -> Result<Inspected, WorldError> {
    let checked = signature(path, keys, require_signature)?;
    let file = trust::open_regular(path).map_err(|e| bad(path, e))?;
    let buffered = std::io::BufReader::with_capacity(1 << 20, file);
    let (front, scanned) = match &checked {
        Some(c) => {
            let mut v = trust::Verifying::new(buffered, c)?;
            let found = front_and_scan(path, &mut v, carry_over);
            // Whatever the scan found, the signature decides first.
            std::io::copy(&mut v, &mut std::io::sink()).map_err(|e| bad(path, e))?;
            v.finish(path)?;
            found
        }
        None => front_and_scan(path, &mut { buffered }, carry_over),
    };
    let (header, manifest) = front?;
    scanned?;
    Ok(Inspected {
        header,
        manifest,
        signer: checked.map(|c| c.signer()),
    })
}

/// The header and manifest at the start of `r`, and the scan of the
/// payload after them (not run when the front is refused).
fn front_and_scan(
    path: &Path,
    r: &mut dyn Read,
    carry_over: &[PathBuf],
) -> (
    Result<(Header, Manifest), WorldError>,
    Result<(), WorldError>,
) {
    let front = read_front(path, r);
    if front.is_err() {
        return (front, Ok(()));
    }
    let scanned = decompress(path, Box::new(r), ArchiveKind::Zstd)
        .and_then(|payload| scan_from(path, payload, ArchiveKind::Zstd, carry_over, true));
    (front, scanned)
}

/// Second pass: unpacks the payload into the existing directory `dest`
/// through [`super::archive`]'s extract, verifying the signature again
/// over everything read; the header must still be `expect`'s.
fn unpack(
    path: &Path,
    keys: &[TrustedKey],
    require_signature: bool,
    expect_id: &str,
    dest: &Path,
) -> Result<Manifest, WorldError> {
    let checked = signature(path, keys, require_signature)?;
    let file = std::io::BufReader::with_capacity(
        1 << 20,
        trust::open_regular(path).map_err(|e| bad(path, e))?,
    );
    let changed = || {
        bad(
            path,
            "changed while it was being installed; run the command again",
        )
    };
    match &checked {
        Some(c) => {
            let mut v = trust::Verifying::new(file, c)?;
            let (header, m) = read_front(path, &mut v)?;
            if header.template_id != expect_id {
                return Err(changed());
            }
            let payload = decompress(path, Box::new(&mut v), ArchiveKind::Zstd)?;
            extract_from(path, payload, ArchiveKind::Zstd, dest)?;
            std::io::copy(&mut v, &mut std::io::sink()).map_err(|e| bad(path, e))?;
            v.finish(path).map_err(|_| changed())?;
            Ok(m)
        }
        None => {
            let mut r = file;
            let (header, m) = read_front(path, &mut r)?;
            if header.template_id != expect_id {
                return Err(changed());
            }
            let payload = decompress(path, Box::new(&mut r), ArchiveKind::Zstd)?;
            extract_from(path, payload, ArchiveKind::Zstd, dest)?;
            Ok(m)
        }
    }
}

/// Checks that a landed tree is a shaped template: `s/` a directory and
/// each of shape's links in place (one inside a carry-over path may be
/// absent: it arrives with that path).
fn check_shaped(tree: &Path, excluded: &[PathBuf]) -> Result<(), WorldError> {
    let top = super::open_world(tree)?;
    super::check_tree(&top, excluded, true)?;
    let s = top.stat(std::ffi::OsStr::new("s"))?;
    if s.map(|s| s.kind) != Some(crate::fs::beneath::Kind::Dir) {
        return Err(bad(tree, "holds no `s/` directory: not a shaped template"));
    }
    for (rel, target) in super::LINKS {
        let rel = Path::new(rel);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let dir = if parent.as_os_str().is_empty() {
            Some(top.try_clone()?)
        } else {
            top.walk(parent)?
        };
        let found = match &dir {
            Some(d) => match d.stat(name)?.map(|s| s.kind) {
                Some(crate::fs::beneath::Kind::Symlink) => Some(d.read_link(name)?),
                Some(_) => None,
                None if excluded.iter().any(|c| rel.starts_with(c)) => continue,
                None => None,
            },
            None if excluded.iter().any(|c| rel.starts_with(c)) => continue,
            None => None,
        };
        if found.as_deref() != Some(Path::new(target)) {
            return Err(bad(
                tree,
                format!(
                    "`{}` is not the link to {target} a template has: not a shaped template",
                    rel.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The carry-over paths a bundle's manifest left out, as paths.
pub fn excluded(m: &Manifest) -> Vec<PathBuf> {
    m.excluded
        .iter()
        .map(|k| PathBuf::from(std::ffi::OsStr::from_bytes(k)))
        .collect()
}

/// Installs the bundle at `path` as the template tree `to` (which must not
/// exist): unpacked under `to`'s side name, checked to be a shaped
/// template, its manifest rebuilt from what landed and required to have
/// `expect_id`, made durable and renamed into place; the manifest goes to
/// `manifest_to` when given. Any refusal removes the side tree again.
pub fn stage(
    path: &Path,
    keys: &[TrustedKey],
    require_signature: bool,
    expect_id: &str,
    to: &Path,
    manifest_to: Option<&Path>,
) -> Result<(), WorldError> {
    let partial = super::partial_path(to);
    crate::fs::remove_tree(&partial)?;
    crate::fs::create_dir_durable(&partial, 0o755)?;
    let result = (|| {
        let m0 = unpack(path, keys, require_signature, expect_id, &partial)?;
        // The excluded list is the bundle's: the id covers it.
        let excluded = excluded(&m0);
        check_shaped(&partial, &excluded)?;
        let built = manifest::build(&partial, &excluded).map_err(|e| bad(path, e))?;
        if built.id() != expect_id {
            return Err(bad(
                path,
                format!(
                    "the unpacked tree is not the template its manifest describes (id {} instead of {}); the bundle is damaged or forged",
                    short(&built.id()),
                    short(expect_id)
                ),
            ));
        }
        crate::fs::sync_tree(&partial)?;
        crate::fs::rename_durable(&partial, to)?;
        if let Some(mt) = manifest_to {
            manifest::write(mt, &built).map_err(|e| bad(mt, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = crate::fs::remove_tree(&partial);
    }
    result
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}
