//! The small types crius-runtime (in criusd) and the crius pod monitor share: the sandbox spec
//! criusd hands a new monitor, the monitor's durable state, the pod directory layout, and the
//! request/reply messages of the monitor socket; and the few helpers crius' crates share
//! ([`now_ns`], [`mountinfo`], [`tree`], and with the `tokio` feature `blocking`).
//!
//! The socket protocol is one JSON object per line over a unix stream socket: the client writes
//! one [`Request`] line, the monitor answers one [`Reply`] line and closes the connection. Both
//! carry [`PROTOCOL_VERSION`]; a monitor refuses a request of another version. New requests
//! (containers, exec, attach) are new [`RequestBody`] variants with, where needed, new
//! [`ReplyBody`] variants.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod attach;
pub mod limits;
pub mod mountinfo;
pub mod seccomp;
pub mod tree;

/// Version of the monitor socket protocol and of the files below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Files in a pod's directory `<state>/pods/<id>/`.
pub mod layout {
    /// The sandbox spec criusd writes before starting the monitor.
    pub const SPEC: &str = "spec.json";
    /// The monitor's durable state ([`crate::MonitorState`]).
    pub const STATE: &str = "state.json";
    /// The monitor's unix socket.
    pub const SOCKET: &str = "monitor.sock";
    /// The monitor's stderr.
    pub const LOG: &str = "monitor.log";
    /// The sandbox's network namespace, bind mounted (pinned) while the pod runs; CNI's
    /// `netns_path`.
    pub const NETNS: &str = "netns";
    /// The pod's `/dev/shm` (a tmpfs) when the pod has its own IPC namespace.
    pub const SHM: &str = "shm";
    /// The pod's `/etc/hostname`.
    pub const HOSTNAME: &str = "hostname";
    /// The pod's `/etc/hosts`.
    pub const HOSTS: &str = "hosts";
    /// The pod's `/etc/resolv.conf`.
    pub const RESOLV_CONF: &str = "resolv.conf";
    /// The directory of [`HOSTNAME`], [`HOSTS`] and [`RESOLV_CONF`] beneath a pod's writable
    /// root on disk (`<container root>/<pod id>/etc`).
    pub const POD_FILES: &str = "etc";
}

/// One contiguous id mapping range (`uid_map` / `gid_map` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id inside the user namespace.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids.
    pub length: u32,
}

impl IdRange {
    /// The host id that container id `id` maps to, if mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        if offset < self.length {
            self.host_id.checked_add(offset)
        } else {
            None
        }
    }
}

/// Renders ranges in the format of `/proc/PID/uid_map` as written by a process.
pub fn render_id_map(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container_id, r.host_id, r.length))
        .collect()
}

/// Parses `/proc/PID/uid_map` text (whitespace separated triples, one per line).
pub fn parse_id_map(text: &str) -> Option<Vec<IdRange>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace().map(str::parse::<u32>);
            let range = IdRange {
                container_id: fields.next()?.ok()?,
                host_id: fields.next()?.ok()?,
                length: fields.next()?.ok()?,
            };
            fields.next().is_none().then_some(range)
        })
        .collect()
}

/// The user namespace of a sandbox: one uid and one gid range (validated by crius-runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// uid mappings.
    pub uids: Vec<IdRange>,
    /// gid mappings.
    pub gids: Vec<IdRange>,
}

impl UserNamespace {
    /// The host gid of the pod's root group, if mapped.
    pub fn root_gid(&self) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_host(0))
    }
}

