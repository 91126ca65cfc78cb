//! The setup most container tests share: a registry with busybox, a criusd that pulled it,
//! pods with or without a user namespace, and containers running shell scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::*;

use crate::harness::{Criusd, Options};
use crate::image::{busybox, busybox_with_image_user};
use crate::registry::Registry;

/// The host id the test pods' user namespaces start at.
pub const HOST_ID: u32 = 200_000;
/// The length of the test pods' id mappings.
pub const MAP_LEN: u32 = 65_536;

/// A real criusd with a loopback registry holding a busybox image, and a log directory for
/// the pods it runs. Dropping it removes every pod and stops both.
pub struct Env {
    /// The daemon.
    pub daemon: Criusd,
    /// The pulled image's reference.
    pub image: String,
    /// The pods' log directory.
    pub logs: tempfile::TempDir,
    _registry: Registry,
}

/// Starts the registry, pushes busybox (with the image user when asked), starts criusd and
/// pulls the image.
pub async fn setup(with_image_user: bool) -> Env {
    setup_config(with_image_user, "").await
}

/// [`setup`] with `extra` appended to the daemon's config file (top-level keys only).
pub async fn setup_config(with_image_user: bool, extra: &str) -> Env {
    let registry = Registry::start().expect("registry");
    let img = if with_image_user {
        busybox_with_image_user().expect("image")
    } else {
        busybox().expect("image")
    };
    let pushed = img
        .push(&registry.host(), "crius/busybox:1")
        .await
        .expect("push");
    let mut daemon = Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n{extra}", registry.host()),
        ..Options::default()
    })
    .await
    .expect("criusd");
    daemon.pull(&pushed.reference).await.expect("pull");
    let logs = tempfile::Builder::new()
        .prefix("crius-logs-")
        .tempdir()
        .expect("tempdir");
    Env {
        daemon,
        image: pushed.reference,
        logs,
        _registry: registry,
    }
}

/// The mount points of the cgroup hierarchies this host mounts: each v1 hierarchy (named ones
/// included) and the v2 one (on a v2-only node, `/sys/fs/cgroup` alone).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// The directory among `dirs` (one cgroup in several hierarchies) that has `file`.
pub fn cgroup_dir_with<'a>(dirs: &'a [PathBuf], file: &str) -> Option<&'a Path> {
    dirs.iter()
        .map(PathBuf::as_path)
        .find(|d| d.join(file).exists())
}

/// The trimmed content of `file` in the one directory of `dirs` that has it.
pub fn cgroup_file(dirs: &[PathBuf], file: &str) -> String {
    let dir = cgroup_dir_with(dirs, file).unwrap_or_else(|| panic!("no {file} in {dirs:?}"));
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

/// The memory limit of a cgroup in `dirs`: v2 `memory.max` or v1 `memory.limit_in_bytes`.
pub fn memory_limit(dirs: &[PathBuf]) -> String {
    if cgroup_dir_with(dirs, "memory.max").is_some() {
        cgroup_file(dirs, "memory.max")
    } else {
        cgroup_file(dirs, "memory.limit_in_bytes")
    }
}

/// The cpu quota and period of a cgroup in `dirs` as v2's `cpu.max` writes them
/// (`<quota> <period>`), from that file or v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
pub fn cpu_max(dirs: &[PathBuf]) -> String {
    if cgroup_dir_with(dirs, "cpu.max").is_some() {
        cgroup_file(dirs, "cpu.max")
    } else {
        format!(
            "{} {}",
            cgroup_file(dirs, "cpu.cfs_quota_us"),
            cgroup_file(dirs, "cpu.cfs_period_us")
        )
    }
}

/// The memory + swap limit of a cgroup in `dirs` where the node accounts swap: v1
/// `memory.memsw.limit_in_bytes`, or v2 `memory.swap.max` plus `memory.max`.
pub fn memory_and_swap_limit(dirs: &[PathBuf]) -> Option<u64> {
    let number = |file: &str| cgroup_file(dirs, file).parse::<u64>().ok();
    if cgroup_dir_with(dirs, "memory.memsw.limit_in_bytes").is_some() {
        number("memory.memsw.limit_in_bytes")
    } else if cgroup_dir_with(dirs, "memory.swap.max").is_some() {
        Some(number("memory.swap.max")? + number("memory.max")?)
    } else {
        None
    }
}

/// The cpu shares of a cgroup in `dirs` as (found, wanted): v1 `cpu.shares`, or v2 `cpu.weight`
/// against the weight `shares` converts to.
pub fn cpu_shares(dirs: &[PathBuf], shares: u64) -> (String, String) {
    if cgroup_dir_with(dirs, "cpu.shares").is_some() {
        (cgroup_file(dirs, "cpu.shares"), shares.to_string())
    } else {
        let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
        (cgroup_file(dirs, "cpu.weight"), weight.to_string())
    }
}

/// A pod config named `name`, with the test user namespace mapping ([`HOST_ID`], [`MAP_LEN`])
/// when `userns`.
pub fn pod_config(name: &str, userns: bool, log_dir: &Path) -> PodSandboxConfig {
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crius-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if userns {
        with_userns(config, HOST_ID, MAP_LEN)
    } else {
        config
    }
}

/// The namespace options of `config`, made where absent.
pub fn namespace_options(config: &mut PodSandboxConfig) -> &mut NamespaceOption {
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .namespace_options
        .get_or_insert_default()
}

/// `config` with a user namespace (mode POD) mapping container ids from 0, `length` of them,
/// to host ids from `host`, for users and groups alike.
pub fn with_userns(mut config: PodSandboxConfig, host: u32, length: u32) -> PodSandboxConfig {
    let map = IdMapping {
        host_id: host,
        container_id: 0,
        length,
    };
    namespace_options(&mut config).userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod.into(),
        uids: vec![map],
        gids: vec![map],
    });
    config
}

