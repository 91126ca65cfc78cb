//! `criusd monitor --pod-dir DIR --exec ID -- CMD...`: runs a command inside a running container,
//! as a fresh single-threaded process criusd starts for each ExecSync. It joins the container's
//! cgroup v1 directories (the command is born in its v2 one), then the pod's user namespace FIRST
//! (so that every later step, and the command, has only the powers of the pod's root, never the
//! host's), then the container's mount, network, IPC, UTS and PID namespaces; takes the first
//! process's identity (uid, gid, groups), bounding and effective capabilities and no_new_privs;
//! forks into the PID namespace (the child, born in the container's cgroups, joins its cgroup
//! namespace) and execs with the environment, working directory and seccomp filter of the
//! container's runtime spec (`config.json`, as runc and containerd do; never the first process's
//! live `/proc/PID/environ`, which the container can rewrite). Its exit code is the command's
//! (128 + signal when killed).
//! With a terminal on stdin (the streaming Exec with tty) the command runs instead on a new
//! pty of the container's own devpts, as its controlling terminal, and this helper copies
//! bytes and window sizes between its terminal (made raw) and that pty.
//!
//! The helper is not dumpable from the start of exec mode until the command's exec (see
//! [`forbid_dumping`]): between its fork and its exec the child is a process of the
//! container's PID namespace that runs the host's criusd binary, as host root in a pod without
//! a user namespace, before its seccomp filter is installed. It starts with an empty
//! environment (but for the pod's open-files limit, which it takes out first) and overwrites
//! its command line, which names the host's pod directory.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};

use crate::capabilities;

/// Exit code when the exec could not be set up (the message is on stderr).
const SETUP_FAILED: u8 = 126;

