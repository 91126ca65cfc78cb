//! The monitor's life after detaching: set the sandbox up, serve the socket, reap, tear down.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_proto::{
    Exit, Failure, FailureKind, MonitorState, PROTOCOL_VERSION, Reply, ReplyBody, Request,
    RequestBody, SandboxSpec, layout, process_is, process_start_time,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::attach::Source;
use crate::sys::Linux;
use crate::{Error, cgroup, containers, log, mounts, rootfs, sandbox, systemd, write_state};

/// How long one client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running monitor and its sandbox.
pub(crate) struct Monitor {
    dir: PathBuf,
    state: MonitorState,
    listener: UnixListener,
    signals: SignalFd,
    spec: SandboxSpec,
    live: std::collections::BTreeMap<String, containers::Live>,
    /// The cgroup v2 directory this monitor still has to move into ([`Monitor::finish_start`]).
    later: Option<PathBuf>,
    /// A cgroup this monitor is in (once [`Monitor::finish_start`] ran), through which
    /// [`cgroup::Warm`] keeps the migration lock warm while a container is made.
    home: Option<PathBuf>,
    /// The warm-up started with the pod, for its first container.
    warm: Option<cgroup::Warm>,
}

/// What the serve loop does after a request.
enum Next {
    Serve,
    Exit,
}

