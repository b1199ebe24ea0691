//! `jailtx metrics`: the state as Prometheus text for node_exporter's textfile collector, gathered read-only and written atomically.
//!
//! Gathering reads what `status` and `history` read, the same way: no lock,
//! nothing opened for writing, so it never waits for a running transaction
//! and never changes a byte of the state dir. A planted or damaged state
//! file is refused as those commands refuse it.

pub mod expo;

use std::path::{Path, PathBuf};

use crate::fs::FsError;
use crate::journal::{Outcome, Summary};
use crate::manifest::last_audit::{self, LastAudit, LastAuditError};
use crate::ops::OpsError;
use crate::ops::jail::Site;
use crate::statedir::{self, StateError};
use expo::{Exposition, Sample, Type, Value};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Ops(#[from] OpsError),
    #[error(transparent)]
    Audit(#[from] LastAuditError),
    /// `--output` names no file jailtx can put there (exit 2).
    #[error("--output {path}: {why}")]
    Output { path: PathBuf, why: String },
    #[error("write the metrics to {path}: {source}")]
    Write { path: PathBuf, source: FsError },
}

/// One template: its directory name, id, signer and last audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFacts {
    pub name: String,
    pub id: String,
    /// The key id of the signature its bundle carried; `None` (published
    /// as `signer=""`) for a template not installed from a signed bundle.
    pub signer: Option<String>,
    pub last_audit: Option<LastAudit>,
}

/// One jail: what `status` says of it, and its downtime in the newest
/// transaction that stopped and started it (upgrade or rollback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFacts {
    pub name: String,
    pub running: bool,
    pub mounted: bool,
    /// Milliseconds, as the end record's notes write them.
    pub last_downtime_ms: Option<String>,
}

/// The newest finished upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeFacts {
    pub tx: u64,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub outcome: Outcome,
    /// The downtime window (first stop to last health check), milliseconds.
    pub window_ms: Option<String>,
}

/// Everything one exposition publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub templates: Vec<TemplateFacts>,
    pub jails: Vec<JailFacts>,
    pub last_upgrade: Option<UpgradeFacts>,
    pub pending: bool,
    pub journal_bytes: u64,
}

/// Reads the facts from the state dir and the host, changing nothing.
pub fn gather(site: &Site) -> Result<Facts, MetricsError> {
    let layout = site.layout;
    statedir::require(layout)?;
    let mut templates = Vec::new();
    let mut names = vec!["mroot".to_owned()];
    if std::fs::symlink_metadata(&layout.j).is_ok() {
        names.extend(crate::ops::upgrade::archives(site)?);
    }
    for name in names {
        let manifest = crate::manifest::path_for(&layout.manifests, &name);
        // As `status`: a template without a readable manifest has no id to
        // publish (`audit` names what is wrong with it).
        let Ok(id) = crate::manifest::template_id(&manifest) else {
            continue;
        };
        let last_audit = last_audit::read(&layout.manifests, &name, &id)?;
        // The origin file moves with its template; one naming another id
        // (left from before a rename's undo) says nothing of this one.
        let signer = crate::ops::bundle::origin(layout, &name)
            .filter(|o| o.template_id == id)
            .and_then(|o| o.signer_key_id);
        templates.push(TemplateFacts {
            name,
            id,
            signer,
            last_audit,
        });
    }
    let (done, pending) = statedir::read_history(layout)?;
    let rows = crate::ops::jail::status(site)?;
    let jails = rows
        .into_iter()
        .map(|r| JailFacts {
            last_downtime_ms: last_downtime(&done, &r.name),
            name: r.name,
            running: r.running,
            mounted: r.mounted,
        })
        .collect();
    let last_upgrade = done
        .iter()
        .rev()
        .find(|s| s.op == "upgrade")
        .map(|s| UpgradeFacts {
            tx: s.tx,
            started_ms: s.started_ms,
            ended_ms: s.ended_ms,
            outcome: s.outcome,
            window_ms: s.notes.get("downtime_ms").cloned(),
        });
    Ok(Facts {
        templates,
        jails,
        last_upgrade,
        pending: pending.is_some(),
        journal_bytes: statedir::journal_len(layout)?,
    })
}

/// Jail `name`'s downtime in the newest transaction that noted one for it
/// (`jail_downtime_ms` = `NAME=MS NAME=MS…`).
fn last_downtime(done: &[Summary], name: &str) -> Option<String> {
    done.iter().rev().find_map(|s| {
        s.notes
            .get("jail_downtime_ms")?
            .split_whitespace()
            .find_map(|pair| {
                let (n, ms) = pair.split_once('=')?;
                (n == name).then(|| ms.to_owned())
            })
    })
}

