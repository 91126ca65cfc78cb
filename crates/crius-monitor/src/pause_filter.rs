//! The seccomp filter of the sandbox's pause loop: it allows what parking, reaping and exiting
//! need, and the reply on the status pipe; every other system call fails with EPERM. Code a
//! tracer makes the pause process run is held to it too.

use libc::sock_filter;

/// The audit architecture of this machine's system calls, where crius knows it.
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(target_arch = "riscv64")]
const NATIVE_ARCH: Option<u32> = Some(0xC000_00F3);
#[cfg(all(target_arch = "powerpc64", target_endian = "little"))]
const NATIVE_ARCH: Option<u32> = Some(0xC000_0015);
#[cfg(target_arch = "s390x")]
const NATIVE_ARCH: Option<u32> = Some(0x8000_0016);
#[cfg(target_arch = "loongarch64")]
const NATIVE_ARCH: Option<u32> = Some(0xC000_0102);
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    all(target_arch = "powerpc64", target_endian = "little"),
    target_arch = "s390x",
    target_arch = "loongarch64"
)))]
const NATIVE_ARCH: Option<u32> = None;

/// System calls of the pause loop: blocking signals and waiting for them, reaping, exiting,
/// and returning from a signal or a restarted call.
const PAUSE_CALLS: [libc::c_long; 8] = [
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
];

/// Offset of the call number in `struct seccomp_data`.
const NR: u32 = 0;
/// Offset of the audit architecture.
const ARCH: u32 = 4;
/// Offset of the first argument's low 32 bits: a descriptor is an `unsigned int` to the
/// kernel.
#[cfg(target_endian = "little")]
const ARG0_LOW: u32 = 16;
#[cfg(target_endian = "big")]
const ARG0_LOW: u32 = 20;

/// The answer to a refused call.
const DENY: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM.cast_unsigned();