impl Monitor {
    /// Creates the sandbox for `spec`, records the state and binds the socket.
    pub(crate) fn start(
        dir: &Path,
        spec: &SandboxSpec,
        network: &dyn Fn(&Path),
    ) -> Result<Monitor, Error> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(Error::sys("cannot become the child subreaper"))?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()
            .map_err(Error::sys("cannot block SIGCHLD"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(Error::sys("cannot create a signalfd"))?;

        let own = cgroup::current();
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        // With the systemd driver, systemd makes the pod scope with the monitor in it.
        let systemd_scope = spec.cgroup.as_ref().filter(|cg| cg.systemd);
        let cgroup_dirs = match &spec.cgroup {
            Some(cg) if cg.systemd => vec![systemd::start_pod(cg, me, &own)?],
            Some(cg) => cgroup::create(cg)?,
            None => Vec::new(),
        };
        let mut undo = Undo {
            sys: &Linux,
            dir: dir.to_owned(),
            cgroups: cgroup_dirs.clone(),
            scope: systemd_scope.cloned(),
            armed: true,
        };
        // The sandbox's cgroup namespace is rooted at the cgroup it is cloned in: clone it
        // inside the pod cgroup (its v2 leaf), then step out so the monitor is not limited with
        // the pod, into crius' monitors cgroup (systemd driver: the monitor's own scope) rather
        // than criusd's (stopping criusd's service must not take the monitors along). With the
        // cgroupfs driver the sandbox is born in the v2 leaf and the monitor enters only the v1
        // directories, as a thread: no move waits for the cgroup migration lock on the way.
        // Its own v2 move waits, so it comes after the reply ([`Monitor::finish_start`]).
        let v2_mounts = cgroup::v2_mounts();
        let created = cgroup::sandbox_dirs(&cgroup_dirs).and_then(|dirs| {
            if systemd_scope.is_some() {
                cgroup::enter(&dirs, me)?;
                cgroup::delegate(&dirs);
                return sandbox::create(spec, None);
            }
            let (v2, v1) = cgroup::split_v2(&dirs, &v2_mounts);
            cgroup::enter_self(&v1)?;
            cgroup::delegate(&dirs);
            sandbox::create(spec, v2.as_deref())
        });
        // The sandbox has set itself up: criusd may attach the pod's network while the monitor
        // finishes its own start.
        let netns = match &created {
            Ok(c) => pin_network(&Linux, dir, spec, c.pid.as_raw()).inspect(|pinned| {
                if let Some(netns) = pinned {
                    network(netns);
                }
            }),
            Err(_) => Ok(None),
        };
        // Where the monitor lives from now on (`home`) and the v2 directory it still has to
        // enter (`later`).
        let left = match systemd_scope {
            // The scope's directory is looked up after the reply.
            Some(_) => systemd::enter_monitor_scope(&spec.id, me).map(|()| (None, None)),
            None => cgroup::monitor_dirs().and_then(|dirs| {
                let (v2, v1) = cgroup::split_v2(&dirs, &v2_mounts);
                cgroup::enter_self(&v1)?;
                let home = v2.clone().or_else(|| v1.first().cloned());
                match v2 {
                    Some(v2) if created.as_ref().is_ok_and(|c| c.entered) => {
                        cgroup::enter_self(&[v2])?;
                        Ok((home, None))
                    }
                    later => Ok((home, later)),
                }
            }),
        };
        let (home, later) = match left {
            Ok(placed) => placed,
            Err(e) => {
                log(format_args!("cannot enter the monitors cgroup: {e}"));
                if let Err(e) = cgroup::enter(&own, me) {
                    log(format_args!("cannot leave the pod cgroup: {e}"));
                    // Still in the pod's scope: stopping it would kill this monitor; once the
                    // monitor exits, systemd drops the emptied scope itself.
                    undo.scope = None;
                }
                (None, None)
            }
        };
        let pid = created?.pid;
        let netns = match netns {
            Ok(netns) => netns,
            Err(e) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(e);
            }
        };
        let mut state = MonitorState {
            version: PROTOCOL_VERSION,
            monitor_pid: me,
            monitor_start_time: process_start_time(me).unwrap_or(0),
            sandbox_pid: pid.as_raw(),
            sandbox_start_time: process_start_time(pid.as_raw()).unwrap_or(0),
            netns,
            cgroup_dirs,
            exit: None,
            containers: Default::default(),
        };
        let result = settle(&Linux, dir, spec, &mut state);
        match result {
            Ok(listener) => {
                undo.armed = false;
                log(format_args!(
                    "sandbox {} runs as pid {}",
                    spec.id, state.sandbox_pid
                ));
                Ok(Monitor {
                    dir: dir.to_owned(),
                    state,
                    listener,
                    signals,
                    spec: spec.clone(),
                    live: Default::default(),
                    later,
                    home,
                    warm: None,
                })
            }
            Err(e) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                Err(e)
            }
        }
    }

    /// The start-up steps that may follow the reply: the monitor's own move into its cgroup v2
    /// directory (the one move of the start that waits for the cgroup migration lock), then a
    /// warm-up of that lock for the pod's first container, which kubelet asks for next.
    pub(crate) fn finish_start(&mut self) {
        if let Some(dir) = self.later.take()
            && let Err(e) = cgroup::enter_self(&[dir])
        {
            log(format_args!("cannot enter the monitors cgroup: {e}"));
        }
        if self.spec.cgroup.as_ref().is_some_and(|c| c.systemd) {
            self.home = cgroup::current().into_iter().next();
        }
        self.warm = Some(cgroup::Warm::start(
            self.home.as_deref(),
            cgroup::Warm::POD_START,
        ));
    }

    /// The current state.
    pub(crate) fn state(&self) -> &MonitorState {
        &self.state
    }

    /// Serves requests and reaps children until asked to shut down.
    pub(crate) fn serve(&mut self) {
        loop {
            let mut sources: Vec<(String, Source, std::os::fd::RawFd, PollFlags)> = Vec::new();
            let mut one = Vec::new();
            for (id, live) in &self.live {
                one.clear();
                live.interest(&mut one);
                sources.extend(one.drain(..).map(|(s, fd, f)| (id.clone(), s, fd, f)));
            }
            let (sig_ready, conn_ready, revents) = {
                let mut fds = vec![
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                for (_, _, raw, flags) in &sources {
                    // SAFETY: the descriptor is owned by `self.live` and stays open while
                    // `fds` lives (nothing below mutates `self.live` before `fds` is dropped).
                    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*raw) };
                    fds.push(PollFd::new(fd, *flags));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        log(format_args!("poll failed: {e}"));
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                let revents: Vec<PollFlags> = fds[2..]
                    .iter()
                    .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                    .collect();
                (ready(&fds[0]), ready(&fds[1]), revents)
            };
            // Handled by source, not descriptor: a client dropped by an earlier source of
            // this round is simply not found.
            for ((id, source, _, _), revents) in sources.iter().zip(revents) {
                if !revents.is_empty()
                    && let Some(live) = self.live.get_mut(id)
                {
                    live.ready(*source, revents);
                }
            }
            if sig_ready {
                while let Ok(Some(_)) = self.signals.read_signal() {}
                self.reap();
            }
            if conn_ready {
                while let Ok((conn, _)) = self.listener.accept() {
                    if let Next::Exit = self.handle(conn) {
                        log(format_args!("shut down"));
                        return;
                    }
                }
                return_freed_memory();
            }
        }
    }

    /// Reaps every exited child; records the sandbox's exit.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => self.record(status),
            }
        }
    }

    fn record(&mut self, status: WaitStatus) {
        let (pid, code) = match status {
            WaitStatus::Exited(pid, code) => (pid, code),
            WaitStatus::Signaled(pid, signal, _) => (pid, 128 + signal as i32),
            _ => return,
        };
        if let Some((id, c)) = self
            .state
            .containers
            .iter_mut()
            .find(|(_, c)| c.pid == pid.as_raw() && c.exit.is_none())
        {
            let c = std::sync::Arc::make_mut(c);
            if let Some(live) = self.live.get_mut(id) {
                live.exited();
            }
            c.oom_killed = containers::oom_killed(c);
            log(format_args!("container {id} exited with {code}"));
            c.exit = Some(Exit {
                code,
                at_ns: crius_proto::now_ns(),
            });
            self.save();
            return;
        }
        if pid.as_raw() != self.state.sandbox_pid || self.state.exit.is_some() {
            return;
        }
        log(format_args!("the sandbox exited with {code}"));
        self.state.exit = Some(Exit {
            code,
            at_ns: crius_proto::now_ns(),
        });
        self.save();
    }

    fn save(&self) {
        if let Err(e) = write_state(&self.dir, &self.state) {
            log(format_args!("{e}"));
        }
    }

    fn handle(&mut self, conn: UnixStream) -> Next {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
        let _ = conn.set_write_timeout(Some(CLIENT_TIMEOUT));
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            return Next::Serve;
        }
        let (result, next) = match serde_json::from_str::<Request>(&line) {
            Err(e) => (
                Err(Failure::new(
                    FailureKind::Invalid,
                    format!("invalid request: {e}"),
                )),
                Next::Serve,
            ),
            Ok(req) if req.version != PROTOCOL_VERSION => (
                Err(Failure::new(
                    FailureKind::Invalid,
                    format!("protocol version {} is not {PROTOCOL_VERSION}", req.version),
                )),
                Next::Serve,
            ),
            Ok(req) => self.execute(req.body),
        };
        let reply = Reply {
            version: PROTOCOL_VERSION,
            result: result.map(|()| ReplyBody::State(self.state.clone())),
        };
        if let Ok(mut text) = serde_json::to_string(&reply) {
            text.push('\n');
            let _ = (&conn).write_all(text.as_bytes());
        }
        next
    }

    fn execute(&mut self, body: RequestBody) -> (Result<(), Failure>, Next) {
        let failed = |e: Error| e.failure();
        let not_known = |id: &str| {
            Failure::new(
                FailureKind::NotFound,
                format!("container {id} is not known to this monitor"),
            )
        };
        match body {
            RequestBody::Status => {
                self.reap();
                (Ok(()), Next::Serve)
            }
            RequestBody::StopSandbox => (self.stop().map_err(failed), Next::Serve),
            RequestBody::UpdateResources { resources } => {
                let result = match self.spec.cgroup.as_ref().filter(|cg| cg.systemd) {
                    Some(cg) => systemd::set_limits(cg, &self.state.cgroup_dirs, &resources),
                    None => cgroup::apply(&self.state.cgroup_dirs, &resources),
                };
                (result.map_err(failed), Next::Serve)
            }
            RequestBody::CreateContainer { spec } => {
                (self.create_container(&spec).map_err(failed), Next::Serve)
            }
            RequestBody::StartContainer { id } => {
                (self.start_container(&id).map_err(failed), Next::Serve)
            }
            RequestBody::SignalContainer { id, signal } => {
                (self.signal_container(&id, signal), Next::Serve)
            }
            RequestBody::RemoveContainer { id } => {
                (self.remove_container(&id).map_err(failed), Next::Serve)
            }
            RequestBody::UpdateContainerResources { id, resources } => {
                let result = match self.state.containers.get(&id) {
                    Some(c) if c.exit.is_none() => {
                        cgroup::apply(&c.cgroup_dirs, &resources).map_err(failed)
                    }
                    Some(_) => Err(Failure::new(
                        FailureKind::Precondition,
                        format!("container {id} is not running"),
                    )),
                    None => Err(not_known(&id)),
                };
                (result, Next::Serve)
            }
            RequestBody::ReopenContainerLog { id } => {
                let result = match self.live.get_mut(&id) {
                    Some(live) => live.log.reopen().map_err(|e| {
                        Failure::new(
                            FailureKind::Internal,
                            format!("cannot reopen the log of {id}: {e}"),
                        )
                    }),
                    None => Err(not_known(&id)),
                };
                (result, Next::Serve)
            }
            RequestBody::Shutdown => {
                let result = self.stop().and_then(|()| {
                    let ids: Vec<String> = self.state.containers.keys().cloned().collect();
                    for id in ids {
                        self.remove_container(&id)?;
                    }
                    rootfs::release_layers(&Linux, &self.dir)?;
                    mounts::release(&Linux, &self.dir.join(layout::SHM))?;
                    rootfs::remove_writable_root(self.spec.writable_root.as_deref())?;
                    remove_pod_cgroup(self.spec.cgroup.as_ref(), &self.state.cgroup_dirs);
                    let _ = std::fs::remove_file(self.dir.join(layout::SOCKET));
                    Ok(())
                });
                let next = if result.is_ok() {
                    Next::Exit
                } else {
                    Next::Serve
                };
                (result.map_err(failed), next)
            }
        }
    }

    /// Kills the sandbox (its PID namespace dies with it), reaps it, unpins the netns.
    fn stop(&mut self) -> Result<(), Error> {
        let ids: Vec<String> = self.state.containers.keys().cloned().collect();
        for id in ids {
            self.kill_container(&id);
        }
        if self.state.exit.is_none() {
            let pid = Pid::from_raw(self.state.sandbox_pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            match waitpid(pid, None) {
                Ok(status) => self.record(status),
                Err(e) => {
                    log(format_args!("waiting for the sandbox: {e}"));
                    self.reap();
                }
            }
            if self.state.exit.is_none() {
                self.state.exit = Some(Exit {
                    code: 137,
                    at_ns: crius_proto::now_ns(),
                });
                self.save();
            }
        }
        if let Some(netns) = self.state.netns.take() {
            mounts::release(&Linux, &netns)?;
            self.save();
        }
        Ok(())
    }
}

