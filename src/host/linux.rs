//! The Linux backend: read-only bind mounts for nullfs, and jails as process
//! trees in their own mount, PID, UTS and IPC namespaces, `pivot_root`ed into
//! the jail's root, under a small init (see [`super::linux_init`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::MntFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::jail_log::{Console, Log};
use super::{Host, HostError, JailSpec, Running, linux_net};
use super::{linux_mount, mountinfo};

/// The hidden subcommand the jail's init runs as (argv[1]).
pub const INIT_ARG: &str = "__jail-init";

#[derive(Debug, Clone)]
pub struct LinuxHost {
    /// The jailtx binary, re-executed as the jail's init.
    exe: Option<PathBuf>,
    /// Where each jail's console output goes (`NAME.log`); none: discarded.
    log_dir: Option<PathBuf>,
    /// The size at which `NAME.log` rotates.
    log_max_bytes: u64,
    mountinfo: PathBuf,
    proc_dir: PathBuf,
    /// How long `exec.start` may run before the start counts as failed.
    start_timeout: Duration,
    /// Variables no jail or host command inherits (the caller's own
    /// controls, such as the engine's fault variable).
    unset_env: Vec<String>,
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
            log_max_bytes: 4 << 20,
            mountinfo: "/proc/self/mountinfo".into(),
            proc_dir: "/proc".into(),
            start_timeout: Duration::from_secs(120),
            unset_env: Vec::new(),
        }
    }

    /// Keeps `name` out of the environment of every process this host
    /// starts (jail inits, `exec.start`, health checks, `--from-cmd`).
    pub fn without_env(mut self, name: &str) -> Self {
        self.unset_env.push(name.to_owned());
        self
    }

    pub fn with_log_dir(mut self, dir: PathBuf) -> Self {
        self.log_dir = Some(dir);
        self
    }

    pub fn with_log_max_bytes(mut self, max: u64) -> Self {
        self.log_max_bytes = max;
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

    /// A console pipe into jail `name`'s log, for exec.stop (the jail's
    /// init pumps exec.start's and the jail's own output). A log that
    /// cannot be opened safely discards the output with a warning: stopping
    /// a jail does not depend on its log.
    fn stop_console(&self, name: &str) -> Option<Console> {
        let log = self.log_dir.as_ref().and_then(|d| {
            Log::open(d, name, self.log_max_bytes)
                .map_err(|e| tracing::warn!(jail = %name, "exec.stop output discarded: {e}"))
                .ok()
        });
        Console::start(name, log)
            .map_err(|e| tracing::warn!(jail = %name, "exec.stop output discarded: {e}"))
            .ok()
    }

    /// Waits until `pid` is no longer the init of `jail`, at most
    /// `timeout`. A pidfd wakes the wait the moment the init exits (after
    /// the kernel has ended every process of its PID namespace), instead of
    /// a poll every few milliseconds; kernels without pidfds poll.
    fn wait_gone(&self, jail: &JailSpec, pid: u32, timeout: Duration) -> Result<bool, HostError> {
        let until = Instant::now() + timeout;
        // Opened before the check: if the PID is reused after it, the fd
        // still refers to the init checked, which has exited (readable).
        let fd = pidfd_open(pid);
        loop {
            if !self.is_our_init(pid, &jail.path) {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match &fd {
                Some(fd) => pidfd_wait(fd, left),
                None => std::thread::sleep(left.min(Duration::from_millis(5))),
            }
        }
    }

    /// Whether `pid` runs as the init of `jail` (its command line names the
    /// jail and its root), pivoted yet or not: a start that failed or timed
    /// out may have stopped before the pivot.
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

    /// Whether `pid` is the live init of the jail at `path`, in its jail
    /// already. After `pivot_root` its `/proc/PID/root` reads as `/` from
    /// the host, so three things are checked instead: its command line
    /// names `path`; it is PID 1 of a PID namespace one level below ours
    /// (`NSpid: N 1`), which only the init is, so a jail's process that
    /// copies the init's command line does not count; and its root is the
    /// directory mounted at `path` (same device and inode), which a reused
    /// PID, a zombie (its root cannot be read) or an init that has not
    /// pivoted yet (its root is still the host's) is not.
    fn is_our_init(&self, pid: u32, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dir = self.proc_dir.join(pid.to_string());
        let names_path = std::fs::read(dir.join("cmdline"))
            .ok()
            .and_then(|c| init_args(&c))
            .is_some_and(|(_, root)| root == path);
        let same =
            |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        names_path
            && std::fs::read_to_string(dir.join("status")).is_ok_and(|s| is_ns_init(&s))
            && match (std::fs::metadata(dir.join("root")), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => same(&a, &b),
                _ => false,
            }
    }
}

/// How long a jail's processes get between SIGTERM and SIGKILL: the
/// config's stop timeout. 0 is jail(8)'s `stop.timeout = 0`: no SIGTERM,
/// every process of the jail is killed at once. The init enforces it; it
/// learns the value when it starts, so a changed config takes effect at the
/// jail's next start (the stopper's own SIGKILL for 0 takes effect at once).
///
/// Clamped to the config's range: a plan read back from the journal may
/// carry any value, and recovery must not overflow on it.
fn stop_grace(jail: &JailSpec) -> Duration {
    crate::config::stop_grace(jail.stop_timeout_secs)
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

/// Waits until the process `fd` refers to has exited, at most `timeout`
/// (a signal may end the wait early: the caller checks again).
fn pidfd_wait(fd: &std::os::fd::OwnedFd, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut p = nix::libc::pollfd {
        fd: fd.as_raw_fd(),
        events: nix::libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: poll reads and writes the one pollfd passed.
    unsafe { nix::libc::poll(&mut p, 1, ms) };
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

/// Whether a `/proc/PID/status` text is that of PID 1 of a PID namespace
/// one level below the reader's (`NSpid:` lists the PID in each namespace
/// from the reader's down).
fn is_ns_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|v| {
            let ids: Vec<&str> = v.split_whitespace().collect();
            ids.len() == 2 && ids[1] == "1"
        })
}

/// The namespace a `/proc/PID/ns/*` link names (device and inode); none
/// when it cannot be read (a process gone, a fake `/proc` in tests).
fn ns_id(link: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(link).ok().map(|m| (m.dev(), m.ino()))
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

    /// Mounts only onto what jailtx made: `dst` and `src` are opened
    /// without following a symlink in any component and must be
    /// directories; the mount goes through those descriptors (see
    /// [`super::linux_mount`]), `nodev`.
    fn mount(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), HostError> {
        let refused = |path: &Path, why: linux_mount::Refused| HostError::Refused {
            path: path.to_owned(),
            why: why.to_string(),
        };
        let dst_fd = linux_mount::open_dir(dst).map_err(|e| refused(dst, e))?;
        let mounted = match linux_mount::is_mount_root(&dst_fd) {
            Some(m) => m,
            None => self.is_mounted(dst)?,
        };
        if mounted {
            return Ok(());
        }
        let src_fd = linux_mount::open_dir(src).map_err(|e| refused(src, e))?;
        linux_mount::bind(&src_fd, &dst_fd, read_only).map_err(|source| HostError::Mount {
            src: src.to_owned(),
            dst: dst.to_owned(),
            source,
        })
    }

    fn unmount(&self, dst: &Path) -> Result<(), HostError> {
        if !self.is_mounted(dst)? {
            return Ok(());
        }
        // A symlink put in the mount's place is not followed to another mount.
        nix::mount::umount2(dst, MntFlags::UMOUNT_NOFOLLOW).map_err(|e| HostError::Unmount {
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
        let addr = linux_net::jail_addr(&jail.ip).map_err(|e| fail(e.to_string()))?;
        let mut cmd = Command::new(exe);
        cmd.arg(INIT_ARG)
            .args(["--name", &jail.name])
            .arg("--root")
            .arg(&jail.path)
            .args(["--hostname", &jail.hostname, "--ip", &jail.ip])
            .args(["--start", &jail.exec_start])
            .arg("--stop-timeout")
            .arg(stop_grace(jail).as_secs().to_string())
            .args(["--log-max-bytes", &self.log_max_bytes.to_string()]);
        if let Some(dir) = &self.log_dir {
            cmd.arg("--log-dir").arg(dir);
        }
        // stdin: the network handshake (see below); stderr: the init sends
        // its own to the jail's console pipe once it has one.
        for name in &self.unset_env {
            cmd.env_remove(name);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
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
        let mut go = child.stdin.take();
        let mut net_error = None;
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
                        // The init waits in its own, empty network namespace
                        // for the host to give it the jail's address before
                        // it runs exec.start: "go", or EOF when that failed.
                        if let (Some(p), Some(mut w)) = (pid, go.take()) {
                            match linux_net::setup(p, addr) {
                                Ok(()) => {
                                    let _ = std::io::Write::write_all(&mut w, b"go\n");
                                }
                                // Dropping the pipe tells the init; its
                                // verdict follows (its own failure, if it
                                // failed before it could wait for us).
                                Err(e) => net_error = Some(e.to_string()),
                            }
                        }
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
        drop(go);
        let _ = child.wait();
        let verdict = match (net_error, verdict) {
            (Some(e), None) => format!("failed: {e}"),
            (Some(e), Some(v)) if v == format!("failed: {}", linux_net::NO_GO) => {
                format!("failed: {e}")
            }
            (_, v) => v.unwrap_or_default(),
        };
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
        let mut console = None;
        if !jail.exec_stop.trim().is_empty() {
            console = self.stop_console(&jail.name);
            let out = || match &console {
                Some(c) => c
                    .input
                    .try_clone()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
                None => Stdio::null(),
            };
            // exec.stop runs inside the jail: its namespaces (network
            // included), its root and its capabilities (the script is the
            // jail's to rewrite).
            let status =
                super::linux_exec::command_in_jail(jid, &["/bin/sh", "-c", &jail.exec_stop])
                    .map_err(fail)?
                    .stdin(Stdio::null())
                    .stdout(out())
                    .stderr(out())
                    .status()
                    .map_err(Self::io("run exec.stop in the jail"))
                    .map_err(fail)?;
            if !status.success() {
                tracing::warn!(jail = %jail.name, %status, "exec.stop failed; stopping the jail anyway");
            }
        }
        let pid = Pid::from_raw(jid as i32);
        let route = linux_net::jail_addr(&jail.ip)
            .ok()
            .and_then(|addr| Some((linux_net::host_end(jid)?, addr)));
        // The init answers SIGTERM by passing it on and exiting once its
        // children are gone, or at the end of the grace; SIGKILL to a PID
        // namespace's init ends them all.
        let grace = stop_grace(jail);
        let mut gone = false;
        if !grace.is_zero() {
            let _ = kill(pid, Signal::SIGTERM);
            gone = self.wait_gone(jail, jid, grace + INIT_EXIT_SLACK)?;
        }
        if !gone {
            let _ = kill(pid, Signal::SIGKILL);
            gone = self.wait_gone(jail, jid, Duration::from_secs(5))?;
        }
        // The jail's processes are gone, and with them every writer of
        // exec.stop's pipe but ours: what they wrote reaches the log.
        if let Some(c) = console {
            c.finish(Duration::from_secs(1));
        }
        if gone {
            if let Some((index, addr)) = route {
                linux_net::unroute(index, addr);
            }
            return Ok(());
        }
        Err(fail(format!("init {jid} is still alive after SIGKILL")))
    }

    fn running(&self) -> Result<Vec<Running>, HostError> {
        let entries = std::fs::read_dir(&self.proc_dir)
            .map_err(|e| HostError::List(format!("read {}: {e}", self.proc_dir.display())))?;
        // A jail's init is PID 1 of a PID namespace of its own, so a
        // process in ours (most of the host's) is passed over on one stat,
        // without reading its command line (which reads its memory: the
        // costly part of the scan, done for every jail started or stopped).
        let ours = ns_id(&self.proc_dir.join("self/ns/pid"));
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if ours.is_some() && ns_id(&entry.path().join("ns/pid")) == ours {
                continue;
            }
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
        args: &[String],
        env: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<(), HostError> {
        let fail = |why: String| HostError::Command {
            command: command.to_owned(),
            why,
        };
        let mut cmd = Command::new("/bin/sh");
        for name in &self.unset_env {
            cmd.env_remove(name);
        }
        let mut child = cmd
            .args(["-c", command, "sh"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
        // No deadline rather than a panic when `t` is beyond the clock.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
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

    /// Fakes `/proc/PID` under `proc`: its command line, its root and its
    /// `NSpid` (PIDs from the reader's namespace down).
    fn fake_proc(proc: &Path, pid: u32, cmdline: &[u8], root: &Path, nspid: &str) {
        let d = proc.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cmdline"), cmdline).unwrap();
        std::fs::write(d.join("status"), format!("Name:\tx\nNSpid:\t{nspid}\n")).unwrap();
        let _ = std::fs::remove_file(d.join("root"));
        std::os::unix::fs::symlink(root, d.join("root")).unwrap();
    }

    const NS_INIT: &[u8] = b"/usr/bin/jailtx\0__jail-init\0--name\0ns\0--root\0/b/j/ns\0";

    fn init_cmdline(name: &str, root: &Path) -> Vec<u8> {
        let mut c = format!("/usr/bin/jailtx\0__jail-init\0--name\0{name}\0--root\0").into_bytes();
        c.extend_from_slice(root.as_os_str().as_encoded_bytes());
        c.push(0);
        c
    }

    #[test]
    fn running_lists_only_inits_pivoted_into_their_root() {
        let proc = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let ns = base.path().join("j/ns");
        let www = base.path().join("j/www");
        std::fs::create_dir_all(&ns).unwrap();
        std::fs::create_dir_all(&www).unwrap();
        let p = proc.path();
        fake_proc(p, 4242, &init_cmdline("ns", &ns), &ns, "4242\t1");
        // An init that has not pivoted yet (its root is the host's), a
        // reused PID, a jail's process posing as another jail's init (not
        // PID 1 of its namespace), one a namespace deeper, and one whose
        // root is another jail's.
        fake_proc(p, 4243, &init_cmdline("ns", &ns), Path::new("/"), "4243\t1");
        fake_proc(p, 4244, b"/bin/sleep\x0030\0", &ns, "4244\t1");
        fake_proc(p, 4245, &init_cmdline("www", &www), &www, "4245\t7");
        fake_proc(p, 4246, &init_cmdline("www", &www), &www, "4246\t7\t1");
        fake_proc(p, 4247, &init_cmdline("www", &www), &ns, "4247\t1");
        std::fs::create_dir(p.join("self")).unwrap();
        let h = LinuxHost::new().with_proc_dir(p.to_owned());
        let want = Running {
            name: "ns".into(),
            jid: 4242,
            path: ns.clone(),
        };
        assert_eq!(h.running().unwrap(), vec![want]);
        assert!(h.is_our_init(4242, &ns));
        for pid in 4243..=4248 {
            assert!(!h.is_our_init(pid, &ns), "{pid}");
            assert!(!h.is_our_init(pid, &www), "{pid}");
        }
        let ns_spec = spec("ns", ns.to_str().unwrap());
        assert_eq!(crate::host::running_jid(&h, &ns_spec).unwrap(), Some(4242));
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
            fake_proc(proc.path(), pid, cmdline, Path::new("/"), "1");
            h.kill_init(pid, &ns);
            assert!(
                alive(&mut child),
                "killed {:?}",
                String::from_utf8_lossy(cmdline)
            );
        }
        // The jail's own init, even before its chroot (root still /).
        fake_proc(proc.path(), pid, NS_INIT, Path::new("/"), "1");
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
        assert!(h.run_command("true", &[], &[], t).is_ok());
        let env = [("WHO".to_owned(), "ns".to_owned())];
        let e = h
            .run_command(
                "echo first >&2; echo \"$WHO down\" >&2; echo >&2; exit 3",
                &[],
                &env,
                t,
            )
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("exit status: 3 (ns down)"), "{e}");
        let e = h
            .run_command("exit 4", &[], &[], t)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("exit status: 4, nothing on stderr"), "{e}");
        let e = h
            .run_command("sleep 5", &[], &[], Some(Duration::from_millis(100)))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("timed out after 100ms"), "{e}");
    }
}
