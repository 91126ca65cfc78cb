//! UpdateRuntimeConfig and RuntimeConfig end to end: the pod CIDRs kubelet hands over are
//! checked, kept across a criusd restart and shown in verbose Status; RuntimeConfig names the
//! cgroup driver.

use cri_api::v1::*;
use crius_tests::harness::Criusd;

async fn update(daemon: &mut Criusd, pod_cidr: &str) -> Result<(), tonic::Status> {
    daemon
        .runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: pod_cidr.into(),
                }),
            }),
        })
        .await
        .map(|_| ())
}

/// The pod CIDRs verbose Status reports.
async fn pod_cidrs(daemon: &mut Criusd) -> Vec<String> {
    let info = daemon
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .expect("status")
        .into_inner()
        .info;
    let config: serde_json::Value =
        serde_json::from_str(info.get("config").expect("config info")).expect("json");
    config["podCidrs"]
        .as_array()
        .expect("podCidrs")
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test]
async fn pod_cidrs_are_checked_kept_and_reported() {
    let mut daemon = Criusd::start().await.expect("criusd");
    assert!(pod_cidrs(&mut daemon).await.is_empty());

    update(&mut daemon, "10.200.3.0/24,fd00:10:200:3::/64")
        .await
        .expect("dual-stack CIDRs");
    assert_eq!(
        pod_cidrs(&mut daemon).await,
        ["10.200.3.0/24", "fd00:10:200:3::/64"]
    );
    for bad in [
        "10.200.3.0",
        "10.200.3.0/40",
        "10.1.0.0/16,10.2.0.0/16",
        "pods",
    ] {
        let e = update(&mut daemon, bad).await.expect_err(bad);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("pod_cidr"), "{}", e.message());
    }
    // A refused update changes nothing; a restart forgets nothing.
    daemon.restart().await.expect("restart");
    assert_eq!(
        pod_cidrs(&mut daemon).await,
        ["10.200.3.0/24", "fd00:10:200:3::/64"]
    );

    let config = daemon
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .expect("runtime config")
        .into_inner();
    assert_eq!(
        config.linux.expect("linux").cgroup_driver,
        CgroupDriver::Cgroupfs as i32
    );
}

/// After UpdateRuntimeConfig a pod takes its IP from the pod CIDR when the network config
/// declares the `ipRanges` capability (and has no ranges of its own, as host-local adds them
/// up); a config that does not declare it keeps its own range.
#[tokio::test]
async fn pods_take_their_ip_from_the_pod_cidr() {
    let mut daemon = Criusd::start().await.expect("criusd");
    let network = daemon.network.as_ref().expect("network");
    let (prefix, conf_dir, ipam_dir, bridge) = (
        network.prefix.clone(),
        network.conf_dir.clone(),
        network.ipam_dir.clone(),
        network.bridge.clone(),
    );
    let logs = tempfile::tempdir().expect("log dir");
    update(&mut daemon, &format!("{prefix}.192/26"))
        .await
        .expect("pod CIDR");
    let mut ips: Vec<std::net::Ipv4Addr> = Vec::new();
    for name in ["static", "from-cidr"] {
        if name == "from-cidr" {
            let conflist = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": crius_tests::harness::TEST_NETWORK_NAME,
                "plugins": [{
                    "type": "bridge",
                    "bridge": bridge,
                    // The bridge already holds the first range's gateway address.
                    "isGateway": false,
                    "ipMasq": false,
                    "capabilities": { "ipRanges": true },
                    "ipam": { "type": "host-local", "dataDir": ipam_dir },
                }],
            });
            std::fs::write(conf_dir.join("10-test.conflist"), conflist.to_string())
                .expect("conflist");
        }
        let id = daemon
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(crius_tests::env::pod_config(name, false, logs.path())),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        let status = daemon
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner();
        let ip = status
            .status
            .and_then(|s| s.network)
            .expect("network status")
            .ip;
        ips.push(ip.parse().expect("an IPv4 address"));
    }
    let last = |ip: std::net::Ipv4Addr| ip.octets()[3];
    assert!(
        ips.iter().all(|ip| ip.to_string().starts_with(&prefix)),
        "{ips:?}"
    );
    assert!(
        last(ips[0]) < 192,
        "no ipRanges capability: the configured range: {ips:?}"
    );
    assert!(
        last(ips[1]) > 192,
        "from the pod CIDR {prefix}.192/26: {ips:?}"
    );
}
