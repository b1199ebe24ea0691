//! Unpacking `.tar`, `.tar.gz`/`.tgz` and `.txz`/`.tar.xz` (FreeBSD's
//! `base.txz`) worlds with their modes, owners, times and links.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::fs::beneath::Kind;

use super::WorldError;

/// The compression of an archive, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Plain,
    Gzip,
    Xz,
    /// `.tar.zst`/`.tzst`, and the payload of a bundle.
    Zstd,
}

impl ArchiveKind {
    pub fn of(path: &Path) -> Option<ArchiveKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        if name.ends_with(".tar") {
            Some(ArchiveKind::Plain)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(ArchiveKind::Gzip)
        } else if name.ends_with(".txz") || name.ends_with(".tar.xz") {
            Some(ArchiveKind::Xz)
        } else if name.ends_with(".tar.zst") || name.ends_with(".tzst") {
            Some(ArchiveKind::Zstd)
        } else {
            None
        }
    }
}

/// Opens `archive` for reading: never through a symlink (O_NOFOLLOW: a link
/// to a secret file is refused, not read), never blocking (O_NONBLOCK: a
/// fifo cannot hang us), and only a regular file.
fn open_archive(archive: &Path) -> Result<std::fs::File, WorldError> {
    open_regular(archive).map_err(|why| WorldError::Extract {
        archive: archive.to_owned(),
        why: if why == IS_SYMLINK {
            format!("{why}; give the path of the archive itself")
        } else {
            why
        },
    })
}

const IS_SYMLINK: &str = "is a symlink";

/// Opens an untrusted input file (an archive, a release MANIFEST) as
/// [`open_archive`] does; the error is why, in words for a message.
pub(super) fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => IS_SYMLINK.to_owned(),
            _ => e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    Ok(file)
}

/// The decompressing reader of `archive`, by its name's kind.
fn reader(archive: &Path) -> Result<(Box<dyn Read>, ArchiveKind), WorldError> {
    let kind = ArchiveKind::of(archive).ok_or_else(|| WorldError::Extract {
        archive: archive.to_owned(),
        why: "not a .tar, .tar.gz, .tgz, .txz, .tar.xz, .tar.zst or .tzst file".into(),
    })?;
    let file = std::io::BufReader::with_capacity(1 << 20, open_archive(archive)?);
    Ok((decompress(archive, Box::new(file), kind)?, kind))
}

/// `compressed` read through the decompressor of `kind`.
pub(super) fn decompress<'a>(
    archive: &Path,
    compressed: Box<dyn Read + 'a>,
    kind: ArchiveKind,
) -> Result<Box<dyn Read + 'a>, WorldError> {
    Ok(match kind {
        ArchiveKind::Plain => compressed,
        ArchiveKind::Gzip => Box::new(flate2::read::GzDecoder::new(compressed)),
        ArchiveKind::Xz => Box::new(xz2::read::XzDecoder::new(compressed)),
        ArchiveKind::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(std::io::BufReader::new(compressed)).map_err(
                |e| WorldError::Extract {
                    archive: archive.to_owned(),
                    why: format!("zstd: {}", os_words(&e)),
                },
            )?,
        ),
    })
}

/// Why reading an archive failed, in words of ours only: a tar or
/// decompression error may quote the bytes it choked on, and the archive
/// may be any file (a secret named `x.tar`), so its text is never shown.
fn corrupt(kind: ArchiveKind, entries: usize, e: &std::io::Error) -> String {
    let what = match kind {
        ArchiveKind::Plain => "tar",
        ArchiveKind::Gzip => "gzip-compressed tar",
        ArchiveKind::Xz => "xz-compressed tar",
        ArchiveKind::Zstd => "zstd-compressed tar",
    };
    format!(
        "not a readable {what} archive: corrupt or truncated ({}) after {entries} entries",
        e.kind()
    )
}

/// An I/O error in words that cannot quote the archive: the operating
/// system's message when there is one (here or in its source), else only
/// its kind (the tar crate's own messages may hold header bytes).
fn os_words(e: &std::io::Error) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(code) = x
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            return std::io::Error::from_raw_os_error(code).to_string();
        }
        cur = x.source();
    }
    e.kind().to_string()
}

