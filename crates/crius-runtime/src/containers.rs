//! Containers as criusd sees them: records in the metadata database (table `containers`) and
//! the lifecycle requests to the pod's monitor. The monitor records pids, start times and exit
//! codes in the pod's `state.json`; the state reported here is read from there, so it is the
//! same after a criusd restart.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crius_proto::{BindMount, ContainerSpec, RequestBody};
use serde::{Deserialize, Serialize};

use crate::store::{Record, Store, StoreError};
use crate::{PodError, Pods, monitor_alive};

/// How long to wait for a container to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// One container as recorded by criusd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id (64 hex digits).
    pub id: String,
    /// The pod sandbox id.
    pub pod_id: String,
    /// Metadata name.
    pub name: String,
    /// Metadata attempt.
    pub attempt: u32,
    /// The image as requested.
    pub image: String,
    /// The image id.
    pub image_id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// The log file, empty when none.
    pub log_path: String,
    /// Bind mounts asked for.
    pub mounts: Vec<BindMount>,
    /// Signal number StopContainer sends first (the image's StopSignal or SIGTERM).
    pub stop_signal: i32,
    /// When criusd recorded it.
    pub created_at_ns: i64,
    /// CreateContainer has not finished: the start-up sweep rolls such a container back (its
    /// client never got the id).
    #[serde(default)]
    pub creating: bool,
    /// The cgroup limits in force (as created, then as last updated).
    #[serde(default)]
    pub resources: crius_proto::Resources,
    /// The first process's `oom_score_adj` as asked at create (UpdateContainerResources does
    /// not change it).
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// The image's repository digest (`repo@sha256:…`) at create; empty when none is known.
    #[serde(default)]
    pub image_ref: String,
    /// The image as the user wrote it (`ImageSpec.user_specified_image`).
    #[serde(default)]
    pub user_specified_image: String,
    /// What CreateContainer found wrong but not fatal (an image with ids beyond the pod's user
    /// namespace); reported in ContainerStatus.
    #[serde(default)]
    pub warning: String,
}

impl Record for ContainerRecord {
    const TABLE: &'static str = "containers";
    const KIND: &'static str = "container";
    fn key(&self) -> &str {
        &self.id
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStateKind {
    /// Created, not started.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended.
    Exited,
    /// Its monitor is gone and its end was never recorded.
    Unknown,
}

/// A container and what its monitor recorded.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// The record (shared with the in-memory copy).
    pub record: std::sync::Arc<ContainerRecord>,
    /// The state.
    pub state: ContainerStateKind,
    /// What the monitor recorded, if it knows the container (shared with the cached state).
    pub monitor: Option<std::sync::Arc<crius_proto::ContainerState>>,
    /// The container's process died with its pod monitor, which never recorded the end: the
    /// exit in `monitor` is crius' (code 137, the time the monitor last wrote its state).
    pub monitor_died: bool,
}

impl ContainerView {
    /// Whether the container's id starts with `id`, its pod's with `pod_id` (empty: any) and
    /// its labels hold every pair of `labels`: a list filter.
    pub fn selected_by(
        &self,
        id: &str,
        pod_id: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        self.record.id.starts_with(id)
            && self.record.pod_id.starts_with(pod_id)
            && labels
                .iter()
                .all(|(k, v)| self.record.labels.get(k) == Some(v))
    }
}

/// The exit code given to a container whose process died with its pod monitor: the kernel
/// kills every process of a pid namespace with SIGKILL when its init (the sandbox) dies.
pub const MONITOR_DIED_EXIT_CODE: i32 = 128 + 9;

/// A container's view from its pod monitor's state (`None` when unreadable), whether the
/// monitor runs and, when it does not, when it last wrote its state.
fn container_view_of(
    record: std::sync::Arc<ContainerRecord>,
    pod_state: Option<&crius_proto::MonitorState>,
    alive: bool,
    last_written_ns: Option<i64>,
) -> ContainerView {
    let mut monitor = pod_state.and_then(|s| s.containers.get(&record.id).cloned());
    let mut monitor_died = false;
    if !alive
        && let Some(shared) = monitor.as_mut()
        && shared.exit.is_none()
        && !crius_proto::process_is(shared.pid, shared.start_time)
    {
        monitor_died = true;
        // The view's own copy: the monitor never recorded this exit.
        let m = std::sync::Arc::make_mut(shared);
        m.exit = Some(crius_proto::Exit {
            code: MONITOR_DIED_EXIT_CODE,
            at_ns: last_written_ns
                .unwrap_or(0)
                .max(m.started_at_ns.unwrap_or(m.created_at_ns)),
        });
    }
    let state = match &monitor {
        Some(m) if m.exit.is_some() => ContainerStateKind::Exited,
        Some(_) if !alive => ContainerStateKind::Unknown,
        Some(m) if m.started_at_ns.is_some() => ContainerStateKind::Running,
        Some(_) => ContainerStateKind::Created,
        None => ContainerStateKind::Unknown,
    };
    ContainerView {
        record,
        state,
        monitor,
        monitor_died,
    }
}

/// When a pod monitor last wrote its `state.json`, in nanoseconds since the epoch.
fn state_written_ns(record: &crate::PodRecord) -> Option<i64> {
    let modified = std::fs::metadata(record.dir.join(crius_proto::layout::STATE))
        .ok()?
        .modified()
        .ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_nanos()).ok()
}

