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
/// `AF_VSOCK`: sockets of this family reach the host's hypervisor side.
const AF_VSOCK: u64 = 40;

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

/// crius' default profile (`RuntimeDefault`) in Docker's profile format: everything not
/// listed fails with EPERM; namespace creation, mounting, module loading, clock setting,
/// keyrings, `io_uring`, `userfaultfd`, `open_by_handle_at` and the like are left out unless the
/// container holds the capability that governs them.
pub(crate) fn default_profile() -> Profile {
    const ALLOW: &str = "SCMP_ACT_ALLOW";
    let mut syscalls = vec![rule(ALLOWED, ALLOW)];
    for value in PERSONALITIES {
        syscalls.push(Rule {
            args: vec![arg(0, *value, "SCMP_CMP_EQ")],
            ..rule(&["personality"], ALLOW)
        });
    }
    syscalls.push(Rule {
        args: vec![arg(0, AF_VSOCK, "SCMP_CMP_NE")],
        ..rule(&["socket"], ALLOW)
    });
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

    #[test]
    fn masked_comparisons_are_swapped_for_libcontainer() {
        let conditions = Conditions {
            caps: &[],
            arch: "amd64",
            kernel: None,
        };
        let s =
            translate("d", &default_profile(), "SCMP_ARCH_X86_64", &conditions).expect("profile");
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
