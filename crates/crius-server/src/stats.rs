//! ContainerStats, ListContainerStats, StreamContainerStats, PodSandboxStats and
//! ListPodSandboxStats: crius-runtime reads cgroup files and walks writable layers; this maps
//! what it read onto CRI. Reading blocks (file reads, directory walks), so it runs in
//! `spawn_blocking`, never on a tokio worker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_runtime::stats::{
    CgroupStats, DiskUsage, MemoryStats, disk_usage, mountpoint_of, read_cgroup,
};
use crius_runtime::{ContainerView, PodError, Pods};
use tonic::Status;

use crate::Cri;
use crate::status::pod_error;

/// Stats per message of `StreamContainerStats` / `StreamPodSandboxStats`.
pub(crate) const STREAM_CHUNK: usize = 100;

/// A CPU sample: cumulative usage, when it was read, and the rate computed then.
#[derive(Debug, Clone, Copy)]
struct Sample {
    usage_ns: u64,
    at_ns: i64,
    nano_cores: Option<u64>,
}

/// Samples closer together than this reuse the previous rate: kubelet asks for container and
/// pod stats back to back, and a rate over a few milliseconds is noise.
const MIN_WINDOW_NS: i64 = 500_000_000;

/// The previous CPU sample of each container and pod cgroup (keyed by id), for
/// `usage_nano_cores`.
fn samples() -> &'static Mutex<HashMap<String, Sample>> {
    static SAMPLES: OnceLock<Mutex<HashMap<String, Sample>>> = OnceLock::new();
    SAMPLES.get_or_init(Mutex::default)
}

/// CPU core-nanoseconds per second since the previous sample of `id`; on the first sample,
/// the average since `started_at_ns` (when known). Records the new sample.
fn nano_cores(id: &str, usage_ns: u64, at_ns: i64, started_at_ns: Option<i64>) -> Option<u64> {
    let mut map = samples().lock().unwrap_or_else(|e| e.into_inner());
    let rate = |base_usage: u64, base_at: i64| {
        let elapsed = u128::try_from(at_ns.checked_sub(base_at)?).ok()?;
        let used = u128::from(usage_ns.checked_sub(base_usage)?);
        (elapsed > 0).then(|| u64::try_from(used * 1_000_000_000 / elapsed).ok())?
    };
    let nano_cores = match map.get(id) {
        Some(p)
            if p.usage_ns <= usage_ns && at_ns >= p.at_ns && at_ns - p.at_ns < MIN_WINDOW_NS =>
        {
            return p.nano_cores;
        }
        // A counter that went back (a new cgroup) or a clock step gives None: start again.
        Some(p) => rate(p.usage_ns, p.at_ns),
        None => started_at_ns.filter(|s| *s > 0).and_then(|s| rate(0, s)),
    };
    map.insert(
        id.to_owned(),
        Sample {
            usage_ns,
            at_ns,
            nano_cores,
        },
    );
    nano_cores
}

fn forget_samples(keep: &dyn Fn(&str) -> bool) {
    samples()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|k, _| keep(k));
}