impl Pods {
    fn put_container(&self, record: &ContainerRecord) -> Result<(), StoreError> {
        self.containers.put(record)
    }

    pub(crate) fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        self.containers.delete(id)
    }

    /// Runs `write` on the container records from a blocking thread: a commit waits for its
    /// fsync, which must not hold up the async task's other work.
    async fn write_containers<T: Send + 'static>(
        &self,
        write: impl FnOnce(&Store<ContainerRecord>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.containers.clone();
        crius_proto::blocking(move || write(&store)).await
    }

    /// Every container record (shared: a listing copies no record).
    pub(crate) fn container_records(&self) -> Vec<std::sync::Arc<ContainerRecord>> {
        self.containers.all()
    }

    /// Every container record's id and whether its CreateContainer is unfinished, by pod id.
    pub(crate) fn container_ids_by_pod(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<(String, bool)>>, StoreError> {
        let mut out: std::collections::HashMap<String, Vec<(String, bool)>> =
            std::collections::HashMap::new();
        for r in self.container_records() {
            out.entry(r.pod_id.clone())
                .or_default()
                .push((r.id.clone(), r.creating));
        }
        Ok(out)
    }

    /// Drops the records of a pod's containers (the pod is being removed).
    pub(crate) fn forget_containers(&self, pod_id: &str) -> Result<(), StoreError> {
        for r in self.container_records() {
            if r.pod_id == pod_id {
                self.delete_container(&r.id)?;
            }
        }
        Ok(())
    }

    fn container_view(&self, record: std::sync::Arc<ContainerRecord>) -> ContainerView {
        let pod = self.get(&record.pod_id).ok();
        let state = pod.as_ref().and_then(|p| self.monitor_state(&p.record));
        let alive = pod.as_ref().is_some_and(|p| monitor_alive(&p.record));
        let written = match &pod {
            Some(p) if !alive => state_written_ns(&p.record),
            _ => None,
        };
        container_view_of(record, state.as_deref(), alive, written)
    }

    /// Every container. Each pod's record and `state.json` are read once (ListContainers and
    /// ListContainerStats over many containers).
    pub fn list_containers(&self) -> Result<Vec<ContainerView>, PodError> {
        type PodView = (
            Option<std::sync::Arc<crius_proto::MonitorState>>,
            bool,
            Option<i64>,
        );
        let records = self.store.all();
        // The states' change queue is read once for the listing, not once per pod.
        self.states.take_changes();
        let alive = Pods::monitors_alive(&records);
        let pods: std::collections::HashMap<&str, PodView> = records
            .iter()
            .zip(alive)
            .map(|(r, alive)| {
                let written = if alive { None } else { state_written_ns(r) };
                let state = self
                    .states
                    .read_taken(&r.dir.join(crius_proto::layout::STATE));
                (r.id.as_str(), (state, alive, written))
            })
            .collect();
        Ok(self
            .container_records()
            .into_iter()
            .map(|r| {
                let (state, alive, written) = pods
                    .get(r.pod_id.as_str())
                    .map_or((None, false, None), |(s, a, w)| (s.as_deref(), *a, *w));
                container_view_of(r, state, alive, written)
            })
            .collect())
    }

    /// Finds a container by id or unique id prefix.
    pub fn get_container(&self, id: &str) -> Result<ContainerView, PodError> {
        if id.is_empty() {
            return Err(PodError::ContainerNotFound {
                id: crate::validate::shown(id),
                ambiguous: None,
            });
        }
        let mut found = self.containers.find(id);
        if let Some(exact) = found.iter().position(|r| r.id == id) {
            return Ok(self.container_view(found.swap_remove(exact)));
        }
        match found.len() {
            1 => Ok(self.container_view(found.swap_remove(0))),
            n => Err(PodError::ContainerNotFound {
                id: crate::validate::shown(id),
                ambiguous: (n > 1).then_some(n),
            }),
        }
    }

    /// A new container id.
    pub fn new_container_id(&self) -> Result<String, PodError> {
        crate::new_id()
    }

    /// Records the container and has the pod's monitor create it. On failure nothing is left.
    pub(crate) async fn commit_container(
        &self,
        record: ContainerRecord,
        spec: ContainerSpec,
        lease: crius_image::LeaseCommit,
    ) -> Result<String, PodError> {
        let Some((pod, _guard)) = self.locked(&record.pod_id).await? else {
            return Err(PodError::NotFound {
                id: record.pod_id.clone(),
                ambiguous: None,
            });
        };
        if !crate::view(pod.clone()).ready {
            return Err(PodError::PodNotReady { id: pod.id.clone() });
        }
        if let Some(other) = self.container_records().into_iter().find(|r| {
            r.pod_id == record.pod_id && r.name == record.name && r.attempt == record.attempt
        }) {
            return Err(PodError::ContainerExists {
                name: record.name,
                attempt: record.attempt,
                pod_id: record.pod_id,
                existing: other.id.clone(),
            });
        }
        let mut record = record;
        record.creating = true;
        // The "creating" record and the image lease are committed while the monitor makes the
        // container: after a crash the start-up sweep rolls back a creating record through the
        // monitor, removes a container the monitor holds that no record owns, and releases a
        // lease no container owns.
        let (result, put, leased) = tokio::join!(
            crate::client::request(
                &pod.dir,
                RequestBody::CreateContainer {
                    spec: Box::new(spec),
                },
            ),
            async {
                // Off the task: the request is on its way meanwhile.
                let creating = record.clone();
                let put = self.write_containers(move |s| s.put(&creating)).await;
                crate::failpoint("create-container:recorded");
                put
            },
            async {
                let leased = lease.done().await;
                crate::failpoint("create-container:leased");
                leased
            }
        );
        let failed = match (put, leased, result) {
            (Ok(()), Ok(()), Ok(_)) => None,
            (Err(e), _, _) => Some(PodError::from(e)),
            (Ok(()), Err(source), _) => Some(PodError::Image {
                field: None,
                source,
            }),
            (Ok(()), Ok(()), Err(e)) => Some(e.into()),
        };
        if let Some(e) = failed {
            let _ = crate::client::request(
                &pod.dir,
                RequestBody::RemoveContainer {
                    id: record.id.clone(),
                },
            )
            .await;
            let id = record.id.clone();
            self.write_containers(move |s| s.delete(&id)).await?;
            return Err(e);
        }
        crate::failpoint("create-container:monitor-created");
        record.creating = false;
        let created = record.clone();
        self.write_containers(move |s| s.put(&created)).await?;
        crate::failpoint("create-container:committed");
        Ok(record.id)
    }

    fn pod_dir_of(&self, view: &ContainerView) -> Result<std::path::PathBuf, PodError> {
        let pod = self.get(&view.record.pod_id)?;
        if !monitor_alive(&pod.record) {
            return Err(PodError::MonitorGone {
                pod_id: pod.record.id.clone(),
            });
        }
        Ok(pod.record.dir.clone())
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<(), PodError> {
        let view = self.get_container(id)?;
        if view.state != ContainerStateKind::Created {
            return Err(PodError::ContainerNotCreated {
                id: view.record.id.clone(),
                state: view.state,
            });
        }
        let dir = self.pod_dir_of(&view)?;
        crate::client::request(
            &dir,
            RequestBody::StartContainer {
                id: view.record.id.clone(),
            },
        )
        .await?;
        crate::failpoint("start-container:started");
        Ok(())
    }

    async fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.get_container(id) {
                Ok(v) if v.state == ContainerStateKind::Running => {}
                _ => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// StopContainer: the stop signal, then SIGKILL after `timeout`. Stopping a container that
    /// is not running is fine.
    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), PodError> {
        let view = self.get_container(id)?;
        if view.state != ContainerStateKind::Running {
            return Ok(());
        }
        let dir = self.pod_dir_of(&view)?;
        let cid = view.record.id.clone();
        let signal = |signal: i32| RequestBody::SignalContainer {
            id: cid.clone(),
            signal,
        };
        if !timeout.is_zero() {
            crate::client::request(&dir, signal(view.record.stop_signal)).await?;
            if self.wait_exit(&cid, timeout).await {
                return Ok(());
            }
        }
        crate::client::request(&dir, signal(libc_sigkill())).await?;
        if self.wait_exit(&cid, KILL_WAIT).await {
            Ok(())
        } else {
            Err(PodError::Unkillable {
                id: cid,
                waited: KILL_WAIT,
            })
        }
    }

    /// RemoveContainer: kills it if needed, releases its rootfs, forgets it and releases its
    /// image leases. Idempotent.
    pub async fn remove_container(&self, id: &str) -> Result<(), PodError> {
        let view = match self.get_container(id) {
            Ok(v) => v,
            Err(PodError::ContainerNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Ok(pod) = self.get(&view.record.pod_id)
            && monitor_alive(&pod.record)
        {
            crate::client::request(
                &pod.record.dir,
                RequestBody::RemoveContainer {
                    id: view.record.id.clone(),
                },
            )
            .await?;
        }
        crate::failpoint("remove-container:monitor-removed");
        self.delete_container(&view.record.id)?;
        crate::failpoint("remove-container:forgotten");
        self.release_leases(std::slice::from_ref(&view.record.id))
            .await;
        Ok(())
    }

    /// Releases the image leases of containers that are gone (their own and their image
    /// volumes'). Failures are logged: the start-up sweep releases what is left.
    pub(crate) async fn release_leases(&self, ids: &[String]) {
        for id in ids {
            if let Err(e) = self.images.release(id).await {
                tracing::warn!(%id, error = %e, "cannot release the image lease");
            }
        }
    }

    /// The ids of a pod's containers (none for an unknown pod).
    pub(crate) fn pod_container_ids(&self, pod_id: &str) -> Vec<String> {
        let Ok(pod) = self.get(pod_id) else {
            return Vec::new();
        };
        self.container_records()
            .into_iter()
            .filter(|r| r.pod_id == pod.record.id)
            .map(|r| r.id.clone())
            .collect()
    }

    /// UpdateContainerResources: applies limits to the container's cgroup, live.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: crius_proto::Resources,
    ) -> Result<(), PodError> {
        let view = self.get_container(id)?;
        if !matches!(
            view.state,
            ContainerStateKind::Running | ContainerStateKind::Created
        ) {
            return Err(PodError::ContainerNotRunning {
                id: view.record.id.clone(),
            });
        }
        let dir = self.pod_dir_of(&view)?;
        crate::client::request(
            &dir,
            RequestBody::UpdateContainerResources {
                id: view.record.id.clone(),
                resources: resources.clone(),
            },
        )
        .await?;
        let mut record = ContainerRecord::clone(&view.record);
        merge_resources(&mut record.resources, resources);
        self.put_container(&record)?;
        Ok(())
    }

    /// ReopenContainerLog.
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), PodError> {
        let view = self.get_container(id)?;
        if view.state != ContainerStateKind::Running {
            return Err(PodError::ContainerNotRunning {
                id: view.record.id.clone(),
            });
        }
        let dir = self.pod_dir_of(&view)?;
        crate::client::request(
            &dir,
            RequestBody::ReopenContainerLog {
                id: view.record.id.clone(),
            },
        )
        .await?;
        Ok(())
    }
}

/// The limits in force after an update: each limit the update sets replaces the recorded
/// one (hugepage limits by page size, `unified` files by name); what it leaves unset stays as
/// it was, in the record as in the cgroup, which the monitor leaves untouched for it.
fn merge_resources(current: &mut crius_proto::Resources, update: crius_proto::Resources) {
    let crius_proto::Resources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit,
        memory_swap,
        cpuset_cpus,
        cpuset_mems,
        hugepage_limits,
        unified,
    } = update;
    current.cpu_period = cpu_period.or(current.cpu_period);
    current.cpu_quota = cpu_quota.or(current.cpu_quota);
    current.cpu_shares = cpu_shares.or(current.cpu_shares);
    current.memory_limit = memory_limit.or(current.memory_limit);
    current.memory_swap = memory_swap.or(current.memory_swap);
    current.cpuset_cpus = cpuset_cpus.or(current.cpuset_cpus.take());
    current.cpuset_mems = cpuset_mems.or(current.cpuset_mems.take());
    current.hugepage_limits.extend(hugepage_limits);
    current.unified.extend(unified);
}

