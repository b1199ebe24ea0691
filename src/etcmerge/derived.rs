//! etcupdate's post-merge steps (the databases derived from `/etc` files):
//! which ones a merge makes due per jail, the due record that keeps them,
//! and running them inside the jail.
//!
//! FreeBSD's `etcupdate` regenerates what derives from a file it installs
//! (`post_install_file`, `post_update`): `master.passwd` → `pwd_mkdb -p`,
//! `login.conf` → `cap_mkdb`, `services` → `services_mkdb`, `mail/aliases`
//! → `newaliases`, and a copied (not linked) `/etc/localtime` → `tzsetup
//! -r` once the world's zoneinfo changed. jailtx runs them **inside the
//! jail** (`jexec NAME …`), never on the host: `js/NAME/etc` is writable by
//! the jail's root, who could plant links there for a host-side `pwd_mkdb`
//! to follow.
//!
//! Crash safety without a plan action of its own: the merge's transaction
//! writes `STATE/etc-merge/NAME.due.toml` (journaled like the merge
//! records, so a rolled-back merge leaves none). After a transaction
//! commits, [`run_due`] runs the steps in every jail that runs and then
//! removes its record; a stopped jail keeps it until a later command finds
//! it running (its next `start`). Every step only rebuilds a database from
//! its source, so a crash between a step and the removal just runs it again.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Layout;
use crate::engine::{Action, Plan};
use crate::fs::beneath;
use crate::fs::statefile::{self, Kind};
use crate::host::{Host, JailSpec};
use crate::ops::jail::World;
use crate::ops::records;

use super::{ASIDE, TargetReport, record};

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
    fn for_file(path: &str) -> Option<Derived> {
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
    pub fn argv(self, backend: &str) -> Option<Vec<String>> {
        (backend == "freebsd").then(|| self.freebsd_argv())
    }
}

/// `STATE/etc-merge/NAME.due.toml`: the steps due in jail NAME. A jail name
/// has no `.`, so it never collides with the merge record `NAME.toml`.
/// `skel.due.toml` is never run (the skel is no jail) and never removed:
/// each jail created as a copy of the skel gets its steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Due {
    pub steps: BTreeSet<Derived>,
}

pub fn due_path(layout: &Layout, name: &str) -> PathBuf {
    record::dir(layout).join(format!("{name}.due.toml"))
}

/// The record of jail `name`, if any; one that does not parse is an error
/// naming it.
pub fn load_due(layout: &Layout, name: &str) -> Result<Option<Due>, String> {
    let p = due_path(layout, name);
    let Some(text) = statefile::read_to_string(&p, Kind::Record).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{}: {}; run the steps it names inside the jail by hand (docs/etc-merge.md), then remove it",
            p.display(),
            e.message().replace('\n', " ")
        )
    })
}

/// The steps a merge of one jail makes due: one per derived-from file it
/// writes (updated, added or merged), and `tzsetup -r` when the jail moves
/// to another world, its `etc/localtime` is a copied file (a symlink
/// follows the new zoneinfo by itself) and `var/db/zoneinfo` names the zone
/// (etcupdate's own conditions: without it `tzsetup -r` cannot know the
/// zone, and etcupdate only warns). Read through `fs::beneath`: the jail's
/// root may have put anything at those names; nothing is followed.
pub fn due_after(tr: &TargetReport, jail_root: &std::path::Path) -> BTreeSet<Derived> {
    let mut due: BTreeSet<Derived> = tr
        .updated
        .iter()
        .chain(&tr.added)
        .chain(&tr.merged)
        .filter_map(|p| Derived::for_file(p))
        .collect();
    let new_world = tr.from.as_ref().is_some_and(|from| *from != tr.to);
    if new_world
        && is_file(jail_root, &["etc", "localtime"])
        && is_file(jail_root, &["var", "db", "zoneinfo"])
    {
        due.insert(Derived::Tzsetup);
    }
    due
}

/// Whether `root/PATH…` is a regular file, reached without following a link.
fn is_file(root: &std::path::Path, path: &[&str]) -> bool {
    let Some((name, dirs)) = path.split_last() else {
        return false;
    };
    let Ok(mut dir) = beneath::open_root(root) else {
        return false;
    };
    for d in dirs {
        match dir.subdir(OsStr::new(d)) {
            Ok(Some(sub)) => dir = sub,
            _ => return false,
        }
    }
    matches!(dir.stat(OsStr::new(name)), Ok(Some(s)) if s.kind == beneath::Kind::File)
}

/// The plan note that names the steps due per jail after a merge
/// (`ns: pwd_mkdb cap_mkdb; mail: pwd_mkdb`): what the FreeBSD transcript
/// shows as `jexec` lines after the commit.
pub const NOTE: &str = "in_jails";