/// Makes `path` a directory (kept if it exists) that only host root may enter: mode 0700, or
/// with `traverse_gid` (a user-namespaced pod's mapped root group, whose container processes
/// must reach their root filesystem and bind sources) 0710 owned by root:`traverse_gid`. No other
/// host user may list or traverse it.
pub fn make_private_dir(path: &Path, traverse_gid: Option<u32>) -> Result<(), WriteError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let mode = match traverse_gid {
        Some(gid) => {
            std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(err)?;
            0o710
        }
        None => 0o700,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

/// CPU and memory limits of a pod cgroup. `None` leaves a value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period; negative means unlimited.
    pub cpu_quota: Option<i64>,
    /// cgroup v1 cpu shares (2..262144); v2 weight is derived from it.
    pub cpu_shares: Option<u64>,
    /// Memory limit in bytes; 0 or absent means unlimited.
    pub memory_limit: Option<i64>,
    /// Memory plus swap limit in bytes (CRI `memory_swap_limit_in_bytes`); -1 is unlimited.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// CPUs the processes may run on (a kernel list such as `0-3,5`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the processes may use (a kernel list).
    #[serde(default)]
    pub cpuset_mems: Option<String>,
    /// Hugepage limits in bytes by page size as CRI writes it (`2MB`, `1GB`).
    #[serde(default)]
    pub hugepage_limits: std::collections::BTreeMap<String, u64>,
    /// cgroup files to write as given (CRI `unified`, e.g. `pids.max`), by file name.
    #[serde(default)]
    pub unified: std::collections::BTreeMap<String, String>,
}

impl Resources {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Resources::default()
    }
}

/// Where the pod cgroup goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// Parent cgroup path relative to each hierarchy root (absolute, `/`-separated); with
    /// `systemd`, the name of a systemd slice unit (`kubepods-besteffort-pod<uid>.slice`).
    pub parent: String,
    /// Name of the pod's own cgroup under `parent`; with `systemd`, the name of the transient
    /// scope unit (`crius-<id>.scope`).
    pub name: String,
    /// Limits applied when it is created.
    #[serde(default)]
    pub resources: Resources,
    /// The systemd cgroup driver: systemd creates and removes the pod cgroup as a transient
    /// scope unit in the slice `parent`, with the limits as unit properties; below it (the
    /// delegated subtree) crius writes cgroupfs itself.
    #[serde(default)]
    pub systemd: bool,
}

/// The cgroup path (absolute, below the hierarchy root) of systemd slice unit `slice`, where
/// each `-` in the name nests a level: `a-b.slice` is `/a.slice/a-b.slice`, `-.slice` is `/`.
/// None for a name that is not a slice unit name.
pub fn systemd_slice_path(slice: &str) -> Option<String> {
    let stem = slice.strip_suffix(".slice")?;
    if stem == "-" {
        return Some("/".to_owned());
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || ":_.\\".contains(c);
    if stem.is_empty()
        || stem
            .split('-')
            .any(|part| part.is_empty() || !part.chars().all(valid))
    {
        return None;
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
        prefix.push('-');
    }
    Some(path)
}

/// What a monitor needs to create a sandbox; criusd writes it whole to `spec.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The pod sandbox id.
    pub id: String,
    /// Hostname set in the sandbox's UTS namespace.
    pub hostname: String,
    /// A user namespace to create, or none to stay in the host's.
    pub userns: Option<UserNamespace>,
    /// Create a network namespace (false: network NODE).
    pub new_net: bool,
    /// Create an IPC namespace (false: ipc NODE).
    pub new_ipc: bool,
    /// Create a PID namespace (false: pid NODE).
    pub new_pid: bool,
    /// The pod cgroup, or none to leave the sandbox in the monitor's cgroup.
    pub cgroup: Option<CgroupSpec>,
    /// Size in bytes of the pod's `/dev/shm` tmpfs (with `new_ipc`).
    pub shm_size: u64,
    /// Namespaced sysctls set inside the sandbox (validated by crius-runtime).
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// `oom_score_adj` of the sandbox process (clamped to what the node allows).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Where the pod's containers keep their writable layers (`<dir>/<container id>/{upper,
    /// work}`, on disk under the root); none: in the pod directory (pods made before).
    #[serde(default)]
    pub writable_root: Option<PathBuf>,
    /// The AppArmor profile the sandbox process changes to once set up; none: unconfined.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// Where the pod's hostname, hosts and resolv.conf are: on disk beneath the writable root,
    /// so that what a container writes to them fills the disk its writable layer is on, not the
    /// memory of the state directory's tmpfs; none: the pod directory (pods made before).
    #[serde(default)]
    pub files_dir: Option<PathBuf>,
}

