//! A simulated FreeBSD host behind the [`Runner`] seam: a mount table and a
//! jail list that the FreeBSD backend's commands change, reported in the
//! formats `mount -p` and `jls --libxo=json -v` print, with the refusals a
//! real host gives (`umount` of a busy mount, `jail -c` of a running jail, a
//! mount point that is not a directory, a jail whose `/etc/rc` does not
//! resolve). Paths are looked up in the real file system, through the
//! simulated nullfs mounts.
//!
//! The golden transcripts run their plans on it; `--dry-run --backend
//! freebsd` plans against an empty one on a host that is not FreeBSD.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use super::freebsd::{MountEntry, Runner};
use super::freebsd_conf;
use super::freebsd_mnt::putfsent_pad;

/// What `/bin/sh -c` commands do in the simulation (`--from-cmd`, health
/// checks): given the command line and its environment.
pub type CommandHook = dyn Fn(&str, &BTreeMap<String, String>) -> Result<(), String> + Send + Sync;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Jail {
    jid: u32,
    name: String,
    path: PathBuf,
    hostname: String,
    ip: String,
}

#[derive(Default)]
struct State {
    mounts: Vec<MountEntry>,
    jails: Vec<Jail>,
    next_jid: u32,
    log: Vec<Vec<String>>,
    fail_on: Option<Vec<String>>,
}

/// A cheap handle: clones share one simulated host.
#[derive(Clone, Default)]
pub struct SimFreeBsd {
    state: Arc<Mutex<State>>,
    hook: Option<Arc<CommandHook>>,
}

/// Whether `argv` only reads state (`mount -p`, `jls`).
pub fn is_query(argv: &[String]) -> bool {
    argv.first().is_some_and(|p| p == "jls") || argv == ["mount", "-p"]
}

impl SimFreeBsd {
    /// A host with only its own file systems mounted and no jail.
    pub fn new() -> Self {
        let sim = SimFreeBsd::default();
        sim.lock().mounts = vec![
            entry("/dev/ada0p2", "/", "ufs", "rw"),
            entry("devfs", "/dev", "devfs", "rw,multilabel"),
        ];
        sim
    }

    /// Runs `hook` for every `/bin/sh -c` command.
    pub fn with_hook(mut self, hook: Arc<CommandHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Makes the next command whose argv starts with `prefix` fail.
    pub fn fail_on(&self, prefix: &[&str]) {
        self.lock().fail_on = Some(prefix.iter().map(|s| (*s).to_owned()).collect());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every command run so far, queries included, and forgets them.
    pub fn take_log(&self) -> Vec<Vec<String>> {
        std::mem::take(&mut self.lock().log)
    }

    /// The mount points, in mount order.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        self.lock().mounts.iter().map(|m| m.dst.clone()).collect()
    }

    /// The names of the running jails, by JID.
    pub fn jail_names(&self) -> Vec<String> {
        self.lock().jails.iter().map(|j| j.name.clone()).collect()
    }

    /// Jail `name` ends on its own (its last process exited, or it was
    /// killed from inside): the kernel removes it, and with no `jail -r` run
    /// nothing unmounts the devfs jail(8) mounted on its `dev`.
    pub fn jail_dies(&self, name: &str) {
        self.lock().jails.retain(|j| j.name != name);
    }

    /// The mounts on `dst`, bottom first, by type (`nullfs`, `devfs`).
    pub fn mounts_on(&self, dst: &Path) -> Vec<String> {
        self.lock()
            .mounts
            .iter()
            .filter(|m| m.dst == dst)
            .map(|m| m.fstype.clone())
            .collect()
    }

    /// Marks `name` as running at `path` (a host that was up before the plan).
    pub fn add_jail(&self, name: &str, path: &Path) {
        let mut st = self.lock();
        st.next_jid += 1;
        let jid = st.next_jid;
        st.jails.push(Jail {
            jid,
            name: name.to_owned(),
            path: path.to_owned(),
            hostname: String::new(),
            ip: String::new(),
        });
    }
}

fn entry(src: &str, dst: &str, fstype: &str, options: &str) -> MountEntry {
    MountEntry {
        src: src.into(),
        dst: dst.into(),
        fstype: fstype.to_owned(),
        options: options.to_owned(),
    }
}

/// `path` as the real file system sees it: through the newest nullfs mount
/// that covers it, repeatedly.
fn resolve(mounts: &[MountEntry], path: &Path) -> PathBuf {
    let mut p = path.to_owned();
    for _ in 0..32 {
        let covering = mounts
            .iter()
            .rev()
            .filter(|m| m.fstype == "nullfs" && p.starts_with(&m.dst))
            .max_by_key(|m| m.dst.components().count());
        let Some(m) = covering else { break };
        let rest = p.strip_prefix(&m.dst).unwrap_or(Path::new("")).to_owned();
        p = if rest.as_os_str().is_empty() {
            m.src.clone()
        } else {
            m.src.join(rest)
        };
    }
    p
}

/// `inner` (absolute, as a jailed process names it) inside the jail rooted at
/// `root`, following symlinks the way the jail's kernel view would.
fn jail_lookup(mounts: &[MountEntry], root: &Path, inner: &str) -> Option<PathBuf> {
    let mut todo: Vec<String> = inner
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_owned)
        .collect();
    let mut at = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => at.push(&c),
        }
        let real = resolve(mounts, &root.join(&at));
        let meta = std::fs::symlink_metadata(&real).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 32 {
                return None;
            }
            let target = std::fs::read_link(&real).ok()?;
            at.pop();
            if target.is_absolute() {
                at = PathBuf::new();
            }
            let parts: Vec<String> = target
                .components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                    Component::ParentDir => Some("..".to_owned()),
                    _ => None,
                })
                .collect();
            todo.extend(parts.into_iter().rev());
        }
    }
    Some(resolve(mounts, &root.join(at)))
}

