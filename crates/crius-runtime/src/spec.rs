//! The pod as crius-runtime sees it: what was asked for (independent of the CRI types).

use std::collections::BTreeMap;

pub use crius_proto::{IdRange, Resources};
use serde::{Deserialize, Serialize};

/// A namespace mode of the CRI (`NamespaceMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// Shared by the pod (the pod's own namespace).
    #[default]
    Pod,
    /// One per container.
    Container,
    /// The host's.
    Node,
    /// Another container's.
    Target,
}

/// The user namespace a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsernsOptions {
    /// `Pod` creates one with the mappings; `Node` is the host's.
    pub mode: NamespaceMode,
    /// uid mappings.
    pub uids: Vec<IdRange>,
    /// gid mappings.
    pub gids: Vec<IdRange>,
}

/// The namespaces a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceOptions {
    /// Network namespace.
    pub network: NamespaceMode,
    /// PID namespace.
    pub pid: NamespaceMode,
    /// IPC namespace.
    pub ipc: NamespaceMode,
    /// Target container for `Target` modes.
    pub target_id: String,
    /// User namespace; none is the host's.
    pub userns: Option<UsernsOptions>,
}

impl NamespaceOptions {
    /// The validated user namespace to create, if the pod gets one.
    pub fn pod_userns(&self) -> Option<crius_proto::UserNamespace> {
        self.userns
            .as_ref()
            .filter(|u| u.mode == NamespaceMode::Pod)
            .map(|u| crius_proto::UserNamespace {
                uids: u.uids.clone(),
                gids: u.gids.clone(),
            })
    }
}

/// The pod's identity as kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodMetadata {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Attempt number.
    pub attempt: u32,
}

/// DNS settings for the pod's resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

/// A port mapping (for CNI's `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Port in the pod.
    pub container_port: i32,
    /// Port on the host.
    pub host_port: i32,
    /// Host address; empty for all.
    pub host_ip: String,
}

/// Everything RunPodSandbox asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodSpec {
    /// Identity; required.
    pub metadata: Option<PodMetadata>,
    /// Hostname.
    pub hostname: String,
    /// Where kubelet wants container logs.
    pub log_directory: String,
    /// DNS settings; none for the host's.
    pub dns: Option<DnsConfig>,
    /// Port mappings.
    pub port_mappings: Vec<PortMapping>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Parent cgroup (cgroupfs path).
    pub cgroup_parent: String,
    /// Namespaces.
    pub namespaces: NamespaceOptions,
    /// `run_as_user` of the sandbox security context.
    pub run_as_user: Option<i64>,
    /// `run_as_group` of the sandbox security context.
    pub run_as_group: Option<i64>,
    /// Pod resources (overhead plus containers) for the pod cgroup.
    pub resources: Resources,
    /// Sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Runtime handler; empty is the default.
    pub runtime_handler: String,
    /// The original request config as encoded by the CRI layer (opaque here), kept for the
    /// container work that needs the sandbox config.
    #[serde(default)]
    pub cri_config: Vec<u8>,
    /// The sandbox's security context asked for a privileged pod (none: a pod recorded before
    /// this was kept, whose containers are not held to it).
    #[serde(default)]
    pub privileged: Option<bool>,
    /// The sandbox process's AppArmor profile.
    #[serde(default)]
    pub apparmor: crate::apparmor::Request,
}