/// Adds to `plan` the steps that record `due` for jail `name`, joined with
/// what an earlier merge left due: the old record renamed aside, the new
/// one written, the aside copy removed after the commit (as the merge
/// records are). Returns every step then due in the jail, if any.
pub fn push_due(
    layout: &Layout,
    plan: &mut Plan,
    name: &str,
    due: &BTreeSet<Derived>,
) -> Result<Option<BTreeSet<Derived>>, String> {
    let path = due_path(layout, name);
    let mut all = load_due(layout, name)?.unwrap_or_default();
    if due.is_subset(&all.steps) {
        return Ok(Some(all.steps).filter(|s| !s.is_empty()));
    }
    let dir = record::dir(layout);
    let making_dir = plan
        .steps
        .iter()
        .any(|s| matches!(&s.action, Action::MakeDir { path, .. } if *path == dir));
    if !making_dir && std::fs::symlink_metadata(&dir).is_err() {
        plan.push(
            "mkdir-etc-merge-records",
            Action::MakeDir {
                path: dir,
                mode: 0o700,
            },
        );
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        let mut n = path.as_os_str().to_owned();
        n.push(ASIDE);
        let old = PathBuf::from(n);
        if std::fs::symlink_metadata(&old).is_ok() {
            return Err(format!(
                "{} is left from an earlier run; remove it, then merge again",
                old.display()
            ));
        }
        plan.push(
            format!("aside-due-{name}"),
            Action::Rename {
                from: path.clone(),
                to: old.clone(),
            },
        );
        plan.push_after_commit(format!("drop-due-{name}"), Action::RemoveTree { path: old });
    }
    all.steps.extend(due.iter().copied());
    let body = toml::to_string(&all).map_err(|e| e.to_string())?;
    let head = if name == "skel" {
        "# etcupdate's steps due in every jail created from the skel (its /etc was merged\n\
         # since its databases were made): each new jail gets them (docs/etc-merge.md).\n"
            .to_owned()
    } else {
        format!(
            "# etcupdate's steps due inside jail {name}: jailtx runs them with jexec once\n\
             # the jail runs, then removes this file (docs/etc-merge.md).\n"
        )
    };
    plan.push(
        format!("due-{name}"),
        Action::WriteFile {
            path,
            contents: format!("{head}{body}"),
            mode: 0o600,
        },
    );
    Ok(Some(all.steps))
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

/// What [`run_due`] did in one jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    pub jail: String,
    /// The commands run inside it (none on a backend with nothing to run).
    pub commands: Vec<String>,
    /// The step that failed and why (the record is kept: it runs again).
    pub failed: Option<String>,
}

/// Runs the due steps in every jail that runs (on its current world: the
/// one the merge merged to, after an upgrade), each with `exec_in_jail`,
/// and removes its record once all succeeded. A stopped jail keeps its
/// record for a later run. Called after every committed transaction.
pub fn run_due(w: &World) -> Result<Vec<Ran>, String> {
    let mut out = Vec::new();
    let jails = records::load_all(w.layout)?;
    let mut running = None;
    for rec in jails {
        let Some(due) = load_due(w.layout, &rec.name)? else {
            continue;
        };
        let spec = rec.spec(w.layout, w.cfg);
        if running.is_none() {
            running = Some(w.host.running().map_err(|e| e.to_string())?);
        }
        let up = running
            .iter()
            .flatten()
            .any(|r| r.name == spec.name && r.path == spec.path);
        if !up {
            continue;
        }
        out.push(run_in(w.host, &spec, &due, &due_path(w.layout, &rec.name)));
    }
    Ok(out)
}

fn run_in(h: &dyn Host, spec: &JailSpec, due: &Due, record: &std::path::Path) -> Ran {
    let mut ran = Ran {
        jail: spec.name.clone(),
        commands: Vec::new(),
        failed: None,
    };
    for step in &due.steps {
        let Some(argv) = step.argv(h.name()) else {
            continue;
        };
        if let Err(e) = h.exec_in_jail(spec, &argv) {
            ran.failed = Some(e.to_string());
            return ran;
        }
        ran.commands.push(argv.join(" "));
    }
    if let Err(e) = crate::fs::remove_file_durable(record) {
        ran.failed = Some(format!("remove {}: {e}", record.display()));
    }
    ran
}

/// One line for the operator, if there is something to say.
pub fn describe(r: &Ran) -> Option<String> {
    match &r.failed {
        None if r.commands.is_empty() => None,
        None => Some(format!(
            "jail {}: ran etcupdate's steps inside it: {}",
            r.jail,
            r.commands.join("; ")
        )),
        Some(e) => Some(format!(
            "jail {}: etcupdate's step failed: {e}; it runs again after the next command that finds the jail running (or run it by hand inside the jail)",
            r.jail
        )),
    }
}

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
        assert_eq!(Derived::PwdMkdb.argv("linux"), None);
        assert_eq!(
            Derived::ServicesMkdb.argv("freebsd").unwrap().join(" "),
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
        let due = Due { steps };
        let text = toml::to_string(&due).unwrap();
        assert_eq!(toml::from_str::<Due>(&text).unwrap(), due);
    }
}
