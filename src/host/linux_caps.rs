//! The capabilities a Linux jail keeps: what a FreeBSD jail's root may do,
//! and how the bounding, effective, permitted, inheritable and ambient sets
//! are cut down to it (used by the jail's init and by `exec.stop`).
//!
//! Everything here is a raw syscall on stack data, so it may run between
//! `fork` and `exec` in a multi-threaded process (`pre_exec`).

use nix::libc;

/// Capability numbers (linux/capability.h); libc does not carry them.
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const DAC_READ_SEARCH: u32 = 2;
    pub const FOWNER: u32 = 3;
    pub const FSETID: u32 = 4;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const NET_RAW: u32 = 13;
    pub const SYS_MODULE: u32 = 16;
    pub const SYS_CHROOT: u32 = 18;
    pub const SYS_ADMIN: u32 = 21;
    pub const MKNOD: u32 = 27;
    pub const AUDIT_WRITE: u32 = 29;
}

/// What a jail keeps. Each is something FreeBSD lets a jail's root do:
///
/// - `chown`, `dac_override`, `dac_read_search`, `fowner`, `fsetid`: root's
///   authority over the files of its own tree (the tree is all it can see);
/// - `kill`: signal any process of the jail (the PID namespace holds no
///   other);
/// - `setuid`, `setgid`: `su`, `login`, daemons dropping privileges;
/// - `setpcap`: lets root drop capabilities from its own children (it can
///   never add one the bounding set lacks);
/// - `net_bind_service`: ports below 1024 on the jail's address;
/// - `sys_chroot`: sshd's privilege separation and other sandboxes; after
///   `pivot_root` a nested chroot leads nowhere outside the jail;
/// - `audit_write`: login and sshd write audit records (as FreeBSD's audit).
///
/// Everything else is dropped, among them: `sys_admin` (mount, namespaces,
/// swapon, sethostname beyond the UTS namespace…), `sys_module`,
/// `sys_rawio`, `sys_ptrace` (the jail's processes could be reached from
/// another namespace's view), `sys_boot`, `sys_time`, `sys_nice` and
/// `sys_resource` (host-wide scheduling and limits, disk quota reserve),
/// `mknod` (devices come only from the jail's small `/dev`), `net_admin`
/// and `net_raw` (a FreeBSD jail has no raw sockets unless
/// `allow.raw_sockets`), `linux_immutable` (no `schg` in a jail either),
/// `ipc_lock`, `ipc_owner`, `lease`, `setfcap`, `mac_*`, `syslog`,
/// `wake_alarm`, `block_suspend`, `audit_control`, `audit_read`, `perfmon`,
/// `bpf`, `checkpoint_restore`, `sys_pacct`, `sys_tty_config`.
pub const KEEP: [u32; 12] = [
    cap::CHOWN,
    cap::DAC_OVERRIDE,
    cap::DAC_READ_SEARCH,
    cap::FOWNER,
    cap::FSETID,
    cap::KILL,
    cap::SETGID,
    cap::SETUID,
    cap::SETPCAP,
    cap::NET_BIND_SERVICE,
    cap::SYS_CHROOT,
    cap::AUDIT_WRITE,
];

/// The kept set as the two 32-bit words capset takes.
fn keep_words() -> [u32; 2] {
    let mut w = [0u32; 2];
    for c in KEEP {
        w[(c / 32) as usize] |= 1 << (c % 32);
    }
    w
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A failed step of [`confine`], naming the capability where there is one.
#[derive(Debug, Clone, Copy)]
pub enum CapError {
    Bounding { cap: u32, errno: i32 },
    Ambient { errno: i32 },
    Capset { errno: i32 },
}

impl CapError {
    pub fn errno(&self) -> i32 {
        match self {
            CapError::Bounding { errno, .. }
            | CapError::Ambient { errno }
            | CapError::Capset { errno } => *errno,
        }
    }
}

impl std::fmt::Display for CapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapError::Bounding { cap, errno } => write!(
                f,
                "drop capability {cap} from the bounding set: {}",
                nix::errno::Errno::from_raw(*errno)
            ),
            CapError::Ambient { errno } => write!(
                f,
                "clear the ambient capabilities: {}",
                nix::errno::Errno::from_raw(*errno)
            ),
            CapError::Capset { errno } => write!(
                f,
                "set the jail's capabilities: {}",
                nix::errno::Errno::from_raw(*errno)
            ),
        }
    }
}

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Cuts this thread's capabilities down to [`KEEP`]: the bounding set first
/// (it needs `setpcap`, which is kept), so that no later exec, not even of
/// a setuid-root binary, gets back what was dropped; then the ambient set;
/// then effective, permitted and inheritable. `no_new_privs` stays off:
/// setuid binaries in the template (`su`) must keep working, within the
/// bounding set.
pub fn confine() -> Result<(), CapError> {
    let keep = keep_words();
    // Up to the kernel's last capability: PR_CAPBSET_DROP says EINVAL past it.
    for c in 0..64u32 {
        if keep[(c / 32) as usize] & (1 << (c % 32)) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            match errno() {
                libc::EINVAL => break,
                e => return Err(CapError::Bounding { cap: c, errno: e }),
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // EINVAL: a kernel before 4.3, which has no ambient set to clear.
    if r != 0 && errno() != libc::EINVAL {
        return Err(CapError::Ambient { errno: errno() });
    }
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep[0],
            permitted: keep[0],
            inheritable: 0,
        },
        CapData {
            effective: keep[1],
            permitted: keep[1],
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a version-3 header and two data structs, which
    // are exactly what is passed; pid 0 is this thread.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r != 0 {
        return Err(CapError::Capset { errno: errno() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_a_jail_root_needs_and_nothing_that_reaches_the_host() {
        let w = keep_words();
        let has = |c: u32| w[(c / 32) as usize] & (1 << (c % 32)) != 0;
        for c in [cap::SETUID, cap::SETGID, cap::SYS_CHROOT, cap::CHOWN] {
            assert!(has(c), "{c}");
        }
        for c in [cap::SYS_ADMIN, cap::SYS_MODULE, cap::MKNOD, cap::NET_RAW] {
            assert!(!has(c), "{c}");
        }
        assert_eq!(w[1], 0, "no capability above 31 is kept");
    }
}
