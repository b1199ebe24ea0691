//! The bottom layer: a transaction's plan as pure data (named steps, each an
//! [`Action`], and the commit point that splits the reversible part from the
//! forward-only part), with the values every layer shares and no I/O.
//!
//! Nothing here imports another module of the crate: the journal records
//! plans, hosts carry out jail specs, the engine runs plans, planners make
//! them (see the stack in `lib.rs` and `scripts/check-layers`).

mod blob;
pub mod derived;
mod jail;
mod names;
mod source;

pub use blob::Blob;
pub use jail::JailSpec;
pub use names::{ArchiveName, Backend, JailName, NameError, check_jail_name};
pub use source::{BundleSource, Source};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest payload one journal frame may carry (the journal's frame format
/// declares it; see `journal-format/README.md`). Defined here because a plan
/// must fit in one `Begin` record, which [`Plan::validate`] checks before
/// any lock is taken.
pub const MAX_PAYLOAD: u32 = 16 << 20;

/// One unit of work. Every action is idempotent (running it again after it
/// ran, or after it was cut short, ends in the same state) and, unless it is
/// forward-only, has a compensation that is idempotent too and correct whether
/// the action ran fully, partly or not at all.
///
/// Postcard encodes the variant by its position: new variants go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Create a directory with exactly `mode`. Undo: remove it (it must be empty by then).
    MakeDir { path: PathBuf, mode: u32 },
    /// rename(2), then fsync both parents. Undo: rename back.
    Rename { from: PathBuf, to: PathBuf },
    /// Write a whole file atomically (temp, fsync, rename, fsync dir). `path`
    /// must not exist when the plan is made (replace = rename aside first). Undo: remove it.
    WriteFile {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    /// Create a symlink `link` -> `target`. Undo: remove the link.
    Symlink { target: PathBuf, link: PathBuf },
    /// Remove a tree without following symlinks. Forward-only: plans put it
    /// after the commit point (before it, move things aside with `Rename`).
    RemoveTree { path: PathBuf },
    /// Copy a tree with cpdup semantics into `to`, which must not exist when
    /// the plan is made; the copy goes to a side name and is renamed into
    /// place, so `to` existing means complete. Undo: remove `to`.
    CopyTree { from: PathBuf, to: PathBuf },
    /// nullfs / bind mount `src` on `dst`. Undo: unmount `dst`.
    Mount {
        src: PathBuf,
        dst: PathBuf,
        read_only: bool,
    },
    /// Unmount `dst` (which has `src` mounted). Undo: mount it again.
    Unmount {
        src: PathBuf,
        dst: PathBuf,
        read_only: bool,
    },
    /// Start a jail (exec.start must succeed). Undo: stop it.
    StartJail { jail: JailSpec },
    /// Stop a jail (exec.stop, then signals). Undo: start it again.
    StopJail { jail: JailSpec },
    /// Fill `to` (which must not exist when the plan is made) with a world
    /// from a directory, an archive or a command. Undo: remove it.
    Populate { source: Source, to: PathBuf },
    /// Check that the started jails are up: each init alive and, where a
    /// command is given, that command run on the host (with JAIL_NAME,
    /// JAIL_IP, JAIL_JID, JAIL_HOSTNAME) exits 0 within the timeout. One step
    /// for all jails: two journal syncs, not two per jail, inside the window.
    /// Changes nothing, so its undo does nothing.
    HealthCheck {
        jails: Vec<(JailSpec, Option<String>)>,
        timeout_secs: u64,
    },
    /// Shape the world at `template` (read-write dirs to `skel`, or dropped
    /// when `skel` is none; `s/` and the links). Always follows the Populate
    /// of the same tree. Undo: remove `skel`.
    Shape {
        template: PathBuf,
        skel: Option<PathBuf>,
        /// Upgrade only: paths the old template carries over; the new world's
        /// own copies are dropped and their parents made, so they can move in.
        carry_over: Vec<PathBuf>,
    },
    /// Build the manifest of `template` (leaving out `exclude`, relative to
    /// it: the carry-over paths), encode it and write it atomically to `to`,
    /// which must not exist when the plan is made. A `to` that exists was
    /// written whole by an earlier run of this step. Undo: remove `to`.
    WriteManifest {
        template: PathBuf,
        to: PathBuf,
        exclude: Vec<PathBuf>,
    },
    /// Clear every file flag under `path` (FreeBSD: `chflags -R 0`, as the
    /// Handbook does on `var`: `schg`, `sunlnk`, `uchg`, `uunlnk` all stop an
    /// unlink) so that a later step can remove it;
    /// a missing `path` is a no-op. Undo: nothing (the flags only ever guard
    /// a tree that the plan, or its compensations, remove).
    ClearFlags { path: PathBuf },
    /// Create file `root/rel`, which must not exist when the plan is made,
    /// atomically, with exactly `mode` and owner. `root` is trusted; below it
    /// a jail may write, so `rel` is resolved without following any symlink
    /// (see `fs::beneath`). Undo: remove it if it still holds `contents`.
    WriteFileIn {
        root: PathBuf,
        rel: PathBuf,
        contents: Blob,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Rename `root/from` to `root/to` (resolved as in `WriteFileIn`),
    /// never replacing anything. With `expect` (BLAKE3, hex), `from` must be
    /// the regular file the plan was made from. Undo: rename it back.
    RenameIn {
        root: PathBuf,
        from: PathBuf,
        to: PathBuf,
        expect: Option<String>,
    },
    /// Remove the file or symlink `root/rel` (resolved as in `WriteFileIn`).
    /// Forward-only: after the commit point (before it, `RenameIn` aside).
    RemoveFileIn { root: PathBuf, rel: PathBuf },
    /// Make directory `root/rel` (resolved as in `WriteFileIn`) with `mode`
    /// and owner. Undo: remove it (it must be empty by then).
    MakeDirIn {
        root: PathBuf,
        rel: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Create symlink `root/rel` -> `target` (resolved as in `WriteFileIn`).
    /// Undo: remove the link.
    SymlinkIn {
        root: PathBuf,
        rel: PathBuf,
        target: PathBuf,
    },
    /// Quick-audit `template` against its manifest and fail on any drift:
    /// an upgrade never switches to a staged template that changed after it
    /// was built. Changes nothing, so its undo does nothing.
    VerifyManifest {
        template: PathBuf,
        manifest: PathBuf,
    },
    /// Wait `wait_secs`, then check the canary jails' health as
    /// [`Action::HealthCheck`] does. A step of its own, never in a batch:
    /// its done record is what lets the rest of the jails be stopped, so a
    /// crash before it never stops them on a rollback. Changes nothing, so
    /// its undo does nothing.
    CanaryWait {
        jails: Vec<(JailSpec, Option<String>)>,
        wait_secs: u64,
        timeout_secs: u64,
    },
}

impl Action {
    /// Whether the effect lives in kernel state that a reboot wipes (mounts,
    /// running jails) rather than on disk.
    pub fn volatile(&self) -> bool {
        matches!(
            self,
            Action::Mount { .. }
                | Action::Unmount { .. }
                | Action::StartJail { .. }
                | Action::StopJail { .. }
        )
    }

    /// Whether the executor may journal it in a batch with its neighbours:
    /// kernel-state steps and the health check, each correct to apply or undo
    /// whether or not it ran.
    pub fn batchable(&self) -> bool {
        self.volatile() || matches!(self, Action::HealthCheck { .. })
    }

    /// Whether the action has a compensation (may stand before the commit point).
    pub fn reversible(&self) -> bool {
        !matches!(
            self,
            Action::RemoveTree { .. } | Action::RemoveFileIn { .. }
        )
    }

    /// The short kind name (`mkdir`, `rename`…), as used in fault targets and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::MakeDir { .. } => "mkdir",
            Action::Rename { .. } => "rename",
            Action::WriteFile { .. } => "write",
            Action::Symlink { .. } => "symlink",
            Action::RemoveTree { .. } => "remove-tree",
            Action::CopyTree { .. } => "copy-tree",
            Action::Mount { .. } => "mount",
            Action::Unmount { .. } => "unmount",
            Action::StartJail { .. } => "start-jail",
            Action::StopJail { .. } => "stop-jail",
            Action::Populate { .. } => "populate",
            Action::Shape { .. } => "shape",
            Action::HealthCheck { .. } => "health-check",
            Action::WriteManifest { .. } => "manifest",
            Action::ClearFlags { .. } => "clear-flags",
            Action::WriteFileIn { .. } => "write-in",
            Action::RenameIn { .. } => "rename-in",
            Action::RemoveFileIn { .. } => "remove-in",
            Action::MakeDirIn { .. } => "mkdir-in",
            Action::SymlinkIn { .. } => "symlink-in",
            Action::VerifyManifest { .. } => "verify-manifest",
            Action::CanaryWait { .. } => "canary-wait",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::MakeDir { path, mode } => write!(f, "mkdir -m {mode:04o} {}", path.display()),
            Action::Rename { from, to } => write!(f, "mv {} {}", from.display(), to.display()),
            Action::WriteFile {
                path,
                contents,
                mode,
            } => write!(
                f,
                "write {} ({} bytes, mode {mode:04o})",
                path.display(),
                contents.len()
            ),
            Action::Symlink { target, link } => {
                write!(f, "ln -s {} {}", target.display(), link.display())
            }
            Action::RemoveTree { path } => write!(f, "rm -rf {}", path.display()),
            Action::CopyTree { from, to } => {
                write!(f, "cpdup {} {}", from.display(), to.display())
            }
            Action::Mount {
                src,
                dst,
                read_only,
            } => write!(
                f,
                "mount -o {} {} {}",
                if *read_only { "ro" } else { "rw" },
                src.display(),
                dst.display()
            ),
            Action::Unmount { dst, .. } => write!(f, "umount {}", dst.display()),
            Action::StartJail { jail } => write!(
                f,
                "start jail {} ({} {}, {})",
                jail.name,
                jail.hostname,
                jail.ip,
                jail.path.display()
            ),
            Action::StopJail { jail } => write!(f, "stop jail {}", jail.name),
            Action::Populate { source, to } => {
                write!(f, "populate {} from {source}", to.display())
            }
            Action::HealthCheck { jails, .. } => {
                let names: Vec<&str> = jails.iter().map(|(j, _)| j.name.as_str()).collect();
                write!(f, "health-check {}", names.join(" "))
            }
            Action::Shape { template, skel, .. } => match skel {
                Some(skel) => write!(
                    f,
                    "shape {} (rw dirs -> {}, s/, links)",
                    template.display(),
                    skel.display()
                ),
                None => write!(f, "shape {} (drop rw dirs, s/, links)", template.display()),
            },
            Action::WriteManifest { template, to, .. } => write!(
                f,
                "manifest {} -> {} (BLAKE3)",
                template.display(),
                to.display()
            ),
            Action::ClearFlags { path } => write!(f, "chflags -R 0 {}", path.display()),
            Action::WriteFileIn {
                root,
                rel,
                contents,
                mode,
                uid,
                gid,
            } => write!(
                f,
                "write {} ({} bytes, mode {mode:04o}, owner {uid}:{gid})",
                root.join(rel).display(),
                contents.len()
            ),
            Action::RenameIn { root, from, to, .. } => write!(
                f,
                "mv {} {}",
                root.join(from).display(),
                root.join(to).display()
            ),
            Action::RemoveFileIn { root, rel } => write!(f, "rm {}", root.join(rel).display()),
            Action::MakeDirIn {
                root,
                rel,
                mode,
                uid,
                gid,
            } => write!(
                f,
                "mkdir -m {mode:04o} {} (owner {uid}:{gid})",
                root.join(rel).display()
            ),
            Action::VerifyManifest { template, manifest } => write!(
                f,
                "audit --quick {} against {}",
                template.display(),
                manifest.display()
            ),
            Action::SymlinkIn { root, rel, target } => {
                write!(f, "ln -s {} {}", target.display(), root.join(rel).display())
            }
            Action::CanaryWait {
                jails, wait_secs, ..
            } => {
                let names: Vec<&str> = jails.iter().map(|(j, _)| j.name.as_str()).collect();
                write!(
                    f,
                    "wait {wait_secs} s, then health-check {}",
                    names.join(" ")
                )
            }
        }
    }
}

/// A named step of a plan; names are what `JAILTX_FAULT` and logs refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub action: Action,
}

