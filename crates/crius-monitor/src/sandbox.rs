//! The sandbox process: one clone into all of the pod's new namespaces, the user namespace maps
//! written from the monitor, then a pause loop that reaps zombies.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use crius_proto::{SandboxSpec, render_id_map};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::sys::{Linux, Sys};
use crate::{Error, capabilities, pause_filter};

/// The namespaces the sandbox clone creates for `spec`.
pub(crate) fn clone_flags(spec: &SandboxSpec) -> CloneFlags {
    let mut flags =
        CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP;
    if spec.userns.is_some() {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    if spec.new_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if spec.new_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if spec.new_pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    flags
}

/// Creates the sandbox process and returns its pid once it has set itself up and parked. The
/// child waits until the monitor has written its user namespace maps and oom_score_adj. With
/// `into` (the pod's cgroup v2 leaf), the sandbox is born in that cgroup; where the kernel
/// cannot do that (before 5.7), this process moves into it first ([`Created::entered`]).
pub(crate) fn create(spec: &SandboxSpec, into: Option<&Path>) -> Result<Created, Error> {
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(Error::sys("cannot create a pipe"))?;
    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(Error::sys("cannot create a pipe"))?;
    let flags = clone_flags(spec);
    let mut entered = false;
    let ret = match into {
        Some(dir) => {
            let cgroup = nix::fcntl::open(
                dir,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|source| Error::Sys {
                what: format!("cannot open cgroup {}", dir.display()),
                source,
            })?;
            match crate::cgroup::clone_into(flags, &cgroup) {
                Err(e) if crate::cgroup::clone_into_missing(e) => {
                    crate::cgroup::enter_self(&[dir.to_owned()])?;
                    entered = true;
                    clone_here(flags)
                }
                other => other,
            }
        }
        None => clone_here(flags),
    };
    let ret = ret.map_err(|errno| match errno {
        nix::errno::Errno::ENOSPC | nix::errno::Errno::EUSERS => {
            Error::NamespaceLimit { source: errno }
        }
        _ => Error::Sys {
            what: "cannot clone the sandbox".into(),
            source: errno,
        },
    })?;
    if ret == 0 {
        drop(go_w);
        drop(status_r);
        child(spec, go_r, status_w);
    }
    drop(go_r);
    drop(status_w);
    let pid = crate::cloned_pid(ret);
    let result = (|| {
        if let Some(userns) = &spec.userns {
            write_proc(pid, "uid_map", &render_id_map(&userns.uids))?;
            write_proc(pid, "gid_map", &render_id_map(&userns.gids))?;
        }
        if let Some(adj) = spec.oom_score_adj {
            set_oom_score_adj(pid, adj);
        }
        let mut go = std::fs::File::from(go_w);
        go.write_all(b"g")
            .map_err(Error::io("cannot release the sandbox process"))?;
        drop(go);
        let mut answer = String::new();
        std::fs::File::from(status_r)
            .read_to_string(&mut answer)
            .map_err(Error::io("cannot read the sandbox process's answer"))?;
        match answer.as_str() {
            "ok" => Ok(()),
            "" => Err(Error::SandboxExited),
            message => Err(Error::SandboxFailed {
                message: message.to_owned(),
            }),
        }
    })();
    if let Err(e) = result {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e);
    }
    Ok(Created { pid, entered })
}

/// The sandbox process [`create`] made.
#[derive(Debug)]
pub(crate) struct Created {
    /// Its pid.
    pub pid: Pid,
    /// This process moved into the cgroup v2 leaf to clone it there (a kernel without
    /// `CLONE_INTO_CGROUP`): it must step out again.
    pub entered: bool,
}

/// clone with `flags`, the child in this process's cgroups. Fork-like: returns 0 in the child.
fn clone_here(flags: CloneFlags) -> Result<libc::c_long, nix::errno::Errno> {
    // SAFETY: a fork-like clone (no new stack: the child continues on a copy of this one). The
    // monitor is single-threaded, so no lock is held by another thread in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_ulong::from((flags.bits() | libc::SIGCHLD).cast_unsigned()),
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    nix::errno::Errno::result(ret)
}

