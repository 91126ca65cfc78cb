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
