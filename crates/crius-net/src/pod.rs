//! What the sandbox code tells crius-net about a pod, and how it becomes CNI_ARGS and
//! `runtimeConfig`.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{InvalidRequest, Result};

/// One pod's network attachment request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodNetwork {
    /// The pod sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`); also names the
    /// cache entry, so it must be ASCII alphanumerics, `_`, `.` or `-`.
    pub id: String,
    /// Path of the pod's network namespace (`CNI_NETNS`). ADD and CHECK need it; DEL
    /// accepts an empty or vanished path (empty: the path cached by ADD). A bind mount of the
    /// namespace that outlives the sandbox process is safer than `/proc/PID/ns/net`, whose
    /// PID can be reused.
    pub netns_path: PathBuf,
    /// Pod name (`K8S_POD_NAME`).
    pub name: String,
    /// Pod namespace (`K8S_POD_NAMESPACE`).
    pub namespace: String,
    /// Pod UID (`K8S_POD_UID`).
    pub uid: String,
    /// Host port mappings, passed to plugins declaring the `portMappings` capability.
    /// Mappings with host port 0 are not forwarded (nothing to publish).
    pub port_mappings: Vec<PortMapping>,
    /// Traffic shaping, passed to plugins declaring the `bandwidth` capability.
    pub bandwidth: Option<Bandwidth>,
    /// DNS settings, passed to plugins declaring the `dns` capability.
    pub dns: Option<Dns>,
    /// The node's pod CIDRs as CNI range sets (`[[{"subnet": CIDR}], ...]`, one set per
    /// address family), passed to plugins declaring the `ipRanges` capability.
    pub ip_ranges: Option<Value>,
}

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A host port published to a pod port (the CNI `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port on the host.
    pub host_port: u16,
    /// The port in the pod.
    pub container_port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The host address to publish on; all addresses when absent.
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
}

/// Traffic shaping (the CNI `bandwidth` capability): rates in bits per second, bursts in bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Ingress rate.
    pub ingress_rate: u64,
    /// Ingress burst.
    pub ingress_burst: u64,
    /// Egress rate.
    pub egress_rate: u64,
    /// Egress burst.
    pub egress_burst: u64,
}

/// DNS settings (the CNI `dns` capability).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub searches: Vec<String>,
    /// Resolver options.
    #[serde(default)]
    pub options: Vec<String>,
}

impl PodNetwork {
    /// Checks the fields that end up in file names and CNI_ARGS.
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        for (field, value) in [
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("uid", &self.uid),
        ] {
            if value.contains([';', '=']) || value.chars().any(char::is_control) {
                return Err(InvalidRequest::PodField {
                    field,
                    value: value.clone(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// The `CNI_ARGS` value: `IgnoreUnknown=1` and the Kubernetes pod identity.
    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.id, self.uid
        )
    }

    /// All capability arguments this pod has, keyed by capability name; each plugin gets the
    /// subset it declares in `capabilities`.
    pub fn capability_args(&self) -> Map<String, Value> {
        let mut args = Map::new();
        let mappings: Vec<&PortMapping> = self
            .port_mappings
            .iter()
            .filter(|m| m.host_port != 0)
            .collect();
        if !mappings.is_empty() {
            args.insert("portMappings".into(), to_value(&mappings));
        }
        if let Some(bandwidth) = &self.bandwidth {
            args.insert("bandwidth".into(), to_value(bandwidth));
        }
        if let Some(dns) = &self.dns {
            args.insert("dns".into(), to_value(dns));
        }
        if let Some(ranges) = &self.ip_ranges {
            args.insert("ipRanges".into(), ranges.clone());
        }
        args
    }
}

fn to_value(v: &impl Serialize) -> Value {
    // These types are plain structs of numbers and strings; serialising them cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The `runtimeConfig` for one plugin: the capability arguments it declares, or `None`.
pub(crate) fn runtime_config_for(
    plugin: &Map<String, Value>,
    args: &Map<String, Value>,
) -> Option<Map<String, Value>> {
    let caps = plugin.get("capabilities")?.as_object()?;
    let config: Map<String, Value> = caps
        .iter()
        .filter(|(_, enabled)| enabled.as_bool() == Some(true))
        .filter_map(|(cap, _)| Some((cap.clone(), args.get(cap)?.clone())))
        .collect();
    (!config.is_empty()).then_some(config)
}

/// Sandbox ids name cache files: keep them to a safe alphabet.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::SandboxId { id: id.to_owned() }.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use serde_json::json;

    fn pod() -> PodNetwork {
        PodNetwork {
            id: "abc123".into(),
            netns_path: "/run/netns/x".into(),
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "1c2d-77".into(),
            ..Default::default()
        }
    }

    #[test]
    fn cni_args_carry_the_pod_identity() {
        assert_eq!(
            pod().cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1c2d-77"
        );
    }

    #[test]
    fn separators_in_names_and_bad_ids_are_rejected() {
        assert!(pod().validate().is_ok());
        for bad in ["a;b", "a=b", "a\nb"] {
            let p = PodNetwork {
                name: bad.into(),
                ..pod()
            };
            assert!(
                matches!(
                    p.validate(),
                    Err(Error::InvalidArgument(InvalidRequest::PodField {
                        field: "name",
                        ..
                    }))
                ),
                "{bad:?}"
            );
        }
        for bad in ["", "../x", ".hidden", "a/b", "a b"] {
            let p = PodNetwork {
                id: bad.into(),
                ..pod()
            };
            assert!(
                matches!(
                    p.validate(),
                    Err(Error::InvalidArgument(InvalidRequest::SandboxId { .. }))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn capability_args_follow_the_cni_conventions() {
        let p = PodNetwork {
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: Protocol::Udp,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 9000,
                    protocol: Protocol::Sctp,
                    host_ip: None,
                },
            ],
            bandwidth: Some(Bandwidth {
                ingress_rate: 1000,
                ..Default::default()
            }),
            ip_ranges: Some(json!([[{"subnet": "10.244.1.0/24"}]])),
            ..pod()
        };
        let args = Value::Object(p.capability_args());
        assert_eq!(
            args,
            json!({
                "portMappings": [
                    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                    {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
                ],
                "bandwidth": {"ingressRate": 1000, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0},
                "ipRanges": [[{"subnet": "10.244.1.0/24"}]]
            })
        );
        assert!(pod().capability_args().is_empty());
    }

    #[test]
    fn plugins_get_only_the_capabilities_they_declare() {
        let args = json!({"portMappings": [1], "bandwidth": {"a": 1}});
        let args = args.as_object().unwrap();
        let plugin = |v: Value| v.as_object().unwrap().clone();
        let portmap =
            plugin(json!({"type":"portmap","capabilities":{"portMappings":true,"dns":true}}));
        assert_eq!(
            runtime_config_for(&portmap, args).map(Value::Object),
            Some(json!({"portMappings": [1]}))
        );
        let disabled = plugin(json!({"type":"portmap","capabilities":{"portMappings":false}}));
        assert_eq!(runtime_config_for(&disabled, args), None);
        let bridge = plugin(json!({"type":"bridge"}));
        assert_eq!(runtime_config_for(&bridge, args), None);
    }
}
