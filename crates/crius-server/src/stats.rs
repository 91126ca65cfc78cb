//! ContainerStats, ListContainerStats, StreamContainerStats, PodSandboxStats and
//! ListPodSandboxStats: crius-runtime reads cgroup files and walks writable layers; this maps
//! what it read onto CRI. Reading blocks (file reads, directory walks), so it runs in
//! `spawn_blocking`, never on a tokio worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use cri_api::v1::*;
use crius_runtime::stats::{CgroupStats, MemoryStats, disk_usage, mountpoint_of, read_cgroup};
use crius_runtime::{ContainerView, Pods};
use tonic::Status;

use crate::Cri;
use crate::runtime::pod_error;

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

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
        psi: None,
    })
}

fn memory_usage(m: &MemoryStats, at_ns: i64) -> MemoryUsage {
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
        psi: None,
    }
}

/// Reads the stats of `views`; blocks.
fn collect(pods: &Pods, views: &[ContainerView]) -> Vec<ContainerStats> {
    let fs_id = FilesystemIdentifier {
        mountpoint: mountpoint_of(pods.pods_dir()).display().to_string(),
    };
    views
        .iter()
        .map(|v| container_stats_of(pods, v, &fs_id))
        .collect()
}

fn container_stats_of(
    pods: &Pods,
    v: &ContainerView,
    fs_id: &FilesystemIdentifier,
) -> ContainerStats {
    let r = &v.record;
    let monitor = v.monitor.as_ref();
    // A created container's cgroup exists (its init waits there); an exited one's is empty or
    // gone.
    let cgroup = match monitor {
        Some(m) if m.exit.is_none() => read_cgroup(&m.cgroup_dirs),
        _ => CgroupStats::default(),
    };
    let at_ns = now_ns();
    let started = monitor.and_then(|m| m.started_at_ns);
    let upper = pods.container_upper_dir(v);
    let writable_layer = disk_usage(&upper).ok().map(|u| FilesystemUsage {
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
            labels: r.labels.clone().into_iter().collect(),
            annotations: r.annotations.clone().into_iter().collect(),
        }),
        cpu: cpu_usage(&r.id, &cgroup, at_ns, started),
        memory: cgroup.memory.map(|m| memory_usage(&m, at_ns)),
        writable_layer,
        swap: cgroup.swap.map(|sw| SwapUsage {
            timestamp: at_ns,
            swap_available_bytes: sw
                .limit_bytes
                .and_then(|l| value(l.saturating_sub(sw.usage_bytes))),
            swap_usage_bytes: value(sw.usage_bytes),
        }),
        io: None,
    }
}

/// The network counters of every interface but `lo` in the network namespace of `pid`
/// (`/proc/PID/net/dev` shows the namespace of that process).
fn network_usage(pid: i32, at_ns: i64) -> Option<NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces: Vec<NetworkInterfaceUsage> = text
        .lines()
        .skip(2)
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
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
        .collect();
    let default = interfaces
        .iter()
        .position(|i| i.name == "eth0")
        .map(|i| interfaces.remove(i))
        .or_else(|| (!interfaces.is_empty()).then(|| interfaces.remove(0)));
    Some(NetworkUsage {
        timestamp: at_ns,
        default_interface: default,
        interfaces,
    })
}

/// Reads a pod's stats with its containers'; blocks.
fn pod_stats_of(
    pods: &Pods,
    pod: &crius_runtime::PodView,
    containers: &[ContainerView],
) -> PodSandboxStats {
    let r = &pod.record;
    let at_ns = now_ns();
    let state = pods.monitor_state(r);
    let (cgroup, net) = match &state {
        Some(s) if pod.ready => (
            read_cgroup(&s.cgroup_dirs),
            network_usage(s.sandbox_pid, at_ns),
        ),
        _ => (CgroupStats::default(), None),
    };
    let mine: Vec<ContainerView> = containers
        .iter()
        .filter(|c| c.record.pod_id == r.id)
        .cloned()
        .collect();
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
            labels: r.spec.labels.clone().into_iter().collect(),
            annotations: r.spec.annotations.clone().into_iter().collect(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: cpu_usage(&key, &cgroup, at_ns, Some(r.created_at_ns)),
            memory: cgroup.memory.map(|m| memory_usage(&m, at_ns)),
            network: net,
            process: cgroup.pids.map(|n| ProcessUsage {
                timestamp: at_ns,
                process_count: value(n),
            }),
            containers: collect(pods, &mine),
            io: None,
        }),
        windows: None,
    }
}

fn join_error(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("stats collection failed: {e}"))
}

impl Cri {
    /// Runs `f` with the pod store off the async workers (it reads `state.json` files, cgroup
    /// files and walks directories).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pods) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let pods: Arc<Pods> = self.pods.clone();
        tokio::task::spawn_blocking(move || f(&pods))
            .await
            .map_err(join_error)?
    }

    /// ContainerStats: NotFound for an unknown id.
    pub(crate) async fn container_stats(&self, id: &str) -> Result<ContainerStats, Status> {
        let id = id.to_owned();
        self.blocking(move |pods| {
            let view = pods.get_container(&id).map_err(pod_error)?;
            collect(pods, &[view])
                .pop()
                .ok_or_else(|| Status::internal("no stats collected"))
        })
        .await
    }

    /// ListContainerStats with its filter (id prefix, pod id prefix, labels).
    pub(crate) async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Result<Vec<ContainerStats>, Status> {
        let filter = filter.unwrap_or_default();
        self.blocking(move |pods| {
            let all = pods.list_containers().map_err(pod_error)?;
            if filter.id.is_empty()
                && filter.pod_sandbox_id.is_empty()
                && filter.label_selector.is_empty()
            {
                let ids: Vec<&str> = all.iter().map(|v| v.record.id.as_str()).collect();
                forget_samples(&|k| k.starts_with("pod:") || ids.contains(&k));
            }
            let views: Vec<ContainerView> = all
                .into_iter()
                .filter(|v| filter.id.is_empty() || v.record.id.starts_with(&filter.id))
                .filter(|v| {
                    filter.pod_sandbox_id.is_empty()
                        || v.record.pod_id.starts_with(&filter.pod_sandbox_id)
                })
                .filter(|v| {
                    filter
                        .label_selector
                        .iter()
                        .all(|(k, val)| v.record.labels.get(k) == Some(val))
                })
                .collect();
            Ok(collect(pods, &views))
        })
        .await
    }

    /// PodSandboxStats: NotFound for an unknown id.
    pub(crate) async fn pod_sandbox_stats(&self, id: &str) -> Result<PodSandboxStats, Status> {
        let id = id.to_owned();
        self.blocking(move |pods| {
            let pod = pods.get(&id).map_err(pod_error)?;
            let containers = pods.list_containers().map_err(pod_error)?;
            Ok(pod_stats_of(pods, &pod, &containers))
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
            let all = pods.list().map_err(pod_error)?;
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
            let containers = pods.list_containers().map_err(pod_error)?;
            Ok(chosen
                .iter()
                .map(|p| pod_stats_of(pods, p, &containers))
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
            let views = pods.list_containers().map_err(pod_error)?;
            let (mut bytes, mut inodes) = (0u64, 0u64);
            for v in &views {
                if let Ok(u) = disk_usage(&pods.container_upper_dir(v)) {
                    bytes = bytes.saturating_add(u.bytes);
                    inodes = inodes.saturating_add(u.inodes);
                }
            }
            let dir = pods.pods_dir();
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
                timestamp: now_ns(),
                fs_id: Some(fs_id),
                used_bytes: value(bytes),
                inodes_used: value(inodes),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
