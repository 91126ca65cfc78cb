//! Container and pod stats end to end: a real criusd, busybox containers that burn CPU, fill
//! memory and write to their rootfs; checked through ContainerStats, ListContainerStats,
//! StreamContainerStats, PodSandboxStats and ImageFsInfo.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use cri_api::v1::*;

const MIB: u64 = 1 << 20;

/// The shared container-test setup, with this file's own helpers on top.
struct Env(crius_tests::env::Env);

impl std::ops::Deref for Env {
    type Target = crius_tests::env::Env;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

async fn setup() -> Env {
    Env(crius_tests::env::setup(false).await)
}

/// The shared pod config, labelled `pod=<name>`.
fn pod_config(name: &str, log_dir: &Path, userns: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        labels: BTreeMap::from([("pod".into(), name.into())]),
        ..crius_tests::env::pod_config(name, userns, log_dir)
    }
}

impl Env {
    async fn pod(&mut self, name: &str) -> (String, PodSandboxConfig) {
        self.pod_with(name, false).await
    }

    async fn pod_with(&mut self, name: &str, userns: bool) -> (String, PodSandboxConfig) {
        let config = pod_config(name, self.logs.path(), userns);
        self.pod_from(config).await
    }

    /// Creates and starts a container running `script`, labelled `app=<name>`.
    async fn run(&mut self, pod: &(String, PodSandboxConfig), name: &str, script: &str) -> String {
        self.run_with(pod, name, script, LinuxContainerConfig::default())
            .await
    }

    async fn run_with(
        &mut self,
        pod: &(String, PodSandboxConfig),
        name: &str,
        script: &str,
        linux: LinuxContainerConfig,
    ) -> String {
        let config = ContainerConfig {
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
            annotations: BTreeMap::from([("note".into(), name.into())]),
            linux: Some(linux),
            ..ContainerConfig::default()
        };
        let id = self
            .daemon
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .expect("create")
            .into_inner()
            .container_id;
        self.daemon
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("start");
        id
    }

    async fn stats(&mut self, id: &str) -> ContainerStats {
        self.daemon
            .runtime
            .container_stats(ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .expect("container stats")
            .into_inner()
            .stats
            .expect("stats body")
    }

    async fn list(&mut self, filter: ContainerStatsFilter) -> Vec<ContainerStats> {
        self.daemon
            .runtime
            .list_container_stats(ListContainerStatsRequest {
                filter: Some(filter),
            })
            .await
            .expect("list container stats")
            .into_inner()
            .stats
    }

    async fn exec(&mut self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        let out = self
            .daemon
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 30,
            })
            .await
            .expect("exec")
            .into_inner();
        assert_eq!(
            out.exit_code,
            0,
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn cpu_total(s: &ContainerStats) -> u64 {
    s.cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds)
        .expect("usage_core_nano_seconds")
        .value
}

fn ids(stats: &[ContainerStats]) -> Vec<String> {
    let mut v: Vec<String> = stats
        .iter()
        .map(|s| s.attributes.as_ref().expect("attributes").id.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn busy_container_shows_rising_cpu_usage_and_nano_cores() {
    let mut env = setup().await;
    let pod = env.pod("busy").await;
    let id = env.run(&pod, "busy", "while :; do :; done").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = env.stats(&id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = env.stats(&id).await;
    let (a, b) = (cpu_total(&first), cpu_total(&second));
    let cores = second
        .cpu
        .as_ref()
        .and_then(|c| c.usage_nano_cores)
        .expect("usage_nano_cores")
        .value;
    eprintln!("usage_core_nano_seconds {a} -> {b}, usage_nano_cores {cores}");
    assert!(b > a, "CPU usage did not rise: {a} -> {b}");
    assert!(b - a > 100_000_000, "a busy loop used {} ns in ~1 s", b - a);
    assert!(cores > 100_000_000, "usage_nano_cores {cores}");
    let cpu = second.cpu.as_ref().expect("cpu");
    assert!(cpu.timestamp > first.cpu.as_ref().expect("cpu").timestamp);

    let attrs = second.attributes.as_ref().expect("attributes");
    assert_eq!(attrs.id, id);
    assert_eq!(attrs.metadata.as_ref().expect("metadata").name, "busy");
    assert_eq!(attrs.labels.get("app").map(String::as_str), Some("busy"));
    assert_eq!(
        attrs.annotations.get("note").map(String::as_str),
        Some("busy")
    );
    let mem = second.memory.as_ref().expect("memory");
    assert!(mem.timestamp > 0);
    assert!(mem.usage_bytes.expect("usage").value > 0);
    assert!(mem.page_faults.expect("page faults").value > 0);
    // No memory limit: nothing is available "up to the limit".
    assert!(mem.available_bytes.is_none(), "{mem:?}");

    // Unknown ids are NotFound.
    let err = env
        .daemon
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: "0123456789abcdef".into(),
        })
        .await
        .expect_err("unknown container");
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The pod's own stats: its cgroup holds the busy container.
    let pod_stats = env
        .daemon
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .expect("pod stats body");
    let linux = pod_stats.linux.as_ref().expect("linux");
    assert_eq!(pod_stats.attributes.as_ref().expect("attributes").id, pod.0);
    let pod_cpu = linux
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds)
        .expect("pod cpu")
        .value;
    assert!(pod_cpu >= b, "pod cpu {pod_cpu} < container cpu {b}");
    assert_eq!(ids(&linux.containers), [id.as_str()]);
    let net = linux.network.as_ref().expect("network");
    let eth0 = net.default_interface.as_ref().expect("default interface");
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.is_some() && eth0.tx_bytes.is_some());
    let procs = linux
        .process
        .as_ref()
        .and_then(|p| p.process_count)
        .expect("process count")
        .value;
    assert!(procs >= 2, "pause and the busy shell: {procs}");
    eprintln!("pod cpu {pod_cpu} ns, processes {procs}, eth0 {eth0:?}");
}

