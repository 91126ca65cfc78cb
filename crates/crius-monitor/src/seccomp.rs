//! Seccomp profiles of containers: crius' default profile (`RuntimeDefault`) as data, and the
//! translation of a profile (OCI or Docker JSON, with Docker's `includes`/`excludes` and
//! `archMap`) into the OCI `linux.seccomp` object of one container, given its capabilities.
//! libcontainer installs that object for the first process; the exec helper installs the same
//! one (read back from the container's `config.json`) for every exec.

use crius_proto::SeccompProfile;
use crius_proto::seccomp::{ArchMap, Arg, Filter, Profile, Rule};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Map, Value, json};

/// A profile that cannot be turned into a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// The profile's JSON does not have the shape of a seccomp profile.
    #[error("seccomp profile {path}: {reason}")]
    BadProfile {
        /// Where the profile came from (`runtime/default` for crius' own).
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// errno of the default action of crius' profile (EPERM).
const EPERM: u32 = 1;
/// errno answered for `clone3` without CAP_SYS_ADMIN (ENOSYS), so that C libraries fall back
/// to `clone`, whose flags the filter can inspect.
const ENOSYS: u32 = 38;
/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: the namespace flags of `clone`.
const CLONE_NAMESPACES: u64 = 0x7E02_0000;
/// `AF_ALG`: the kernel's crypto API as sockets, whose splice path wrote into the page cache
/// of any readable file on unpatched kernels (CVE-2026-31431): image layers are shared.
const AF_ALG: u64 = 38;
/// `AF_VSOCK`: sockets of this family reach the host's hypervisor side.
const AF_VSOCK: u64 = 40;
/// Socket families from here on do not exist (the kernel's `AF_MAX` is 46).
const FAMILIES_END: u64 = 64;

/// System calls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// System calls allowed only to a container holding the capability.
const WITH_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality` values a container may set: Linux, with UNAME26, with READ_IMPLIES_EXEC,
/// both, and the query 0xffffffff.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// A rule of `action` for `names`.
fn rule(names: &[&str], action: &str) -> Rule {
    Rule {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        action: action.to_owned(),
        ..Rule::default()
    }
}

/// A condition on argument `index`.
fn arg(index: u32, value: u64, op: &str) -> Arg {
    Arg {
        index,
        value,
        value_two: 0,
        op: op.to_owned(),
    }
}

/// `includes` or `excludes` of capabilities.
fn caps_filter(caps: &[&str]) -> Option<Filter> {
    Some(Filter {
        caps: caps.iter().map(|c| (*c).to_owned()).collect(),
        ..Filter::default()
    })
}

/// The rules allowing `socket`: for every family below [`FAMILIES_END`] but AF_ALG and
/// AF_VSOCK. Each rule holds one comparison, since libcontainer turns several comparisons of
/// one argument into alternatives. Each compares all 64 bits and bounds the family from above:
/// the kernel reads the family as a 32-bit int, so a rule `> 40` would also let
/// `AF_ALG | 1 << 32` through. The families above AF_VSOCK are aligned blocks, each matched by
/// a masked comparison.
fn socket_rules() -> Vec<Rule> {
    let allow = |a: Arg| Rule {
        args: vec![a],
        ..rule(&["socket"], "SCMP_ACT_ALLOW")
    };
    let mut rules = vec![
        allow(arg(0, AF_ALG, "SCMP_CMP_LT")),
        allow(arg(0, AF_ALG + 1, "SCMP_CMP_EQ")),
    ];
    let mut first = AF_VSOCK + 1;
    while first < FAMILIES_END {
        // The largest power of two that `first` is a multiple of, short of the end.
        let mut size = 1 << first.trailing_zeros();
        while first + size > FAMILIES_END {
            size /= 2;
        }
        rules.push(allow(Arg {
            index: 0,
            value: !(size - 1),
            value_two: first,
            op: "SCMP_CMP_MASKED_EQ".into(),
        }));
        first += size;
    }
    rules
}

/// crius' default profile (`RuntimeDefault`) in Docker's profile format: everything not
/// listed fails with EPERM; sockets of the kernel's crypto API (AF_ALG) and of the hypervisor
/// (AF_VSOCK), namespace creation, mounting, module loading, clock setting, keyrings,
/// `io_uring`, `userfaultfd`, `open_by_handle_at` and the like are left out unless the
/// container holds the capability that governs them. The socket refusals are a partial
/// mitigation: the 32-bit x86 ABI keeps `socketcall`, whose family a filter cannot read (it
/// sits behind a pointer), and any process may make 32-bit calls (`int 0x80`) where the kernel
/// emulates them; refusing it would take `socket()` from every 32-bit glibc program.
pub(crate) fn default_profile() -> Profile {
    const ALLOW: &str = "SCMP_ACT_ALLOW";
    let mut syscalls = vec![rule(ALLOWED, ALLOW)];
    for value in PERSONALITIES {
        syscalls.push(Rule {
            args: vec![arg(0, *value, "SCMP_CMP_EQ")],
            ..rule(&["personality"], ALLOW)
        });
    }
    syscalls.extend(socket_rules());
    syscalls.push(Rule {
        includes: Some(Filter {
            arches: vec!["amd64".into(), "x32".into(), "x86".into()],
            ..Filter::default()
        }),
        ..rule(&["arch_prctl", "modify_ldt"], ALLOW)
    });
    syscalls.push(Rule {
        args: vec![arg(0, CLONE_NAMESPACES, "SCMP_CMP_MASKED_EQ")],
        excludes: caps_filter(&["CAP_SYS_ADMIN"]),
        ..rule(&["clone"], ALLOW)
    });
    syscalls.push(Rule {
        errno_ret: Some(ENOSYS),
        excludes: caps_filter(&["CAP_SYS_ADMIN"]),
        ..rule(&["clone3"], "SCMP_ACT_ERRNO")
    });
    for (cap, names) in WITH_CAPABILITY {
        syscalls.push(Rule {
            includes: caps_filter(&[cap]),
            ..rule(names, ALLOW)
        });
    }
    let arch_map = |architecture: &str, sub: &[&str]| ArchMap {
        architecture: architecture.to_owned(),
        sub_architectures: sub.iter().map(|a| (*a).to_owned()).collect(),
    };
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(EPERM),
        arch_map: vec![
            arch_map("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            arch_map("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
        ],
        syscalls,
        ..Profile::default()
    }
}

/// The machine's architecture: the seccomp name and the Go-style name Docker profiles use in
/// `includes.arches`.
fn native_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("SCMP_ARCH_X86_64", "amd64"),
        "x86" => ("SCMP_ARCH_X86", "386"),
        "aarch64" => ("SCMP_ARCH_AARCH64", "arm64"),
        "arm" => ("SCMP_ARCH_ARM", "arm"),
        "riscv64" => ("SCMP_ARCH_RISCV64", "riscv64"),
        "s390x" => ("SCMP_ARCH_S390X", "s390x"),
        "powerpc64" => ("SCMP_ARCH_PPC64LE", "ppc64le"),
        "loongarch64" => ("SCMP_ARCH_LOONGARCH64", "loong64"),
        _ => ("SCMP_ARCH_NATIVE", ""),
    }
}

/// The running kernel's `major.minor`.
fn kernel_version() -> Option<(u32, u32)> {
    let release = nix::sys::utsname::uname().ok()?;
    parse_version(&release.release().to_string_lossy())
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Docker's `includes`/`excludes` conditions of one rule.
struct Conditions<'a> {
    caps: &'a [String],
    arch: &'static str,
    kernel: Option<(u32, u32)>,
}

impl Conditions<'_> {
    /// Whether a rule with these `includes` and `excludes` applies to the container.
    fn applies(&self, includes: Option<&Filter>, excludes: Option<&Filter>) -> bool {
        let held = |c: &String| self.caps.contains(c);
        if let Some(inc) = includes {
            if !inc.caps.iter().all(held) {
                return false;
            }
            if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == self.arch) {
                return false;
            }
            if let Some(min) = inc.min_kernel.as_deref()
                && let (Some(min), Some(have)) = (parse_version(min), self.kernel)
                && have < min
            {
                return false;
            }
        }
        if let Some(exc) = excludes
            && (exc.caps.iter().any(held) || exc.arches.iter().any(|a| a == self.arch))
        {
            return false;
        }
        true
    }
}

fn bad(path: &str, reason: impl Into<String>) -> SeccompError {
    SeccompError::BadProfile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The OCI `linux.seccomp` of a container with capabilities `caps` (`CAP_*` names), or none
/// for `Unconfined`.
pub(crate) fn linux_seccomp(
    profile: &SeccompProfile,
    caps: &[String],
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    let (path, profile) = match profile {
        SeccompProfile::Unconfined => return Ok(None),
        SeccompProfile::RuntimeDefault => ("runtime/default".to_owned(), default_profile()),
        SeccompProfile::Localhost { path, profile } => (
            path.clone(),
            serde_json::from_str(profile)
                .map_err(|e| bad(path, format!("not a seccomp profile: {e}")))?,
        ),
    };
    let (arch, go_arch) = native_arch();
    let conditions = Conditions {
        caps,
        arch: go_arch,
        kernel: kernel_version(),
    };
    translate(&path, &profile, arch, &conditions).map(Some)
}

/// Turns a Docker or OCI profile into the OCI object for this container.
fn translate(
    path: &str,
    profile: &Profile,
    arch: &str,
    conditions: &Conditions<'_>,
) -> Result<LinuxSeccomp, SeccompError> {
    let mut out = Map::new();
    if profile.default_action.is_empty() {
        return Err(bad(path, "defaultAction is missing"));
    }
    out.insert("defaultAction".into(), json!(profile.default_action));
    if let Some(errno) = profile.default_errno_ret {
        out.insert("defaultErrnoRet".into(), json!(errno));
    }
    let mut arches = profile.architectures.clone();
    for entry in profile.arch_map.iter().filter(|e| e.architecture == arch) {
        arches.push(arch.to_owned());
        arches.extend(entry.sub_architectures.iter().cloned());
    }
    arches.dedup();
    if !arches.is_empty() {
        out.insert("architectures".into(), json!(arches));
    }
    if !profile.flags.is_empty() {
        out.insert("flags".into(), json!(profile.flags));
    }
    let mut rules = Vec::new();
    for (i, rule) in profile.syscalls.iter().enumerate() {
        if !conditions.applies(rule.includes.as_ref(), rule.excludes.as_ref()) {
            continue;
        }
        let names: Vec<&str> = rule.all_names().collect();
        if names.is_empty() {
            return Err(bad(path, format!("syscalls[{i}] names no system call")));
        }
        if rule.action.is_empty() {
            return Err(bad(path, format!("syscalls[{i}].action is missing")));
        }
        let mut out_rule = json!({"names": names, "action": rule.action});
        if let Some(errno) = rule.errno_ret {
            out_rule["errnoRet"] = json!(errno);
        }
        let args: Vec<Value> = rule
            .args
            .iter()
            .map(|a| {
                // libcontainer reads a masked comparison as (mask = valueTwo, datum = value);
                // the profile formats say (mask = value, datum = valueTwo).
                let (value, two) = if a.op == "SCMP_CMP_MASKED_EQ" {
                    (a.value_two, a.value)
                } else {
                    (a.value, a.value_two)
                };
                let mut arg = json!({"index": a.index, "value": value, "op": a.op});
                if two != 0 || a.op == "SCMP_CMP_MASKED_EQ" {
                    arg["valueTwo"] = json!(two);
                }
                arg
            })
            .collect();
        if !args.is_empty() {
            out_rule["args"] = Value::Array(args);
        }
        rules.push(out_rule);
    }
    out.insert("syscalls".into(), Value::Array(rules));
    serde_json::from_value(Value::Object(out)).map_err(|e| bad(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|c| (*c).to_owned()).collect()
    }

    fn names_allowed(s: &LinuxSeccomp) -> Vec<String> {
        s.syscalls()
            .iter()
            .flatten()
            .filter(|r| {
                r.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
                    && r.args().as_ref().is_none_or(Vec::is_empty)
            })
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn default_profile_follows_capabilities() {
        let conditions = Conditions {
            caps: &caps(&["CAP_CHOWN"]),
            arch: "amd64",
            kernel: Some((6, 1)),
        };
        let plain =
            translate("d", &default_profile(), "SCMP_ARCH_X86_64", &conditions).expect("profile");
        let allowed = names_allowed(&plain);
        assert!(allowed.contains(&"read".to_owned()));
        assert!(allowed.contains(&"arch_prctl".to_owned()));
        assert!(!allowed.contains(&"unshare".to_owned()));
        assert!(!allowed.contains(&"mount".to_owned()));
        assert_eq!(
            plain.architectures().clone().expect("arches").len(),
            3,
            "x86_64 with x86 and x32"
        );
        let admin_caps = caps(&["CAP_SYS_ADMIN"]);
        let admin = Conditions {
            caps: &admin_caps,
            ..conditions
        };
        let admin =
            translate("d", &default_profile(), "SCMP_ARCH_X86_64", &admin).expect("profile");
        let allowed = names_allowed(&admin);
        assert!(allowed.contains(&"unshare".to_owned()));
        assert!(allowed.contains(&"clone".to_owned()));
    }

    /// The default profile for amd64, for a container without capabilities.
    fn amd64_default() -> oci_spec::runtime::LinuxSeccomp {
        let conditions = Conditions {
            caps: &[],
            arch: "amd64",
            kernel: None,
        };
        translate("d", &default_profile(), "SCMP_ARCH_X86_64", &conditions).expect("profile")
    }

    #[test]
    fn masked_comparisons_are_swapped_for_libcontainer() {
        let s = amd64_default();
        let clone = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone".to_owned()])
            .expect("clone rule");
        let arg = &clone.args().clone().expect("args")[0];
        assert_eq!(arg.value(), 0);
        assert_eq!(arg.value_two(), Some(CLONE_NAMESPACES));
    }

    #[test]
    fn each_socket_rule_compares_the_family_once() {
        let s = amd64_default();
        let socket: Vec<_> = s
            .syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == "socket"))
            .collect();
        assert_eq!(socket.len(), 6, "{socket:?}");
        for r in socket {
            assert_eq!(r.names(), &["socket".to_owned()]);
            let args = r.args().clone().expect("args");
            assert_eq!(args.len(), 1, "{r:?}");
            assert_eq!(args[0].index(), 0);
        }
    }

    /// A default errno no system call gives by itself.
    const REFUSED: u32 = 4000;

    /// Loads the default profile, as libcontainer does for a container without capabilities
    /// but refusing with [`REFUSED`], on a thread of its own, and returns what `probe` returns
    /// there. The filter ends with the thread.
    fn under_default_profile<T: Send + 'static>(probe: impl FnOnce() -> T + Send + 'static) -> T {
        let (arch, go_arch) = native_arch();
        let conditions = Conditions {
            caps: &[],
            arch: go_arch,
            kernel: kernel_version(),
        };
        let mut filter = translate("d", &default_profile(), arch, &conditions).expect("profile");
        filter.set_default_errno_ret(Some(REFUSED));
        std::thread::spawn(move || {
            nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
            libcontainer::seccomp::initialize_seccomp(&filter).expect("load the filter");
            probe()
        })
        .join()
        .expect("the filtered thread")
    }

    /// errno of `socket(family, SOCK_STREAM, 0)` with `family` as all 64 bits of the
    /// argument; 0 when it made a socket.
    fn socket_errno(family: u64) -> i32 {
        // SAFETY: socket(2) with plain integer arguments; the descriptor it may return is
        // closed at once.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_socket,
                family,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return nix::errno::Errno::last_raw();
        }
        if let Ok(fd) = libc::c_int::try_from(fd) {
            // SAFETY: the descriptor was just made here and nothing else holds it.
            drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        0
    }

    #[test]
    fn the_default_profile_refuses_crypto_api_and_vsock_sockets_alone() {
        let allowed: Vec<u64> = vec![0, 1, 2, 10, 16, 17, 37, 39, 41, 42, 43, 44, 45, 46, 63];
        let refused: Vec<u64> = vec![
            AF_ALG,
            AF_VSOCK,
            // The kernel reads the family as an int: the upper half of the register is
            // ignored there, and must not slip a refused family past the filter.
            AF_ALG | 1 << 32,
            AF_VSOCK | 1 << 32,
            AF_ALG | 0xffff_ffff_0000_0000,
            AF_VSOCK | 0xffff_ffff_0000_0000,
        ];
        let (allowed_errno, refused_errno) = under_default_profile(move || {
            let errno = |families: &[u64]| -> Vec<(u64, i32)> {
                families.iter().map(|f| (*f, socket_errno(*f))).collect()
            };
            (errno(&allowed), errno(&refused))
        });
        let refused_code = i32::try_from(REFUSED).expect("errno");
        for (family, errno) in allowed_errno {
            assert_ne!(errno, refused_code, "family {family} is refused");
        }
        for (family, errno) in refused_errno {
            assert_eq!(errno, refused_code, "family {family:#x} is allowed");
        }
        // Outside the filter nothing is refused with that errno.
        assert_ne!(socket_errno(AF_ALG), refused_code);
    }

    #[test]
    fn oci_and_docker_rules_translate() {
        let conditions = Conditions {
            caps: &[],
            arch: "amd64",
            kernel: Some((6, 1)),
        };
        let profile: Profile = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28},
                {"name": "chmod", "action": "SCMP_ACT_ERRNO"},
                {"names": ["future"], "action": "SCMP_ACT_ERRNO",
                 "includes": {"minKernel": "9.0"}},
            ],
        }))
        .expect("profile");
        let s = translate("p", &profile, "SCMP_ARCH_X86_64", &conditions).expect("profile");
        let rules = s.syscalls().clone().expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].errno_ret(), Some(28));
        assert_eq!(rules[1].names(), &["chmod".to_owned()]);
        let err = translate(
            "/p.json",
            &Profile {
                default_action: "SCMP_ACT_NOPE".into(),
                ..Profile::default()
            },
            "SCMP_ARCH_X86_64",
            &conditions,
        )
        .expect_err("bad action");
        assert!(err.to_string().contains("/p.json"), "{err}");
    }
}
