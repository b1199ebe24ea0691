//! Which merge each `/etc` file gets when both sides changed it: the table of path -> strategy.
//!
//! The rules are data, here and nowhere else: the planner asks
//! [`Strategy::for_path`] and dispatches on the answer. Every path not in
//! [`TABLE`] is merged line-wise ([`Strategy::Lines`], `git merge-file`'s
//! diff3). `docs/etc-merge.md` says why each entry is safe; a path added
//! here belongs there too.

use serde::Serialize;

use super::diff3::{self, Labels, Merged};
use super::keyed::{self, Keyed};

/// The account database a keyed file holds: which fields its records have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// `master.passwd` (10 fields) and `passwd` (7): the UID is field 2.
    Passwd,
    /// `group`: the GID is field 2, the member list field 3.
    Group,
    /// Linux `shadow`: no ID, no members.
    Shadow,
    /// Linux `gshadow`: the member list is field 3 (field 2 lists admins).
    Gshadow,
}

impl Account {
    /// The field holding the numeric ID that must stay unique, if any.
    pub fn id_field(self) -> Option<usize> {
        match self {
            Account::Passwd | Account::Group => Some(2),
            Account::Shadow | Account::Gshadow => None,
        }
    }

    /// The comma-separated member list merged as a set, if any.
    pub fn members_field(self) -> Option<usize> {
        match self {
            Account::Group | Account::Gshadow => Some(3),
            Account::Passwd | Account::Shadow => None,
        }
    }

    /// What the ID is called in reports.
    pub fn id_name(self) -> &'static str {
        match self {
            Account::Group => "GID",
            _ => "UID",
        }
    }
}

/// How a file both sides changed is merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Line-wise three-way merge (`diff3`), as `git merge-file` does it.
    Lines,
    /// Line-wise, except that both sides only inserting lines at the same
    /// place (changing and removing nothing there) takes both, the admin's
    /// first, instead of clashing.
    Union,
    /// Records keyed by their first field (a name), merged record by record.
    Keyed(Account),
}

/// Path below the target's root (`etc/…`, as reports name it) -> strategy.
pub const TABLE: &[(&str, Strategy)] = &[
    ("etc/master.passwd", Strategy::Keyed(Account::Passwd)),
    ("etc/passwd", Strategy::Keyed(Account::Passwd)),
    ("etc/group", Strategy::Keyed(Account::Group)),
    ("etc/shadow", Strategy::Keyed(Account::Shadow)),
    ("etc/gshadow", Strategy::Keyed(Account::Gshadow)),
    ("etc/hosts", Strategy::Union),
    ("etc/shells", Strategy::Union),
    ("etc/ftpusers", Strategy::Union),
    ("etc/securetty", Strategy::Union),
];

impl Strategy {
    /// The strategy of `path` (`etc/…`): its row of [`TABLE`], else lines.
    pub fn for_path(path: &str) -> Strategy {
        TABLE
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(Strategy::Lines, |(_, s)| *s)
    }

    /// Its name in reports: `merged (keyed)`, `"strategy": "keyed"`.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Lines => "lines",
            Strategy::Union => "union",
            Strategy::Keyed(_) => "keyed",
        }
    }
}

/// What merging one file both sides changed gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Merged without a clash, by that strategy.
    Clean(Vec<u8>, Strategy),
    /// The whole file clashes: a proposal with conflict markers only.
    Conflict(Vec<u8>),
    /// A keyed merge with clashing records: `text` (the rest merged, those
    /// records as ours has them) is written and `proposal` marks them.
    Records {
        text: Vec<u8>,
        proposal: Vec<u8>,
        why: String,
        strategy: Strategy,
    },
}

/// Merges `path` (`etc/…`) from `base` to `ours` and `theirs` by its
/// strategy. A keyed file whose records cannot be told apart by name (a
/// name twice) is merged line-wise.
pub fn merge(path: &str, base: &[u8], ours: &[u8], theirs: &[u8], labels: Labels) -> Outcome {
    let lines = |m: Merged, s: Strategy| match m {
        Merged::Clean(m) => Outcome::Clean(m, s),
        Merged::Conflict { text, .. } => Outcome::Conflict(text),
    };
    let by_lines = || lines(diff3::merge(base, ours, theirs, labels), Strategy::Lines);
    match Strategy::for_path(path) {
        Strategy::Lines => by_lines(),
        Strategy::Union => lines(
            diff3::merge_union(base, ours, theirs, labels),
            Strategy::Union,
        ),
        strategy @ Strategy::Keyed(account) => {
            match keyed::merge(base, ours, theirs, account, labels) {
                Keyed::Merged {
                    text,
                    proposal: None,
                    ..
                } => Outcome::Clean(text, strategy),
                Keyed::Merged {
                    text,
                    conflicts,
                    proposal: Some(proposal),
                } => {
                    let records: Vec<String> = conflicts
                        .iter()
                        .map(|c| format!("{}: {}", c.name, c.why))
                        .collect();
                    Outcome::Records {
                        text,
                        proposal,
                        why: format!(
                            "{} of its records clash ({}); the rest is merged",
                            records.len(),
                            records.join("; ")
                        ),
                        strategy,
                    }
                }
                Keyed::Unkeyed(_) => by_lines(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_path_once_and_the_rest_is_lines() {
        let mut paths: Vec<&str> = TABLE.iter().map(|(p, _)| *p).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), TABLE.len());
        assert!(paths.iter().all(|p| p.starts_with("etc/")));
        assert_eq!(
            Strategy::for_path("etc/group"),
            Strategy::Keyed(Account::Group)
        );
        assert_eq!(Strategy::for_path("etc/hosts"), Strategy::Union);
        assert_eq!(Strategy::for_path("etc/rc.conf"), Strategy::Lines);
        assert_eq!(Strategy::for_path("etc/hosts.allow"), Strategy::Lines);
    }

    const L: Labels = Labels {
        ours: "ours",
        base: "base",
        theirs: "theirs",
    };

    #[test]
    fn both_appending_merges_by_the_table_and_clashes_elsewhere() {
        let (b, o, t) = (&b"a:1\n"[..], &b"a:1\nb:2\n"[..], &b"a:1\nc:3\n"[..]);
        let want = b"a:1\nb:2\nc:3\n".to_vec();
        assert_eq!(
            merge("etc/group", b, o, t, L),
            Outcome::Clean(want.clone(), Strategy::Keyed(Account::Group))
        );
        assert_eq!(
            merge("etc/shells", b, o, t, L),
            Outcome::Clean(want, Strategy::Union)
        );
        assert!(matches!(
            merge("etc/rc.conf", b, o, t, L),
            Outcome::Conflict(_)
        ));
        // A name twice: line-wise.
        let twice = b"a:1\na:2\n";
        assert!(matches!(
            merge("etc/passwd", b, twice, t, L),
            Outcome::Conflict(_)
        ));
    }
}
