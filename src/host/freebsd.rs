//! The FreeBSD backend: the host operations as FreeBSD commands
//! (`mount -t nullfs`, `umount`, `jail -c/-r`, `jls --libxo=json -v`,
//! `chflags`), all run through one [`Runner`] seam so tests can record them.
//!
//! Every argv is built by one of the `*_argv` functions below, which the
//! transcript (`engine::transcript`) calls too: what a dry run prints is what
//! this backend runs. Each mutating command is preceded by a check of the
//! current state (the mount table: getfsstat(2) on FreeBSD, `mount -p`
//! through the runner elsewhere; `jls`), which is what makes it idempotent:
//! FreeBSD stacks a second nullfs mount on the first, `umount` of what is not
//! mounted fails, and so do `jail -c` of a running jail and `jail -r` of a
//! stopped one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::FreeBsd as FreeBsdConfig;
use crate::plan::Backend;

pub use super::freebsd_mnt::{MountEntry, parse_fstab, parse_mount_p, unvis};
use super::{Host, HostError, JailSpec, Running, freebsd_conf};

/// Runs one command (argv) and returns its stdout; non-zero exit is an error
/// carrying the exit status and stderr.
pub trait Runner: Send + Sync {
    fn run(&self, argv: &[String]) -> Result<String, String>;

    /// The mount table read natively, where the runner can (getfsstat(2) on
    /// FreeBSD); `None` sends the backend to `mount -p`.
    fn mount_table(&self) -> Option<Result<Vec<MountEntry>, String>> {
        None
    }
}

/// Runs commands for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let out = std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{prog}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!("{} ({})", out.status, err.trim()))
        }
    }

    #[cfg(target_os = "freebsd")]
    fn mount_table(&self) -> Option<Result<Vec<MountEntry>, String>> {
        Some(super::freebsd_mnt::native().map_err(|e| format!("getfsstat: {e}")))
    }
}

/// Records commands instead of running them; every command succeeds with
/// empty output (so `jls` and `mount -p` report nothing up).
#[derive(Debug, Default)]
pub struct RecordingRunner {
    pub commands: Mutex<Vec<String>>,
}

impl Runner for RecordingRunner {
    fn run(&self, argv: &[String]) -> Result<String, String> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(argv.join(" "));
        Ok(String::new())
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `mount -t nullfs -o ro|rw SRC DST`.
pub fn mount_argv(src: &Path, dst: &Path, read_only: bool) -> Vec<String> {
    let mode = if read_only { "ro" } else { "rw" };
    argv(&["mount", "-t", "nullfs", "-o", mode, &s(src), &s(dst)])
}

/// `umount DST`: never `-f`, so a busy mount (a jail still in it) fails loudly.
pub fn umount_argv(dst: &Path) -> Vec<String> {
    argv(&["umount", &s(dst)])
}

/// `jail -f CONF -c -- NAME`. jail(8) parses its arguments with getopt(3):
/// the `--` keeps a name from ever being read as an option (validation
/// refuses a leading `-` as well).
pub fn jail_create_argv(conf: &Path, name: &str) -> Vec<String> {
    argv(&["jail", "-f", &s(conf), "-c", "--", name])
}

/// `jail -f CONF -r -- NAME`: runs `exec.stop`, then ends the jail's
/// processes, then unmounts the devfs on `PATH/dev`.
pub fn jail_remove_argv(conf: &Path, name: &str) -> Vec<String> {
    argv(&["jail", "-f", &s(conf), "-r", "--", name])
}

/// `jexec NAME ARGV…`: `argv` inside the running jail `name`, as its root.
pub fn jexec_argv(name: &str, inner: &[String]) -> Vec<String> {
    let mut out = argv(&["jexec", name]);
    out.extend(inner.iter().cloned());
    out
}

/// `jls --libxo=json -v`. Plain `jls` leaves out the jail's name, which is
/// how jailtx knows its jails; `-v` adds it (and the state).
pub fn jls_argv() -> Vec<String> {
    argv(&["jls", "--libxo=json", "-v"])
}

/// `mount -p`: the mount table in fstab(5) form.
pub fn mount_table_argv() -> Vec<String> {
    argv(&["mount", "-p"])
}

/// `chflags -R 0 PATH`: every flag off, system and user ones alike (symlinks
/// are not followed: `-P` is the default).
pub fn chflags_argv(path: &Path) -> Vec<String> {
    argv(&["chflags", "-R", "0", &s(path)])
}

/// `[timeout SECS] [env K=V…] /bin/sh -c COMMAND sh ARGS…`: a host command
/// with its positional parameters, environment and time limit spelled out,
/// as timeout(1) and env(1) give them.
pub fn command_argv(
    command: &str,
    args: &[String],
    env: &[(String, String)],
    timeout: Option<std::time::Duration>,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(t) = timeout {
        out.push("timeout".to_owned());
        out.push(t.as_secs().max(1).to_string());
    }
    if !env.is_empty() {
        out.push("env".to_owned());
        out.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    }
    out.extend(argv(&["/bin/sh", "-c", command]));
    if !args.is_empty() {
        out.push("sh".to_owned());
        out.extend(args.iter().cloned());
    }
    out
}

/// What `--dry-run --backend freebsd` says on a host that is not FreeBSD.
pub const SIMULATED_NOTE: &str =
    "this host is not FreeBSD: planned as if no jail ran and nothing was mounted";

pub struct FreeBsdHost {
    runner: Box<dyn Runner>,
    /// Where `NAME.conf` and `fstab.NAME` live (`[freebsd]` in the config).
    pub files: FreeBsdConfig,
}

impl FreeBsdHost {
    /// The backend with the default places (`/etc/jail.conf.d`, `/etc`).
    pub fn new(runner: Box<dyn Runner>) -> Self {
        Self::with_config(runner, &FreeBsdConfig::default())
    }

