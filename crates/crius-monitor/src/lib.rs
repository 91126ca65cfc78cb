//! The crius pod monitor: one single-threaded process per pod, started by criusd as
//! `criusd monitor --pod-dir DIR`, or ahead of its pod as `criusd monitor --spare` (given `DIR`
//! on its stdin), and detached from it. It creates the pod sandbox with one
//! clone (user, network, IPC, UTS, PID, mount and cgroup namespaces), writes the user namespace
//! maps, pins the network namespace, places the sandbox in the pod cgroup, is the child subreaper
//! of the pod, and serves the monitor protocol of `crius-proto` on `DIR/monitor.sock`.
//!
//! Raw namespace, mount and clone syscalls live in this crate alone; criusd calls in only from
//! its `main` before any thread exists ([`main`] and [`probe_idmap`]).

mod attach;
mod capabilities;
mod cgroup;
mod containers;
mod devices;
mod exec;
mod executor;
mod identity;
mod logs;
mod lowers;
mod mountapi;
mod mounts;
mod ocispec;
mod pause_filter;
mod probe;
mod proctitle;
mod resolve;
mod rootfs;
mod sandbox;
mod seccomp;
mod server;
mod sys;
mod systemd;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crius_proto::{MonitorState, PROTOCOL_VERSION, SandboxSpec, Startup, layout};

pub use probe::probe_idmap;

/// Entry points of the fuzz targets in `fuzz/` into parsers of untrusted input.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::identity::IdentityError;

    /// Resolves the image user `image_user` against `passwd` and `group` text as a container
    /// start does; the uid, gid and group list.
    pub fn identity(
        passwd: &str,
        group: &str,
        image_user: &str,
        strict: bool,
    ) -> Result<(u32, u32, Vec<u32>), IdentityError> {
        let req = crius_proto::UserRequest {
            image_user: image_user.to_owned(),
            strict,
            ..crius_proto::UserRequest::default()
        };
        let passwd = crate::identity::parse_passwd(passwd);
        let group = crate::identity::parse_group(group);
        crate::identity::resolve(&req, &passwd, &group).map(|i| (i.uid, i.gid, i.groups))
    }
}