/// Why an exec could not be set up or its command not be started.
#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("no command")]
    NoCommand,
    #[error(transparent)]
    State(crate::Error),
    #[error("container {id} is not known to its pod monitor")]
    UnknownContainer { id: String },
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("the identity of container {id} was not recorded")]
    NoIdentity { id: String },
    #[error("cannot read {path}: {source}")]
    Config {
        path: PathBuf,
        source: oci_spec::OciSpecError,
    },
    #[error("cannot read the container's status: {source}")]
    Status { source: std::io::Error },
    #[error("cannot read its own status: {source}")]
    OwnStatus { source: std::io::Error },
    #[error("cannot open /proc/{pid}/ns/{kind}: {source}")]
    OpenNamespace {
        pid: i32,
        kind: &'static str,
        source: std::io::Error,
    },
    #[error("cannot join the container's cgroup {}: {reason}", dir.display())]
    JoinCgroup { dir: PathBuf, reason: String },
    #[error("cannot join the pod's user namespace: {source}")]
    JoinUserNamespace { source: nix::Error },
    #[error("cannot join the container's {kind} namespace: {source}")]
    JoinNamespace {
        kind: &'static str,
        source: nix::Error,
    },
    #[error(transparent)]
    PipeOwner(#[from] crate::containers::PipeOwnerError),
    #[error("cannot enter the working directory {path}: {source}")]
    WorkingDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the container's {path}: {source}")]
    OpenPtmx {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("{path} in the container is not a pty multiplexer (a character device 5:2 on devpts)")]
    NotPtmx { path: &'static str },
    #[error("cannot handle {signal}: {source}")]
    Signal {
        signal: nix::sys::signal::Signal,
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("setresgid({gid}): {source}")]
    Setresgid { gid: u32, source: nix::Error },
    #[error("setresuid({uid}): {source}")]
    Setresuid { uid: u32, source: nix::Error },
    #[error(transparent)]
    Capabilities(#[from] capabilities::SetError),
    #[error("cannot ask for AppArmor profile {profile:?} at exec: {source}")]
    AppArmor {
        profile: String,
        source: std::io::Error,
    },
    #[error("cannot install the container's seccomp filter: {source}")]
    Seccomp {
        source: libcontainer::seccomp::SeccompError,
    },
    #[error("{program:?} not found in the container's PATH")]
    NotFound { program: std::ffi::OsString },
    #[error("bad program path")]
    ProgramPath { source: std::ffi::NulError },
    #[error("cannot exec {program}: {source}")]
    Exec {
        program: PathBuf,
        source: nix::Error,
    },
}

/// Maps a failed system call of step `what` to an [`ExecError`].
fn sys(what: &'static str) -> impl FnOnce(nix::Error) -> ExecError {
    move |source| ExecError::Sys { what, source }
}

/// The failure of step `what`, from errno.
fn last_error(what: &'static str) -> ExecError {
    ExecError::Sys {
        what,
        source: nix::errno::Errno::last(),
    }
}

/// Runs the exec and returns the exit code.
pub(crate) fn run(pod_dir: &Path, id: &str, cmd: &[std::ffi::OsString]) -> u8 {
    if let Err(e) = forbid_dumping() {
        eprintln!("crius exec: {e}");
        return SETUP_FAILED;
    }
    // `/proc/PID/cmdline` names the host's pod directory; the arguments were copied before.
    crate::proctitle::overwrite(b"crius-exec", false);
    match setup_and_run(pod_dir, id, cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crius exec: {e}");
            SETUP_FAILED
        }
    }
}

/// Makes this process not dumpable (`prctl(PR_SET_DUMPABLE, 0)`).
///
/// A process that is not dumpable fails the kernel's ptrace access check for every caller
/// without CAP_SYS_PTRACE in the user namespace of its memory (here the host's: the helper's
/// memory comes from criusd's exec on the host), so the container can neither ptrace the
/// helper nor open its `/proc/PID/exe` (the host's criusd binary, which only ETXTBSY would
/// otherwise keep from being opened for writing), `environ`, `mem`, `fd/`, `root` or `cwd`;
/// and this holds in pods with a user namespace too, where the container's root may hold
/// CAP_SYS_PTRACE in the pod's. It is set first thing in exec mode, long before the helper
/// enters the container's PID namespace, and the fork after that inherits it. A change of
/// ids or a capability set that is not a subset of the old one resets it to the
/// `fs.suid_dumpable` sysctl (0 or 2 are both "not dumpable" to ptrace; 1, the kernel's
/// insecure debug setting, is not), so it is set again after each. After the command's
/// execve the kernel decides itself: dumpable when the command is readable and gained no
/// privilege, its memory then belonging to the container's user namespace.
///
/// runc's alternative, re-executing itself from a sealed memfd copy of its binary, also
/// keeps the host binary unwritable, but would copy the whole criusd binary on every exec,
/// and kubelet runs an exec probe every few seconds per container.
fn forbid_dumping() -> Result<(), ExecError> {
    nix::sys::prctl::set_dumpable(false).map_err(sys("cannot become non-dumpable"))
}

struct Target {
    pid: i32,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    cgroup_dirs: Vec<PathBuf>,
}

fn target(pod_dir: &Path, id: &str) -> Result<Target, ExecError> {
    let state = crate::read_state(pod_dir).map_err(ExecError::State)?;
    let c = state
        .containers
        .get(id)
        .ok_or_else(|| ExecError::UnknownContainer { id: id.to_owned() })?;
    if c.exit.is_some()
        || c.started_at_ns.is_none()
        || !crius_proto::process_is(c.pid, c.start_time)
    {
        return Err(ExecError::NotRunning { id: id.to_owned() });
    }
    let user = c
        .user
        .clone()
        .ok_or_else(|| ExecError::NoIdentity { id: id.to_owned() })?;
    Ok(Target {
        pid: c.pid,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        cgroup_dirs: c.cgroup_dirs.clone(),
    })
}

/// The real id of a `Uid:` or `Gid:` line of `/proc/PID/status`.
fn status_id(status: &str, field: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A `CapXxx:` mask of `/proc/PID/status`.
fn cap_mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn open_ns(pid: i32, kind: &'static str) -> Result<OwnedFd, ExecError> {
    std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
        .map(OwnedFd::from)
        .map_err(|source| ExecError::OpenNamespace { pid, kind, source })
}

fn same_ns(pid: i32, kind: &str) -> bool {
    let mine = std::fs::metadata(format!("/proc/self/ns/{kind}"));
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{kind}"));
    matches!((mine, theirs), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}

/// Takes the `oom_score_adj` of the container's first process, so the command (and whatever it
/// leaves running) is as killable as the container's own processes, not as protected as
/// criusd. Raising it always works; a value below this helper's needs CAP_SYS_RESOURCE, and
/// without it the helper keeps its own (the lowest it may have). Silent: stderr is the
/// command's.
fn take_oom_score_adj(pid: i32) {
    let Ok(theirs) = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")) else {
        return;
    };
    let _ = std::fs::write("/proc/self/oom_score_adj", theirs.trim());
}

fn setup_and_run(pod_dir: &Path, id: &str, cmd: &[std::ffi::OsString]) -> Result<u8, ExecError> {
    if cmd.is_empty() {
        return Err(ExecError::NoCommand);
    }
    let t = target(pod_dir, id)?;
    take_oom_score_adj(t.pid);
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid))
        .map_err(|source| ExecError::Status { source })?;
    let bounding = cap_mask(&status, "CapBnd:");
    let effective = cap_mask(&status, "CapEff:");
    let no_new_privs = status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .is_some_and(|v| v.trim() == "1");
    let ProcessConfig {
        env,
        cwd,
        seccomp,
        apparmor,
    } = process_config(pod_dir, id)?;
    // A terminal on stdin (the streaming Exec with tty): this helper leads a session with it,
    // so criusd's resizes reach it as SIGWINCH, and makes it raw, so the bytes pass through
    // to the container's own terminal unchanged.
    let tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    if tty {
        take_terminal()?;
    }

    // Open everything while still the host's root.
    // The cgroup namespace is the command's to join, once born in the container's cgroups: a
    // process in that namespace cannot create a child in a cgroup while itself outside the
    // namespace's root, and this helper stays outside.
    let kinds = ["mnt", "net", "ipc", "uts", "pid"];
    let userns = if same_ns(t.pid, "user") {
        None
    } else {
        Some(open_ns(t.pid, "user")?)
    };
    let mut others = Vec::new();
    for kind in kinds {
        if !same_ns(t.pid, kind) {
            others.push((kind, open_ns(t.pid, kind)?));
        }
    }
    // The pty is opened through the host's /proc ([`open_ptmx`]), and so is the AppArmor
    // request ([`confine_at_exec`]).
    let host_proc = if tty || apparmor.is_some() {
        Some(
            nix::fcntl::open(
                "/proc",
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(sys("cannot open /proc"))?,
        )
    } else {
        None
    };
    let cgroup_ns = if same_ns(t.pid, "cgroup") {
        None
    } else {
        Some(open_ns(t.pid, "cgroup")?)
    };
    // The command may reopen its own stdio (`echo x > /dev/stderr`): pipes criusd made belong
    // to host root; give them to the container process's host ids while still host root.
    let host_uid = status_id(&status, "Uid:");
    let host_gid = status_id(&status, "Gid:");
    if let (Some(uid), Some(gid)) = (host_uid, host_gid) {
        crate::containers::give_pipes([0, 1, 2], uid, gid)?;
    }
    // The v1 directories are joined now, as a thread; the command is born in the v2 one
    // ([`fork_command`]). The ones that keep the container's device rules (its v2 directory,
    // a v1 devices directory) must be joined.
    let mut v2 = None;
    for dir in &t.cgroup_dirs {
        let must = |reason: String| ExecError::JoinCgroup {
            dir: dir.clone(),
            reason,
        };
        match crate::cgroup::open_dir(dir) {
            Ok((fd, true)) => v2 = Some(fd),
            Ok((_, false)) => {
                if let Err(e) = crate::cgroup::enter_self(std::slice::from_ref(dir))
                    && dir.join("devices.list").exists()
                {
                    return Err(must(e.to_string()));
                }
            }
            // A hierarchy the container has no directory in is skipped, unless the directory
            // would keep device rules (a v2 one, a v1 devices one).
            Err(e) => {
                let parent = dir.parent().unwrap_or(dir);
                if parent.join("cgroup.controllers").exists()
                    || parent.join("devices.list").exists()
                {
                    return Err(must(e.to_string()));
                }
            }
        }
    }
    if let Some(user) = &userns {
        nix::sched::setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|source| ExecError::JoinUserNamespace { source })?;
    }
    for (kind, fd) in &others {
        nix::sched::setns(fd.as_fd(), CloneFlags::empty())
            .map_err(|source| ExecError::JoinNamespace { kind, source })?;
    }
    // Joining a user namespace commits new credentials, which may have reset the flag.
    forbid_dumping()?;
    // Joining the mount namespace put us at its root; go to the container's working
    // directory. One the pod's root may not enter (a volume only the container's user can
    // read) is entered again after the change of ids, as runc does.
    let cwd_after_ids = match std::env::set_current_dir(&cwd) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(cwd.as_path()),
        Err(source) => {
            return Err(ExecError::WorkingDirectory { path: cwd, source });
        }
    };
    let console = match &host_proc {
        Some(proc) if tty => Some(Console::open(t.uid, proc)?),
        _ => None,
    };

    // The child learns that this helper is gone (killed at ExecSync's timeout) when the write
    // end of this pipe closes: it sets its parent-death signal only after its identity change
    // (which clears it), then checks the pipe, so the command never outlives the helper.
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("cannot make a pipe"))?;
    // SIGTERM (criusd's ExecSync timeout) interrupts the wait below: the command is killed
    // and reaped before this helper exits. No SA_RESTART, so waitpid returns EINTR.
    let on_term = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(note_sigterm),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGTERM, &on_term) }.map_err(
        |source| ExecError::Signal {
            signal: nix::sys::signal::Signal::SIGTERM,
            source,
        },
    )?;
    match fork_command(v2.as_ref()) {
        Err(e) => Err(sys("cannot fork")(e)),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(alive_w);
            if let Some(ns) = &cgroup_ns
                && let Err(source) = nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWCGROUP)
            {
                eprintln!(
                    "crius exec: {}",
                    ExecError::JoinNamespace {
                        kind: "cgroup",
                        source
                    }
                );
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(i32::from(SETUP_FAILED)) }
            }
            if let Some(console) = &console
                && let Err(e) = console.take_stdio()
            {
                eprintln!("crius exec: {e}");
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(127) }
            }
            let e = child(
                &t,
                Privileges {
                    bounding,
                    effective,
                    no_new_privs,
                    seccomp: seccomp.as_ref(),
                    apparmor: host_proc.as_ref().zip(apparmor.as_deref()),
                },
                &env,
                cwd_after_ids,
                cmd,
                &alive_r,
            );
            eprintln!("crius exec: {e}");
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(alive_r);
            // The write end stays open until this helper exits.
            let _alive = alive_w;
            if let Some(console) = console {
                return relay(console.master, child);
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => {
                        return Ok(u8::try_from(code).unwrap_or(255));
                    }
                    Ok(WaitStatus::Signaled(_, sig, _)) => {
                        return Ok(u8::try_from(128 + sig as i32).unwrap_or(255));
                    }
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {
                        if TERMINATED.load(std::sync::atomic::Ordering::SeqCst) {
                            let _ =
                                nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        }
                        continue;
                    }
                    Err(e) => return Err(sys("cannot wait for the command")(e)),
                }
            }
        }
    }
}