fn value(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

fn cpu_usage(key: &str, stats: &CgroupStats, at_ns: i64, started: Option<i64>) -> Option<CpuUsage> {
    let usage = stats.cpu_usage_ns?;
    Some(CpuUsage {
        timestamp: at_ns,
        usage_core_nano_seconds: value(usage),
        usage_nano_cores: nano_cores(key, usage, at_ns, started).and_then(value),
        psi: stats.cpu_pressure.map(psi),
    })
}

/// PSI as CRI carries it (totals in nanoseconds).
fn psi(p: crius_runtime::stats::Pressure) -> PsiStats {
    let data = |l: crius_runtime::stats::PressureLine| PsiData {
        total: l.total_us.saturating_mul(1000),
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    PsiStats {
        full: p.full.map(data),
        some: Some(data(p.some)),
    }
}

fn io_usage(stats: &CgroupStats, at_ns: i64) -> Option<IoUsage> {
    stats.io_pressure.map(|p| IoUsage {
        timestamp: at_ns,
        psi: Some(psi(p)),
    })
}

fn memory_usage(
    m: &MemoryStats,
    pressure: Option<crius_runtime::stats::Pressure>,
    at_ns: i64,
) -> MemoryUsage {
    MemoryUsage {
        timestamp: at_ns,
        working_set_bytes: value(m.working_set_bytes),
        available_bytes: m
            .limit_bytes
            .and_then(|l| value(l.saturating_sub(m.working_set_bytes))),
        usage_bytes: value(m.usage_bytes),
        rss_bytes: value(m.rss_bytes),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
        psi: pressure.map(psi),
    }
}

/// Bulk listings (ListContainerStats, pod stats and metrics, ImageFsInfo) reuse a writable
/// layer walk younger than this; ContainerStats of one container always walks.
const LAYER_CACHE_TTL: Duration = Duration::from_secs(5);

/// The last walk of each writable layer directory and when it was made.
fn layer_cache() -> &'static Mutex<HashMap<PathBuf, (Instant, DiskUsage)>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, (Instant, DiskUsage)>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// The usage below `upper`, from a walk at most `max_age` old (zero: walk now).
fn layer_usage(upper: &Path, max_age: Duration) -> Option<DiskUsage> {
    if !max_age.is_zero() {
        let cache = layer_cache().lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, usage)) = cache.get(upper)
            && at.elapsed() < max_age
        {
            return Some(*usage);
        }
    }
    // Walk without the lock: other listings go on meanwhile.
    let usage = disk_usage(upper).ok()?;
    let mut cache = layer_cache().lock().unwrap_or_else(|e| e.into_inner());
    // Layers of removed containers age out.
    cache.retain(|_, (at, _)| at.elapsed() < 4 * LAYER_CACHE_TTL);
    cache.insert(upper.to_owned(), (Instant::now(), usage));
    Some(usage)
}

/// The file system of the writable layers, as container stats name it. Reads
/// `/proc/self/mountinfo` (long on a node with many pods): once per call, not per container.
fn container_fs(pods: &Pods) -> FilesystemIdentifier {
    FilesystemIdentifier {
        mountpoint: mountpoint_of(pods.container_root()).display().to_string(),
    }
}

/// Reads the stats of `views` on the file system `fs_id`, with writable layer walks at most
/// `max_age` old; blocks.
fn collect<'a>(
    pods: &Pods,
    views: impl IntoIterator<Item = &'a ContainerView>,
    max_age: Duration,
    fs_id: &FilesystemIdentifier,
) -> Vec<ContainerStats> {
    views
        .into_iter()
        .map(|v| container_stats_of(pods, v, fs_id, max_age))
        .collect()
}

fn container_stats_of(
    pods: &Pods,
    v: &ContainerView,
    fs_id: &FilesystemIdentifier,
    max_age: Duration,
) -> ContainerStats {
    let r = &v.record;
    let monitor = v.monitor.as_ref();
    // A created container's cgroup exists (its init waits there); an exited one's is empty or
    // gone.
    let cgroup = match monitor {
        Some(m) if m.exit.is_none() => read_cgroup(&m.cgroup_dirs),
        _ => CgroupStats::default(),
    };
    let at_ns = crius_runtime::now_ns();
    let started = monitor.and_then(|m| m.started_at_ns);
    let upper = pods.container_upper_dir(v);
    let writable_layer = layer_usage(&upper, max_age).map(|u| FilesystemUsage {
        timestamp: at_ns,
        fs_id: Some(fs_id.clone()),
        used_bytes: value(u.bytes),
        inodes_used: value(u.inodes),
    });
    ContainerStats {
        attributes: Some(ContainerAttributes {
            id: r.id.clone(),
            metadata: Some(ContainerMetadata {
                name: r.name.clone(),
                attempt: r.attempt,
            }),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
        }),
        cpu: cpu_usage(&r.id, &cgroup, at_ns, started),
        memory: cgroup
            .memory
            .map(|m| memory_usage(&m, cgroup.memory_pressure, at_ns)),
        writable_layer,
        swap: cgroup.swap.map(|sw| SwapUsage {
            timestamp: at_ns,
            swap_available_bytes: sw
                .limit_bytes
                .and_then(|l| value(l.saturating_sub(sw.usage_bytes))),
            swap_usage_bytes: value(sw.usage_bytes),
        }),
        io: io_usage(&cgroup, at_ns),
    }
}

/// How much of a pod's `/proc/PID/net/dev` is read: the pod's root may make interfaces in its
/// own network namespace, as many as it likes.
const MAX_NET_DEV_BYTES: u64 = 256 * 1024;

/// How many interfaces a pod's network stats list (`eth0` always among them).
const MAX_INTERFACES: usize = 64;

