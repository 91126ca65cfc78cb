//! Containers of a pod: rootfs, spec, libcontainer create/start/kill/delete, stdio pipes.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crius_proto::{CONTAINERS_DIR, CgroupSpec, ContainerSpec, ContainerState, SandboxSpec};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::poll::PollFlags;

use crate::attach::{Attach, Source};
use crate::logs::{LogWriter, Stream};
use crate::mountapi::MountAttrFlags;
use crate::sys::Sys;
use crate::{Error, cgroup, identity, ocispec, rootfs};

/// Where libcontainer keeps its container state, in the pod directory.
const LIBCONTAINER_ROOT: &str = "libcontainer";

/// The size of one read of a container's output.
const DRAIN_READ: usize = 64 * 1024;

/// How much of one output stream the monitor copies before it serves its other sources
/// again (the rest stays in the pipe, which the next poll reports at once).
const DRAIN_BUDGET: usize = 4 * DRAIN_READ;

/// How much of one output stream is copied when the container's process is reaped: more than
/// a pipe holds (1 MiB at most without CAP_SYS_RESOURCE), so its last output is logged before
/// its exit is recorded.
const EXIT_DRAIN_BUDGET: usize = 4 << 20;

/// The parts of a container that live only as long as its monitor: output ends, log, stdin
/// and attached clients.
#[derive(Debug)]
pub(crate) struct Live {
    /// Read ends of stdout and stderr (with a tty: the terminal's master as stdout, no
    /// stderr), until they reach end of file.
    pub(crate) pipes: [Option<OwnedFd>; 2],
    /// The CRI log.
    pub(crate) log: LogWriter,
    /// The attach socket, stdin and attached clients.
    pub(crate) attach: Attach,
}

impl Live {
    /// Reads what is available on the pipe of `stream` into the log, at most
    /// [`DRAIN_BUDGET`] bytes, so a container that writes faster than the log takes it
    /// cannot keep the monitor from its other work; drops the pipe at end of file.
    pub(crate) fn drain(&mut self, stream: Stream) {
        self.drain_up_to(stream, DRAIN_BUDGET);
    }

    /// [`Live::drain`] with at most `budget` bytes.
    fn drain_up_to(&mut self, stream: Stream, budget: usize) {
        let index = stream as usize;
        let mut buf = vec![0u8; DRAIN_READ];
        let mut taken = 0;
        while taken < budget {
            let Some(fd) = self.pipes[index].as_ref() else {
                return;
            };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    self.pipes[index] = None;
                    self.log.flush(stream);
                    return;
                }
                Ok(n) => {
                    taken += n;
                    self.log.write(stream, &buf[..n]);
                    self.attach.broadcast(stream, &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                // A terminal whose every slave is closed answers EIO: its end.
                Err(_) => {
                    self.pipes[index] = None;
                    self.log.flush(stream);
                    return;
                }
            }
        }
    }

    /// What to poll for this container.
    pub(crate) fn interest(&self, out: &mut Vec<(Source, RawFd, PollFlags)>) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if let Some(fd) = &self.pipes[stream as usize] {
                out.push((Source::Output(stream), fd.as_raw_fd(), PollFlags::POLLIN));
            }
        }
        self.attach.interest(out);
    }

    /// Handles a ready source.
    pub(crate) fn ready(&mut self, source: Source, revents: PollFlags) {
        match source {
            Source::Output(stream) => self.drain(stream),
            other => self.attach.ready(other, revents),
        }
    }

    /// The container's process was reaped: its output is drained and logged (what the pipe
    /// holds, up to [`EXIT_DRAIN_BUDGET`]: a process it left behind may still write), attached
    /// clients are closed once they have it.
    pub(crate) fn exited(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            self.drain_up_to(stream, EXIT_DRAIN_BUDGET);
            self.log.flush(stream);
        }
        self.attach.exited();
    }
}

fn container_dir(pod_dir: &Path, id: &str) -> PathBuf {
    pod_dir.join(CONTAINERS_DIR).join(id)
}

/// The host ids of the pod's root (0:0 without a user namespace).
fn pod_root(sandbox: &SandboxSpec) -> (u32, u32) {
    let root = |ranges: Option<&Vec<crius_proto::IdRange>>| {
        ranges
            .and_then(|r| r.iter().find_map(|r| r.to_host(0)))
            .unwrap_or(0)
    };
    (
        root(sandbox.userns.as_ref().map(|u| &u.uids)),
        root(sandbox.userns.as_ref().map(|u| &u.gids)),
    )
}

/// The host ids of container ids `uid`:`gid` (themselves without a user namespace).
fn host_ids(sandbox: &SandboxSpec, uid: u32, gid: u32) -> Result<(u32, u32), Error> {
    let Some(userns) = &sandbox.userns else {
        return Ok((uid, gid));
    };
    let map = |ranges: &[crius_proto::IdRange], id: u32, kind: &'static str| {
        ranges
            .iter()
            .find_map(|r| r.to_host(id))
            .ok_or(Error::NotMapped { kind, id })
    };
    Ok((
        map(&userns.uids, uid, "uid")?,
        map(&userns.gids, gid, "gid")?,
    ))
}

/// A stdio pipe that could not be given to a process's user.
#[derive(Debug, thiserror::Error)]
#[error("cannot give the stdio pipes to {uid}:{gid}: {source}")]
pub struct PipeOwnerError {
    /// The host uid.
    uid: u32,
    /// The host gid.
    gid: u32,
    /// fchown's errno.
    source: nix::Error,
}

/// Gives the pipes among `fds` to host `uid`:`gid` (other kinds of file are left alone), so a
/// process of that user can reopen them through `/proc/self/fd` (`/dev/stdout`).
pub(crate) fn give_pipes(
    fds: impl IntoIterator<Item = RawFd>,
    uid: u32,
    gid: u32,
) -> Result<(), PipeOwnerError> {
    for fd in fds {
        // SAFETY: the descriptor stays open for the duration of the borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
            continue;
        }
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|source| PipeOwnerError { uid, gid, source })?;
    }
    Ok(())
}