/// The `/proc/sys` path of a sysctl key: dots separate components, unless the key uses
/// slashes (then dots are part of a component, as in `net/ipv4/conf/eth0.1/forwarding`).
/// `None` for keys that would leave `/proc/sys`.
pub fn sysctl_path(key: &str) -> Option<PathBuf> {
    let components: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return None;
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(components);
    Some(path)
}

/// How the sandbox process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Exit code, or 128 + signal number.
    pub code: i32,
    /// When the monitor reaped it, in nanoseconds since the epoch.
    pub at_ns: i64,
}

/// The monitor's durable state, written whole to `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The monitor's pid.
    pub monitor_pid: i32,
    /// The monitor's start time (field 22 of `/proc/PID/stat`), against pid reuse.
    pub monitor_start_time: u64,
    /// The sandbox (pause) process's pid on the host.
    pub sandbox_pid: i32,
    /// The sandbox's start time (field 22 of `/proc/PID/stat`), against pid reuse.
    pub sandbox_start_time: u64,
    /// The pinned network namespace, when the sandbox has its own.
    pub netns: Option<PathBuf>,
    /// The pod cgroup directories created, one per hierarchy.
    pub cgroup_dirs: Vec<PathBuf>,
    /// Set once the sandbox process has been reaped.
    pub exit: Option<Exit>,
    /// The pod's containers by id, as the monitor created, started and reaped them (shared:
    /// criusd's views of a container point at the state it read instead of copying it).
    #[serde(default)]
    pub containers: std::collections::BTreeMap<String, std::sync::Arc<ContainerState>>,
}

/// A line a new monitor writes to its stdout: [`Startup::Network`] first when the sandbox has a
/// network namespace of its own, then `Ready` or `Failed`, after which it closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Startup {
    /// The sandbox has set itself up and its network namespace is pinned at `netns`: the pod's
    /// network can be attached while the monitor finishes its own start.
    Network {
        /// The pinned namespace.
        netns: PathBuf,
    },
    /// The sandbox runs.
    Ready(MonitorState),
    /// The sandbox could not be created; the monitor has cleaned up and exited.
    Failed {
        /// What went wrong.
        message: String,
        /// The request cannot work on this node (as opposed to an internal failure).
        precondition: bool,
    },
}

/// A request to a monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What is asked.
    pub body: RequestBody,
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestBody {
    /// Report the state.
    Status,
    /// Kill the sandbox (and everything in the pod), wait for it, unpin the netns. Idempotent.
    StopSandbox,
    /// Apply limits to the pod cgroup.
    UpdateResources {
        /// The limits.
        resources: Resources,
    },
    /// Stop the sandbox, release every mount and cgroup, answer, and exit.
    Shutdown,
    /// Create a container (its rootfs, libcontainer state, stdio pipes) without starting it.
    CreateContainer {
        /// What to create.
        spec: Box<ContainerSpec>,
    },
    /// Start a created container.
    StartContainer {
        /// Container id.
        id: String,
    },
    /// Send a signal to a container's first process (nothing when it has exited).
    SignalContainer {
        /// Container id.
        id: String,
        /// The signal number.
        signal: i32,
    },
    /// Kill a container if it runs, release its rootfs and forget it. Idempotent.
    RemoveContainer {
        /// Container id.
        id: String,
    },
    /// Apply limits to a container's cgroup.
    UpdateContainerResources {
        /// Container id.
        id: String,
        /// The limits.
        resources: Resources,
    },
    /// Reopen a container's log file (after log rotation).
    ReopenContainerLog {
        /// Container id.
        id: String,
    },
}

/// Directory of the pod directory holding one directory per container.
pub const CONTAINERS_DIR: &str = "containers";

/// An image volume (CRI `Mount.image`): an image's layers mounted read-only, nosuid and nodev.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolume {
    /// The image as the request named it.
    pub reference: String,
    /// The image id.
    pub image_id: String,
    /// The image's layer directories, bottom to top (beneath the layer store).
    pub layer_dirs: Vec<PathBuf>,
    /// The directory of the image to mount, relative to its root; empty for the root.
    pub sub_path: String,
}

