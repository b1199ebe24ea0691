//! The Linux backend: read-only bind mounts for nullfs, and jails as process
//! trees in their own mount, PID, UTS and IPC namespaces, chrooted into the
//! jail's root, under a small init (see [`super::linux_init`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::mountinfo;
use super::{Host, HostError, JailSpec, Running};

/// The hidden subcommand the jail's init runs as (argv[1]).
pub const INIT_ARG: &str = "__jail-init";

#[derive(Debug, Clone)]
pub struct LinuxHost {
    /// The jailtx binary, re-executed as the jail's init.
    exe: Option<PathBuf>,
    /// Where each jail's console output goes (`NAME.log`); none: discarded.
    log_dir: Option<PathBuf>,
    mountinfo: PathBuf,
    proc_dir: PathBuf,
    /// How long `exec.start` may run before the start counts as failed.
    start_timeout: Duration,
}

impl Default for LinuxHost {
    fn default() -> Self {
        Self::new()
    }
}

impl LinuxHost {
    pub fn new() -> Self {
        LinuxHost {
            exe: std::env::current_exe().ok(),
            log_dir: None,
            mountinfo: "/proc/self/mountinfo".into(),
            proc_dir: "/proc".into(),
            start_timeout: Duration::from_secs(120),
        }
    }

    pub fn with_log_dir(mut self, dir: PathBuf) -> Self {
        self.log_dir = Some(dir);
        self
    }

    pub fn with_exe(mut self, exe: PathBuf) -> Self {
        self.exe = Some(exe);
        self
    }

    /// Reads processes from `dir` instead of `/proc` (tests: a fake one).
    pub fn with_proc_dir(mut self, dir: PathBuf) -> Self {
        self.proc_dir = dir;
        self
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> String {
        let what = what.into();
        move |e| format!("{what}: {e}")
    }

    fn log_file(&self, name: &str) -> Stdio {
        self.log_dir
            .as_ref()
            .and_then(|d| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(d.join(format!("{name}.log")))
                    .ok()
            })
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null)
    }

    fn wait_gone(&self, jail: &JailSpec, pid: u32, timeout: Duration) -> Result<bool, HostError> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if !self.is_our_init(pid, &jail.path) {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(!self.is_our_init(pid, &jail.path))
    }

    /// Whether `pid` runs as the init of `jail` (its command line names the
    /// jail and its root), chrooted yet or not: a start that failed or timed
    /// out may have stopped before the chroot.
    fn is_init_of(&self, pid: u32, jail: &JailSpec) -> bool {
        std::fs::read(self.proc_dir.join(pid.to_string()).join("cmdline"))
            .ok()
            .and_then(|c| init_args(&c))
            .is_some_and(|(name, root)| name == jail.name && root == jail.path)
    }

    /// SIGKILLs `pid` only if it is still the init of `jail`. The init is
    /// not our child (it is the child of a process that exited), so it may
    /// be gone and its PID reused by any process by now. A pidfd opened
    /// before the check pins the process checked: if the PID is reused
    /// after the check, the signal goes to the dead init, not to the
    /// newcomer. Kernels without pidfds (before 5.3) get a plain kill after
    /// the check, with a window of microseconds instead of none.
    fn kill_init(&self, pid: u32, jail: &JailSpec) {
        let pidfd = pidfd_open(pid);
        if !self.is_init_of(pid, jail) {
            return;
        }
        match pidfd {
            Some(fd) => pidfd_kill(&fd),
            None => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    /// Whether `pid` is a live jail init chrooted at `path`: the root check
    /// makes a reused PID (or a zombie, whose root cannot be read) not count.
    fn is_our_init(&self, pid: u32, path: &Path) -> bool {
        let dir = self.proc_dir.join(pid.to_string());
        std::fs::read_link(dir.join("root")).is_ok_and(|r| r == path)
            && std::fs::read(dir.join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(INIT_ARG.as_bytes()))
    }
}

/// How long a jail's processes get between SIGTERM and SIGKILL: the
/// config's stop timeout, at least a second (0 would SIGKILL at once and
/// give exec.stop's survivors no chance to exit cleanly). The init enforces
/// it; it learns the value when it starts, so a changed config takes effect
/// at the jail's next start.
fn stop_grace(jail: &JailSpec) -> Duration {
    Duration::from_secs(jail.stop_timeout_secs.max(1))
}

/// How much longer than the grace the stopper waits for the init before
/// SIGKILLing it: the init exits on its own at the end of the grace, so this
/// only matters when it is stuck (or predates `--stop-timeout`).
const INIT_EXIT_SLACK: Duration = Duration::from_secs(2);

/// A pidfd for `pid` (Linux 5.3+); none when the process is gone or the
/// kernel has no pidfds.
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = nix::libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file
    // descriptor or -1; nothing else is read or written.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by pidfd_open, so it is open and
    // nothing else owns it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// SIGKILLs the process `fd` refers to; a process already gone is no error.
fn pidfd_kill(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: `fd` is an open pidfd; a null siginfo and zero flags make
    // this kill(2) aimed at exactly that process.
    unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            nix::libc::SIGKILL,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        );
    }
}

