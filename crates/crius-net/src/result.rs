//! CNI ADD results (layouts 0.3.0 to 1.x) and what crius takes from them.

use std::net::{AddrParseError, IpAddr};

use serde::Deserialize;
use serde_json::Value;

/// An interface a plugin created or configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address, if reported.
    pub mac: Option<String>,
    /// The netns path for interfaces inside the pod; `None` for host-side interfaces.
    pub sandbox: Option<String>,
}

/// An address assigned by the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// The name of the interface it is on, if the result says.
    pub interface: Option<String>,
}

/// What an ADD produced for a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetworkResult {
    /// The pod IPs on the pod's interface: IPv4 addresses first, then IPv6, each in result
    /// order. The first is the pod's primary IP.
    pub ips: Vec<IpAddr>,
    /// Every address of the result.
    pub ip_configs: Vec<IpConfig>,
    /// Every interface of the result.
    pub interfaces: Vec<Interface>,
    /// The final result as the last plugin printed it.
    pub raw: Value,
}

/// Why a document is not a CNI result crius can use.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// The document does not have the shape of a result.
    #[error("not a CNI result: {source}")]
    Shape {
        /// The JSON error.
        source: serde_json::Error,
    },
    /// An address that is not `ADDRESS/PREFIX`.
    #[error("bad address {address:?}, want ADDRESS/PREFIX")]
    Address {
        /// The address as the result gives it.
        address: String,
    },
    /// A gateway that is not an IP address.
    #[error("bad gateway {gateway:?}")]
    Gateway {
        /// The gateway as the result gives it.
        gateway: String,
        /// The parse error.
        source: AddrParseError,
    },
    /// An address on an interface the result does not list.
    #[error("ip {address} names interface {index}, which is not in the result")]
    Interface {
        /// The address.
        address: IpAddr,
        /// The interface index it names.
        index: usize,
    },
}

#[derive(Deserialize)]
struct RawResult {
    #[serde(default)]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    ips: Vec<RawIp>,
}

#[derive(Deserialize)]
struct RawInterface {
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Deserialize)]
struct RawIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

impl PodNetworkResult {
    /// Interprets a result document for the pod interface `if_name`.
    pub fn from_value(raw: Value, if_name: &str) -> Result<Self, ResultError> {
        let parsed: RawResult =
            serde_json::from_value(raw.clone()).map_err(|source| ResultError::Shape { source })?;
        let interfaces: Vec<Interface> = parsed
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: i.mac.filter(|m| !m.is_empty()),
                sandbox: i.sandbox.filter(|s| !s.is_empty()),
            })
            .collect();
        let ip_configs = parsed
            .ips
            .into_iter()
            .map(|ip| {
                let (address, prefix_len) = parse_cidr(&ip.address)?;
                let gateway = match ip.gateway.as_deref() {
                    None | Some("") => None,
                    Some(g) => Some(g.parse().map_err(|source| ResultError::Gateway {
                        gateway: g.to_owned(),
                        source,
                    })?),
                };
                let interface = match ip.interface {
                    None => None,
                    Some(i) => Some(
                        interfaces
                            .get(i)
                            .ok_or(ResultError::Interface { address, index: i })?
                            .name
                            .clone(),
                    ),
                };
                Ok(IpConfig {
                    address,
                    prefix_len,
                    gateway,
                    interface,
                })
            })
            .collect::<Result<Vec<_>, ResultError>>()?;
        let ips = pod_ips(&ip_configs, if_name);
        Ok(Self {
            ips,
            ip_configs,
            interfaces,
            raw,
        })
    }
}

/// The addresses on `if_name` (all addresses when none says which interface it is on),
/// IPv4 before IPv6, without duplicates.
fn pod_ips(configs: &[IpConfig], if_name: &str) -> Vec<IpAddr> {
    let on_pod: Vec<IpAddr> = configs
        .iter()
        .filter(|c| c.interface.as_deref().is_none_or(|i| i == if_name))
        .map(|c| c.address)
        .collect();
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in on_pod
        .iter()
        .filter(|ip| ip.is_ipv4())
        .chain(on_pod.iter().filter(|ip| ip.is_ipv6()))
    {
        if !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    ips
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), ResultError> {
    let bad = || ResultError::Address {
        address: text.to_owned(),
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_result_with_host_and_pod_interfaces() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "crius0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:00"},
                {"name": "eth0", "mac": "12:34:56:78:9a:bc", "sandbox": "/run/netns/p"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.87.0.5/16", "gateway": "10.87.0.1", "interface": 2},
                {"address": "10.99.0.1/24", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = PodNetworkResult::from_value(raw, "eth0").unwrap();
        assert_eq!(
            r.ips,
            [
                "10.87.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(r.ip_configs[1].prefix_len, 16);
        assert_eq!(r.ip_configs[1].gateway, Some("10.87.0.1".parse().unwrap()));
        assert_eq!(r.interfaces[2].sandbox.as_deref(), Some("/run/netns/p"));
        assert_eq!(r.interfaces[0].sandbox, None);
    }

    #[test]
    fn v040_result_without_interface_indexes() {
        let raw = json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1"}]
        });
        let r = PodNetworkResult::from_value(raw, "eth0").unwrap();
        assert_eq!(r.ips, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.ip_configs[0].interface, None);
    }

    #[test]
    fn malformed_results_are_rejected() {
        let kind = |raw: Value| match PodNetworkResult::from_value(raw, "eth0") {
            Err(ResultError::Shape { .. }) => "shape",
            Err(ResultError::Address { .. }) => "address",
            Err(ResultError::Gateway { .. }) => "gateway",
            Err(ResultError::Interface { index: 4, .. }) => "interface 4",
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(json!({"ips": [{"address": "10.1.2.3"}]})), "address");
        assert_eq!(
            kind(json!({"ips": [{"address": "10.1.2.3/33"}]})),
            "address"
        );
        assert_eq!(
            kind(json!({"ips": [{"address": "10.1.2.3/24", "interface": 4}]})),
            "interface 4"
        );
        assert_eq!(
            kind(json!({"ips": [{"address": "10.1.2.3/24", "gateway": "x"}]})),
            "gateway"
        );
        assert_eq!(kind(json!({"ips": "nope"})), "shape");
    }
}
