//! Opening jailtx's own files (the config, and everything in the state dir) without trusting what is there.
//!
//! SPEC section 5: a file in the state dir that jailtx did not write is
//! untrusted. Every such file is opened here, `O_NOFOLLOW|O_NONBLOCK`, and
//! `fstat`ed before a byte is read or written: it must be a regular file
//! (a symlink is never followed, a fifo never blocks, a device is never
//! read), owned by root or by the user running jailtx (the same user, since
//! jailtx runs as root; a non-root build tree works too), writable by
//! nobody else (sshd's StrictModes), with one link only (a hard link to a
//! host file is not a state file), and not larger than its kind may be.
//! Anything else is refused naming the file, before anything changed.
//! Directories of the state dir get the same owner and mode rule and must
//! not be symlinks.
//!
//! Errors name the path and what was found, never the file's contents.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// The largest config file read: a config is a few dozen lines.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;
/// The largest jail or etc-merge record read: each is three short fields.
pub const MAX_RECORD_BYTES: u64 = 1 << 20;
/// The largest manifest read (manifests are decoded whole): about ten
/// million entries, far beyond any FreeBSD world (some 30,000 files).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 30;

/// What a state file is, for its size cap and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `jailtx.toml` or `--config`; the admin's, so a hard link is fine.
    Config,
    /// A jail record or an etc-merge record.
    Record,
    Manifest,
    /// The journal or a history file: their own format bounds their reading.
    Journal,
    /// The lock: only its first bytes (a pid) are ever read.
    Lock,
}

impl Kind {
    fn max_bytes(self) -> Option<u64> {
        match self {
            Kind::Config => Some(MAX_CONFIG_BYTES),
            Kind::Record => Some(MAX_RECORD_BYTES),
            Kind::Manifest => Some(MAX_MANIFEST_BYTES),
            Kind::Journal | Kind::Lock => None,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Config => "config file",
            Kind::Record => "record",
            Kind::Manifest => "manifest",
            Kind::Journal => "journal file",
            Kind::Lock => "lock file",
        }
    }
}

/// What to do about it, for every refusal of a file.
const FIX_FILE: &str = "remove it or make it a root-owned regular file with mode 0644";
/// The same, for a directory of the state dir.
const FIX_DIR: &str = "remove it or make it a root-owned directory with mode 0700";

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is {what}, not a regular file; {FIX_FILE}")]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{path} is {what}, not a directory; {FIX_DIR}")]
    NotDir { path: PathBuf, what: &'static str },
    #[error("{path} is owned by uid {uid}, not root; {}", fix(*.dir))]
    Owner { path: PathBuf, uid: u32, dir: bool },
    #[error("{path} has mode {mode:04o}, writable by group or others; {}", fix(*.dir))]
    Writable { path: PathBuf, mode: u32, dir: bool },
    #[error("{path} has {links} hard links, so it is not a file jailtx wrote; {FIX_FILE}")]
    Linked { path: PathBuf, links: u64 },
    #[error("{path} is {size} bytes, more than a {noun} may be ({max}); {FIX_FILE}")]
    TooBig {
        path: PathBuf,
        size: u64,
        max: u64,
        noun: &'static str,
    },
    #[error("{path} is not UTF-8 text; {FIX_FILE}")]
    NotText { path: PathBuf },
}

fn fix(dir: bool) -> &'static str {
    if dir { FIX_DIR } else { FIX_FILE }
}

/// What a file that is not a regular one (or a directory) is, for messages.
fn kind_of(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a regular file"
    }
}

/// Owner and mode: root's (or the running user's), writable by no one else.
fn check_owner_mode(path: &Path, m: &Metadata, dir: bool) -> Result<(), StateFileError> {
    let uid = m.uid();
    if uid != 0 && uid != nix::unistd::geteuid().as_raw() {
        return Err(StateFileError::Owner {
            path: path.to_owned(),
            uid,
            dir,
        });
    }
    if m.mode() & 0o022 != 0 {
        return Err(StateFileError::Writable {
            path: path.to_owned(),
            mode: m.mode() & 0o7777,
            dir,
        });
    }
    Ok(())
}

/// Checks an open file's fstat against the rules of the module doc.
fn check_file(path: &Path, file: &File, kind: Kind) -> Result<(), StateFileError> {
    let m = file.metadata().map_err(|source| StateFileError::Open {
        path: path.to_owned(),
        source,
    })?;
    if !m.file_type().is_file() {
        return Err(StateFileError::NotRegular {
            path: path.to_owned(),
            what: kind_of(&m),
        });
    }
    check_owner_mode(path, &m, false)?;
    if kind != Kind::Config && m.nlink() > 1 {
        return Err(StateFileError::Linked {
            path: path.to_owned(),
            links: m.nlink(),
        });
    }
    if let Some(max) = kind.max_bytes()
        && m.len() > max
    {
        return Err(too_big(path, m.len(), max, kind));
    }
    Ok(())
}

