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

use crate::fs::beneath;
use crate::host::Host;
use crate::ops::OpsError;
use crate::ops::due::{Due, due_path, load_due};
use crate::ops::jail::Site;
use crate::ops::records;
use crate::plan::JailSpec;
use crate::plan::derived::Derived;

use super::TargetReport;

/// The steps a merge of one jail makes due: one per derived-from file it
/// writes (updated, added or merged), `pwd_mkdb` after a keyed merge of
/// `passwd` or `master.passwd`, and `tzsetup -r` when the jail moves
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
    // A keyed merge of `passwd` means accounts changed on both sides: on
    // FreeBSD `passwd` is `pwd_mkdb -p`'s own output, so the databases (and
    // `passwd` itself) are rebuilt from the merged `master.passwd`.
    if tr.merged.iter().any(|p| {
        super::strategy::Strategy::for_path(p)
            == super::strategy::Strategy::Keyed(super::strategy::Account::Passwd)
            && tr.strategy.get(p) == Some(&"keyed")
    }) {
        due.insert(Derived::PwdMkdb);
    }
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
pub fn run_due(w: &Site) -> Result<Vec<Ran>, OpsError> {
    let mut out = Vec::new();
    if !crate::ops::due::any_due(w.layout) {
        return Ok(out);
    }
    let jails = records::load_all(w.layout)?;
    let mut running = None;
    for rec in jails {
        let Some(due) = load_due(w.layout, &rec.name)? else {
            continue;
        };
        let spec = rec.spec(w.layout, w.cfg);
        if running.is_none() {
            running = Some(w.host.running()?);
        }
        let up = running
            .iter()
            .flatten()
            .any(|r| r.name == spec.name && r.path == spec.path);
        if !up {
            continue;
        }
        out.push(run_in(
            w.host,
            w.backend,
            &spec,
            &due,
            &due_path(w.layout, &rec.name),
        ));
    }
    Ok(out)
}

fn run_in(
    h: &dyn Host,
    backend: crate::plan::Backend,
    spec: &JailSpec,
    due: &Due,
    record: &std::path::Path,
) -> Ran {
    let mut ran = Ran {
        jail: spec.name.clone(),
        commands: Vec::new(),
        failed: None,
    };
    for step in &due.steps {
        let Some(argv) = step.argv(backend) else {
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
