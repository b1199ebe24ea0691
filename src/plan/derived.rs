//! etcupdate's post-merge steps as data: which `/etc` file makes which
//! database due, and the command that rebuilds it inside a jail.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Backend;

/// One of etcupdate's derived-file steps, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derived {
    PwdMkdb,
    CapMkdb,
    ServicesMkdb,
    Newaliases,
    Tzsetup,
}

impl Derived {
    /// The step a changed file of `etc` (as the merge report names it,
    /// `etc/…`) makes due.
    pub fn for_file(path: &str) -> Option<Derived> {
        match path {
            "etc/master.passwd" => Some(Derived::PwdMkdb),
            "etc/login.conf" => Some(Derived::CapMkdb),
            "etc/services" => Some(Derived::ServicesMkdb),
            "etc/mail/aliases" => Some(Derived::Newaliases),
            _ => None,
        }
    }

    /// The command, as run inside a FreeBSD jail (absolute paths: the
    /// programs are the jail's world's, whatever PATH `jexec` passes on).
    pub fn freebsd_argv(self) -> Vec<String> {
        let a: &[&str] = match self {
            Derived::PwdMkdb => &["/usr/sbin/pwd_mkdb", "-p", "/etc/master.passwd"],
            Derived::CapMkdb => &["/usr/bin/cap_mkdb", "/etc/login.conf"],
            Derived::ServicesMkdb => &[
                "/usr/sbin/services_mkdb",
                "-q",
                "-o",
                "/var/db/services.db",
                "/etc/services",
            ],
            Derived::Newaliases => &["/usr/bin/newaliases"],
            Derived::Tzsetup => &["/usr/sbin/tzsetup", "-r"],
        };
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    /// The command on backend `backend`; `None` where the worlds it runs
    /// keep no such database (Linux: busybox and glibc read `/etc/passwd`
    /// and `/etc/services` themselves), and the step is then done.
    pub fn argv(self, backend: Backend) -> Option<Vec<String>> {
        (backend == Backend::FreeBsd).then(|| self.freebsd_argv())
    }
}

impl Derived {
    /// Its name in the due record and the plan note.
    pub fn name(self) -> &'static str {
        match self {
            Derived::PwdMkdb => "pwd_mkdb",
            Derived::CapMkdb => "cap_mkdb",
            Derived::ServicesMkdb => "services_mkdb",
            Derived::Newaliases => "newaliases",
            Derived::Tzsetup => "tzsetup",
        }
    }

    pub fn by_name(name: &str) -> Option<Derived> {
        ALL.into_iter().find(|d| d.name() == name)
    }
}

const ALL: [Derived; 5] = [
    Derived::PwdMkdb,
    Derived::CapMkdb,
    Derived::ServicesMkdb,
    Derived::Newaliases,
    Derived::Tzsetup,
];

/// `pwd_mkdb cap_mkdb`, as in the plan note.
pub fn names(steps: &BTreeSet<Derived>) -> String {
    steps.iter().map(|d| d.name()).collect::<Vec<_>>().join(" ")
}

/// The plan note [`NOTE`] read back: `(jail, steps)`.
pub fn parse_note(note: &str) -> Vec<(String, Vec<Derived>)> {
    note.split("; ")
        .filter_map(|part| part.split_once(": "))
        .map(|(jail, steps)| {
            let steps = steps.split(' ').filter_map(Derived::by_name).collect();
            (jail.to_owned(), steps)
        })
        .collect()
}

/// The plan note that names the steps due per jail after a merge
/// (`ns: pwd_mkdb cap_mkdb; mail: pwd_mkdb`): what the FreeBSD transcript
/// shows as `jexec` lines after the commit.
pub const NOTE: &str = "in_jails";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_map_to_etcupdates_steps() {
        assert_eq!(
            Derived::for_file("etc/master.passwd"),
            Some(Derived::PwdMkdb)
        );
        assert_eq!(
            Derived::for_file("etc/mail/aliases"),
            Some(Derived::Newaliases)
        );
        assert_eq!(Derived::for_file("etc/passwd"), None);
        assert_eq!(Derived::for_file("etc/localtime"), None);
        assert_eq!(Derived::PwdMkdb.argv(Backend::Linux), None);
        assert_eq!(
            Derived::ServicesMkdb
                .argv(Backend::FreeBsd)
                .unwrap()
                .join(" "),
            "/usr/sbin/services_mkdb -q -o /var/db/services.db /etc/services"
        );
    }

    #[test]
    fn the_plan_note_reads_back() {
        let steps: BTreeSet<Derived> = [Derived::Tzsetup, Derived::PwdMkdb].into();
        let note = format!("ns: {}; mail: {}", names(&steps), names(&steps));
        assert_eq!(note, "ns: pwd_mkdb tzsetup; mail: pwd_mkdb tzsetup");
        let back = parse_note(&note);
        assert_eq!(back[1].0, "mail");
        assert_eq!(back[1].1, [Derived::PwdMkdb, Derived::Tzsetup]);
    }
}