#[tokio::test]
async fn container_filling_shm_shows_its_working_set() {
    let mut env = setup().await;
    let pod = env.pod("fill").await;
    // /dev/shm is the pod's tmpfs: its pages are charged to the writer's memory cgroup and
    // are never "inactive file" cache, so they count in the working set.
    let limit = 256 * MIB;
    let id = env
        .run_with(
            &pod,
            "fill",
            "dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=50 && touch /done; sleep 1000",
            LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    memory_limit_in_bytes: i64::try_from(limit).expect("limit"),
                    ..LinuxContainerResources::default()
                }),
                ..LinuxContainerConfig::default()
            },
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mem = loop {
        let s = env.stats(&id).await;
        let m = s.memory.expect("memory");
        if m.working_set_bytes.expect("working set").value >= 50 * MIB {
            break m;
        }
        assert!(Instant::now() < deadline, "working set stays low: {m:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ws = mem.working_set_bytes.expect("ws").value;
    let usage = mem.usage_bytes.expect("usage").value;
    eprintln!(
        "working set {ws} ({} MiB), usage {usage}, rss {:?}, faults {:?}/{:?}",
        ws / MIB,
        mem.rss_bytes,
        mem.page_faults,
        mem.major_page_faults
    );
    assert!(usage >= ws);
    // With a limit, available is what is left of it.
    assert_eq!(mem.available_bytes.expect("available").value, limit - ws);
    assert!(mem.page_faults.expect("faults").value > 0);
    assert!(mem.major_page_faults.is_some());
    assert!(mem.rss_bytes.is_some());
}

#[tokio::test]
async fn writable_layer_grows_after_a_write() {
    let mut env = setup().await;
    let pod = env.pod("writer").await;
    let id = env.run(&pod, "writer", "sleep 1000").await;
    let before = env.stats(&id).await;
    let layer = before.writable_layer.clone().expect("writable layer");
    let (b0, i0) = (
        layer.used_bytes.expect("used").value,
        layer.inodes_used.expect("inodes").value,
    );
    let mountpoint = layer.fs_id.as_ref().expect("fs id").mountpoint.clone();
    assert!(Path::new(&mountpoint).is_absolute(), "{mountpoint}");
    assert!(
        env.daemon.paths.state.starts_with(&mountpoint),
        "{mountpoint} holds {}",
        env.daemon.paths.state.display()
    );
    env.exec(
        &id,
        &["dd", "if=/dev/urandom", "of=/big", "bs=1048576", "count=10"],
    )
    .await;
    env.exec(&id, &["sync"]).await;
    let after = env.stats(&id).await;
    let layer = after.writable_layer.clone().expect("writable layer");
    let (b1, i1) = (
        layer.used_bytes.expect("used").value,
        layer.inodes_used.expect("inodes").value,
    );
    eprintln!("writable layer: {b0} B / {i0} inodes -> {b1} B / {i1} inodes at {mountpoint}");
    assert!(b1 >= b0 + 10 * MIB, "{b0} -> {b1}");
    assert!(i1 > i0, "{i0} -> {i1}");
    assert!(layer.timestamp > 0);

    // The same in a user-namespaced pod, whose upper dir belongs to the mapped root.
    let pod_u = env.pod_with("writer-userns", true).await;
    let id_u = env.run(&pod_u, "writer-userns", "sleep 1000").await;
    let before_u = env.stats(&id_u).await.writable_layer.expect("layer");
    env.exec(
        &id_u,
        &["dd", "if=/dev/urandom", "of=/big", "bs=1048576", "count=10"],
    )
    .await;
    env.exec(&id_u, &["sync"]).await;
    let after_u = env.stats(&id_u).await.writable_layer.expect("layer");
    let (u0, u1) = (
        before_u.used_bytes.expect("used").value,
        after_u.used_bytes.expect("used").value,
    );
    eprintln!("user-namespaced writable layer: {u0} B -> {u1} B");
    assert!(u1 >= u0 + 10 * MIB, "{u0} -> {u1}");

    // ImageFsInfo reports the writable layers as the container filesystem.
    let fs = env
        .daemon
        .images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .expect("image fs info")
        .into_inner();
    let containers = fs.container_filesystems.first().expect("container fs");
    let used = containers.used_bytes.expect("used").value;
    assert!(used >= 20 * MIB, "container filesystem {used}");
    assert!(containers.fs_id.is_some());
}

#[tokio::test]
async fn list_container_stats_filters_by_id_pod_and_label() {
    let mut env = setup().await;
    let pod_a = env.pod("list-a").await;
    let pod_b = env.pod("list-b").await;
    let a1 = env.run(&pod_a, "a1", "sleep 1000").await;
    let a2 = env.run(&pod_a, "a2", "sleep 1000").await;
    let b1 = env.run(&pod_b, "b1", "sleep 1000").await;

    let mut all = vec![a1.clone(), a2.clone(), b1.clone()];
    all.sort();
    let t = Instant::now();
    let listed = env.list(ContainerStatsFilter::default()).await;
    eprintln!("ListContainerStats of 3 containers: {:?}", t.elapsed());
    assert_eq!(ids(&listed), all);

    let mut in_a = vec![a1.clone(), a2.clone()];
    in_a.sort();
    let by_pod = env
        .list(ContainerStatsFilter {
            pod_sandbox_id: pod_a.0.clone(),
            ..ContainerStatsFilter::default()
        })
        .await;
    assert_eq!(ids(&by_pod), in_a);
    for s in &by_pod {
        assert!(s.cpu.is_some() && s.memory.is_some() && s.writable_layer.is_some());
    }

    let by_label = env
        .list(ContainerStatsFilter {
            label_selector: BTreeMap::from([("app".into(), "a2".into())]),
            ..ContainerStatsFilter::default()
        })
        .await;
    assert_eq!(ids(&by_label), [a2.as_str()]);

    let by_id = env
        .list(ContainerStatsFilter {
            id: b1.clone(),
            ..ContainerStatsFilter::default()
        })
        .await;
    assert_eq!(ids(&by_id), [b1.as_str()]);

    let none = env
        .list(ContainerStatsFilter {
            pod_sandbox_id: pod_b.0.clone(),
            label_selector: BTreeMap::from([("app".into(), "a1".into())]),
            ..ContainerStatsFilter::default()
        })
        .await;
    assert!(none.is_empty(), "filters AND: {none:?}");

    // StreamContainerStats sends the same set.
    let mut stream = env
        .daemon
        .runtime
        .stream_container_stats(StreamContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                pod_sandbox_id: pod_a.0.clone(),
                ..ContainerStatsFilter::default()
            }),
        })
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream message") {
        streamed.extend(msg.container_stats);
    }
    assert_eq!(ids(&streamed), in_a);

    // ListPodSandboxStats by label: the pod with its containers.
    let pods = env
        .daemon
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                label_selector: BTreeMap::from([("pod".into(), "list-b".into())]),
                ..PodSandboxStatsFilter::default()
            }),
        })
        .await
        .expect("list pod stats")
        .into_inner()
        .stats;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].attributes.as_ref().expect("attributes").id, pod_b.0);
    assert_eq!(
        ids(&pods[0].linux.as_ref().expect("linux").containers),
        [b1.as_str()]
    );
}