/// SIGKILL's number on Linux.
fn libc_sigkill() -> i32 {
    9
}

/// What an ExecSync produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Standard output (with standard error at most [`EXEC_OUTPUT_LIMIT`] bytes).
    pub stdout: Vec<u8>,
    /// Standard error (with standard output at most [`EXEC_OUTPUT_LIMIT`] bytes).
    pub stderr: Vec<u8>,
    /// The exit code (128 + signal when killed).
    pub exit_code: i32,
}

/// An exec's exit code: the helper's (128 + signal when killed).
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The most output one ExecSync reply carries, stdout and stderr together: kubelet's gRPC
/// message limit (16 MiB) less room for the rest of the reply, so that kubelet can always
/// decode the answer.
pub const EXEC_OUTPUT_LIMIT: usize = 16 * 1024 * 1024 - 64 * 1024;

/// How long a timed-out ExecSync waits for its helper to kill and reap the command.
const EXEC_REAP_WAIT: Duration = Duration::from_secs(5);

/// Why an ExecSync did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container or pod is missing or not running, or the helper failed.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// The command ran past its timeout and was killed.
    #[error("command timed out after {0:?}")]
    Timeout(Duration),
}

/// Reads `from` to its end (the command never blocks on a full pipe), keeping the first
/// [`EXEC_OUTPUT_LIMIT`] bytes.
async fn read_limited(mut from: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        let room = EXEC_OUTPUT_LIMIT.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
}