/// Gives the terminal whose master is `master` to host uid `uid` (its group stays `tty`), so
/// the container's process, whatever its user, can reopen it (`/dev/stdout`, `/dev/tty`).
fn give_terminal(master: &OwnedFd, uid: u32) -> Result<(), Error> {
    let slave = pty_peer(master).map_err(|source| Error::Sys {
        what: "cannot open the container's terminal".into(),
        source,
    })?;
    nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(uid)), None).map_err(Error::sys(
        format!("cannot give the container's terminal to uid {uid}"),
    ))
}

/// A new descriptor of the slave side of the pty whose master is `master` (TIOCGPTPEER).
pub(crate) fn pty_peer(master: &OwnedFd) -> Result<OwnedFd, nix::errno::Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor; no memory is passed.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: the ioctl returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(slave) })
}

/// The container's cgroup: a child of the pod cgroup (with the systemd driver, in the pod
/// scope's delegated subtree, which crius writes itself).
fn container_cgroup(sandbox: &SandboxSpec, id: &str) -> Result<Option<CgroupSpec>, Error> {
    let Some(pod) = sandbox.cgroup.as_ref() else {
        return Ok(None);
    };
    Ok(Some(CgroupSpec {
        parent: format!("/{}", cgroup::relative_dir(pod)?.display()),
        name: format!("crius-{id}"),
        resources: Default::default(),
        systemd: false,
    }))
}

/// Creates container `spec.id` in the pod (sandbox process `sandbox_pid`) without starting
/// it. On failure nothing of it is left. `warm` is held until libcontainer has made the
/// process (it must be gone before the monitor enters the container's mount namespace).
pub(crate) fn create(
    sys: &dyn Sys,
    pod_dir: &Path,
    sandbox: &SandboxSpec,
    (sandbox_pid, pid_target): (i32, Option<i32>),
    spec: &ContainerSpec,
    warm: cgroup::Warm,
) -> Result<(ContainerState, Live), Error> {
    let staged = stage(sys, pod_dir, sandbox, sandbox_pid, spec)?;
    let result = launch(
        sys,
        pod_dir,
        sandbox,
        (sandbox_pid, pid_target),
        &staged,
        warm,
    );
    if result.is_err() {
        delete_libcontainer(pod_dir, &spec.id);
        unstage(sys, sandbox, &staged.dir, &spec.id, staged.cgroup.as_ref());
    }
    // libcontainer changes the working directory of the whole process.
    let _ = std::env::set_current_dir("/");
    result
}

/// What [`stage`] made ready on the host for libcontainer.
#[derive(Debug)]
struct Staged {
    /// The container's directory.
    dir: PathBuf,
    /// The container's cgroup.
    cgroup: Option<CgroupSpec>,
    /// The user and groups of the container's process.
    id: identity::Identity,
    /// The spec with each mount's source replaced by its staged mount.
    spec: ContainerSpec,
    /// The pod's files (hostname, hosts, resolv.conf, shm) bound idmapped, by name.
    pod_files: std::collections::BTreeMap<String, PathBuf>,
    /// The read-only copy of the host's `/sys` (host network).
    host_sys: Option<PathBuf>,
    /// The container's view of its cgroups (cgroup v1 or hybrid nodes).
    cgroup_view: Option<PathBuf>,
}

/// Makes the container's directory and everything libcontainer is given on the host: the
/// rootfs overlay (on the pod's idmapped layer views with a user namespace), the pod's files
/// and the volumes bound (idmapped, with their propagation, read-only as asked), the host's
/// `/sys` read-only, the cgroup view. On failure, nothing of the container is left (the pod's
/// layer views stay: they belong to the pod).
fn stage(
    sys: &dyn Sys,
    pod_dir: &Path,
    sandbox: &SandboxSpec,
    sandbox_pid: i32,
    spec: &ContainerSpec,
) -> Result<Staged, Error> {
    if spec.id.is_empty() || spec.id.contains('/') || spec.id.starts_with('.') {
        return Err(Error::BadContainerId {
            id: spec.id.clone(),
        });
    }
    let hierarchies = match sandbox.cgroup {
        Some(_) => sys.cgroup_hierarchies(),
        None => Vec::new(),
    };
    let cgroup = container_cgroup(sandbox, &spec.id)?;
    let dir = container_dir(pod_dir, &spec.id);
    let traverse_gid = sandbox.userns.as_ref().and_then(|u| u.root_gid());
    private_dir(sys, &pod_dir.join(CONTAINERS_DIR), traverse_gid)?;
    std::fs::create_dir(&dir).map_err(Error::io(format!("cannot create {}", dir.display())))?;
    let result = private_dir(sys, &dir, traverse_gid)
        .and_then(|()| private_dir(sys, &dir.join(rootfs::MOUNTS), traverse_gid))
        .and_then(|()| {
            let files = || stage_in(sys, pod_dir, &dir, sandbox, sandbox_pid, spec);
            // On a v1 or hybrid node crius builds the container's view of its own cgroups from
            // the container's cgroup directories, made now (libcontainer and the later attach
            // reuse them). It shares nothing with the other steps: it is built beside them.
            let Some(cg) = cgroup
                .as_ref()
                .filter(|_| !cgroup::v2_only_in(&hierarchies))
            else {
                return files();
            };
            let (staged, view) = beside(files, || {
                let dirs = cgroup::create_container_dirs(hierarchies.clone(), cg)?;
                rootfs::cgroup_v1_view(sys, &dir, &dirs, spec.privileged)
            });
            Ok(Staged {
                cgroup_view: Some(view?),
                ..staged?
            })
        });
    match result {
        Ok(staged) => Ok(Staged {
            dir,
            cgroup,
            ..staged
        }),
        Err(e) => {
            unstage(sys, sandbox, &dir, &spec.id, cgroup.as_ref());
            Err(e)
        }
    }
}