/// A bind mount asked for by a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Path on the host.
    pub host_path: PathBuf,
    /// Path in the container.
    pub container_path: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// Mounted idmapped with the pod's user namespace mapping (the request's Mount carried
    /// the pod's mapping).
    #[serde(default)]
    pub idmap: bool,
    /// Mount propagation: `rprivate` (default), `rslave` (host to container) or `rshared`
    /// (bidirectional).
    #[serde(default)]
    pub propagation: String,
    /// Read-only recursively: every submount too (MOUNT_ATTR_RDONLY with AT_RECURSIVE).
    #[serde(default)]
    pub recursive_read_only: bool,
    /// More flags of the container's bind, as OCI mount options: any of `nosuid`, `nodev`,
    /// `noexec` (a CDI mount's options).
    #[serde(default)]
    pub flags: Vec<String>,
    /// An image volume instead of a host path (`host_path` is empty then).
    #[serde(default)]
    pub image: Option<ImageVolume>,
}

/// A device node made in the container (CRI `Device`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Path in the container.
    pub container_path: String,
    /// `c` (character) or `b` (block).
    pub kind: String,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// File mode bits of the node.
    pub file_mode: u32,
    /// cgroup access: any of `r`, `w`, `m`; empty for no cgroup rule (a CDI node with
    /// permissions `none`).
    pub permissions: String,
    /// Owner of the node in the container (0 when unset).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group of the node in the container (0 when unset).
    #[serde(default)]
    pub gid: Option<u32>,
}

/// An OCI hook (a CDI spec's `hooks`): run by libcontainer at its point of the container's
/// life, with the container's state on stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Absolute path of the program on the host.
    pub path: String,
    /// Its arguments, `argv[0]` included.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment, `NAME=value` each.
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds before it is killed; none to wait for it.
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// A container's OCI hooks, by the point they run at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// `prestart` (deprecated by OCI; run with `createRuntime`).
    #[serde(default)]
    pub prestart: Vec<Hook>,
    /// `createRuntime`: in the runtime's namespaces, after the container's are made.
    #[serde(default)]
    pub create_runtime: Vec<Hook>,
    /// `createContainer`: in the container's namespaces, before pivot_root.
    #[serde(default)]
    pub create_container: Vec<Hook>,
    /// `startContainer`: in the container, just before its process execs.
    #[serde(default)]
    pub start_container: Vec<Hook>,
    /// `poststart`: in the runtime's namespaces, after the process started.
    #[serde(default)]
    pub poststart: Vec<Hook>,
    /// `poststop`: when the container is deleted.
    #[serde(default)]
    pub poststop: Vec<Hook>,
}

impl Hooks {
    /// No hook at all.
    pub fn is_empty(&self) -> bool {
        self.prestart.is_empty()
            && self.create_runtime.is_empty()
            && self.create_container.is_empty()
            && self.start_container.is_empty()
            && self.poststart.is_empty()
            && self.poststop.is_empty()
    }
}

/// Who a container runs as, as asked; the monitor resolves names against the image's
/// `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequest {
    /// `run_as_user`.
    pub uid: Option<u32>,
    /// `run_as_username`, empty when unset.
    pub username: String,
    /// `run_as_group`.
    pub gid: Option<u32>,
    /// The image config's `User` (`uid`, `uid:gid`, `name`, `name:group`), used when the
    /// request names no user.
    pub image_user: String,
    /// `supplemental_groups` plus the pod's `fs_group`.
    pub supplemental_groups: Vec<u32>,
    /// `supplemental_groups_policy` Strict: do not add the image's `/etc/group` memberships.
    pub strict: bool,
}

/// The first process's identity as read from `/proc/PID/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// Real uid (in the container's user namespace).
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups, the primary gid included.
    pub groups: Vec<u32>,
}

/// Linux capabilities of a container, as asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityRequest {
    /// Capabilities added to the default set (`CAP_` prefix optional, `ALL` for every one).
    pub add: Vec<String>,
    /// Capabilities dropped from it (`ALL` drops every default).
    pub drop: Vec<String>,
}