/// Forks the command's process, born in the container's cgroup v2 directory open as `v2`
/// (clone3 `CLONE_INTO_CGROUP`: no move, so no wait for the cgroup migration lock). Where the
/// kernel or a seccomp filter has no clone3 with it, this helper moves there first (best effort,
/// like the v1 joins); any other refusal (the container at its `pids.max`, its cgroup gone) is
/// the answer.
fn fork_command(v2: Option<&OwnedFd>) -> Result<nix::unistd::ForkResult, nix::errno::Errno> {
    if let Some(dir) = v2 {
        match crate::cgroup::clone_into(CloneFlags::empty(), dir) {
            Ok(0) => return Ok(nix::unistd::ForkResult::Child),
            Ok(ret) => {
                return Ok(nix::unistd::ForkResult::Parent {
                    child: crate::cloned_pid(ret),
                });
            }
            // EPERM: a seccomp filter around criusd that refuses clone3. The command must not
            // run outside the container's cgroup (its device rules, its limits).
            Err(e) if crate::cgroup::clone_into_missing(e) || e == nix::errno::Errno::EPERM => {
                if crate::cgroup::enter_self_at(dir).is_err() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
    // SAFETY: this helper process is single-threaded.
    unsafe { nix::unistd::fork() }
}

/// Set by SIGTERM: kill the command, reap it, then exit.
static TERMINATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_sigterm(_: libc::c_int) {
    TERMINATED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes the terminal on stdin this helper's controlling terminal (a new session) and puts it
/// in raw mode.
fn take_terminal() -> Result<(), ExecError> {
    nix::unistd::setsid().map_err(sys("setsid"))?;
    // SAFETY: TIOCSCTTY on fd 0 with argument 0 (do not steal); no memory is passed.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(last_error("cannot take the terminal"));
    }
    // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
    let mut mode: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr, cfmakeraw and tcsetattr read and write the termios, which lives
    // across the calls.
    let ret = unsafe {
        if libc::tcgetattr(0, &mut mode) == 0 {
            libc::cfmakeraw(&mut mode);
            libc::tcsetattr(0, libc::TCSANOW, &mode)
        } else {
            -1
        }
    };
    if ret < 0 {
        return Err(last_error("cannot make the terminal raw"));
    }
    Ok(())
}

/// Opens the container's pty multiplexer at `path` (a new pty's master), once it is known to
/// be one: a character device 5:2 on a devpts file system. The container's root owns its
/// `/dev` and can put any node or symlink there; opening a device node acts on that device,
/// and this helper, host root in a pod without a user namespace and outside the container's
/// cgroup v2 device rules, must not do that for it. The path is pinned with `O_PATH` (which
/// opens nothing) and without following `/proc` magic links (which would lead, in a pod
/// sharing the host's PID namespace, to the host's or another container's devpts), checked,
/// and that very file is then opened through the host's `/proc/self/fd`.
fn open_ptmx(path: &'static str, host_proc: &OwnedFd) -> Result<OwnedFd, ExecError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::os::unix::fs::FileTypeExt;
    let failed = |source| ExecError::OpenPtmx { path, source };
    let pinned = std::fs::File::from(
        nix::fcntl::openat2(
            nix::fcntl::AT_FDCWD,
            path,
            OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
        .map_err(|errno| failed(std::io::Error::from(errno)))?,
    );
    let meta = pinned.metadata().map_err(failed)?;
    let on_devpts = nix::sys::statfs::fstatfs(&pinned)
        .is_ok_and(|fs| fs.filesystem_type().0 == libc::DEVPTS_SUPER_MAGIC);
    let rdev = meta.rdev();
    if !meta.file_type().is_char_device()
        || libc::major(rdev) != 5
        || libc::minor(rdev) != 2
        || !on_devpts
    {
        return Err(ExecError::NotPtmx { path });
    }
    let reopen = format!("self/fd/{}", pinned.as_raw_fd());
    nix::fcntl::openat(
        host_proc,
        reopen.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| failed(std::io::Error::from(errno)))
}

/// A pseudo-terminal of the container's own devpts: the command runs on the slave, this
/// helper copies between its stdio and the master.
struct Console {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Console {
    /// Opens a new pty pair through the container's `/dev/ptmx` (this helper is in the
    /// container's mount namespace) and gives the slave to `uid`. `host_proc` is the host's
    /// `/proc`, opened before the helper left the host's mount namespace.
    fn open(uid: u32, host_proc: &OwnedFd) -> Result<Console, ExecError> {
        let master =
            open_ptmx("/dev/ptmx", host_proc).or_else(|_| open_ptmx("/dev/pts/ptmx", host_proc))?;
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads one int from the pointer, which lives across the call.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
            return Err(last_error("cannot unlock the container's terminal"));
        }
        let slave = crate::containers::pty_peer(&master)
            .map_err(sys("cannot open the container's terminal"))?;
        // Best effort: the command's user owns its terminal, as on a login.
        // SAFETY: fchown of an open descriptor; gid -1 leaves the group.
        unsafe { libc::fchown(slave.as_raw_fd(), uid, libc::gid_t::MAX) };
        // The command starts with the size criusd set on this helper's terminal.
        copy_size(&master);
        Ok(Console { master, slave })
    }

    /// In the forked child: the slave becomes stdin, stdout and stderr.
    fn take_stdio(&self) -> Result<(), ExecError> {
        for fd in 0..3 {
            // SAFETY: dup2 of an open descriptor onto a standard one.
            if unsafe { libc::dup2(self.slave.as_raw_fd(), fd) } < 0 {
                return Err(last_error("cannot give the terminal to the command"));
            }
        }
        Ok(())
    }
}

/// Copies the window size of this helper's terminal (stdin) to the container's terminal.
fn copy_size(master: &OwnedFd) {
    // SAFETY: an all-zero winsize is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes and TIOCSWINSZ reads one winsize, which lives across the calls.
    unsafe {
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Set by SIGWINCH: the window size of this helper's terminal changed.
static RESIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_sigwinch(_: libc::c_int) {
    RESIZED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Only interrupts the wait (SIGCHLD).
extern "C" fn note_nothing(_: libc::c_int) {}

/// Writes all of `data` to `fd` (blocking); false when it cannot.
fn write_all(fd: libc::c_int, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        // SAFETY: write from a live buffer of the given length.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            if nix::errno::Errno::last() == nix::errno::Errno::EINTR {
                continue;
            }
            return false;
        }
        data = &data[n.unsigned_abs()..];
    }
    true
}

/// Reads from `fd` into `buf`: `Some(n)` with data, `Some(0)` at the end (or EIO), `None`
/// when nothing is there now.
fn read_some(fd: libc::c_int, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: read into a live buffer of the given length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Some(n.unsigned_abs());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR => None,
        _ => Some(0),
    }
}

/// The exit code of a finished command, `None` while it runs.
fn exit_code(child: nix::unistd::Pid) -> Result<Option<u8>, ExecError> {
    match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(u8::try_from(code).unwrap_or(255))),
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            Ok(Some(u8::try_from(128 + sig as i32).unwrap_or(255)))
        }
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(e) => Err(sys("cannot wait for the command")(e)),
    }
}

