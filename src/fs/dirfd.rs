//! Directory-descriptor helpers shared by copy and remove: no-follow, no-mount-crossing opens and listing.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use nix::dir::{Dir, Type};
#[cfg(target_os = "linux")]
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
#[cfg(target_os = "linux")]
use nix::fcntl::{OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// Cleared the first time the kernel (or a seccomp filter) answers ENOSYS to
/// openat2(2), so later opens go straight to the openat(2) fallback.
#[cfg(target_os = "linux")]
static HAVE_OPENAT2: AtomicBool = AtomicBool::new(true);

/// O_NOATIME where there is one (Linux): reading a tree to copy or hash it
/// then leaves its atimes alone. It needs ownership or CAP_FOWNER, so callers
/// drop it after the first EPERM. Elsewhere no flag (FreeBSD has none; its
/// templates are mounted read-only or with noatime anyway).
#[cfg(target_os = "linux")]
pub(crate) const NOATIME: OFlag = OFlag::O_NOATIME;
#[cfg(not(target_os = "linux"))]
pub(crate) const NOATIME: OFlag = OFlag::empty();

/// Opens `name`, a single component inside `parent`, as a directory. Never
/// follows a symlink (ELOOP/ENOTDIR instead) and refuses with EXDEV when
/// `name` is a mount point, bind mounts of the same filesystem included.
///
/// The EXDEV answer needs openat2(2) (Linux 5.6); on older kernels and on
/// FreeBSD this is openat(2) and callers must also compare `st_dev` with the
/// tree root's, which catches every mount except a bind (nullfs) mount of
/// the same filesystem.
pub(crate) fn open_subdir(
    parent: BorrowedFd<'_>,
    name: &CStr,
    extra: OFlag,
) -> nix::Result<OwnedFd> {
    let flags = extra | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    #[cfg(target_os = "linux")]
    if HAVE_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_BENEATH,
        );
        match openat2(parent, name, how) {
            Err(Errno::ENOSYS) => HAVE_OPENAT2.store(false, Ordering::Relaxed),
            // Some seccomp profiles answer EPERM to syscalls they do not
            // know; openat then gives the real answer. The flag stays set:
            // an LSM denial must not switch the check off for good.
            Err(Errno::EPERM) => {}
            other => return other,
        }
    }
    openat(parent, name, flags, Mode::empty())
}

/// Opens `..` of `child`: how a walk gets back a parent descriptor it closed
/// to stay under the descriptor limit. Callers compare (dev, ino) with what
/// they recorded, so a directory moved away meanwhile is detected.
pub(super) fn open_dotdot(child: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    openat(
        child,
        c"..",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// All names in `dir` except `.` and `..`, with the type readdir reports
/// (`None` where the filesystem does not say). Read fully up front so that
/// creating or unlinking entries never disturbs the iteration.
pub(super) fn list(dir: &mut Dir) -> nix::Result<Vec<(CString, Option<Type>)>> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        names.push((name.to_owned(), entry.file_type()));
    }
    Ok(names)
}

/// `dir/name` for messages and for the hard-link map.
pub(super) fn join(dir: &Path, name: &CStr) -> PathBuf {
    dir.join(OsStr::from_bytes(name.to_bytes()))
}

/// A path as the C string the *at calls take; a NUL byte cannot name a file.
pub(super) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The directory that holds `path`'s entry: `.` for a bare name, `/` for `/`.
pub(super) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => path,
    }
}

/// `mode_t` bits of a stat result, as the `Mode` nix takes; only the
/// permission bits (07777) are kept. Takes `st_mode` as the platform types
/// it (u32 on Linux, u16 on FreeBSD).
pub(crate) fn perm(st_mode: impl Into<u32>) -> Mode {
    // The cast is to the platform's mode_t; 07777 fits in every one.
    #[allow(clippy::unnecessary_cast)]
    Mode::from_bits_truncate((st_mode.into() & 0o7777) as nix::libc::mode_t)
}
