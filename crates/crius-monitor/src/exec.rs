//! `criusd monitor --pod-dir DIR --exec ID -- CMD...`: runs a command inside a running
//! container, as a fresh single-threaded process criusd starts for each ExecSync. It joins the
//! container's cgroups, then the pod's user namespace FIRST (so that every later step, and the
//! command, has only the powers of the pod's root, never the host's), then the container's
//! mount, network, IPC, UTS and PID namespaces; takes the first process's identity (uid, gid,
//! groups), bounding and effective capabilities, no_new_privs and environment; forks into the
//! PID namespace and execs. Its exit code is the command's (128 + signal when killed).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};

/// Exit code when the exec could not be set up (the message is on stderr).
const SETUP_FAILED: u8 = 126;

/// Runs the exec and returns the exit code.
pub(crate) fn run(pod_dir: &Path, id: &str, cmd: &[std::ffi::OsString]) -> u8 {
    match setup_and_run(pod_dir, id, cmd) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("crius exec: {message}");
            SETUP_FAILED
        }
    }
}

struct Target {
    pid: i32,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    cgroup_dirs: Vec<PathBuf>,
}

fn target(pod_dir: &Path, id: &str) -> Result<Target, String> {
    let state = crate::read_state(pod_dir).map_err(|e| e.to_string())?;
    let c = state
        .containers
        .get(id)
        .ok_or_else(|| format!("container {id} is not known to its pod monitor"))?;
    if c.exit.is_some()
        || c.started_at_ns.is_none()
        || !crius_proto::process_is(c.pid, c.start_time)
    {
        return Err(format!("container {id} is not running"));
    }
    let user = c
        .user
        .clone()
        .ok_or_else(|| format!("the identity of container {id} was not recorded"))?;
    Ok(Target {
        pid: c.pid,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups,
        cgroup_dirs: c.cgroup_dirs.clone(),
    })
}

/// A `CapXxx:` mask of `/proc/PID/status`.
fn cap_mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn open_ns(pid: i32, kind: &str) -> Result<OwnedFd, String> {
    std::fs::File::open(format!("/proc/{pid}/ns/{kind}"))
        .map(OwnedFd::from)
        .map_err(|e| format!("cannot open /proc/{pid}/ns/{kind}: {e}"))
}

fn same_ns(pid: i32, kind: &str) -> bool {
    let mine = std::fs::metadata(format!("/proc/self/ns/{kind}"));
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{kind}"));
    matches!((mine, theirs), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}

fn setup_and_run(pod_dir: &Path, id: &str, cmd: &[std::ffi::OsString]) -> Result<u8, String> {
    if cmd.is_empty() {
        return Err("no command".into());
    }
    let t = target(pod_dir, id)?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", t.pid))
        .map_err(|e| format!("cannot read the container's status: {e}"))?;
    let bounding = cap_mask(&status, "CapBnd:");
    let effective = cap_mask(&status, "CapEff:");
    let no_new_privs = status
        .lines()
        .find_map(|l| l.strip_prefix("NoNewPrivs:"))
        .is_some_and(|v| v.trim() == "1");
    let env: Vec<CString> = std::fs::read(format!("/proc/{}/environ", t.pid))
        .map_err(|e| format!("cannot read the container's environment: {e}"))?
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .filter_map(|e| CString::new(e).ok())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", t.pid)).unwrap_or_else(|_| "/".into());
    let seccomp = container_seccomp(pod_dir, id)?;

    // Open everything while still the host's root.
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
    let me = std::process::id().to_string();
    for dir in &t.cgroup_dirs {
        // Best effort: a hierarchy the container has no directory in is skipped.
        let _ = std::fs::write(dir.join("cgroup.procs"), &me);
    }
    if let Some(user) = &userns {
        nix::sched::setns(user.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| format!("cannot join the pod's user namespace: {e}"))?;
    }
    for (kind, fd) in &others {
        nix::sched::setns(fd.as_fd(), CloneFlags::empty())
            .map_err(|e| format!("cannot join the container's {kind} namespace: {e}"))?;
    }
    // Joining the mount namespace put us at its root; go to the container's directory.
    let _ = std::env::set_current_dir(&cwd);

    // The child learns that this helper is gone (killed at ExecSync's timeout) when the write
    // end of this pipe closes: it sets its parent-death signal only after its identity change
    // (which clears it), then checks the pipe, so the command never outlives the helper.
    let (alive_r, alive_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot make a pipe: {e}"))?;
    // SIGTERM (criusd's ExecSync timeout) interrupts the wait below: the command is killed
    // and reaped before this helper exits. No SA_RESTART, so waitpid returns EINTR.
    let on_term = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(note_sigterm),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGTERM, &on_term) }
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    // SAFETY: this helper process is single-threaded.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(alive_w);
            let message = child(
                &t,
                Privileges {
                    bounding,
                    effective,
                    no_new_privs,
                    seccomp: seccomp.as_ref(),
                },
                &env,
                cmd,
                &alive_r,
            );
            eprintln!("crius exec: {message}");
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(alive_r);
            // The write end stays open until this helper exits.
            let _alive = alive_w;
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
                    Err(e) => return Err(format!("cannot wait for the command: {e}")),
                }
            }
        }
    }
}