/// The network counters of the interfaces but `lo` in the network namespace of `pid`
/// (`/proc/PID/net/dev` shows the namespace of that process), at most [`MAX_INTERFACES`].
fn network_usage(pid: i32, at_ns: i64) -> Option<NetworkUsage> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/net/dev"))
        .ok()?
        .take(MAX_NET_DEV_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    // Interface names are bytes; the cut may split one.
    let interfaces = parse_net_dev(&String::from_utf8_lossy(&bytes));
    // The default is eth0, else the first (as kubelet reads it).
    let default = interfaces
        .iter()
        .find(|i| i.name == "eth0")
        .or_else(|| interfaces.first())
        .cloned();
    Some(NetworkUsage {
        timestamp: at_ns,
        default_interface: default,
        interfaces,
    })
}

/// The interfaces of a `/proc/PID/net/dev` text but `lo`: `eth0` and at most
/// [`MAX_INTERFACES`] in all.
fn parse_net_dev(text: &str) -> Vec<NetworkInterfaceUsage> {
    let mut others = 0;
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            if name != "eth0" {
                others += 1;
                if others >= MAX_INTERFACES {
                    return None;
                }
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            Some(NetworkInterfaceUsage {
                name: name.to_owned(),
                rx_bytes: value(*f.first()?),
                rx_errors: value(*f.get(2)?),
                tx_bytes: value(*f.get(8)?),
                tx_errors: value(*f.get(10)?),
            })
        })
        .collect()
}

/// Reads a pod's stats with its containers'; blocks.
fn pod_stats_of(
    pods: &Pods,
    pod: &crius_runtime::PodView,
    containers: &[ContainerView],
    fs_id: &FilesystemIdentifier,
) -> PodSandboxStats {
    let r = &pod.record;
    let at_ns = crius_runtime::now_ns();
    let state = pods.monitor_state(r);
    let (cgroup, net) = match &state {
        Some(s) if pod.ready => (
            read_cgroup(&s.cgroup_dirs),
            network_usage(s.sandbox_pid, at_ns),
        ),
        _ => (CgroupStats::default(), None),
    };
    let mine = containers.iter().filter(|c| c.record.pod_id == r.id);
    let key = format!("pod:{}", r.id);
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: r.id.clone(),
            metadata: r.spec.metadata.as_ref().map(|m| PodSandboxMetadata {
                name: m.name.clone(),
                uid: m.uid.clone(),
                namespace: m.namespace.clone(),
                attempt: m.attempt,
            }),
            labels: r.spec.labels.clone(),
            annotations: r.spec.annotations.clone(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: cpu_usage(&key, &cgroup, at_ns, Some(r.created_at_ns)),
            memory: cgroup
                .memory
                .map(|m| memory_usage(&m, cgroup.memory_pressure, at_ns)),
            network: net,
            process: cgroup.pids.map(|n| ProcessUsage {
                timestamp: at_ns,
                process_count: value(n),
            }),
            containers: collect(pods, mine, LAYER_CACHE_TTL, fs_id),
            io: io_usage(&cgroup, at_ns),
        }),
        windows: None,
    }
}