/// Sets the sandbox's `oom_score_adj`. Lowering it below the monitor's own needs
/// CAP_SYS_RESOURCE: without it the value is clamped to the monitor's, and logged.
pub(crate) fn set_oom_score_adj(pid: Pid, wanted: i32) {
    let path = format!("/proc/{pid}/oom_score_adj");
    match std::fs::write(&path, wanted.to_string()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EACCES) =>
        {
            let own = std::fs::read_to_string("/proc/self/oom_score_adj")
                .ok()
                .and_then(|v| v.trim().parse::<i32>().ok())
                .unwrap_or(0);
            let clamped = wanted.max(own);
            crate::log(format_args!(
                "oom_score_adj {wanted} for the sandbox is not allowed here ({e}); using {clamped}"
            ));
            if let Err(e) = std::fs::write(&path, clamped.to_string()) {
                crate::log(format_args!("cannot set oom_score_adj {clamped}: {e}"));
            }
        }
        Err(e) => crate::log(format_args!("cannot set oom_score_adj {wanted}: {e}")),
    }
}

fn write_proc(pid: Pid, file: &str, text: &str) -> Result<(), Error> {
    std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(Error::io(format!(
        "cannot write /proc/{pid}/{file} ({})",
        text.trim()
    )))
}

/// The sandbox child: waits for the monitor, becomes the pod's root, sets the hostname, parks.
fn child(spec: &SandboxSpec, go: OwnedFd, status: OwnedFd) -> ! {
    let mut status = std::fs::File::from(status);
    let mut byte = [0u8; 1];
    let released = std::fs::File::from(go).read(&mut byte).ok() == Some(1);
    if !released {
        // The monitor died or gave up before the maps were written.
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(1) }
    }
    use std::os::fd::AsRawFd;
    let locked = |()| {
        harden(
            status.as_raw_fd(),
            spec.userns.is_some(),
            spec.apparmor_profile.as_deref(),
        )
    };
    match child_setup(&Linux, spec).and_then(locked) {
        Ok(()) => {
            // The sandbox's filter allows this write and close, then the pause loop alone.
            let _ = status.write_all(b"ok");
            drop(status);
            pause()
        }
        Err(e) => {
            let _ = status.write_all(e.to_string().as_bytes());
            // SAFETY: as above.
            unsafe { libc::_exit(1) }
        }
    }
}

/// Why the sandbox process could not set itself up. The process writes it as text to its
/// status pipe, which the monitor reports as [`Error::SandboxFailed`].
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("bad sysctl {key:?}")]
    BadSysctl { key: String },
    #[error("cannot set sysctl {key}={value}: {source}")]
    Sysctl {
        key: String,
        value: String,
        source: std::io::Error,
    },
    #[error("cannot set the hostname {hostname:?}: {source}")]
    Hostname {
        hostname: String,
        source: nix::Error,
    },
    #[error("cannot drop capabilities: {source}")]
    Capabilities { source: capabilities::SetError },
    #[error("cannot keep CAP_SYS_PTRACE as the sandbox's only permitted capability: {source}")]
    TraceGuard { source: caps::errors::CapsError },
    #[error("{source}")]
    Filter { source: pause_filter::FilterError },
    #[error("cannot change to AppArmor profile {profile:?}: {source}")]
    AppArmor {
        profile: String,
        source: std::io::Error,
    },
}

/// Maps a failed system call of step `what` to a [`SetupError`].
fn sys_error(what: &'static str) -> impl FnOnce(nix::Error) -> SetupError {
    move |source| SetupError::Sys { what, source }
}

