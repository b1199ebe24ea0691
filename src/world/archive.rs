//! Unpacking `.tar`, `.tar.gz`/`.tgz` and `.txz`/`.tar.xz` (FreeBSD's
//! `base.txz`) worlds with their modes, owners, times and links.

use std::io::Read;
use std::path::Path;

use super::WorldError;

/// The compression of an archive, told by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Plain,
    Gzip,
    Xz,
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
        } else {
            None
        }
    }
}

/// Unpacks `archive` into the existing directory `dest`. Entries that would
/// land outside `dest` (absolute paths, `..`, through a symlink) are refused
/// by tar's `unpack_in`; such an archive is an error, not a partial world.
pub fn extract(archive: &Path, dest: &Path) -> Result<(), WorldError> {
    let err = |why: String| WorldError::Extract {
        archive: archive.to_owned(),
        why,
    };
    let kind = ArchiveKind::of(archive)
        .ok_or_else(|| err("not a .tar, .tar.gz, .tgz, .txz or .tar.xz file".into()))?;
    let file = std::fs::File::open(archive).map_err(|e| err(e.to_string()))?;
    let file = std::io::BufReader::with_capacity(1 << 20, file);
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Plain => Box::new(file),
        ArchiveKind::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
        ArchiveKind::Xz => Box::new(xz2::read::XzDecoder::new(file)),
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let mut dirs = Vec::new();
    for entry in tar.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        // A directory's mode and mtime are set again at the end (deepest
        // first): writing its contents later would change the mtime.
        if entry.header().entry_type().is_dir() {
            dirs.push(entry.header().clone());
        }
        let inside = entry
            .unpack_in(dest)
            .map_err(|e| err(format!("{name}: {e}")))?;
        if !inside {
            return Err(err(format!(
                "{name}: entry points outside the archive's root"
            )));
        }
    }
    dirs.sort_by_key(|h| std::cmp::Reverse(h.path().map(|p| p.components().count()).unwrap_or(0)));
    for header in dirs {
        let path = header.path().map_err(|e| err(e.to_string()))?.into_owned();
        let target = dest.join(&path);
        // unpack_in vetted this path; a later entry may have replaced the
        // directory, and then there is nothing of ours to fix.
        if !std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        apply_dir_meta(&header, &target).map_err(|e| err(format!("{}: {e}", path.display())))?;
    }
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
