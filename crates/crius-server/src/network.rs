//! Pod networking: CNI ADD once a sandbox runs, DEL before it stops, NetworkReady for Status.

use std::path::PathBuf;
use std::sync::Arc;

use cri_api::v1::RuntimeCondition;
use crius_net::{NetworkStatus, PodNetwork, PortMapping, Protocol};
use crius_runtime::spec::{NamespaceMode, PodSpec};
use crius_runtime::{NetworkPhase, PodRecord, failpoint};

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
fn pod_network(
    record: &PodRecord,
    netns: PathBuf,
    ip_ranges: Option<serde_json::Value>,
) -> Result<PodNetwork, tonic::Status> {
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
        ip_ranges,
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
    /// RunPodSandbox's work: the sandbox, then CNI ADD, in a task of its own so that a client
    /// that goes away cannot leave it half done. A network failure removes the pod again.
    pub(crate) async fn run_pod(self: &Arc<Self>, spec: PodSpec) -> Result<String, tonic::Status> {
        let cri = Arc::clone(self);
        tokio::spawn(async move {
            let id = cri.pods.run(spec).await.map_err(crate::runtime::pod_error)?;
            if let Err(status) = cri.attach_network(&id).await {
                // No half pod: whatever the plugins set up is gone, and so is the sandbox.
                if let Err(e) = cri.pods.remove(&id).await {
                    tracing::warn!(%id, error = %e, "cannot roll back the pod after a network failure");
                }
                return Err(status);
            }
            Ok(id)
        })
        .await
        .map_err(|e| tonic::Status::internal(format!("RunPodSandbox task failed: {e}")))?
    }

    /// The start-up recovery: the pod store's sweep (interrupted RunPodSandbox before the
    /// sandbox was recorded, orphaned directories, cgroups and temporary files), then pods
    /// whose RunPodSandbox stopped between the sandbox and the end of CNI ADD (DEL, then
    /// removal: the client never got their id), then cached CNI attachments that no pod owns
    /// (DEL). Failures are logged; criusd serves anyway.
    pub async fn recover(self: &Arc<Self>) {
        match self.pods.recover().await {
            Ok(r) => tracing::info!(
                rolled_back = r.rolled_back.len(),
                orphan_dirs = r.orphan_dirs.len(),
                orphan_cgroups = r.orphan_cgroups.len(),
                temp_files = r.temp_files.len(),
                "pod store recovered"
            ),
            Err(e) => tracing::error!(error = %e, "pod store recovery failed"),
        }
        let pods = match self.pods.list() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pods to recover");
                return;
            }
        };
        for pod in &pods {
            let r = &pod.record;
            if r.network != NetworkPhase::Pending {
                continue;
            }
            tracing::warn!(id = %r.id, "rolling back a RunPodSandbox interrupted before its network was set up");
            if let Err(e) = self.detach_network(r).await {
                tracing::error!(id = %r.id, error = %e.message(), "cannot tear down the network of an interrupted pod");
                continue;
            }
            if let Err(e) = self.pods.remove(&r.id).await {
                tracing::error!(id = %r.id, error = %e, "cannot remove an interrupted pod");
            }
        }
        self.release_orphan_leases().await;
        let cached = match self.cni.cached_ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the CNI cache");
                return;
            }
        };
        for id in cached {
            if pods.iter().any(|p| p.record.id == id) {
                continue;
            }
            tracing::warn!(%id, "tearing down a CNI attachment no pod owns");
            let orphan = PodNetwork {
                id: id.clone(),
                netns_path: PathBuf::new(),
                name: String::new(),
                namespace: String::new(),
                uid: String::new(),
                port_mappings: Vec::new(),
                bandwidth: None,
                dns: None,
                ip_ranges: None,
            };
            if let Err(e) = self.cni.del(&orphan).await {
                tracing::error!(%id, error = %e, "cannot tear down an orphaned CNI attachment");
            }
        }
    }

    /// CNI ADD for a freshly started pod; records its IPs. Host-network pods get none.
    pub(crate) async fn attach_network(&self, id: &str) -> Result<(), tonic::Status> {
        let record = self.pods.get(id).map_err(crate::runtime::pod_error)?.record;
        if !has_own_network(&record) {
            return Ok(());
        }
        let netns = record.netns.clone().ok_or_else(|| {
            tonic::Status::internal(format!("pod sandbox {id} has no pinned network namespace"))
        })?;
        let pod = pod_network(&record, netns, self.pod_cidrs.ip_ranges())?;
        let result = self
            .cni
            .add(&pod)
            .await
            .map_err(|e| cni_status("cannot set up", id, &e))?;
        failpoint("run-pod:cni-added");
        let ips = result.ips.iter().map(ToString::to_string).collect();
        self.pods
            .set_ips(id, ips)
            .map_err(crate::runtime::pod_error)?;
        self.pods
            .set_network(id, NetworkPhase::Attached)
            .map_err(crate::runtime::pod_error)?;
        Ok(())
    }

    /// CNI DEL; idempotent, and works when the namespace is already gone. Once a DEL has
    /// succeeded it is recorded and never run again for the pod.
    pub(crate) async fn detach_network(&self, record: &PodRecord) -> Result<(), tonic::Status> {
        if !has_own_network(record) {
            return Ok(());
        }
        match record.network {
            NetworkPhase::Detached => return Ok(()),
            NetworkPhase::Attached if !self.network_attached(&record.id).await => {
                // DEL ran and removed the cached result; only its record was lost (a crash).
                return self.mark_detached(&record.id);
            }
            _ => {}
        }
        let pod = pod_network(record, record.netns.clone().unwrap_or_default(), None)?;
        self.cni
            .del(&pod)
            .await
            .map_err(|e| cni_status("cannot tear down", &record.id, &e))?;
        failpoint("stop-pod:cni-deleted");
        self.mark_detached(&record.id)
    }

    /// Records that the pod's network is torn down (a pod already gone is fine).
    fn mark_detached(&self, id: &str) -> Result<(), tonic::Status> {
        match self.pods.set_network(id, NetworkPhase::Detached) {
            Ok(()) | Err(crius_runtime::PodError::NotFound(_)) => Ok(()),
            Err(e) => Err(crate::runtime::pod_error(e)),
        }
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