    pub fn with_config(runner: Box<dyn Runner>, files: &FreeBsdConfig) -> Self {
        FreeBsdHost {
            runner,
            files: files.clone(),
        }
    }

    /// The backend the command line uses: real commands on FreeBSD; for a
    /// `--dry-run` elsewhere, a simulated host with nothing mounted and no
    /// jail running (which is the truth on a host without FreeBSD jails).
    pub fn for_cli(files: &FreeBsdConfig, dry_run: bool) -> Self {
        let runner: Box<dyn Runner> = if dry_run && Backend::native() != Backend::FreeBsd {
            Box::new(super::freebsd_sim::SimFreeBsd::new())
        } else {
            Box::new(SystemRunner)
        };
        Self::with_config(runner, files)
    }

    fn run(&self, argv: Vec<String>) -> Result<String, String> {
        self.runner.run(&argv)
    }

    fn conf(&self, name: &str) -> PathBuf {
        freebsd_conf::conf_path(&self.files, name)
    }

    /// Unmounts the devfs on `ROOT/dev` when no running jail has its root
    /// at `ROOT`. jail(8) mounts it at `jail -c` (`mount.devfs`) and
    /// unmounts it only at `jail -r`: a jail that died on its own (its last
    /// process exited, or it was killed from inside) leaves it mounted, which
    /// makes `umount ROOT` fail "Device busy" and the next `jail -c` stack a
    /// second devfs on it. Stacked ones (left by older versions) all go.
    /// `table` is the mount table as the caller just read it: the devfs is
    /// looked for there first, so the common case (none left) costs no
    /// second read of the table and no `jls`.
    fn release_devfs(&self, root: &Path, table: &[MountEntry]) -> Result<(), HostError> {
        let dev = root.join("dev");
        let left = |t: &[MountEntry]| t.iter().any(|m| m.dst == dev && m.fstype == "devfs");
        if !left(table) || self.running()?.iter().any(|r| r.path == root) {
            return Ok(());
        }
        for _ in 0..8 {
            self.run(umount_argv(&dev))
                .map_err(|e| HostError::Unmount {
                    dst: dev.clone(),
                    source: std::io::Error::other(e),
                })?;
            if !left(&self.mounts()?) {
                break;
            }
        }
        Ok(())
    }