/// An archive entry's name for a message: control characters escaped (one
/// line), at most 200 characters.
fn shown(name: &Path) -> String {
    let s: String = name.to_string_lossy().escape_debug().collect();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Reads all of `archive` without extracting anything and refuses it
/// unless it is a world the layout can take: at least one entry besides its
/// root; no absolute name and no `..`; no entry below one of its own
/// symlinks (a link out); hard links only to earlier non-directory entries;
/// every directory of [`super::check::dirs`] (with `carry_over`) a
/// directory or absent, `etc/make.conf` a regular file or absent; and the
/// data whole to its end (a corrupt or truncated compression is found here,
/// not half way through a transaction).
pub fn scan(archive: &Path, carry_over: &[PathBuf]) -> Result<(), WorldError> {
    let (reader, kind) = reader(archive)?;
    scan_from(archive, reader, kind, carry_over, false)
}

/// [`scan`] of an opened, decompressing `reader` (`archive` names it in
/// messages). With `shaped` (a bundle's template tree), a symlink where the
/// layout wants a directory is accepted when it is exactly one of shape's
/// own [`super::LINKS`], and nothing may lie below it.
pub(super) fn scan_from(
    archive: &Path,
    reader: Box<dyn Read + '_>,
    kind: ArchiveKind,
    carry_over: &[PathBuf],
    shaped: bool,
) -> Result<(), WorldError> {
    let err = |why: String| WorldError::Extract {
        archive: archive.to_owned(),
        why,
    };
    let dirs = super::check::dirs(carry_over);
    let files: BTreeSet<PathBuf> = super::check::FILES.iter().map(PathBuf::from).collect();
    let mut links: BTreeSet<PathBuf> = BTreeSet::new();
    let mut seen_files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut tar = tar::Archive::new(reader);
    let mut count = 0usize;
    let mut files_in = 0usize;
    for entry in tar.entries().map_err(|e| err(corrupt(kind, count, &e)))? {
        let entry = entry.map_err(|e| err(corrupt(kind, count, &e)))?;
        count += 1;
        let path = entry
            .path()
            .map_err(|e| err(corrupt(kind, count, &e)))?
            .into_owned();
        let name = shown(&path);
        if path.has_root() {
            return Err(err(format!("{name}: an absolute name")));
        }
        let Some(rel) = inside(&path) else {
            return Err(err(format!("{name}: a name with `..`")));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        files_in += 1;
        if let Some(l) = rel.ancestors().skip(1).find(|a| links.contains(*a)) {
            return Err(err(format!(
                "{name}: lies below {}, a symlink of the archive",
                shown(l)
            )));
        }
        let t = entry.header().entry_type();
        let what = if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() || t.is_hard_link() {
            Kind::Symlink
        } else if t.is_file() || t.is_gnu_sparse() || t == tar::EntryType::Continuous {
            Kind::File
        } else if t.is_pax_global_extensions()
            || t.is_pax_local_extensions()
            || t.is_gnu_longname()
            || t.is_gnu_longlink()
        {
            continue;
        } else {
            Kind::Special
        };
        if t.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| err(corrupt(kind, count, &e)))?
                .ok_or_else(|| err(format!("{name}: a hard link without a target")))?;
            let to = inside(&target)
                .filter(|_| !target.has_root())
                .filter(|t| seen_files.contains(t))
                .ok_or_else(|| {
                    err(format!(
                        "{name}: a hard link to {}, which is not an earlier file of the archive",
                        shown(&target)
                    ))
                })?;
            drop(to);
        }
        let shown_rel = PathBuf::from(shown(&rel));
        let our_link = shaped
            && t.is_symlink()
            && entry.link_name().ok().flatten().is_some_and(|target| {
                super::LINKS
                    .iter()
                    .any(|(l, to)| rel == Path::new(l) && target == Path::new(to))
            });
        // What the layout wants at this path, if the entry is not that.
        let wanted = if dirs.contains(&rel) && what != Kind::Dir && !our_link {
            Some("a real directory there (or none)")
        } else if !shaped && files.contains(&rel) && !(what == Kind::File && t.is_file()) {
            Some("a regular file there (or none)")
        } else {
            None
        };
        if let Some(wanted) = wanted {
            let words = if t.is_hard_link() {
                "a hard link"
            } else {
                super::check::kind_words(what)
            };
            return Err(super::check::unfit(&shown_rel, words, wanted));
        }
        if t.is_symlink() {
            links.insert(rel);
        } else if what != Kind::Dir {
            seen_files.insert(rel);
        }
    }
    if files_in == 0 {
        return Err(err("holds no files: an empty archive is not a world".into()));
    }
    // Past the tar's end-of-archive blocks: the compressed stream must be
    // whole to its end (its checksum is checked there).
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| err(corrupt(kind, count, &e)))?;
    Ok(())
}

