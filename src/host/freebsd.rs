//! The FreeBSD backend: the same host operations as FreeBSD commands
//! (`mount -t nullfs`, `umount`, `jail -c/-r`, `jls --libxo=json`), all run
//! through one [`Runner`] seam so tests can record them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Host, HostError, JailSpec, Running};

/// Runs one command (argv) and returns its stdout; non-zero exit is an error.
pub trait Runner: Send + Sync {
    fn run(&self, argv: &[String]) -> Result<String, String>;
}

/// Runs commands for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let out = std::process::Command::new(prog)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!("{} ({})", out.status, err.trim()))
        }
    }
}

/// Records commands instead of running them (golden transcripts, dry runs).
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

pub struct FreeBsdHost {
    runner: Box<dyn Runner>,
    /// Where `NAME.conf` jail configs live (default `/etc/jail.conf.d`).
    pub conf_dir: PathBuf,
}

impl FreeBsdHost {
    pub fn new(runner: Box<dyn Runner>) -> Self {
        FreeBsdHost {
            runner,
            conf_dir: "/etc/jail.conf.d".into(),
        }
    }

    fn run(&self, argv: &[&str]) -> Result<String, String> {
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        self.runner.run(&argv)
    }

    fn conf(&self, name: &str) -> String {
        self.conf_dir
            .join(format!("{name}.conf"))
            .display()
            .to_string()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The running jails in `jls --libxo=json` output.
pub fn parse_jls(json: &str) -> Result<Vec<Running>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("jls output: {e}"))?;
    let list = v
        .get("jail-information")
        .and_then(|j| j.get("jail"))
        .and_then(|j| j.as_array())
        .ok_or("jls output: no jail-information.jail list")?;
    list.iter()
        .map(|j| {
            let jid = j
                .get("jid")
                .and_then(|x| x.as_u64())
                .ok_or("jls output: jail without jid")?;
            let name = j.get("name").and_then(|x| x.as_str()).unwrap_or_default();
            let path = j.get("path").and_then(|x| x.as_str()).unwrap_or_default();
            Ok(Running {
                name: name.to_owned(),
                jid: u32::try_from(jid).map_err(|_| "jls output: jid out of range")?,
                path: path.into(),
            })
        })
        .collect()
}

/// The mount points in `mount -p` output (fstab format: the second field).
pub fn parse_mount_p(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(PathBuf::from)
        .collect()
}

impl Host for FreeBsdHost {
    fn name(&self) -> &'static str {
        "freebsd"
    }
    fn mount(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), HostError> {
        let mode = if read_only { "ro" } else { "rw" };
        self.run(&["mount", "-t", "nullfs", "-o", mode, &s(src), &s(dst)])
            .map(|_| ())
            .map_err(|e| HostError::Mount {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source: std::io::Error::other(e),
            })
    }
    fn unmount(&self, dst: &Path) -> Result<(), HostError> {
        self.run(&["umount", &s(dst)])
            .map(|_| ())
            .map_err(|e| HostError::Unmount {
                dst: dst.to_owned(),
                source: std::io::Error::other(e),
            })
    }
    fn is_mounted(&self, dst: &Path) -> Result<bool, HostError> {
        let out = self
            .run(&["mount", "-p"])
            .map_err(|e| HostError::MountTable {
                path: "mount -p".into(),
                source: std::io::Error::other(e),
            })?;
        Ok(parse_mount_p(&out).iter().any(|p| p == dst))
    }
    fn start_jail(&self, jail: &JailSpec) -> Result<u32, HostError> {
        self.run(&["jail", "-f", &self.conf(&jail.name), "-c", &jail.name])
            .map_err(|why| HostError::Start {
                name: jail.name.clone(),
                why,
            })?;
        Ok(super::running_jid(self, jail)?.unwrap_or(0))
    }
    fn stop_jail(&self, jail: &JailSpec) -> Result<(), HostError> {
        self.run(&["jail", "-f", &self.conf(&jail.name), "-r", &jail.name])
            .map(|_| ())
            .map_err(|why| HostError::Stop {
                name: jail.name.clone(),
                why,
            })
    }
    fn running(&self) -> Result<Vec<Running>, HostError> {
        let out = self
            .run(&["jls", "--libxo=json"])
            .map_err(HostError::List)?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        parse_jls(&out).map_err(HostError::List)
    }
    fn run_command(
        &self,
        command: &str,
        _env: &[(String, String)],
        timeout: Option<std::time::Duration>,
    ) -> Result<(), HostError> {
        let secs = timeout.map(|t| t.as_secs().max(1).to_string());
        let mut argv: Vec<&str> = Vec::new();
        if let Some(secs) = &secs {
            argv.extend(["timeout", secs.as_str()]);
        }
        argv.extend(["/bin/sh", "-c", command]);
        self.run(&argv)
            .map(|_| ())
            .map_err(|why| HostError::Command {
                command: command.to_owned(),
                why,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jls_libxo() {
        let j = r#"{"__version": "2", "jail-information": {"jail": [
            {"jid": 1, "ipv4": "192.168.3.17", "hostname": "ns.example.org", "path": "/usr/home/j/ns", "name": "ns"}
        ]}}"#;
        let r = parse_jls(j).unwrap();
        assert_eq!(r[0].jid, 1);
        assert_eq!(r[0].path, PathBuf::from("/usr/home/j/ns"));
        assert!(parse_jls("{}").is_err());
    }

    #[test]
    fn parses_mount_p() {
        let t =
            "/dev/ada0p2\t/\tufs\trw\t1 1\n/usr/home/j/mroot\t/usr/home/j/ns\tnullfs\tro\t0 0\n";
        assert_eq!(parse_mount_p(t)[1], PathBuf::from("/usr/home/j/ns"));
    }
}