/// Removes what [`stage`] made: the container's mounts and directory, its writable layer and
/// its cgroup directories.
fn unstage(
    sys: &dyn Sys,
    sandbox: &SandboxSpec,
    dir: &Path,
    id: &str,
    cgroup: Option<&CgroupSpec>,
) {
    if let Err(e) = rootfs::remove(sys, dir) {
        crate::log(format_args!("container {id}: {e}"));
    }
    if let Some(w) = writable_dir(sandbox, id)
        && let Err(e) = rootfs::remove_writable(&w)
    {
        crate::log(format_args!("container {id}: {e}"));
    }
    if let Some(cg) = cgroup {
        let dirs: Vec<PathBuf> = cgroup::pod_dirs_in(sys.cgroup_hierarchies(), cg)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
        cgroup::remove(&dirs);
    }
}

/// A root-only directory (made when missing) that the pod's mapped root group may traverse
/// (`traverse_gid`: owner root, that group, mode 0710).
fn private_dir(sys: &dyn Sys, path: &Path, traverse_gid: Option<u32>) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    crius_proto::make_private_dir(path, None)
        .map_err(|e| Error::io(format!("cannot create {}", e.path.display()))(e.source))?;
    if let Some(gid) = traverse_gid {
        sys.chown(path, Some(0), Some(gid))
            .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o710)))
            .map_err(Error::io(format!("cannot restrict {}", path.display())))?;
    }
    Ok(())
}

/// Runs `side` on a thread of its own while `main` runs on this one (one after the other when no
/// thread can be had), and gives both results.
fn beside<A, B: Send>(main: impl FnOnce() -> A, side: impl Fn() -> B + Sync) -> (A, B) {
    std::thread::scope(
        |s| match std::thread::Builder::new().spawn_scoped(s, &side) {
            Ok(thread) => {
                let a = main();
                let b = thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (a, b)
            }
            Err(_) => (main(), side()),
        },
    )
}

/// [`stage`]'s steps once the container's directory exists, but the cgroup view: the rootfs,
/// the pod's files, the volumes, the host's `/sys`, the identity and the environment.
fn stage_in(
    sys: &dyn Sys,
    pod_dir: &Path,
    dir: &Path,
    sandbox: &SandboxSpec,
    sandbox_pid: i32,
    spec: &ContainerSpec,
) -> Result<Staged, Error> {
    let writable = writable_dir(sandbox, &spec.id);
    let writable = writable.as_deref().unwrap_or(dir);
    let merged = if let Some(userns) = &sandbox.userns {
        check_traversable(dir, pod_root(sandbox), userns.root_gid())?;
        rootfs::mount_idmapped_overlay(
            sys,
            pod_dir,
            dir,
            writable,
            &spec.layers_root,
            &spec.layer_dirs,
            sandbox_pid,
            pod_root(sandbox),
        )?
    } else {
        rootfs::mount_overlay(sys, dir, writable, &spec.layer_dirs, pod_root(sandbox))?
    }
    .merged;
    let passwd = identity::read_in_root(&merged, "/etc/passwd")?.unwrap_or_default();
    let group = identity::read_in_root(&merged, "/etc/group")?.unwrap_or_default();
    let id = identity::resolve(
        &spec.user,
        &identity::parse_passwd(&passwd),
        &identity::parse_group(&group),
    )?;
    // In a user-namespaced pod, the pod's files and the volumes that carry the pod's mapping
    // are bound idmapped, so host root's files are root's in the pod.
    let mut spec = spec.clone();
    let mut pod_files = std::collections::BTreeMap::new();
    // hostname, hosts and resolv.conf: on disk beneath the writable root (pods made before:
    // in the pod directory).
    let files_dir = sandbox.files_dir.as_deref().unwrap_or(pod_dir);
    let mut sources: Vec<(&str, PathBuf)> = [
        crius_proto::layout::HOSTNAME,
        crius_proto::layout::HOSTS,
        crius_proto::layout::RESOLV_CONF,
    ]
    .into_iter()
    .map(|name| (name, files_dir.join(name)))
    .collect();
    if sandbox.userns.is_some() {
        if sandbox.new_ipc && sandbox.shm_size > 0 {
            let shm = crius_proto::layout::SHM;
            sources.push((shm, pod_dir.join(shm)));
        }
        for (name, source) in sources {
            let mapped = rootfs::idmapped_bind(sys, dir, name, &source, sandbox_pid)?;
            pod_files.insert(name.to_owned(), mapped);
        }
    } else if spec.mounts.iter().any(|m| m.idmap) {
        return Err(Error::IdmapWithoutUserns);
    } else {
        for (name, source) in sources {
            pod_files.insert(name.to_owned(), source);
        }
    }
    for (i, m) in spec.mounts.iter_mut().enumerate() {
        let name = format!("volume-{i}");
        if let Some(volume) = &m.image {
            // In a user-namespaced pod the image's layers are the pod's idmapped views, as for
            // the rootfs: files root owns on the host are root's inside, nothing is chowned.
            let (layers, _store) = if sandbox.userns.is_some() {
                rootfs::idmapped_lowers(
                    sys,
                    pod_dir,
                    &spec.layers_root,
                    &volume.layer_dirs,
                    sandbox_pid,
                )?
            } else {
                (volume.layer_dirs.clone(), None)
            };
            m.host_path = rootfs::image_volume(sys, dir, &name, &layers, &volume.sub_path)?;
            continue;
        }
        m.host_path = if m.idmap {
            // A detached clone attached here is private.
            rootfs::idmapped_bind(sys, dir, &name, &m.host_path, sandbox_pid)?
        } else {
            rootfs::propagation_bind(sys, dir, &name, &m.host_path, &m.propagation)?
        };
        if m.recursive_read_only {
            rootfs::make_recursive_read_only(sys, &m.host_path, MountAttrFlags::empty())?;
        }
    }
    // On the host network in a user namespace (which may not mount a sysfs of a network
    // namespace it does not own) the container binds the host's /sys: crius' copy is read-only
    // in every submount (a recursive bind's "ro" covers only the top), so no cgroup or sysfs
    // file of the host can be written through it. Without a user namespace it mounts a sysfs
    // of its own, which shows none of the host's submounts (tracefs, debugfs, securityfs).
    let host_sys = if !sandbox.new_net && sandbox.userns.is_some() && !spec.privileged {
        let copy =
            rootfs::propagation_bind(sys, dir, rootfs::HOST_SYS, Path::new("/sys"), "rprivate")?;
        rootfs::make_recursive_read_only(sys, &copy, rootfs::MOUNT_ATTR_NOSUID_NODEV_NOEXEC)?;
        Some(copy)
    } else {
        None
    };
    // Like other runtimes, HOME comes from the image's passwd when the environment has none.
    if !spec.env.iter().any(|e| e.starts_with(b"HOME=")) {
        spec.env.push(format!("HOME={}", id.home).into_bytes());
    }
    Ok(Staged {
        dir: dir.to_owned(),
        cgroup: None,
        id,
        spec,
        pod_files,
        host_sys,
        cgroup_view: None,
    })
}