impl Cri {
    /// Runs `f` with the pod store off the async workers (it reads `state.json` files, cgroup
    /// files and walks directories).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pods) -> Result<T, PodError> + Send + 'static,
    ) -> Result<T, Status> {
        let pods: Arc<Pods> = self.pods.clone();
        crius_runtime::blocking(move || f(&pods))
            .await
            .map_err(pod_error)
    }

    /// ContainerStats: NotFound for an unknown id.
    pub(crate) async fn container_stats(&self, id: &str) -> Result<ContainerStats, Status> {
        let id = id.to_owned();
        self.blocking(move |pods| {
            let view = pods.get_container(&id)?;
            Ok(collect(pods, [&view], Duration::ZERO, &container_fs(pods)).pop())
        })
        .await?
        .ok_or_else(|| Status::internal("no stats collected"))
    }

    /// ListContainerStats with its filter (id prefix, pod id prefix, labels).
    pub(crate) async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, Status> {
        let filter = filter.unwrap_or_default();
        self.blocking(move |pods| {
            let all = pods.list_containers()?;
            if filter.id.is_empty()
                && filter.pod_sandbox_id.is_empty()
                && filter.label_selector.is_empty()
            {
                let ids: Vec<&str> = all.iter().map(|v| v.record.id.as_str()).collect();
                forget_samples(&|k| k.starts_with("pod:") || ids.contains(&k));
            }
            let views: Vec<ContainerView> = all
                .into_iter()
                .filter(|v| {
                    v.selected_by(&filter.id, &filter.pod_sandbox_id, &filter.label_selector)
                })
                .collect();
            Ok(collect(pods, &views, LAYER_CACHE_TTL, &container_fs(pods)))
        })
        .await
    }

    /// PodSandboxStats: NotFound for an unknown id.
    pub(crate) async fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats, Status> {
        let id = id.to_owned();
        self.blocking(move |pods| {
            let pod = pods.get(&id)?;
            let containers = pods.list_containers()?;
            Ok(pod_stats_of(pods, &pod, &containers, &container_fs(pods)))
        })
        .await
    }

    /// ListPodSandboxStats with its filter (id prefix, labels).
    pub(crate) async fn list_pod_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>, Status> {
        let filter = filter.unwrap_or_default();
        self.blocking(move |pods| {
            let all = pods.list()?;
            if filter.id.is_empty() && filter.label_selector.is_empty() {
                let keys: Vec<String> =
                    all.iter().map(|p| format!("pod:{}", p.record.id)).collect();
                forget_samples(&|k| !k.starts_with("pod:") || keys.iter().any(|p| p == k));
            }
            let chosen: Vec<crius_runtime::PodView> = all
                .into_iter()
                .filter(|p| filter.id.is_empty() || p.record.id.starts_with(&filter.id))
                .filter(|p| {
                    filter
                        .label_selector
                        .iter()
                        .all(|(k, v)| p.record.spec.labels.get(k) == Some(v))
                })
                .collect();
            let containers = pods.list_containers()?;
            let fs_id = container_fs(pods);
            Ok(chosen
                .iter()
                .map(|p| pod_stats_of(pods, p, &containers, &fs_id))
                .collect())
        })
        .await
    }

    /// The container filesystem of ImageFsInfo: the writable layers of every container. Its
    /// `fs_id` is `image_fs_id` when the layers sit on the image filesystem's device (kubelet
    /// would otherwise take the node for a split image/container disk), else the mount point
    /// of the pods directory.
    pub(crate) async fn container_filesystem(
        &self,
        image_root: PathBuf,
        image_fs_id: FilesystemIdentifier,
    ) -> Result<FilesystemUsage, Status> {
        use std::os::unix::fs::MetadataExt;
        self.blocking(move |pods| {
            let views = pods.list_containers()?;
            let (mut bytes, mut inodes) = (0u64, 0u64);
            for v in &views {
                if let Some(u) = layer_usage(&pods.container_upper_dir(v), LAYER_CACHE_TTL) {
                    bytes = bytes.saturating_add(u.bytes);
                    inodes = inodes.saturating_add(u.inodes);
                }
            }
            let dir = pods.container_root();
            let dev = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
            let same = dev(dir).is_some() && dev(dir) == dev(&image_root);
            let fs_id = if same {
                image_fs_id
            } else {
                FilesystemIdentifier {
                    mountpoint: mountpoint_of(dir).display().to_string(),
                }
            };
            Ok(FilesystemUsage {
                timestamp: crius_runtime::now_ns(),
                fs_id: Some(fs_id),
                used_bytes: value(bytes),
                inodes_used: value(inodes),
            })
        })
        .await
    }
}

/// The label keys every container metric starts with, as kubelet's CRI metrics collector
/// expects them (the same set it gives node-level series from cAdvisor).
const BASE_LABELS: [&str; 5] = ["pod", "namespace", "container", "id", "image"];

/// The container name the sandbox's own series carry (as cAdvisor names a pod's pause
/// container).
const SANDBOX_CONTAINER: &str = "POD";

/// One cAdvisor-compatible metric: name, help, type and the label keys after [`BASE_LABELS`].
struct Descriptor {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    extra: &'static [&'static str],
}

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const MEMORY_USAGE: &str = "container_memory_usage_bytes";
const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEMORY_RSS: &str = "container_memory_rss";
const MEMORY_FAILURES: &str = "container_memory_failures_total";
const FS_USAGE: &str = "container_fs_usage_bytes";
const FS_INODES: &str = "container_fs_inodes_used";
const NET_RX_BYTES: &str = "container_network_receive_bytes_total";
const NET_RX_ERRORS: &str = "container_network_receive_errors_total";
const NET_TX_BYTES: &str = "container_network_transmit_bytes_total";
const NET_TX_ERRORS: &str = "container_network_transmit_errors_total";
const PROCESSES: &str = "container_processes";

