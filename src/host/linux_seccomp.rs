//! A seccomp filter that keeps a jail's processes from making user
//! namespaces. A chroot forbids them (the kernel refuses CLONE_NEWUSER to a
//! chrooted process); after `pivot_root` nothing does, and a user namespace
//! hands its creator every capability inside it (mounts, more namespaces):
//! kernel surface a FreeBSD jail does not have. Everything else is allowed.
//!
//! Installed while the caller still has `sys_admin` (so `no_new_privs` is
//! not needed and setuid binaries keep working); inherited across fork,
//! exec and setuid exec, and cannot be removed. Stack data and one prctl
//! only, so it may run between fork and exec.

use nix::libc;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The x32 ABI's syscalls are x86_64's numbers with this bit set.
const X32_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`: nr, arch, then args[0]'s low half
// (little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JSET: u32 = libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K;
const AND: u32 = libc::BPF_ALU | libc::BPF_AND | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA);
/// clone3 passes its flags in memory, out of a filter's sight: it is made
/// to look absent, and libc falls back to clone, whose flags are seen.
const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);

const CLONE_NEWUSER: u32 = libc::CLONE_NEWUSER as u32;

// Syscall numbers: x86_64 (and x32 with X32_BIT), then i386.
const X64_CLONE: u32 = 56;
const X64_UNSHARE: u32 = 272;
const I386_CLONE: u32 = 120;
const I386_UNSHARE: u32 = 310;
const CLONE3: u32 = 435;

/// The program; jump offsets count from the next instruction.
const FILTER: [libc::sock_filter; 19] = [
    /* 0 */ stmt(LD, ARCH),
    /* 1 */ jump(JEQ, AUDIT_ARCH_I386, 7, 0), // -> 9
    /* 2 */ jump(JEQ, AUDIT_ARCH_X86_64, 0, 13), // else -> 16 (allow)
    /* 3 */ stmt(LD, NR),
    /* 4 */ stmt(AND, !X32_BIT),
    /* 5 */ jump(JEQ, CLONE3, 12, 0), // -> 18
    /* 6 */ jump(JEQ, X64_UNSHARE, 7, 0), // -> 14
    /* 7 */ jump(JEQ, X64_CLONE, 6, 0), // -> 14
    /* 8 */ stmt(RET, ALLOW),
    /* 9 */ stmt(LD, NR),
    /* 10 */ jump(JEQ, CLONE3, 7, 0), // -> 18
    /* 11 */ jump(JEQ, I386_UNSHARE, 2, 0), // -> 14
    /* 12 */ jump(JEQ, I386_CLONE, 1, 0), // -> 14
    /* 13 */ stmt(RET, ALLOW),
    /* 14 */ stmt(LD, ARG0_LOW),
    /* 15 */ jump(JSET, CLONE_NEWUSER, 1, 0), // -> 17
    /* 16 */ stmt(RET, ALLOW),
    /* 17 */ stmt(RET, EPERM),
    /* 18 */ stmt(RET, ENOSYS),
];

/// Installs [`FILTER`] on this thread (and so on everything it starts).
/// Returns the errno of a failed prctl.
pub fn forbid_user_namespaces() -> Result<(), i32> {
    let prog = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program `prog` points to (a static
    // array of the length given) during the call.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump lands inside the program, and every path ends in a return.
    #[test]
    fn jumps_stay_inside_the_program() {
        for (i, f) in FILTER.iter().enumerate() {
            if u32::from(f.code) & 0x07 == libc::BPF_JMP {
                for off in [f.jt, f.jf] {
                    assert!(i + 1 + usize::from(off) < FILTER.len(), "{i}");
                }
            }
        }
        let last = FILTER[FILTER.len() - 1];
        assert_eq!(u32::from(last.code), RET);
    }
}