/// `--name`, `--root` values out of an init's NUL-separated command line.
fn init_args(cmdline: &[u8]) -> Option<(String, PathBuf)> {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if args.get(1) != Some(&INIT_ARG.as_bytes()) {
        return None;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| *a == flag.as_bytes())
            .and_then(|i| args.get(i + 1))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some((value("--name")?, PathBuf::from(value("--root")?)))
}

/// Whether `dst` is the root of a mount, from statx's `STATX_ATTR_MOUNT_ROOT`
/// (Linux 5.8+); a missing path is not mounted. None when the kernel or the
/// filesystem does not report the attribute, or statx fails otherwise: the
/// caller then reads the mount table. Symlinks are followed, as mount(2)
/// follows them.
fn mount_root(dst: &Path) -> Option<bool> {
    use nix::libc;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dst.as_os_str().as_bytes()).ok()?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `stx` a buffer of the size
    // statx writes; a mask of 0 asks for nothing beyond the attributes,
    // which statx always fills in.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_NO_AUTOMOUNT,
            0,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return match nix::errno::Errno::last() {
            nix::errno::Errno::ENOENT => Some(false),
            _ => None,
        };
    }
    // SAFETY: statx returned 0, so it filled the struct.
    let stx = unsafe { stx.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0)
}

impl Host for LinuxHost {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn mount(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), HostError> {
        if self.is_mounted(dst)? {
            return Ok(());
        }
        nix::mount::mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(
            |e| HostError::Mount {
                src: src.to_owned(),
                dst: dst.to_owned(),
                source: e.into(),
            },
        )?;
        if read_only {
            // A bind mount ignores MS_RDONLY on creation: it takes a remount.
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(e) = nix::mount::mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
            {
                let _ = nix::mount::umount2(dst, MntFlags::empty());
                return Err(HostError::Remount {
                    dst: dst.to_owned(),
                    source: e.into(),
                });
            }
        }
        Ok(())
    }

    fn unmount(&self, dst: &Path) -> Result<(), HostError> {
        if !self.is_mounted(dst)? {
            return Ok(());
        }
        nix::mount::umount2(dst, MntFlags::empty()).map_err(|e| HostError::Unmount {
            dst: dst.to_owned(),
            source: e.into(),
        })
    }

    fn is_mounted(&self, dst: &Path) -> Result<bool, HostError> {
        // One statx per question: reading the mount table each time made a
        // window over N jails cost O(N^2) table lines.
        if let Some(root) = mount_root(dst) {
            return Ok(root);
        }
        let text =
            std::fs::read_to_string(&self.mountinfo).map_err(|source| HostError::MountTable {
                path: self.mountinfo.clone(),
                source,
            })?;
        Ok(mountinfo::mount_points(&text).iter().any(|p| p == dst))
    }

