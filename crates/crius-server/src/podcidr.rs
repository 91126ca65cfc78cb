//! UpdateRuntimeConfig: the node's pod CIDRs as kubelet hands them over (one per IP family,
//! comma-separated). They are kept in `<root>/pod-cidr`, so a restarted criusd still knows them
//! (kubelet sends them again only when they change), and offered to CNI as the `ipRanges`
//! capability argument.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file under `--root` holding the pod CIDRs, one per line.
pub const POD_CIDR_FILE: &str = "pod-cidr";

/// One pod CIDR: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why kubelet's pod CIDRs are not usable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CidrError {
    /// No `/` between address and prefix length.
    #[error("{text:?} is not a CIDR (address/prefix length)")]
    NotCidr { text: String },
    /// The address part is not an IP address.
    #[error("{text:?}: {addr:?} is not an IP address")]
    Address {
        text: String,
        addr: String,
        source: std::net::AddrParseError,
    },
    /// The prefix length is not a number up to the family's bits.
    #[error("{text:?}: the prefix length must be 0-{max}")]
    Prefix { text: String, max: u8 },
    /// More than one CIDR of an IP family.
    #[error("{text:?}: at most one CIDR per IP family (dual-stack: \"IPv4/n,IPv6/m\")")]
    PerFamily { text: String },
}

/// Parses `addr/prefix`.
fn parse_cidr(text: &str) -> Result<Cidr, CidrError> {
    let (addr, prefix) = text.split_once('/').ok_or_else(|| CidrError::NotCidr {
        text: text.to_owned(),
    })?;
    let addr: IpAddr = addr.parse().map_err(|source| CidrError::Address {
        text: text.to_owned(),
        addr: addr.to_owned(),
        source,
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 =
        prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| CidrError::Prefix {
                text: text.to_owned(),
                max,
            })?;
    Ok(Cidr { addr, prefix })
}

/// Parses kubelet's comma-separated list: at most one CIDR per IP family. Empty: none.
pub(crate) fn parse_pod_cidrs(text: &str) -> Result<Vec<Cidr>, CidrError> {
    let cidrs = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_cidr)
        .collect::<Result<Vec<_>, _>>()?;
    let v4 = cidrs.iter().filter(|c| c.addr.is_ipv4()).count();
    if v4 > 1 || cidrs.len() - v4 > 1 {
        return Err(CidrError::PerFamily {
            text: text.to_owned(),
        });
    }
    Ok(cidrs)
}

/// The pod CIDRs in force.
#[derive(Debug)]
pub(crate) struct PodCidrs {
    file: PathBuf,
    current: Mutex<Vec<Cidr>>,
}

impl PodCidrs {
    /// The CIDRs recorded under `root` (none when the file is missing or unreadable).
    pub(crate) fn load(root: &Path) -> PodCidrs {
        let file = root.join(POD_CIDR_FILE);
        let current = match std::fs::read_to_string(&file) {
            Ok(text) => parse_pod_cidrs(&text.replace('\n', ",")).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "ignoring the recorded pod CIDRs");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        PodCidrs {
            file,
            current: Mutex::new(current),
        }
    }

    /// The CIDRs in force, as text.
    pub(crate) fn get(&self) -> Vec<String> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Replaces the CIDRs with kubelet's `pod_cidr` (InvalidArgument when it does not parse)
    /// and records them.
    pub(crate) fn set(&self, pod_cidr: &str) -> Result<(), tonic::Status> {
        let cidrs = parse_pod_cidrs(pod_cidr).map_err(|e| {
            tonic::Status::invalid_argument(format!("runtime_config.network_config.pod_cidr: {e}"))
        })?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if *current == cidrs {
            return Ok(());
        }
        let text: String = cidrs.iter().map(|c| format!("{c}\n")).collect();
        crius_runtime::write_whole(&self.file, text.as_bytes(), 0o644)
            .map_err(|e| tonic::Status::internal(format!("cannot record the pod CIDRs: {e}")))?;
        tracing::info!(pod_cidr = %pod_cidr, "pod CIDRs updated");
        *current = cidrs;
        Ok(())
    }

    /// The CNI `ipRanges` capability argument: one range set per CIDR; `None` without CIDRs.
    pub(crate) fn ip_ranges(&self) -> Option<serde_json::Value> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (!current.is_empty()).then(|| {
            serde_json::Value::Array(
                current
                    .iter()
                    .map(|c| serde_json::json!([{ "subnet": c.to_string() }]))
                    .collect(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_pod_cidrs_parse() {
        let v = parse_pod_cidrs("10.244.1.0/24,fd00:10:244:1::/64").expect("dual stack");
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].to_string(), "fd00:10:244:1::/64");
        assert!(parse_pod_cidrs("").expect("empty").is_empty());
        let kind = |bad: &str| match parse_pod_cidrs(bad).expect_err(bad) {
            CidrError::NotCidr { .. } => "not a CIDR",
            CidrError::Address { .. } => "address",
            CidrError::Prefix { max: 32, .. } => "IPv4 prefix",
            CidrError::Prefix { .. } => "IPv6 prefix",
            CidrError::PerFamily { .. } => "per family",
        };
        assert_eq!(kind("10.0.0.0"), "not a CIDR");
        assert_eq!(kind("10.0.0.0/33"), "IPv4 prefix");
        assert_eq!(kind("x/8"), "address");
        assert_eq!(kind("10.0.0.0/8,10.1.0.0/16"), "per family");
        assert_eq!(kind("fd00::/129"), "IPv6 prefix");
        assert_eq!(
            parse_pod_cidrs("x/8").expect_err("x").to_string(),
            "\"x/8\": \"x\" is not an IP address"
        );
    }

    #[test]
    fn recorded_and_offered_as_ip_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cidrs = PodCidrs::load(dir.path());
        assert_eq!(cidrs.ip_ranges(), None);
        cidrs.set("10.9.0.0/16").expect("set");
        assert!(cidrs.set("10.9.0.0").is_err());
        assert_eq!(cidrs.get(), ["10.9.0.0/16"]);
        assert_eq!(
            cidrs.ip_ranges(),
            Some(serde_json::json!([[{ "subnet": "10.9.0.0/16" }]]))
        );
        // A restarted daemon knows them.
        assert_eq!(PodCidrs::load(dir.path()).get(), ["10.9.0.0/16"]);
    }
}
