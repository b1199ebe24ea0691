//! The jail's init on Linux: enters new namespaces, becomes PID 1 of its own
//! PID namespace, pumps the jail's console into its log (see
//! [`super::jail_log`]), waits for the host to set up its network namespace
//! (see [`super::linux_net`]), `pivot_root`s into the jail's root (the host's
//! root is detached: no path leads back), sets up `/dev` and `/proc`, forbids
//! user namespaces, drops every capability a jail does not need, runs
//! `exec.start`, then reaps children until told to stop. Each confinement
//! stage is one function, called in order by `pid1`.
//!
//! It reports to the starting jailtx on stdout: `pid N` (its host PID, the
//! JID), then `ready` or `failed: REASON`, then closes stdout.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, fchdir, fork, pivot_root, sethostname};

/// What the init is told on its command line.
#[derive(Debug, Clone)]
pub struct InitArgs {
    pub name: String,
    pub root: PathBuf,
    pub hostname: String,
    pub ip: String,
    pub start: String,
    /// How long the jail's processes may take to exit after SIGTERM before
    /// the init exits and the kernel SIGKILLs what is left.
    pub stop_timeout: Duration,
    /// Where the console log goes (`NAME.log`); none: discarded.
    pub log_dir: Option<PathBuf>,
    pub log_max_bytes: u64,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the init; never returns.
pub fn main(args: InitArgs) -> ! {
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET;
    if let Err(e) = nix::sched::unshare(flags) {
        say(&format!("failed: unshare namespaces: {e}"));
        std::process::exit(1);
    }
    // SAFETY: this process is single-threaded here (a fresh exec of jailtx
    // that has started no threads), so the child may run arbitrary code.
    match unsafe { fork() } {
        Err(e) => {
            say(&format!("failed: fork: {e}"));
            std::process::exit(1)
        }
        Ok(ForkResult::Parent { child }) => {
            say(&format!("pid {child}"));
            std::process::exit(0)
        }
        Ok(ForkResult::Child) => match pid1(&args) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                say(&format!("failed: {e}"));
                std::process::exit(1)
            }
        },
    }
}

/// The jail's small `/dev` (a tmpfs: the only place in a jail where device
/// nodes work, since every bind mount of the template and `js/NAME` is
/// `nodev`). Runs after the pivot, so `/dev` is the jail's own.
fn setup_dev() -> Result<(), String> {
    let dev = Path::new("/dev");
    if !std::fs::symlink_metadata(dev).is_ok_and(|m| m.is_dir()) {
        return Err("the template's /dev is missing or not a directory; the template needs a /dev directory".into());
    }
    nix::mount::mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| format!("mount tmpfs on /dev: {e}"))?;
    let nodes = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", p.display()))?;
        // mknod honours the umask; the nodes must be 0666 whatever it is.
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            &p,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(name)).map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    Ok(())
}

/// Stage 1: nothing mounted in here may reach the host's namespace.
fn make_mounts_private() -> Result<(), String> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))
}

