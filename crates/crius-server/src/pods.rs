//! The pod sandbox RPCs of the CRI `RuntimeService`: CRI pod configs converted to
//! crius-runtime's `PodSpec`, its pod records and views converted back.

use cri_api::v1::*;

use crate::Cri;
use crate::status::pod_error;

/// Checks a CRI `LinuxContainerResources` as the client sent it, before converting it drops
/// what means "unset" (see `crius_runtime::validate::validate_raw_resources`); `prefix` names
/// the request field. Pods and containers share it.
pub(crate) fn check_resources(
    prefix: &str,
    r: &LinuxContainerResources,
) -> Result<(), crius_runtime::Invalid> {
    crius_runtime::validate::validate_raw_resources(
        prefix,
        &crius_runtime::validate::RawResources {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            hugepage_sizes: r
                .hugepage_limits
                .iter()
                .map(|h| h.page_size.as_str())
                .collect(),
            unified_keys: r.unified.keys().map(String::as_str).collect(),
            cpuset_cpus: &r.cpuset_cpus,
            cpuset_mems: &r.cpuset_mems,
        },
    )
}

/// A CRI namespace mode; `field` names it in the error.
pub(crate) fn namespace_mode(
    value: i32,
    field: &str,
) -> Result<crius_runtime::spec::NamespaceMode, tonic::Status> {
    use crius_runtime::spec::NamespaceMode as M;
    match NamespaceMode::try_from(value) {
        Ok(NamespaceMode::Pod) => Ok(M::Pod),
        Ok(NamespaceMode::Container) => Ok(M::Container),
        Ok(NamespaceMode::Node) => Ok(M::Node),
        Ok(NamespaceMode::Target) => Ok(M::Target),
        Err(_) => Err(tonic::Status::invalid_argument(format!(
            "{field}: unknown namespace mode {value}"
        ))),
    }
}

fn cri_mode(mode: crius_runtime::spec::NamespaceMode) -> i32 {
    use crius_runtime::spec::NamespaceMode as M;
    match mode {
        M::Pod => NamespaceMode::Pod,
        M::Container => NamespaceMode::Container,
        M::Node => NamespaceMode::Node,
        M::Target => NamespaceMode::Target,
    }
    .into()
}

