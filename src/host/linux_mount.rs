//! Bind mounts that land only on what jailtx made: each source and target is
//! opened `O_PATH|O_NOFOLLOW` one component at a time (a symlink anywhere is
//! refused), checked to be a directory, and mounted through its descriptor,
//! so that nothing swapped in after the check can redirect the mount.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::libc;

/// Why a mount path was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "{0} is a symlink; jailtx mounts only onto directories it made (replace it with a directory)"
    )]
    Symlink(std::path::PathBuf),
    #[error("{0} is not a directory; jailtx mounts only onto directories it made")]
    NotDir(std::path::PathBuf),
    #[error("{0} is not an absolute, normal path")]
    NotNormal(std::path::PathBuf),
    #[error("open {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Opens the directory `path` as an `O_PATH` descriptor, walking from `/`
/// one component at a time with `O_NOFOLLOW`: a symlink in any component,
/// `..`, or a last component that is not a directory is refused. Mount
/// points on the way are crossed, as any lookup crosses them.
pub fn open_dir(path: &Path) -> Result<OwnedFd, Refused> {
    if !path.is_absolute() {
        return Err(Refused::NotNormal(path.to_owned()));
    }
    let open = |dir: libc::c_int, name: &CString, at: &Path| -> Result<OwnedFd, Refused> {
        // SAFETY: `name` is NUL-terminated and `dir` an open descriptor (or
        // AT_FDCWD with an absolute name); the result is checked.
        let fd = unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Refused::Open {
                path: at.to_owned(),
                source: last_err(),
            });
        }
        // SAFETY: openat returned a new descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let root = CString::new("/").map_err(|_| Refused::NotNormal(path.to_owned()))?;
    let mut fd = open(libc::AT_FDCWD, &root, Path::new("/"))?;
    let mut at = std::path::PathBuf::from("/");
    for c in path.components() {
        let name = match c {
            Component::RootDir => continue,
            Component::Normal(n) => n,
            _ => return Err(Refused::NotNormal(path.to_owned())),
        };
        at.push(name);
        let cname =
            CString::new(name.as_bytes()).map_err(|_| Refused::NotNormal(path.to_owned()))?;
        let next = open(fd.as_raw_fd(), &cname, &at)?;
        let st = nix::sys::stat::fstat(&next).map_err(|e| Refused::Open {
            path: at.clone(),
            source: e.into(),
        })?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {}
            libc::S_IFLNK => return Err(Refused::Symlink(at)),
            _ => return Err(Refused::NotDir(at)),
        }
        fd = next;
    }
    Ok(fd)
}

/// Whether the directory `fd` refers to is the root of a mount, from
/// statx's `STATX_ATTR_MOUNT_ROOT` (Linux 5.8+); none when the kernel does
/// not say.
pub fn is_mount_root(fd: &OwnedFd) -> Option<bool> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: an empty path with AT_EMPTY_PATH stats `fd` itself; `stx` is
    // a buffer of the size statx writes.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_NO_AUTOMOUNT,
            0,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return None;
    }
    // SAFETY: statx returned 0, so it filled the struct.
    let stx = unsafe { stx.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0)
}

/// Bind-mounts the directory `src` on the directory `dst` (both opened by
/// [`open_dir`]), `nodev`, read-only when asked. The new mount API (Linux
/// 5.12+) builds the mount detached with its flags already set and attaches
/// it in one step, so no read-write or device-honouring mount is ever
/// visible, and nothing is left to undo when a step fails.
pub fn bind(src: &OwnedFd, dst: &OwnedFd, read_only: bool) -> std::io::Result<()> {
    bind_new_api(src, dst, read_only).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => std::io::Error::other(
            "this kernel has no open_tree/mount_setattr (Linux 5.12 or later is needed)",
        ),
        _ => e,
    })
}

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn bind_new_api(src: &OwnedFd, dst: &OwnedFd, read_only: bool) -> std::io::Result<()> {
    // SAFETY: open_tree on a descriptor with an empty path; the result is
    // checked and owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            src.as_raw_fd(),
            c"".as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint
                | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(last_err());
    }
    let tree = i32::try_from(tree).map_err(|_| std::io::Error::other("open_tree: bad fd"))?;
    // SAFETY: open_tree returned a new descriptor nothing else owns; the
    // detached mount it holds goes away when it is closed unattached.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let mut set = libc::MOUNT_ATTR_NODEV;
    if read_only {
        set |= libc::MOUNT_ATTR_RDONLY;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    // SAFETY: move_mount between two descriptors with empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            dst.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(last_err());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_dir_refuses_symlinks_anywhere_and_non_directories() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::write(base.join("a/f"), "x").unwrap();
        std::os::unix::fs::symlink(base.join("a"), base.join("l")).unwrap();
        assert!(open_dir(&base.join("a/b")).is_ok());
        let e = open_dir(&base.join("l/b")).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let e = open_dir(&base.join("l")).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let e = open_dir(&base.join("a/f")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        assert!(open_dir(&base.join("a/../a")).is_err());
        assert!(open_dir(Path::new("relative")).is_err());
        assert!(matches!(
            open_dir(&base.join("missing")),
            Err(Refused::Open { .. })
        ));
    }
}