/// The seccomp filter of a container's processes (its first process and every exec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompProfile {
    /// No filter.
    #[default]
    Unconfined,
    /// crius' own default profile.
    RuntimeDefault,
    /// A profile file of the node (OCI or Docker JSON), read and checked by criusd at
    /// CreateContainer.
    Localhost {
        /// The file it was read from.
        path: String,
        /// The profile as [`seccomp::Profile`] writes it.
        profile: String,
    },
}

/// A container's CRI log file: `path`, relative, beneath the pod's log `directory`. The
/// monitor opens it without leaving the directory (no `..`, no symlinks below it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFile {
    /// The pod's log directory (`PodSandboxConfig.log_directory`).
    pub directory: PathBuf,
    /// The container's log file relative to it (`ContainerConfig.log_path`).
    pub path: PathBuf,
}

/// Everything a monitor needs to create a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container id (64 hex digits).
    pub id: String,
    /// The parent of every layer directory (mounted idmapped once per user-namespaced pod).
    pub layers_root: PathBuf,
    /// The image's layer directories, bottom to top, all beneath `layers_root`.
    pub layer_dirs: Vec<PathBuf>,
    /// The process arguments (Entrypoint/Cmd already merged).
    pub args: Vec<String>,
    /// The environment, `NAME=value` each, values as raw bytes.
    pub env: Vec<Vec<u8>>,
    /// Working directory; `/` when empty.
    pub working_dir: String,
    /// Identity.
    pub user: UserRequest,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// The CRI log file, or none to discard output.
    pub log: Option<LogFile>,
    /// Bind mounts from the request.
    pub mounts: Vec<BindMount>,
    /// Privileged: every capability, no masked paths.
    pub privileged: bool,
    /// no_new_privs.
    pub no_new_privs: bool,
    /// Capabilities to add and drop.
    pub capabilities: CapabilityRequest,
    /// Extra masked paths (replaces the defaults when `Some`).
    pub masked_paths: Option<Vec<String>>,
    /// Extra read-only paths (replaces the defaults when `Some`).
    pub readonly_paths: Option<Vec<String>>,
    /// `oom_score_adj` of the first process (clamped to what the node allows).
    pub oom_score_adj: Option<i32>,
    /// Limits for the container cgroup.
    pub resources: Resources,
    /// Run in its own PID namespace (pid CONTAINER) instead of the pod's.
    pub own_pid_ns: bool,
    /// Join the PID namespace of this container of the pod (pid TARGET).
    #[serde(default)]
    pub pid_target: Option<String>,
    /// Device nodes.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// Keep a pipe to the container's stdin open for attached clients (else stdin is
    /// `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when the first client that attached stdin leaves.
    #[serde(default)]
    pub stdin_once: bool,
    /// Give the container a pseudo-terminal as stdin, stdout, stderr and controlling terminal.
    #[serde(default)]
    pub tty: bool,
    /// The seccomp filter.
    #[serde(default)]
    pub seccomp: SeccompProfile,
    /// The AppArmor profile of its processes (its first process and every exec); none:
    /// unconfined.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// OCI hooks (from CDI devices).
    #[serde(default)]
    pub hooks: Hooks,
}

/// A container as its pod monitor knows it; durable in `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// The first process's pid on the host.
    pub pid: i32,
    /// Its start time (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// When it was created, nanoseconds since the epoch.
    pub created_at_ns: i64,
    /// When it was started.
    pub started_at_ns: Option<i64>,
    /// How it ended, once reaped.
    pub exit: Option<Exit>,
    /// Killed by the kernel's OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    /// The first process's identity, read after start.
    pub user: Option<ProcessUser>,
    /// The container cgroup directories.
    #[serde(default)]
    pub cgroup_dirs: Vec<PathBuf>,
    /// Where its writable layer (upper and work) lives, when not in its directory.
    #[serde(default)]
    pub writable_dir: Option<PathBuf>,
}

/// A monitor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The answer, or why the request failed. Serialized as `{"Ok": {...}}` or
    /// `{"Err": {"kind": "...", "message": "..."}}`.
    pub result: Result<ReplyBody, Failure>,
}

