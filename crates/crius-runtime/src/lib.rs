//! Pods as criusd sees them: validation, records in the metadata store, lifecycle orchestration
//! (with the pod network through crius-net) and recovery. Each pod has a monitor process
//! (`criusd monitor`, crate crius-monitor) that this crate starts and talks to over the pod's
//! socket; nothing here forks in-process or makes a namespace or mount syscall.
//!
//! Pod directory `<state>/pods/<id>/` (names in [`crius_proto::layout`]): `spec.json`,
//! `state.json`, `monitor.sock`, `monitor.log`, `netns` (the pinned network namespace, CNI's
//! `netns_path`), `shm` (tmpfs). The pod's `hostname`, `hosts` and `resolv.conf` are on disk in
//! `<container root>/<id>/etc/`, beside its containers' writable layers.

pub mod apparmor;
pub mod attach;
pub mod cdi;
pub mod client;
pub mod containers;
pub mod create;
pub mod files;
mod liveness;
mod network;
mod recovery;
pub mod signal;
mod spare;
pub mod spec;
mod statecache;
pub mod stats;
pub mod store;
pub mod validate;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crius_proto::{
    CgroupSpec, MonitorState, PROTOCOL_VERSION, RequestBody, Resources, SandboxSpec, Startup,
    layout,
};
use tokio::io::AsyncBufReadExt;

use crate::client::ClientError;
pub use crate::containers::{
    ContainerRecord, ContainerStateKind, ContainerView, ExecError, ExecOutput,
};
pub use crate::create::{
    ContainerRequest, DeviceRequest, ImageVolumeRequest, MountRequest, Propagation, Seccomp,
    SecurityRequest,
};
pub use crate::network::{NetworkError, NetworkStep};
pub use crate::recovery::Recovery;
use crate::spec::{NamespaceMode, PodSpec};
pub use crate::store::{NetworkPhase, PodRecord, PodState};
use crate::store::{Store, StoreError};
pub use crate::validate::Invalid;
pub use crius_proto::{Failure, FailureKind, IdmapSupport, blocking, now_ns, write_whole};

/// The cgroup parent used when the pod names none.
pub const DEFAULT_CGROUP_PARENT: &str = "/crius";

/// The slice pod scopes go in when the pod names none (systemd cgroup driver).
pub const DEFAULT_SYSTEMD_SLICE: &str = "crius.slice";
/// Size of a pod's `/dev/shm`.
pub const SHM_SIZE: u64 = 64 << 20;
/// `oom_score_adj` of sandbox processes: the pause process is the last thing to kill.
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;
/// How long a new monitor may take to report its sandbox.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable naming a failpoint (builds with the `failpoints` feature only).
pub const FAILPOINT_ENV: &str = "CRIUS_FAILPOINT";

/// The environment variable giving milliseconds to wait at the failpoint before the kill.
pub const FAILPOINT_DELAY_ENV: &str = "CRIUS_FAILPOINT_DELAY_MS";

/// Whether this build has failpoints (cargo feature `failpoints`).
pub const FAILPOINTS: bool = cfg!(feature = "failpoints");