    fn start_jail(&self, jail: &JailSpec) -> Result<u32, HostError> {
        if let Some(jid) = super::running_jid(self, jail)? {
            return Ok(jid);
        }
        let fail = |why: String| HostError::Start {
            name: jail.name.clone(),
            why,
        };
        let exe = self.exe.as_ref().ok_or_else(|| {
            fail("cannot find the jailtx binary to run as the jail's init".into())
        })?;
        let mut cmd = Command::new(exe);
        cmd.arg(INIT_ARG)
            .args(["--name", &jail.name])
            .arg("--root")
            .arg(&jail.path)
            .args(["--hostname", &jail.hostname, "--ip", &jail.ip])
            .args(["--start", &jail.exec_start])
            .arg("--stop-timeout")
            .arg(stop_grace(jail).as_secs().to_string())
            .env_remove(crate::engine::fault::ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log_file(&jail.name));
        // SAFETY: setsid is async-signal-safe; the jail must not belong to our
        // session, or a terminal hangup would kill it.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("spawn {}: {e}", exe.display())))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| fail("no status pipe".into()))?;
        // The init reports "pid N", then "ready" or "failed: …", then closes the
        // pipe; a reader thread lets us give up after the start timeout.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + self.start_timeout;
        let mut pid = None;
        let mut verdict = None;
        // The two lines come from two processes (the forking parent writes the
        // pid, the init the verdict) and may arrive in either order: read
        // until both are in, or the verdict is a failure, or the pipe closes.
        let done = |pid: &Option<u32>, verdict: &Option<String>| match verdict {
            Some(v) if v == "ready" => pid.is_some(),
            Some(_) => true,
            None => false,
        };
        while !done(&pid, &verdict) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("pid ") {
                        pid = p.trim().parse::<u32>().ok();
                    } else {
                        verdict = Some(line);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    verdict = Some(format!(
                        "failed: exec.start did not finish within {} s",
                        self.start_timeout.as_secs()
                    ));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if verdict.is_none() {
                        verdict = Some("failed: the jail's init exited before it was ready".into());
                    }
                    break;
                }
            }
        }
        let _ = child.wait();
        let verdict = verdict.unwrap_or_default();
        match (pid, verdict.as_str()) {
            (Some(pid), "ready") => Ok(pid),
            (pid, v) => {
                // Leave no jail behind: a failed start is no start (as jail(8)).
                if let Some(p) = pid {
                    self.kill_init(p, jail);
                }
                Err(fail(v.strip_prefix("failed: ").unwrap_or(v).to_owned()))
            }
        }
    }

    fn stop_jail(&self, jail: &JailSpec) -> Result<(), HostError> {
        let Some(jid) = super::running_jid(self, jail)? else {
            return Ok(());
        };
        let fail = |why: String| HostError::Stop {
            name: jail.name.clone(),
            why,
        };
        if !jail.exec_stop.trim().is_empty() {
            // exec.stop runs inside the jail: its namespaces and its root.
            let status = Command::new("nsenter")
                .args([
                    "-t",
                    &jid.to_string(),
                    "-m",
                    "-u",
                    "-i",
                    "-p",
                    "-r",
                    "-w",
                    "--",
                ])
                .args(["/bin/sh", "-c", &jail.exec_stop])
                .env_remove(crate::engine::fault::ENV)
                .stdin(Stdio::null())
                .stdout(self.log_file(&jail.name))
                .stderr(self.log_file(&jail.name))
                .status()
                .map_err(Self::io("run nsenter for exec.stop"))
                .map_err(fail)?;
            if !status.success() {
                tracing::warn!(jail = %jail.name, %status, "exec.stop failed; stopping the jail anyway");
            }
        }
        let pid = Pid::from_raw(jid as i32);
        // The init answers SIGTERM by passing it on and exiting once its
        // children are gone, or at the end of the grace; SIGKILL to a PID
        // namespace's init ends them all.
        let _ = kill(pid, Signal::SIGTERM);
        if self.wait_gone(jail, jid, stop_grace(jail) + INIT_EXIT_SLACK)? {
            return Ok(());
        }
        let _ = kill(pid, Signal::SIGKILL);
        if self.wait_gone(jail, jid, Duration::from_secs(5))? {
            return Ok(());
        }
        Err(fail(format!("init {jid} is still alive after SIGKILL")))
    }

    fn running(&self) -> Result<Vec<Running>, HostError> {
        let entries = std::fs::read_dir(&self.proc_dir)
            .map_err(|e| HostError::List(format!("read {}: {e}", self.proc_dir.display())))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let Some((name, root)) = init_args(&cmdline) else {
                continue;
            };
            if self.is_our_init(pid, &root) {
                out.push(Running {
                    name,
                    jid: pid,
                    path: root,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Linux has no `schg`; the `chattr +i` flag is not part of a world.
    fn clear_flags(&self, _path: &Path) -> Result<(), HostError> {
        Ok(())
    }

    fn run_command(
        &self,
        command: &str,
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<(), HostError> {
        let fail = |why: String| HostError::Command {
            command: command.to_owned(),
            why,
        };
        let mut child = Command::new("/bin/sh")
            .args(["-c", command])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove(crate::engine::fault::ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        // Drain stderr on a thread so a chatty command cannot block on a full pipe.
        let stderr = child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut e) = stderr {
                let _ = std::io::Read::read_to_string(&mut e, &mut text);
            }
            text
        });
        let deadline = timeout.map(|t| Instant::now() + t);
        let status = loop {
            match child.try_wait().map_err(|e| fail(e.to_string()))? {
                Some(status) => break status,
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {:?}",
                        timeout.unwrap_or_default()
                    )));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let err = reader.join().unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        // The last line is what a script prints when it gives up.
        match err.lines().map(str::trim).rfind(|l| !l.is_empty()) {
            Some(last) => Err(fail(format!("{status} ({last})"))),
            None => Err(fail(format!("{status}, nothing on stderr"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, path: &str) -> JailSpec {
        JailSpec {
            name: name.into(),
            path: path.into(),
            hostname: format!("{name}.example.org"),
            ip: "127.0.0.1".into(),
            exec_start: "true".into(),
            exec_stop: String::new(),
            stop_timeout_secs: 1,
        }
    }

    /// Fakes `/proc/PID` under `proc`: its command line and its root.
    fn fake_proc(proc: &Path, pid: u32, cmdline: &[u8], root: &str) {
        let d = proc.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cmdline"), cmdline).unwrap();
        let _ = std::fs::remove_file(d.join("root"));
        std::os::unix::fs::symlink(root, d.join("root")).unwrap();
    }

    const NS_INIT: &[u8] = b"/usr/bin/jailtx\0__jail-init\0--name\0ns\0--root\0/b/j/ns\0";

    #[test]
    fn running_lists_only_inits_chrooted_at_their_root() {
        let proc = tempfile::tempdir().unwrap();
        fake_proc(proc.path(), 4242, NS_INIT, "/b/j/ns");
        // The same command line with another root: a reused PID, or an init
        // that has not chrooted yet. Neither is a running jail.
        fake_proc(proc.path(), 4243, NS_INIT, "/");
        fake_proc(proc.path(), 4244, b"/bin/sleep\x0030\0", "/b/j/ns");
        std::fs::create_dir(proc.path().join("self")).unwrap();
        let h = LinuxHost::new().with_proc_dir(proc.path().to_owned());
        let want = Running {
            name: "ns".into(),
            jid: 4242,
            path: "/b/j/ns".into(),
        };
        assert_eq!(h.running().unwrap(), vec![want]);
        assert!(h.is_our_init(4242, Path::new("/b/j/ns")));
        assert!(!h.is_our_init(4243, Path::new("/b/j/ns")));
        assert!(!h.is_our_init(4244, Path::new("/b/j/ns")));
        assert!(!h.is_our_init(4245, Path::new("/b/j/ns")));
        assert_eq!(
            crate::host::running_jid(&h, &spec("ns", "/b/j/ns")).unwrap(),
            Some(4242)
        );
        assert_eq!(
            crate::host::running_jid(&h, &spec("ns", "/other/j/ns")).unwrap(),
            None
        );
    }

    /// The failed-start path's kill: a real process under a fake /proc that
    /// says who it is. Only the init of that very jail is killed.
    #[test]
    fn kill_init_spares_a_reused_pid() {
        use std::os::unix::process::ExitStatusExt;
        let proc = tempfile::tempdir().unwrap();
        let h = LinuxHost::new().with_proc_dir(proc.path().to_owned());
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let ns = spec("ns", "/b/j/ns");
        let alive = |child: &mut std::process::Child| {
            std::thread::sleep(Duration::from_millis(50));
            child.try_wait().unwrap().is_none()
        };
        // Gone from /proc (exited and reaped), an unrelated process, the
        // init of another jail, the init of a jail of the same name elsewhere.
        h.kill_init(pid, &ns);
        assert!(alive(&mut child), "killed a pid /proc does not list");
        for cmdline in [
            &b"/bin/sleep\x0030\0"[..],
            b"/usr/bin/jailtx\0__jail-init\0--name\0www\0--root\0/b/j/www\0",
            b"/usr/bin/jailtx\0__jail-init\0--name\0ns\0--root\0/c/j/ns\0",
        ] {
            fake_proc(proc.path(), pid, cmdline, "/");
            h.kill_init(pid, &ns);
            assert!(
                alive(&mut child),
                "killed {:?}",
                String::from_utf8_lossy(cmdline)
            );
        }
        // The jail's own init, even before its chroot (root still /).
        fake_proc(proc.path(), pid, NS_INIT, "/");
        h.kill_init(pid, &ns);
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status}");
    }

    #[test]
    fn init_args_reads_name_and_root() {
        let c = b"/usr/bin/jailtx\0__jail-init\0--name\0ns\0--root\0/home/j/ns\0--ip\x001.2.3.4\0";
        assert_eq!(init_args(c), Some(("ns".into(), "/home/j/ns".into())));
        assert_eq!(init_args(b"/bin/sh\0-c\0x\0"), None);
    }

    #[test]
    fn mount_root_knows_the_root_filesystem_and_missing_paths() {
        // / is a mount root and a directory inside it is not; a missing path
        // is never mounted. A kernel without the attribute fails the test
        // rather than skipping it.
        let root = mount_root(Path::new("/"))
            .expect("statx does not report STATX_ATTR_MOUNT_ROOT here (Linux >= 5.8 does)");
        assert!(root);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(mount_root(dir.path()), Some(false));
        assert_eq!(mount_root(Path::new("/nonexistent/jailtx")), Some(false));
    }

    #[test]
    fn run_command_says_why_it_failed() {
        let h = LinuxHost::new();
        let t = Some(Duration::from_secs(5));
        assert!(h.run_command("true", &[], t).is_ok());
        let env = [("WHO".to_owned(), "ns".to_owned())];
        let e = h
            .run_command(
                "echo first >&2; echo \"$WHO down\" >&2; echo >&2; exit 3",
                &env,
                t,
            )
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("exit status: 3 (ns down)"), "{e}");
        let e = h.run_command("exit 4", &[], t).unwrap_err().to_string();
        assert!(e.ends_with("exit status: 4, nothing on stderr"), "{e}");
        let e = h
            .run_command("sleep 5", &[], Some(Duration::from_millis(100)))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("timed out after 100ms"), "{e}");
    }
}