/// The kind of a monitor's failure: criusd turns it into the gRPC code of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The request itself is wrong (malformed, or asks for something impossible).
    Invalid,
    /// The pod or node is not in a state that allows the request (the container was started
    /// already, the sandbox is not running, the node lacks a feature).
    Precondition,
    /// The request names a container the monitor does not hold.
    NotFound,
    /// Something failed that should not have: a system call, a write, libcontainer, systemd.
    Internal,
}

/// Why a monitor refused a request: its kind and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(from = "FailureWire")]
#[error("{message}")]
pub struct Failure {
    /// What kind of failure it is.
    pub kind: FailureKind,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` saying `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// A failure as read from the socket: typed, or the bare message of a monitor started by an
/// earlier criusd (monitors outlive criusd upgrades), taken as internal.
#[derive(Deserialize)]
#[serde(untagged)]
enum FailureWire {
    Typed { kind: FailureKind, message: String },
    Text(String),
}

impl From<FailureWire> for Failure {
    fn from(wire: FailureWire) -> Failure {
        match wire {
            FailureWire::Typed { kind, message } => Failure { kind, message },
            FailureWire::Text(message) => Failure::new(FailureKind::Internal, message),
        }
    }
}

/// What a monitor answers; each request kind names the variant it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReplyBody {
    /// The monitor's state after the request (every sandbox request).
    State(MonitorState),
}

impl Request {
    /// A request of the current version.
    pub fn new(body: RequestBody) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            body,
        }
    }
}

/// Whether the kernel and filesystems support idmapped mounts; the result of the start-up probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdmapSupport {
    /// Idmapped mounts work on every probed filesystem.
    Supported,
    /// They do not; the reason names what the kernel or filesystem lacks.
    Unsupported(String),
    /// Not probed (unit tests, tools).
    Unknown,
}

/// A client-supplied string as an error shows it: quoted and escaped, cut after `max` bytes, so
/// a huge value does not make a huge message (gRPC carries it in a header).
pub fn shown_cut(value: &str, max: usize) -> String {
    if value.len() <= max {
        return format!("{value:?}");
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &value[..end], value.len())
}

/// A path naming `dir/name` that fits a unix socket address (108 bytes) however long `dir` is:
/// `/proc/self/fd/N/name` through the returned open descriptor of `dir`, which must be kept
/// open while the path is used.
pub fn socket_path(dir: &Path, name: &str) -> std::io::Result<(std::fs::File, PathBuf)> {
    use std::os::fd::AsRawFd;
    let handle = std::fs::File::open(dir)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", handle.as_raw_fd()));
    Ok((handle, path))
}

/// Why a file could not be written whole.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Writes `data` to `path` whole: to a temporary file in the same directory, synced, then
/// renamed over `path`.
pub fn write_whole(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteError> {
    replace(path, data, mode, true)
}

/// [`write_whole`] without the sync, for files that need not outlive the machine's boot.
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteError> {
    replace(path, data, mode, false)
}

fn replace(path: &Path, data: &[u8], mode: u32, sync: bool) -> Result<(), WriteError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// The wall clock in nanoseconds since the Unix epoch (the unit of every CRI timestamp); 0 for a
/// clock before the epoch, `i64::MAX` past the year 2262.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs `work` on tokio's blocking threads, off the async workers (the metadata database, file
/// trees, `/proc`). A task that panicked or was cancelled comes back as `E::from` its
/// [`tokio::task::JoinError`].
#[cfg(feature = "tokio")]
pub async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await?
}

/// Reads the start time (field 22, clock ticks since boot) of `pid` from `/proc/PID/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and still the process started at `start_time`.
pub fn process_is(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    let state = fields.next().unwrap_or("X");
    if state == "Z" || state == "X" {
        return false;
    }
    fields.nth(18).and_then(|t| t.parse::<u64>().ok()) == Some(start_time)
}