/// The rx bytes of a pod's default interface.
/// The cgroup v2 directory of process `pid` on the host (`0::` of /proc/PID/cgroup beneath the
/// cgroup2 mount), if the node has a cgroup2 hierarchy.
fn v2_dir_of(pid: i64) -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = info.lines().find_map(|l| {
        let (fields, rest) = l.split_once(" - ")?;
        rest.starts_with("cgroup2 ")
            .then(|| fields.split(' ').nth(4).map(str::to_owned))
            .flatten()
    })?;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(Path::new(&mount).join(path.trim_start_matches('/')))
}

/// Container and pod stats carry PSI (cpu, memory, io) where the kernel keeps it for the
/// cgroup (a cgroup v2 directory with `*.pressure` files), with totals in nanoseconds; and say
/// nothing where it does not.
#[tokio::test]
async fn stats_carry_pressure_stall_information() {
    let mut env = setup().await;
    let pod = env.pod("psi").await;
    let id = env
        .run(
            &pod,
            "psi",
            "while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.05; done",
        )
        .await;
    let v = env.verbose_info(&id).await;
    let pid = v["pid"].as_i64().expect("pid");
    let dir = v2_dir_of(pid).filter(|d| d.join("cpu.pressure").exists());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = env
        .daemon
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .expect("stats")
        .into_inner()
        .stats
        .expect("stats body");
    let cpu_psi = stats.cpu.as_ref().and_then(|c| c.psi);
    let memory_psi = stats.memory.as_ref().and_then(|m| m.psi);
    let io_psi = stats.io.as_ref().and_then(|i| i.psi);
    let pod_stats = env
        .daemon
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .expect("pod stats body");
    let pod_linux = pod_stats.linux.expect("linux");
    let pod_cpu_psi = pod_linux.cpu.as_ref().and_then(|c| c.psi);
    let pod_io_psi = pod_linux.io.as_ref().and_then(|i| i.psi);
    let Some(dir) = dir else {
        // No PSI for this cgroup on this node: nothing is made up.
        assert!(cpu_psi.is_none() && memory_psi.is_none() && io_psi.is_none());
        assert!(pod_cpu_psi.is_none() && pod_io_psi.is_none());
        return;
    };
    let after = std::fs::read_to_string(dir.join("cpu.pressure")).expect("cpu.pressure");
    let total_after: u64 = after
        .lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("total=")))
        .and_then(|t| t.parse().ok())
        .expect("some total");
    let cpu_psi = cpu_psi.expect("cpu psi where the cgroup has cpu.pressure");
    let some = cpu_psi.some.expect("some");
    assert!(
        some.total <= total_after * 1000,
        "stats total {} ns, file total after {} us",
        some.total,
        total_after
    );
    assert!((0.0..=100.0).contains(&some.avg10), "{some:?}");
    assert!(memory_psi.is_some_and(|p| p.some.is_some()));
    assert!(io_psi.is_some_and(|p| p.some.is_some()));
    assert!(pod_cpu_psi.is_some() && pod_io_psi.is_some());
}

