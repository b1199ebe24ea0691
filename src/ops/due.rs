//! The due record of etcupdate's post-merge steps
//! (`STATE/etc-merge/NAME.due.toml`): reading it, and the plan steps that
//! write it with the transaction that makes the steps due.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Layout;
use crate::fs::statefile::{self, Kind};
use crate::plan::derived::Derived;
use crate::plan::{Action, Plan};

use super::OpsError;

/// Where the `/etc` merge keeps its per-target records and due records.
pub fn records_dir(layout: &Layout) -> PathBuf {
    layout.state.join("etc-merge")
}

/// The suffix a replaced or removed file (a merge's file or record) is
/// moved aside under until the commit.
pub const ASIDE: &str = ".jailtx-old";

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
    records_dir(layout).join(format!("{name}.due.toml"))
}

/// Whether any jail may have steps due: one listing of the records
/// directory, so that the check made after every committed transaction
/// reads no jail record when nothing is due (the common case). A directory
/// that cannot be listed answers yes: the records then say.
pub fn any_due(layout: &Layout) -> bool {
    let Ok(entries) = std::fs::read_dir(records_dir(layout)) else {
        return records_dir(layout).exists();
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".due.toml") && name != "skel.due.toml"
    })
}

/// The record of jail `name`, if any; one that does not parse is an error
/// naming it.
pub fn load_due(layout: &Layout, name: &str) -> Result<Option<Due>, OpsError> {
    let p = due_path(layout, name);
    let Some(text) = statefile::read_to_string(&p, Kind::Record)
        .map_err(|e| OpsError::Refused(e.to_string()))?
    else {
        return Ok(None);
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        OpsError::Refused(format!(
            "{}: {}; run the steps it names inside the jail by hand (docs/etc-merge.md), then remove it",
            p.display(),
            e.message().replace('\n', " ")
        ))
    })
}

/// Adds to `plan` the steps that record `due` for jail `name`, joined with
/// what an earlier merge left due: the old record renamed aside, the new
/// one written, the aside copy removed after the commit (as the merge
/// records are). Returns every step then due in the jail, if any.
pub fn push_due(
    layout: &Layout,
    plan: &mut Plan,
    name: &str,
    due: &BTreeSet<Derived>,
) -> Result<Option<BTreeSet<Derived>>, OpsError> {
    let path = due_path(layout, name);
    let mut all = load_due(layout, name)?.unwrap_or_default();
    if due.is_subset(&all.steps) {
        return Ok(Some(all.steps).filter(|s| !s.is_empty()));
    }
    let dir = records_dir(layout);
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
            return Err(OpsError::Refused(format!(
                "{} is left from an earlier run; remove it, then merge again",
                old.display()
            )));
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
    let body = toml::to_string(&all).map_err(|e| OpsError::Refused(e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_due_looks_for_a_jails_record_only() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(&crate::config::Config {
            base: d.path().join("base"),
            state_dir: d.path().join("state"),
            ..Default::default()
        })
        .unwrap();
        assert!(!any_due(&layout), "no records directory");
        std::fs::create_dir_all(records_dir(&layout)).unwrap();
        std::fs::write(records_dir(&layout).join("ns.toml"), "").unwrap();
        std::fs::write(due_path(&layout, "skel"), "").unwrap();
        assert!(
            !any_due(&layout),
            "a merge record and the skel's are no jail's due"
        );
        std::fs::write(due_path(&layout, "ns"), "").unwrap();
        assert!(any_due(&layout));
    }

    #[test]
    fn the_due_record_reads_back() {
        let due = Due {
            steps: [Derived::Tzsetup, Derived::PwdMkdb].into(),
        };
        let text = toml::to_string(&due).unwrap();
        assert!(
            text.contains("pwd_mkdb") && text.contains("tzsetup"),
            "{text}"
        );
        assert_eq!(toml::from_str::<Due>(&text).unwrap(), due);
    }
}