/// Builds the runtime spec of the staged container and has libcontainer create it; moves its
/// process into its cgroups and opens its stdio, log and attach socket.
fn launch(
    sys: &dyn Sys,
    pod_dir: &Path,
    sandbox: &SandboxSpec,
    (sandbox_pid, pid_target): (i32, Option<i32>),
    staged: &Staged,
    warm: cgroup::Warm,
) -> Result<(ContainerState, Live), Error> {
    let Staged {
        dir,
        cgroup,
        id,
        spec,
        pod_files,
        host_sys,
        cgroup_view,
    } = staged;
    let (dir, cgroup) = (dir.as_path(), cgroup.as_ref());
    let cgroups_path = cgroup
        .map(|c| format!("{}/{}", c.parent, c.name))
        .unwrap_or_else(|| format!("/crius/crius-{}", spec.id));
    let ns = ocispec::Namespaces {
        sandbox_pid,
        userns: sandbox.userns.is_some(),
        net: sandbox.new_net,
        ipc: sandbox.new_ipc,
        pid: sandbox.new_pid,
        pid_target,
        pod_dir,
        pod_files,
        shm: sandbox.new_ipc && sandbox.shm_size > 0,
        host_sys: host_sys.as_deref(),
        cgroup_view: cgroup_view.as_deref(),
        open_files: crate::pod_open_files(),
    };
    let rules = crate::devices::rules(spec).map_err(|e| Error::Spec(e.into()))?;
    let oci = ocispec::build(spec, &ns, id, &cgroups_path, rules.as_deref())?;
    // The spec holds the environment (Secrets passed as env): root only.
    let config_json = serde_json::to_vec(&oci).map_err(|source| Error::EncodeSpec { source })?;
    // Read by libcontainer at once, never after a crash (the start-up sweep removes a container
    // left half-made): no fsync.
    write_new(&dir.join("config.json"), &config_json, 0o600)
        .map_err(Error::io("cannot write the runtime spec"))?;

    let log = LogWriter::new(spec.log.as_ref().map(|l| crate::logs::LogTarget {
        directory: l.directory.clone(),
        relative: l.path.clone(),
    }))
    .map_err(Error::io(format!(
        "cannot open the container log {}",
        spec.log
            .as_ref()
            .map(|l| l.directory.join(&l.path))
            .unwrap_or_default()
            .display()
    )))?;
    let stdio = Stdio::new(dir, spec)?;
    // The process may reopen its stdio (`/dev/stdout`, a log file symlinked to it, as nginx's
    // image has): its pipes are its own user's, in host ids.
    let (host_uid, host_gid) = host_ids(sandbox, id.uid, id.gid)?;
    give_pipes(
        [&stdio.stdin, &stdio.stdout, &stdio.stderr]
            .into_iter()
            .flatten()
            .map(|fd| fd.as_raw_fd()),
        host_uid,
        host_gid,
    )?;
    let libcontainer_root = pod_dir.join(LIBCONTAINER_ROOT);
    std::fs::create_dir_all(&libcontainer_root)
        .map_err(Error::io("cannot create the libcontainer root"))?;
    let Stdio {
        stdin,
        stdout,
        stderr,
        console,
        pipes,
        stdin_writer,
    } = stdio;
    let container = ContainerBuilder::new(spec.id.clone(), SyscallType::default())
        .with_executor(crate::executor::CriusExecutor {
            env: spec.env.clone(),
        })
        .with_root_path(&libcontainer_root)
        .and_then(|b| b.validate_id())
        .map(|b| {
            let b = b.with_console_socket(console.as_ref().map(|c| c.path.clone()));
            match (stdin, stdout, stderr) {
                (Some(i), Some(o), Some(e)) => b.with_stdin(i).with_stdout(o).with_stderr(e),
                _ => b,
            }
        })
        .and_then(|b| b.as_init(dir).with_systemd(false).with_detach(true).build())
        .map_err(Error::libcontainer(
            "libcontainer cannot create the container",
        ));
    // libcontainer's moves are done.
    drop(warm);
    // The builder has dropped the container's ends of the pipes by now.
    let container = container?;
    restore_dumpable();
    // Not fatal: the container exists now; RemoveContainer releases what is left.
    if let Err(e) = rootfs::release_volume_staging(sys, dir) {
        crate::log(format_args!("container {}: {e}", spec.id));
    }
    let pid = container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| Error::Io {
            what: "libcontainer created the container".into(),
            source: std::io::Error::other("it reported no pid"),
        })?;
    if let Some(adj) = spec.oom_score_adj {
        crate::sandbox::set_oom_score_adj(nix::unistd::Pid::from_raw(pid), adj);
    }
    // libcontainer mounts a cgroup filesystem writable whatever the options say.
    if !spec.privileged && cgroup_view.is_none() {
        rootfs::read_only_in(
            sys,
            pid,
            Path::new("/sys/fs/cgroup"),
            rootfs::MOUNT_ATTR_NOSUID_NODEV_NOEXEC,
        )?;
    }
    let v2_dir = match cgroup {
        Some(cg) => {
            let dirs = cgroup::attach_container(cg, pid, &spec.resources)?;
            let (v2, v1) = cgroup::split_v2(&dirs, &cgroup::v2_mounts());
            if let Some(rules) = &rules {
                for dir in v1.iter().filter(|d| d.join("devices.list").exists()) {
                    crate::devices::restrict_v1(dir, rules).map_err(Error::io(format!(
                        "cannot write the device rules of {}",
                        dir.display()
                    )))?;
                }
            }
            v2
        }
        // Without a pod cgroup, libcontainer's manager made the container's cgroup: a v2 one
        // on a v2-only node (on a v1 or hybrid node the process is still in this monitor's v2
        // cgroup, which is not the container's to restrict).
        None if cgroup::v2_only_in(&sys.cgroup_hierarchies()) => cgroup::v2_mounts()
            .first()
            .map(|m| m.join(cgroups_path.trim_start_matches('/'))),
        None => None,
    };
    // Cgroup v2 has no devices controller: the container's v2 cgroup gets the program that
    // keeps its device rules, before its first process runs anything of the image's. (On a
    // hybrid node the v1 devices controller enforces the same rules too.)
    if let (Some(dir), Some(rules)) = (&v2_dir, &rules) {
        crate::devices::enforce(rules, dir).map_err(Error::DeviceProgram)?;
    }
    let state = ContainerState {
        pid,
        start_time: crius_proto::process_start_time(pid).unwrap_or(0),
        created_at_ns: crius_proto::now_ns(),
        started_at_ns: None,
        exit: None,
        oom_killed: false,
        user: None,
        // Without a pod cgroup, the one libcontainer made on a v2-only node: ExecSync
        // processes are born in these.
        cgroup_dirs: cgroup.map_or_else(
            || v2_dir.into_iter().collect(),
            |c| cgroup::pod_dirs(c).into_iter().map(|(_, d)| d).collect(),
        ),
        writable_dir: writable_dir(sandbox, &spec.id),
    };
    let (pipes, pty) = match console {
        Some(console) => {
            let master = console.receive()?;
            give_terminal(&master, host_uid)?;
            let pty = master
                .try_clone()
                .map_err(Error::io("cannot duplicate the terminal"))?;
            crate::attach::set_nonblocking(&master)?;
            ([Some(master), None], Some(pty))
        }
        None => (pipes, None),
    };
    let stdin_writer = match (&pty, spec.stdin) {
        (Some(pty), true) => Some(
            pty.try_clone()
                .map_err(Error::io("cannot duplicate the terminal"))?,
        ),
        (Some(_), false) => None,
        (None, _) => stdin_writer,
    };
    let attach = Attach::bind(dir, stdin_writer, spec.stdin_once, pty)?;
    Ok((state, Live { pipes, log, attach }))
}