fn raw(p: &Path) -> String {
    p.display().to_string()
}

impl SimFreeBsd {
    fn mount(&self, st: &mut State, mode: &str, src: &Path, dst: &Path) -> Result<String, String> {
        for p in [src, dst] {
            if !resolve(&st.mounts, p).is_dir() {
                return Err(format!(
                    "mount_nullfs: {}: No such file or directory",
                    p.display()
                ));
            }
        }
        if st.mounts.iter().any(|m| m.dst == dst) {
            // FreeBSD would stack a second mount: the backend must look first.
            return Err(format!(
                "sim: {} is already a mount point; a second nullfs mount would stack on it",
                dst.display()
            ));
        }
        st.mounts.push(MountEntry {
            src: src.to_owned(),
            dst: dst.to_owned(),
            fstype: "nullfs".into(),
            options: mode.to_owned(),
        });
        Ok(String::new())
    }

    fn umount(&self, st: &mut State, dst: &Path) -> Result<String, String> {
        let Some(i) = st.mounts.iter().rposition(|m| m.dst == dst) else {
            return Err(format!(
                "umount: {}: not a file system root directory",
                dst.display()
            ));
        };
        let busy = st
            .mounts
            .iter()
            .any(|m| m.dst != dst && m.dst.starts_with(dst))
            || st.jails.iter().any(|j| j.path.starts_with(dst));
        if busy {
            return Err(format!(
                "umount: unmount of {} failed: Device busy",
                dst.display()
            ));
        }
        st.mounts.remove(i);
        Ok(String::new())
    }

    fn jail(&self, st: &mut State, conf: &Path, op: &str, name: &str) -> Result<String, String> {
        let text =
            std::fs::read_to_string(conf).map_err(|e| format!("jail: {}: {e}", conf.display()))?;
        let params = freebsd_conf::parse_conf(&text, name)
            .ok_or_else(|| format!("jail: {name}: no such jail in {}", conf.display()))?;
        let path = PathBuf::from(params.get("path").ok_or(format!("jail: {name}: no path"))?);
        let running = st.jails.iter().position(|j| j.name == name);
        match (op, running) {
            ("-c", Some(_)) => Err(format!("jail: \"{name}\" already exists")),
            ("-c", None) => {
                if !resolve(&st.mounts, &path).is_dir() {
                    return Err(format!(
                        "jail: {name}: path {}: not a directory",
                        path.display()
                    ));
                }
                if let Some(start) = params.get("exec.start") {
                    for word in start.split_whitespace().filter(|w| w.starts_with('/')) {
                        let found = jail_lookup(&st.mounts, &path, word);
                        if !found.is_some_and(|p| p.is_file()) {
                            return Err(format!(
                                "jail: {name}: exec.start: {word}: No such file or directory"
                            ));
                        }
                    }
                }
                if params.contains_key("mount.devfs") {
                    let dev = path.join("dev");
                    if !resolve(&st.mounts, &dev).is_dir() {
                        return Err(format!(
                            "jail: {name}: {}: No such file or directory",
                            dev.display()
                        ));
                    }
                    // Mounted without a look, as jail(8) does: a devfs left
                    // by a jail that died on its own gets a second on top.
                    st.mounts.push(MountEntry {
                        src: "devfs".into(),
                        dst: dev,
                        fstype: "devfs".into(),
                        options: "rw,multilabel".into(),
                    });
                }
                st.next_jid += 1;
                let ip = params
                    .get("ip4.addr")
                    .or_else(|| params.get("ip6.addr"))
                    .cloned()
                    .unwrap_or_default();
                st.jails.push(Jail {
                    jid: st.next_jid,
                    name: name.to_owned(),
                    path,
                    hostname: params.get("host.hostname").cloned().unwrap_or_default(),
                    ip,
                });
                Ok(format!("{name}: created\n"))
            }
            ("-r", None) => Err(format!("jail: \"{name}\" not found")),
            ("-r", Some(i)) => {
                let j = st.jails.remove(i);
                let dev = j.path.join("dev");
                if let Some(top) = st
                    .mounts
                    .iter()
                    .rposition(|m| m.fstype == "devfs" && m.dst == dev)
                {
                    st.mounts.remove(top);
                }
                Ok(format!("{name}: removed\n"))
            }
            _ => Err(format!("sim: jail {op} is not modelled")),
        }
    }

