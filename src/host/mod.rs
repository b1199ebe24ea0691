//! The one trait every OS side effect on mounts and jails goes through, with
//! the `linux` (real), `freebsd` (commands) and recording (tests) backends.

pub mod freebsd;
pub mod freebsd_conf;
pub mod freebsd_mnt;
pub mod freebsd_sim;
#[cfg(target_os = "linux")]
pub mod jail_log;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub mod linux_caps;
#[cfg(target_os = "linux")]
pub mod linux_exec;
#[cfg(target_os = "linux")]
pub mod linux_init;
#[cfg(target_os = "linux")]
pub mod linux_mount;
#[cfg(target_os = "linux")]
pub mod linux_net;
#[cfg(target_os = "linux")]
pub mod linux_seccomp;
pub mod mountinfo;
#[cfg(target_os = "linux")]
pub mod netlink;
#[cfg(target_os = "linux")]
mod netlink_wire;
pub mod recording;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use crate::plan::JailSpec;

/// A jail the host reports running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Running {
    pub name: String,
    /// FreeBSD's JID; on Linux the host PID of the jail's init.
    pub jid: u32,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("mount {src} on {dst}: {source}")]
    Mount {
        src: PathBuf,
        dst: PathBuf,
        source: std::io::Error,
    },
    /// A mount source or target that is not a plain directory jailtx made
    /// (a symlink in its path, a file): never mounted through.
    #[error("refusing to mount {path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("unmount {dst}: {source}")]
    Unmount {
        dst: PathBuf,
        source: std::io::Error,
    },
    #[error("read mount table {path}: {source}")]
    MountTable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("start jail {name}: {why}")]
    Start { name: String, why: String },
    #[error("stop jail {name}: {why}")]
    Stop { name: String, why: String },
    #[error("list jails: {0}")]
    List(String),
    #[error("run `{command}`: {why}")]
    Command { command: String, why: String },
    #[error("clear the file flags under {path}: {why}")]
    ClearFlags { path: PathBuf, why: String },
    #[error("{0} (injected failure)")]
    Injected(String),
}

/// Mounts and jails. Every method is idempotent where the engine needs it to
/// be: mounting what is mounted, unmounting what is not, stopping a stopped
/// jail are no-ops; starting a running jail returns its JID.
pub trait Host: Send + Sync {
    /// `linux`, `freebsd`, `recording`.
    fn name(&self) -> &'static str;
    /// nullfs / bind mount `src` on `dst`, read-only or read-write.
    fn mount(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), HostError>;
    fn unmount(&self, dst: &Path) -> Result<(), HostError>;
    fn is_mounted(&self, dst: &Path) -> Result<bool, HostError>;
    /// Starts the jail; fails (leaving no jail behind) when `exec_start`
    /// cannot run or exits non-zero. Returns the JID.
    fn start_jail(&self, jail: &JailSpec) -> Result<u32, HostError>;
    /// Runs `exec_stop`, then ends every process of the jail.
    fn stop_jail(&self, jail: &JailSpec) -> Result<(), HostError>;
    /// The jails running now.
    fn running(&self) -> Result<Vec<Running>, HostError>;
    /// Clears the immutable flags (`schg`) on everything under `path`, so that
    /// the tree can be removed; a missing `path` is a no-op. FreeBSD only:
    /// elsewhere there is nothing to clear.
    fn clear_flags(&self, path: &Path) -> Result<(), HostError>;
    /// Runs a shell command line on the host (`--from-cmd`, health checks)
    /// as `/bin/sh -c COMMAND sh ARGS…`, so `args` are its positional
    /// parameters `$1`…, never text pasted into the line; with extra
    /// environment variables; killed and failed after `timeout`.
    fn run_command(
        &self,
        command: &str,
        args: &[String],
        env: &[(String, String)],
        timeout: Option<std::time::Duration>,
    ) -> Result<(), HostError>;
    /// Runs `argv` inside the running jail (FreeBSD: `jexec NAME ARGV…`),
    /// as its root, with the jail's own programs: etcupdate's post-merge
    /// steps (`etcmerge::derived`). A backend whose worlds have nothing to
    /// run there (Linux) is never asked, and refuses.
    fn exec_in_jail(&self, jail: &JailSpec, argv: &[String]) -> Result<(), HostError> {
        Err(HostError::Command {
            command: argv.join(" "),
            why: format!(
                "the {} backend runs nothing inside jail {}",
                self.name(),
                jail.name
            ),
        })
    }
}

/// The JID of the running jail `jail`, checked by name and path (a reused
/// PID with another root is not our jail).
pub fn running_jid(host: &dyn Host, jail: &JailSpec) -> Result<Option<u32>, HostError> {
    Ok(host
        .running()?
        .into_iter()
        .find(|r| r.name == jail.name && r.path == jail.path)
        .map(|r| r.jid))
}

/// The backend called `name`, for the current process.
pub fn by_name(name: &str) -> Option<Box<dyn Host>> {
    match name {
        #[cfg(target_os = "linux")]
        "linux" => Some(Box::new(linux::LinuxHost::new())),
        "freebsd" => Some(Box::new(freebsd::FreeBsdHost::new(Box::new(
            freebsd::SystemRunner,
        )))),
        "recording" => Some(Box::new(recording::RecordingHost::new())),
        _ => None,
    }
}
