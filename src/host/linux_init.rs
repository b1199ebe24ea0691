//! The jail's init on Linux: enters new namespaces, becomes PID 1 of its own
//! PID namespace, pumps the jail's console into its log (see
//! [`super::jail_log`]), waits for the host to set up its network namespace
//! (see [`super::linux_net`]), sets up `/dev`, chroots, runs `exec.start`,
//! then reaps children until told to stop.
//!
//! It reports to the starting jailtx on stdout: `pid N` (its host PID, the
//! JID), then `ready` or `failed: REASON`, then closes stdout.

use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, chdir, chroot, fork, sethostname};

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

fn setup_dev(root: &Path) -> Result<(), String> {
    let dev = root.join("dev");
    if !dev.is_dir() {
        return Err(format!(
            "{} is missing; the template needs a /dev directory",
            dev.display()
        ));
    }
    nix::mount::mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )
    .map_err(|e| format!("mount tmpfs on {}: {e}", dev.display()))?;
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

fn pid1(args: &InitArgs) -> Result<(), String> {
    let console =
        super::jail_log::init_console(args.log_dir.as_deref(), &args.name, args.log_max_bytes)?;
    super::linux_net::await_host()?;
    // Nothing mounted in here may reach the host's namespace.
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    sethostname(&args.hostname).map_err(|e| format!("sethostname {}: {e}", args.hostname))?;
    setup_dev(&args.root)?;
    let proc_dir = args.root.join("proc");
    if proc_dir.is_dir() {
        // A /proc of the jail's own PID namespace, so ps and kill work inside.
        nix::mount::mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| format!("mount proc on {}: {e}", proc_dir.display()))?;
    }
    chroot(&args.root).map_err(|e| format!("chroot {}: {e}", args.root.display()))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;

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
    // exit; the kernel kills whatever is left when a PID namespace's init exits.
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until && reap_all() {
        std::thread::sleep(Duration::from_millis(10));
    }
}