#[cfg(test)]
mod tests {
    #[test]
    fn systemd_slices_nest_by_dash() {
        use super::systemd_slice_path as path;
        assert_eq!(path("-.slice").as_deref(), Some("/"));
        assert_eq!(path("system.slice").as_deref(), Some("/system.slice"));
        assert_eq!(
            path("kubepods-besteffort-pod1_2.slice").as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1_2.slice")
        );
        for bad in [
            "",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "a.scope",
            "a b.slice",
            "../a.slice",
        ] {
            assert_eq!(path(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn now_ns_is_after_2020() {
        assert!(now_ns() > 1_577_836_800_000_000_000);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn blocking_returns_the_result_or_the_failed_task() {
        #[derive(Debug)]
        struct Failed;
        impl From<tokio::task::JoinError> for Failed {
            fn from(e: tokio::task::JoinError) -> Failed {
                assert!(e.is_panic());
                Failed
            }
        }
        assert_eq!(blocking(|| Ok::<_, Failed>(7)).await.ok(), Some(7));
        assert!(blocking(|| Err::<u8, _>(Failed)).await.is_err());
        assert!(blocking::<u8, Failed>(|| panic!("lost")).await.is_err());
    }

    #[test]
    fn id_map_renders_and_parses() {
        let ranges = [IdRange {
            container_id: 0,
            host_id: 1000,
            length: 100000,
        }];
        let text = render_id_map(&ranges);
        assert_eq!(text, "0 1000 100000\n");
        assert_eq!(
            parse_id_map("         0       1000     100000\n"),
            Some(ranges.to_vec())
        );
        assert_eq!(parse_id_map("0 1 x\n"), None);
        assert_eq!(ranges[0].to_host(0), Some(1000));
        assert_eq!(ranges[0].to_host(99999), Some(100999));
        assert_eq!(ranges[0].to_host(100000), None);
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            Some(PathBuf::from("/proc/sys/net/ipv4/ip_forward"))
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/forwarding"),
            Some(PathBuf::from("/proc/sys/net/ipv4/conf/eth0.1/forwarding"))
        );
        assert_eq!(sysctl_path("net/../../etc/passwd"), None);
        assert_eq!(sysctl_path("net..x"), None);
    }

    #[test]
    fn start_time_of_self() {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let t = process_start_time(pid);
        assert!(t.is_some());
        assert!(process_is(pid, t.unwrap_or(0)));
        assert!(!process_is(pid, t.unwrap_or(0) + 1));
    }

    #[test]
    fn write_whole_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_whole(&path, b"one", 0o600).expect("write");
        write_whole(&path, b"two", 0o600).expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn reply_round_trips() {
        let state = MonitorState {
            version: PROTOCOL_VERSION,
            monitor_pid: 10,
            monitor_start_time: 1,
            sandbox_pid: 11,
            sandbox_start_time: 2,
            netns: Some(PathBuf::from("/run/crius/pods/x/netns")),
            cgroup_dirs: vec![],
            exit: None,
            containers: Default::default(),
        };
        let reply = Reply {
            version: PROTOCOL_VERSION,
            result: Ok(ReplyBody::State(state)),
        };
        let line = serde_json::to_string(&reply).expect("json");
        assert!(line.contains(r#""Ok":{"type":"state""#), "{line}");
        assert_eq!(serde_json::from_str::<Reply>(&line).expect("parse"), reply);
        // A failure keeps its kind on the wire.
        let failed = Reply {
            version: PROTOCOL_VERSION,
            result: Err(Failure::new(FailureKind::Precondition, "not running")),
        };
        let line = serde_json::to_string(&failed).expect("json");
        assert!(
            line.contains(r#""Err":{"kind":"precondition","message":"not running"}"#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<Reply>(&line).expect("parse"), failed);
        // A monitor of an earlier release sends the bare message: internal.
        let refused: Reply =
            serde_json::from_str(r#"{"version":1,"result":{"Err":"no"}}"#).expect("parse");
        assert_eq!(
            refused.result,
            Err(Failure::new(FailureKind::Internal, "no"))
        );
    }

    #[test]
    fn request_round_trips() {
        let req = Request::new(RequestBody::UpdateResources {
            resources: Resources {
                memory_limit: Some(1 << 20),
                ..Resources::default()
            },
        });
        let line = serde_json::to_string(&req).expect("json");
        assert!(line.contains("\"type\":\"update_resources\""));
        assert_eq!(serde_json::from_str::<Request>(&line).expect("parse"), req);
    }
}