/// Every metric ListPodSandboxMetrics reports.
const DESCRIPTORS: &[Descriptor] = &[
    Descriptor {
        name: CPU_USAGE,
        help: "Cumulative cpu time consumed in seconds.",
        kind: MetricType::Counter,
        extra: &["cpu"],
    },
    Descriptor {
        name: MEMORY_USAGE,
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed",
        kind: MetricType::Gauge,
        extra: &[],
    },
    Descriptor {
        name: MEMORY_WORKING_SET,
        help: "Current working set in bytes.",
        kind: MetricType::Gauge,
        extra: &[],
    },
    Descriptor {
        name: MEMORY_RSS,
        help: "Size of RSS in bytes.",
        kind: MetricType::Gauge,
        extra: &[],
    },
    Descriptor {
        name: MEMORY_FAILURES,
        help: "Cumulative count of memory allocation failures.",
        kind: MetricType::Counter,
        extra: &["failure_type", "scope"],
    },
    Descriptor {
        name: FS_USAGE,
        help: "Number of bytes that are consumed by the container on this filesystem.",
        kind: MetricType::Gauge,
        extra: &["device"],
    },
    Descriptor {
        name: FS_INODES,
        help: "Number of inodes the container uses on this filesystem.",
        kind: MetricType::Gauge,
        extra: &["device"],
    },
    Descriptor {
        name: NET_RX_BYTES,
        help: "Cumulative count of bytes received",
        kind: MetricType::Counter,
        extra: &["interface"],
    },
    Descriptor {
        name: NET_RX_ERRORS,
        help: "Cumulative count of errors encountered while receiving",
        kind: MetricType::Counter,
        extra: &["interface"],
    },
    Descriptor {
        name: NET_TX_BYTES,
        help: "Cumulative count of bytes transmitted",
        kind: MetricType::Counter,
        extra: &["interface"],
    },
    Descriptor {
        name: NET_TX_ERRORS,
        help: "Cumulative count of errors encountered while transmitting",
        kind: MetricType::Counter,
        extra: &["interface"],
    },
    Descriptor {
        name: PROCESSES,
        help: "Number of processes running inside the container.",
        kind: MetricType::Gauge,
        extra: &[],
    },
];

/// ListMetricDescriptors.
pub(crate) fn metric_descriptors() -> Vec<MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra)
                .map(|k| (*k).to_owned())
                .collect(),
        })
        .collect()
}

/// Builds metrics sharing the base label values of one container (or sandbox).
struct Metrics {
    base: Vec<String>,
    out: Vec<Metric>,
}

impl Metrics {
    fn new(base: Vec<String>) -> Metrics {
        Metrics {
            base,
            out: Vec::new(),
        }
    }

    /// Adds `name` (one of [`DESCRIPTORS`]) with the values of its extra labels.
    fn add(&mut self, name: &str, extra: &[&str], v: Option<u64>) {
        let (Some(v), Some(d)) = (v, DESCRIPTORS.iter().find(|d| d.name == name)) else {
            return;
        };
        debug_assert_eq!(d.extra.len(), extra.len(), "{name}");
        self.out.push(Metric {
            name: name.to_owned(),
            timestamp: 0,
            metric_type: d.kind.into(),
            label_values: self
                .base
                .iter()
                .cloned()
                .chain(extra.iter().map(|e| (*e).to_owned()))
                .collect(),
            value: value(v),
        });
    }
}

fn get(v: Option<&UInt64Value>) -> Option<u64> {
    v.map(|v| v.value)
}

