//! Per-target merge records in the state dir (`etc-merge/NAME.toml`): which world a jail's (or skel's) `etc` was last merged to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Layout;
use crate::fs::statefile::{self, Kind};

/// What `etc-merge` knows of one target after its last run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRecord {
    /// The id (see `tree::id`) of the pristine `etc` the target's `etc` was
    /// last merged to (or, for a new jail, copied from): the next merge's base.
    pub base: String,
    /// The template's name at the time (for people: names change, ids do not).
    pub template: String,
    /// The inode of the target's `etc` directory then. A different one means
    /// the directory was replaced (a jail purged and created again, a
    /// restore), and the record no longer describes it.
    pub etc_ino: u64,
}

impl MergeRecord {
    pub fn to_toml(&self) -> String {
        // Two strings and an integer always serialize.
        toml::to_string(self).unwrap_or_default()
    }
}

pub fn dir(layout: &Layout) -> PathBuf {
    crate::ops::due::records_dir(layout)
}

/// The record of `target` (a jail name, or `skel`).
pub fn path(layout: &Layout, target: &str) -> PathBuf {
    dir(layout).join(format!("{target}.toml"))
}

/// The record of `target`, if any. One that does not parse is refused with
/// its path: it is input like any other.
pub fn load(layout: &Layout, target: &str) -> Result<Option<MergeRecord>, String> {
    let p = path(layout, target);
    let Some(text) = statefile::read_to_string(&p, Kind::Record).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        format!(
            "etc-merge record {}: {}; remove it to merge from the newest archived template",
            p.display(),
            e.message().replace('\n', " ")
        )
    })
}