/// Writes `data` to the new file `path` (created with `mode`).
fn write_new(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?
        .write_all(data)
}

/// The container's stdio before libcontainer creates it: the container's ends (none with a
/// tty: libcontainer makes the terminal inside the container and sends its master to the
/// console socket), the monitor's ends.
struct Stdio {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    console: Option<ConsoleSocket>,
    /// Read ends of stdout and stderr (non-blocking).
    pipes: [Option<OwnedFd>; 2],
    /// Write end of stdin when the container keeps stdin open.
    stdin_writer: Option<OwnedFd>,
}

impl Stdio {
    fn new(dir: &Path, spec: &ContainerSpec) -> Result<Stdio, Error> {
        if spec.tty {
            return Ok(Stdio {
                stdin: None,
                stdout: None,
                stderr: None,
                console: Some(ConsoleSocket::bind(dir)?),
                pipes: [None, None],
                stdin_writer: None,
            });
        }
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(Error::sys("cannot create a pipe"))
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        for fd in [&out_r, &err_r] {
            crate::attach::set_nonblocking(fd)?;
        }
        let (stdin, stdin_writer) = if spec.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null =
                std::fs::File::open("/dev/null").map_err(Error::io("cannot open /dev/null"))?;
            (OwnedFd::from(null), None)
        };
        Ok(Stdio {
            stdin: Some(stdin),
            stdout: Some(out_w),
            stderr: Some(err_w),
            console: None,
            pipes: [Some(out_r), Some(err_r)],
            stdin_writer,
        })
    }
}