impl Monitor {
    fn create_container(&mut self, spec: &crius_proto::ContainerSpec) -> Result<(), Error> {
        if self.state.exit.is_some() {
            return Err(Error::SandboxNotRunning);
        }
        if self.state.containers.contains_key(&spec.id) {
            return Err(Error::ContainerExists {
                id: spec.id.clone(),
            });
        }
        let pid_target = match &spec.pid_target {
            None => None,
            Some(target) => match self.state.containers.get(target) {
                Some(c) if c.exit.is_none() => Some(c.pid),
                _ => {
                    return Err(Error::PidTargetNotRunning {
                        target: target.clone(),
                    });
                }
            },
        };
        // The pod start's warm-up when it still runs (the pod's first container), else one
        // that overlaps the staging.
        let warm = self
            .warm
            .take()
            .filter(cgroup::Warm::is_running)
            .unwrap_or_else(|| cgroup::Warm::start(self.home.as_deref(), cgroup::Warm::CREATE));
        let (state, live) = containers::create(
            &Linux,
            &self.dir,
            &self.spec,
            (self.state.sandbox_pid, pid_target),
            spec,
            warm,
        )?;
        log(format_args!(
            "container {} created, pid {}",
            spec.id, state.pid
        ));
        self.state
            .containers
            .insert(spec.id.clone(), std::sync::Arc::new(state));
        self.live.insert(spec.id.clone(), live);
        self.save();
        Ok(())
    }

