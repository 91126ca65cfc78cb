//! The shipped default network (`integration/cni/10-crius.conflist`) with the real plugins,
//! run from a thread that first moves into a network namespace of its own. That namespace
//! plays the host: the `crius0` bridge, its 10.87.0.1 address, the masquerade and port
//! mapping rules and the `ip_forward` the bridge plugin turns on all live in it and vanish
//! with it, so the machine's real network is never touched. Only host-local's `dataDir` is
//! moved to a temp dir (its default is /var/lib/cni). Needs root; skipped otherwise.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use common::{Netns, PLUGIN_DIR, greet, pod, run};
use crius_net::{Cni, DEFAULT_CONFLIST, Error, PortMapping, Protocol};
use serde_json::Value;

#[test]
fn default_conflist_works_in_an_isolated_host_namespace() {
    if !common::is_root() || !Path::new(PLUGIN_DIR).join("bridge").is_file() {
        eprintln!("skipping: needs root and {PLUGIN_DIR}");
        return;
    }
    common::in_isolated_host_netns(scenario);
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf_dir = tmp.path().join("net.d");
    std::fs::create_dir(&conf_dir).expect("mkdir");
    let mut conf: Value = serde_json::from_str(DEFAULT_CONFLIST).expect("default conflist");
    conf["plugins"][0]["ipam"]["dataDir"] = tmp.path().join("ipam").display().to_string().into();
    std::fs::write(conf_dir.join("10-crius.conflist"), conf.to_string()).expect("write");
    let cni = Cni::new(&conf_dir, [PLUGIN_DIR], tmp.path().join("cache"));
    assert!(cni.status().await.is_ready());

    let netns = Netns::new();
    let mut p = pod(&format!("pod-{}", netns.name), &netns.path());
    p.port_mappings = vec![PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: None,
    }];
    let result = cni.add(&p).await.expect("add");
    let ip = result.ips[0];
    assert!(ip.to_string().starts_with("10.87."), "{ip}");
    let gateway = IpAddr::V4(Ipv4Addr::new(10, 87, 0, 1));
    assert_eq!(result.ip_configs[0].gateway, Some(gateway));
    let bridge = run("ip", &["-o", "addr", "show", "dev", "crius0"]).expect("crius0");
    assert!(bridge.contains("10.87.0.1/16"), "{bridge}");
    let route = netns.ip(&["route", "show", "default"]).expect("route");
    assert!(route.contains("via 10.87.0.1"), "{route}");
    let nat = run("iptables", &["-t", "nat", "-S"]).expect("iptables");
    assert!(nat.contains("MASQUERADE"), "ipMasq rules:\n{nat}");
    assert!(
        nat.contains(&format!("--to-destination {ip}:80")),
        "portmap rule:\n{nat}"
    );

    // Directly, and through the host port on the gateway address.
    let port = netns.serve_once(0);
    assert_eq!(greet(ip, port).expect("pod reachable"), "hello");
    netns.serve_once(80);
    assert_eq!(greet(gateway, 8080).expect("host port"), "hello");

    match cni.check(&p).await {
        Ok(()) => {}
        // portmap before 1.2 (containernetworking/plugins#819): see real_plugins.rs.
        Err(Error::Plugin { plugin, msg, .. })
            if plugin == "portmap" && msg.contains("could not check ipv6 dnat") => {}
        Err(e) => panic!("check: {e}"),
    }
    cni.del(&p).await.expect("del");
    let nat = run("iptables", &["-t", "nat", "-S"]).expect("iptables");
    assert!(
        !nat.contains(&format!("{ip}:80")),
        "portmap rule left:\n{nat}"
    );
    let reserved = tmp.path().join("ipam/crius").join(ip.to_string());
    assert!(!reserved.exists(), "host-local released {ip}");
}