    /// `mount -p` as `putfsent()` prints it: names raw (a space in a path is
    /// a space), padded by their length, so a parser cannot split on blanks.
    fn mount_p(st: &State) -> String {
        st.mounts
            .iter()
            .map(|m| {
                let pass = if m.dst == Path::new("/") {
                    "1 1"
                } else {
                    "0 0"
                };
                let (src, dst) = (raw(&m.src), raw(&m.dst));
                format!(
                    "{src}{}{dst}{}{}\t{}\t\t{pass}\n",
                    putfsent_pad(src.len()),
                    putfsent_pad(dst.len()),
                    m.fstype,
                    m.options
                )
            })
            .collect()
    }

    fn jls(st: &State) -> String {
        let jails: Vec<_> = st
            .jails
            .iter()
            .map(|j| {
                let ips: Vec<&str> = if j.ip.is_empty() {
                    vec![]
                } else {
                    vec![j.ip.as_str()]
                };
                let key = if j.ip.contains(':') {
                    "ipv6_addrs"
                } else {
                    "ipv4_addrs"
                };
                let mut v = json!({
                    "jid": j.jid, "hostname": j.hostname, "path": j.path.display().to_string(),
                    "name": j.name, "state": "ACTIVE", "cpusetid": j.jid + 1,
                });
                v[key] = json!(ips);
                v
            })
            .collect();
        json!({"__version": "2", "jail-information": {"jail": jails}}).to_string()
    }

    fn shell(&self, argv: &[String]) -> Result<String, String> {
        let mut rest = argv;
        if rest.first().is_some_and(|a| a == "timeout") {
            rest = rest.get(2..).unwrap_or_default();
        }
        let mut env = BTreeMap::new();
        if rest.first().is_some_and(|a| a == "env") {
            rest = &rest[1..];
            while let Some((k, v)) = rest.first().and_then(|a| a.split_once('=')) {
                env.insert(k.to_owned(), v.to_owned());
                rest = &rest[1..];
            }
        }
        match rest {
            // With or without positional parameters (`sh ARGS…`), which
            // the hook sees through the environment (`DEST`).
            [sh, c, cmd, ..]
                if sh == "/bin/sh" && c == "-c" && rest.get(3).is_none_or(|zero| zero == "sh") =>
            {
                match &self.hook {
                    Some(hook) => hook(cmd, &env).map(|()| String::new()),
                    None => Ok(String::new()),
                }
            }
            _ => Err(format!("sim: command not modelled: {}", argv.join(" "))),
        }
    }
}

impl SimFreeBsd {
    /// `jexec NAME PROG …`: the jail must run and PROG must resolve to a
    /// file inside it (through its mounts and links); what PROG does to the
    /// jail's databases is not modelled.
    fn jexec(st: &State, name: &str, prog: &str) -> Result<String, String> {
        let Some(j) = st.jails.iter().find(|j| j.name == name) else {
            return Err(format!("jexec: jail \"{name}\" not found"));
        };
        match jail_lookup(&st.mounts, &j.path, prog) {
            Some(p) if p.is_file() => Ok(String::new()),
            _ => Err(format!("jexec: execvp: {prog}: No such file or directory")),
        }
    }
}