/// The socket libcontainer sends a tty container's terminal master to.
struct ConsoleSocket {
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

/// How long the container may take to send its terminal once created.
const CONSOLE_TIMEOUT_MS: u16 = 5000;

impl ConsoleSocket {
    fn bind(dir: &Path) -> Result<ConsoleSocket, Error> {
        let path = dir.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = crius_proto::socket_path(dir, "console.sock")
            .and_then(|(_dir, short)| std::os::unix::net::UnixListener::bind(short))
            .map_err(Error::io(format!("cannot listen on {}", path.display())))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Receives the terminal master libcontainer's init sent (it connected during create).
    fn receive(self) -> Result<OwnedFd, Error> {
        let result = self.receive_inner();
        let _ = std::fs::remove_file(&self.path);
        result
    }

    fn receive_inner(&self) -> Result<OwnedFd, Error> {
        use std::os::fd::FromRawFd;
        let mut fds = [nix::poll::PollFd::new(
            self.listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, CONSOLE_TIMEOUT_MS)
            .map_err(Error::sys("cannot wait for the container's terminal"))?;
        if ready == 0 {
            return Err(Error::TerminalNotSent);
        }
        let (conn, _) = self
            .listener
            .accept()
            .map_err(Error::io("cannot accept the container's terminal"))?;
        conn.set_read_timeout(Some(std::time::Duration::from_millis(u64::from(
            CONSOLE_TIMEOUT_MS,
        ))))
        .map_err(Error::io("cannot set a timeout"))?;
        let mut name = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: name.as_mut_ptr().cast(),
            iov_len: name.len(),
        };
        // Room for one descriptor's control message.
        let mut control = [0u64; 8];
        // SAFETY: an all-zero msghdr is valid; the pointers below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: recvmsg writes within the buffers `msg` describes.
        let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(Error::io("cannot receive the container's terminal")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the control buffer was filled by recvmsg; CMSG_* walk it within its length.
        let fd = unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            {
                None
            } else {
                Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                ))
            }
        };
        match fd {
            // SAFETY: SCM_RIGHTS gave this process a new descriptor it now owns.
            Some(fd) if fd >= 0 => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            _ => Err(Error::NoTerminalInMessage),
        }
    }
}

/// The container's process runs as the pod's mapped root, an unprivileged user on the host: it
/// must be able to reach its rootfs through every directory above it.
fn check_traversable(dir: &Path, (uid, _): (u32, u32), gid: Option<u32>) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors() {
        let meta = std::fs::metadata(ancestor)
            .map_err(Error::io(format!("cannot stat {}", ancestor.display())))?;
        let mode = meta.mode();
        let searchable = mode & 0o001 != 0
            || (meta.uid() == uid && mode & 0o100 != 0)
            || (Some(meta.gid()) == gid && mode & 0o010 != 0);
        if !searchable {
            return Err(Error::NotTraversable {
                path: ancestor.to_owned(),
                mode: mode & 0o7777,
                owner: (meta.uid(), meta.gid()),
                root: uid,
            });
        }
    }
    Ok(())
}

/// libcontainer makes its caller non-dumpable; the monitor's /proc files should stay readable
/// by root tools.
fn restore_dumpable() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 1) only changes a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
}

/// Starts a created container: its process execs the command.
pub(crate) fn start(
    pod_dir: &Path,
    sandbox: &SandboxSpec,
    id: &str,
    state: &mut ContainerState,
) -> Result<(), Error> {
    let mut container = Container::load(pod_dir.join(LIBCONTAINER_ROOT).join(id))
        .map_err(Error::libcontainer(format!("cannot load container {id}")))?;
    let result = container.start().map_err(Error::libcontainer(format!(
        "libcontainer cannot start container {id}"
    )));
    let _ = std::env::set_current_dir("/");
    restore_dumpable();
    result?;
    state.started_at_ns = Some(crius_proto::now_ns());
    state.user = identity::process_user(state.pid, sandbox.userns.as_ref());
    Ok(())
}

/// Removes libcontainer's state of container `id` (and the cgroup it made). Missing is fine.
pub(crate) fn delete_libcontainer(pod_dir: &Path, id: &str) {
    let path = pod_dir.join(LIBCONTAINER_ROOT).join(id);
    if !path.exists() {
        return;
    }
    match Container::load(path.clone()) {
        Ok(mut c) => {
            if let Err(e) = c.delete(true) {
                crate::log(format_args!("libcontainer cannot delete {id}: {e}"));
            }
        }
        Err(e) => crate::log(format_args!("cannot load container {id}: {e}")),
    }
    let _ = std::env::set_current_dir("/");
    restore_dumpable();
    let _ = crius_proto::tree::remove(&path);
}

/// Releases a container whose process is gone: libcontainer state, cgroups, rootfs.
pub(crate) fn release(
    sys: &dyn Sys,
    pod_dir: &Path,
    id: &str,
    state: Option<&ContainerState>,
) -> Result<(), Error> {
    delete_libcontainer(pod_dir, id);
    if let Some(s) = state {
        cgroup::remove(&s.cgroup_dirs);
    }
    rootfs::remove(sys, &container_dir(pod_dir, id))?;
    match state.and_then(|s| s.writable_dir.as_deref()) {
        Some(w) => rootfs::remove_writable(w),
        None => Ok(()),
    }
}

/// Where container `id` keeps its writable layer: beneath the pod's writable root on disk, or
/// (pods made before there was one) in its own directory.
fn writable_dir(sandbox: &SandboxSpec, id: &str) -> Option<PathBuf> {
    sandbox.writable_root.as_ref().map(|root| root.join(id))
}