    /// The mount table: the kernel's own on FreeBSD, else `mount -p`.
    pub fn mounts(&self) -> Result<Vec<MountEntry>, HostError> {
        if let Some(table) = self.runner.mount_table() {
            return table.map_err(|e| HostError::MountTable {
                path: "getfsstat".into(),
                source: std::io::Error::other(e),
            });
        }
        let out = self
            .run(mount_table_argv())
            .map_err(|e| HostError::MountTable {
                path: "mount -p".into(),
                source: std::io::Error::other(e),
            })?;
        Ok(parse_mount_p(&out))
    }
}

/// The running jails in `jls --libxo=json [-v]` output:
/// `{"__version": "2", "jail-information": {"jail": [{"jid": 1, "name": …, "path": …}]}}`.
/// A jail without a `name` (plain `jls`) is named by its JID, as jail(8)
/// names a jail created without one.
pub fn parse_jls(json: &str) -> Result<Vec<Running>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("jls output: {e}"))?;
    let info = v
        .get("jail-information")
        .ok_or("jls output: no jail-information")?;
    let Some(list) = info.get("jail") else {
        // libxo leaves out a list that got no instance.
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("jls output: jail is not a list")?;
    list.iter()
        .map(|j| {
            let jid = match j.get("jid") {
                Some(serde_json::Value::Number(n)) => n.as_u64(),
                Some(serde_json::Value::String(s)) => s.parse().ok(),
                _ => None,
            }
            .ok_or("jls output: jail without a jid")?;
            let jid = u32::try_from(jid).map_err(|_| "jls output: jid out of range")?;
            let name = j
                .get("name")
                .and_then(|x| x.as_str())
                .map(str::to_owned)
                .unwrap_or_else(|| jid.to_string());
            let path = j
                .get("path")
                .and_then(|x| x.as_str())
                .ok_or("jls output: jail without a path")?;
            Ok(Running {
                name,
                jid,
                path: path.into(),
            })
        })
        .collect()
}

