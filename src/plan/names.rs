//! Names checked once at the edge: a jail name, an archive name, a backend.
//!
//! Each is a type whose only constructor is its parse, so a planner that
//! holds one never checks the string again (the CLI parses its arguments
//! into these before any lock; ripgrep's low-level to high-level arguments
//! are the model). Each serialises as the string it was parsed from.

use std::fmt;

use serde::Serialize;

/// Why a name was refused. The messages are the one-line errors of SPEC
/// section 4 (bad input, exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("jail name {0:?} is invalid: use 1 to 63 of A-Z a-z 0-9 _ -")]
    JailInvalid(String),
    #[error(
        "jail name {0:?} is invalid: it must start with a letter, a digit or _ (jail(8) reads a leading - as an option)"
    )]
    JailDash(String),
    #[error("jail name {0:?} is invalid: an all-digit name is a JID to jail(8); add a letter or _")]
    JailDigits(String),
    #[error("jail name {0:?} is reserved: j/{0} belongs to the template layout")]
    JailReserved(String),
    #[error("--to {0:?}: expected an archive name, mroot.YYYYMMDD[.N] or YYYYMMDD[.N]")]
    Archive(String),
    #[error("--backend {0:?}: expected linux or freebsd")]
    Backend(String),
}

/// The rules for a jail name, in this one function:
/// `[A-Za-z0-9_][A-Za-z0-9_-]{0,62}`, not all digits, and never a name the
/// layout uses in `j/` (SPEC section 4). jail(8) reads a name that starts
/// with `-` as an option (getopt), and its config.c takes an all-digit name
/// for the JID as well, which the kernel refuses unless the two agree:
/// neither can be a jailtx jail.
pub fn check_jail_name(name: &str) -> Result<(), NameError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 63 || !ok_chars {
        return Err(NameError::JailInvalid(name.to_owned()));
    }
    if name.starts_with('-') {
        return Err(NameError::JailDash(name.to_owned()));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::JailDigits(name.to_owned()));
    }
    if name.starts_with("mroot") || name == "skel" {
        return Err(NameError::JailReserved(name.to_owned()));
    }
    Ok(())
}

/// A jail name that passed [`check_jail_name`]. Its `Debug` is the quoted
/// string, as messages show a name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct JailName(String);

impl JailName {
    pub fn parse(name: &str) -> Result<JailName, NameError> {
        check_jail_name(name)?;
        Ok(JailName(name.to_owned()))
    }

    /// Each of `names`, parsed; the first bad one is the error.
    pub fn parse_all(names: &[String]) -> Result<Vec<JailName>, NameError> {
        names.iter().map(|n| JailName::parse(n)).collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for JailName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<std::path::Path> for JailName {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl fmt::Debug for JailName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for JailName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for JailName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// An archived template's name, `mroot.YYYYMMDD[.N]`, with its date and
/// number (0 when there is no `.N`); ordered oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct ArchiveName {
    date: u32,
    n: u32,
    name: String,
}

impl ArchiveName {
    /// `mroot.YYYYMMDD[.N]`, or `YYYYMMDD[.N]` for it (as `rollback --to`
    /// takes it).
    pub fn parse(to: &str) -> Result<ArchiveName, NameError> {
        let name = if to.starts_with("mroot.") {
            to.to_owned()
        } else {
            format!("mroot.{to}")
        };
        ArchiveName::exact(&name).ok_or_else(|| NameError::Archive(to.to_owned()))
    }

    /// Only the full form `mroot.YYYYMMDD[.N]` (a directory in `j/`).
    pub fn exact(name: &str) -> Option<ArchiveName> {
        let rest = name.strip_prefix("mroot.")?;
        let (date, n) = match rest.split_once('.') {
            Some((d, n)) => (d, n.parse::<u32>().ok()?),
            None => (rest, 0),
        };
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(ArchiveName {
            date: date.parse().ok()?,
            n,
            name: name.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// `(YYYYMMDD, N)`.
    pub fn date_and_number(&self) -> (u32, u32) {
        (self.date, self.n)
    }
}

impl Ord for ArchiveName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.date, self.n, &self.name).cmp(&(other.date, other.n, &other.name))
    }
}

impl PartialOrd for ArchiveName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl From<ArchiveName> for String {
    fn from(a: ArchiveName) -> String {
        a.name
    }
}

impl fmt::Display for ArchiveName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The backend a run plans for: which OS carries the plan out. Planners ask
/// this, never a host's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Linux,
    FreeBsd,
}

impl Backend {
    pub fn parse(name: &str) -> Result<Backend, NameError> {
        match name {
            "linux" => Ok(Backend::Linux),
            "freebsd" => Ok(Backend::FreeBsd),
            _ => Err(NameError::Backend(name.to_owned())),
        }
    }

    /// This machine's own backend.
    pub fn native() -> Backend {
        if cfg!(target_os = "freebsd") {
            Backend::FreeBsd
        } else {
            Backend::Linux
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Linux => "linux",
            Backend::FreeBsd => "freebsd",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_names() {
        for ok in ["ns", "mail", "www", "a_b-9", &"x".repeat(63)] {
            assert_eq!(JailName::parse(ok).map(|n| n.to_string()), Ok(ok.into()));
        }
        for bad in ["", "a.b", "a b", "mroot2", "skel", &"x".repeat(64), "ü"] {
            assert!(JailName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_serialise_as_their_strings() {
        let j = JailName::parse("ns").unwrap();
        assert_eq!(format!("{j:?} {j}"), "\"ns\" ns");
        assert_eq!(serde_json::to_string(&j).unwrap(), "\"ns\"");
        assert_eq!(
            postcard::to_allocvec(&j).unwrap(),
            postcard::to_allocvec("ns").unwrap()
        );
        let a = ArchiveName::parse("20260101.2").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"mroot.20260101.2\"");
        assert_eq!(
            serde_json::to_string(&Backend::FreeBsd).unwrap(),
            "\"freebsd\""
        );
    }

    #[test]
    fn archive_names() {
        let a = ArchiveName::parse("mroot.20260101").unwrap();
        assert_eq!(a.date_and_number(), (20260101, 0));
        let b = ArchiveName::parse("20260101.10").unwrap();
        assert_eq!(b.as_str(), "mroot.20260101.10");
        assert!(a < b && b > ArchiveName::parse("20260101.9").unwrap());
        for bad in [
            "yesterday",
            "mroot.2026",
            "2026010x",
            "mroot.20260101.x",
            "mroot2",
        ] {
            assert_eq!(ArchiveName::parse(bad), Err(NameError::Archive(bad.into())));
        }
        assert!(ArchiveName::exact("20260101").is_none());
    }

    #[test]
    fn backends() {
        assert_eq!(Backend::parse("freebsd"), Ok(Backend::FreeBsd));
        assert_eq!(Backend::parse("linux").map(Backend::as_str), Ok("linux"));
        assert!(Backend::parse("recording").is_err());
    }
}