/// A whole transaction's work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The operation, e.g. `init`, `upgrade`.
    pub op: String,
    /// One line for `history`.
    pub summary: String,
    pub steps: Vec<Step>,
    /// Steps before this index are reversible; the commit record is written
    /// when execution reaches it, and from then on the plan only goes forward.
    pub commit: u32,
    /// Facts for `history` (e.g. from/to templates).
    pub notes: BTreeMap<String, String>,
    /// Mounts and jails that are up when the plan is made and that no step
    /// touches, as the actions that bring them up. A reboot takes them down
    /// with the rest; `recover` runs these (idempotent) before it resumes or
    /// rolls back, so every jail ends in its prior run-state.
    #[serde(default)]
    pub bystanders: Vec<Action>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("plan {op}: commit point {commit} is beyond its {len} steps")]
    CommitOutOfRange { op: String, commit: u32, len: usize },
    #[error(
        "plan {op}: step {index} ({name}: {action}) cannot be undone and must come after the commit point"
    )]
    IrreversibleBeforeCommit {
        op: String,
        index: usize,
        name: String,
        action: String,
    },
    #[error("plan {op}: step {index} has an empty name")]
    EmptyName { op: String, index: usize },
    #[error("plan {op}: {count} steps is more than a journal record can hold")]
    TooLarge { op: String, count: usize },
    #[error(
        "plan {op}: {what} ({action}) names a path that is not valid UTF-8, which the journal cannot record; rename it"
    )]
    NotUtf8 {
        op: String,
        what: String,
        action: String,
    },
    #[error(
        "plan {op}: {bytes} bytes encoded, more than one journal record holds ({max}); do the work in smaller parts"
    )]
    TooBig { op: String, bytes: usize, max: u32 },
}