/// Unpacks `archive` into the existing directory `dest`. An entry with `..`
/// or one that would land outside `dest` through a symlink is refused by
/// tar's `unpack_in` (such an archive is an error, not a partial world); a
/// leading `/` is dropped, so `/etc/passwd` lands at `dest/etc/passwd`.
/// Every path this function itself touches after `unpack_in` (fifos and
/// devices, directories' metadata) is made the same way by [`inside`],
/// never by joining the header's path to `dest`. The archive is opened as
/// [`scan`] opens it, and its errors never quote its bytes either.
pub fn extract(archive: &Path, dest: &Path) -> Result<(), WorldError> {
    let (reader, kind) = reader(archive)?;
    extract_from(archive, reader, kind, dest)
}

/// [`extract`] of an opened, decompressing `reader` (`archive` names it in
/// messages).
pub(super) fn extract_from(
    archive: &Path,
    reader: Box<dyn Read + '_>,
    kind: ArchiveKind,
    dest: &Path,
) -> Result<(), WorldError> {
    let err = |why: String| WorldError::Extract {
        archive: archive.to_owned(),
        why,
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let mut dirs = Vec::new();
    // Directories the archive implies (a parent of an entry) without
    // listing: tar makes them with the process's umask, which would put a
    // host setting into the template (and its id). They get 0755, as every
    // directory jailtx makes itself.
    let mut implied: BTreeSet<PathBuf> = BTreeSet::new();
    let entries = tar.entries().map_err(|e| err(corrupt(kind, 0, &e)))?;
    for (read, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| err(corrupt(kind, read, &e)))?;
        let count = read + 1;
        // The entry's whole name (GNU long names and PAX paths included),
        // made relative as unpack_in makes it.
        let path = entry
            .path()
            .map_err(|e| err(corrupt(kind, count, &e)))?
            .into_owned();
        let name = shown(&path);
        let Some(rel) = inside(&path) else {
            return Err(err(format!(
                "{name}: entry points outside the archive's root"
            )));
        };
        // A directory's mode and mtime are set again at the end (deepest
        // first): writing its contents later would change the mtime.
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            dirs.push((rel.clone(), entry.header().clone()));
        }
        for a in rel.ancestors().skip(1) {
            if a.as_os_str().is_empty() || !implied.insert(a.to_owned()) {
                break;
            }
        }
        let special = kind.is_fifo() || kind.is_character_special() || kind.is_block_special();
        let header = special.then(|| entry.header().clone());
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| err(format!("{name}: {}", os_words(&e))))?;
        if !inside {
            return Err(err(format!(
                "{name}: entry points outside the archive's root"
            )));
        }
        if let (Some(h), false) = (header, rel.as_os_str().is_empty()) {
            // unpack_in vetted the path and left an empty regular file
            // there (the tar crate makes no fifos or device nodes).
            make_special(&h, &dest.join(&rel))
                .map_err(|e| err(format!("{name}: {}", os_words(&e))))?;
        }
    }
    for (rel, _) in &dirs {
        implied.remove(rel);
    }
    for rel in implied {
        let target = dest.join(&rel);
        // As below: only a directory still there is ours to fix.
        if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| err(format!("{}: {}", shown(&rel), os_words(&e))))?;
    }
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    for (rel, header) in dirs {
        // `.` or `/` is the world's root: `dest` itself.
        let target = dest.join(&rel);
        // unpack_in vetted this path; a later entry may have replaced the
        // directory, and then there is nothing of ours to fix.
        if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        apply_dir_meta(&header, &target)
            .map_err(|e| err(format!("{}: {}", shown(&rel), os_words(&e))))?;
    }
    Ok(())
}