/// Shortens `stdout` and `stderr` (each keeps its start) to at most `limit` bytes together:
/// a stream within half the limit is kept whole and the other gets the rest.
fn fit_output(stdout: &mut Vec<u8>, stderr: &mut Vec<u8>, limit: usize) {
    let (out, err) = (stdout.len(), stderr.len());
    if out + err <= limit {
        return;
    }
    let half = limit / 2;
    let (keep_out, keep_err) = if out <= half {
        (out, limit - out)
    } else if err <= half {
        (limit - err, err)
    } else {
        (half, limit - half)
    };
    stdout.truncate(keep_out);
    stderr.truncate(keep_err);
}

impl Pods {
    /// The exec helper for `cmd` in running container `id` (ExecSync and the streaming Exec):
    /// `criusd monitor --pod-dir DIR --exec ID -- CMD…`, a fresh single-threaded process that
    /// joins the pod's user namespace first, then the container's namespaces, cgroups and
    /// identity. It starts with an empty environment: it needs none (the command's comes from
    /// the container's config), and criusd's is none of the container's business. Killed when
    /// dropped; the caller sets stdio. NotFound for an unknown container, FailedPrecondition
    /// when it is not running or its monitor is gone.
    pub fn exec_command(
        &self,
        id: &str,
        cmd: &[String],
    ) -> Result<tokio::process::Command, PodError> {
        if cmd.is_empty() {
            return Err(PodError::Invalid(crate::Invalid {
                field: "cmd".into(),
                reason: "is empty".into(),
            }));
        }
        let view = self.running_container(id)?;
        let dir = self.pod_dir_of(&view)?;
        let mut command = tokio::process::Command::new(&self.config.monitor_exe);
        command
            .arg("monitor")
            .arg("--pod-dir")
            .arg(&dir)
            .arg("--exec")
            .arg(&view.record.id)
            .arg("--")
            .args(cmd)
            .env_clear()
            .kill_on_drop(true);
        // The exec'd process gets the open-files limit criusd was started with, as the
        // container's own processes do.
        if let Some(started) = std::env::var_os(crius_proto::limits::NOFILE_ENV) {
            command.env(crius_proto::limits::NOFILE_ENV, started);
        }
        Ok(command)
    }

