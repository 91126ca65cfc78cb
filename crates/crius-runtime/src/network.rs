//! A pod's network through CNI (crius-net): ADD once its sandbox runs, DEL before it stops,
//! each recorded as the pod's [`NetworkPhase`] so that neither runs twice or is lost across a
//! crash of criusd.

use std::path::PathBuf;

use crius_net::{NetworkStatus, PodNetwork, PortMapping, Protocol};

use crate::spec::NamespaceMode;
use crate::store::{NetworkPhase, PodRecord};
use crate::{PodError, Pods, failpoint, files, validate};

/// What a failed CNI call was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkStep {
    /// ADD.
    SetUp,
    /// DEL.
    TearDown,
}

impl std::fmt::Display for NetworkStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkStep::SetUp => "cannot set up",
            NetworkStep::TearDown => "cannot tear down",
        })
    }
}

/// Why a pod's network could not be set up or torn down.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The node has no usable CNI network: no configuration, or a plugin it names is missing.
    #[error("{step} the network of pod sandbox {id}: {source}")]
    NotReady {
        /// ADD or DEL.
        step: NetworkStep,
        /// The pod.
        id: String,
        /// What crius-net said.
        source: Box<crius_net::Error>,
    },
    /// crius-net refused the pod's arguments.
    #[error("{step} the network of pod sandbox {id}: {source}")]
    Invalid {
        /// ADD or DEL.
        step: NetworkStep,
        /// The pod.
        id: String,
        /// What crius-net said.
        source: Box<crius_net::Error>,
    },
    /// A plugin, the configuration or the result cache failed.
    #[error("{step} the network of pod sandbox {id}: {source}")]
    Failed {
        /// ADD or DEL.
        step: NetworkStep,
        /// The pod.
        id: String,
        /// What crius-net said.
        source: Box<crius_net::Error>,
    },
    /// A port mapping's port does not fit in 16 bits.
    #[error("port_mappings: port {host_port} -> {container_port} is out of range")]
    PortOutOfRange {
        /// The host port asked for.
        host_port: i32,
        /// The pod port asked for.
        container_port: i32,
    },
    /// A port mapping names a protocol CNI does not know.
    #[error("port_mappings: unknown protocol {protocol:?}")]
    UnknownProtocol {
        /// The protocol, lower case.
        protocol: String,
    },
    /// A port mapping's host address does not parse.
    #[error("port_mappings: host_ip {host_ip:?} is not an IP address")]
    HostIp {
        /// The address as asked.
        host_ip: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// The pod has no pinned network namespace to attach.
    #[error("pod sandbox {id} has no pinned network namespace")]
    NoNetns {
        /// The pod.
        id: String,
    },
}

impl NetworkError {
    /// A crius-net failure of `step` for pod `id`, by what it means for the caller.
    fn cni(step: NetworkStep, id: &str, source: crius_net::Error) -> NetworkError {
        let (id, source) = (id.to_owned(), Box::new(source));
        match *source {
            crius_net::Error::NoConfig { .. } | crius_net::Error::PluginNotFound { .. } => {
                NetworkError::NotReady { step, id, source }
            }
            crius_net::Error::InvalidArgument(_) => NetworkError::Invalid { step, id, source },
            _ => NetworkError::Failed { step, id, source },
        }
    }
}

