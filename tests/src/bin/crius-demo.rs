//! `crius-demo`: starts a real criusd and shows a pod with a user namespace, checking from the
//! host everything it prints: a root container serving port 80 as an unprivileged host uid, and
//! supplementalGroupsPolicy Merge and Strict. Exits 0 only if every step did what it printed.
//!
//! Usage: `crius-demo [--criusd PATH]` (run by `integration/demo.sh`, as root).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use crius_tests::harness::{connect, spawn_binary};
use crius_tests::host::{inode, owner_userns, status_ids};
use crius_tests::image;
use crius_tests::registry::Registry;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use tonic::transport::Channel;

/// The mapping kubelet would pick for a `hostUsers: false` pod: a 65536-aligned range above
/// 65535 (here the tenth).
const HOST_ID: u32 = 10 * 65_536;
/// Ids in the mapping.
const LENGTH: u32 = 65_536;

/// The daemon under demonstration; stopped and its directory removed on drop.
struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn check(ok: bool, text: &str) -> anyhow::Result<()> {
    if ok {
        println!("   ok   {text}");
        Ok(())
    } else {
        println!("   FAIL {text}");
        bail!("check failed: {text}")
    }
}

async fn start(
    criusd: &Path,
    registry: &str,
) -> anyhow::Result<(
    Daemon,
    RuntimeServiceClient<Channel>,
    ImageServiceClient<Channel>,
)> {
    let dir = tempfile::Builder::new()
        .prefix("crius-demo-")
        .tempdir_in("/var/tmp")?
        .keep();
    // As /run is: the pods' mapped roots must be able to reach their state beneath.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    let socket = dir.join("crius.sock");
    let config = dir.join("config.toml");
    // Built-in defaults, plus the loopback registry the demo images come from.
    std::fs::write(&config, format!("insecure_registries = [\"{registry}\"]\n"))?;
    let args: Vec<String> = [
        "--root",
        &dir.join("root").display().to_string(),
        "--state",
        &dir.join("state").display().to_string(),
        "--listen",
        &socket.display().to_string(),
        "--config",
        &config.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let child = spawn_binary(criusd, &args, &dir.join("criusd.log"))?;
    let daemon = Daemon {
        child: Some(child),
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(channel) = connect(&socket).await {
            let mut client = RuntimeServiceClient::new(channel.clone());
            if client.version(VersionRequest::default()).await.is_ok() {
                return Ok((daemon, client, ImageServiceClient::new(channel)));
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(daemon.dir.join("criusd.log")).unwrap_or_default();
            bail!("criusd did not start:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn demo(criusd: &Path) -> anyhow::Result<()> {
    step(
        "a loopback registry with the demo image (busybox-static; /etc/group has group-defined-in-image:x:50000:user-defined-in-image)",
    );
    let registry = Registry::start()?;
    let pushed = image::busybox_with_image_user()?
        .push(&registry.host(), "demo/busybox:1")
        .await?;
    check(true, &format!("pushed {}", pushed.reference))?;

    step("criusd: a real daemon on built-in defaults (its own root, state and socket)");
    let (daemon, mut cri, mut images) = start(criusd, &registry.host()).await?;
    let version = cri.version(VersionRequest::default()).await?.into_inner();
    check(
        version.runtime_name == "crius",
        &format!(
            "{} {} answers CRI {} on {}",
            version.runtime_name,
            version.runtime_version,
            version.runtime_api_version,
            daemon.dir.join("crius.sock").display()
        ),
    )?;
    let status = cri
        .status(StatusRequest { verbose: false })
        .await?
        .into_inner();
    let userns = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .is_some_and(|f| f.user_namespaces);
    check(
        userns,
        "the default runtime handler supports user namespaces (idmapped mounts work)",
    )?;
    let network = status
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap_or_default();
    check(
        network.status,
        &format!(
            "NetworkReady: the CNI network is loaded {}",
            network.message
        ),
    )?;

    step("a hostUsers: false pod: RunPodSandbox with a user namespace mapping");
    let map = IdMapping {
        host_id: HOST_ID,
        container_id: 0,
        length: LENGTH,
    };
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "userns-demo".into(),
            uid: "demo-uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "userns-demo".into(),
        labels: BTreeMap::from([("app".into(), "crius-demo".into())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    userns_options: Some(UserNamespace {
                        mode: NamespaceMode::Pod.into(),
                        uids: vec![map],
                        gids: vec![map],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let pulled = images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await?
        .into_inner();
    println!("   pulled {} as {}", pushed.reference, pulled.image_ref);
    let mut result = inspect_pod(&mut cri, &id).await;
    if result.is_ok() {
        result = web_server(&mut cri, &id, &pushed.reference).await;
    }
    if result.is_ok() {
        result = groups(&mut cri, &id, &pushed.reference).await;
    }
    step("clean up: StopPodSandbox, RemovePodSandbox, stop criusd");
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await?;
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    check(pods.is_empty(), "no pod left")?;
    drop(daemon);
    result
}

async fn inspect_pod(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> anyhow::Result<()> {
    let reply = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let pod = reply.status.unwrap_or_default();
    check(
        pod.state == PodSandboxState::SandboxReady as i32,
        &format!("pod {} is ready", &id[..12.min(id.len())]),
    )?;
    let info: serde_json::Value = serde_json::from_str(reply.info.get("info").map_or("{}", |s| s))?;
    let pid = info["sandboxPid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .context("no sandboxPid in the verbose status")?;

    step("seen from the host");
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    println!("   /proc/{pid}/uid_map: {}", uid_map.trim());
    check(
        fields == ["0", &HOST_ID.to_string(), &LENGTH.to_string()],
        &format!("uid 0 in the pod is host uid {HOST_ID}, {LENGTH} ids"),
    )?;
    let uids = status_ids(pid, "Uid:")?;
    println!("   ps: the pod's pause process {pid} runs as host uid {uids:?}");
    check(
        uids.iter().all(|u| *u == HOST_ID),
        "the pod's root is an unprivileged uid on the host",
    )?;
    let pod_userns = inode(&format!("/proc/{pid}/ns/user"))?;
    check(
        pod_userns != inode("/proc/self/ns/user")?,
        "the pod has its own user namespace",
    )?;
    for ns in ["net", "ipc", "uts"] {
        check(
            owner_userns(pid, ns)? == pod_userns,
            &format!("its {ns} namespace belongs to that user namespace (root in the pod owns it)"),
        )?;
    }
    let ip = pod.network.map(|n| n.ip).unwrap_or_default();
    check(
        !ip.is_empty(),
        &format!("CNI gave the pod the address {ip}"),
    )?;
    Ok(())
}

/// Creates and starts a container in the pod; returns its id.
async fn run_container(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    name: &str,
    image: &str,
    command: &[&str],
    security: LinuxContainerSecurityContext,
) -> anyhow::Result<String> {
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .unwrap_or_default();
    let id = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                command: command.iter().map(|s| (*s).to_owned()).collect(),
                linux: Some(LinuxContainerConfig {
                    security_context: Some(security),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(PodSandboxConfig {
                metadata: status.metadata,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await?;
    Ok(id)
}

/// Runs `command` in a container through ExecSync; returns its stdout.
async fn exec(
    cri: &mut RuntimeServiceClient<Channel>,
    id: &str,
    command: &[&str],
) -> anyhow::Result<String> {
    let reply = cri
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: command.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 10,
        })
        .await?
        .into_inner();
    ensure!(
        reply.exit_code == 0,
        "{command:?} exited {}: {}",
        reply.exit_code,
        String::from_utf8_lossy(&reply.stderr)
    );
    Ok(String::from_utf8_lossy(&reply.stdout).trim().to_owned())
}

/// The pod's root serves port 80; the host sees only the mapped uid.
async fn web_server(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    image: &str,
) -> anyhow::Result<()> {
    step("a container as root in the pod serves port 80 (busybox httpd)");
    let id = run_container(
        cri,
        pod,
        "web",
        image,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo 'hello from root in a user namespace' > /www/index.html \
             && exec httpd -f -p 80 -h /www",
        ],
        LinuxContainerSecurityContext::default(),
    )
    .await?;
    let inside_id = exec(cri, &id, &["id"]).await?;
    println!("   id (inside): {inside_id}");
    check(
        inside_id.starts_with("uid=0(root) gid=0(root)"),
        "root in the pod",
    )?;
    let uid_map = exec(cri, &id, &["cat", "/proc/self/uid_map"]).await?;
    println!("   /proc/self/uid_map (inside): {uid_map}");
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    check(
        fields == ["0", &HOST_ID.to_string(), &LENGTH.to_string()],
        "the pod's mapping, seen from inside",
    )?;
    let reply = cri
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(reply.info.get("info").map_or("{}", |s| s))?;
    let pid = info["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .context("no pid in the verbose container status")?;
    let uids = status_ids(pid, "Uid:")?;
    println!("   ps (host): httpd is pid {pid}, host uid {uids:?}");
    check(
        uids.iter().all(|u| *u == HOST_ID),
        "httpd runs as the mapped uid on the host, not as root",
    )?;
    let ip = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    let body = http_get(&ip).await?;
    println!("   GET http://{ip}:80/ -> {body}");
    check(
        body.contains("hello from root in a user namespace"),
        "root in the pod bound port 80 and served the host",
    )
}

/// A plain HTTP GET of `/` on port 80, retried while the server starts.
async fn http_get(ip: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect((ip, 80)).await {
            Ok(mut conn) => {
                conn.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
                    .await?;
                let mut reply = String::new();
                conn.read_to_string(&mut reply).await?;
                return Ok(reply.lines().last().unwrap_or_default().to_owned());
            }
            Err(e) if Instant::now() > deadline => bail!("cannot reach {ip}:80: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The implicit-groups pods of the supplementalGroupsPolicy docs, Merge then Strict.
async fn groups(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    image: &str,
) -> anyhow::Result<()> {
    for (policy, name, expected) in [
        (SupplementalGroupsPolicy::Merge, "merge", "3000 4000 50000"),
        (SupplementalGroupsPolicy::Strict, "strict", "3000 4000"),
    ] {
        step(&format!(
            "runAsUser 1000, runAsGroup 3000, supplementalGroups [4000], \
             supplementalGroupsPolicy {}",
            policy.as_str_name()
        ));
        let id = run_container(
            cri,
            pod,
            name,
            image,
            &["sleep", "3600"],
            LinuxContainerSecurityContext {
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 3000 }),
                supplemental_groups: vec![4000],
                supplemental_groups_policy: policy.into(),
                ..Default::default()
            },
        )
        .await?;
        println!("   id: {}", exec(cri, &id, &["id"]).await?);
        let groups = exec(cri, &id, &["id", "-G"]).await?;
        check(groups == expected, &format!("id -G is {expected}"))?;
        let status = cri
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        let linux = status.user.and_then(|u| u.linux).unwrap_or_default();
        println!(
            "   status.user.linux: uid {} gid {} supplementalGroups {:?}",
            linux.uid, linux.gid, linux.supplemental_groups
        );
        let reported: Vec<String> = linux
            .supplemental_groups
            .iter()
            .map(ToString::to_string)
            .collect();
        check(
            linux.uid == 1000 && linux.gid == 3000 && reported.join(" ") == expected,
            "ContainerStatus reports the same identity",
        )?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut criusd = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("criusd")))
        .unwrap_or_default();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--criusd", Some(path)) => criusd = PathBuf::from(path),
            _ => {
                eprintln!("usage: crius-demo [--criusd PATH]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    match demo(&criusd).await {
        Ok(()) => {
            println!("\nevery step did what it printed");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ncrius-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