    fn start_container(&mut self, id: &str) -> Result<(), Error> {
        let Some(state) = self
            .state
            .containers
            .get_mut(id)
            .map(std::sync::Arc::make_mut)
        else {
            return Err(Error::UnknownContainer { id: id.to_owned() });
        };
        if state.started_at_ns.is_some() || state.exit.is_some() {
            return Err(Error::AlreadyStarted { id: id.to_owned() });
        }
        let result = containers::start(&self.dir, &self.spec, id, state);
        self.save();
        result
    }

    fn signal_container(&mut self, id: &str, signal: i32) -> Result<(), Failure> {
        let Some(state) = self.state.containers.get(id) else {
            return Err(Failure::new(
                FailureKind::NotFound,
                format!("container {id} is not known to this monitor"),
            ));
        };
        if state.exit.is_some() {
            return Ok(());
        }
        let signal = Signal::try_from(signal)
            .map_err(|e| Failure::new(FailureKind::Invalid, format!("signal {signal}: {e}")))?;
        // The monitor is the parent of the container's first process: until it is reaped here
        // its pid cannot be reused.
        match nix::sys::signal::kill(Pid::from_raw(state.pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Failure::new(
                FailureKind::Internal,
                format!("cannot signal container {id}: {e}"),
            )),
        }
    }