pub(crate) fn id_ranges(maps: &[IdMapping]) -> Vec<crius_runtime::spec::IdRange> {
    maps.iter()
        .map(|m| crius_runtime::spec::IdRange {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
        .collect()
}

fn id_mappings(ranges: &[crius_runtime::spec::IdRange]) -> Vec<IdMapping> {
    ranges
        .iter()
        .map(|r| IdMapping {
            host_id: r.host_id,
            container_id: r.container_id,
            length: r.length,
        })
        .collect()
}

/// The pod cgroup limits: the pod's resources plus its overhead, each checked first as sent
/// ([`check_resources`]). Each argument is the request field's name and its value. CPU,
/// memory, hugepage limits (by page size) and the memory+swap total add up (the overhead's
/// memory counts in the total when the overhead sets no swap of its own); cpusets are the
/// pod's, else the overhead's; `unified` files are both, the pod's winning.
pub(crate) fn pod_resources(
    (resources_field, resources): (&str, Option<&LinuxContainerResources>),
    (overhead_field, overhead): (&str, Option<&LinuxContainerResources>),
) -> Result<crius_runtime::spec::Resources, crius_runtime::Invalid> {
    let zero = LinuxContainerResources::default();
    let r = resources.unwrap_or(&zero);
    let o = overhead.unwrap_or(&zero);
    check_resources(resources_field, r)?;
    check_resources(overhead_field, o)?;
    let positive = |v: i64| (v > 0).then_some(v);
    let sum = |a: i64, b: i64| positive(a).map(|a| a.saturating_add(b.max(0)));
    Ok(crius_runtime::spec::Resources {
        cpu_period: positive(r.cpu_period)
            .or(positive(o.cpu_period))
            .and_then(|v| u64::try_from(v).ok()),
        cpu_quota: sum(r.cpu_quota, o.cpu_quota),
        cpu_shares: sum(r.cpu_shares, o.cpu_shares).and_then(|v| u64::try_from(v).ok()),
        memory_limit: sum(r.memory_limit_in_bytes, o.memory_limit_in_bytes),
        memory_swap: match r.memory_swap_limit_in_bytes {
            0 => None,
            swap if swap > 0 => {
                let extra = positive(o.memory_swap_limit_in_bytes)
                    .or(positive(o.memory_limit_in_bytes))
                    .unwrap_or(0);
                Some(swap.saturating_add(extra))
            }
            unlimited => Some(unlimited),
        },
        cpuset_cpus: [&r.cpuset_cpus, &o.cpuset_cpus]
            .into_iter()
            .find(|c| !c.is_empty())
            .cloned(),
        cpuset_mems: [&r.cpuset_mems, &o.cpuset_mems]
            .into_iter()
            .find(|m| !m.is_empty())
            .cloned(),
        hugepage_limits: r.hugepage_limits.iter().chain(&o.hugepage_limits).fold(
            std::collections::BTreeMap::new(),
            |mut limits, h| {
                let total: &mut u64 = limits.entry(h.page_size.clone()).or_default();
                *total = total.saturating_add(h.limit);
                limits
            },
        ),
        unified: o
            .unified
            .iter()
            .chain(&r.unified)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// Maps RunPodSandbox's config onto crius-runtime's pod spec.
pub(crate) fn pod_spec(
    config: PodSandboxConfig,
    runtime_handler: String,
) -> Result<crius_runtime::spec::PodSpec, tonic::Status> {
    use crius_runtime::spec::{
        DnsConfig as Dns, NamespaceOptions, PodMetadata, PodSpec, PortMapping as Port,
        UsernsOptions,
    };
    const NS: &str = "config.linux.security_context.namespace_options";
    let linux = config.linux.unwrap_or_default();
    let security = linux.security_context.unwrap_or_default();
    let ns = security.namespace_options.unwrap_or_default();
    let userns = match ns.userns_options {
        Some(u) => Some(UsernsOptions {
            mode: namespace_mode(u.mode, &format!("{NS}.userns_options.mode"))?,
            uids: id_ranges(&u.uids),
            gids: id_ranges(&u.gids),
        }),
        None => None,
    };
    Ok(PodSpec {
        metadata: config.metadata.map(|m| PodMetadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        }),
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: config.dns_config.map(|d| Dns {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: config
            .port_mappings
            .into_iter()
            .map(|p| Port {
                // An unknown protocol keeps its number, for validation to refuse by name.
                protocol: Protocol::try_from(p.protocol)
                    .map(|p| p.as_str_name().to_lowercase())
                    .unwrap_or_else(|_| p.protocol.to_string()),
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip,
            })
            .collect(),
        labels: config.labels,
        annotations: config.annotations,
        cgroup_parent: linux.cgroup_parent,
        namespaces: NamespaceOptions {
            network: namespace_mode(ns.network, &format!("{NS}.network"))?,
            pid: namespace_mode(ns.pid, &format!("{NS}.pid"))?,
            ipc: namespace_mode(ns.ipc, &format!("{NS}.ipc"))?,
            target_id: ns.target_id,
            userns,
        },
        run_as_user: security.run_as_user.map(|v| v.value),
        run_as_group: security.run_as_group.map(|v| v.value),
        resources: pod_resources(
            ("config.linux.resources", linux.resources.as_ref()),
            ("config.linux.overhead", linux.overhead.as_ref()),
        )
        .map_err(|e| pod_error(e.into()))?,
        sysctls: linux.sysctls.into_iter().collect(),
        runtime_handler,
        cri_config: Vec::new(),
        privileged: Some(security.privileged),
        apparmor: crate::containers::apparmor_request(security.apparmor.as_ref(), "")?,
    })
}

fn cri_metadata(spec: &crius_runtime::spec::PodSpec) -> Option<PodSandboxMetadata> {
    spec.metadata.as_ref().map(|m| PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    })
}

fn cri_state(ready: bool) -> i32 {
    if ready {
        PodSandboxState::SandboxReady.into()
    } else {
        PodSandboxState::SandboxNotready.into()
    }
}

/// The CRI status of a pod.
pub(crate) fn sandbox_status(pod: &crius_runtime::PodView) -> PodSandboxStatus {
    let r = &pod.record;
    let ns = &r.spec.namespaces;
    let options = NamespaceOption {
        network: cri_mode(ns.network),
        pid: cri_mode(ns.pid),
        ipc: cri_mode(ns.ipc),
        target_id: ns.target_id.clone(),
        userns_options: ns.userns.as_ref().map(|u| UserNamespace {
            mode: cri_mode(u.mode),
            uids: id_mappings(&u.uids),
            gids: id_mappings(&u.gids),
        }),
    };
    PodSandboxStatus {
        id: r.id.clone(),
        metadata: cri_metadata(&r.spec),
        state: cri_state(pod.ready),
        created_at: r.created_at_ns,
        network: Some(PodSandboxNetworkStatus {
            ip: r.ips.first().cloned().unwrap_or_default(),
            additional_ips: r
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(options),
            }),
        }),
        labels: r.spec.labels.clone(),
        annotations: r.spec.annotations.clone(),
        runtime_handler: r.spec.runtime_handler.clone(),
    }
}

impl Cri {
    /// ListPodSandbox with its filter (id prefix, state, label selector).
    pub(crate) fn list_pods(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> Result<Vec<PodSandbox>, tonic::Status> {
        let filter = filter.unwrap_or_default();
        let pods = self.pods.list().map_err(pod_error)?;
        Ok(pods
            .into_iter()
            .filter(|p| filter.id.is_empty() || p.record.id.starts_with(&filter.id))
            .filter(|p| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(p.ready))
            })
            .filter(|p| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| p.record.spec.labels.get(k) == Some(v))
            })
            .map(|p| PodSandbox {
                id: p.record.id.clone(),
                metadata: cri_metadata(&p.record.spec),
                state: cri_state(p.ready),
                created_at: p.record.created_at_ns,
                labels: p.record.spec.labels.clone(),
                annotations: p.record.spec.annotations.clone(),
                runtime_handler: p.record.spec.runtime_handler.clone(),
            })
            .collect())
    }
}