/// Refuses a mount path with a symlink in any component, or whose last
/// component is there and not a directory: mount(8) resolves its arguments
/// with realpath(3), following links, and has no descriptor-based form, so
/// this `lstat` of each component just before it runs is the check. The
/// window between the two is not a jail's to use: every path checked lies in
/// `BASE/j`, `BASE/js` (written by the host only) or inside the template,
/// which a jail sees read-only (see docs/freebsd.md). A component that does
/// not exist is left for mount(8) to report.
fn no_symlink_in(path: &Path) -> Result<(), HostError> {
    let refused = |why: String| HostError::Refused {
        path: path.to_owned(),
        why,
    };
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(format!(
                    "{} is a symlink; jailtx mounts only onto directories it made (replace it with a directory)",
                    cur.display()
                )));
            }
            Ok(m) if !m.is_dir() => {
                return Err(refused(format!(
                    "{} is not a directory; jailtx mounts only onto directories it made",
                    cur.display()
                )));
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

impl Host for FreeBsdHost {
    fn name(&self) -> &'static str {
        "freebsd"
    }
    fn mount(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), HostError> {
        no_symlink_in(dst)?;
        if self.is_mounted(dst)? {
            return Ok(());
        }
        no_symlink_in(src)?;
        self.run(mount_argv(src, dst, read_only))
            .map(|_| ())
            .map_err(|e| HostError::Mount {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source: std::io::Error::other(e),
            })
    }
    fn unmount(&self, dst: &Path) -> Result<(), HostError> {
        let table = self.mounts()?;
        if !table.iter().any(|m| m.dst == dst) {
            return Ok(());
        }
        // A jail root whose jail died on its own still has its devfs on it.
        self.release_devfs(dst, &table)?;
        self.run(umount_argv(dst))
            .map(|_| ())
            .map_err(|e| HostError::Unmount {
                dst: dst.to_owned(),
                source: std::io::Error::other(e),
            })
    }
    fn is_mounted(&self, dst: &Path) -> Result<bool, HostError> {
        Ok(self.mounts()?.iter().any(|m| m.dst == dst))
    }
    fn start_jail(&self, jail: &JailSpec) -> Result<u32, HostError> {
        if let Some(jid) = super::running_jid(self, jail)? {
            return Ok(jid);
        }
        // jail(8) mounts devfs without looking: never on a leftover one.
        self.release_devfs(&jail.path, &self.mounts()?)?;
        self.run(jail_create_argv(&self.conf(&jail.name), &jail.name))
            .map_err(|why| HostError::Start {
                name: jail.name.clone(),
                why,
            })?;
        // A jail whose exec.start left no process behind is gone again; the
        // health check says so, here 0 stands for "no JID".
        Ok(super::running_jid(self, jail)?.unwrap_or(0))
    }
    fn stop_jail(&self, jail: &JailSpec) -> Result<(), HostError> {
        if super::running_jid(self, jail)?.is_none() {
            // Gone on its own: `jail -r` would fail "not found", and what it
            // would have unmounted is still there.
            return self.release_devfs(&jail.path, &self.mounts()?);
        }
        self.run(jail_remove_argv(&self.conf(&jail.name), &jail.name))
            .map(|_| ())
            .map_err(|why| HostError::Stop {
                name: jail.name.clone(),
                why,
            })
    }
    fn running(&self) -> Result<Vec<Running>, HostError> {
        let out = self.run(jls_argv()).map_err(HostError::List)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        parse_jls(&out).map_err(HostError::List)
    }
    fn clear_flags(&self, path: &Path) -> Result<(), HostError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(HostError::ClearFlags {
                    path: path.to_owned(),
                    why: e.to_string(),
                });
            }
            Ok(_) => {}
        }
        self.run(chflags_argv(path))
            .map(|_| ())
            .map_err(|why| HostError::ClearFlags {
                path: path.to_owned(),
                why,
            })
    }
    fn run_command(
        &self,
        command: &str,
        args: &[String],
        env: &[(String, String)],
        timeout: Option<std::time::Duration>,
    ) -> Result<(), HostError> {
        self.run(command_argv(command, args, env, timeout))
            .map(|_| ())
            .map_err(|why| HostError::Command {
                command: command.to_owned(),
                why,
            })
    }
    fn exec_in_jail(&self, jail: &JailSpec, inner: &[String]) -> Result<(), HostError> {
        let argv = jexec_argv(&jail.name, inner);
        self.run(argv.clone())
            .map(|_| ())
            .map_err(|why| HostError::Command {
                command: argv.join(" "),
                why,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jls_libxo_with_and_without_names() {
        let j = r#"{"__version": "2", "jail-information": {"jail": [
            {"jid": 1, "hostname": "ns.example.org", "path": "/usr/home/j/ns", "name": "ns", "state": "ACTIVE"},
            {"jid": "7", "ipv4": "192.168.3.18", "hostname": "mail.example.org", "path": "/usr/home/j/mail"}
        ]}}"#;
        let r = parse_jls(j).unwrap();
        assert_eq!((r[0].jid, r[0].name.as_str()), (1, "ns"));
        assert_eq!(r[0].path, PathBuf::from("/usr/home/j/ns"));
        assert_eq!((r[1].jid, r[1].name.as_str()), (7, "7"));
        assert!(parse_jls("{}").is_err());
        assert!(parse_jls("not json").is_err());
        let empty = r#"{"__version": "2", "jail-information": {}}"#;
        assert!(parse_jls(empty).unwrap().is_empty());
    }

    #[test]
    fn mount_refuses_a_symlink_and_never_runs_mount() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("j/mroot/s")).unwrap();
        std::fs::create_dir_all(base.join("js")).unwrap();
        std::fs::create_dir_all(base.join("decoy")).unwrap();
        std::os::unix::fs::symlink(base.join("decoy"), base.join("js/ns")).unwrap();
        let runner = std::sync::Arc::new(RecordingRunner::default());
        struct Shared(std::sync::Arc<RecordingRunner>);
        impl Runner for Shared {
            fn run(&self, argv: &[String]) -> Result<String, String> {
                self.0.run(argv)
            }
        }
        let h = FreeBsdHost::new(Box::new(Shared(runner.clone())));
        let e = h
            .mount(&base.join("js/ns"), &base.join("j/mroot/s"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
        std::fs::remove_dir(base.join("j/mroot/s")).unwrap();
        std::os::unix::fs::symlink(base.join("decoy"), base.join("j/mroot/s")).unwrap();
        let e = h
            .mount(&base.join("j/mroot"), &base.join("j/mroot/s"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
        let ran = runner.commands.lock().unwrap().clone();
        assert!(ran.iter().all(|c| !c.starts_with("mount -t")), "{ran:?}");
    }

    #[test]
    fn commands_spell_out_env_and_timeout() {
        let env = [("JAIL_NAME".to_owned(), "ns".to_owned())];
        let a = command_argv("true", &[], &env, Some(std::time::Duration::from_secs(30)));
        assert_eq!(
            a,
            [
                "timeout",
                "30",
                "env",
                "JAIL_NAME=ns",
                "/bin/sh",
                "-c",
                "true"
            ]
        );
        assert_eq!(command_argv("x", &[], &[], None), ["/bin/sh", "-c", "x"]);
    }
}