/// Copies this helper's terminal input to the container's terminal and the container's
/// terminal output to this helper's terminal, and window sizes along, until the command
/// exits; returns its exit code. SIGTERM or the loss of this helper's terminal (SIGHUP)
/// kills the command.
fn relay(master: OwnedFd, child: nix::unistd::Pid) -> Result<u8, ExecError> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let handlers: [(Signal, extern "C" fn(libc::c_int)); 3] = [
        (Signal::SIGWINCH, note_sigwinch),
        (Signal::SIGCHLD, note_nothing),
        (Signal::SIGHUP, note_sigterm),
    ];
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    for (sig, handler) in handlers {
        blocked.add(sig);
        // No SA_RESTART: a signal interrupts the wait below.
        let action = SigAction::new(
            SigHandler::Handler(handler),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handlers only store to atomics, or do nothing.
        unsafe { nix::sys::signal::sigaction(sig, &action) }.map_err(|source| {
            ExecError::Signal {
                signal: sig,
                source,
            }
        })?;
    }
    // The signals arrive only inside ppoll, so none is lost between a check and the wait.
    let mut waiting = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut waiting))
        .map_err(sys("cannot block signals"))?;
    let m = master.as_raw_fd();
    // SAFETY: fcntl on an open descriptor.
    unsafe {
        libc::fcntl(
            m,
            libc::F_SETFL,
            libc::fcntl(m, libc::F_GETFL) | libc::O_NONBLOCK,
        )
    };
    let mut buf = vec![0u8; 16 << 10];
    let mut input: Vec<u8> = Vec::new();
    let (mut stdin_open, mut master_open, mut stdout_open) = (true, true, true);
    let output = |data: &[u8], open: &mut bool| {
        if *open && !write_all(1, data) {
            *open = false;
        }
    };
    loop {
        if TERMINATED.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        }
        if RESIZED.swap(false, std::sync::atomic::Ordering::SeqCst) {
            copy_size(&master);
        }
        if let Some(code) = exit_code(child)? {
            // What the command wrote last (bounded: something it left behind may still write).
            let mut left = 1usize << 20;
            while master_open && left > 0 {
                match read_some(m, &mut buf) {
                    Some(0) | None => break,
                    Some(n) => {
                        output(&buf[..n], &mut stdout_open);
                        left = left.saturating_sub(n);
                    }
                }
            }
            return Ok(code);
        }
        let mut fds = [
            libc::pollfd {
                fd: if stdin_open && input.is_empty() {
                    0
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open { m } else { -1 },
                events: libc::POLLIN | if input.is_empty() { 0 } else { libc::POLLOUT },
                revents: 0,
            },
        ];
        // SAFETY: ppoll over a live array of two pollfds, no timeout, with the mask from
        // before the block (so the handled signals interrupt it).
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                2,
                std::ptr::null(),
                waiting.as_ref() as *const libc::sigset_t,
            )
        };
        if ready < 0 {
            match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => continue,
                e => return Err(sys("cannot wait for the terminals")(e)),
            }
        }
        if fds[0].revents != 0 {
            match read_some(0, &mut buf) {
                Some(0) => stdin_open = false,
                Some(n) => input.extend_from_slice(&buf[..n]),
                None => {}
            }
        }
        if fds[1].revents & libc::POLLOUT != 0 && !input.is_empty() {
            // SAFETY: write from a live buffer of the given length.
            let n = unsafe { libc::write(m, input.as_ptr().cast(), input.len()) };
            if n >= 0 {
                input.drain(..n.unsigned_abs());
            } else if nix::errno::Errno::last() != nix::errno::Errno::EAGAIN {
                input.clear();
                stdin_open = false;
            }
        }
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_some(m, &mut buf) {
                Some(0) => master_open = false,
                Some(n) => output(&buf[..n], &mut stdout_open),
                None if fds[1].revents & libc::POLLIN == 0 => master_open = false,
                None => {}
            }
        }
    }
}