/// The metrics of one container from its stats.
fn container_metrics(
    pod: &PodSandboxMetadata,
    image: &str,
    stats: &ContainerStats,
) -> ContainerMetrics {
    let attributes = stats.attributes.clone().unwrap_or_default();
    let name = attributes.metadata.map(|m| m.name).unwrap_or_default();
    let mut m = Metrics::new(vec![
        pod.name.clone(),
        pod.namespace.clone(),
        name,
        attributes.id.clone(),
        image.to_owned(),
    ]);
    if let Some(cpu) = &stats.cpu {
        let seconds = get(cpu.usage_core_nano_seconds.as_ref()).map(|ns| ns / 1_000_000_000);
        m.add(CPU_USAGE, &["total"], seconds);
    }
    if let Some(mem) = &stats.memory {
        m.add(MEMORY_USAGE, &[], get(mem.usage_bytes.as_ref()));
        m.add(MEMORY_WORKING_SET, &[], get(mem.working_set_bytes.as_ref()));
        m.add(MEMORY_RSS, &[], get(mem.rss_bytes.as_ref()));
        // memory.stat's counters cover the cgroup and its descendants.
        m.add(
            MEMORY_FAILURES,
            &["pgfault", "hierarchy"],
            get(mem.page_faults.as_ref()),
        );
        m.add(
            MEMORY_FAILURES,
            &["pgmajfault", "hierarchy"],
            get(mem.major_page_faults.as_ref()),
        );
    }
    if let Some(fs) = &stats.writable_layer {
        let device = fs
            .fs_id
            .as_ref()
            .map(|f| f.mountpoint.clone())
            .unwrap_or_default();
        m.add(FS_USAGE, &[&device], get(fs.used_bytes.as_ref()));
        m.add(FS_INODES, &[&device], get(fs.inodes_used.as_ref()));
    }
    ContainerMetrics {
        container_id: attributes.id,
        metrics: m.out,
    }
}

/// The metrics of a pod from its stats: the sandbox's own (network, processes) and each
/// container's.
fn pod_metrics(stats: &PodSandboxStats, images: &HashMap<String, String>) -> PodSandboxMetrics {
    let attributes = stats.attributes.clone().unwrap_or_default();
    let pod = attributes.metadata.unwrap_or_default();
    let linux = stats.linux.clone().unwrap_or_default();
    let mut m = Metrics::new(vec![
        pod.name.clone(),
        pod.namespace.clone(),
        SANDBOX_CONTAINER.to_owned(),
        attributes.id.clone(),
        String::new(),
    ]);
    if let Some(net) = &linux.network {
        for i in net.default_interface.iter().chain(&net.interfaces) {
            let name = [i.name.as_str()];
            m.add(NET_RX_BYTES, &name, get(i.rx_bytes.as_ref()));
            m.add(NET_RX_ERRORS, &name, get(i.rx_errors.as_ref()));
            m.add(NET_TX_BYTES, &name, get(i.tx_bytes.as_ref()));
            m.add(NET_TX_ERRORS, &name, get(i.tx_errors.as_ref()));
        }
    }
    if let Some(p) = &linux.process {
        m.add(PROCESSES, &[], get(p.process_count.as_ref()));
    }
    PodSandboxMetrics {
        pod_sandbox_id: attributes.id,
        metrics: m.out,
        container_metrics: linux
            .containers
            .iter()
            .map(|c| {
                let id = c.attributes.as_ref().map(|a| a.id.as_str()).unwrap_or("");
                let image = images.get(id).map(String::as_str).unwrap_or("");
                container_metrics(&pod, image, c)
            })
            .collect(),
    }
}