/// The exposition of `facts`: every name `jailtx_`-prefixed, every time and
/// duration in seconds, info metrics `_info` with the value 1.
pub fn render(facts: &Facts) -> String {
    let mut e = Exposition::default();
    let label = |k: &'static str, v: &str| (k, v.to_owned());
    e.family(
        "jailtx_build_info",
        Type::Gauge,
        "The jailtx that wrote these metrics (always 1).",
        vec![(
            vec![label("version", env!("CARGO_PKG_VERSION"))],
            Value::Int(1),
        )],
    );
    let per_template = |f: &dyn Fn(&TemplateFacts) -> Option<Value>| -> Vec<Sample> {
        facts
            .templates
            .iter()
            .filter_map(|t| Some((vec![label("template", &t.name)], f(t)?)))
            .collect()
    };
    e.family(
        "jailtx_template_info",
        Type::Gauge,
        "Each template with a manifest (mroot, then the archives, newest first): its id and the key id of its bundle's signer (empty: not from a signed bundle). Always 1.",
        facts
            .templates
            .iter()
            .map(|t| {
                let labels = vec![
                    label("template", &t.name),
                    label("id", &t.id),
                    label("signer", t.signer.as_deref().unwrap_or("")),
                ];
                (labels, Value::Int(1))
            })
            .collect(),
    );
    e.family(
        "jailtx_template_last_audit_timestamp_seconds",
        Type::Gauge,
        "When `jailtx audit` last checked the template (as it is now, by its id) against its manifest, seconds since the epoch.",
        per_template(&|t| Some(Value::seconds_from_ms(t.last_audit.as_ref()?.finished_ms))),
    );
    e.family(
        "jailtx_template_last_audit_full",
        Type::Gauge,
        "1 when that last audit hashed every file, 0 when it was `audit --quick`.",
        per_template(&|t| Some(Value::flag(t.last_audit.as_ref()?.mode == "full"))),
    );
    e.family(
        "jailtx_template_drift_differences",
        Type::Gauge,
        "Differences between the template and its manifest that the last audit found (0: clean).",
        per_template(&|t| Some(Value::Int(clamp(t.last_audit.as_ref()?.differences)))),
    );
    e.family(
        "jailtx_template_drift_new_setid_files",
        Type::Gauge,
        "Of those, setuid or setgid files the manifest does not have.",
        per_template(&|t| Some(Value::Int(clamp(t.last_audit.as_ref()?.new_setid)))),
    );
    if let Some(u) = &facts.last_upgrade {
        e.single(
            "jailtx_last_upgrade_timestamp_seconds",
            "When the newest finished upgrade ended, seconds since the epoch.",
            Value::seconds_from_ms(u.ended_ms),
        );
        e.single(
            "jailtx_last_upgrade_duration_seconds",
            "How long the newest finished upgrade took, start to end.",
            Value::seconds_from_ms(u.ended_ms.saturating_sub(u.started_ms)),
        );
        e.family(
            "jailtx_last_upgrade_outcome",
            Type::Gauge,
            "How the newest finished upgrade ended: 1 for its outcome, 0 for the other (committed: the jails run the new template; rolled-back: the system is as before).",
            [Outcome::Committed, Outcome::RolledBack]
                .into_iter()
                .map(|o| (vec![label("outcome", o.as_str())], Value::flag(o == u.outcome)))
                .collect(),
        );
        if let Some(w) = u.window_ms.as_deref().and_then(Value::seconds_from_ms_text) {
            e.single(
                "jailtx_last_upgrade_window_seconds",
                "The newest finished upgrade's downtime window: its first jail stop to its last health check.",
                w,
            );
        }
    }
    let per_jail = |f: &dyn Fn(&JailFacts) -> Option<Value>| -> Vec<Sample> {
        facts
            .jails
            .iter()
            .filter_map(|j| Some((vec![label("jail", &j.name)], f(j)?)))
            .collect()
    };
    e.family(
        "jailtx_jail_running",
        Type::Gauge,
        "1 when the jail runs, 0 when it does not.",
        per_jail(&|j| Some(Value::flag(j.running))),
    );
    e.family(
        "jailtx_jail_mounted",
        Type::Gauge,
        "1 when the jail's root is mounted, 0 when it is not.",
        per_jail(&|j| Some(Value::flag(j.mounted))),
    );
    e.family(
        "jailtx_jail_last_downtime_seconds",
        Type::Gauge,
        "The jail's downtime (its stop to its start) in the newest upgrade or rollback that stopped and started it.",
        per_jail(&|j| Value::seconds_from_ms_text(j.last_downtime_ms.as_deref()?)),
    );
    e.single(
        "jailtx_transaction_pending",
        "1 when an interrupted transaction waits for `jailtx recover`, else 0.",
        Value::flag(facts.pending),
    );
    e.single(
        "jailtx_journal_size_bytes",
        "The size of the journal file.",
        Value::Int(clamp(facts.journal_bytes)),
    );
    e.into_text()
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Where `--output` writes: checked before anything is gathered, so a bad
/// path is exit 2 with nothing read or written.
#[derive(Debug, Clone)]
pub struct Output {
    path: PathBuf,
}

impl Output {
    /// The path is the operator's: the directories on the way to it may be
    /// symlinks (node_exporter's directory often is one), but the final
    /// name is never followed: whatever is there (a file, a symlink, a
    /// fifo) is replaced by a rename, except a directory, which is refused.
    pub fn check(path: &Path) -> Result<Output, MetricsError> {
        use std::os::unix::ffi::OsStrExt;
        let refuse = |why: &str| MetricsError::Output {
            path: path.to_owned(),
            why: why.to_owned(),
        };
        let bytes = path.as_os_str().as_bytes();
        let last = bytes.rsplit(|b| *b == b'/').next().unwrap_or_default();
        if matches!(last, b"" | b"." | b"..") {
            return Err(refuse(
                "names no file; give a file, e.g. /var/tmp/node_exporter/jailtx.prom",
            ));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !std::fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
            return Err(refuse(&format!(
                "{} is not a directory; create it (node_exporter's --collector.textfile.directory)",
                parent.display()
            )));
        }
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(refuse(
                "is a directory; give a file in it, e.g. DIR/jailtx.prom",
            ));
        }
        Ok(Output {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether node_exporter's textfile collector reads this file: it reads
    /// only names ending in `.prom`.
    pub fn collected(&self) -> bool {
        self.path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".prom"))
    }

    /// Replaces the file with `text`, mode 0644 (node_exporter need not run
    /// as root): a temporary beside it, fsynced, renamed over it and the
    /// directory fsynced, so a reader sees the old file or the new one,
    /// never part of one. The temporary's name (`.NAME.PID.jailtx-tmp`)
    /// does not end in `.prom`, so the collector never reads it.
    pub fn write(&self, text: &str) -> Result<(), MetricsError> {
        crate::fs::write_atomic_shared(&self.path, text.as_bytes(), 0o644).map_err(|source| {
            MetricsError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_with(tx: u64, op: &str, notes: &[(&str, &str)]) -> Summary {
        Summary {
            tx,
            op: op.into(),
            summary: String::new(),
            started_ms: 1000,
            ended_ms: 2500,
            outcome: Outcome::Committed,
            steps: 1,
            reason: None,
            notes: notes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_jails_last_downtime_is_from_the_newest_transaction_naming_it() {
        let done = [
            summary_with(
                1,
                "upgrade",
                &[("jail_downtime_ms", "ns=10.000 www=20.500")],
            ),
            summary_with(2, "rollback", &[("jail_downtime_ms", "www=7.250")]),
            summary_with(3, "start", &[]),
        ];
        assert_eq!(last_downtime(&done, "www").as_deref(), Some("7.250"));
        assert_eq!(last_downtime(&done, "ns").as_deref(), Some("10.000"));
        assert_eq!(last_downtime(&done, "n"), None);
    }

    #[test]
    fn the_rendering_names_every_family_once_in_base_units() {
        let facts = Facts {
            templates: vec![TemplateFacts {
                name: "mroot".into(),
                id: "ab".into(),
                signer: None,
                last_audit: Some(LastAudit {
                    template: "mroot".into(),
                    id: "ab".into(),
                    finished_ms: 1_700_000_000_001,
                    mode: "quick".into(),
                    differences: 3,
                    new_setid: 0,
                }),
            }],
            jails: vec![JailFacts {
                name: "ns".into(),
                running: true,
                mounted: true,
                last_downtime_ms: Some("1500.000".into()),
            }],
            last_upgrade: Some(UpgradeFacts {
                tx: 4,
                started_ms: 1000,
                ended_ms: 2500,
                outcome: Outcome::RolledBack,
                window_ms: Some("250.125".into()),
            }),
            pending: true,
            journal_bytes: 16,
        };
        let text = render(&facts);
        for line in [
            "jailtx_template_info{template=\"mroot\",id=\"ab\",signer=\"\"} 1",
            "jailtx_template_last_audit_timestamp_seconds{template=\"mroot\"} 1700000000.001",
            "jailtx_template_last_audit_full{template=\"mroot\"} 0",
            "jailtx_template_drift_differences{template=\"mroot\"} 3",
            "jailtx_last_upgrade_timestamp_seconds 2.500",
            "jailtx_last_upgrade_duration_seconds 1.500",
            "jailtx_last_upgrade_outcome{outcome=\"committed\"} 0",
            "jailtx_last_upgrade_outcome{outcome=\"rolled-back\"} 1",
            "jailtx_last_upgrade_window_seconds 0.250125",
            "jailtx_jail_running{jail=\"ns\"} 1",
            "jailtx_jail_last_downtime_seconds{jail=\"ns\"} 1.500000",
            "jailtx_transaction_pending 1",
            "jailtx_journal_size_bytes 16",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all, "a family twice: {text}");
        assert!(names.iter().all(|n| n.starts_with("jailtx_")), "{names:?}");
    }
}