    /// Kills a container's process (if it runs) and waits for it.
    fn kill_container(&mut self, id: &str) {
        let Some(state) = self.state.containers.get(id) else {
            return;
        };
        if state.exit.is_some() {
            return;
        }
        let pid = Pid::from_raw(state.pid);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        match waitpid(pid, None) {
            Ok(status) => self.record(status),
            Err(e) => log(format_args!("waiting for container {id}: {e}")),
        }
        if let Some(state) = self
            .state
            .containers
            .get_mut(id)
            .map(std::sync::Arc::make_mut)
            && state.exit.is_none()
        {
            state.exit = Some(Exit {
                code: 137,
                at_ns: crius_proto::now_ns(),
            });
            self.save();
        }
    }

    fn remove_container(&mut self, id: &str) -> Result<(), Error> {
        self.kill_container(id);
        let state = self.state.containers.get(id).cloned();
        containers::release(&Linux, &self.dir, id, state.as_deref())?;
        self.live.remove(id);
        if self.state.containers.remove(id).is_some() {
            self.save();
        }
        Ok(())
    }
}

/// Pins the sandbox's network namespace when it has one of its own.
fn pin_network(
    sys: &dyn crate::sys::Sys,
    dir: &Path,
    spec: &SandboxSpec,
    sandbox_pid: i32,
) -> Result<Option<PathBuf>, Error> {
    if !spec.new_net {
        return Ok(None);
    }
    mounts::pin_netns(sys, dir, sandbox_pid).map(Some)
}