impl Plan {
    /// A plan whose every step is reversible, committing after the last one.
    pub fn new(op: &str, summary: impl Into<String>) -> Self {
        Plan {
            op: op.to_owned(),
            summary: summary.into(),
            steps: Vec::new(),
            commit: 0,
            notes: BTreeMap::new(),
            bystanders: Vec::new(),
        }
    }

    /// Appends a step before the commit point.
    pub fn push(&mut self, name: impl Into<String>, action: Action) {
        let at = self.commit as usize;
        self.steps.insert(
            at,
            Step {
                name: name.into(),
                action,
            },
        );
        self.commit += 1;
    }

    /// Appends a step after the commit point (forward-only work: cleanup).
    pub fn push_after_commit(&mut self, name: impl Into<String>, action: Action) {
        self.steps.push(Step {
            name: name.into(),
            action,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Checks the structural rules the executor relies on.
    pub fn validate(&self) -> Result<(), PlanError> {
        let op = self.op.clone();
        if self.steps.len() > u32::MAX as usize / 2 {
            return Err(PlanError::TooLarge {
                op,
                count: self.steps.len(),
            });
        }
        if self.commit as usize > self.steps.len() {
            return Err(PlanError::CommitOutOfRange {
                op,
                commit: self.commit,
                len: self.steps.len(),
            });
        }
        for (index, step) in self.steps.iter().enumerate() {
            if step.name.is_empty() {
                return Err(PlanError::EmptyName { op, index });
            }
            if index < self.commit as usize && !step.action.reversible() {
                return Err(PlanError::IrreversibleBeforeCommit {
                    op,
                    index,
                    name: step.name.clone(),
                    action: step.action.to_string(),
                });
            }
        }
        // The whole plan goes into the Begin record, where a path is a
        // string: one that is not UTF-8 (a name a FreeBSD user may well
        // have) would only fail there, after the lock, as if the journal
        // were broken. Refused here instead, as bad input. Sizing needs no
        // buffer; only a failure is looked into, action by action.
        let max = MAX_PAYLOAD;
        match postcard::experimental::serialized_size(self) {
            // The Begin adds a few bytes of its own (tx, start time).
            Ok(bytes) if bytes > max as usize - 64 => Err(PlanError::TooBig { op, bytes, max }),
            Ok(_) => Ok(()),
            Err(_) => Err(self.unencodable(op)),
        }
    }

    /// The step (or bystander) whose action cannot be encoded.
    fn unencodable(&self, op: String) -> PlanError {
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("step {i} ({})", s.name), &s.action));
        let bystanders = self
            .bystanders
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("bystander {i}"), a));
        let bad = steps
            .chain(bystanders)
            .find(|(_, a)| postcard::experimental::serialized_size(*a).is_err());
        let (what, action) = match bad {
            Some((what, a)) => (what, a.to_string()),
            None => ("the plan".into(), self.summary.clone()),
        };
        PlanError::NotUtf8 { op, what, action }
    }
}