fn too_big(path: &Path, size: u64, max: u64, kind: Kind) -> StateFileError {
    StateFileError::TooBig {
        path: path.to_owned(),
        size,
        max,
        noun: kind.noun(),
    }
}

/// The open error for `path`, saying "a symlink" when O_NOFOLLOW refused
/// one (ELOOP on Linux, EMLINK on FreeBSD) rather than a bare errno.
fn open_error(path: &Path, source: io::Error) -> StateFileError {
    let refused_link = matches!(
        source.raw_os_error(),
        Some(nix::libc::ELOOP) | Some(nix::libc::EMLINK)
    );
    if refused_link && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return StateFileError::NotRegular {
            path: path.to_owned(),
            what: "a symlink",
        };
    }
    StateFileError::Open {
        path: path.to_owned(),
        source,
    }
}

/// Opens with `opts` plus O_NOFOLLOW|O_NONBLOCK (a fifo opens at once and
/// is then refused by the fstat), checks, and clears O_NONBLOCK again.
fn open_with(
    path: &Path,
    opts: &mut OpenOptions,
    kind: Kind,
) -> io::Result<Result<File, StateFileError>> {
    let file = opts
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    if let Err(e) = check_file(path, &file, kind) {
        return Ok(Err(e));
    }
    let flags = fcntl(&file, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(&file, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(Ok(file))
}

/// Opens an existing state file read-only; `None` when there is none.
pub fn open_read(path: &Path, kind: Kind) -> Result<Option<File>, StateFileError> {
    match open_with(path, OpenOptions::new().read(true), kind) {
        Ok(checked) => checked.map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(open_error(path, e)),
    }
}

/// Opens a state file read-write, creating it with mode 0600 when missing
/// (never truncating: the callers own what is inside).
pub fn open_rw(path: &Path, kind: Kind) -> Result<File, StateFileError> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600);
    match open_with(path, &mut opts, kind) {
        Ok(checked) => checked,
        Err(e) => Err(open_error(path, e)),
    }
}

/// The whole of a state file, at most its kind's cap (checked before
/// reading and again while reading, should it grow); `None` when missing.
pub fn read(path: &Path, kind: Kind) -> Result<Option<Vec<u8>>, StateFileError> {
    let Some(file) = open_read(path, kind)? else {
        return Ok(None);
    };
    let max = kind.max_bytes().unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| StateFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(too_big(path, bytes.len() as u64, max, kind));
    }
    Ok(Some(bytes))
}

/// [`read`] as UTF-8 text; the error for other bytes does not quote them.
pub fn read_to_string(path: &Path, kind: Kind) -> Result<Option<String>, StateFileError> {
    match read(path, kind)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StateFileError::NotText {
                path: path.to_owned(),
            }),
    }
}

/// Whether the state-dir directory `path` exists, refusing a symlink, a
/// non-directory, or one others could write into (they could swap a state
/// file between its check and its use).
pub fn check_dir(path: &Path) -> Result<bool, StateFileError> {
    let m = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(StateFileError::Open {
                path: path.to_owned(),
                source,
            });
        }
    };
    if !m.is_dir() {
        return Err(StateFileError::NotDir {
            path: path.to_owned(),
            what: kind_of(&m),
        });
    }
    check_owner_mode(path, &m, true)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"x = 1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_plain_file_reads_and_a_missing_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "a", 0o644);
        assert_eq!(read(&p, Kind::Record).unwrap().unwrap(), b"x = 1\n");
        assert!(read(&d.path().join("b"), Kind::Record).unwrap().is_none());
    }

    #[test]
    fn links_fifos_and_loose_modes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let secret = file(d.path(), "secret", 0o600);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = read(&link, Kind::Record).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let e = open_rw(&link, Kind::Lock).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&fifo, Kind::Config).unwrap_err().to_string();
        assert!(e.contains("is a fifo"), "{e}");
        let e = open_rw(&fifo, Kind::Journal).unwrap_err().to_string();
        assert!(e.contains("is a fifo"), "{e}");
        let loose = file(d.path(), "loose", 0o664);
        let e = read(&loose, Kind::Record).unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        let hard = d.path().join("hard");
        std::fs::hard_link(&secret, &hard).unwrap();
        let e = read(&hard, Kind::Record).unwrap_err().to_string();
        assert!(e.contains("2 hard links"), "{e}");
        assert!(read(&hard, Kind::Config).is_ok());
    }

    #[test]
    fn a_huge_file_is_refused_unread() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path(), "big", 0o644);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(MAX_RECORD_BYTES + 1)
            .unwrap();
        let e = read(&p, Kind::Record).unwrap_err().to_string();
        assert!(e.contains("more than a record may be"), "{e}");
    }

    #[test]
    fn a_symlinked_or_open_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_dir(&real).unwrap());
        assert!(!check_dir(&d.path().join("none")).unwrap());
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(
            check_dir(&link)
                .unwrap_err()
                .to_string()
                .contains("a symlink")
        );
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&real).is_err());
    }
}
