//! FreeBSD's mount table: read natively with getfsstat(2) on FreeBSD, and
//! parsed from `mount -p` text (the simulated host, dry runs elsewhere) or
//! from an fstab(5) file.
//!
//! The two text forms differ, and the difference matters: fstab(5) files
//! escape blanks as `\040` (getfsent(3) decodes them), while `mount -p`
//! prints names raw (`putfsent()` in sbin/mount/mount.c), so a mount point
//! with a space in it holds a space. Splitting `mount -p` on blanks would
//! never find such a mount point; the kernel's own table has no text to
//! split, which is why FreeBSD reads that instead.

use std::path::PathBuf;

/// One mounted file system (or one fstab(5) line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub src: PathBuf,
    pub dst: PathBuf,
    pub fstype: String,
    pub options: String,
}

/// The blanks `putfsent()` writes after a device or mount point name of
/// `len` bytes: a tab for each of the 8/16/24 columns the name falls short
/// of, a single space after a longer name.
pub fn putfsent_pad(len: usize) -> &'static str {
    match len {
        0..8 => "\t\t\t",
        8..16 => "\t\t",
        16..24 => "\t",
        _ => " ",
    }
}

fn blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The last blank-separated field of `s` and what comes before it (blanks
/// trimmed); none when `s` is a single field.
fn last_field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_end_matches(blank);
    let at = s.rfind(blank)?;
    let field = &s[at + 1..];
    Some((s[..at].trim_end_matches(blank), field)).filter(|_| !field.is_empty())
}

/// Splits `DEVICE<pad>MOUNTPOINT` where either name may hold blanks. The
/// separator is the blank run that is exactly the padding `putfsent()`
/// gives the device's length, with a mount point that is a path; the first
/// such split wins (names that fool it need a blank followed by `/` after
/// 24 bytes of device name, and on FreeBSD itself the table is read
/// natively, see [`native`]). A line padded some other way falls back to
/// its first blank run before a `/`.
fn split_names(head: &str) -> Option<(&str, &str)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while let Some(off) = head[i..].find(blank) {
        let start = i + off;
        let end = head[start..]
            .find(|c| !blank(c))
            .map_or(head.len(), |n| start + n);
        if start > 0 && end < head.len() {
            runs.push((start, end));
        }
        i = end;
        if i >= head.len() {
            break;
        }
    }
    let split = |(a, b): (usize, usize)| (&head[..a], &head[b..]);
    let path_after = |r: &&(usize, usize)| head[r.1..].starts_with('/');
    runs.iter()
        .filter(|(a, b)| &head[*a..*b] == putfsent_pad(*a))
        .find(path_after)
        .or_else(|| runs.iter().find(path_after))
        .or_else(|| runs.first())
        .map(|r| split(*r))
}

/// The mounts in `mount -p` output: `DEVICE MOUNTPOINT TYPE OPTIONS DUMP
/// PASS`, names raw and padded as `putfsent()` pads them. Read from the
/// right, where the fields hold no blanks; a line that does not end in the
/// two numbers is skipped.
pub fn parse_mount_p(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let (rest, pass) = last_field(line)?;
            let (rest, dump) = last_field(rest)?;
            let numeric = |f: &str| f.bytes().all(|b| b.is_ascii_digit());
            if !numeric(pass) || !numeric(dump) {
                return None;
            }
            let (rest, options) = last_field(rest)?;
            let (head, fstype) = last_field(rest)?;
            let (src, dst) = split_names(head)?;
            Some(MountEntry {
                src: src.into(),
                dst: dst.into(),
                fstype: fstype.to_owned(),
                options: options.to_owned(),
            })
        })
        .collect()
}

/// Decodes fstab(5)'s octal escapes (`\040` for a space), as getfsent(3)
/// and jail(8) do with strunvis(3).
pub fn unvis(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The lines of an fstab(5) file (device, mount point, type, options, …),
/// blank-separated with `\ooo` escapes, as jailtx writes `fstab.NAME`.
/// Lines with fewer than three fields are skipped.
pub fn parse_fstab(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 {
                return None;
            }
            Some(MountEntry {
                src: unvis(f[0]).into(),
                dst: unvis(f[1]).into(),
                fstype: f[2].to_owned(),
                options: f.get(3).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// The kernel's mount table through getfsstat(2), what getmntinfo(3) and
/// `mount -p` read: `f_mntfromname`, `f_mntonname`, `f_fstypename` as the
/// kernel holds them, no text in between. getfsstat rather than
/// getmntinfo: getmntinfo keeps its buffer in a static shared by every
/// thread, getfsstat fills one of ours.
#[cfg(target_os = "freebsd")]
pub fn native() -> std::io::Result<Vec<MountEntry>> {
    use nix::libc;
    use std::os::unix::ffi::OsStringExt;

    fn name(field: &[libc::c_char]) -> Vec<u8> {
        field
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| c.to_ne_bytes()[0])
            .collect()
    }
    let size = std::mem::size_of::<libc::statfs>();
    loop {
        // SAFETY: a null buffer asks for the number of mounts only.
        let n = unsafe { libc::getfsstat(std::ptr::null_mut(), 0, libc::MNT_NOWAIT) };
        let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
        // Room for a few mounts made between the two calls.
        let cap = n + 8;
        let bytes = libc::c_long::try_from(cap * size)
            .map_err(|_| std::io::Error::other("mount table too large"))?;
        let mut buf: Vec<libc::statfs> = Vec::with_capacity(cap);
        // SAFETY: `buf` has room for `cap` records, `bytes` says so, and
        // getfsstat writes whole records up to it and returns how many.
        let got = unsafe { libc::getfsstat(buf.as_mut_ptr(), bytes, libc::MNT_NOWAIT) };
        let got = usize::try_from(got).map_err(|_| std::io::Error::last_os_error())?;
        if got >= cap {
            // The table filled the room: it may have grown, read it again.
            continue;
        }
        // SAFETY: the kernel initialised the first `got` records.
        unsafe { buf.set_len(got) };
        return Ok(buf
            .iter()
            .map(|f| {
                let ro = f.f_flags & u64::from(libc::MNT_RDONLY.unsigned_abs()) != 0;
                MountEntry {
                    src: std::ffi::OsString::from_vec(name(&f.f_mntfromname)).into(),
                    dst: std::ffi::OsString::from_vec(name(&f.f_mntonname)).into(),
                    fstype: String::from_utf8_lossy(&name(&f.f_fstypename)).into_owned(),
                    options: if ro { "ro" } else { "rw" }.to_owned(),
                }
            })
            .collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_fields_are_unescaped() {
        let t = "/tmp/a\\040b\t/mnt/x\\134y\tnullfs\trw\t0 0\n# c\n";
        let m = parse_fstab(t);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].src, PathBuf::from("/tmp/a b"));
        assert_eq!(m[0].dst, PathBuf::from("/mnt/x\\y"));
    }

    #[test]
    fn the_padding_picks_the_split_between_names_with_blanks() {
        // 24 bytes or more of device: one space, then a mount point whose
        // own name holds a space followed by a `/`-less word.
        let dev = "/usr/home/long jails/j/mroot";
        let line = format!("{dev} /usr/home/long jails/j/ns\tnullfs\tro\t\t0 0\n");
        let m = parse_mount_p(&line);
        assert_eq!(m[0].src, PathBuf::from(dev));
        assert_eq!(m[0].dst, PathBuf::from("/usr/home/long jails/j/ns"));
        // Not `mount -p`: no dump and pass.
        assert!(parse_mount_p("a b c\n").is_empty());
        assert!(parse_mount_p("\n \t\nx 0 0\n").is_empty());
    }
}