impl Runner for SimFreeBsd {
    fn run(&self, argv: &[String]) -> Result<String, String> {
        let mut st = self.lock();
        st.log.push(argv.to_vec());
        if let Some(prefix) = &st.fail_on
            && argv.starts_with(prefix)
        {
            st.fail_on = None;
            return Err(format!(
                "exit status: 1 (sim: injected failure of {})",
                argv.join(" ")
            ));
        }
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["mount", "-p"] => Ok(Self::mount_p(&st)),
            [
                "mount",
                "-t",
                "nullfs",
                "-o",
                mode @ ("ro" | "rw"),
                src,
                dst,
            ] => self.mount(&mut st, mode, Path::new(src), Path::new(dst)),
            ["umount", dst] => self.umount(&mut st, Path::new(dst)),
            ["jail", "-f", conf, op @ ("-c" | "-r"), "--", name] => {
                self.jail(&mut st, Path::new(conf), op, name)
            }
            ["jail", "-f", conf, op @ ("-c" | "-r"), name] if !name.starts_with('-') => {
                self.jail(&mut st, Path::new(conf), op, name)
            }
            ["jail", "-f", _, "-c" | "-r", name] => Err(format!(
                "jail: illegal option -- {}\nusage: jail [-dhilqv] [-J jid_file] [-u username] [-U username] -[cmr] param=value ... [command=command ...]",
                name.trim_start_matches('-')
            )),
            ["jls", "--libxo=json", "-v"] => Ok(Self::jls(&st)),
            ["jexec", name, prog, ..] => Self::jexec(&st, name, prog),
            ["chflags", "-R", "0", p] => {
                if std::fs::symlink_metadata(resolve(&st.mounts, Path::new(p))).is_ok() {
                    Ok(String::new())
                } else {
                    Err(format!("chflags: {p}: No such file or directory"))
                }
            }
            _ => {
                drop(st);
                self.shell(argv)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::freebsd::{FreeBsdHost, parse_jls, parse_mount_p};
    use crate::host::{Host, JailSpec};

    #[test]
    fn a_busy_mount_cannot_go_and_a_repeat_is_a_no_op() {
        let d = tempfile::tempdir().unwrap();
        let (t, j) = (d.path().join("t"), d.path().join("j"));
        std::fs::create_dir_all(t.join("s")).unwrap();
        std::fs::create_dir_all(&j).unwrap();
        let sim = SimFreeBsd::new();
        let host = FreeBsdHost::new(Box::new(sim.clone()));
        host.mount(&t, &j, true).unwrap();
        host.mount(&t, &j, true).unwrap();
        host.mount(&d.path().join("t"), &j.join("s"), false)
            .unwrap();
        assert!(host.unmount(&j).is_err(), "s is still mounted on it");
        host.unmount(&j.join("s")).unwrap();
        host.unmount(&j).unwrap();
        host.unmount(&j).unwrap();
        let mutating: Vec<String> = sim
            .take_log()
            .into_iter()
            .filter(|a| !is_query(a))
            .map(|a| a.join(" "))
            .collect();
        assert_eq!(mutating.len(), 5, "{mutating:?}");
        assert!(parse_mount_p(&SimFreeBsd::mount_p(&sim.lock())).len() == 2);
    }

    #[test]
    fn jails_start_once_and_are_listed_by_name() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("j/ns");
        for p in ["bin", "dev", "s/etc"] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        std::fs::write(root.join("bin/sh"), "").unwrap();
        std::fs::write(root.join("s/etc/rc"), "").unwrap();
        std::os::unix::fs::symlink("s/etc", root.join("etc")).unwrap();
        let cfg = crate::config::FreeBsd {
            jail_conf_dir: d.path().to_owned(),
            fstab_dir: d.path().to_owned(),
            interface: String::new(),
        };
        let spec = JailSpec {
            name: "ns".into(),
            path: root.clone(),
            hostname: "ns.example.org".into(),
            ip: "192.168.3.17".into(),
            exec_start: "/bin/sh /etc/rc".into(),
            exec_stop: "/bin/sh /etc/rc.shutdown jail".into(),
            stop_timeout_secs: 10,
        };
        let conf = freebsd_conf::jail_conf(&spec, &cfg);
        std::fs::write(freebsd_conf::conf_path(&cfg, "ns"), conf).unwrap();
        let sim = SimFreeBsd::new();
        let host = FreeBsdHost::with_config(Box::new(sim.clone()), &cfg);
        let jid = host.start_jail(&spec).unwrap();
        assert_eq!(host.start_jail(&spec).unwrap(), jid);
        let listed = parse_jls(&SimFreeBsd::jls(&sim.lock())).unwrap();
        assert_eq!(listed[0].name, "ns");
        host.stop_jail(&spec).unwrap();
        host.stop_jail(&spec).unwrap();
        let starts = sim
            .take_log()
            .iter()
            .filter(|a| a.first().is_some_and(|p| p == "jail"))
            .count();
        assert_eq!(starts, 2, "one jail -c, one jail -r");
        std::fs::remove_file(root.join("s/etc/rc")).unwrap();
        let e = host.start_jail(&spec).unwrap_err().to_string();
        assert!(e.contains("/etc/rc"), "{e}");
    }
}