fn child_setup(sys: &dyn Sys, spec: &SandboxSpec) -> Result<(), SetupError> {
    // Die with the monitor: a sandbox nobody monitors is not ready and must not linger.
    sys.kill_with_parent()
        .map_err(sys_error("cannot set the parent-death signal"))?;
    crate::use_pod_open_files();
    if spec.userns.is_some() {
        // Become the pod's root (the mapping's host id), with full capabilities in the new user
        // namespace. setgroups stays allowed so that containers can set their groups.
        sys.setresgid(0)
            .map_err(sys_error("setresgid(0) in the user namespace"))?;
        sys.clear_groups().map_err(sys_error("setgroups([])"))?;
        sys.setresuid(0)
            .map_err(sys_error("setresuid(0) in the user namespace"))?;
        // Changing ids made the process non-dumpable, which would hide /proc/PID/ns/* from
        // the pod's own root: containers join the pod's namespaces through those paths.
        sys.set_dumpable(true)
            .map_err(sys_error("cannot make the sandbox dumpable"))?;
        // The kernel clears the parent-death signal when the credentials change: arm it again.
        sys.kill_with_parent()
            .map_err(sys_error("cannot set the parent-death signal"))?;
    }
    if spec.new_net {
        sys.loopback_up().map_err(sys_error("cannot bring lo up"))?;
    }
    for (key, value) in &spec.sysctls {
        let path = crius_proto::sysctl_path(key)
            .ok_or_else(|| SetupError::BadSysctl { key: key.clone() })?;
        sys.write(&path, value)
            .map_err(|source| SetupError::Sysctl {
                key: key.clone(),
                value: value.clone(),
                source,
            })?;
    }
    // Mounts made in the pod's mount namespace never propagate back to the host.
    sys.make_mounts_slaves()
        .map_err(sys_error("cannot make / a slave mount"))?;
    sys.sethostname(&spec.hostname)
        .map_err(|source| SetupError::Hostname {
            hostname: spec.hostname.clone(),
            source,
        })?;
    Ok(())
}

