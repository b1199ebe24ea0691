//! The record of a template's last audit (`manifests/NAME.audit`), which `jailtx metrics` publishes.
//!
//! `audit` writes one per template it checked, beside the template's
//! manifest, after the audit and before it exits (0 or 3 alike). The record
//! names the template id it was made against: an upgrade renames `mroot`
//! to an archive without touching the records, so a record whose id is not
//! the template's current one describes a tree that has moved on, and its
//! reader ignores it (the template counts as never audited since). Records
//! of templates whose manifest is gone (pruned archives) are removed by the
//! next audit.
//!
//! Audits run side by side (the shared lock), so a record is written with
//! [`crate::fs::write_atomic_shared`]: the last writer wins, whole.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::FsError;
use crate::fs::statefile::{self, Kind, StateFileError};

/// What one audit of one template found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastAudit {
    /// The template's directory name (`mroot`, `mroot.YYYYMMDD[.N]`).
    pub template: String,
    /// The template id (the manifest's content hash) the audit checked against.
    pub id: String,
    /// When the audit finished, milliseconds since the Unix epoch.
    pub finished_ms: i64,
    /// `full` or `quick`.
    pub mode: String,
    /// Differences found (0: clean).
    pub differences: u64,
    /// Of those, setuid/setgid files the manifest does not have.
    pub new_setid: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LastAuditError {
    #[error(transparent)]
    Unsafe(#[from] StateFileError),
    #[error("record the audit of {template}: {source}")]
    Write { template: String, source: FsError },
    #[error("audit record {path}: {message}; remove it (the next `jailtx audit` writes it again)")]
    Parse { path: PathBuf, message: String },
}

/// The record's file for template `name`.
pub fn path_for(manifests_dir: &Path, name: &str) -> PathBuf {
    manifests_dir.join(format!("{name}.audit"))
}

/// Writes `rec` as the last audit of its template (mode 0600, like the
/// other state files).
pub fn write(manifests_dir: &Path, rec: &LastAudit) -> Result<(), LastAuditError> {
    // A struct of strings and integers always serializes.
    let text = toml::to_string(rec).unwrap_or_default();
    crate::fs::write_atomic_shared(
        &path_for(manifests_dir, &rec.template),
        text.as_bytes(),
        0o600,
    )
    .map_err(|source| LastAuditError::Write {
        template: rec.template.clone(),
        source,
    })
}

/// The last audit of template `name` made against template id `id`; `None`
/// when there is none, or when the record is of another tree that had the
/// name before (see the module doc). The file is checked like every state
/// file (a planted symlink or fifo is refused, naming it).
pub fn read(
    manifests_dir: &Path,
    name: &str,
    id: &str,
) -> Result<Option<LastAudit>, LastAuditError> {
    let path = path_for(manifests_dir, name);
    let Some(text) = statefile::read_to_string(&path, Kind::Record)? else {
        return Ok(None);
    };
    let rec: LastAudit = toml::from_str(&text).map_err(|e| LastAuditError::Parse {
        path: path.clone(),
        message: e.message().replace('\n', " "),
    })?;
    if rec.template != name {
        return Err(LastAuditError::Parse {
            path,
            message: format!("it names template {:?}", rec.template),
        });
    }
    Ok((rec.id == id).then_some(rec))
}

/// Removes the records of templates that have no manifest any more (pruned
/// archives). Best effort: a record left behind is only ignored later.
pub fn remove_orphans(manifests_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(manifests_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".audit")) else {
            continue;
        };
        if std::fs::symlink_metadata(super::path_for(manifests_dir, name)).is_err() {
            let _ = crate::fs::remove_file_durable(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(template: &str, id: &str) -> LastAudit {
        LastAudit {
            template: template.into(),
            id: id.into(),
            finished_ms: 1_700_000_000_123,
            mode: "quick".into(),
            differences: 2,
            new_setid: 1,
        }
    }

    #[test]
    fn a_record_reads_back_only_for_the_id_it_was_made_against() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &rec("mroot", "aaaa")).unwrap();
        assert_eq!(
            read(d.path(), "mroot", "aaaa").unwrap(),
            Some(rec("mroot", "aaaa"))
        );
        assert_eq!(read(d.path(), "mroot", "bbbb").unwrap(), None);
        assert_eq!(read(d.path(), "mroot.20260101", "aaaa").unwrap(), None);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(path_for(d.path(), "mroot"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o7777, 0o600);
    }

    #[test]
    fn a_foreign_or_planted_record_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let p = path_for(d.path(), "mroot");
        std::fs::write(&p, "not = [toml").unwrap();
        let e = read(d.path(), "mroot", "x").unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("remove it"),
            "{e}"
        );
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        let e = read(d.path(), "mroot", "x").unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
    }

    #[test]
    fn records_without_a_manifest_are_removed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(super::super::path_for(d.path(), "mroot"), b"m").unwrap();
        write(d.path(), &rec("mroot", "a")).unwrap();
        write(d.path(), &rec("mroot.20260101", "b")).unwrap();
        remove_orphans(d.path());
        assert!(path_for(d.path(), "mroot").exists());
        assert!(!path_for(d.path(), "mroot.20260101").exists());
    }
}
