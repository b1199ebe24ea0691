//! What a merge did (or, under `--dry-run`, would do), per target and per file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// A file both sides changed (or a change that cannot be applied), left as
/// the admin has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub path: String,
    /// The merged proposal with conflict markers, beside the file.
    pub proposal: Option<String>,
    pub why: String,
}

/// An entry the merge would not touch: a symlink or special file where the
/// world has a file, a directory that cannot be entered safely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub path: String,
    pub why: String,
}

/// One target: a jail's `js/NAME/etc`, or `j/skel/etc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    /// The jail's name, or `skel`.
    pub target: String,
    pub etc: PathBuf,
    /// The template whose pristine `etc` was the base.
    pub from: Option<String>,
    /// The template merged to.
    pub to: String,
    /// Files the admin never touched, now as the new world has them.
    pub updated: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Files both sides changed, merged (a keyed merge with conflicting
    /// records is listed here and under `conflicts`: the rest was merged).
    pub merged: Vec<String>,
    /// How each file of `merged` was merged: `lines`, `union` or `keyed`
    /// (`strategy::Strategy::name`).
    pub strategy: BTreeMap<String, &'static str>,
    pub conflicts: Vec<Conflict>,
    pub refused: Vec<Refusal>,
    /// Proposals of earlier merges still waiting to be resolved (the file
    /// is left alone until its proposal is removed).
    pub unresolved: Vec<String>,
    /// Why the target was skipped or merged from an unusual base.
    pub note: Option<String>,
    /// Entries the merge would refuse (a symlink or special file where the
    /// world has a file, a symlink where it has a directory) but had nothing
    /// to change in, because the new world did not change them: said for
    /// the operator's information, without asking for them (exit code).
    pub notes: Vec<Refusal>,
    /// Entries the jail's root put in the way of the merge's steps, moved
    /// aside (`FROM -> TO`, see `fs::quarantine`): filled in from the
    /// transaction's notes once it has run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
}

impl TargetReport {
    pub fn changes(&self) -> usize {
        self.updated.len() + self.added.len() + self.removed.len() + self.merged.len()
    }

    /// Whether something waits for the operator.
    pub fn needs_operator(&self) -> bool {
        !self.conflicts.is_empty() || !self.refused.is_empty() || !self.unresolved.is_empty()
    }
}

/// A whole `etc-merge` run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MergeReport {
    pub targets: Vec<TargetReport>,
}

impl MergeReport {
    /// Gives each target the entries of `quarantined` (a transaction's
    /// `quarantined` note: `FROM -> TO; …`) that were moved from below its
    /// root (the directory holding its `etc`).
    pub fn note_quarantined(&mut self, quarantined: &str) {
        for entry in quarantined.split("; ").filter(|e| !e.is_empty()) {
            let from = entry.split(" -> ").next().unwrap_or(entry);
            let owner = self.targets.iter_mut().find(|t| {
                t.etc
                    .parent()
                    .is_some_and(|root| std::path::Path::new(from).starts_with(root))
            });
            if let Some(t) = owner {
                t.quarantined.push(entry.to_owned());
            }
        }
    }

    pub fn needs_operator(&self) -> bool {
        self.targets.iter().any(TargetReport::needs_operator)
    }

    pub fn count(&self, f: impl Fn(&TargetReport) -> usize) -> usize {
        self.targets.iter().map(f).sum()
    }

    /// One line for logs and the exit message.
    pub fn summary(&self) -> String {
        format!(
            "{} updated, {} added, {} removed, {} merged, {} conflicts, {} refused, {} unresolved",
            self.count(|t| t.updated.len()),
            self.count(|t| t.added.len()),
            self.count(|t| t.removed.len()),
            self.count(|t| t.merged.len()),
            self.count(|t| t.conflicts.len()),
            self.count(|t| t.refused.len()),
            self.count(|t| t.unresolved.len()),
        )
    }
}

impl fmt::Display for MergeReport {
    /// Per target a heading, then one line per file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.targets {
            write!(f, "etc-merge {} ({}", t.target, t.etc.display())?;
            match &t.from {
                Some(from) => writeln!(f, ": {from} -> {})", t.to)?,
                None => writeln!(f, ")")?,
            }
            if let Some(n) = &t.note {
                writeln!(f, "  note       {n}")?;
            }
            for (verb, list) in [
                ("updated", &t.updated),
                ("added", &t.added),
                ("removed", &t.removed),
            ] {
                for p in list {
                    writeln!(f, "  {verb:<10} {p}")?;
                }
            }
            for p in &t.merged {
                match t.strategy.get(p) {
                    Some(s) if *s != "lines" => writeln!(f, "  merged ({s}) {p}")?,
                    _ => writeln!(f, "  {:<10} {p}", "merged")?,
                }
            }
            for c in &t.conflicts {
                match &c.proposal {
                    Some(p) => writeln!(f, "  conflict   {} ({}; proposal in {p})", c.path, c.why)?,
                    None => writeln!(f, "  conflict   {} ({})", c.path, c.why)?,
                }
            }
            for r in &t.refused {
                writeln!(f, "  refused    {} ({})", r.path, r.why)?;
            }
            for n in &t.notes {
                writeln!(f, "  note       {} ({})", n.path, n.why)?;
            }
            for q in &t.quarantined {
                writeln!(
                    f,
                    "  moved aside {q} (the jail put it in the way; kept, never followed)"
                )?;
            }
            for u in &t.unresolved {
                writeln!(
                    f,
                    "  unresolved {u} (edit the file, then remove the proposal)"
                )?;
            }
            if t.changes() == 0 && !t.needs_operator() && t.note.is_none() {
                writeln!(f, "  (nothing to change)")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantined_entries_go_to_the_target_they_were_moved_from() {
        let target = |name: &str, etc: &str| TargetReport {
            target: name.into(),
            etc: PathBuf::from(etc),
            ..Default::default()
        };
        let mut r = MergeReport {
            targets: vec![
                target("skel", "/b/j/skel/etc"),
                target("ns", "/b/js/ns/etc"),
                target("ns2", "/b/js/ns2/etc"),
            ],
        };
        r.note_quarantined(
            "/b/js/ns/etc/group -> /b/js/ns/etc/group.jailtx-quarantine.1f.0; \
             /b/js/ns2/etc -> /b/js/ns2/etc.jailtx-quarantine.2a.0",
        );
        assert!(r.targets[0].quarantined.is_empty());
        assert_eq!(
            r.targets[1].quarantined,
            ["/b/js/ns/etc/group -> /b/js/ns/etc/group.jailtx-quarantine.1f.0"]
        );
        assert_eq!(r.targets[2].quarantined.len(), 1);
        assert!(r.to_string().contains("moved aside /b/js/ns/etc/group ->"));
    }
}