/// Leaves the parked process nothing to misuse: its standard descriptors on `/dev/null`, every
/// other inherited descriptor closed (but `keep`, the status pipe), neither the monitor's
/// arguments nor its environment, then [`lock_down`].
fn harden(keep: i32, userns: bool, apparmor: Option<&str>) -> Result<(), SetupError> {
    // The standard output is criusd's startup pipe and stderr the monitor's log.
    for fd in 0..=2 {
        crate::redirect_to_null(fd);
    }
    // A negative bound closes nothing.
    let close = |first: i32, last: i32| {
        if let (Ok(first), Ok(last)) = (libc::c_uint::try_from(first), libc::c_uint::try_from(last))
            && first <= last
        {
            // SAFETY: close_range on descriptor numbers only; nothing else uses them here.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    };
    close(3, keep - 1);
    close(keep + 1, i32::MAX);
    // The monitor's arguments and environment name the host's state directory, the pod id
    // and criusd's environment; every process of the pod reads them as `/proc/1/*`.
    crate::proctitle::overwrite(b"pause", true);
    lock_down(&Linux, userns, keep, apparmor)
}

/// The steps of [`lock_down`] beyond [`Sys`].
trait Guard {
    /// Empties every capability set but the permitted one, which keeps CAP_SYS_PTRACE alone.
    fn keep_trace_guard(&self) -> Result<(), caps::errors::CapsError>;
    /// Installs the pause loop's seccomp filter ([`pause_filter`]); `status` may still be
    /// written and closed.
    fn install_filter(&self, status: i32) -> Result<(), pause_filter::FilterError>;
    /// Opens this thread's AppArmor label for writing (while `/proc` is still reachable).
    fn open_label(&self) -> std::io::Result<std::fs::File>;
    /// Changes to AppArmor `profile` now, through `label` from [`Guard::open_label`].
    fn change_profile(&self, label: std::fs::File, profile: &str) -> std::io::Result<()>;
}

impl Guard for Linux {
    fn keep_trace_guard(&self) -> Result<(), caps::errors::CapsError> {
        use caps::{CapSet, Capability, CapsHashSet};
        capabilities::drop_bounding_except(0);
        capabilities::clear_ambient();
        // The effective set first: it may never hold more than the permitted one.
        caps::set(None, CapSet::Effective, &CapsHashSet::new())?;
        caps::set(
            None,
            CapSet::Permitted,
            &CapsHashSet::from([Capability::CAP_SYS_PTRACE]),
        )?;
        caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
    }

    fn install_filter(&self, status: i32) -> Result<(), pause_filter::FilterError> {
        pause_filter::install(status)
    }

    fn open_label(&self) -> std::io::Result<std::fs::File> {
        let open = |path: &str| std::fs::OpenOptions::new().write(true).open(path);
        // The LSM's own directory (Linux 5.8 and later), else the shared one.
        open("/proc/thread-self/attr/apparmor/current")
            .or_else(|_| open("/proc/thread-self/attr/current"))
    }

    fn change_profile(&self, mut label: std::fs::File, profile: &str) -> std::io::Result<()> {
        label.write_all(format!("changeprofile {profile}").as_bytes())
    }
}

/// Locks the sandbox down so that the pod's containers can neither take it over nor use it:
/// an empty read-only tmpfs as its root (the host's filesystem is unmounted from its mount
/// namespace), no capabilities (but the trace guard below), no_new_privs, not traceable by a
/// container without CAP_SYS_PTRACE, and last a seccomp filter that leaves it its pause loop
/// alone (and the reply on `status`), even for code a tracer would make it run. The root goes
/// first: changing it needs the capabilities dropped after it. The pod's AppArmor profile
/// (`apparmor`), when it names one, is taken after the root (a profile may forbid mounts) and
/// before the filter, through the label opened while `/proc` was still there.
///
/// Without a user namespace the sandbox is made non-dumpable: its memory belongs to the host's
/// user namespace, so only host root may trace it. With one it must stay dumpable, since the
/// pod's containers join its namespaces through `/proc/PID/ns/*` as the pod's root; instead it
/// keeps CAP_SYS_PTRACE in its permitted set (never effective): the kernel lets a process of
/// the same user namespace trace it, read or write its memory only when the process holds
/// every capability it permits, that is CAP_SYS_PTRACE, which libcontainer's init holds while
/// it joins and a container only when granted it.
fn lock_down(
    sys: &(impl Sys + Guard),
    userns: bool,
    status: i32,
    apparmor: Option<&str>,
) -> Result<(), SetupError> {
    let apparmor_failed = |profile: &str| {
        let profile = profile.to_owned();
        move |source| SetupError::AppArmor { profile, source }
    };
    let label = match apparmor {
        Some(profile) => Some((sys.open_label().map_err(apparmor_failed(profile))?, profile)),
        None => None,
    };
    sys.pivot_to_empty_root()
        .map_err(sys_error("cannot make an empty tmpfs the sandbox's root"))?;
    if userns {
        sys.keep_trace_guard()
            .map_err(|source| SetupError::TraceGuard { source })?;
    } else {
        sys.drop_capabilities()
            .map_err(|source| SetupError::Capabilities { source })?;
    }
    if let Some((label, profile)) = label {
        sys.change_profile(label, profile)
            .map_err(apparmor_failed(profile))?;
    }
    sys.set_no_new_privs()
        .map_err(sys_error("cannot set no_new_privs"))?;
    if !userns {
        sys.set_dumpable(false)
            .map_err(sys_error("cannot make the sandbox non-dumpable"))?;
    }
    sys.install_filter(status)
        .map_err(|source| SetupError::Filter { source })
}

/// The pause loop: reaps every child (as PID 1 of the pod's PID namespace it inherits orphans)
/// and exits on SIGTERM or SIGINT.
fn pause() -> ! {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(signal);
    }
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(Signal::SIGTERM | Signal::SIGINT) => {
                // SAFETY: exiting the pause process; nothing to clean up.
                unsafe { libc::_exit(0) }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crius_proto::{IdRange, UserNamespace};

    /// A sandbox spec for unit tests (new network, IPC and PID namespaces, no user namespace).
    pub(crate) fn spec() -> SandboxSpec {
        SandboxSpec {
            version: crius_proto::PROTOCOL_VERSION,
            id: "x".into(),
            hostname: "h".into(),
            userns: None,
            new_net: true,
            new_ipc: true,
            new_pid: true,
            cgroup: None,
            shm_size: 0,
            sysctls: Default::default(),
            oom_score_adj: None,
            writable_root: None,
            apparmor_profile: None,
            files_dir: None,
        }
    }

    /// The calls `steps` made on a fake that fails call `fail_at`, and their result.
    fn record(
        fail_at: Option<usize>,
        steps: impl FnOnce(&dyn Sys) -> Result<(), SetupError>,
    ) -> (Vec<String>, Result<(), SetupError>) {
        let fake = crate::sys::fake::Fake::default();
        fake.fail_at.set(fail_at);
        let result = steps(&fake);
        (fake.calls.take(), result)
    }

    fn userns_spec() -> SandboxSpec {
        let mut s = spec();
        s.userns = Some(UserNamespace {
            uids: vec![IdRange {
                container_id: 0,
                host_id: 100000,
                length: 65536,
            }],
            gids: vec![],
        });
        s.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        s
    }

    #[test]
    fn the_sandbox_becomes_the_pods_root_in_order() {
        let (calls, result) = record(None, |sys| child_setup(sys, &userns_spec()));
        result.unwrap();
        assert_eq!(
            calls,
            [
                "pdeathsig KILL",
                // The group and the supplementary groups go before the uid: afterwards the
                // process may no longer change them.
                "setresgid 0",
                "setgroups []",
                "setresuid 0",
                "dumpable true",
                // Changing the credentials cleared the parent-death signal.
                "pdeathsig KILL",
                "link-up lo",
                "write /proc/sys/net/ipv4/ip_unprivileged_port_start/0",
                "slave /",
                "hostname h",
            ]
        );
        let (calls, result) = record(None, |sys| child_setup(sys, &spec()));
        result.unwrap();
        assert_eq!(
            calls,
            ["pdeathsig KILL", "link-up lo", "slave /", "hostname h"]
        );
    }

    #[test]
    fn a_failed_sandbox_step_stops_the_set_up_and_names_itself() {
        let (all, _) = record(None, |sys| child_setup(sys, &userns_spec()));
        for (step, call) in all.iter().enumerate() {
            let (calls, result) = record(Some(step), |sys| child_setup(sys, &userns_spec()));
            let message = result.expect_err(call).to_string();
            assert_eq!(calls.len(), step + 1, "{call} did not stop the set-up");
            assert!(message.contains("Operation not permitted"), "{message}");
        }
        let (_, result) = record(Some(3), |sys| child_setup(sys, &userns_spec()));
        assert_eq!(
            result.unwrap_err().to_string(),
            "setresuid(0) in the user namespace: EPERM: Operation not permitted"
        );
    }

    /// Logs a [`Guard`] call on the fake; Err when it is the one to fail.
    fn guard_call(fake: &crate::sys::fake::Fake, call: String) -> bool {
        let mut calls = fake.calls.borrow();
        let fails = fake.fail_at.get() == Some(calls.len());
        calls.push(call);
        fails
    }

    impl Guard for crate::sys::fake::Fake {
        fn keep_trace_guard(&self) -> Result<(), caps::errors::CapsError> {
            if guard_call(self, "capabilities permitted CAP_SYS_PTRACE".into()) {
                return Err("EPERM".into());
            }
            Ok(())
        }

        fn install_filter(&self, status: i32) -> Result<(), pause_filter::FilterError> {
            if guard_call(self, format!("seccomp pause status={status}")) {
                return Err(pause_filter::FilterError::Install {
                    source: nix::Error::EPERM,
                });
            }
            Ok(())
        }

        fn open_label(&self) -> std::io::Result<std::fs::File> {
            if guard_call(self, "open apparmor label".into()) {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            std::fs::File::open("/dev/null")
        }

        fn change_profile(&self, _: std::fs::File, profile: &str) -> std::io::Result<()> {
            if guard_call(self, format!("changeprofile {profile}")) {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(())
        }
    }

    /// The calls [`lock_down`] made on a fake that fails call `fail_at`, and its result.
    fn lock_down_calls(
        fail_at: Option<usize>,
        userns: bool,
    ) -> (Vec<String>, Result<(), SetupError>) {
        lock_down_confined(fail_at, userns, None)
    }

    /// [`lock_down_calls`] for a pod that names AppArmor profile `apparmor`.
    fn lock_down_confined(
        fail_at: Option<usize>,
        userns: bool,
        apparmor: Option<&str>,
    ) -> (Vec<String>, Result<(), SetupError>) {
        let fake = crate::sys::fake::Fake::default();
        fake.fail_at.set(fail_at);
        let result = lock_down(&fake, userns, 5, apparmor);
        (fake.calls.take(), result)
    }

    #[test]
    fn a_named_apparmor_profile_is_taken_after_the_root_and_before_the_filter() {
        let (calls, result) = lock_down_confined(None, true, Some("crius-default"));
        result.unwrap();
        assert_eq!(
            calls,
            [
                // /proc is gone once the root is the empty tmpfs.
                "open apparmor label",
                "pivot /tmp",
                "capabilities permitted CAP_SYS_PTRACE",
                "changeprofile crius-default",
                "no_new_privs 1",
                "seccomp pause status=5",
            ]
        );
        for (step, call) in calls.iter().enumerate() {
            let (done, result) = lock_down_confined(Some(step), true, Some("p"));
            assert_eq!(done.len(), step + 1, "{call}");
            assert!(result.is_err());
        }
        let (_, result) = lock_down_confined(Some(3), false, Some("p"));
        assert_eq!(
            result.unwrap_err().to_string(),
            format!(
                "cannot change to AppArmor profile \"p\": {}",
                std::io::Error::from_raw_os_error(libc::EPERM)
            )
        );
    }

    #[test]
    fn the_sandbox_drops_its_capabilities_after_its_root_and_filters_itself_last() {
        let (calls, result) = lock_down_calls(None, false);
        result.unwrap();
        assert_eq!(
            calls,
            [
                "pivot /tmp",
                "capabilities 0",
                "no_new_privs 1",
                "dumpable false",
                "seccomp pause status=5",
            ]
        );
        // With a user namespace it stays dumpable (containers join its namespaces through
        // /proc) and keeps CAP_SYS_PTRACE permitted, which a container must hold to trace it.
        let (calls, result) = lock_down_calls(None, true);
        result.unwrap();
        assert_eq!(
            calls,
            [
                "pivot /tmp",
                "capabilities permitted CAP_SYS_PTRACE",
                "no_new_privs 1",
                "seccomp pause status=5",
            ]
        );
        let (calls, result) = lock_down_calls(Some(0), true);
        assert_eq!(calls, ["pivot /tmp"]);
        assert!(result.is_err());
    }

    #[test]
    fn a_failed_lock_down_step_stops_it_and_names_itself() {
        for userns in [false, true] {
            let (all, _) = lock_down_calls(None, userns);
            for (step, call) in all.iter().enumerate() {
                let (calls, result) = lock_down_calls(Some(step), userns);
                let message = result.expect_err(call).to_string();
                assert_eq!(calls.len(), step + 1, "{call} did not stop the lock-down");
                assert!(
                    message.contains("EPERM") || message.contains("permitted"),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn flags_follow_the_spec() {
        let mut s = spec();
        let f = clone_flags(&s);
        assert!(f.contains(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC));
        assert!(!f.contains(CloneFlags::CLONE_NEWUSER));
        s.new_net = false;
        s.new_ipc = false;
        s.new_pid = false;
        s.userns = Some(UserNamespace {
            uids: vec![IdRange {
                container_id: 0,
                host_id: 1000,
                length: 10,
            }],
            gids: vec![],
        });
        let f = clone_flags(&s);
        assert!(f.contains(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWUTS));
        assert!(!f.intersects(
            CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWPID
        ));
    }
}