async fn pod_rx_bytes(env: &mut Env, pod: &str) -> u64 {
    let stats = env
        .daemon
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .expect("pod stats")
        .into_inner()
        .stats
        .expect("stats body");
    let net = stats.linux.and_then(|l| l.network).expect("network stats");
    let eth0 = net.default_interface.expect("default interface");
    assert_eq!(eth0.name, "eth0");
    // The list holds every interface but lo, the default among them, as cAdvisor has it.
    let listed: Vec<&str> = net.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(listed, ["eth0"], "{:?}", net.interfaces);
    assert_eq!(net.interfaces[0], eth0);
    eth0.rx_bytes.expect("rx bytes").value
}

#[tokio::test]
async fn pod_network_stats_count_the_bytes_sent_into_the_pod() {
    network_stats_count_the_bytes_sent(false).await;
}

#[tokio::test]
async fn pod_network_stats_count_the_bytes_sent_into_a_user_namespaced_pod() {
    network_stats_count_the_bytes_sent(true).await;
}

async fn network_stats_count_the_bytes_sent(userns: bool) {
    const SENT: usize = 4 * MIB as usize;
    let mut env = setup().await;
    let pod = env
        .pod_with(
            if userns {
                "netcount-userns"
            } else {
                "netcount"
            },
            userns,
        )
        .await;
    let id = env.run(&pod, "listener", "nc -l -p 8080 > /received").await;
    let ip = env
        .daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.0.clone(),
            verbose: false,
        })
        .await
        .expect("pod status")
        .into_inner()
        .status
        .and_then(|s| s.network)
        .expect("pod network")
        .ip;
    let before = pod_rx_bytes(&mut env, &pod.0).await;
    // The listener may not be up yet: retry the connection until it is (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match tokio::net::TcpStream::connect((ip.as_str(), 8080)).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot reach {ip}:8080: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    {
        use tokio::io::AsyncWriteExt;
        stream.write_all(&vec![b'x'; SENT]).await.expect("send");
        stream.shutdown().await.expect("shutdown");
    }
    drop(stream);
    // The listener ends once it has read everything.
    let status = env.wait_exit(&id, Duration::from_secs(60)).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    let after = pod_rx_bytes(&mut env, &pod.0).await;
    eprintln!("pod eth0 rx bytes: {before} -> {after} after sending {SENT} bytes");
    assert!(
        after >= before + SENT as u64,
        "rx {before} -> {after} after {SENT} bytes"
    );
}