    /// The attach socket of running container `id` (held by its pod monitor) and the
    /// container's full id.
    pub fn attach_socket(&self, id: &str) -> Result<(String, std::path::PathBuf), PodError> {
        let view = self.running_container(id)?;
        let dir = self.pod_dir_of(&view)?;
        Ok((
            view.record.id.clone(),
            dir.join(crius_proto::CONTAINERS_DIR)
                .join(&view.record.id)
                .join(crius_proto::attach::SOCKET),
        ))
    }

    /// Container `id` (or unique prefix), which must be running: NotFound or
    /// FailedPrecondition otherwise.
    pub fn running_container(&self, id: &str) -> Result<ContainerView, PodError> {
        let view = self.get_container(id)?;
        if view.state != ContainerStateKind::Running {
            return Err(PodError::ContainerNotRunning {
                id: view.record.id.clone(),
            });
        }
        Ok(view)
    }
}

impl Pods {
    /// ExecSync: runs `cmd` in the container (through `criusd monitor --exec`, a fresh
    /// process that joins the pod's user namespace first) and collects its output. A zero
    /// timeout waits forever.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let mut child = self
            .exec_command(id, cmd)?
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(crate::internal("cannot start the exec helper"))?;
        let out = child.stdout.take();
        let err = child.stderr.take();
        let run = async {
            let (stdout, stderr) = tokio::join!(
                async {
                    match out {
                        Some(o) => read_limited(o).await,
                        None => Ok(Vec::new()),
                    }
                },
                async {
                    match err {
                        Some(e) => read_limited(e).await,
                        None => Ok(Vec::new()),
                    }
                }
            );
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((stdout?, stderr?, status))
        };
        let result = if timeout.is_zero() {
            Ok(run.await)
        } else {
            tokio::time::timeout(timeout, run).await
        };
        match result {
            Err(_) => {
                // SIGTERM asks the helper to kill and reap the command before it exits; its
                // SIGKILL (on drop) would leave the command's corpse to the host's init.
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                    let _ = tokio::time::timeout(EXEC_REAP_WAIT, child.wait()).await;
                }
                Err(ExecError::Timeout(timeout))
            }
            Ok(Err(source)) => Err(PodError::Io {
                what: "exec",
                source,
            }
            .into()),
            Ok(Ok((mut stdout, mut stderr, status))) => {
                fit_output(&mut stdout, &mut stderr, EXEC_OUTPUT_LIMIT);
                Ok(ExecOutput {
                    stdout,
                    stderr,
                    exit_code: exit_code_of(status),
                })
            }
        }
    }
}