/// Whether a CNI attachment of the pod may still exist: it has a network namespace of its own
/// and no DEL is recorded.
pub(crate) fn may_be_attached(record: &PodRecord) -> bool {
    has_own_network(record) && record.network != NetworkPhase::Detached
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
) -> Result<PodNetwork, NetworkError> {
    let metadata = record.spec.metadata.clone().unwrap_or_default();
    let mut port_mappings = Vec::new();
    for p in &record.spec.port_mappings {
        let (Ok(host_port), Ok(container_port)) =
            (u16::try_from(p.host_port), u16::try_from(p.container_port))
        else {
            return Err(NetworkError::PortOutOfRange {
                host_port: p.host_port,
                container_port: p.container_port,
            });
        };
        let protocol = match p.protocol.to_ascii_lowercase().as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => {
                return Err(NetworkError::UnknownProtocol {
                    protocol: other.to_owned(),
                });
            }
        };
        let host_ip = if p.host_ip.is_empty() {
            None
        } else {
            Some(p.host_ip.parse().map_err(|source| NetworkError::HostIp {
                host_ip: p.host_ip.clone(),
                source,
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

impl Pods {
    /// CNI ADD for a freshly started pod, then its IPs (rewriting its `hosts`) and the
    /// attached phase are recorded. Host-network pods get none. `ip_ranges` is the CNI
    /// `ipRanges` capability argument.
    pub(crate) async fn attach_network(
        &self,
        id: &str,
        ip_ranges: Option<serde_json::Value>,
    ) -> Result<(), PodError> {
        let record = self.get(id)?.record;
        if !has_own_network(&record) {
            return Ok(());
        }
        let netns = record
            .netns
            .clone()
            .ok_or_else(|| NetworkError::NoNetns { id: id.to_owned() })?;
        let pod = pod_network(&record, netns, ip_ranges)?;
        let result = self
            .config
            .cni
            .add(&pod)
            .await
            .map_err(|e| NetworkError::cni(NetworkStep::SetUp, id, e))?;
        failpoint("run-pod:cni-added");
        let ips = result.ips.iter().map(ToString::to_string).collect();
        self.set_attached(&record, ips)
    }

    /// Writes the pod's IPs into its `/etc/hosts`, then records them with the attachment in
    /// one commit.
    fn set_attached(&self, record: &PodRecord, ips: Vec<String>) -> Result<(), PodError> {
        files::update_hosts(record.files_dir(), &record.spec.hostname, &ips)?;
        self.store
            .update(&record.id, |r| {
                r.ips = ips.clone();
                r.network = NetworkPhase::Attached;
            })?
            .ok_or_else(|| PodError::NotFound {
                id: validate::shown(&record.id),
                ambiguous: None,
            })?;
        Ok(())
    }

    /// CNI DEL; idempotent, and works when the namespace is already gone. Once a DEL has
    /// succeeded it is recorded and never run again for the pod.
    pub(crate) async fn detach_network(&self, record: &PodRecord) -> Result<(), PodError> {
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
        self.config
            .cni
            .del(&pod)
            .await
            .map_err(|e| NetworkError::cni(NetworkStep::TearDown, &record.id, e))?;
        failpoint("stop-pod:cni-deleted");
        self.mark_detached(&record.id)
    }

    /// DEL for a pod whose RunPodSandbox was cut short by a crash, once no plugin is left working
    /// for it: the plugins the dead daemon started run on, and an ADD finishing after the DEL
    /// would leave its address and rules behind.
    pub(crate) async fn detach_interrupted(&self, record: &PodRecord) -> Result<(), PodError> {
        if has_own_network(record) && !self.config.cni.wait_for_plugins(&record.id).await {
            tracing::warn!(id = %record.id, "CNI plugins still run for the pod after the plugin timeout; running DEL anyway");
        }
        self.detach_network(record).await
    }

    /// Records that the pod's network is torn down (a pod already gone is fine).
    fn mark_detached(&self, id: &str) -> Result<(), PodError> {
        match self.set_network(id, NetworkPhase::Detached) {
            Ok(()) | Err(PodError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records the phase of the pod's CNI attachment.
    fn set_network(&self, id: &str, phase: NetworkPhase) -> Result<(), PodError> {
        self.store
            .update(id, |r| r.network = phase)?
            .ok_or_else(|| PodError::NotFound {
                id: validate::shown(id),
                ambiguous: None,
            })?;
        Ok(())
    }

    /// Whether CNI ADD succeeded for pod `id` and no DEL has run since.
    pub(crate) async fn network_attached(&self, id: &str) -> bool {
        matches!(self.config.cni.cached_result(id).await, Ok(Some(_)))
    }

    /// Whether pods can be networked: a CNI configuration is loaded and its plugins exist.
    pub async fn network_status(&self) -> NetworkStatus {
        self.config.cni.status().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_failures_keep_their_kind_and_message() {
        let no_config = || crius_net::Error::NoConfig {
            dir: "/etc/cni/net.d".into(),
            skipped: Vec::new(),
        };
        let e = NetworkError::cni(NetworkStep::SetUp, "abc", no_config());
        assert!(matches!(e, NetworkError::NotReady { .. }));
        assert_eq!(
            e.to_string(),
            format!(
                "cannot set up the network of pod sandbox abc: {}",
                no_config()
            )
        );
        let bad_id = crius_net::Error::InvalidArgument(crius_net::InvalidRequest::SandboxId {
            id: "..".into(),
        });
        let e = NetworkError::cni(NetworkStep::TearDown, "abc", bad_id);
        assert!(matches!(e, NetworkError::Invalid { .. }));
        assert!(
            e.to_string()
                .starts_with("cannot tear down the network of pod sandbox abc: ")
        );
        let e = NetworkError::cni(
            NetworkStep::TearDown,
            "abc",
            crius_net::Error::NotAdded { id: "abc".into() },
        );
        assert!(matches!(e, NetworkError::Failed { .. }));
    }

    #[test]
    fn port_mappings_cni_cannot_express_are_refused() {
        let mut record = PodRecord::creating(
            "abc".into(),
            crate::spec::PodSpec::default(),
            PathBuf::new(),
            0,
        );
        record.state = crate::PodState::Ready;
        let port = |host_port, protocol: &str, host_ip: &str| crate::spec::PortMapping {
            protocol: protocol.into(),
            container_port: 80,
            host_port,
            host_ip: host_ip.into(),
        };
        let refused = |record: &PodRecord| {
            pod_network(record, PathBuf::new(), None)
                .expect_err("refused")
                .to_string()
        };
        record.spec.port_mappings = vec![port(70_000, "tcp", "")];
        assert_eq!(
            refused(&record),
            "port_mappings: port 70000 -> 80 is out of range"
        );
        record.spec.port_mappings = vec![port(8080, "QUIC", "")];
        assert_eq!(refused(&record), "port_mappings: unknown protocol \"quic\"");
        record.spec.port_mappings = vec![port(8080, "UDP", "nope")];
        assert_eq!(
            refused(&record),
            "port_mappings: host_ip \"nope\" is not an IP address"
        );
        record.spec.port_mappings = vec![port(8080, "SCTP", "127.0.0.1")];
        let pod = pod_network(&record, PathBuf::new(), None).expect("valid");
        assert_eq!(pod.port_mappings[0].protocol, Protocol::Sctp);
    }
}
