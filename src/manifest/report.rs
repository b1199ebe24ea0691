//! What an audit found: differences by kind, new setuid/setgid files first, and their human rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::audit::Mode;

/// The kinds of difference, in the order a report lists them at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiffKind {
    /// A path the manifest does not have.
    Added,
    /// A path of the manifest that is gone.
    Removed,
    /// The type changed (a file became a directory...); nothing else is
    /// compared at that path.
    Type,
    /// File data (size or BLAKE3), or a device's number.
    Content,
    /// Permission bits, setuid/setgid/sticky included.
    Mode,
    /// Numeric uid or gid.
    Owner,
    /// A symlink's target, or which inode a hard link shares.
    Link,
    /// Another filesystem is mounted here: what is below was not audited.
    Mount,
}

impl DiffKind {
    pub const ALL: [DiffKind; 8] = [
        DiffKind::Added,
        DiffKind::Removed,
        DiffKind::Type,
        DiffKind::Content,
        DiffKind::Mode,
        DiffKind::Owner,
        DiffKind::Link,
        DiffKind::Mount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Added => "added",
            DiffKind::Removed => "removed",
            DiffKind::Type => "type",
            DiffKind::Content => "content",
            DiffKind::Mode => "mode",
            DiffKind::Owner => "owner",
            DiffKind::Link => "link",
            DiffKind::Mount => "mount",
        }
    }
}

/// One difference at one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// As seen inside a jail (`/usr/bin/su`), escaped for display.
    pub path: String,
    pub kind: DiffKind,
    /// The path now holds a setuid or setgid regular file that the manifest
    /// does not have as one: what an intruder leaves behind. Listed first.
    pub new_setid: bool,
    /// What the manifest says (none for `added`).
    pub expected: Option<String>,
    /// What the template holds (none for `removed`).
    pub actual: Option<String>,
}

/// The result of auditing one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// Entries in the manifest.
    pub entries: usize,
    /// Paths found in the template (excluded ones not counted).
    pub found: usize,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// New setuid/setgid first (by path), then by path and kind.
    pub differences: Vec<Difference>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }

    pub fn new_setid(&self) -> usize {
        self.differences.iter().filter(|d| d.new_setid).count()
    }

    /// Differences per kind, every kind present (zero or not).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut c: BTreeMap<&'static str, usize> =
            DiffKind::ALL.iter().map(|k| (k.as_str(), 0)).collect();
        for d in &self.differences {
            *c.entry(d.kind.as_str()).or_default() += 1;
        }
        c
    }

    /// Puts the differences in report order.
    pub(super) fn sort(&mut self) {
        self.differences
            .sort_by(|a, b| (!a.new_setid, &a.path, a.kind).cmp(&(!b.new_setid, &b.path, b.kind)));
    }

    /// The human report for template `name`: a summary line, then one line
    /// per difference, new setuid/setgid files first and marked.
    pub fn render(&self, name: &str) -> String {
        let mut out = String::new();
        let mode = self.mode.as_str();
        if self.is_clean() {
            let _ = writeln!(
                out,
                "{name}: clean ({mode} audit, {} entries, {} files / {} hashed)",
                self.entries,
                self.hashed_files,
                human_bytes(self.hashed_bytes)
            );
            return out;
        }
        let by_kind = self.counts();
        let counts: Vec<String> = DiffKind::ALL
            .iter()
            .map(|k| (k.as_str(), by_kind.get(k.as_str()).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let setid = match self.new_setid() {
            0 => String::new(),
            n => format!("{n} NEW SETUID/SETGID; "),
        };
        let _ = writeln!(
            out,
            "{name}: DRIFT ({mode} audit): {} differences ({setid}{})",
            self.differences.len(),
            counts.join(", ")
        );
        let width = self
            .differences
            .iter()
            .map(|d| d.path.chars().count())
            .max()
            .unwrap_or(0)
            .min(60);
        for d in &self.differences {
            let flag = if d.new_setid { "!setid" } else { "" };
            let what = match (&d.expected, &d.actual) {
                (Some(e), Some(a)) => format!("{e} -> {a}"),
                (Some(e), None) => format!("was {e}"),
                (None, Some(a)) => a.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {flag:<6} {:<8} {:<width$}  {what}",
                d.kind.as_str(),
                d.path
            );
        }
        out
    }
}

/// `1.5 MiB`-style sizes for reports.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(path: &str, kind: DiffKind, setid: bool) -> Difference {
        Difference {
            path: path.into(),
            kind,
            new_setid: setid,
            expected: None,
            actual: Some("x".into()),
        }
    }

    #[test]
    fn setid_first_then_path_then_kind() {
        let mut r = Report {
            mode: Mode::Full,
            entries: 3,
            found: 3,
            hashed_files: 0,
            hashed_bytes: 0,
            differences: vec![
                d("/b", DiffKind::Owner, false),
                d("/b", DiffKind::Mode, false),
                d("/z", DiffKind::Added, true),
                d("/a", DiffKind::Removed, false),
            ],
        };
        r.sort();
        let order: Vec<_> = r
            .differences
            .iter()
            .map(|d| (d.path.as_str(), d.kind))
            .collect();
        assert_eq!(
            order,
            [
                ("/z", DiffKind::Added),
                ("/a", DiffKind::Removed),
                ("/b", DiffKind::Mode),
                ("/b", DiffKind::Owner)
            ]
        );
        let text = r.render("mroot");
        assert!(text.starts_with("mroot: DRIFT (full audit): 4 differences (1 NEW SETUID/SETGID; 1 added, 1 removed, 1 mode, 1 owner)"), "{text}");
        assert!(
            text.lines().nth(1).unwrap().contains("!setid added"),
            "{text}"
        );
    }
}
