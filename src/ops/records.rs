//! Jail records: one TOML file per jail in the state dir's `jails/`, written
//! atomically as steps of the plan that creates or destroys the jail.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{Config, Layout};
use crate::fs::statefile::{self, Kind};
use crate::plan::JailSpec;

use super::OpsError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailRecord {
    pub name: String,
    pub hostname: String,
    pub ip: String,
}

impl JailRecord {
    pub fn to_toml(&self) -> String {
        // A struct of three strings always serializes.
        toml::to_string(self).unwrap_or_default()
    }

    /// What the host needs to run this jail, under `layout` and `cfg`.
    pub fn spec(&self, layout: &Layout, cfg: &Config) -> JailSpec {
        JailSpec {
            name: self.name.clone(),
            path: layout.j.join(&self.name),
            hostname: self.hostname.clone(),
            ip: self.ip.clone(),
            exec_start: cfg.jail.exec_start.clone(),
            exec_stop: cfg.jail.exec_stop.clone(),
            stop_timeout_secs: cfg.jail.stop_timeout_secs,
        }
    }
}

pub fn path(layout: &Layout, name: &str) -> PathBuf {
    layout.jails.join(format!("{name}.toml"))
}

/// Every jail record, sorted by name. A record that does not parse is refused
/// with its path: it is input like any other.
pub fn load_all(layout: &Layout) -> Result<Vec<JailRecord>, OpsError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&layout.jails) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(format!("read {}: {e}", layout.jails.display()).into()),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("read {}: {e}", layout.jails.display()))?;
        let p = entry.path();
        let Some(stem) = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue;
        };
        if super::validate::jail_name(stem).is_err() {
            continue;
        }
        // Checked and capped (fs::statefile): a planted link, fifo or huge
        // file is refused naming it, and its bytes are never quoted.
        let Some(text) = statefile::read_to_string(&p, Kind::Record).map_err(|e| e.to_string())?
        else {
            // Removed since the listing: no record.
            continue;
        };
        let rec: JailRecord = toml::from_str(&text).map_err(|e| {
            format!(
                "jail record {}: {}",
                p.display(),
                e.message().replace('\n', " ")
            )
        })?;
        if rec.name != stem {
            return Err(format!(
                "jail record {} names jail {:?}; rename the file or fix the name",
                p.display(),
                rec.name
            )
            .into());
        }
        out.push(rec);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