/// Whether a v1 memory cgroup or v2 memory.events recorded an OOM kill.
pub(crate) fn oom_killed(state: &ContainerState) -> bool {
    state.cgroup_dirs.iter().any(|dir| {
        ["memory.oom_control", "memory.events"].iter().any(|f| {
            std::fs::read_to_string(dir.join(f)).is_ok_and(|text| {
                text.lines().any(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        })
    })
}

/// The ids of the container directories in a pod directory (for cleanup after a crash).
pub(crate) fn dirs(pod_dir: &Path) -> Vec<String> {
    std::fs::read_dir(pod_dir.join(CONTAINERS_DIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::Fake;
    use crius_proto::{BindMount, IdRange, ImageVolume, UserNamespace};

    /// A user-namespaced, host-network pod with a v1 pod cgroup and a writable root, all in
    /// `tmp`, and a container with two layers, an idmapped volume, a recursively read-only
    /// volume and an image volume; the fake's two v1 hierarchies sit in `tmp` too.
    fn fixture(tmp: &Path) -> (Fake, PathBuf, SandboxSpec, ContainerSpec) {
        let map = |id: u32| {
            vec![IdRange {
                container_id: 0,
                host_id: id,
                length: 65536,
            }]
        };
        let mut sandbox = crate::sandbox::tests::spec();
        sandbox.userns = Some(UserNamespace {
            uids: map(nix::unistd::geteuid().as_raw()),
            gids: map(nix::unistd::getegid().as_raw()),
        });
        sandbox.new_net = false;
        sandbox.shm_size = 65536;
        sandbox.writable_root = Some(tmp.join("writable"));
        sandbox.cgroup = Some(CgroupSpec {
            parent: "/kubepods".into(),
            name: "crius-pod".into(),
            resources: Default::default(),
            systemd: false,
        });
        let pod_dir = tmp.join("pod");
        std::fs::create_dir(&pod_dir).unwrap();
        let files = tmp.join("writable/etc");
        sandbox.files_dir = Some(files.clone());
        std::fs::create_dir_all(&files).unwrap();
        for name in [
            crius_proto::layout::HOSTNAME,
            crius_proto::layout::HOSTS,
            crius_proto::layout::RESOLV_CONF,
        ] {
            std::fs::write(files.join(name), "").unwrap();
        }
        std::fs::create_dir(pod_dir.join(crius_proto::layout::SHM)).unwrap();
        let mut hierarchies = Vec::new();
        for controller in ["memory", "pids"] {
            let mount = tmp.join("cgroup").join(controller);
            std::fs::create_dir_all(mount.join("kubepods/crius-pod")).unwrap();
            hierarchies.push(cgroup::Hierarchy {
                mount,
                v2: false,
                controllers: vec![controller.into()],
            });
        }
        let volume = tmp.join("volume");
        std::fs::create_dir(&volume).unwrap();
        let layers = tmp.join("layers");
        let mut spec = crate::ocispec::tests::spec();
        spec.layers_root = layers.clone();
        spec.layer_dirs = vec![layers.join("a"), layers.join("b")];
        let bind = |idmap, recursive_read_only| BindMount {
            host_path: volume.clone(),
            container_path: "/v".into(),
            readonly: true,
            idmap,
            propagation: "rprivate".into(),
            recursive_read_only,
            flags: Vec::new(),
            image: None,
        };
        spec.mounts = vec![
            bind(true, false),
            bind(false, true),
            BindMount {
                image: Some(ImageVolume {
                    layer_dirs: vec![layers.join("c"), layers.join("a")],
                    ..Default::default()
                }),
                ..bind(false, false)
            },
        ];
        // The pod's attached layer views unless a test says otherwise.
        let fake = Fake {
            hierarchies,
            detached: crate::sys::fake::Shared::new(Some(false)),
            ..Default::default()
        };
        (fake, pod_dir, sandbox, spec)
    }

    /// The index of the first call that starts with `call`.
    fn position(calls: &[String], call: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(call))
            .unwrap_or_else(|| panic!("no call {call} in {calls:#?}"))
    }

    #[test]
    fn staging_mounts_in_order_and_read_only_where_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let (fake, pod_dir, sandbox, spec) = fixture(tmp.path());
        let staged = stage(&fake, &pod_dir, &sandbox, 1, &spec).unwrap();
        let dir = pod_dir.join("containers/c");
        let mounts = dir.join("mounts");
        assert_eq!(staged.dir, dir);
        let calls = fake.calls.borrow().clone();
        let at = |path: &Path, call: &str| position(&calls, &format!("{call} {}", path.display()));
        // The pod's layer views exist before the overlay is mounted on them; the overlay's
        // upper and work dirs are the pod root's before it is mounted, and it is checked
        // writable right after.
        let overlay = at(&dir.join("rootfs"), "overlay");
        assert!(at(&pod_dir.join("layers/a"), "attach") < overlay);
        assert!(at(&pod_dir.join("layers/b"), "attach") < overlay);
        assert!(at(&tmp.path().join("writable/c/upper"), "chown") < overlay);
        assert!(at(&tmp.path().join("writable/c/work"), "chown") < overlay);
        assert_eq!(
            calls[overlay + 1],
            format!("statfs {}", dir.join("rootfs").display())
        );
        // The host's /sys: bound, made private, then read-only in every submount.
        let sys = mounts.join(rootfs::HOST_SYS);
        assert!(at(&sys, "bind") < at(&sys, "propagation"));
        assert!(at(&sys, "propagation") < at(&sys, "setattr"));
        // The cgroup view: a tmpfs, the container's cgroups bound in, then read-only.
        let view = mounts.join(rootfs::CGROUP_VIEW);
        assert!(at(&view, "tmpfs") < at(&view.join("memory"), "bind"));
        assert!(at(&view.join("pids"), "bind") < at(&view, "setattr"));
        // The image volume's new layer has a view too; its shared one is reused.
        assert!(at(&pod_dir.join("layers/c"), "attach") < at(&mounts.join("volume-2"), "overlay"));
        assert_eq!(
            calls
                .iter()
                .filter(|c| *c == &format!("attach {}", pod_dir.join("layers/a").display()))
                .count(),
            1
        );
        let read_only = |path: &Path| {
            fake.mounts
                .borrow()
                .iter()
                .rev()
                .find(|m| m.target == path)
                .unwrap_or_else(|| panic!("{} is not mounted", path.display()))
                .read_only
        };
        assert!(!read_only(&dir.join("rootfs")));
        assert!(read_only(&pod_dir.join("layers/a")));
        assert!(!read_only(&mounts.join("volume-0")));
        assert!(read_only(&mounts.join("volume-1")));
        assert!(read_only(&mounts.join("volume-2")));
        assert!(read_only(&sys));
        assert!(read_only(&view.join("memory")));
        for name in ["hostname", "hosts", "resolv.conf", "shm"] {
            assert_eq!(staged.pod_files.get(name), Some(&mounts.join(name)));
        }
        // The pod's files come from the writable root on disk, its shm from the pod directory.
        let files = sandbox.files_dir.clone().expect("files dir");
        for name in ["hostname", "hosts", "resolv.conf"] {
            position(&calls, &format!("open_tree {}", files.join(name).display()));
        }
        position(
            &calls,
            &format!("open_tree {}", pod_dir.join("shm").display()),
        );
        assert_eq!(staged.spec.mounts[0].host_path, mounts.join("volume-0"));
        assert_eq!(staged.host_sys.as_deref(), Some(sys.as_path()));
        assert_eq!(staged.cgroup_view.as_deref(), Some(view.as_path()));
        assert!(
            tmp.path()
                .join("cgroup/memory/kubepods/crius-pod/crius-c")
                .is_dir()
        );
    }

    #[test]
    fn layers_come_from_one_detached_store_where_overlayfs_stacks_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (fake, pod_dir, sandbox, spec) = fixture(tmp.path());
        fake.detached.set(None);
        stage(&fake, &pod_dir, &sandbox, 1, &spec).unwrap();
        let calls = fake.calls.borrow().clone();
        let layers = tmp.path().join("layers");
        // The store is cloned and idmapped for the rootfs, then for the image volume; no
        // layer view is attached anywhere.
        let idmaps = calls
            .iter()
            .filter(|c| **c == format!("idmap {}", layers.display()))
            .count();
        assert_eq!(idmaps, 2, "{calls:#?}");
        assert!(
            !calls.iter().any(|c| c.contains("/pod/layers")),
            "{calls:#?}"
        );
        assert_eq!(fake.mounts_below(&pod_dir.join(rootfs::LAYERS)), []);
        assert_eq!(fake.detached.get(), Some(true));
        let rootfs = pod_dir.join("containers/c/rootfs");
        assert_eq!(fake.mounts_below(&rootfs).len(), 1);
    }

    #[test]
    fn a_kernel_refusing_detached_layers_gets_the_pods_layer_views() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut fake, pod_dir, sandbox, mut spec) = fixture(tmp.path());
        fake.detached.set(None);
        fake.refuse_detached = true;
        stage(&fake, &pod_dir, &sandbox, 1, &spec).unwrap();
        assert_eq!(fake.detached.get(), Some(false));
        let rootfs = pod_dir.join("containers/c/rootfs");
        let calls = fake.calls.borrow().clone();
        let overlays = |calls: &[String]| {
            calls
                .iter()
                .filter(|c| **c == format!("overlay {}", rootfs.display()))
                .count()
        };
        assert_eq!(
            overlays(&calls),
            2,
            "refused, then on the views: {calls:#?}"
        );
        let attach = position(
            &calls,
            &format!("attach {}", pod_dir.join("layers/a").display()),
        );
        assert!(
            attach
                < calls
                    .iter()
                    .rposition(|c| c.starts_with("overlay"))
                    .unwrap()
        );
        assert_eq!(fake.mounts_below(&rootfs).len(), 1);
        // The next container goes to the views at once.
        spec.id = "d".into();
        let before = fake.calls.borrow().len();
        stage(&fake, &pod_dir, &sandbox, 1, &spec).unwrap();
        let layers = tmp.path().join("layers");
        assert!(
            !fake.calls.borrow()[before..]
                .iter()
                .any(|c| *c == format!("idmap {}", layers.display()))
        );
    }

    #[test]
    fn a_failed_staging_step_leaves_nothing_of_the_container() {
        for detached in [false, true] {
            a_failed_staging_step_leaves_nothing(detached);
        }
    }

    /// Fails each step of a staging in turn (with layer views, or with the detached store).
    fn a_failed_staging_step_leaves_nothing(detached: bool) {
        // The calls of a staging that succeeds, with `<tmp>` for its temporary directory.
        let calls: Vec<String> = {
            let tmp = tempfile::tempdir().unwrap();
            let (fake, pod_dir, sandbox, spec) = fixture(tmp.path());
            fake.detached.set(Some(detached));
            stage(&fake, &pod_dir, &sandbox, 1, &spec).unwrap();
            let base = tmp.path().display().to_string();
            let calls = fake.calls.take();
            calls.iter().map(|c| c.replace(&base, "<tmp>")).collect()
        };
        assert!(calls.len() > 25, "only {} calls", calls.len());
        // Calls are named by their text and rank among equal ones: the cgroup view's thread
        // interleaves its calls with the others' differently from run to run.
        for (step, call) in calls.iter().enumerate() {
            let before = calls[..step].iter().filter(|c| *c == call).count();
            let tmp = tempfile::tempdir().unwrap();
            let (fake, pod_dir, sandbox, spec) = fixture(tmp.path());
            fake.detached.set(Some(detached));
            let here = call.replace("<tmp>", &tmp.path().display().to_string());
            fake.fail_on.set(Some((here, before)));
            let failed = stage(&fake, &pod_dir, &sandbox, 1, &spec);
            assert!(
                failed.is_err(),
                "step {step} ({call}) failed but staging went on"
            );
            let dir = pod_dir.join("containers/c");
            assert_eq!(fake.mounts_below(&dir), [], "step {step} ({call})");
            assert!(!dir.exists(), "step {step} ({call}) left {}", dir.display());
            assert!(
                !tmp.path().join("writable/c").exists(),
                "step {step} ({call})"
            );
            for controller in ["memory", "pids"] {
                let cgroup = tmp.path().join("cgroup").join(controller);
                assert!(!cgroup.join("kubepods/crius-pod/crius-c").exists());
                assert!(cgroup.join("kubepods/crius-pod").is_dir());
            }
            // Only the pod's layer views (the pod's, released with it) may stay mounted.
            let left: Vec<_> = fake
                .mounts
                .borrow()
                .iter()
                .filter(|m| !m.target.starts_with(pod_dir.join(rootfs::LAYERS)))
                .cloned()
                .collect();
            assert_eq!(left, [], "step {step} ({call})");
        }
    }
}