/// The rest of the pod's host side once its sandbox runs and its network namespace is pinned:
/// the shm tmpfs, the state file, the socket. [`Undo`] releases the mounts when a step fails.
fn settle(
    sys: &dyn crate::sys::Sys,
    dir: &Path,
    spec: &SandboxSpec,
    state: &mut MonitorState,
) -> Result<UnixListener, Error> {
    if spec.new_ipc && spec.shm_size > 0 {
        mounts::mount_shm(sys, dir, spec.shm_size)?;
    }
    write_state(dir, state)?;
    let socket = dir.join(layout::SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = crius_proto::socket_path(dir, layout::SOCKET)
        .and_then(|(_dir, short)| UnixListener::bind(short))
        .map_err(Error::io(format!("cannot listen on {}", socket.display())))?;
    // Root's alone: the pod's mapped root may traverse the pod directory.
    std::fs::set_permissions(
        &socket,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .map_err(Error::io(format!("cannot restrict {}", socket.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(Error::io("cannot make the socket non-blocking"))?;
    Ok(listener)
}

/// Removes what a partly started monitor made, unless disarmed.
struct Undo<'a> {
    sys: &'a dyn crate::sys::Sys,
    dir: PathBuf,
    cgroups: Vec<PathBuf>,
    /// The pod's systemd scope (systemd driver).
    scope: Option<crius_proto::CgroupSpec>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = mounts::release(self.sys, &self.dir.join(layout::NETNS));
            let _ = mounts::release(self.sys, &self.dir.join(layout::SHM));
            remove_pod_cgroup(self.scope.as_ref(), &self.cgroups);
        }
    }
}

/// Removes the pod cgroup's directories (the sandbox leaf and containers below it first); with
/// the systemd driver, stops the pod's scope unit before, which also removes its cgroup.
fn remove_pod_cgroup(spec: Option<&crius_proto::CgroupSpec>, dirs: &[PathBuf]) {
    if let Some(cg) = spec.filter(|cg| cg.systemd)
        && let Err(e) = systemd::stop_pod(cg)
    {
        log(format_args!("{e}"));
    }
    cgroup::remove(dirs);
}

/// Releases everything of a pod whose monitor is gone (or refuses to answer): kills the monitor
/// and sandbox if they still run (checked against their start times), unmounts the netns and
/// shm, removes the pod cgroup and the socket.
pub(crate) fn cleanup(dir: &Path) -> Result<(), Error> {
    let state = crate::read_state(dir).ok();
    let mut cgroups = Vec::new();
    if let Some(state) = &state {
        for (pid, start) in [
            (state.monitor_pid, state.monitor_start_time),
            (state.sandbox_pid, state.sandbox_start_time),
        ] {
            if process_is(pid, start) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while process_is(state.sandbox_pid, state.sandbox_start_time) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        cgroups.extend(state.cgroup_dirs.iter().cloned());
    }
    let spec = crate::read_spec(dir).ok();
    if let Some(cg) = spec.as_ref().and_then(|s| s.cgroup.as_ref()) {
        for (_, d) in cgroup::pod_dirs(cg) {
            if !cgroups.contains(&d) {
                cgroups.push(d);
            }
        }
    }
    for id in containers::dirs(dir) {
        let container = state
            .as_ref()
            .and_then(|s| s.containers.get(&id))
            .map(|c| &**c);
        if let Some(c) = container
            && c.exit.is_none()
            && process_is(c.pid, c.start_time)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(c.pid), Signal::SIGKILL);
        }
        containers::release(&Linux, dir, &id, container)?;
    }
    rootfs::release_layers(&Linux, dir)?;
    rootfs::remove_writable_root(spec.as_ref().and_then(|s| s.writable_root.as_deref()))?;
    mounts::release(&Linux, &dir.join(layout::NETNS))?;
    mounts::release(&Linux, &dir.join(layout::SHM))?;
    remove_pod_cgroup(spec.as_ref().and_then(|s| s.cgroup.as_ref()), &cgroups);
    let _ = std::fs::remove_file(dir.join(layout::SOCKET));
    Ok(())
}

/// Gives the pages that handling requests freed (a container's spec and set-up, an exec's
/// buffers) back to the system: the monitor lives as long as its pod and otherwise kept its
/// heap at the size of its busiest moment.
fn return_freed_memory() {
    // SAFETY: malloc_trim only hands free heap pages back to the kernel; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Fake;

    fn state() -> MonitorState {
        MonitorState {
            version: PROTOCOL_VERSION,
            monitor_pid: 1,
            monitor_start_time: 0,
            sandbox_pid: 1,
            sandbox_start_time: 0,
            netns: None,
            cgroup_dirs: Vec::new(),
            exit: None,
            containers: Default::default(),
        }
    }

    #[test]
    fn a_failed_pod_step_leaves_no_mount() {
        // The network namespace is pinned first (criusd is told of it then), the rest after.
        let mut spec = crate::sandbox::tests::spec();
        spec.shm_size = 65536;
        let steps = {
            let tmp = tempfile::tempdir().unwrap();
            let fake = Fake::default();
            let mut state = state();
            state.netns = pin_network(&fake, tmp.path(), &spec, 1).unwrap();
            settle(&fake, tmp.path(), &spec, &mut state).unwrap();
            assert_eq!(state.netns, Some(tmp.path().join(layout::NETNS)));
            assert_eq!(fake.mounts_below(tmp.path()).len(), 2);
            assert!(crate::read_state(tmp.path()).is_ok());
            fake.calls.take()
        };
        assert_eq!(steps.len(), 2, "{steps:?}");
        for (step, call) in steps.iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let fake = Fake::default();
            fake.fail_at.set(Some(step));
            let undo = Undo {
                sys: &fake,
                dir: tmp.path().to_owned(),
                cgroups: Vec::new(),
                scope: None,
                armed: true,
            };
            let started = pin_network(&fake, tmp.path(), &spec, 1).and_then(|netns| {
                let mut state = state();
                state.netns = netns;
                settle(&fake, tmp.path(), &spec, &mut state)
            });
            assert!(started.is_err(), "{call}");
            drop(undo);
            assert_eq!(fake.mounts_below(tmp.path()), [], "{call}");
            assert!(!tmp.path().join(layout::NETNS).exists(), "{call}");
            assert!(!tmp.path().join(layout::SHM).exists(), "{call}");
        }
    }
}