/// `BPF_LD | BPF_W | BPF_ABS`: loads a word of `struct seccomp_data`.
const LD_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`: compares with a constant.
const JEQ: u16 = 0x15;
/// `BPF_RET | BPF_K`: answers.
const RET: u16 = 0x06;

/// A filter that cannot be installed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FilterError {
    /// The kernel refused the filter.
    #[error("cannot install the pause process's seccomp filter: {source}")]
    Install {
        /// Its answer.
        source: nix::Error,
    },
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A comparison at index `at` jumping to index `yes` or `no`, both after it.
fn jeq(k: u32, at: usize, yes: usize, no: usize) -> sock_filter {
    let offset = |to: usize| u8::try_from(to - at - 1).unwrap_or(u8::MAX);
    sock_filter {
        code: JEQ,
        jt: offset(yes),
        jf: offset(no),
        k,
    }
}

/// A system call number as the filter sees it.
fn nr(call: libc::c_long) -> u32 {
    u32::try_from(call).unwrap_or(u32::MAX)
}

/// The program for architecture `arch`: the pause loop's calls, and `write` and `close` of
/// descriptor `status` alone.
fn program(arch: u32, status: u32) -> Vec<sock_filter> {
    // Layout: arch check, the call number, one comparison per allowed call, the two
    // descriptor calls, the descriptor check, then `allow` and `deny`.
    let first_call = 3;
    let write_at = first_call + PAUSE_CALLS.len();
    let close_at = write_at + 1;
    let fd_at = close_at + 1;
    let allow = fd_at + 2;
    let deny = allow + 1;
    let mut p = vec![stmt(LD_ABS, ARCH), jeq(arch, 1, 2, deny), stmt(LD_ABS, NR)];
    for (i, call) in PAUSE_CALLS.iter().enumerate() {
        let at = first_call + i;
        p.push(jeq(nr(*call), at, allow, at + 1));
    }
    p.push(jeq(nr(libc::SYS_write), write_at, fd_at, close_at));
    p.push(jeq(nr(libc::SYS_close), close_at, fd_at, deny));
    p.push(stmt(LD_ABS, ARG0_LOW));
    p.push(jeq(status, fd_at + 1, allow, deny));
    p.push(stmt(RET, libc::SECCOMP_RET_ALLOW));
    p.push(stmt(RET, DENY));
    debug_assert_eq!(p.len(), deny + 1);
    p
}

/// Installs the filter on this process, whose no_new_privs must be set. `status` is the
/// descriptor of the reply still to be written and closed. On an architecture crius knows no
/// audit number for (32-bit ones among them, whose pause loop makes other calls), and on a
/// kernel without seccomp filters, the sandbox parks without one: its other locks (no
/// capabilities but the trace guard, not dumpable without a user namespace) still hold, and a
/// pod is not refused for it.
pub(crate) fn install(status: i32) -> Result<(), FilterError> {
    let Some(arch) = NATIVE_ARCH else {
        return Ok(());
    };
    match load(&mut program(arch, status.cast_unsigned())) {
        // The kernel's answer without seccomp filters (the program itself is checked by the
        // unit tests below).
        Err(FilterError::Install {
            source: nix::errno::Errno::EINVAL,
        }) => Ok(()),
        other => other,
    }
}

/// Installs `program` on this process (no allocation: safe in a forked child).
fn load(program: &mut [sock_filter]) -> Result<(), FilterError> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies it.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const fprog,
            0,
            0,
        )
    };
    nix::errno::Errno::result(ret)
        .map(drop)
        .map_err(|source| FilterError::Install { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_64: u32 = 0xC000_003E;
    const STATUS: u32 = 7;

    /// What the program answers for call `nr` of `arch` with first argument `arg0`.
    fn run(program: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        data[16..24].copy_from_slice(&arg0.to_ne_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = program[pc];
            pc += 1;
            match insn.code {
                LD_ABS => {
                    let k = usize::try_from(insn.k).expect("offset");
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().expect("word"));
                }
                JEQ => {
                    pc += usize::from(if acc == insn.k { insn.jt } else { insn.jf });
                }
                RET => return insn.k,
                code => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    #[test]
    fn the_pause_loop_may_wait_reap_and_exit_and_nothing_else() {
        let p = program(X86_64, STATUS);
        let allow = libc::SECCOMP_RET_ALLOW;
        for call in PAUSE_CALLS {
            assert_eq!(run(&p, X86_64, nr(call), 0), allow, "{call}");
        }
        for call in [
            libc::SYS_socket,
            libc::SYS_unshare,
            libc::SYS_ptrace,
            libc::SYS_mmap,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_kill,
            libc::SYS_io_uring_setup,
            libc::SYS_keyctl,
            libc::SYS_setns,
            libc::SYS_prctl,
            libc::SYS_read,
        ] {
            assert_eq!(run(&p, X86_64, nr(call), u64::from(STATUS)), DENY, "{call}");
        }
        // Another architecture's numbers (x86's 114 is wait4, 0x40000000 | n are x32's)
        // are refused.
        assert_eq!(run(&p, 0x4000_0003, 114, 0), DENY);
        let wait4 = nr(libc::SYS_wait4);
        assert_eq!(run(&p, X86_64, wait4 | 0x4000_0000, 0), DENY);
    }

    #[test]
    fn the_status_descriptor_alone_may_be_written_and_closed() {
        let p = program(X86_64, STATUS);
        let allow = libc::SECCOMP_RET_ALLOW;
        for call in [libc::SYS_write, libc::SYS_close] {
            assert_eq!(run(&p, X86_64, nr(call), u64::from(STATUS)), allow);
            // The kernel reads the low half: the upper one does not matter.
            assert_eq!(
                run(&p, X86_64, nr(call), 1 << 32 | u64::from(STATUS)),
                allow
            );
            for fd in [0, 1, 2, STATUS + 1] {
                assert_eq!(
                    run(&p, X86_64, nr(call), u64::from(fd)),
                    DENY,
                    "{call} {fd}"
                );
            }
        }
    }

    #[test]
    fn opcodes_are_the_kernels() {
        assert_eq!(
            u32::from(LD_ABS),
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
        );
        assert_eq!(u32::from(JEQ), libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K);
        assert_eq!(u32::from(RET), libc::BPF_RET | libc::BPF_K);
    }

    #[test]
    fn jumps_stay_inside_the_program() {
        let p = program(X86_64, STATUS);
        for (at, insn) in p.iter().enumerate() {
            if insn.code == JEQ {
                assert!(at + 1 + usize::from(insn.jt) < p.len());
                assert!(at + 1 + usize::from(insn.jf) < p.len());
            }
        }
        assert_eq!(p.last().map(|i| (i.code, i.k)), Some((RET, DENY)));
    }

    /// The kernel takes the program, and a process under it can reply on its status pipe,
    /// wait and exit, but not make a socket or learn its parent.
    #[test]
    fn the_kernel_enforces_the_filter() {
        if NATIVE_ARCH.is_none() {
            return;
        }
        let (reply_r, reply_w) = nix::unistd::pipe().expect("pipe");
        use std::os::fd::AsRawFd;
        let status = reply_w.as_raw_fd();
        let mut filter = program(NATIVE_ARCH.unwrap_or(0), status.cast_unsigned());
        // SAFETY: the child makes raw system calls only (no allocation, no locks) and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: raw system calls on integers and this process's own descriptors.
            unsafe {
                let errno = nix::errno::Errno::last_raw;
                let mut code = 0;
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || load(&mut filter).is_err()
                {
                    libc::_exit(100);
                }
                if libc::syscall(libc::SYS_write, status, c"ok".as_ptr(), 2) != 2 {
                    code |= 1;
                }
                if libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0) >= 0
                    || errno() != libc::EPERM
                {
                    code |= 2;
                }
                if libc::syscall(libc::SYS_getppid) != -1 || errno() != libc::EPERM {
                    code |= 4;
                }
                if libc::syscall(libc::SYS_write, 2, c"x".as_ptr(), 1) != -1 {
                    code |= 8;
                }
                if libc::syscall(libc::SYS_close, status) != 0 {
                    code |= 16;
                }
                libc::syscall(libc::SYS_exit_group, code);
                libc::_exit(101);
            }
        }
        drop(reply_w);
        let mut reply = String::new();
        use std::io::Read;
        std::fs::File::from(reply_r)
            .read_to_string(&mut reply)
            .expect("reply");
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        assert_eq!(
            status,
            Ok(nix::sys::wait::WaitStatus::Exited(
                nix::unistd::Pid::from_raw(pid),
                0
            ))
        );
        assert_eq!(reply, "ok");
    }
}
