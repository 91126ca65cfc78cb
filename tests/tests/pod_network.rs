//! Pod networking through real CNI plugins: a pod gets an address the host can reach, Stop
//! releases it, and a network failure leaves no half pod behind.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use crius_tests::env;
use crius_tests::harness::{Criusd, Options};

/// The shared pod config (no log directory) in namespace `crius-net-test`, labelled
/// `suite=pod-network`, with a user namespace from host id 30 × 65536 when `userns`.
fn pod_config(name: &str, userns: bool) -> PodSandboxConfig {
    let mut config = PodSandboxConfig {
        labels: BTreeMap::from([("suite".into(), "pod-network".into())]),
        ..env::pod_config(name, false, Path::new(""))
    };
    config.metadata.get_or_insert_default().namespace = "crius-net-test".into();
    if userns {
        config = env::with_userns(config, 30 * 65_536, 65_536);
    }
    config
}

async fn run(daemon: &mut Criusd, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    Ok(daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn status(daemon: &mut Criusd, id: &str) -> (PodSandboxStatus, serde_json::Value) {
    let response = daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info = serde_json::from_str(&response.info["info"]).unwrap();
    (response.status.unwrap(), info)
}

/// Listens on `port` inside the network namespace at `netns` and answers one connection.
fn serve_once_in(netns: PathBuf, port: u16) -> std::thread::JoinHandle<std::io::Result<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns)?;
        // This thread alone enters the pod's network namespace.
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        let _ = ready_tx.send(());
        let (mut conn, _) = listener.accept()?;
        conn.write_all(b"hello from the pod\n")?;
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listener in the pod did not start");
    handle
}

/// Connects to a listener on 127.0.0.1 inside the network namespace at `netns`: works only
/// once the namespace's `lo` is up (a new namespace's `lo` is down and has no address).
fn loopback_connects_in(netns: &Path) -> std::io::Result<()> {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns)?;
        // This thread alone enters the pod's network namespace.
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let _client = TcpStream::connect_timeout(&listener.local_addr()?, Duration::from_secs(5))?;
        listener.accept().map(drop)
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn pod_ip_is_reachable_from_the_host_and_released_on_stop() {
    let mut daemon = Criusd::start().await.unwrap();
    let status_reply = daemon
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let network = status_reply
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(network.status, "NetworkReady false: {}", network.message);

    for (name, userns) in [("plain", false), ("userns", true)] {
        let id = run(&mut daemon, pod_config(name, userns)).await.unwrap();
        let (pod, info) = status(&mut daemon, &id).await;
        let net = daemon.network.as_ref().unwrap();
        let ip = pod.network.unwrap().ip;
        assert!(
            ip.starts_with(&format!("{}.", net.prefix)),
            "{name}: pod IP {ip:?} is not in {}.0/24",
            net.prefix
        );
        assert_eq!(net.allocated_ips(), vec![ip.clone()], "{name}");
        assert_eq!(
            net.attached_links().len(),
            1,
            "{name}: one veth on the bridge"
        );

        let netns = PathBuf::from(info["netns"].as_str().unwrap());
        // The sandbox brought lo up: 127.0.0.1 answers inside the pod.
        loopback_connects_in(&netns).unwrap_or_else(|e| panic!("{name}: lo in the pod: {e}"));
        let server = serve_once_in(netns, 8080);
        let mut conn = TcpStream::connect_timeout(
            &format!("{ip}:8080").parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "hello from the pod\n", "{name}");
        server.join().unwrap().unwrap();

        // The pod's /etc/hosts names the pod by its IP.
        let hosts = std::fs::read_to_string(
            PathBuf::from(info["podFilesDir"].as_str().unwrap()).join("hosts"),
        )
        .unwrap();
        assert!(hosts.contains(&ip) && hosts.contains(name), "{hosts}");

        daemon
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
        let net = daemon.network.as_ref().unwrap();
        assert!(
            net.allocated_ips().is_empty(),
            "{name}: IP not released by Stop"
        );
        assert!(
            net.attached_links().is_empty(),
            "{name}: veth left after Stop"
        );
        // Stop again, then Remove: still fine.
        daemon
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
        daemon
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn remove_without_stop_releases_the_ip() {
    let mut daemon = Criusd::start().await.unwrap();
    let id = run(&mut daemon, pod_config("nostop", false)).await.unwrap();
    assert_eq!(daemon.network.as_ref().unwrap().allocated_ips().len(), 1);
    // By the id's prefix, as crictl users type it: the pod's network goes too.
    daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id[..12].to_owned(),
        })
        .await
        .unwrap();
    let left = daemon.pods().await;
    assert!(
        left.is_empty(),
        "the pod is removed by its prefix: {left:?}"
    );
    let net = daemon.network.as_ref().unwrap();
    assert!(net.allocated_ips().is_empty());
    assert!(net.attached_links().is_empty());
}

#[tokio::test]
async fn network_failure_leaves_no_pod() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("cni");
    std::fs::create_dir_all(&conf_dir).unwrap();
    // A plugin type that no CNI bin dir holds.
    std::fs::write(
        conf_dir.join("10-broken.conflist"),
        r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"crius-no-such-plugin"}]}"#,
    )
    .unwrap();
    let mut daemon = Criusd::start_with(Options {
        config: format!("cni_conf_dir = \"{}\"\n", conf_dir.display()),
        ..Options::default()
    })
    .await
    .unwrap();
    let ready = daemon
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(!ready.status);
    assert!(
        ready.message.contains("crius-no-such-plugin"),
        "{}",
        ready.message
    );

    let err = run(&mut daemon, pod_config("broken", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("crius-no-such-plugin"),
        "{}",
        err.message()
    );
    let pods = daemon.pods().await;
    assert!(
        pods.is_empty(),
        "a pod survived its network failure: {pods:?}"
    );
    let pod_dirs = std::fs::read_dir(daemon.paths.state.join("pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pod_dirs, 0, "pod directory left behind");

    // Host-network pods need no CNI and still work.
    let host = env::on_host_network(pod_config("hostnet", false));
    let id = run(&mut daemon, host).await.unwrap();
    daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
}
