//! The per-pod files containers bind later: hostname, hosts, resolv.conf.

use std::path::Path;

use crius_proto::{WriteError, layout, write_replace};

use crate::spec::DnsConfig;

/// The host's resolv.conf, used when the pod asks for no DNS settings or uses the host network.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The host's hosts file, used for host-network pods.
const HOST_HOSTS: &str = "/etc/hosts";

/// Renders `/etc/hosts` for a pod: localhost, and the hostname on each pod IP.
pub fn render_hosts(hostname: &str, ips: &[String]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for ip in ips {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    text
}

/// Renders resolv.conf from the pod's DNS settings.
pub fn render_resolv_conf(dns: &DnsConfig) -> String {
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

/// Writes hostname, hosts and resolv.conf into `dir` (not synced: they are rewritten for any
/// pod that is made again).
pub fn write_pod_files(
    dir: &Path,
    hostname: &str,
    host_network: bool,
    dns: Option<&DnsConfig>,
) -> Result<(), WriteError> {
    write_replace(
        &dir.join(layout::HOSTNAME),
        format!("{hostname}\n").as_bytes(),
        0o644,
    )?;
    let hosts = if host_network {
        std::fs::read(HOST_HOSTS).unwrap_or_else(|_| render_hosts(hostname, &[]).into_bytes())
    } else {
        render_hosts(hostname, &[]).into_bytes()
    };
    write_replace(&dir.join(layout::HOSTS), &hosts, 0o644)?;
    write_resolv_conf(dir, dns)
}

/// Writes resolv.conf: the pod's DNS settings whenever it has any (hostNetwork pods with
/// `dnsPolicy: ClusterFirstWithHostNet` get cluster DNS too), else the host's file.
fn write_resolv_conf(dir: &Path, dns: Option<&DnsConfig>) -> Result<(), WriteError> {
    let own = dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty()));
    let text = match own {
        Some(d) => render_resolv_conf(d).into_bytes(),
        None => std::fs::read(HOST_RESOLV_CONF).unwrap_or_default(),
    };
    write_replace(&dir.join(layout::RESOLV_CONF), &text, 0o644)
}

/// Rewrites the pod's `/etc/hosts` once its IPs are known (the CNI hook calls this).
pub fn update_hosts(dir: &Path, hostname: &str, ips: &[String]) -> Result<(), WriteError> {
    write_replace(
        &dir.join(layout::HOSTS),
        render_hosts(hostname, ips).as_bytes(),
        0o644,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            render_resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn hosts_name_the_pod() {
        let text = render_hosts("web", &["10.88.0.5".into()]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.88.0.5\tweb\n"));
    }

    #[test]
    fn files_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dns = DnsConfig {
            servers: vec!["1.1.1.1".into()],
            ..DnsConfig::default()
        };
        write_pod_files(dir.path(), "h", false, Some(&dns)).expect("write");
        let read = |f| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        assert_eq!(read(layout::HOSTNAME), "h\n");
        assert_eq!(read(layout::RESOLV_CONF), "nameserver 1.1.1.1\n");
        assert!(read(layout::HOSTS).contains("localhost"));
    }
}