impl Cri {
    /// ListPodSandboxMetrics: the metrics of every ready pod and its containers.
    pub(crate) async fn pod_sandbox_metrics(&self) -> Result<Vec<PodSandboxMetrics>, Status> {
        self.blocking(move |pods| {
            let all = pods.list()?;
            let containers = pods.list_containers()?;
            let images: HashMap<String, String> = containers
                .iter()
                .map(|c| (c.record.id.clone(), c.record.image.clone()))
                .collect();
            let fs_id = container_fs(pods);
            Ok(all
                .iter()
                .filter(|p| p.ready)
                .map(|p| pod_metrics(&pod_stats_of(pods, p, &containers, &fs_id), &images))
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_lists_eth0_and_a_bounded_number_of_others() {
        let mut text = String::from(
            "Inter-|   Receive                            |  Transmit\n face |bytes    packets\n",
        );
        let counters = " 10 1 2 0 0 0 0 0 20 2 3 0 0 0 0 0\n";
        text.push_str(&format!("    lo:{counters}"));
        for i in 0..200 {
            text.push_str(&format!("  dummy{i}:{counters}"));
        }
        text.push_str(&format!("  eth0:{counters}"));
        text.push_str("  cut: 1 2");
        let interfaces = parse_net_dev(&text);
        assert_eq!(interfaces.len(), MAX_INTERFACES);
        assert!(interfaces.iter().all(|i| i.name != "lo" && i.name != "cut"));
        let eth0 = interfaces.iter().find(|i| i.name == "eth0").expect("eth0");
        assert_eq!(eth0.rx_bytes.as_ref().map(|v| v.value), Some(10));
        assert_eq!(eth0.rx_errors.as_ref().map(|v| v.value), Some(2));
        assert_eq!(eth0.tx_bytes.as_ref().map(|v| v.value), Some(20));
        assert_eq!(eth0.tx_errors.as_ref().map(|v| v.value), Some(3));
    }

    #[test]
    fn every_metric_has_its_descriptor_and_labels() {
        let stats = PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: "pod1".into(),
                metadata: Some(PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "ns".into(),
                    ..PodSandboxMetadata::default()
                }),
                ..PodSandboxAttributes::default()
            }),
            linux: Some(LinuxPodSandboxStats {
                network: Some(NetworkUsage {
                    default_interface: Some(NetworkInterfaceUsage {
                        name: "eth0".into(),
                        rx_bytes: value(10),
                        rx_errors: value(0),
                        tx_bytes: value(20),
                        tx_errors: value(0),
                    }),
                    ..NetworkUsage::default()
                }),
                process: Some(ProcessUsage {
                    timestamp: 1,
                    process_count: value(2),
                }),
                containers: vec![ContainerStats {
                    attributes: Some(ContainerAttributes {
                        id: "c1".into(),
                        metadata: Some(ContainerMetadata {
                            name: "app".into(),
                            attempt: 0,
                        }),
                        ..ContainerAttributes::default()
                    }),
                    cpu: cpu_usage(
                        "metrics-test",
                        &CgroupStats {
                            cpu_usage_ns: Some(3_500_000_000),
                            ..CgroupStats::default()
                        },
                        1,
                        None,
                    ),
                    memory: Some(memory_usage(
                        &MemoryStats {
                            usage_bytes: 100,
                            working_set_bytes: 90,
                            rss_bytes: 80,
                            page_faults: 7,
                            major_page_faults: 1,
                            limit_bytes: None,
                        },
                        None,
                        1,
                    )),
                    writable_layer: Some(FilesystemUsage {
                        timestamp: 1,
                        fs_id: Some(FilesystemIdentifier {
                            mountpoint: "/var".into(),
                        }),
                        used_bytes: value(4096),
                        inodes_used: value(3),
                    }),
                    ..ContainerStats::default()
                }],
                ..LinuxPodSandboxStats::default()
            }),
            windows: None,
        };
        let images = HashMap::from([("c1".to_owned(), "busybox:1".to_owned())]);
        let pod = pod_metrics(&stats, &images);
        let descriptors = metric_descriptors();
        let all: Vec<&Metric> = pod
            .metrics
            .iter()
            .chain(pod.container_metrics.iter().flat_map(|c| &c.metrics))
            .collect();
        assert_eq!(all.len(), 4 + 1 + 8);
        for m in all {
            let d = descriptors
                .iter()
                .find(|d| d.name == m.name)
                .unwrap_or_else(|| panic!("no descriptor for {}", m.name));
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let cpu = pod.container_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == CPU_USAGE)
            .expect("cpu");
        assert_eq!(
            cpu.label_values,
            ["web", "ns", "app", "c1", "busybox:1", "total"]
        );
        assert_eq!(cpu.value.as_ref().map(|v| v.value), Some(3));
    }

    #[test]
    fn nano_cores_between_samples() {
        let id = "test-nano-cores";
        // First sample: the average since start (1 s of CPU over 2 s).
        assert_eq!(
            nano_cores(id, 1_000_000_000, 3_000_000_000, Some(1_000_000_000)),
            Some(500_000_000)
        );
        // Then the rate between samples: 0.25 s over 1 s.
        assert_eq!(
            nano_cores(id, 1_250_000_000, 4_000_000_000, None),
            Some(250_000_000)
        );
        // Within the minimum window: the previous rate again.
        assert_eq!(
            nano_cores(id, 1_260_000_000, 4_010_000_000, None),
            Some(250_000_000)
        );
        // A counter that went back (new cgroup) restarts.
        assert_eq!(nano_cores(id, 5, 5_000_000_000, None), None);
        assert_eq!(
            nano_cores(id, 500_000_005, 6_000_000_000, None),
            Some(500_000_000)
        );
        assert_eq!(nano_cores("never-started", 5, 5, None), None);
    }
}
