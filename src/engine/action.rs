//! Carrying out and compensating each [`Action`], idempotently.
//!
//! Both directions look at the current state first, because after a crash the
//! journal only says an action *may* have run: an intent without a done record
//! covers "never started", "half done" and "done but not recorded".

use std::io;
use std::path::{Path, PathBuf};

use crate::fs::{self, FsError, quarantine};
use crate::host::{Host, HostError};
use crate::manifest::{self, ManifestError};
use crate::world::{self, WorldError};

use crate::plan::Action;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("inspect {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("{path}: {what}; move it aside, then run `jailtx recover`")]
    Conflict { path: PathBuf, what: String },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    World(#[from] WorldError),
    #[error(
        "{template} changed after its manifest was written ({differences} differences); remove it and start again"
    )]
    Drifted {
        template: PathBuf,
        differences: usize,
    },
    #[error("health check of jail {jail} failed: {why}")]
    Unhealthy { jail: String, why: String },
    #[error("rename {from} -> {to}: neither exists; something outside jailtx moved it")]
    Vanished { from: PathBuf, to: PathBuf },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl ActionError {
    /// The path whose fsync or syncfs failed, if this is such a failure (the
    /// step's own, a manifest's or a world's): see [`FsError::sync_failed`].
    pub fn sync_failed(&self) -> Option<&Path> {
        match self {
            ActionError::Fs(e)
            | ActionError::Manifest(ManifestError::Write(e))
            | ActionError::World(WorldError::Fs(e)) => e.sync_failed(),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, ActionError>;

/// What is at a path, without following a final symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Missing,
    Dir,
    Symlink(PathBuf),
    Other,
}

fn entry(path: &Path) -> Result<Entry> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(Entry::Dir),
        Ok(m) if m.file_type().is_symlink() => {
            let target = std::fs::read_link(path).map_err(|source| ActionError::Stat {
                path: path.to_owned(),
                source,
            })?;
            Ok(Entry::Symlink(target))
        }
        Ok(_) => Ok(Entry::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
        Err(source) => Err(ActionError::Stat {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The side name a tree copy is built under before it is renamed into place.
pub fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".jailtx-partial");
    to.with_file_name(name)
}

fn rename_state(from: &Path, to: &Path) -> Result<(bool, bool)> {
    Ok((entry(from)? != Entry::Missing, entry(to)? != Entry::Missing))
}

/// Makes the effect of `action` present. Safe to call again at any point.
pub fn apply(action: &Action, host: &dyn Host) -> Result<()> {
    match action {
        Action::MakeDir { path, mode } => match entry(path)? {
            Entry::Missing => Ok(fs::create_dir_durable(path, *mode)?),
            // Already made by an earlier, interrupted run: the mkdir may not be
            // durable yet, so sync the parent again before the done record.
            // mkdir and chmod are two syscalls: a crash between them leaves
            // mode 0700, so set the mode again, durably.
            Entry::Dir => Ok(fs::set_dir_mode_durable(path, *mode)?),
            _ => Err(ActionError::Conflict {
                path: path.clone(),
                what: "exists and is not a directory".into(),
            }),
        },
        Action::Rename { from, to } => match rename_state(from, to)? {
            (true, false) => Ok(fs::rename_durable(from, to)?),
            (false, true) => {
                fs::fsync_parent(to)?;
                Ok(fs::fsync_parent(from)?)
            }
            (true, true) => Err(ActionError::Conflict {
                path: to.clone(),
                what: format!("is in the way of {}", from.display()),
            }),
            (false, false) => Err(ActionError::Vanished {
                from: from.clone(),
                to: to.clone(),
            }),
        },
        Action::WriteFile {
            path,
            contents,
            mode,
        } => Ok(fs::write_atomic(path, contents.as_bytes(), *mode)?),
        Action::Symlink { target, link } => match entry(link)? {
            Entry::Missing => Ok(fs::symlink_durable(target, link)?),
            Entry::Symlink(t) if t == *target => Ok(fs::fsync_parent(link)?),
            _ => Err(ActionError::Conflict {
                path: link.clone(),
                what: format!("exists and is not a symlink to {}", target.display()),
            }),
        },
        Action::RemoveTree { path } => {
            fs::remove_tree(path)?;
            Ok(())
        }
        Action::CopyTree { from, to } => {
            if entry(to)? != Entry::Missing {
                return Ok(fs::fsync_parent(to)?);
            }
            let partial = partial_path(to);
            fs::remove_tree(&partial)?;
            fs::copy_tree(from, &partial)?;
            // Every copied file is durable before the rename publishes the
            // tree: a visible `to` is always a complete copy.
            fs::sync_tree(&partial)?;
            Ok(fs::rename_durable(&partial, to)?)
        }
        Action::Mount {
            src,
            dst,
            read_only,
        } => Ok(host.mount(src, dst, *read_only)?),
        Action::Unmount { dst, .. } => Ok(host.unmount(dst)?),
        Action::StartJail { jail } => host.start_jail(jail).map(|_| ()).map_err(Into::into),
        Action::StopJail { jail } => Ok(host.stop_jail(jail)?),
        Action::Populate { source, to } => Ok(world::populate(source, to, host)?),
        Action::Shape {
            template,
            skel,
            carry_over,
        } => Ok(world::shape(template, skel.as_deref(), carry_over)?),
        Action::HealthCheck {
            jails,
            timeout_secs,
        } => health_check_all(host, jails, *timeout_secs),
        Action::CanaryWait {
            jails,
            wait_secs,
            timeout_secs,
        } => {
            // Clamped like the timeout: a plan read back from the journal
            // may carry any value.
            let wait = (*wait_secs).min(crate::config::CANARY_WAIT_MAX);
            std::thread::sleep(std::time::Duration::from_secs(wait));
            health_check_all(host, jails, *timeout_secs)
        }
        Action::WriteManifest {
            template,
            to,
            exclude,
        } => {
            // The planner made sure `to` did not exist, and write_atomic only
            // ever shows it whole: present means written by an earlier run.
            if entry(to)? != Entry::Missing {
                return Ok(fs::fsync_parent(to)?);
            }
            let m = manifest::build(template, exclude)?;
            Ok(manifest::write(to, &m)?)
        }
        Action::ClearFlags { path } => Ok(host.clear_flags(path)?),
        // The `*In` actions work inside a tree the jail's root owns: a
        // resumed step moves aside what the jail put in its way (see
        // fs::quarantine) rather than failing the same way forever.
        Action::WriteFileIn {
            root,
            rel,
            contents,
            mode,
            uid,
            gid,
        } => Ok(quarantine::write_new(
            root,
            rel,
            &contents.0,
            *mode,
            *uid,
            *gid,
        )?),
        Action::RenameIn {
            root,
            from,
            to,
            expect,
        } => Ok(quarantine::rename(root, from, to, expect.as_deref())?),
        Action::RemoveFileIn { root, rel } => Ok(quarantine::remove_file(root, rel)?),
        Action::MakeDirIn {
            root,
            rel,
            mode,
            uid,
            gid,
        } => Ok(quarantine::make_dir(root, rel, *mode, *uid, *gid)?),
        Action::SymlinkIn { root, rel, target } => Ok(quarantine::symlink(root, rel, target)?),
        Action::VerifyManifest { template, manifest } => {
            let m = manifest::read(manifest)?;
            let report = manifest::audit::quick(template, &m)?;
            if report.is_clean() {
                Ok(())
            } else {
                Err(ActionError::Drifted {
                    template: template.clone(),
                    differences: report.differences.len(),
                })
            }
        }
    }
}

/// One listing for all jails: a scan per jail is quadratic in the number of
/// jails, inside the downtime window.
fn health_check_all(
    host: &dyn Host,
    jails: &[(crate::host::JailSpec, Option<String>)],
    timeout_secs: u64,
) -> Result<()> {
    let running = host.running()?;
    jails.iter().try_for_each(|(jail, command)| {
        health_check(host, &running, jail, command.as_deref(), timeout_secs)
    })
}

fn health_check(
    host: &dyn Host,
    running: &[crate::host::Running],
    jail: &crate::host::JailSpec,
    command: Option<&str>,
    timeout_secs: u64,
) -> Result<()> {
    let jid = running
        .iter()
        .find(|r| r.name == jail.name && r.path == jail.path)
        .map(|r| r.jid)
        .ok_or_else(|| ActionError::Unhealthy {
            jail: jail.name.clone(),
            why: "its init is not running".into(),
        })?;
    if let Some(cmd) = command {
        let env = [
            ("JAIL_NAME".to_owned(), jail.name.clone()),
            ("JAIL_IP".to_owned(), jail.ip.clone()),
            ("JAIL_JID".to_owned(), jid.to_string()),
            ("JAIL_HOSTNAME".to_owned(), jail.hostname.clone()),
        ];
        // Clamped: a plan read back from the journal may carry any value.
        let timeout = crate::config::health_timeout(timeout_secs);
        host.run_command(cmd, &[], &env, Some(timeout))
            .map_err(|e| ActionError::Unhealthy {
                jail: jail.name.clone(),
                why: e.to_string(),
            })?;
    }
    Ok(())
}

/// Turns on the mount or jail a volatile action is about, whichever way the
/// action goes (a `Mount`/`Unmount` mounts, a `StartJail`/`StopJail` starts):
/// what recovery needs to put back what a reboot took away. A no-op when it
/// is already on, and for every other action.
pub fn turn_on(action: &Action, host: &dyn Host) -> Result<()> {
    match action {
        Action::Mount {
            src,
            dst,
            read_only,
        }
        | Action::Unmount {
            src,
            dst,
            read_only,
        } => Ok(host.mount(src, dst, *read_only)?),
        Action::StartJail { jail } | Action::StopJail { jail } => {
            host.start_jail(jail).map(|_| ()).map_err(Into::into)
        }
        _ => Ok(()),
    }
}

/// Takes the effect of `action` away, whether it ran fully, partly or not at all.
pub fn undo(action: &Action, host: &dyn Host) -> Result<()> {
    match action {
        Action::MakeDir { path, .. } => match entry(path)? {
            Entry::Dir => std::fs::remove_dir(path)
                .map_err(|source| {
                    ActionError::Fs(FsError::RemoveDir {
                        path: path.clone(),
                        source,
                    })
                })
                .and_then(|()| Ok(fs::fsync_parent(path)?)),
            // Never made, or something else stands there that is not ours.
            _ => Ok(()),
        },
        Action::Rename { from, to } => match rename_state(from, to)? {
            (false, true) => Ok(fs::rename_durable(to, from)?),
            (true, false) => {
                fs::fsync_parent(from)?;
                Ok(fs::fsync_parent(to)?)
            }
            (true, true) => Err(ActionError::Conflict {
                path: from.clone(),
                what: format!("is in the way of moving {} back", to.display()),
            }),
            (false, false) => Err(ActionError::Vanished {
                from: to.clone(),
                to: from.clone(),
            }),
        },
        Action::WriteFile { path, .. } => {
            fs::remove_file_durable(&fs::temp_path(path))?;
            Ok(fs::remove_file_durable(path)?)
        }
        Action::Symlink { target, link } => match entry(link)? {
            Entry::Symlink(t) if t == *target => Ok(fs::remove_file_durable(link)?),
            _ => Ok(()),
        },
        // Plans never put a removal before the commit point (Plan::validate),
        // so a rollback never reaches one.
        Action::RemoveTree { .. } => Ok(()),
        Action::CopyTree { to, .. } => {
            fs::remove_tree(&partial_path(to))?;
            fs::remove_tree(to)?;
            Ok(())
        }
        Action::Mount { dst, .. } => Ok(host.unmount(dst)?),
        Action::Unmount {
            src,
            dst,
            read_only,
        } => Ok(host.mount(src, dst, *read_only)?),
        Action::StartJail { jail } => Ok(host.stop_jail(jail)?),
        // The stop may have run partly (exec.stop done, init still alive):
        // finishing it first makes the start a real start, not a no-op on a
        // jail whose services are gone.
        Action::StopJail { jail } => {
            host.stop_jail(jail)?;
            host.start_jail(jail).map(|_| ()).map_err(Into::into)
        }
        Action::Populate { to, source } => {
            // An installworld leaves `schg` files (libc, ld-elf.so, var/empty)
            // that no one may unlink until the flag is cleared (FreeBSD).
            host.clear_flags(&world::partial_path(to))?;
            host.clear_flags(to)?;
            world::unpopulate(to)?;
            // A staged bundle's manifest goes with its tree.
            if let world::Source::Bundle(b) = source
                && let Some(m) = &b.staged_manifest
            {
                fs::remove_file_durable(m)?;
            }
            Ok(())
        }
        Action::Shape { skel, .. } => Ok(world::unshape(skel.as_deref())?),
        Action::HealthCheck { .. } => Ok(()),
        Action::WriteManifest { to, .. } => {
            fs::remove_file_durable(&fs::temp_path(to))?;
            Ok(fs::remove_file_durable(to)?)
        }
        Action::ClearFlags { .. } => Ok(()),
        // Inside the jail's tree an undo moves aside whatever the jail's root
        // put in its way (fs::quarantine): a rollback always finishes.
        Action::WriteFileIn {
            root,
            rel,
            contents,
            ..
        } => Ok(quarantine::unwrite_new(root, rel, &contents.0)?),
        // Back only if the forward rename happened: `to` holds the plan's file.
        Action::RenameIn {
            root,
            from,
            to,
            expect,
        } => Ok(quarantine::unrename(root, from, to, expect.as_deref())?),
        // Plans never put a removal before the commit point (Plan::validate).
        Action::RemoveFileIn { .. } => Ok(()),
        Action::MakeDirIn { root, rel, .. } => Ok(quarantine::unmake_dir(root, rel)?),
        Action::SymlinkIn { root, rel, target } => Ok(quarantine::unsymlink(root, rel, target)?),
        Action::VerifyManifest { .. } => Ok(()),
        Action::CanaryWait { .. } => Ok(()),
    }
}