#[tokio::test]
async fn pod_sandbox_metrics_match_their_descriptors() {
    let mut env = setup().await;
    let pod = env.pod("metrics").await;
    let id = env
        .run(
            &pod,
            "metered",
            "dd if=/dev/zero of=/filler bs=1048576 count=2; sleep 1000",
        )
        .await;
    // The write is done once the file has its full size.
    let deadline = Instant::now() + Duration::from_secs(30);
    let size = ["sh", "-c", "stat -c %s /filler 2>/dev/null || echo 0"];
    while env.exec(&id, &size).await.stdout != b"2097152\n" {
        assert!(Instant::now() < deadline, "dd did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let descriptors = env
        .daemon
        .runtime
        .list_metric_descriptors(ListMetricDescriptorsRequest {})
        .await
        .expect("descriptors")
        .into_inner()
        .descriptors;
    let by_name: HashMap<&str, &MetricDescriptor> =
        descriptors.iter().map(|d| (d.name.as_str(), d)).collect();
    assert_eq!(
        by_name.len(),
        descriptors.len(),
        "descriptor names are unique"
    );
    for d in &descriptors {
        assert!(!d.help.is_empty(), "{}", d.name);
        assert_eq!(
            d.label_keys[..5],
            ["pod", "namespace", "container", "id", "image"],
            "{}",
            d.name
        );
    }

    let listed = env
        .daemon
        .runtime
        .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
        .await
        .expect("pod metrics")
        .into_inner()
        .pod_metrics;
    let mine = listed
        .iter()
        .find(|p| p.pod_sandbox_id == pod.0)
        .expect("the pod's metrics");
    let container = mine
        .container_metrics
        .iter()
        .find(|c| c.container_id == id)
        .expect("the container's metrics");
    let check = |m: &Metric| {
        let d = by_name
            .get(m.name.as_str())
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{m:?}");
        let label = |k: &str| {
            let i = d.label_keys.iter().position(|l| l == k).expect("label");
            m.label_values[i].as_str()
        };
        assert_eq!(label("pod"), "metrics");
        assert_eq!(label("namespace"), "crius-test");
        m.value.as_ref().expect("value").value
    };
    let value_of = |metrics: &[Metric], name: &str| -> u64 {
        let found: Vec<&Metric> = metrics.iter().filter(|m| m.name == name).collect();
        assert!(!found.is_empty(), "no {name} in {metrics:?}");
        found.iter().map(|m| check(m)).sum()
    };
    for m in mine.metrics.iter().chain(&container.metrics) {
        check(m);
    }
    for m in &container.metrics {
        let d = by_name[m.name.as_str()];
        let i = d
            .label_keys
            .iter()
            .position(|l| l == "container")
            .expect("key");
        assert_eq!(m.label_values[i], "metered");
        let i = d.label_keys.iter().position(|l| l == "id").expect("key");
        assert_eq!(m.label_values[i], id);
        let i = d.label_keys.iter().position(|l| l == "image").expect("key");
        assert_eq!(m.label_values[i], env.image);
    }
    let c = &container.metrics;
    assert!(value_of(c, "container_memory_usage_bytes") > 0);
    assert!(value_of(c, "container_memory_working_set_bytes") > 0);
    assert!(value_of(c, "container_memory_failures_total") > 0);
    assert!(value_of(c, "container_fs_usage_bytes") >= 2 * MIB);
    assert!(value_of(c, "container_fs_inodes_used") >= 1);
    value_of(c, "container_cpu_usage_seconds_total");
    assert!(value_of(&mine.metrics, "container_processes") >= 2);
    value_of(&mine.metrics, "container_network_receive_bytes_total");
    value_of(&mine.metrics, "container_network_transmit_bytes_total");
    // Every descriptor is used by this pod.
    for d in &descriptors {
        assert!(
            mine.metrics
                .iter()
                .chain(&container.metrics)
                .any(|m| m.name == d.name),
            "{} unused",
            d.name
        );
    }

    // StreamPodSandboxMetrics sends the same pods.
    let mut stream = env
        .daemon
        .runtime
        .stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest {})
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream message") {
        streamed.extend(
            msg.pod_sandbox_metrics
                .into_iter()
                .map(|p| p.pod_sandbox_id),
        );
    }
    assert!(streamed.contains(&pod.0));
}

/// A benchmark, not a test: ListContainerStats over 100 running containers in 10 pods. Run with
/// `cargo test --test stats -- --ignored --nocapture bench_`.
#[tokio::test]
#[ignore = "benchmark: prints ListContainerStats latencies for 100 containers"]
async fn bench_list_container_stats_of_100_containers() {
    let mut env = setup().await;
    let mut pods = Vec::new();
    for p in 0..10 {
        pods.push(env.pod(&format!("bench-{p}")).await);
    }
    for (p, pod) in pods.iter().enumerate() {
        for c in 0..10 {
            env.run(pod, &format!("c{p}-{c}"), "sleep 1000").await;
        }
    }
    let mut times = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let listed = env.list(ContainerStatsFilter::default()).await;
        times.push(t.elapsed());
        assert_eq!(listed.len(), 100);
    }
    times.sort();
    let t = Instant::now();
    env.daemon
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("list containers");
    let list = t.elapsed();
    eprintln!(
        "ListContainerStats, 100 containers: p50 {:?}, p99 {:?}, max {:?}; ListContainers {:?}",
        times[49], times[98], times[99], list
    );
}
