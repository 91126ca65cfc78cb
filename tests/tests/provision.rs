#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]
//! The node provisioning script of the Vagrant VM (`vagrant/provision.sh`), run in its `--no-vm`
//! mode: crius installed and every node configuration written into a temporary root, checked as
//! kubelet, kubeadm, systemd and CNI would read it, and the installed criusd started on the
//! installed configuration.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cri_api::v1::VersionRequest;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use crius_tests::harness::{connect, criusd_binary, spawn_binary};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The socket every file written for the node must name.
const SOCKET: &str = "/run/crius/crius.sock";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn provision(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("vagrant/provision.sh"))
        .args(args)
        .output()
        .expect("run vagrant/provision.sh")
}

fn read(root: &Path, node_path: &str) -> String {
    let path = root.join(node_path.trim_start_matches('/'));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of a `key: value` line of a YAML file (first match).
fn yaml_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .next()
}

#[test]
fn no_vm_mode_refuses_to_write_into_the_host_root() {
    for args in [&["--no-vm"][..], &["--no-vm", "--root", "/"][..]] {
        let out = provision(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--root DIR"), "{stderr}");
    }
    let out = provision(&["--no-vm", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn no_vm_mode_installs_crius_and_writes_the_node_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("node");
    let criusd = criusd_binary();
    let out = provision(&[
        "--no-vm",
        "--root",
        root.to_str().unwrap(),
        "--criusd",
        criusd.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "provision.sh failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("nothing else was touched"), "{stdout}");

    // The binary, byte for byte, executable.
    let installed = root.join("usr/local/bin/criusd");
    let mode = std::fs::metadata(&installed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(std::fs::read(&installed).unwrap() == std::fs::read(&criusd).unwrap());

    // The systemd unit starts that binary on that configuration and keeps pods across restarts.
    let unit = read(&root, "/etc/systemd/system/criusd.service");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/local/bin/criusd --config /etc/crius/config.toml"),
        "{unit}"
    );
    assert!(unit.lines().any(|l| l == "KillMode=process"), "{unit}");
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");

    // crius listens where kubelet, kubeadm and crictl look.
    let config = read(&root, "/etc/crius/config.toml");
    assert!(
        config
            .lines()
            .any(|l| l == format!("listen = \"{SOCKET}\"")),
        "{config}"
    );
    let endpoint = format!("unix://{SOCKET}");
    let kubeadm = read(&root, "/etc/kubeadm/kubeadm.yaml");
    for key in [
        "criSocket",
        "containerRuntimeEndpoint",
        "imageServiceEndpoint",
    ] {
        assert_eq!(yaml_value(&kubeadm, key), Some(endpoint.as_str()), "{key}");
    }
    assert_eq!(yaml_value(&kubeadm, "cgroupDriver"), Some("cgroupfs"));
    assert_eq!(yaml_value(&kubeadm, "UserNamespacesSupport"), Some("true"));
    assert_eq!(
        yaml_value(&kubeadm, "PodAndContainerStatsFromCRI"),
        Some("true")
    );
    assert_eq!(
        yaml_value(&kubeadm, "SupplementalGroupsPolicy"),
        Some("true")
    );
    assert_eq!(yaml_value(&kubeadm, "failCgroupV1"), Some("false"));
    assert!(kubeadm.contains("kind: InitConfiguration"));
    assert!(kubeadm.contains("kind: KubeletConfiguration"));
    let crictl = read(&root, "/etc/crictl.yaml");
    assert_eq!(
        yaml_value(&crictl, "runtime-endpoint"),
        Some(endpoint.as_str())
    );
    assert_eq!(
        yaml_value(&crictl, "image-endpoint"),
        Some(endpoint.as_str())
    );

    // The CNI network is crius' default: a bridge with host-local addresses, and portmap.
    let cni: serde_json::Value =
        serde_json::from_str(&read(&root, "/etc/cni/net.d/10-crius.conflist")).unwrap();
    let shipped: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("integration/cni/10-crius.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(cni, shipped);
    assert_eq!(cni["plugins"][0]["type"], "bridge");
    assert_eq!(cni["plugins"][0]["ipam"]["type"], "host-local");
    assert_eq!(cni["plugins"][1]["type"], "portmap");
    assert!(!read(&root, "/etc/modules-load.d/crius-kubernetes.conf").is_empty());
    assert!(
        read(&root, "/etc/sysctl.d/99-crius-kubernetes.conf").contains("net.ipv4.ip_forward = 1")
    );

    // The installed criusd accepts the installed configuration (flags move its directories and
    // socket into the test's directory) and answers CRI.
    let socket = dir.path().join("crius.sock");
    let args: Vec<String> = [
        "--config".to_owned(),
        root.join("etc/crius/config.toml").display().to_string(),
        "--root".to_owned(),
        dir.path().join("root").display().to_string(),
        "--state".to_owned(),
        dir.path().join("state").display().to_string(),
        "--listen".to_owned(),
        socket.display().to_string(),
    ]
    .into();
    let log = dir.path().join("criusd.log");
    let mut child = spawn_binary(&installed, &args, &log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let version = loop {
        if let Ok(channel) = connect(&socket).await
            && let Ok(v) = RuntimeServiceClient::new(channel)
                .version(VersionRequest::default())
                .await
        {
            break Some(v.into_inner());
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = kill(
        Pid::from_raw(i32::try_from(child.id()).unwrap()),
        Signal::SIGTERM,
    );
    let _ = child.wait();
    let version = version.unwrap_or_else(|| {
        panic!(
            "the installed criusd did not start on the installed config:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(version.runtime_name, "crius");
}