/// Why a monitor could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is not `monitor --pod-dir DIR [--cleanup]` or `monitor --spare`.
    #[error("usage: criusd monitor --pod-dir DIR [--cleanup | --exec ID -- CMD...] | --spare")]
    Usage,
    /// A file of the pod directory could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The spec or state file is of another protocol version.
    #[error("{path} has version {found}, this monitor speaks {PROTOCOL_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The sandbox process exited before it reported how its setup went.
    #[error("the sandbox process failed: it exited while setting up")]
    SandboxExited,
    /// The sandbox process reported a failure while setting itself up.
    #[error("the sandbox process failed: {message}")]
    SandboxFailed {
        /// The step that failed and its error, as the sandbox process wrote them.
        message: String,
    },
    /// The pod's sandbox process has exited.
    #[error("the pod sandbox is not running")]
    SandboxNotRunning,
    /// The kernel refused to create the sandbox namespaces for lack of namespaces.
    #[error("cannot create the sandbox namespaces: {source} (user.max_*_namespaces exhausted?)")]
    NamespaceLimit {
        /// clone's errno (ENOSPC or EUSERS).
        source: nix::Error,
    },
    /// A container id that cannot name a directory.
    #[error("bad container id {id:?}")]
    BadContainerId {
        /// The id.
        id: String,
    },
    /// A container of this id exists in the pod.
    #[error("container {id} exists")]
    ContainerExists {
        /// The id.
        id: String,
    },
    /// No container of this id exists in the pod.
    #[error("container {id} is not known")]
    UnknownContainer {
        /// The id.
        id: String,
    },
    /// The container was started before, or has exited.
    #[error("container {id} was already started")]
    AlreadyStarted {
        /// The id.
        id: String,
    },
    /// The container whose PID namespace a container joins is not running in the pod.
    #[error("pid namespace target container {target} is not running in this pod")]
    PidTargetNotRunning {
        /// The target container's id.
        target: String,
    },
    /// A container id outside the pod's user namespace mapping.
    #[error("{kind} {id} is not mapped in the pod")]
    NotMapped {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The id in the container.
        id: u32,
    },
    /// The container's user cannot be resolved in its image.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// A mount asks for an id mapping in a pod without a user namespace.
    #[error("a mount asks for an id mapping but the pod has no user namespace")]
    IdmapWithoutUserns,
    /// The container's runtime spec cannot be built.
    #[error(transparent)]
    Spec(#[from] ocispec::SpecError),
    /// The container's device program cannot be loaded or attached.
    #[error(transparent)]
    DeviceProgram(devices::DeviceError),
    /// The container's runtime spec cannot be encoded.
    #[error("cannot encode the runtime spec: {source}")]
    EncodeSpec {
        /// serde's error.
        source: serde_json::Error,
    },
    /// The container's stdio pipes cannot be given to its user.
    #[error(transparent)]
    PipeOwner(#[from] containers::PipeOwnerError),
    /// A tty container's terminal did not arrive on the console socket in time.
    #[error("the container did not send its terminal")]
    TerminalNotSent,
    /// A message on the console socket carried no terminal.
    #[error("the container's console message carried no terminal")]
    NoTerminalInMessage,
    /// A directory above a user-namespaced container's rootfs that the pod's root cannot
    /// search.
    #[error(
        "{path} (mode {mode:o}, owner {}:{}) cannot be searched by the pod's mapped root \
         ({root}): user-namespaced containers need every directory above their root \
         filesystem to be searchable by it",
        .owner.0,
        .owner.1
    )]
    NotTraversable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner and group.
        owner: (u32, u32),
        /// The host uid of the pod's root.
        root: u32,
    },
    /// An image has no layers.
    #[error("{what} has no layers")]
    NoLayers {
        /// `the image` or `the image volume`.
        what: &'static str,
    },
    /// A layer that is not a directory right under the layer store.
    #[error("layer {layer} is not directly under {root}")]
    LayerOutsideStore {
        /// The layer.
        layer: PathBuf,
        /// The layer store.
        root: PathBuf,
    },
    /// A mount tree cannot be cloned for an idmapped mount.
    #[error("cannot clone the {what} {path}: {source}")]
    CloneTree {
        /// `layer` or `mount`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What failed.
        source: mountapi::CallError,
    },
    /// A layer cannot be idmapped.
    #[error("cannot idmap the layer {layer}: {source}")]
    IdmapLayer {
        /// The layer.
        layer: PathBuf,
        /// What failed.
        source: mountapi::CallError,
    },
    /// A mount cannot be idmapped.
    #[error(
        "cannot mount {path} idmapped (its filesystem may not support idmapped mounts): {source}"
    )]
    IdmapMount {
        /// The mount's source.
        path: PathBuf,
        /// What failed.
        source: mountapi::CallError,
    },
    /// A path holds a NUL byte.
    #[error("{source}")]
    NulInPath {
        /// The path.
        path: PathBuf,
        /// Where the NUL is.
        source: std::ffi::NulError,
    },
    /// The kernel's overlayfs lacks `lowerdir+`, which an image volume of several layers needs.
    #[error("cannot mount the image volume at {target}: this kernel lacks overlayfs lowerdir+")]
    NoLowerdirPlus {
        /// The mount point.
        target: PathBuf,
    },
    /// An image volume's sub path cannot be resolved within the image.
    #[error("image_sub_path {sub_path:?} cannot be resolved beneath the image: {source}")]
    SubPath {
        /// The sub path.
        sub_path: String,
        /// openat2's errno.
        source: nix::Error,
    },
    /// A mount just made is missing from mountinfo.
    #[error("{path} is not in mountinfo")]
    NotInMountinfo {
        /// The mount point.
        path: PathBuf,
    },
    /// The overlay rootfs came out read-only.
    #[error(
        "the overlay rootfs at {path} came out read-only (its upper dir is unusable); \
         mount options {mount_options}, superblock options {super_options}"
    )]
    ReadOnlyRootfs {
        /// The mount point.
        path: PathBuf,
        /// The mount's options in mountinfo.
        mount_options: String,
        /// The superblock's options in mountinfo.
        super_options: String,
    },
    /// The pod cgroup does not name a scope unit (systemd cgroup driver).
    #[error("the pod cgroup {name:?} is not a scope unit name like crius-<id>.scope")]
    ScopeName {
        /// The cgroup's name.
        name: String,
    },
    /// The pod's cgroup parent is not a slice (systemd cgroup driver).
    #[error("the pod's cgroup parent {parent:?} is not a systemd slice")]
    NotASlice {
        /// The parent.
        parent: String,
    },
    /// The pod's limits cannot be unit properties (systemd cgroup driver).
    #[error("bad pod limits: {source}")]
    PodLimits {
        /// oci-spec's error.
        source: oci_spec::OciSpecError,
    },
    /// libcontainer failed to create, load or start a container.
    #[error("{what}: {source}")]
    Libcontainer {
        /// What was being done.
        what: String,
        /// libcontainer's error.
        source: Box<libcontainer::error::LibcontainerError>,
    },
    /// systemd could not be reached or refused a unit (systemd cgroup driver).
    #[error("{what}: {source}")]
    Systemd {
        /// What was being done.
        what: String,
        /// What systemd or the D-Bus connection said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state could not be written whole.
    #[error(transparent)]
    Write(#[from] crius_proto::WriteError),
}

impl Error {
    pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn libcontainer(
        what: impl Into<String>,
    ) -> impl FnOnce(libcontainer::error::LibcontainerError) -> Error {
        let what = what.into();
        move |source| Error::Libcontainer {
            what,
            source: Box::new(source),
        }
    }

    /// Whether the pod's state, the request or the node does not allow what was asked, rather
    /// than a step failing on the way.
    fn is_precondition(&self) -> bool {
        match self {
            Error::NamespaceLimit { .. }
            | Error::SandboxNotRunning
            | Error::BadContainerId { .. }
            | Error::ContainerExists { .. }
            | Error::UnknownContainer { .. }
            | Error::AlreadyStarted { .. }
            | Error::PidTargetNotRunning { .. }
            | Error::NotMapped { .. }
            | Error::Identity(_)
            | Error::IdmapWithoutUserns
            | Error::Spec(_)
            | Error::EncodeSpec { .. }
            | Error::PipeOwner(_)
            | Error::TerminalNotSent
            | Error::NoTerminalInMessage
            | Error::NotTraversable { .. }
            | Error::NoLayers { .. }
            | Error::LayerOutsideStore { .. }
            | Error::CloneTree { .. }
            | Error::IdmapLayer { .. }
            | Error::IdmapMount { .. }
            | Error::NulInPath { .. }
            | Error::NoLowerdirPlus { .. }
            | Error::SubPath { .. }
            | Error::NotInMountinfo { .. }
            | Error::ReadOnlyRootfs { .. }
            | Error::ScopeName { .. }
            | Error::NotASlice { .. }
            | Error::PodLimits { .. } => true,
            Error::Usage
            | Error::Read { .. }
            | Error::Version { .. }
            | Error::Sys { .. }
            | Error::Io { .. }
            | Error::SandboxExited
            | Error::SandboxFailed { .. }
            | Error::Libcontainer { .. }
            | Error::Systemd { .. }
            | Error::DeviceProgram(_)
            | Error::Write(_) => false,
        }
    }

    /// What the monitor answers for this error: a state that does not allow the request is a
    /// precondition failure; a failed system call, write, libcontainer or systemd is internal.
    pub(crate) fn failure(&self) -> crius_proto::Failure {
        let kind = if self.is_precondition() {
            crius_proto::FailureKind::Precondition
        } else {
            crius_proto::FailureKind::Internal
        };
        crius_proto::Failure::new(kind, self.to_string())
    }
}

/// The entry point of `criusd monitor …`. `args` are the words after `monitor`. Must be called
/// while the process is single-threaded.
pub fn main(args: &[OsString]) -> ExitCode {
    take_started_nofile();
    let mut pod_dir = None;
    let mut cleanup = false;
    let mut spare = false;
    let mut exec = None;
    let mut command = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.to_str() {
            Some("--pod-dir") => pod_dir = words.next().map(PathBuf::from),
            Some("--cleanup") => cleanup = true,
            Some("--spare") => spare = true,
            Some("--exec") => exec = words.next().and_then(|w| w.to_str()).map(str::to_owned),
            Some("--") => {
                command = words.by_ref().cloned().collect();
            }
            _ => pod_dir = None,
        }
    }
    if spare && pod_dir.is_none() && exec.is_none() && !cleanup {
        return run_spare();
    }
    let Some(dir) = pod_dir.filter(|d| d.is_absolute()) else {
        eprintln!("criusd monitor: {}", Error::Usage);
        return ExitCode::from(2);
    };
    if let Some(id) = exec {
        // The exec'd process inherits this helper's limit.
        use_pod_open_files();
        return ExitCode::from(exec::run(&dir, &id, &command));
    }
    if cleanup {
        return match server::cleanup(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("criusd monitor: cleanup of {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    run(&dir)
}

/// Reads and checks the spec criusd wrote.
fn read_spec(dir: &Path) -> Result<SandboxSpec, Error> {
    let path = dir.join(layout::SPEC);
    let text = std::fs::read(&path).map_err(|e| Error::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let spec: SandboxSpec = serde_json::from_slice(&text).map_err(|e| Error::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if spec.version != PROTOCOL_VERSION {
        return Err(Error::Version {
            path,
            found: spec.version,
        });
    }
    Ok(spec)
}

/// Reads the state a monitor wrote.
pub(crate) fn read_state(dir: &Path) -> Result<MonitorState, Error> {
    let path = dir.join(layout::STATE);
    let text = std::fs::read(&path).map_err(|e| Error::Read {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::Read {
        path,
        reason: e.to_string(),
    })
}

/// Writes the state whole.
pub(crate) fn write_state(dir: &Path, state: &MonitorState) -> Result<(), Error> {
    let data = serde_json::to_vec_pretty(state).map_err(|e| Error::Io {
        what: "cannot encode the state".into(),
        source: e.into(),
    })?;
    crius_proto::write_whole(&dir.join(layout::STATE), &data, 0o600)?;
    Ok(())
}

/// Writes the final startup line to stdout (criusd's pipe) and detaches stdout from it.
fn report(startup: &Startup) {
    announce(startup);
    redirect_to_null(1);
}

/// Writes one startup line to stdout (criusd's pipe).
fn announce(startup: &Startup) {
    use std::io::Write;
    let mut line = serde_json::to_string(startup).unwrap_or_else(|e| {
        format!(r#"{{"failed":{{"message":"cannot encode the startup report: {e}","precondition":false}}}}"#)
    });
    line.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

/// The child's pid, from the parent's side of a successful clone syscall (a `pid_t` widened to
/// `long`). Should it not fit, a pid above every `pid_max`, which no process has.
fn cloned_pid(ret: libc::c_long) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(libc::pid_t::try_from(ret).unwrap_or(libc::pid_t::MAX))
}

/// Points `fd` at /dev/null.
fn redirect_to_null(fd: i32) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // SAFETY: dup2 onto a standard descriptor number; both are valid descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// Sends stderr to the pod's monitor log.
fn log_to_file(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(layout::LOG))
    {
        // SAFETY: dup2 onto stderr; both are valid descriptors.
        unsafe { libc::dup2(log.as_raw_fd(), 2) };
    }
}

/// Logs one line to stderr (the monitor log) with a timestamp.
pub(crate) fn log(message: std::fmt::Arguments<'_>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!(
        "{}.{:03} monitor[{}]: {message}",
        now.as_secs(),
        now.subsec_millis(),
        std::process::id()
    );
}

/// Runs a monitor for the pod in `dir`: detaches, creates the sandbox, reports, serves.
fn run(dir: &Path) -> ExitCode {
    let Some(spec) = open_pod(dir) else {
        return ExitCode::FAILURE;
    };
    if let Err(e) = detach() {
        report(&Startup::Failed {
            message: format!("cannot fork the monitor: {e}"),
            precondition: false,
        });
        return ExitCode::FAILURE;
    }
    monitor(dir, &spec)
}

/// `criusd monitor --spare`: a monitor started ahead of its pod. It detaches at once, then
/// waits for one line on stdin, the pod directory, and monitors that pod as `--pod-dir` would.
/// End of input (criusd gone, or stopping) ends it quietly.
fn run_spare() -> ExitCode {
    if detach().is_err() {
        return ExitCode::FAILURE;
    }
    devices::preload();
    use std::io::BufRead;
    use std::os::unix::ffi::OsStringExt;
    let mut line = Vec::new();
    match std::io::stdin().lock().read_until(b'\n', &mut line) {
        Ok(n) if n > 0 && line.last() == Some(&b'\n') => {}
        _ => return ExitCode::SUCCESS,
    }
    line.pop();
    let dir = PathBuf::from(OsString::from_vec(line));
    if !dir.is_absolute() {
        report(&Startup::Failed {
            message: Error::Usage.to_string(),
            precondition: false,
        });
        return ExitCode::FAILURE;
    }
    let Some(spec) = open_pod(&dir) else {
        return ExitCode::FAILURE;
    };
    monitor(&dir, &spec)
}

/// Sends stderr to the pod's log, stdin to /dev/null, and reads the pod's spec (reported as
/// failed when it cannot be read).
fn open_pod(dir: &Path) -> Option<SandboxSpec> {
    log_to_file(dir);
    redirect_to_null(0);
    read_spec(dir)
        .inspect_err(|e| {
            report(&Startup::Failed {
                message: e.to_string(),
                precondition: false,
            });
        })
        .ok()
}

/// Detaches: the process criusd started exits at once (criusd reaps it); its child carries on
/// in a session of its own, reparented away from criusd, with `/` as its working directory.
fn detach() -> nix::Result<()> {
    // SAFETY: the process is single-threaded (criusd branches here before starting threads).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            // SAFETY: _exit skips destructors and atexit handlers the child still owns.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Child => {}
    }
    let _ = nix::unistd::setsid();
    let _ = std::env::set_current_dir("/");
    crius_proto::limits::reserve_descriptors(DESCRIPTOR_SLOTS);
    Ok(())
}

/// The descriptor table a monitor starts with: room for the pod's pipes, sockets, pidfds and
/// attach clients.
const DESCRIPTOR_SLOTS: u32 = 1024;

/// The open-files limit (soft, hard) criusd was started with, which the pod's processes get
/// (criusd and its monitors run with a raised one); none when criusd passed none.
static STARTED_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// The open-files limit the sandbox, containers and exec'd processes get, when criusd named
/// one; else they inherit the monitor's.
pub(crate) fn pod_open_files() -> Option<(u64, u64)> {
    STARTED_NOFILE.get().copied()
}

/// Takes the open-files limit criusd was started with from the environment
/// ([`pod_open_files`]).
fn take_started_nofile() {
    let Some(started) = std::env::var_os(crius_proto::limits::NOFILE_ENV) else {
        return;
    };
    // SAFETY: the monitor is single-threaded here (criusd branches before starting threads).
    unsafe { std::env::remove_var(crius_proto::limits::NOFILE_ENV) };
    match crius_proto::limits::started_nofile(&started.to_string_lossy()) {
        Ok(limit) => {
            let _ = STARTED_NOFILE.set(limit);
        }
        Err(e) => eprintln!("criusd monitor: the pod's open-files limit: {e}"),
    }
}

/// Gives this process the pod's open-files limit ([`pod_open_files`]); a failure is logged,
/// never fatal.
pub(crate) fn use_pod_open_files() {
    if let Some((soft, hard)) = pod_open_files()
        && let Err(e) = crius_proto::limits::set_open_files(soft, hard)
    {
        eprintln!("criusd monitor: cannot set the open-files limit {soft}:{hard}: {e}");
    }
}

/// Starts pod `spec`'s sandbox, reports to criusd and serves the pod until it is removed.
fn monitor(dir: &Path, spec: &SandboxSpec) -> ExitCode {
    log(format_args!("monitoring pod {}", spec.id));
    let network = |netns: &Path| {
        announce(&Startup::Network {
            netns: netns.to_owned(),
        });
    };
    match server::Monitor::start(dir, spec, &network) {
        Ok(mut monitor) => {
            report(&Startup::Ready(monitor.state().clone()));
            monitor.finish_start();
            monitor.serve();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(format_args!("cannot start the sandbox: {e}"));
            report(&Startup::Failed {
                message: e.to_string(),
                precondition: e.is_precondition(),
            });
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::FailureKind;

    #[test]
    fn refusals_are_preconditions_with_their_messages() {
        let not_traversable = Error::NotTraversable {
            path: PathBuf::from("/var/lib/crius"),
            mode: 0o700,
            owner: (0, 0),
            root: 100_000,
        };
        let failure = not_traversable.failure();
        assert_eq!(failure.kind, FailureKind::Precondition);
        assert_eq!(
            failure.message,
            "/var/lib/crius (mode 700, owner 0:0) cannot be searched by the pod's mapped root \
             (100000): user-namespaced containers need every directory above their root \
             filesystem to be searchable by it"
        );
        let read_only = Error::ReadOnlyRootfs {
            path: PathBuf::from("/c/rootfs"),
            mount_options: "ro".into(),
            super_options: "rw".into(),
        };
        assert_eq!(
            read_only.to_string(),
            "the overlay rootfs at /c/rootfs came out read-only (its upper dir is unusable); \
             mount options ro, superblock options rw"
        );
        assert_eq!(read_only.failure().kind, FailureKind::Precondition);
        let exists = Error::ContainerExists { id: "c".into() };
        assert_eq!(exists.failure().kind, FailureKind::Precondition);
        assert_eq!(exists.to_string(), "container c exists");
    }

    #[test]
    fn sandbox_failures_are_internal() {
        let failed = Error::SandboxFailed {
            message: "pivot_root: EINVAL: Invalid argument".into(),
        };
        assert_eq!(failed.failure().kind, FailureKind::Internal);
        assert_eq!(
            failed.to_string(),
            "the sandbox process failed: pivot_root: EINVAL: Invalid argument"
        );
        assert_eq!(
            Error::SandboxExited.to_string(),
            "the sandbox process failed: it exited while setting up"
        );
    }
}