/// What an exec takes from the container's runtime spec.
struct ProcessConfig {
    /// `process.env`.
    env: Vec<CString>,
    /// `process.cwd`.
    cwd: PathBuf,
    /// `linux.seccomp`.
    seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// `process.apparmorProfile`.
    apparmor: Option<String>,
}

/// The environment, working directory, seccomp filter and AppArmor profile of container `id`:
/// those of the
/// runtime spec crius wrote at create (`<container dir>/config.json`, from which libcontainer
/// started the first process). The first process's `/proc/PID/environ` and `cwd` are its own
/// to change at run time, and an exec must not inherit what it planted there (`LD_PRELOAD`).
fn process_config(pod_dir: &Path, id: &str) -> Result<ProcessConfig, ExecError> {
    let path = pod_dir
        .join(crius_proto::CONTAINERS_DIR)
        .join(id)
        .join("config.json");
    let spec = oci_spec::runtime::Spec::load(&path)
        .map_err(|source| ExecError::Config { path, source })?;
    let process = spec.process().as_ref();
    let env = process
        .and_then(|p| p.env().as_ref())
        .into_iter()
        .flatten()
        .filter_map(|e| CString::new(e.as_bytes()).ok())
        .collect();
    let cwd = process
        .map(|p| p.cwd().clone())
        .filter(|c| c.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(ProcessConfig {
        env,
        cwd,
        seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
        apparmor: process
            .and_then(|p| p.apparmor_profile().clone())
            .filter(|p| !p.is_empty()),
    })
}

/// This process's permitted capabilities.
fn permitted_caps() -> Result<u64, ExecError> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .map_err(|source| ExecError::OwnStatus { source })?;
    Ok(cap_mask(&status, "CapPrm:"))
}