/// With the `failpoints` feature, kills criusd with SIGKILL at the step `name` when
/// `CRIUS_FAILPOINT` names it (after `CRIUS_FAILPOINT_DELAY_MS`, when set), so tests can crash
/// it between any two steps of an operation.
/// Other builds ignore it.
pub fn failpoint(name: &str) {
    if FAILPOINTS && std::env::var_os(FAILPOINT_ENV).is_some_and(|v| v == name) {
        // A test may let work started before the failpoint run on for a while first.
        if let Some(ms) = std::env::var(FAILPOINT_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
        tracing::error!(failpoint = name, "failpoint reached: killing criusd");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Why a pod operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The request breaks the CRI contract.
    #[error("invalid pod sandbox config: {0}")]
    Invalid(#[from] Invalid),
    /// No such pod, or an id prefix that several pods share.
    #[error("pod sandbox {id}{} not found", ambiguity(*.ambiguous, "pods"))]
    NotFound {
        /// The id as asked (quoted when it came from the client).
        id: String,
        /// How many pods the prefix matches, when more than one.
        ambiguous: Option<usize>,
    },
    /// No such container, or an id prefix that several containers share.
    #[error("container {id}{} not found", ambiguity(*.ambiguous, "containers"))]
    ContainerNotFound {
        /// The id as asked, quoted.
        id: String,
        /// How many containers the prefix matches, when more than one.
        ambiguous: Option<usize>,
    },
    /// A pod with the same metadata exists.
    #[error("pod sandbox {} already exists as {existing}", pod_name(.metadata.as_ref()))]
    AlreadyExists {
        /// The new pod's metadata.
        metadata: Option<spec::PodMetadata>,
        /// The id of the pod that has it.
        existing: String,
    },
    /// A container with the same name and attempt exists in the pod.
    #[error("container {name} (attempt {attempt}) already exists in pod {pod_id} as {existing}")]
    ContainerExists {
        /// The container name.
        name: String,
        /// The attempt.
        attempt: u32,
        /// The pod.
        pod_id: String,
        /// The id of the container that has the name.
        existing: String,
    },
    /// The pod asks for a user namespace and this node cannot run one.
    #[error("the pod asks for a user namespace, but this node cannot run one: {reason}")]
    NoUserns {
        /// What the idmapped-mount probe found missing.
        reason: String,
    },
    /// The AppArmor profile asked for cannot be applied on this node.
    #[error(transparent)]
    AppArmor(#[from] apparmor::Refused),
    /// The monitor could not make the sandbox because of what the node or pod lacks.
    #[error("{message}")]
    SandboxRefused {
        /// The monitor's report.
        message: String,
    },
    /// The pod is not ready (a new container needs a ready pod).
    #[error("pod sandbox {id} is not ready")]
    PodNotReady {
        /// The pod.
        id: String,
    },
    /// The pod's monitor does not run.
    #[error("pod sandbox {id} is not running")]
    PodNotRunning {
        /// The pod.
        id: String,
    },
    /// The monitor of a container's pod does not run.
    #[error("the monitor of pod {pod_id} is gone")]
    MonitorGone {
        /// The pod.
        pod_id: String,
    },
    /// StartContainer of a container that is not freshly created.
    #[error("container {id} is {state:?}, not created")]
    ContainerNotCreated {
        /// The container.
        id: String,
        /// Where it is instead.
        state: ContainerStateKind,
    },
    /// The request needs a running container.
    #[error("container {id} is not running")]
    ContainerNotRunning {
        /// The container.
        id: String,
    },
    /// The pod's monitor refused the request. A `Precondition` failure means the pod or node
    /// is not in a state that allows it (FailedPrecondition); any other kind is a failed step, a
    /// container the monitor does not hold although criusd has its record, or a request the
    /// monitor could not read (Internal).
    #[error("{source}")]
    MonitorRefused {
        /// The monitor's answer.
        source: crius_proto::Failure,
    },
    /// The pod's monitor could not be reached or the exchange broke.
    #[error("{source}")]
    Monitor {
        /// What the client saw.
        source: ClientError,
    },
    /// A new monitor sent no report within the start-up timeout.
    #[error("the pod monitor did not report in {timeout:?} (see {log})")]
    MonitorSilent {
        /// How long it was given.
        timeout: Duration,
        /// The monitor's log.
        log: PathBuf,
    },
    /// A new monitor exited without a readable report.
    #[error("the pod monitor exited without a report (see {log})")]
    MonitorNoReport {
        /// The monitor's log.
        log: PathBuf,
    },
    /// The monitor failed to create the sandbox.
    #[error("cannot create the pod sandbox: {message}")]
    SandboxFailed {
        /// The monitor's report.
        message: String,
    },
    /// The pod cleanup (`criusd monitor --cleanup`) failed.
    #[error("the pod cleanup failed ({status}): {last_line}")]
    CleanupFailed {
        /// How it exited.
        status: std::process::ExitStatus,
        /// The last line of the monitor log.
        last_line: String,
    },
    /// A container still ran after SIGKILL and the wait for it.
    #[error("container {id} did not die within {waited:?} of SIGKILL")]
    Unkillable {
        /// The container.
        id: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A directory could not be removed.
    #[error("cannot remove {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// A file could not be written whole.
    #[error("{source}")]
    Write {
        /// The failed write.
        #[from]
        source: crius_proto::WriteError,
    },
    /// The sandbox spec could not be encoded.
    #[error("cannot encode the sandbox spec: {source}")]
    EncodeSpec {
        /// What serde said.
        source: serde_json::Error,
    },
    /// A seccomp profile could not be encoded for the monitor.
    #[error("cannot encode the seccomp profile {path}: {source}")]
    EncodeProfile {
        /// The profile's file.
        path: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// The metadata database failed.
    #[error("{source}")]
    Store {
        /// The database failure.
        #[from]
        source: StoreError,
    },
    /// A spawned or blocking task panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task {
        /// What the task did.
        what: &'static str,
        /// How it ended.
        source: tokio::task::JoinError,
    },
    /// The pod's network could not be set up or torn down.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A CDI device could not be resolved or applied.
    #[error(transparent)]
    Cdi(#[from] cdi::CdiError),
    /// A CreateContainer field breaks the contract.
    #[error("{0}")]
    InvalidContainer(Invalid),
    /// The request asks for something crius does not do.
    #[error("{field}: {what} is not implemented by crius yet")]
    Unsupported {
        /// The CRI field.
        field: String,
        /// What it asks for.
        what: &'static str,
    },
    /// An image could not be leased (unknown, or the store failed).
    #[error("{}{source}", .field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Image {
        /// The request field naming the image, when it is not the container's own image.
        field: Option<String>,
        /// The image store's error.
        source: crius_image::ImageError,
    },
    /// The image's `STOPSIGNAL` names no signal.
    #[error("image {image}: {source}")]
    ImageStopSignal {
        /// The image.
        image: String,
        /// What is wrong with it.
        source: signal::SignalError,
    },
}

/// `" (ambiguous: N WHAT match)"` when an id prefix matches `N` records, else nothing.
fn ambiguity(matches: Option<usize>, what: &str) -> String {
    matches.map_or_else(String::new, |n| format!(" (ambiguous: {n} {what} match)"))
}

/// A pod as its metadata names it: `namespace/name (uid U, attempt A)`.
fn pod_name(metadata: Option<&spec::PodMetadata>) -> String {
    metadata
        .map(|m| {
            format!(
                "{}/{} (uid {}, attempt {})",
                m.namespace, m.name, m.uid, m.attempt
            )
        })
        .unwrap_or_default()
}

/// A monitor's refusal keeps its failure (and so its kind); any other client failure is
/// [`PodError::Monitor`].
impl From<ClientError> for PodError {
    fn from(e: ClientError) -> PodError {
        match e {
            ClientError::Refused(source) => PodError::MonitorRefused { source },
            source => PodError::Monitor { source },
        }
    }
}

impl From<tokio::task::JoinError> for PodError {
    fn from(source: tokio::task::JoinError) -> PodError {
        PodError::Task {
            what: "blocking task",
            source,
        }
    }
}

/// The cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// crius writes cgroupfs directly.
    Cgroupfs,
    /// systemd makes each pod cgroup a transient scope unit (over D-Bus).
    Systemd,
}

/// How [`Pods`] is set up.
#[derive(Debug, Clone)]
pub struct PodsConfig {
    /// The daemon's state directory; pods live in `<state>/pods`.
    pub state_dir: PathBuf,
    /// The binary started as `BINARY monitor --pod-dir DIR` (criusd itself).
    pub monitor_exe: PathBuf,
    /// Result of the idmapped-mount probe.
    pub idmap: IdmapSupport,
    /// The cgroup driver.
    pub cgroup_driver: CgroupDriver,
    /// Where containers' writable layers live: `<container_root>/<pod id>/<container id>`
    /// (on disk, under the root by default; never the state directory).
    pub container_root: PathBuf,
    /// The CNI driver that networks pods with a network namespace of their own.
    pub cni: crius_net::Cni,
    /// The directories of CDI spec files, in priority order (a later one wins).
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// The node's AppArmor.
    pub apparmor: apparmor::Node,
}

/// A pod and whether it is ready now.
#[derive(Debug, Clone)]
pub struct PodView {
    /// The record (shared with the in-memory copy).
    pub record: Arc<PodRecord>,
    /// Recorded ready and its monitor and sandbox both run.
    pub ready: bool,
}

/// The pods of this node.
#[derive(Debug)]
pub struct Pods {
    store: Arc<Store<PodRecord>>,
    pods_dir: PathBuf,
    config: PodsConfig,
    locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Parsed monitor states, reused while a `state.json` is unchanged.
    states: statecache::StateCache,
    /// Every container record, as committed to the metadata database.
    containers: Arc<Store<ContainerRecord>>,
    /// The image store: containers lease their images from it.
    images: Arc<crius_image::ImageStore>,
    /// The monitor started ahead of the next pod.
    spares: spare::Spares,
}

/// A pod's monitor as started: a process spawned for it, which exits once it has forked the
/// monitor, or the spare monitor, detached already, with the pipe it reports on.
enum Started {
    Spawned(tokio::process::Child),
    Spare(tokio::process::ChildStdout),
}

/// A new pod's CNI ADD: started when the monitor announced the pinned namespace, or still due
/// (with the `ipRanges` capability to give it).
enum Attach {
    Running(tokio::task::JoinHandle<Result<(), PodError>>),
    Due(Option<serde_json::Value>),
}

/// An I/O failure of `what`.
fn internal(what: &'static str) -> impl FnOnce(std::io::Error) -> PodError {
    move |source| PodError::Io { what, source }
}

/// A new sandbox id: 64 random hex digits.
fn new_id() -> Result<String, PodError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(internal("cannot read /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Finds a pod in `store` by id or unique id prefix.
fn find(store: &Store<PodRecord>, id: &str) -> Result<PodView, PodError> {
    if id.is_empty() {
        return Err(PodError::NotFound {
            id: validate::shown(id),
            ambiguous: None,
        });
    }
    let mut found = store.find(id);
    if let Some(exact) = found.iter().position(|r| r.id == id) {
        return Ok(view(found.swap_remove(exact)));
    }
    match found.len() {
        1 => Ok(view(found.swap_remove(0))),
        n => Err(PodError::NotFound {
            id: validate::shown(id),
            ambiguous: (n > 1).then_some(n),
        }),
    }
}

/// The pidfds of every pod's monitor and sandbox, shared by the daemon's pod table.
static LIVENESS: std::sync::LazyLock<liveness::Liveness> =
    std::sync::LazyLock::new(liveness::Liveness::default);

/// Removes directory tree `dir` off the async workers, whatever its depth, without following
/// symlinks or emptying a mount point.
async fn remove_tree(dir: PathBuf) -> Result<(), PodError> {
    blocking(move || {
        crius_proto::tree::remove(&dir).map_err(|e| PodError::Remove {
            path: dir,
            source: e.into(),
        })
    })
    .await
}

/// Whether the pod's monitor process still runs.
fn monitor_alive(r: &PodRecord) -> bool {
    LIVENESS.is_running(r.monitor_pid, r.monitor_start_time)
}

/// Closes the pidfds of a removed pod's processes.
fn forget_processes(r: &PodRecord) {
    LIVENESS.forget(r.monitor_pid, r.monitor_start_time);
    LIVENESS.forget(r.sandbox_pid, r.sandbox_start_time);
}

impl Pods {
    /// Opens the pod table in `db`, creates `<state>/pods`, and re-attaches to the pods of a
    /// previous run: pods whose monitor is gone are marked not ready, never forgotten.
    pub fn open(
        db: Arc<redb::Database>,
        images: Arc<crius_image::ImageStore>,
        config: PodsConfig,
    ) -> Result<Pods, PodError> {
        use std::os::unix::fs::PermissionsExt;
        let pods_dir = config.state_dir.join("pods");
        std::fs::create_dir_all(&pods_dir).map_err(internal("cannot create the pods directory"))?;
        std::fs::set_permissions(&pods_dir, std::fs::Permissions::from_mode(0o711))
            .map_err(internal("cannot set the mode of the pods directory"))?;
        // Writable layers hold container files: root's alone (overlayfs reaches them with the
        // mounter's credentials, so no pod uid needs to traverse).
        std::fs::create_dir_all(&config.container_root)
            .map_err(internal("cannot create the container root"))?;
        std::fs::set_permissions(
            &config.container_root,
            std::fs::Permissions::from_mode(0o700),
        )
        .map_err(internal("cannot set the mode of the container root"))?;
        if !FAILPOINTS && std::env::var_os(FAILPOINT_ENV).is_some() {
            tracing::warn!(
                "{FAILPOINT_ENV} is set, but this criusd has no failpoints (cargo feature \
                 criusd/failpoints)"
            );
        }
        let store = Arc::new(Store::open(db.clone())?);
        let containers = Store::open(db.clone())?;
        let mut live = 0;
        for record in store.all() {
            let alive = monitor_alive(&record);
            if alive {
                live += 1;
            }
            // `Creating` records are left to `recover`, which rolls them back.
            if record.state == PodState::Ready && !alive {
                tracing::warn!(id = %record.id, "pod monitor is gone: the pod is not ready");
                store.update(&record.id, |r| r.state = PodState::NotReady)?;
            }
        }
        tracing::info!(live, "re-attached to running pod monitors");
        Ok(Pods {
            store,
            pods_dir,
            config,
            locks: std::sync::Mutex::new(HashMap::new()),
            states: statecache::StateCache::default(),
            spares: spare::Spares::default(),
            containers: Arc::new(containers),
            images,
        })
    }

    /// The cgroup driver in force.
    pub fn cgroup_driver(&self) -> CgroupDriver {
        self.config.cgroup_driver
    }

    /// The result of the idmapped-mount probe.
    pub fn idmap_support(&self) -> &IdmapSupport {
        &self.config.idmap
    }

    /// The node's AppArmor, as found at start.
    pub fn apparmor(&self) -> &apparmor::Node {
        &self.config.apparmor
    }

    /// The directory of pod `id`.
    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.pods_dir.join(id)
    }

    fn lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Drops the lock entry of a pod that no longer exists.
    fn forget_lock(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Takes the lock of pod `id` (or unique prefix) and reads its record under it; `None` when
    /// there is no such pod.
    async fn locked(
        &self,
        id: &str,
    ) -> Result<Option<(Arc<PodRecord>, tokio::sync::OwnedMutexGuard<()>)>, PodError> {
        let (store, key) = (self.store.clone(), id.to_owned());
        let full = match blocking(move || find(&store, &key)).await {
            Ok(v) => v.record.id.clone(),
            Err(PodError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let guard = self.lock(&full).lock_owned().await;
        let (store, key) = (self.store.clone(), full.clone());
        match blocking(move || find(&store, &key)).await {
            Ok(v) => Ok(Some((v.record, guard))),
            Err(PodError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Finds a pod by id or unique id prefix.
    pub fn get(&self, id: &str) -> Result<PodView, PodError> {
        find(&self.store, id)
    }

    /// Every pod.
    pub fn list(&self) -> Result<Vec<PodView>, PodError> {
        let records = self.store.all();
        let procs: Vec<(i32, u64)> = records
            .iter()
            .flat_map(|r| {
                [
                    (r.monitor_pid, r.monitor_start_time),
                    (r.sandbox_pid, r.sandbox_start_time),
                ]
            })
            .collect();
        let running = LIVENESS.running_all(&procs);
        Ok(records
            .into_iter()
            .zip(running.chunks(2))
            .map(|(record, running)| {
                let ready = record.state == PodState::Ready && running.iter().all(|r| *r);
                PodView { record, ready }
            })
            .collect())
    }

    /// Whether each pod's monitor runs, in one pass over their pidfds.
    fn monitors_alive(records: &[Arc<PodRecord>]) -> Vec<bool> {
        let procs: Vec<(i32, u64)> = records
            .iter()
            .map(|r| (r.monitor_pid, r.monitor_start_time))
            .collect();
        LIVENESS.running_all(&procs)
    }

    /// The state the pod's monitor last recorded (`state.json`), if any: pids, the sandbox's exit.
    pub fn monitor_state(&self, record: &PodRecord) -> Option<Arc<MonitorState>> {
        self.states.read(&record.dir.join(layout::STATE))
    }

    /// The pinned network namespace of a pod (CNI `netns_path`), while it has one.
    pub fn netns_path(&self, id: &str) -> Result<Option<PathBuf>, PodError> {
        Ok(self.get(id)?.record.netns.clone())
    }

    /// RunPodSandbox: validates, records, starts the monitor and waits for the sandbox; attaches
    /// the pod's network (CNI ADD with `ip_ranges` as the `ipRanges` capability) as soon as its
    /// namespace is pinned, while the monitor finishes its start. A failure leaves nothing
    /// behind. Runs to completion even if the caller goes away.
    pub async fn run(
        self: &Arc<Self>,
        spec: PodSpec,
        ip_ranges: Option<serde_json::Value>,
    ) -> Result<String, PodError> {
        let pods = self.clone();
        tokio::spawn(async move {
            let ran = pods.run_inner(spec, ip_ranges).await;
            // The next pod's monitor starts once this one's sandbox is up (or failed): during its
            // CNI ADD, criusd only waits.
            let refill = pods.clone();
            tokio::spawn(async move { refill.fill_spare().await });
            let (id, attach) = ran?;
            let attached = match attach {
                Attach::Running(task) => task.await.unwrap_or_else(|source| {
                    Err(PodError::Task {
                        what: "CNI ADD task",
                        source,
                    })
                }),
                Attach::Due(ip_ranges) => pods.attach_network(&id, ip_ranges).await,
            };
            if let Err(e) = attached {
                // No half pod: whatever the plugins set up is gone, and so is the sandbox.
                if let Err(e) = pods.remove_pod(&id).await {
                    tracing::warn!(%id, error = %e, "cannot roll back the pod after a network failure");
                }
                return Err(e);
            }
            Ok(id)
        })
        .await
        .map_err(|source| PodError::Task {
                what: "RunPodSandbox task",
                source,
            })?
    }

    /// The AppArmor profile of the sandbox process (`None`: unconfined). Only a profile the pod
    /// names applies: one it does not name leaves the sandbox, which runs crius' own code alone
    /// and hardened, unconfined.
    async fn sandbox_apparmor(&self, spec: &PodSpec) -> Result<Option<String>, PodError> {
        const FIELD: &str = "config.linux.security_context.apparmor";
        if spec.apparmor == apparmor::Request::Unset {
            return Ok(None);
        }
        let node = self.config.apparmor.clone();
        let (request, privileged) = (spec.apparmor.clone(), spec.privileged == Some(true));
        crius_proto::blocking(move || Ok(node.resolve(FIELD, &request, privileged)?)).await
    }

    /// RunPodSandbox up to a running sandbox; returns its id and its CNI ADD, running or due.
    async fn run_inner(
        self: &Arc<Self>,
        mut spec: PodSpec,
        ip_ranges: Option<serde_json::Value>,
    ) -> Result<(String, Attach), PodError> {
        validate::validate(&spec)?;
        if !spec.runtime_handler.is_empty() {
            return Err(PodError::Invalid(Invalid {
                field: "runtime_handler".into(),
                reason: format!(
                    "unknown runtime handler {}: crius has only the default handler \"\"",
                    validate::shown(&spec.runtime_handler)
                ),
            }));
        }
        let userns = spec.namespaces.pod_userns();
        if userns.is_some()
            && let IdmapSupport::Unsupported(reason) = &self.config.idmap
        {
            return Err(PodError::NoUserns {
                reason: reason.clone(),
            });
        }
        let ns = &spec.namespaces;
        let host_network = ns.network == NamespaceMode::Node;
        if spec.hostname.is_empty() {
            // As with other runtimes, a pod that names no hostname keeps the node's (its UTS
            // namespace starts as a copy); a pod name may be longer than a hostname can be.
            spec.hostname = nix_hostname();
        }
        let apparmor = self.sandbox_apparmor(&spec).await?;
        let id = new_id()?;
        let dir = self.pod_dir(&id);
        let systemd = self.config.cgroup_driver == CgroupDriver::Systemd;
        let (cgroup_parent, cgroup_name) = if systemd {
            let slice = validate::systemd_slice(&spec.cgroup_parent, DEFAULT_SYSTEMD_SLICE)
                .map_err(PodError::Invalid)?;
            (slice, format!("crius-{id}.scope"))
        } else if spec.cgroup_parent.is_empty() {
            (DEFAULT_CGROUP_PARENT.to_owned(), format!("crius-{id}"))
        } else {
            (spec.cgroup_parent.clone(), format!("crius-{id}"))
        };
        let sandbox = SandboxSpec {
            version: PROTOCOL_VERSION,
            id: id.clone(),
            hostname: spec.hostname.clone(),
            userns,
            new_net: !host_network,
            new_ipc: ns.ipc != NamespaceMode::Node,
            new_pid: ns.pid != NamespaceMode::Node,
            cgroup: Some(CgroupSpec {
                parent: cgroup_parent,
                name: cgroup_name,
                resources: spec.resources.clone(),
                systemd,
            }),
            shm_size: SHM_SIZE,
            sysctls: spec.sysctls.clone(),
            oom_score_adj: Some(SANDBOX_OOM_SCORE_ADJ),
            writable_root: Some(self.config.container_root.join(&id)),
            apparmor_profile: apparmor,
            files_dir: Some(self.config.container_root.join(&id).join(layout::POD_FILES)),
        };
        let mut record = PodRecord::creating(id.clone(), spec, dir.clone(), crius_proto::now_ns());
        record.files_dir = sandbox.files_dir.clone();
        if !host_network {
            // ADD may start before the sandbox is recorded ready: the namespace it is given and
            // a DEL due on rollback are durable before.
            record.netns = Some(dir.join(layout::NETNS));
            record.network = NetworkPhase::Pending;
        }
        let lock = self.lock(&id);
        let _guard = lock.lock().await;
        let (store, new) = (self.store.clone(), record.clone());
        // The record is committed while the monitor starts: a crash before the commit leaves a
        // pod directory no record owns, which the start-up sweep releases.
        let (inserted, spawned) = tokio::join!(
            blocking::<_, PodError>(move || {
                Ok(store.insert_unless(&new, |other| other.spec.metadata == new.spec.metadata)?)
            }),
            self.spawn_monitor(&record, &sandbox)
        );
        let refused = match inserted {
            Ok(None) => None,
            Ok(Some(existing)) => Some(PodError::AlreadyExists {
                metadata: record.spec.metadata.clone(),
                existing,
            }),
            Err(e) => Some(e),
        };
        if let Some(refused) = refused {
            // Not this pod's to run: its monitor, once it has reported, and directory go.
            if let Ok(child) = spawned {
                let _ = Self::report(child, &record.dir, || {}).await;
            }
            if let Err(e) = self.release(&record).await {
                tracing::error!(%id, error = %e, "cannot clean up a refused pod");
            }
            self.forget_lock(&id);
            return Err(refused);
        }
        failpoint("run-pod:recorded");
        let mut attach = Attach::Due(ip_ranges);
        let started = match spawned {
            Err(e) => Err(e),
            Ok(child) => {
                Self::report(child, &record.dir, || {
                    failpoint("run-pod:netns-pinned");
                    if let Attach::Due(ip_ranges) = &mut attach {
                        let (pods, id, ip_ranges) = (self.clone(), id.clone(), ip_ranges.take());
                        attach = Attach::Running(tokio::spawn(async move {
                            pods.attach_network(&id, ip_ranges).await
                        }));
                    }
                })
                .await
            }
        };
        let started = match started {
            Ok(state) => {
                failpoint("run-pod:monitor-started");
                let (store, key, ready) = (self.store.clone(), id.clone(), state.clone());
                blocking::<_, PodError>(move || {
                    Ok(store.update(&key, |r| {
                        r.state = PodState::Ready;
                        r.monitor_pid = ready.monitor_pid;
                        r.monitor_start_time = ready.monitor_start_time;
                        r.sandbox_pid = ready.sandbox_pid;
                        r.sandbox_start_time = ready.sandbox_start_time;
                        r.netns = ready.netns.clone();
                    })?)
                })
                .await
                .map(|_| state)
            }
            Err(e) => Err(e),
        };
        match started {
            Ok(state) => {
                tracing::info!(%id, monitor = state.monitor_pid, sandbox = state.sandbox_pid, "pod sandbox ready");
                Ok((id, attach))
            }
            Err(e) => {
                let mut del_due = false;
                if let Attach::Running(task) = attach {
                    // Whatever ADD did is undone before the namespace goes.
                    let _ = task.await;
                    if let Ok(pod) = self.get(&id)
                        && let Err(del) = self.detach_network(&pod.record).await
                    {
                        tracing::error!(%id, error = %del, "cannot tear down the network of a failed pod");
                        del_due = true;
                    }
                }
                match self.release(&record).await {
                    Ok(()) if del_due => {
                        // Kept, not ready, with its DEL due: StopPodSandbox or the next start
                        // runs it.
                        self.store.update(&id, |r| r.state = PodState::NotReady)?;
                    }
                    Ok(()) => {
                        self.store.delete(&id)?;
                        self.forget_lock(&id);
                    }
                    Err(cleanup) => {
                        // Keep the record, not ready, so that RemovePodSandbox can retry.
                        tracing::error!(%id, error = %cleanup, "cannot clean up a failed pod");
                        self.store.update(&id, |r| r.state = PodState::NotReady)?;
                    }
                }
                Err(e)
            }
        }
    }

    /// Writes the pod directory and starts its monitor: the spare one when it is ready.
    async fn spawn_monitor(
        &self,
        record: &PodRecord,
        sandbox: &SandboxSpec,
    ) -> Result<Started, PodError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = &record.dir;
        let data =
            serde_json::to_vec_pretty(sandbox).map_err(|source| PodError::EncodeSpec { source })?;
        let prepared = record.clone();
        let traverse_gid = sandbox.userns.as_ref().and_then(|u| u.root_gid());
        blocking(move || {
            let dir = &prepared.dir;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(internal("cannot create the pod directory"))?;
            crius_proto::make_private_dir(dir, traverse_gid)?;
            // The spec first: the monitor's cleanup finds the writable root (and the pod's
            // files in it) through it.
            write_whole(&dir.join(layout::SPEC), &data, 0o600)?;
            let files = prepared.files_dir();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(files)
                .map_err(internal("cannot create the pod's files directory"))?;
            Ok::<_, PodError>(files::write_pod_files(
                files,
                &prepared.spec.hostname,
                prepared.spec.namespaces.network == NamespaceMode::Node,
                prepared.spec.dns.as_ref(),
            )?)
        })
        .await?;
        if let Some(stdout) = self.spares.take(dir).await {
            return Ok(Started::Spare(stdout));
        }
        // A monitor of its own logs to the pod's log from its exec on (the spare opens it).
        let path = dir.join(layout::LOG);
        let log = blocking(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(internal("cannot open the monitor log"))
        })
        .await?;
        tokio::process::Command::new(&self.config.monitor_exe)
            .arg("monitor")
            .arg("--pod-dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .map(Started::Spawned)
            .map_err(internal("cannot start the pod monitor"))
    }

    /// Starts a spare monitor for the next pod, unless one is ready or starting.
    pub async fn fill_spare(&self) {
        self.spares.fill(&self.config.monitor_exe).await;
    }

    /// Reads what the monitor started in `dir` reports: calls `network` when it says the
    /// sandbox's network namespace is pinned; returns the state it reports at last.
    async fn report(
        started: Started,
        dir: &Path,
        network: impl FnOnce(),
    ) -> Result<MonitorState, PodError> {
        let (mut child, stdout) = match started {
            Started::Spawned(mut child) => {
                let stdout = child.stdout.take();
                (Some(child), stdout)
            }
            Started::Spare(stdout) => (None, Some(stdout)),
        };
        let mut line = String::new();
        let read = async {
            if let Some(out) = stdout {
                let mut out = tokio::io::BufReader::new(out);
                out.read_line(&mut line).await?;
                if let Ok(Startup::Network { .. }) = serde_json::from_str::<Startup>(&line) {
                    network();
                    // Lets what `network` spawned begin before the next line is read.
                    tokio::task::yield_now().await;
                    line.clear();
                    out.read_line(&mut line).await?;
                }
            }
            Ok::<_, std::io::Error>(())
        };
        let outcome = tokio::time::timeout(STARTUP_TIMEOUT, read).await;
        // The process started exits as soon as it has forked the monitor: reap it.
        if let Some(child) = child.as_mut() {
            let _ = child.wait().await;
        }
        match outcome {
            Err(_) => {
                return Err(PodError::MonitorSilent {
                    timeout: STARTUP_TIMEOUT,
                    log: dir.join(layout::LOG),
                });
            }
            Ok(Err(source)) => {
                return Err(PodError::Io {
                    what: "cannot read the pod monitor's report",
                    source,
                });
            }
            Ok(Ok(())) => {}
        }
        match serde_json::from_str::<Startup>(&line) {
            Ok(Startup::Ready(state)) => Ok(state),
            Ok(Startup::Failed {
                message,
                precondition: true,
            }) => Err(PodError::SandboxRefused { message }),
            Ok(Startup::Failed { message, .. }) => Err(PodError::SandboxFailed { message }),
            // A second announcement is not a report.
            Ok(Startup::Network { .. }) => Err(PodError::MonitorNoReport {
                log: dir.join(layout::LOG),
            }),
            Err(_) => Err(PodError::MonitorNoReport {
                log: dir.join(layout::LOG),
            }),
        }
    }

    /// StopPodSandbox: tears down the pod's network (CNI DEL), then kills the sandbox and
    /// unpins its network namespace. Idempotent; an unknown id is not an error.
    pub async fn stop(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        match self.get(id) {
            Ok(pod) => self.detach_network(&pod.record).await?,
            Err(PodError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let pods = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { pods.stop_inner(&id).await })
            .await
            .map_err(|source| PodError::Task {
                what: "StopPodSandbox task",
                source,
            })?
    }

    async fn stop_inner(&self, id: &str) -> Result<(), PodError> {
        let Some((record, lock)) = self.locked(id).await? else {
            return Ok(());
        };
        let _guard = lock;
        let stopped = if monitor_alive(&record) {
            match client::request(&record.dir, RequestBody::StopSandbox).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(id = %record.id, error = %e, "the monitor did not stop the sandbox");
                    false
                }
            }
        } else {
            false
        };
        if !stopped && record.dir.exists() {
            self.cleanup(&record.dir).await?;
        }
        let (store, key) = (self.store.clone(), record.id.clone());
        blocking::<_, PodError>(move || {
            Ok(store.update(&key, |r| {
                r.state = PodState::NotReady;
                r.netns = None;
            })?)
        })
        .await?;
        Ok(())
    }

    /// RemovePodSandbox: tears down the pod's network if CNI ADD left an attachment (a
    /// removal without a stop first), stops the pod, ends its monitor, releases every mount
    /// and cgroup, removes its directory and record. Idempotent; an unknown id is not an error.
    pub async fn remove(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let containers = self.pod_container_ids(id);
        if let Ok(pod) = self.get(id)
            && network::may_be_attached(&pod.record)
            && self.network_attached(&pod.record.id).await
        {
            self.detach_network(&pod.record).await?;
        }
        self.remove_pod(id).await?;
        self.release_leases(&containers).await;
        Ok(())
    }

    /// Removes the pod as [`Pods::remove`] does, leaving its network alone.
    async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let pods = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { pods.remove_inner(&id).await })
            .await
            .map_err(|source| PodError::Task {
                what: "RemovePodSandbox task",
                source,
            })?
    }

    async fn remove_inner(&self, id: &str) -> Result<(), PodError> {
        let Some((record, lock)) = self.locked(id).await? else {
            return Ok(());
        };
        let _guard = lock;
        self.release(&record).await?;
        failpoint("remove-pod:released");
        self.forget_containers(&record.id)?;
        let (store, key) = (self.store.clone(), record.id.clone());
        blocking::<_, PodError>(move || Ok(store.delete(&key)?)).await?;
        self.forget_lock(&record.id);
        self.states.forget(&record.dir.join(layout::STATE));
        forget_processes(&record);
        tracing::info!(id = %record.id, "pod sandbox removed");
        Ok(())
    }

    /// Ends the monitor and releases everything of the pod, then removes its directory.
    async fn release(&self, record: &PodRecord) -> Result<(), PodError> {
        let mut done = false;
        if monitor_alive(record) {
            match client::request(&record.dir, RequestBody::Shutdown).await {
                Ok(_) => {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while monitor_alive(record) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    done = !monitor_alive(record);
                }
                Err(e) => {
                    tracing::warn!(id = %record.id, error = %e, "the monitor did not shut down");
                }
            }
        }
        if !record.dir.exists() {
            // Its state went with a reboot: what is left is its writable root on disk (the
            // pod's files, its containers' writable layers), which the monitor would have
            // removed.
            if !monitor_alive(record) {
                let root = self.config.container_root.join(&record.id);
                if root.exists() {
                    remove_tree(root).await?;
                }
            }
            return Ok(());
        }
        if !done {
            self.cleanup(&record.dir).await?;
        }
        let dir = record.dir.clone();
        let removed = blocking::<_, PodError>(move || Ok(crius_proto::tree::remove(&dir))).await?;
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(_) => {
                // Something was still mounted: release it for good and retry.
                self.cleanup(&record.dir).await?;
                remove_tree(record.dir.clone()).await
            }
        }
    }

    /// Runs `BINARY monitor --pod-dir DIR --cleanup`: kills what is left of the pod and
    /// releases its mounts and cgroups (the syscalls live in the monitor crate).
    async fn cleanup(&self, dir: &Path) -> Result<(), PodError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(layout::LOG))
            .map_err(internal("cannot open the monitor log"))?;
        let status = tokio::process::Command::new(&self.config.monitor_exe)
            .arg("monitor")
            .arg("--pod-dir")
            .arg(dir)
            .arg("--cleanup")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .status()
            .await
            .map_err(internal("cannot run the pod cleanup"))?;
        if status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(dir.join(layout::LOG)).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_owned();
            Err(PodError::CleanupFailed {
                status,
                last_line: last,
            })
        }
    }

    /// UpdatePodSandboxResources: applies limits to the pod cgroup through its monitor.
    pub async fn update_resources(&self, id: &str, resources: Resources) -> Result<(), PodError> {
        let pod = self.get(id)?;
        if !monitor_alive(&pod.record) {
            return Err(PodError::PodNotRunning {
                id: pod.record.id.clone(),
            });
        }
        client::request(&pod.record.dir, RequestBody::UpdateResources { resources }).await?;
        Ok(())
    }
}

fn view(record: Arc<PodRecord>) -> PodView {
    let ready = record.state == PodState::Ready
        && monitor_alive(&record)
        && LIVENESS.is_running(record.sandbox_pid, record.sandbox_start_time);
    PodView { record, ready }
}

/// The node's hostname.
fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{IdRange, PodMetadata, UsernsOptions};

    fn pods(dir: &Path, idmap: IdmapSupport, driver: CgroupDriver) -> Arc<Pods> {
        let db = redb::Database::create(dir.join("metadata.redb")).expect("db");
        let config = PodsConfig {
            state_dir: dir.join("state"),
            // A "monitor" that reports nothing (start fails) and cleans up successfully.
            monitor_exe: PathBuf::from("/bin/true"),
            idmap,
            cgroup_driver: driver,
            container_root: dir.join("containers"),
            cni: crius_net::Cni::new(
                dir.join("cni/net.d"),
                [dir.join("cni/bin")],
                dir.join("cni/cache"),
            ),
            cdi_spec_dirs: Vec::new(),
            apparmor: apparmor::Node::Off("not in unit tests".into()),
        };
        let db = Arc::new(db);
        let images = crius_image::ImageStore::open(
            &dir.join("root"),
            db.clone(),
            crius_image::RegistryOptions::default(),
        )
        .expect("image store");
        Arc::new(Pods::open(db, Arc::new(images), config).expect("open"))
    }

    fn spec(userns: bool) -> PodSpec {
        let range = IdRange {
            container_id: 0,
            host_id: 1000,
            length: 100_000,
        };
        let mut spec = PodSpec {
            metadata: Some(PodMetadata {
                name: "n".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            ..PodSpec::default()
        };
        if userns {
            spec.namespaces.userns = Some(UsernsOptions {
                mode: NamespaceMode::Pod,
                uids: vec![range],
                gids: vec![range],
            });
        }
        spec
    }

    #[test]
    fn messages_name_what_was_asked() {
        let ambiguous = PodError::NotFound {
            id: validate::shown("ab"),
            ambiguous: Some(2),
        };
        assert_eq!(
            ambiguous.to_string(),
            "pod sandbox \"ab\" (ambiguous: 2 pods match) not found"
        );
        let exists = PodError::AlreadyExists {
            metadata: spec(false).metadata,
            existing: "f00".into(),
        };
        assert_eq!(
            exists.to_string(),
            "pod sandbox ns/n (uid u, attempt 0) already exists as f00"
        );
    }

    #[tokio::test]
    async fn userns_without_idmapped_mounts_is_a_precondition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pods(
            dir.path(),
            IdmapSupport::Unsupported("tmpfs: mount_setattr: EINVAL".into()),
            CgroupDriver::Cgroupfs,
        );
        match p.run(spec(true), None).await {
            Err(e @ PodError::NoUserns { .. }) => {
                let m = e.to_string();
                assert!(m.contains("tmpfs"), "{m}");
            }
            other => panic!("expected a precondition failure, got {other:?}"),
        }
        assert!(p.list().expect("list").is_empty());
    }

    #[tokio::test]
    async fn cgroupfs_parent_with_systemd_and_unknown_handler_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pods(dir.path(), IdmapSupport::Supported, CgroupDriver::Systemd);
        let mut s = spec(false);
        s.cgroup_parent = "/kubepods/besteffort/pod1".into();
        match p.run(s, None).await {
            Err(PodError::Invalid(i)) => assert_eq!(i.field, "config.linux.cgroup_parent"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert!(p.list().expect("list").is_empty());
        let other = tempfile::tempdir().expect("tempdir");
        let p = pods(
            other.path(),
            IdmapSupport::Supported,
            CgroupDriver::Cgroupfs,
        );
        let mut s = spec(false);
        s.runtime_handler = "kata".into();
        assert!(matches!(p.run(s, None).await, Err(PodError::Invalid(_))));
    }

    #[tokio::test]
    async fn a_failed_start_leaves_no_record_and_unknown_ids_are_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = pods(dir.path(), IdmapSupport::Supported, CgroupDriver::Cgroupfs);
        assert!(matches!(
            p.run(spec(false), None).await,
            Err(PodError::MonitorNoReport { .. })
        ));
        assert!(p.list().expect("list").is_empty());
        let leftovers = std::fs::read_dir(dir.path().join("state/pods"))
            .expect("pods dir")
            .count();
        assert_eq!(leftovers, 0);
        p.stop("nope").await.expect("stop of an unknown pod");
        p.remove("nope").await.expect("remove of an unknown pod");
        assert!(matches!(p.get("nope"), Err(PodError::NotFound { .. })));
    }
}