impl fmt::Display for Plan {
    /// The `--dry-run` listing: one numbered line per step, the commit point marked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan {}: {} ({} steps)",
            self.op,
            self.summary,
            self.steps.len()
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            if i == self.commit as usize {
                writeln!(f, "   -- commit point --")?;
            }
            writeln!(f, "{i:3} {:<24} {}", step.name, step.action)?;
        }
        if self.commit as usize == self.steps.len() {
            writeln!(f, "   -- commit point --")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_journal_cannot_record_is_refused_by_validate() {
        use std::os::unix::ffi::OsStrExt;
        let mut p = Plan::new("t", "test");
        let odd = PathBuf::from(std::ffi::OsStr::from_bytes(b"/j/\xff"));
        p.push(
            "mk",
            Action::MakeDir {
                path: odd,
                mode: 0o755,
            },
        );
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("step 0 (mk)") && e.contains("not valid UTF-8"),
            "{e}"
        );

        let mut p = Plan::new("t", "test");
        p.bystanders.push(Action::Unmount {
            src: PathBuf::from(std::ffi::OsStr::from_bytes(b"/\xfe")),
            dst: "/j/ns".into(),
            read_only: true,
        });
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("bystander 0"), "{e}");

        let mut p = Plan::new("t", "test");
        let contents = "x".repeat(MAX_PAYLOAD as usize);
        p.push(
            "big",
            Action::WriteFile {
                path: "/x".into(),
                contents,
                mode: 0o644,
            },
        );
        assert!(matches!(p.validate(), Err(PlanError::TooBig { .. })));
    }

    #[test]
    fn push_keeps_cleanup_after_the_commit_point() {
        let mut p = Plan::new("t", "test");
        p.push_after_commit("rm", Action::RemoveTree { path: "/x".into() });
        p.push(
            "mk",
            Action::MakeDir {
                path: "/y".into(),
                mode: 0o755,
            },
        );
        assert_eq!(p.commit, 1);
        assert_eq!(p.steps[0].name, "mk");
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn removal_before_commit_is_refused() {
        let mut p = Plan::new("t", "test");
        p.push("rm", Action::RemoveTree { path: "/x".into() });
        assert!(matches!(
            p.validate(),
            Err(PlanError::IrreversibleBeforeCommit { index: 0, .. })
        ));
    }
}