/// What the exec child takes from the container besides its identity.
struct Privileges<'a> {
    /// The bounding set.
    bounding: u64,
    /// The effective (and permitted) set of root.
    effective: u64,
    /// no_new_privs.
    no_new_privs: bool,
    /// The seccomp filter.
    seccomp: Option<&'a oci_spec::runtime::LinuxSeccomp>,
    /// The host's `/proc` and the AppArmor profile the command runs under.
    apparmor: Option<(&'a OwnedFd, &'a str)>,
}

/// Asks the kernel to run the command under AppArmor `profile` from its exec on, as the
/// container's first process does, and reads the request back. It goes through the host's
/// `/proc` (`proc`, opened before the container's mount namespace was joined): the
/// container's own `/proc` is the pod's to replace, and a file planted there would take the
/// request and leave the command unconfined.
fn confine_at_exec(proc: &OwnedFd, profile: &str) -> Result<(), ExecError> {
    use std::io::{Read, Write};
    let failed = |source| ExecError::AppArmor {
        profile: profile.to_owned(),
        source,
    };
    let open = |flags: nix::fcntl::OFlag| {
        // The LSM's own directory (Linux 5.8 and later), else the shared one.
        ["thread-self/attr/apparmor/exec", "thread-self/attr/exec"]
            .into_iter()
            .map(|path| {
                nix::fcntl::openat(
                    proc,
                    path,
                    flags | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
            })
            .find_map(Result::ok)
            .map(std::fs::File::from)
            .ok_or_else(|| failed(std::io::Error::from(nix::errno::Errno::last())))
    };
    open(nix::fcntl::OFlag::O_WRONLY)?
        .write_all(format!("exec {profile}").as_bytes())
        .map_err(failed)?;
    let mut pending = String::new();
    open(nix::fcntl::OFlag::O_RDONLY)?
        .read_to_string(&mut pending)
        .map_err(failed)?;
    // `NAME (MODE)`.
    if pending
        .trim_end_matches(['\n', '\0'])
        .rsplit_once(" (")
        .map(|(name, _)| name)
        != Some(profile)
    {
        return Err(failed(std::io::Error::other(format!(
            "the kernel holds {:?} for the exec instead",
            pending.trim_end_matches(['\n', '\0'])
        ))));
    }
    Ok(())
}

fn install_seccomp(filter: &oci_spec::runtime::LinuxSeccomp) -> Result<(), ExecError> {
    libcontainer::seccomp::initialize_seccomp(filter)
        .map(drop)
        .map_err(|source| ExecError::Seccomp { source })
}

/// In the forked child: identity, capabilities, then exec. Returns only on failure.
fn child(
    t: &Target,
    privileges: Privileges<'_>,
    env: &[CString],
    cwd_after_ids: Option<&Path>,
    cmd: &[std::ffi::OsString],
    alive: &OwnedFd,
) -> ExecError {
    // A terminal on stdin (the streaming Exec with tty, the container's own pty): the command
    // leads its own session with it as controlling terminal, so ^C and window-size changes
    // reach it, not the helper.
    if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        if let Err(e) = nix::unistd::setsid() {
            return sys("setsid")(e);
        }
        // SAFETY: TIOCSCTTY on fd 0 with argument 0 (do not steal); no memory is passed.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return last_error("cannot take the terminal");
        }
    }
    let Privileges {
        bounding,
        effective,
        no_new_privs,
        seccomp,
        apparmor,
    } = privileges;
    // As for the first process: without no_new_privs the filter goes in while the process
    // still holds CAP_SYS_ADMIN (after the change of ids, before the capability drop); with it,
    // just before exec.
    let early_seccomp = seccomp.filter(|_| !no_new_privs);
    // The permitted set survives the change to a uid other than 0: the early filter needs
    // CAP_SYS_ADMIN, and until the flag is cleared again below a process of that uid without
    // CAP_SYS_PTRACE fails ptrace's capability check even where `fs.suid_dumpable` = 1 made
    // this one dumpable.
    if let Err(e) = nix::sys::prctl::set_keepcaps(true) {
        return sys("cannot keep capabilities")(e);
    }
    capabilities::drop_bounding_except(bounding);
    let groups: Vec<nix::unistd::Gid> = t
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        return sys("setgroups")(e);
    }
    let gid = nix::unistd::Gid::from_raw(t.gid);
    if let Err(source) = nix::unistd::setresgid(gid, gid, gid) {
        return ExecError::Setresgid { gid: t.gid, source };
    }
    let uid = nix::unistd::Uid::from_raw(t.uid);
    if let Err(source) = nix::unistd::setresuid(uid, uid, uid) {
        return ExecError::Setresuid { uid: t.uid, source };
    }
    // The change of ids reset the flag to `fs.suid_dumpable`.
    if let Err(e) = forbid_dumping() {
        return e;
    }
    // Before any seccomp filter, which could make the request's calls fail in ways that look
    // like success (an errno of 0).
    if let Some((proc, profile)) = apparmor
        && let Err(e) = confine_at_exec(proc, profile)
    {
        return e;
    }
    if let Some(cwd) = cwd_after_ids
        && let Err(source) = std::env::set_current_dir(cwd)
    {
        return ExecError::WorkingDirectory {
            path: cwd.to_owned(),
            source,
        };
    }
    if let Some(filter) = early_seccomp {
        // A change to a uid other than 0 cleared the effective set (the permitted one was
        // kept): raise it again for the install.
        if let Err(e) =
            permitted_caps().and_then(|mask| capabilities::set(mask).map_err(ExecError::from))
        {
            return e;
        }
        if let Err(e) = install_seccomp(filter) {
            return e;
        }
    }
    if let Err(e) = nix::sys::prctl::set_keepcaps(false) {
        return sys("cannot reset keep-capabilities")(e);
    }
    // Whatever the uid, only the container's capabilities remain (a uid other than 0 has none,
    // as the first process had none after its exec).
    if let Err(e) = capabilities::set(if t.uid == 0 { effective } else { 0 }) {
        return e.into();
    }
    // The last change of credentials: the flag holds until the exec.
    if let Err(e) = forbid_dumping() {
        return e;
    }
    if no_new_privs && let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return sys("no_new_privs")(e);
    }
    // After setresuid/capset, which clear the parent-death signal.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        return sys("cannot set the parent-death signal")(e);
    }
    let mut fds = [nix::poll::PollFd::new(
        alive.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap_or(0) > 0 {
        // The helper died before the parent-death signal was set.
        // SAFETY: leaving the forked child at once.
        unsafe { libc::_exit(137) }
    }
    let Some(program) = find_program(&cmd[0], env) else {
        return ExecError::NotFound {
            program: cmd[0].clone(),
        };
    };
    let path = match CString::new(program.as_os_str().as_bytes()) {
        Ok(path) => path,
        Err(source) => return ExecError::ProgramPath { source },
    };
    let argv: Vec<CString> = cmd
        .iter()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    if no_new_privs
        && let Some(filter) = seccomp
        && let Err(e) = install_seccomp(filter)
    {
        return e;
    }
    crate::executor::reset_signals();
    match nix::unistd::execve(&path, &argv, env) {
        Err(source) => ExecError::Exec { program, source },
        Ok(never) => match never {},
    }
}

fn find_program(arg0: &std::ffi::OsStr, env: &[CString]) -> Option<PathBuf> {
    if arg0.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(|b| *b == b':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(std::ffi::OsStr::from_bytes(d)).join(arg0))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