#[cfg(test)]
mod resource_tests {
    use super::merge_resources;
    use crius_proto::Resources;

    #[test]
    fn an_update_replaces_what_it_sets_and_keeps_the_rest() {
        let mut current = Resources {
            cpu_quota: Some(50_000),
            memory_limit: Some(64 << 20),
            memory_swap: Some(128 << 20),
            cpuset_cpus: Some("0".into()),
            hugepage_limits: [("2MB".to_owned(), 4 << 20), ("1GB".to_owned(), 0)].into(),
            unified: [
                ("pids.max".to_owned(), "12".to_owned()),
                ("memory.high".to_owned(), "max".to_owned()),
            ]
            .into(),
            ..Resources::default()
        };
        merge_resources(
            &mut current,
            Resources {
                memory_limit: Some(96 << 20),
                cpuset_cpus: Some("0-1".into()),
                hugepage_limits: [("2MB".to_owned(), 8 << 20)].into(),
                unified: [("pids.max".to_owned(), "64".to_owned())].into(),
                ..Resources::default()
            },
        );
        assert_eq!(
            current,
            Resources {
                cpu_quota: Some(50_000),
                memory_limit: Some(96 << 20),
                memory_swap: Some(128 << 20),
                cpuset_cpus: Some("0-1".into()),
                hugepage_limits: [("2MB".to_owned(), 8 << 20), ("1GB".to_owned(), 0)].into(),
                unified: [
                    ("pids.max".to_owned(), "64".to_owned()),
                    ("memory.high".to_owned(), "max".to_owned()),
                ]
                .into(),
                ..Resources::default()
            }
        );
    }
}

#[cfg(test)]
mod exec_output_tests {
    use super::fit_output;

    fn fit(out: usize, err: usize, limit: usize) -> (usize, usize) {
        let (mut o, mut e) = (vec![1u8; out], vec![2u8; err]);
        fit_output(&mut o, &mut e, limit);
        (o.len(), e.len())
    }

    #[test]
    fn both_streams_together_fit_the_limit_and_share_it_fairly() {
        assert_eq!(fit(3, 4, 10), (3, 4));
        assert_eq!(fit(20, 20, 10), (5, 5));
        assert_eq!(fit(2, 20, 10), (2, 8));
        assert_eq!(fit(20, 3, 10), (7, 3));
        assert_eq!(fit(6, 7, 10), (5, 5));
        assert_eq!(fit(20, 0, 10), (10, 0));
    }
}