/// Stage 2: `pivot_root` into the jail's root and detach the host's root,
/// so that no path (not `..` from a nested chroot, not a symlink, not
/// `/proc/1/root`) leads back to the host. The root is opened without
/// following a symlink in any component; a root that is not a mount point
/// (pivot_root needs one) is bound onto itself first.
fn pivot_into(root: &Path) -> Result<(), String> {
    let open = || super::linux_mount::open_dir(root).map_err(|e| format!("jail root: {e}"));
    let mut fd = open()?;
    if super::linux_mount::is_mount_root(&fd) != Some(true) {
        let at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
        nix::mount::mount(
            Some(at.as_str()),
            at.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind {} onto itself: {e}", root.display()))?;
        fd = open()?;
    }
    fchdir(&fd).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    // The old root is stacked on the new one at `.`; detaching it leaves
    // the jail's root as the namespace's root.
    pivot_root(".", ".").map_err(|e| format!("pivot_root {}: {e}", root.display()))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| format!("detach the host's root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

/// The parts of `/proc` that act on the whole host rather than on the
/// jail's namespaces, made read-only (as container runtimes do): uid 0
/// writes `/proc/sys` files (`kernel.hostname` in the jail's UTS
/// namespace, but also host-wide ones) and `/proc/sysrq-trigger` on file
/// modes alone, no capability asked.
const PROC_READ_ONLY: [&str; 5] = [
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

/// A `/proc` of the jail's own PID namespace, so ps and kill work inside,
/// with [`PROC_READ_ONLY`] bound read-only over itself.
fn mount_proc() -> Result<(), String> {
    if !std::fs::symlink_metadata("/proc").is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let safe = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    nix::mount::mount(Some("proc"), "/proc", Some("proc"), safe, None::<&str>)
        .map_err(|e| format!("mount proc on /proc: {e}"))?;
    for p in PROC_READ_ONLY {
        if std::fs::symlink_metadata(p).is_err() {
            continue;
        }
        nix::mount::mount(
            Some(p),
            p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("bind {p} onto itself: {e}"))?;
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | safe;
        nix::mount::mount(None::<&str>, p, None::<&str>, ro, None::<&str>)
            .map_err(|e| format!("make {p} read-only: {e}"))?;
    }
    Ok(())
}

/// Stage 3: no user namespaces inside the jail (see
/// [`super::linux_seccomp`]); needs `sys_admin`, so before stage 4.
fn forbid_user_namespaces() -> Result<(), String> {
    super::linux_seccomp::forbid_user_namespaces().map_err(|e| {
        format!(
            "install the seccomp filter: {}",
            nix::errno::Errno::from_raw(e)
        )
    })
}

/// Stage 4, last before `exec.start`: the jail's capabilities, for the init
/// and everything it starts (see [`super::linux_caps`]).
fn drop_capabilities() -> Result<(), String> {
    super::linux_caps::confine().map_err(|e| e.to_string())
}

fn pid1(args: &InitArgs) -> Result<(), String> {
    // The console first: the log directory is opened while the host's
    // filesystem is still in view, and every later failure lands in the log.
    let console =
        super::jail_log::init_console(args.log_dir.as_deref(), &args.name, args.log_max_bytes)?;
    super::linux_net::await_host()?;
    make_mounts_private()?;
    sethostname(&args.hostname).map_err(|e| format!("sethostname {}: {e}", args.hostname))?;
    pivot_into(&args.root)?;
    setup_dev()?;
    mount_proc()?;
    forbid_user_namespaces()?;
    drop_capabilities()?;

    // Block the signals the loop below waits for before any child exists.
    // They also need a handler: the kernel drops a signal sent to a PID
    // namespace's init whose disposition is the default, blocked or not.
    let mut waited = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        waited.add(s);
        let action = SigAction::new(
            SigHandler::Handler(noop),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, so it is async-signal-safe; the
        // signals stay blocked and are taken with sigwait below.
        unsafe { sigaction(s, &action) }.map_err(|e| format!("sigaction {s}: {e}"))?;
    }
    waited
        .thread_block()
        .map_err(|e| format!("block signals: {e}"))?;

    let mut start = Command::new("/bin/sh");
    // SAFETY: sigprocmask is async-signal-safe. The jail's processes must not
    // inherit the init's blocked signals, or they would never see SIGTERM.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut start, || {
            SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        });
    }
    let status = start
        .args(["-c", &args.start])
        .env_clear()
        .env(
            "PATH",
            "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin",
        )
        .env("HOME", "/root")
        .env("JAIL_NAME", &args.name)
        .env("JAIL_HOSTNAME", &args.hostname)
        .env("JAIL_IP", &args.ip)
        // exec.start's output goes to the jail's log, never into the status pipe.
        .stdout(std::process::Stdio::from(
            console
                .try_clone()
                .map_err(|e| format!("dup the console: {e}"))?,
        ))
        .stderr(std::process::Stdio::from(console))
        .status()
        .map_err(|e| format!("run exec.start `{}`: {e}", args.start))?;
    if !status.success() {
        return Err(format!("exec.start `{}` exited with {status}", args.start));
    }
    say("ready");
    // Close the status pipe so the starter sees the end of the report.
    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdout(&devnull).map_err(|e| format!("close status pipe: {e}"))?;
    reap_until_stopped(&waited, args.stop_timeout);
    Ok(())
}

extern "C" fn noop(_: i32) {}

fn reap_all() -> bool {
    let mut any_left = true;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => break,
            Ok(_) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                any_left = false;
                break;
            }
            Err(_) => break,
        }
    }
    any_left
}

/// Reaps children until a stop signal comes, then gives the jail's
/// processes `grace` to exit after SIGTERM (jail(8)'s `stop.timeout`).
fn reap_until_stopped(waited: &SigSet, grace: Duration) {
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                reap_all();
            }
            Ok(_) => break,
            Err(_) => continue,
        }
    }
    // Stop: SIGTERM to every process of the namespace, a grace period, then
    // exit; the kernel kills whatever is left when a PID namespace's init
    // exits. No grace is jail(8)'s `stop.timeout = 0`: no SIGTERM at all.
    if grace.is_zero() {
        return;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let until = Instant::now() + grace;
    while reap_all() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        wait_signal(waited, left);
    }
}

/// Waits at most `timeout` for one of the blocked signals of `set` (the
/// next SIGCHLD), instead of polling: the init exits, and the stop ends, as
/// soon as the jail's last process is gone. A SIGCHLD that came before the
/// call is still pending (blocked), so none is missed.
fn wait_signal(set: &SigSet, timeout: Duration) {
    let ts = nix::libc::timespec {
        tv_sec: nix::libc::time_t::try_from(timeout.as_secs()).unwrap_or(nix::libc::time_t::MAX),
        tv_nsec: nix::libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: sigtimedwait reads the set and the timeout; a null siginfo
    // asks for nothing back.
    unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
}
