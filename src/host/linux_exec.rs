//! Running a command inside a running jail (`exec.stop`) with the jail's own
//! confinement: its namespaces, its root and its capabilities, never the
//! host's. `nsenter` would keep every capability of the calling root, and
//! `exec.stop` runs a script the jail's root may have rewritten.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use nix::libc;

/// The namespaces entered, in nsenter's order (the mount namespace last but
/// one: entering it resets the root and working directory; the root then
/// comes from `/proc/PID/root`, as `nsenter -r` takes it).
const NAMESPACES: [(&str, libc::c_int); 5] = [
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

fn open(path: &str, flags: libc::c_int) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    Ok(f.into())
}

/// A `Command` running `argv` inside the jail whose init is `jid`: before
/// the exec, the child enters the init's namespaces (those that differ from
/// ours), chroots to its root, forks once more so the command is in the
/// jail's PID namespace (the middle process waits and passes on the exit
/// status), forbids it user namespaces and cuts its capabilities to the
/// jail's. The environment is
/// only `PATH` and `HOME`: nothing of the host's leaks in.
pub fn command_in_jail(jid: u32, argv: &[&str]) -> Result<Command, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let proc = format!("/proc/{jid}");
    let mut fds: Vec<(OwnedFd, libc::c_int)> = Vec::new();
    for (ns, flag) in NAMESPACES {
        let theirs = std::fs::metadata(format!("{proc}/ns/{ns}"))
            .map_err(|e| format!("read {proc}/ns/{ns}: {e}"))?;
        let ours = std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .map_err(|e| format!("read /proc/self/ns/{ns}: {e}"))?;
        if theirs.ino() != ours.ino() || theirs.dev() != ours.dev() {
            fds.push((open(&format!("{proc}/ns/{ns}"), libc::O_CLOEXEC)?, flag));
        }
    }
    let root = open(&format!("{proc}/root"), libc::O_CLOEXEC | libc::O_DIRECTORY)?;
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().env(
        "PATH",
        "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin",
    );
    cmd.env("HOME", "/root");
    // SAFETY: the closure makes only raw syscalls on descriptors opened
    // above and on stack data (no allocation, no lock), which is what is
    // allowed between fork and exec in a multi-threaded process.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || enter(&fds, &root));
    }
    Ok(cmd)
}

fn check(r: libc::c_long) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the forked child: see [`command_in_jail`].
fn enter(fds: &[(OwnedFd, libc::c_int)], root: &OwnedFd) -> std::io::Result<()> {
    for (fd, flag) in fds {
        // SAFETY: setns on an open namespace descriptor.
        check(unsafe { libc::setns(fd.as_raw_fd(), *flag) }.into())?;
    }
    // SAFETY: fchdir/chroot/chdir on an open descriptor and static paths.
    unsafe {
        check(libc::fchdir(root.as_raw_fd()).into())?;
        check(libc::chroot(c".".as_ptr()).into())?;
        check(libc::chdir(c"/".as_ptr()).into())?;
    }
    // A raw clone, not fork(3): no atfork handlers run in this child of a
    // multi-threaded parent. The new process is in the jail's PID namespace.
    // SAFETY: clone with only SIGCHLD behaves as fork without the libc
    // bookkeeping; both sides go on with raw syscalls only.
    let child = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    check(child)?;
    if child > 0 {
        // The middle process never execs, so the descriptors it got from
        // jailtx (O_CLOEXEC or not) stay open while it waits: among them
        // the state dir's lock. Were jailtx killed while exec.stop ran
        // (beside other jails' steps, or a crash), the lock would stay held
        // until exec.stop ends, and `recover` would find "another run".
        // Best effort (close_range is Linux 5.9+); only stdio is kept.
        // SAFETY: closes this process's own descriptors from 3 up.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        let mut status = 0;
        loop {
            // SAFETY: waits for the process just cloned.
            let r = unsafe { libc::waitpid(child as libc::pid_t, &mut status, 0) };
            if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            1
        };
        // SAFETY: ends the middle process without running any Rust or libc
        // exit code (the parent's state is not ours to flush).
        unsafe { libc::_exit(code) };
    }
    // The errno alone: building a message would allocate here.
    super::linux_seccomp::forbid_user_namespaces().map_err(std::io::Error::from_raw_os_error)?;
    super::linux_caps::confine().map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}
