//! Pod networking: CNI ADD once a sandbox runs, DEL before it stops, NetworkReady for Status.

use std::path::PathBuf;

use cri_api::v1::RuntimeCondition;
use crius_net::{NetworkStatus, PodNetwork, PortMapping, Protocol};
use crius_runtime::PodRecord;
use crius_runtime::spec::NamespaceMode;

use crate::Cri;

/// Condition type: the pod network is ready.
pub const NETWORK_READY: &str = "NetworkReady";

/// Directory under `--root` where CNI results are cached, so DEL works after a restart or reboot.
pub const CNI_CACHE_DIR: &str = "cni";

/// The CNI client for a configuration.
pub(crate) fn cni(config: &crate::Config) -> crius_net::Cni {
    crius_net::Cni::new(
        &config.cni_conf_dir,
        &config.cni_bin_dirs,
        config.root.join(CNI_CACHE_DIR),
    )
}

/// Whether the pod has a network namespace of its own (CNI runs only for those).
fn has_own_network(record: &PodRecord) -> bool {
    record.spec.namespaces.network != NamespaceMode::Node
}

/// The CNI view of a pod; `netns` empty lets DEL use the path cached at ADD.
fn pod_network(record: &PodRecord, netns: PathBuf) -> Result<PodNetwork, tonic::Status> {
    let metadata = record.spec.metadata.clone().unwrap_or_default();
    let mut port_mappings = Vec::new();
    for p in &record.spec.port_mappings {
        let (Ok(host_port), Ok(container_port)) =
            (u16::try_from(p.host_port), u16::try_from(p.container_port))
        else {
            return Err(tonic::Status::invalid_argument(format!(
                "port_mappings: port {} -> {} is out of range",
                p.host_port, p.container_port
            )));
        };
        let protocol = match p.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => {
                return Err(tonic::Status::invalid_argument(format!(
                    "port_mappings: unknown protocol {other:?}"
                )));
            }
        };
        let host_ip = if p.host_ip.is_empty() {
            None
        } else {
            Some(p.host_ip.parse().map_err(|_| {
                tonic::Status::invalid_argument(format!(
                    "port_mappings: host_ip {:?} is not an IP address",
                    p.host_ip
                ))
            })?)
        };
        port_mappings.push(PortMapping {
            host_port,
            container_port,
            protocol,
            host_ip,
        });
    }
    Ok(PodNetwork {
        id: record.id.clone(),
        netns_path: netns,
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        port_mappings,
        bandwidth: None,
        dns: None,
    })
}

/// The gRPC status for a CNI failure.
fn cni_status(action: &str, id: &str, error: &crius_net::Error) -> tonic::Status {
    let message = format!("{action} the network of pod sandbox {id}: {error}");
    match error {
        crius_net::Error::NoConfig { .. } | crius_net::Error::PluginNotFound { .. } => {
            tonic::Status::failed_precondition(message)
        }
        crius_net::Error::InvalidArgument(_) => tonic::Status::invalid_argument(message),
        _ => tonic::Status::internal(message),
    }
}

impl Cri {
    /// CNI ADD for a freshly started pod; records its IPs. Host-network pods get none.
    pub(crate) async fn attach_network(&self, id: &str) -> Result<(), tonic::Status> {
        let record = self.pods.get(id).map_err(crate::runtime::pod_error)?.record;
        if !has_own_network(&record) {
            return Ok(());
        }
        let netns = record.netns.clone().ok_or_else(|| {
            tonic::Status::internal(format!("pod sandbox {id} has no pinned network namespace"))
        })?;
        let pod = pod_network(&record, netns)?;
        let result = self
            .cni
            .add(&pod)
            .await
            .map_err(|e| cni_status("cannot set up", id, &e))?;
        let ips = result.ips.iter().map(ToString::to_string).collect();
        self.pods
            .set_ips(id, ips)
            .map_err(crate::runtime::pod_error)?;
        Ok(())
    }

    /// CNI DEL; idempotent, and works when the namespace is already gone.
    pub(crate) async fn detach_network(&self, record: &PodRecord) -> Result<(), tonic::Status> {
        if !has_own_network(record) {
            return Ok(());
        }
        let pod = pod_network(record, record.netns.clone().unwrap_or_default())?;
        self.cni
            .del(&pod)
            .await
            .map_err(|e| cni_status("cannot tear down", &record.id, &e))
    }

    /// Whether CNI ADD succeeded for the pod and no DEL has run since.
    pub(crate) async fn network_attached(&self, id: &str) -> bool {
        matches!(self.cni.cached_result(id).await, Ok(Some(_)))
    }

    /// `NetworkReady`: true when a CNI configuration is loaded and its plugins exist.
    pub(crate) async fn network_condition(&self) -> RuntimeCondition {
        match self.cni.status().await {
            NetworkStatus::Ready { .. } => RuntimeCondition {
                r#type: NETWORK_READY.into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            NetworkStatus::NotReady { message } => RuntimeCondition {
                r#type: NETWORK_READY.into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message,
            },
        }
    }
}