/// `config` with the host's network namespace (network NODE).
pub fn on_host_network(mut config: PodSandboxConfig) -> PodSandboxConfig {
    namespace_options(&mut config).network = NamespaceMode::Node.into();
    config
}

impl Env {
    /// The test registry's `host:port`.
    pub fn registry_host(&self) -> String {
        self._registry.host()
    }

    /// Pushes `image` to the test registry as `repo` (`name:tag`) and pulls it; returns its
    /// reference.
    pub async fn push_and_pull(&mut self, image: crate::image::Image, repo: &str) -> String {
        let pushed = image.push(&self.registry_host(), repo).await.expect("push");
        self.daemon.pull(&pushed.reference).await.expect("pull");
        pushed.reference
    }

    /// Runs a pod sandbox from `config`; returns its id and config.
    pub async fn pod_from(&mut self, config: PodSandboxConfig) -> (String, PodSandboxConfig) {
        let id = self
            .daemon
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        (id, config)
    }

    /// Pod `id`'s directory under the daemon's state directory.
    pub fn pod_dir(&self, id: &str) -> std::path::PathBuf {
        self.daemon.paths.state.join("pods").join(id)
    }

    /// The state pod `id`'s monitor wrote (`state.json`: monitor and sandbox pids, …).
    pub fn monitor_state(&self, id: &str) -> serde_json::Value {
        let path = self.pod_dir(id).join("state.json");
        serde_json::from_slice(&std::fs::read(&path).expect("monitor state")).expect("state json")
    }

    /// The JSON of a container's verbose ContainerStatus `info` (pid, cgroup dirs, …).
    pub async fn verbose_info(&mut self, id: &str) -> serde_json::Value {
        let info = self
            .daemon
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .info;
        serde_json::from_str(&info["info"]).expect("info json")
    }

    /// Waits (20 s at most) until the container's log has `n` stdout lines; returns them.
    pub async fn wait_stdout(&self, name: &str, n: usize) -> Vec<String> {
        self.wait_stdout_until(name, |lines| lines.len() >= n).await
    }

    /// Waits (30 s at most) until the container's last stdout line is `end`; returns the lines.
    pub async fn wait_end(&self, name: &str) -> Vec<String> {
        self.wait_stdout_until(name, |lines| {
            lines.last().map(String::as_str) == Some("end")
        })
        .await
    }

    async fn wait_stdout_until(&self, name: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.stdout(name);
            if done(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {:?}",
                self.log_lines(name)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a pod sandbox; returns its id and config.
    pub async fn pod(&mut self, name: &str, userns: bool) -> (String, PodSandboxConfig) {
        let config = pod_config(name, userns, self.logs.path());
        self.pod_from(config).await
    }

    /// A container config running `script` with `/bin/sh -c`, logging to `<name>.log`.
    pub fn container_config(&self, name: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..ImageSpec::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            labels: BTreeMap::from([("app".into(), name.into())]),
            annotations: BTreeMap::from([("note".into(), "n".into())]),
            linux: Some(LinuxContainerConfig::default()),
            ..ContainerConfig::default()
        }
    }

    /// CreateContainer in `pod`; returns the container id.
    pub async fn create(
        &mut self,
        pod: &(String, PodSandboxConfig),
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.daemon
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// ListContainers without a filter.
    pub async fn containers(&mut self) -> Vec<Container> {
        self.daemon
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers
    }

    /// StartContainer.
    pub async fn start(&mut self, id: &str) {
        self.daemon
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("start");
    }

    /// Creates and starts a container; returns its id.
    pub async fn run(
        &mut self,
        pod: &(String, PodSandboxConfig),
        config: ContainerConfig,
    ) -> String {
        let id = self.create(pod, config).await.expect("create");
        self.start(&id).await;
        id
    }

    /// ContainerStatus.
    pub async fn status(&mut self, id: &str) -> ContainerStatus {
        self.daemon
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status body")
    }

    /// Waits until the container has exited, at most `timeout`.
    pub async fn wait_exit(&mut self, id: &str, timeout: Duration) -> ContainerStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(id).await;
            if s.state == ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lines of a container's CRI log, checked for the format, as (stream, tag, text).
    pub fn log_lines(&self, name: &str) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
            .unwrap_or_default();
        text.lines()
            .map(|l| {
                let parts: Vec<&str> = l.splitn(4, ' ').collect();
                assert_eq!(parts.len(), 4, "CRI log line {l:?}");
                let ts = parts[0];
                assert!(
                    ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                    "RFC3339Nano time in {l:?}"
                );
                assert!(parts[1] == "stdout" || parts[1] == "stderr", "{l:?}");
                assert!(parts[2] == "F" || parts[2] == "P", "{l:?}");
                (
                    parts[1].to_owned(),
                    parts[2].to_owned(),
                    parts[3].to_owned(),
                )
            })
            .collect()
    }

    /// The container's stdout lines from its CRI log.
    pub fn stdout(&self, name: &str) -> Vec<String> {
        self.log_lines(name)
            .into_iter()
            .filter(|(s, _, _)| s == "stdout")
            .map(|(_, _, t)| t)
            .collect()
    }

    /// ExecSync with a timeout in seconds.
    pub async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.daemon
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| (*c).to_owned()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// A pod whose sandbox security context is privileged (critest's createPrivilegedPodSandbox).
    pub async fn privileged_pod(&mut self, name: &str) -> (String, PodSandboxConfig) {
        let mut config = pod_config(name, false, self.logs.path());
        config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .privileged = true;
        self.pod_from(config).await
    }
}