/// An entry's path relative to the destination, as tar's `unpack_in` reads
/// it: leading `/`, prefixes and `.` dropped; `None` for any `..`. The
/// empty path is the archive's root.
fn inside(path: &Path) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let mut rel = std::path::PathBuf::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return None,
            Component::Normal(p) => rel.push(p),
        }
    }
    Some(rel)
}

/// Replaces the placeholder file at `path` with the fifo or device node
/// header `h` describes, with its mode, owner and mtime.
fn make_special(h: &tar::Header, path: &Path) -> std::io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, UtimensatFlags, mknod, utimensat};
    let t = h.entry_type();
    let (kind, dev) = if t.is_fifo() {
        (SFlag::S_IFIFO, 0)
    } else {
        let major = h.device_major()?.unwrap_or(0);
        let minor = h.device_minor()?.unwrap_or(0);
        let kind = if t.is_character_special() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        (kind, nix::libc::makedev(major, minor))
    };
    let mode = h.mode()? & 0o7777;
    // Only the placeholder unpack_in just wrote is replaced: never anything
    // else that a crafted name could point at.
    let placeholder = std::fs::symlink_metadata(path)?;
    if !placeholder.is_file() || placeholder.len() != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not the empty file the archive's entry left; refusing to replace it",
            path.display()
        )));
    }
    std::fs::remove_file(path)?;
    mknod(path, kind, Mode::from_bits_truncate(mode as _), dev)?;
    if let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
        std::os::unix::fs::lchown(path, u32::try_from(uid).ok(), u32::try_from(gid).ok())?;
    }
    // After the chown, which clears setuid/setgid bits; and past the umask
    // mknod applied.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(mode as _),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )?;
    let mtime = nix::sys::time::TimeSpec::new(i64::try_from(h.mtime()?).unwrap_or(0) as _, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

fn apply_dir_meta(h: &tar::Header, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
        std::os::unix::fs::lchown(path, u32::try_from(uid).ok(), u32::try_from(gid).ok())?;
    }
    if let Ok(mode) = h.mode() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let Ok(mtime) = h.mtime() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        let f = std::fs::File::open(path)?;
        f.set_modified(t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_by_name() {
        assert_eq!(
            ArchiveKind::of(Path::new("/x/base.txz")),
            Some(ArchiveKind::Xz)
        );
        assert_eq!(
            ArchiveKind::of(Path::new("w.tar.gz")),
            Some(ArchiveKind::Gzip)
        );
        assert_eq!(
            ArchiveKind::of(Path::new("w.TAR")),
            Some(ArchiveKind::Plain)
        );
        assert_eq!(ArchiveKind::of(Path::new("w.zip")), None);
    }

    /// Every compression and name, made by the system's tar from a tree with
    /// what a base system has: a sticky directory, a setuid file of another
    /// owner, a hard link, a symlink, a fifo, a device node, set times.
    #[test]
    fn keeps_modes_owners_times_and_links() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        // Like every test that mounts, this one needs root (README): a
        // skip would pass without checking a thing.
        assert!(
            nix::unistd::geteuid().is_root(),
            "run the tests as root: files of other owners and device nodes"
        );
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("tmp")).unwrap();
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/su"), b"setuid binary").unwrap();
        std::os::unix::fs::chown(src.join("bin/su"), Some(1234), Some(5678)).unwrap();
        std::fs::set_permissions(src.join("bin/su"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::hard_link(src.join("bin/su"), src.join("bin/su2")).unwrap();
        std::os::unix::fs::symlink("su", src.join("bin/link")).unwrap();
        nix::unistd::mkfifo(
            &src.join("tmp/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        nix::sys::stat::mknod(
            &src.join("bin/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        let t = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        std::fs::File::open(src.join("bin/su"))
            .unwrap()
            .set_modified(t(1_000_000_000))
            .unwrap();
        std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::File::open(src.join("tmp"))
            .unwrap()
            .set_modified(t(1_100_000_000))
            .unwrap();
        for (name, flag) in [
            ("w.tar", ""),
            ("w.tar.gz", "z"),
            ("w.txz", "J"),
            ("w.tar.xz", "J"),
        ] {
            let tarball = d.path().join(name);
            let st = std::process::Command::new("tar")
                .arg(format!("-c{flag}f"))
                .arg(&tarball)
                .args(["--numeric-owner", "-C"])
                .arg(&src)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success(), "{name}");
            let dest = d.path().join(format!("out-{name}"));
            std::fs::create_dir(&dest).unwrap();
            extract(&tarball, &dest).unwrap();
            let m = |p: &str| std::fs::symlink_metadata(dest.join(p)).unwrap();
            let su = m("bin/su");
            assert_eq!(su.mode() & 0o7777, 0o4755, "{name}");
            assert_eq!((su.uid(), su.gid()), (1234, 5678), "{name}");
            assert_eq!(su.mtime(), 1_000_000_000, "{name}");
            assert_eq!(su.nlink(), 2, "{name}: the hard link stays a link");
            assert_eq!(m("bin/su2").ino(), su.ino(), "{name}");
            assert_eq!(
                std::fs::read_link(dest.join("bin/link")).unwrap(),
                Path::new("su"),
                "{name}"
            );
            assert!(m("tmp/fifo").file_type().is_fifo(), "{name}");
            let null = m("bin/null");
            assert!(null.file_type().is_char_device(), "{name}");
            assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3), "{name}");
            let tmp = m("tmp");
            assert_eq!(tmp.mode() & 0o7777, 0o1777, "{name}");
            assert_eq!(tmp.mtime(), 1_100_000_000, "{name}: set after its contents");
        }
    }

    /// Absolute names land inside the destination (as tar's unpack_in
    /// puts them) for everything extract does itself too: a fifo or a
    /// directory named by an absolute path never touches the host's file or
    /// directory of that name. And a fifo with a GNU long name is made at
    /// its whole name, not at the header's first 100 bytes.
    #[test]
    fn absolute_and_long_names_stay_inside() {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"host file").unwrap();
        let victim_dir = d.path().join("victimdir");
        std::fs::create_dir(&victim_dir).unwrap();
        std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tarball = d.path().join("abs.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
        let raw = |b: &mut tar::Builder<std::fs::File>, name: &Path, kind, mode| {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(kind);
            let bytes = name.as_os_str().as_encoded_bytes();
            // set_path refuses absolute names: write the bytes directly.
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        };
        raw(&mut b, &victim, tar::EntryType::Fifo, 0o600);
        raw(&mut b, &victim_dir, tar::EntryType::Directory, 0o700);
        let long = format!("{}/fifo", "d".repeat(120));
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Fifo);
        b.append_data(&mut h, &long, std::io::empty()).unwrap();
        b.finish().unwrap();
        drop(b);

        let dest = d.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        extract(&tarball, &dest).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"host file");
        let host_dir = std::fs::metadata(&victim_dir).unwrap();
        assert_eq!(host_dir.permissions().mode() & 0o7777, 0o755);
        let inner = dest.join(victim.strip_prefix("/").unwrap());
        assert!(
            std::fs::symlink_metadata(&inner)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let inner_dir = dest.join(victim_dir.strip_prefix("/").unwrap());
        assert_eq!(
            std::fs::metadata(&inner_dir).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        let fifo = std::fs::symlink_metadata(dest.join(&long)).unwrap();
        assert!(fifo.file_type().is_fifo(), "made at its whole name");
    }

    #[test]
    fn refuses_an_entry_escaping_the_root() {
        let d = tempfile::tempdir().unwrap();
        let tarball = d.path().join("evil.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Write the name bytes directly: set_path itself refuses `..`.
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
        drop(b);
        let dest = d.path().join("w");
        std::fs::create_dir(&dest).unwrap();
        assert!(extract(&tarball, &dest).is_err());
        assert!(!d.path().join("escape").exists());
    }
}