/// Set by SIGTERM: kill the command, reap it, then exit.
static TERMINATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn note_sigterm(_: libc::c_int) {
    TERMINATED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `struct __user_cap_header_struct` of capset(2).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct` of capset(2).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The seccomp filter of container `id`: the one its runtime spec (written at create, and
/// installed by libcontainer for the first process) holds.
fn container_seccomp(
    pod_dir: &Path,
    id: &str,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, String> {
    let path = pod_dir
        .join(crius_proto::CONTAINERS_DIR)
        .join(id)
        .join("config.json");
    let spec = oci_spec::runtime::Spec::load(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
}

/// Sets the capability sets of this process: effective and permitted `mask`, no inheritable.
fn set_caps(mask: u64) -> Result<(), String> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: mask as u32,
            permitted: mask as u32,
            inheritable: 0,
        },
        CapData {
            effective: (mask >> 32) as u32,
            permitted: (mask >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a version-3 header and two data structs, as the ABI requires.
    let ret =
        unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if ret < 0 {
        return Err(format!("capset: {}", nix::errno::Errno::last()));
    }
    Ok(())
}

/// This process's permitted capabilities.
fn permitted_caps() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/thread-self/status")
        .map_err(|e| format!("cannot read its own status: {e}"))?;
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
}

fn install_seccomp(filter: &oci_spec::runtime::LinuxSeccomp) -> Result<(), String> {
    libcontainer::seccomp::initialize_seccomp(filter)
        .map(drop)
        .map_err(|e| format!("cannot install the container's seccomp filter: {e}"))
}

/// In the forked child: identity, capabilities, then exec. Returns only on failure.
fn child(
    t: &Target,
    privileges: Privileges<'_>,
    env: &[CString],
    cmd: &[std::ffi::OsString],
    alive: &OwnedFd,
) -> String {
    // A terminal on stdin (the streaming Exec with tty): the command leads its own session
    // with it as controlling terminal, so ^C and window-size changes reach it, not the helper.
    if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        if let Err(e) = nix::unistd::setsid() {
            return format!("setsid: {e}");
        }
        // SAFETY: TIOCSCTTY on fd 0 with argument 0 (do not steal); no memory is passed.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return format!("cannot take the terminal: {}", nix::errno::Errno::last());
        }
    }
    let Privileges {
        bounding,
        effective,
        no_new_privs,
        seccomp,
    } = privileges;
    // As for the first process: without no_new_privs the filter goes in while the process
    // still holds CAP_SYS_ADMIN (after the change of ids, before the capability drop); with it,
    // just before exec.
    let early_seccomp = seccomp.filter(|_| !no_new_privs);
    if early_seccomp.is_some()
        && let Err(e) = nix::sys::prctl::set_keepcaps(true)
    {
        return format!("cannot keep capabilities: {e}");
    }
    for cap in 0..64u64 {
        if bounding & (1 << cap) == 0 {
            // SAFETY: PR_CAPBSET_DROP of one capability number; unknown numbers fail harmlessly.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
    let groups: Vec<nix::unistd::Gid> = t
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        return format!("setgroups: {e}");
    }
    let gid = nix::unistd::Gid::from_raw(t.gid);
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        return format!("setresgid({}): {e}", t.gid);
    }
    let uid = nix::unistd::Uid::from_raw(t.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        return format!("setresuid({}): {e}", t.uid);
    }
    if let Some(filter) = early_seccomp {
        // A change to a uid other than 0 cleared the effective set (the permitted one was
        // kept): raise it again for the install.
        if let Err(e) = permitted_caps().and_then(set_caps) {
            return e;
        }
        if let Err(e) = install_seccomp(filter) {
            return e;
        }
        if let Err(e) = nix::sys::prctl::set_keepcaps(false) {
            return format!("cannot reset keep-capabilities: {e}");
        }
        // Whatever the uid, only the container's capabilities remain (a uid other than 0
        // loses them at exec, as the first process did).
        if let Err(e) = set_caps(if t.uid == 0 { effective } else { 0 }) {
            return e;
        }
    } else if t.uid == 0 {
        // Root keeps only the container's capabilities.
        if let Err(e) = set_caps(effective) {
            return e;
        }
    }
    if no_new_privs && let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return format!("no_new_privs: {e}");
    }
    // After setresuid/capset, which clear the parent-death signal.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        return format!("cannot set the parent-death signal: {e}");
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
        return format!("{:?} not found in the container's PATH", cmd[0]);
    };
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return "bad program path".into();
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
        Err(e) => format!("cannot exec {}: {e}", program.display()),
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
