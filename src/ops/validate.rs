//! Checks on user input (jail names, hostnames, addresses, sources) made
//! before any plan exists: a bad value is one line, exit 2, nothing changed
//! (an [`OpsError`] the CLI maps to 2).

use std::net::IpAddr;
use std::path::Path;

use crate::plan::{Source, check_jail_name};
use crate::world::ArchiveKind;

use super::OpsError;

/// Jail names: the rules are [`check_jail_name`]'s (the one place they
/// live, in the plan layer, where [`crate::plan::JailName::parse`] uses them).
pub fn jail_name(name: &str) -> Result<(), OpsError> {
    Ok(check_jail_name(name)?)
}

/// RFC 1123 host names: dot-separated labels of 1 to 63 letters, digits and
/// hyphens, not starting or ending with a hyphen; 253 characters at most.
pub fn hostname(h: &str) -> Result<(), OpsError> {
    let bad = |why: &str| Err(format!("hostname {h:?} is invalid: {why}").into());
    if h.is_empty() || h.len() > 253 {
        return bad("it must be 1 to 253 characters");
    }
    for label in h.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("use only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with a hyphen");
        }
    }
    Ok(())
}

/// An IPv4 or IPv6 address a jail can serve on, in canonical form: an
/// IPv4-mapped IPv6 address (`::ffff:127.0.9.50`) is the IPv4 address it
/// maps, so two spellings of one address compare equal (the duplicate check)
/// and are recorded the same way. The unspecified address, the IPv4
/// broadcast and multicast addresses (either family) are refused: none of
/// them is one host's address.
pub fn ip(addr: &str) -> Result<IpAddr, OpsError> {
    let parsed: IpAddr = addr
        .parse()
        .map_err(|_| format!("IP address {addr:?} is not a valid IPv4 or IPv6 address"))?;
    let ip = parsed.to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(format!(
            "IP address {addr} cannot be a jail's address (unspecified, broadcast or multicast); use the jail's own unicast address"
        ).into());
    }
    Ok(ip)
}

/// The world source exists and is of a kind jailtx reads.
pub fn source(src: &Source) -> Result<(), OpsError> {
    match src {
        Source::Dir(d) => {
            if !d.is_dir() {
                return Err(format!("--from-dir {}: not a directory", d.display()).into());
            }
        }
        Source::Tar(f) => {
            if !f.is_file() {
                return Err(format!("--from-tar {}: no such file", f.display()).into());
            }
            if ArchiveKind::of(f).is_none() {
                return Err(format!(
                    "--from-tar {}: expected .tar, .tar.gz, .tgz, .txz or .tar.xz",
                    f.display()
                )
                .into());
            }
        }
        Source::Bundle(crate::plan::BundleSource { file, .. }) => {
            if !file.is_file() {
                return Err(format!("--from-bundle {}: no such file", file.display()).into());
            }
        }
        Source::Cmd(c) => {
            if !c.contains("{dest}") {
                return Err(format!(
                    "--from-cmd {c:?}: the command must say where to install with {{dest}}"
                )
                .into());
            }
        }
    }
    Ok(())
}

/// A path handed to a jail (its root) must not pass through a symlink. The
/// kernel would take one (jail(2) resolves `path` itself), but `jls`
/// reports the resolved path and jailtx knows its running jails by name and
/// path (`host::running_jid`): a jail started on a symlinked path would look
/// stopped, and be started again. So jailtx stores and uses physical paths.
pub fn physical_path(p: &Path) -> Result<(), OpsError> {
    let mut cur = std::path::PathBuf::new();
    for c in p.components() {
        cur.push(c);
        if std::fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "{} passes through the symlink {}; use the physical path (jls reports jails by their resolved path)",
                p.display(),
                cur.display()
            )
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "ns",
            "mail",
            "www",
            "a_b-9",
            "_1",
            "1a",
            "9-",
            "a-",
            &"x".repeat(63),
        ] {
            assert!(jail_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a.b",
            "a b",
            "mroot",
            "mroot2",
            "mroot.20260101",
            "skel",
            &"x".repeat(64),
            "ü",
            // jail(8)'s getopt: options, not names.
            "-x",
            "-1",
            "-c",
            "--",
            // config.c: a JID as well as a name.
            "0",
            "0123",
            "123",
        ] {
            assert!(jail_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_canonical_and_unicast() {
        assert_eq!(ip("::ffff:127.0.9.50").unwrap().to_string(), "127.0.9.50");
        assert_eq!(ip("127.0.9.50").unwrap().to_string(), "127.0.9.50");
        assert_eq!(ip("fd00::1").unwrap().to_string(), "fd00::1");
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "239.1.2.3",
            "::",
            "ff02::1",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::ffff:224.0.0.1",
        ] {
            assert!(ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames() {
        for ok in ["ns.example.org", "a", "a-b.c9"] {
            assert!(hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a.org", "a-.org", "a..b", "a_b.org", &"a".repeat(64)] {
            assert!(hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ips() {
        assert!(ip("192.168.3.17").is_ok());
        assert!(ip("::1").is_ok());
        for bad in ["192.168.3", "0.0.0.0", "224.0.0.1", "1.2.3.4/24", "host"] {
            assert!(ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinked_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("home")).unwrap();
        let e = physical_path(&d.path().join("home/j"))
            .unwrap_err()
            .to_string();
        // The reason is jls and the match by name and path, not jail(8): the
        // kernel resolves a symlinked path itself.
        assert!(e.contains("jls") && !e.contains("refuses"), "{e}");
        assert!(physical_path(&d.path().join("real/j")).is_ok());
    }
}
