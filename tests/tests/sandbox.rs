//! Pod sandboxes end to end: a real criusd, real pod monitors, real namespaces, checked from the
//! host through /proc.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cri_api::v1::*;
use crius_tests::env::{namespace_options, with_userns};
use crius_tests::harness::Criusd;
use crius_tests::host::{inode, owner_userns, status_ids};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The shared pod config (no log directory) with labels, an annotation and DNS settings.
fn config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        labels: BTreeMap::from([
            ("app".into(), name.into()),
            ("suite".into(), "sandbox".into()),
        ]),
        annotations: BTreeMap::from([("note".into(), "x".into())]),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        ..crius_tests::env::pod_config(name, false, Path::new(""))
    }
}

async fn run(daemon: &mut Criusd, config: PodSandboxConfig) -> anyhow::Result<String> {
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

/// The status and the verbose info of a pod.
async fn status(
    daemon: &mut Criusd,
    id: &str,
) -> anyhow::Result<(PodSandboxStatus, serde_json::Value)> {
    let response = daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(response.info.get("info").context("no verbose info")?)?;
    Ok((response.status.context("no status")?, info))
}

fn pid_of(info: &serde_json::Value, key: &str) -> anyhow::Result<i32> {
    let pid = info[key].as_i64().context("no pid in info")?;
    Ok(i32::try_from(pid)?)
}

async fn stop_and_remove(daemon: &mut Criusd, id: &str) -> anyhow::Result<()> {
    daemon
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await?;
    daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await?;
    Ok(())
}

/// Sends one request line to the monitor of the pod in `dir`; returns the reply.
fn monitor_request(dir: &Path, line: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{BufRead, Write};
    // The socket path may exceed a socket address: reach it through a directory descriptor.
    let handle = std::fs::File::open(dir)?;
    let path = format!("/proc/self/fd/{}/monitor.sock", handle.as_raw_fd());
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(&answer)?)
}

/// Runs a command in namespace `flag` of `pid` with nsenter; returns its trimmed stdout.
fn nsenter(pid: i32, flag: &str, command: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg(flag)
        .args(command)
        .output()?;
    ensure!(
        out.status.success(),
        "nsenter {flag} {command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn map_of(pid: i32, file: &str) -> anyhow::Result<Vec<Vec<u32>>> {
    Ok(std::fs::read_to_string(format!("/proc/{pid}/{file}"))?
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .collect())
}

/// Whether a live (not zombie) process has this pid.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .map(|i| s[i + 1..].trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|zombie| !zombie)
}

/// Every cgroup directory of a pod (default parent), on every mounted hierarchy.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    crius_tests::env::cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join("crius").join(format!("crius-{id}")))
        .filter(|dir| dir.exists())
        .collect()
}

/// Checks that nothing of the pods is left: monitors, sandboxes, mounts, cgroups, directories.
fn assert_gone(daemon: &Criusd, pods: &[(String, i32, i32)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    for (id, monitor, sandbox) in pods {
        while (alive(*monitor) || alive(*sandbox)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure!(!alive(*monitor), "monitor {monitor} of {id} still runs");
        ensure!(!alive(*sandbox), "sandbox {sandbox} of {id} still runs");
        ensure!(
            cgroup_dirs(id).is_empty(),
            "cgroups of {id} left: {:?}",
            cgroup_dirs(id)
        );
        let dir = daemon.paths.state.join("pods").join(id);
        ensure!(!dir.exists(), "{} left", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let state = daemon.paths.state.display().to_string();
    // With no pods named, no mount under the state directory may be left at all.
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&state))
        .filter(|l| pods.is_empty() || pods.iter().any(|(id, _, _)| l.contains(id.as_str())))
        .collect();
    ensure!(left.is_empty(), "mounts left: {left:#?}");
    Ok(())
}

#[tokio::test]
async fn userns_pod_owns_its_namespaces() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    // critest's mapping: host 1000, length 100000 (not 65536-aligned).
    let started = Instant::now();
    let mut pod = with_userns(config("userns"), 1000, 100_000);
    pod.linux.get_or_insert_default().sysctls = BTreeMap::from([
        ("net.ipv4.ip_unprivileged_port_start".into(), "80".into()),
        ("kernel.shmmni".into(), "1234".into()),
    ]);
    let id = run(&mut daemon, pod).await?;
    eprintln!(
        "RunPodSandbox with a user namespace: {:?}",
        started.elapsed()
    );
    let (status, info) = status(&mut daemon, &id).await?;
    ensure!(status.state == PodSandboxState::SandboxReady as i32);
    let userns = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .context("no userns in status")?;
    ensure!(userns.mode == NamespaceMode::Pod as i32);
    ensure!(userns.uids.len() == 1 && userns.uids[0].host_id == 1000);
    let pid = pid_of(&info, "sandboxPid")?;
    let monitor = pid_of(&info, "monitorPid")?;

    ensure!(map_of(pid, "uid_map")? == vec![vec![0, 1000, 100_000]]);
    ensure!(map_of(pid, "gid_map")? == vec![vec![0, 1000, 100_000]]);
    let pod_userns = inode(&format!("/proc/{pid}/ns/user"))?;
    ensure!(
        pod_userns != inode("/proc/self/ns/user")?,
        "the pod shares the host user ns"
    );
    for ns in ["net", "ipc", "uts", "pid", "mnt", "cgroup"] {
        ensure!(
            owner_userns(pid, ns)? == pod_userns,
            "the pod's {ns} namespace is not owned by its user namespace"
        );
        ensure!(
            inode(&format!("/proc/{pid}/ns/{ns}"))? != inode(&format!("/proc/self/ns/{ns}"))?,
            "the pod shares the host's {ns} namespace"
        );
    }
    ensure!(
        status_ids(pid, "Uid:")? == vec![1000; 4],
        "uids {:?}",
        status_ids(pid, "Uid:")?
    );
    ensure!(
        status_ids(pid, "Gid:")? == vec![1000; 4],
        "gids {:?}",
        status_ids(pid, "Gid:")?
    );
    // The monitor is detached from criusd; the sandbox is its child.
    ensure!(status_ids(monitor, "PPid:")? != vec![daemon.pid().context("no criusd")?]);
    ensure!(status_ids(pid, "PPid:")? == vec![u32::try_from(monitor)?]);
    // Hostname and sysctls, seen from inside the pod's namespaces.
    ensure!(nsenter(pid, "-u", &["hostname"])? == "userns");
    ensure!(
        nsenter(
            pid,
            "-n",
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        )? == "80"
    );
    ensure!(nsenter(pid, "-i", &["cat", "/proc/sys/kernel/shmmni"])? == "1234");
    // The pod's cgroup namespace is rooted at the pod cgroup.
    let cgroups = nsenter(pid, "-C", &["cat", &format!("/proc/{pid}/cgroup")])?;
    ensure!(
        cgroups.lines().all(|l| l.ends_with(":/")),
        "cgroups seen in the pod: {cgroups}"
    );
    ensure!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")?.trim() != "80"
    );
    // setgroups stays allowed for the pod's containers.
    ensure!(std::fs::read_to_string(format!("/proc/{pid}/setgroups"))?.trim() == "allow");

    let netns = PathBuf::from(info["netns"].as_str().context("no netns")?);
    ensure!(inode(&netns.display().to_string())? == inode(&format!("/proc/{pid}/ns/net"))?);
    let dir = PathBuf::from(info["podFilesDir"].as_str().context("no pod files dir")?);
    ensure!(std::fs::read_to_string(dir.join("hostname"))? == "userns\n");
    let resolv = std::fs::read_to_string(dir.join("resolv.conf"))?;
    ensure!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("ndots:5"),
        "{resolv}"
    );
    // Host root's, 1777: the containers get it through a bind idmapped with the pod's mapping,
    // which shows it as the pod's root inside.
    let pod_dir = PathBuf::from(info["podDir"].as_str().context("no pod dir")?);
    let shm = std::fs::metadata(pod_dir.join("shm"))?;
    ensure!(
        shm.uid() == 0 && shm.mode() & 0o7777 == 0o1777,
        "shm owned by {} mode {:o}",
        shm.uid(),
        shm.mode()
    );
    ensure!(!cgroup_dirs(&id).is_empty(), "no pod cgroup");
    for cg in cgroup_dirs(&id) {
        // In a v2 hierarchy the sandbox sits in the pod cgroup's `sandbox` leaf, so that the
        // pod cgroup can enable controllers for its containers.
        let cg = if cg.join("cgroup.controllers").exists() {
            cg.join("sandbox")
        } else {
            cg
        };
        let procs = std::fs::read_to_string(cg.join("cgroup.procs"))?;
        ensure!(
            procs.lines().any(|l| l == pid.to_string()),
            "sandbox not in {}",
            cg.display()
        );
    }

    // Stop: not ready, netns released; idempotent.
    for _ in 0..2 {
        daemon
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
    }
    let (status, _) = self::status(&mut daemon, &id).await?;
    ensure!(status.state == PodSandboxState::SandboxNotready as i32);
    ensure!(!alive(pid), "the sandbox survived StopPodSandbox");
    let (_, info) = self::status(&mut daemon, &id).await?;
    ensure!(info["sandboxExit"]["code"] == 137, "{info}");
    ensure!(!netns.exists(), "the netns pin survived StopPodSandbox");
    for _ in 0..2 {
        daemon
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
    }
    let gone = daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await;
    ensure!(
        matches!(gone, Err(ref s) if s.code() == tonic::Code::NotFound),
        "{gone:?}"
    );
    assert_gone(&daemon, &[(id, monitor, pid)])
}

#[tokio::test]
async fn plain_and_host_network_pods() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let started = Instant::now();
    let mut plain = config("plain");
    plain.linux.get_or_insert_default().resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    });
    let plain = run(&mut daemon, plain).await?;
    eprintln!(
        "RunPodSandbox without a user namespace: {:?}",
        started.elapsed()
    );
    let mut host = config("hostnet");
    namespace_options(&mut host).network = NamespaceMode::Node.into();
    let host = run(&mut daemon, host).await?;
    // A kubelet-style mapping (65536-aligned above 65535) works as well.
    let kubelet = run(
        &mut daemon,
        with_userns(config("kubelet"), 65536 * 5, 65536),
    )
    .await?;

    let memory = Path::new("/sys/fs/cgroup/memory/crius").join(format!("crius-{plain}"));
    let cpu = Path::new("/sys/fs/cgroup/cpu/crius").join(format!("crius-{plain}"));
    if memory.exists() && cpu.exists() {
        let read = |p: PathBuf| std::fs::read_to_string(p).map(|v| v.trim().to_owned());
        ensure!(read(memory.join("memory.limit_in_bytes"))? == (128u64 << 20).to_string());
        ensure!(read(cpu.join("cpu.cfs_quota_us"))? == "50000");
        ensure!(read(cpu.join("cpu.cfs_period_us"))? == "100000");
    }
    let mut seen = Vec::new();
    for id in [&plain, &host, &kubelet] {
        let (status, info) = status(&mut daemon, id).await?;
        ensure!(
            status.state == PodSandboxState::SandboxReady as i32,
            "{id} not ready"
        );
        seen.push((
            id.clone(),
            pid_of(&info, "monitorPid")?,
            pid_of(&info, "sandboxPid")?,
            info,
        ));
    }
    let (_, _, pid, info) = &seen[0];
    // The monitor protocol: one JSON line each way, versioned.
    let dir = PathBuf::from(info["podDir"].as_str().context("no pod dir")?);
    let reply = monitor_request(&dir, r#"{"version":99,"body":{"type":"status"}}"#)?;
    // A refusal keeps its kind: a request the monitor cannot take is invalid.
    ensure!(
        reply["result"]["Err"]["kind"] == "invalid"
            && reply["result"]["Err"]["message"]
                .as_str()
                .is_some_and(|e| e.contains("99")),
        "{reply}"
    );
    let reply = monitor_request(&dir, r#"{"version":1,"body":{"type":"status"}}"#)?;
    ensure!(reply["result"]["Ok"]["sandbox_pid"] == *pid, "{reply}");
    ensure!(inode(&format!("/proc/{pid}/ns/user"))? == inode("/proc/self/ns/user")?);
    ensure!(inode(&format!("/proc/{pid}/ns/net"))? != inode("/proc/self/ns/net")?);
    ensure!(status_ids(*pid, "Uid:")? == vec![0; 4]);
    let (_, _, pid, info) = &seen[1];
    ensure!(inode(&format!("/proc/{pid}/ns/net"))? == inode("/proc/self/ns/net")?);
    ensure!(
        info["netns"].is_null(),
        "a host-network pod has no pinned netns"
    );
    let (_, _, pid, _) = &seen[2];
    ensure!(map_of(*pid, "uid_map")? == vec![vec![0, 65536 * 5, 65536]]);
    ensure!(status_ids(*pid, "Uid:")? == vec![65536 * 5; 4]);

    // List filters: id prefix, state, label selector; and the streaming variant.
    let list = |filter: PodSandboxFilter| ListPodSandboxRequest {
        filter: Some(filter),
    };
    let all = daemon
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?;
    ensure!(all.into_inner().items.len() == 3);
    let by_label = daemon
        .runtime
        .list_pod_sandbox(list(PodSandboxFilter {
            label_selector: BTreeMap::from([("app".into(), "hostnet".into())]),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .items;
    ensure!(by_label.len() == 1 && by_label[0].id == host);
    let by_id = daemon
        .runtime
        .list_pod_sandbox(list(PodSandboxFilter {
            id: plain[..12].into(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .items;
    ensure!(by_id.len() == 1 && by_id[0].id == plain);
    daemon
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: kubelet.clone(),
        })
        .await?;
    let not_ready = daemon
        .runtime
        .list_pod_sandbox(list(PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxNotready.into(),
            }),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .items;
    ensure!(not_ready.len() == 1 && not_ready[0].id == kubelet);
    let mut stream = daemon
        .runtime
        .stream_pod_sandboxes(StreamPodSandboxesRequest::default())
        .await?
        .into_inner();
    let mut streamed = 0;
    while let Some(batch) = stream.message().await? {
        streamed += batch.pod_sandboxes.len();
    }
    ensure!(streamed == 3);

    let config = daemon
        .runtime
        .runtime_config(RuntimeConfigRequest::default())
        .await?
        .into_inner();
    ensure!(config.linux.map(|l| l.cgroup_driver) == Some(CgroupDriver::Cgroupfs as i32));
    daemon
        .runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: plain.clone(),
            overhead: None,
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                cpu_shares: 512,
                ..Default::default()
            }),
        })
        .await?;
    // cgroup v1 on this machine: the limits of RunPodSandbox, then of the update.
    let memory = Path::new("/sys/fs/cgroup/memory/crius").join(format!("crius-{plain}"));
    let cpu = Path::new("/sys/fs/cgroup/cpu/crius").join(format!("crius-{plain}"));
    if memory.exists() && cpu.exists() {
        let read = |p: PathBuf| std::fs::read_to_string(p).map(|v| v.trim().to_owned());
        ensure!(read(memory.join("memory.limit_in_bytes"))? == (256u64 << 20).to_string());
        ensure!(read(cpu.join("cpu.shares"))? == "512");
        // 0 in an update means "leave alone", as with the OCI runtimes.
        ensure!(read(cpu.join("cpu.cfs_quota_us"))? == "50000");
    }

    let mut pods = Vec::new();
    for (id, monitor, sandbox, _) in seen {
        stop_and_remove(&mut daemon, &id).await?;
        pods.push((id, monitor, sandbox));
    }
    assert_gone(&daemon, &pods)
}

#[tokio::test]
async fn invalid_requests_are_refused() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let map = |c, h, l| IdMapping {
        host_id: h,
        container_id: c,
        length: l,
    };
    let userns = |mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>| {
        let mut c = config("bad");
        namespace_options(&mut c).userns_options = Some(UserNamespace {
            mode: mode.into(),
            uids,
            gids,
        });
        c
    };
    let ok = || vec![map(0, 1000, 65536)];
    let mut cases: Vec<(&str, PodSandboxConfig)> = vec![
        (
            "no metadata",
            PodSandboxConfig {
                metadata: None,
                ..config("x")
            },
        ),
        (
            "two uid ranges",
            userns(
                NamespaceMode::Pod,
                vec![map(0, 1000, 10), map(10, 5000, 10)],
                ok(),
            ),
        ),
        (
            "two gid ranges",
            userns(
                NamespaceMode::Pod,
                ok(),
                vec![map(0, 1000, 10), map(10, 5000, 10)],
            ),
        ),
        ("no uid range", userns(NamespaceMode::Pod, vec![], ok())),
        (
            "root unmapped",
            userns(NamespaceMode::Pod, vec![map(1, 1000, 10)], ok()),
        ),
        (
            "zero length",
            userns(NamespaceMode::Pod, ok(), vec![map(0, 1000, 0)]),
        ),
        (
            "overflow",
            userns(NamespaceMode::Pod, vec![map(0, u32::MAX - 5, 10)], ok()),
        ),
        (
            "mode CONTAINER",
            userns(NamespaceMode::Container, ok(), ok()),
        ),
        ("mode TARGET", userns(NamespaceMode::Target, ok(), ok())),
        (
            "NODE with mappings",
            userns(NamespaceMode::Node, ok(), ok()),
        ),
    ];
    for field in ["name", "uid", "namespace"] {
        let mut c = config("x");
        if let Some(m) = c.metadata.as_mut() {
            match field {
                "name" => m.name.clear(),
                "uid" => m.uid.clear(),
                _ => m.namespace.clear(),
            }
        }
        cases.push(("empty metadata field", c));
    }
    let mut group_only = config("x");
    if let Some(sc) = group_only
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.run_as_group = Some(Int64Value { value: 1000 });
    }
    cases.push(("run_as_group without run_as_user", group_only));
    let mut long_name = config("x");
    long_name.hostname = "h".repeat(65);
    cases.push(("hostname too long", long_name));
    let mut node_sysctl = config("x");
    node_sysctl.linux.get_or_insert_default().sysctls =
        BTreeMap::from([("vm.swappiness".into(), "1".into())]);
    cases.push(("a sysctl of the whole node", node_sysctl));

    for (what, config) in cases {
        let result = daemon
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await;
        match result {
            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                ensure!(s.message().contains("config."), "{what}: {}", s.message());
            }
            other => bail!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    // criusd keeps serving, and nothing half-made is left.
    daemon.runtime.version(VersionRequest::default()).await?;
    let list = daemon
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?;
    ensure!(list.into_inner().items.is_empty());
    let pods_dir = daemon.paths.state.join("pods");
    ensure!(
        std::fs::read_dir(&pods_dir)?.next().is_none(),
        "pod dirs left"
    );
    // A pod of the same name works afterwards.
    let id = run(&mut daemon, config("bad")).await?;
    let again = daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config("bad")),
            runtime_handler: String::new(),
        })
        .await;
    ensure!(
        matches!(again, Err(ref s) if s.code() == tonic::Code::AlreadyExists),
        "{again:?}"
    );
    // The refused pod's monitor started while its record was being committed: it is gone.
    let dirs: Vec<_> = std::fs::read_dir(&pods_dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    ensure!(
        dirs == [std::ffi::OsString::from(&id)],
        "pod dirs: {dirs:?}"
    );
    stop_and_remove(&mut daemon, &id).await
}

#[tokio::test]
async fn pod_survives_criusd_kill_and_monitor_kill_is_reported() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let survivor = run(&mut daemon, with_userns(config("survivor"), 1000, 100_000)).await?;
    // A user-namespaced victim: its sandbox changes credentials, which clears the parent-death
    // signal unless it is armed again.
    let victim = run(&mut daemon, with_userns(config("victim"), 65536 * 3, 65536)).await?;
    let (_, info) = status(&mut daemon, &survivor).await?;
    let sandbox = pid_of(&info, "sandboxPid")?;
    let monitor = pid_of(&info, "monitorPid")?;
    let (_, victim_info) = status(&mut daemon, &victim).await?;
    let victim_monitor = pid_of(&victim_info, "monitorPid")?;
    let victim_sandbox = pid_of(&victim_info, "sandboxPid")?;

    daemon.signal_and_wait(Signal::SIGKILL)?;
    ensure!(alive(monitor) && alive(sandbox), "the pod died with criusd");
    daemon.restart().await?;
    let (status_after, info_after) = status(&mut daemon, &survivor).await?;
    ensure!(status_after.id == survivor);
    ensure!(status_after.state == PodSandboxState::SandboxReady as i32);
    ensure!(pid_of(&info_after, "sandboxPid")? == sandbox);

    kill(Pid::from_raw(victim_monitor), Signal::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, _) = status(&mut daemon, &victim).await?;
        if s.state == PodSandboxState::SandboxNotready as i32 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the pod stayed ready without its monitor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(victim_sandbox) {
        ensure!(
            Instant::now() < deadline,
            "the sandbox outlived its monitor"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A sandbox that dies on its own: its monitor records the exit, the pod is not ready.
    let dies = run(&mut daemon, config("dies")).await?;
    let (_, info) = status(&mut daemon, &dies).await?;
    let dies_pid = pid_of(&info, "sandboxPid")?;
    let dies_monitor = pid_of(&info, "monitorPid")?;
    kill(Pid::from_raw(dies_pid), Signal::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, info) = status(&mut daemon, &dies).await?;
        if s.state == PodSandboxState::SandboxNotready as i32 && info["sandboxExit"]["code"] == 137
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the sandbox's death went unnoticed: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(alive(dies_monitor), "the monitor must outlive its sandbox");
    stop_and_remove(&mut daemon, &dies).await?;
    assert_gone(&daemon, &[(dies, dies_monitor, dies_pid)])?;
    // A restart keeps the pod without a monitor, not ready.
    daemon.restart().await?;
    let (s, _) = status(&mut daemon, &victim).await?;
    ensure!(s.state == PodSandboxState::SandboxNotready as i32);
    stop_and_remove(&mut daemon, &victim).await?;
    stop_and_remove(&mut daemon, &survivor).await?;
    assert_gone(
        &daemon,
        &[
            (victim, victim_monitor, victim_sandbox),
            (survivor, monitor, sandbox),
        ],
    )
}

#[tokio::test]
async fn twenty_pods_concurrently() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut client = daemon.runtime.clone();
        let config = if i % 2 == 0 {
            with_userns(config(&format!("pod-{i}")), 65536 * (i + 2), 65536)
        } else {
            config(&format!("pod-{i}"))
        };
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let id = client
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await
                .map(|r| r.into_inner().pod_sandbox_id);
            (id, t.elapsed())
        }));
    }
    let mut ids = Vec::new();
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for task in tasks {
        let (id, took) = task.await?;
        match id {
            Ok(id) => ids.push(id),
            Err(e) => failures.push(e.to_string()),
        }
        times.push(took);
    }
    times.sort();
    eprintln!(
        "20 concurrent RunPodSandbox: all done in {:?}; per call p50 {:?}, max {:?}",
        started.elapsed(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let mut pods = Vec::new();
    for id in &ids {
        let (s, info) = status(&mut daemon, id).await?;
        ensure!(
            s.state == PodSandboxState::SandboxReady as i32,
            "{id} not ready"
        );
        pods.push((
            id.clone(),
            pid_of(&info, "monitorPid")?,
            pid_of(&info, "sandboxPid")?,
        ));
    }
    ensure!(failures.is_empty(), "failed: {failures:#?}");
    for (id, _, _) in &pods {
        stop_and_remove(&mut daemon, id).await?;
    }
    let net = daemon.network.as_ref().context("no test network")?;
    ensure!(
        net.attached_links().is_empty() && net.allocated_ips().is_empty(),
        "veths {:?} or IPs {:?} left behind",
        net.attached_links(),
        net.allocated_ips()
    );
    assert_gone(&daemon, &pods)
}

#[tokio::test]
async fn status_reports_userns_features() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let status = daemon
        .runtime
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let handler = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .context("no default handler")?;
    let features = handler.features.context("no features")?;
    let config: serde_json::Value =
        serde_json::from_str(status.info.get("config").context("no config")?)?;
    // This machine (Linux 6.3+) supports idmapped mounts on tmpfs and the test's filesystems.
    ensure!(
        features.user_namespaces,
        "probe: {}",
        config["idmappedMounts"]
    );
    ensure!(features.recursive_read_only_mounts);
    ensure!(config["cgroupDriver"] == "cgroupfs");
    // A user namespace on the host network works wherever user namespaces do (KEP-5607).
    ensure!(
        status
            .features
            .map(|f| f.user_namespaces_host_network)
            .unwrap_or(false)
    );
    Ok(())
}

#[tokio::test]
async fn failed_sandbox_rolls_back_and_host_namespaces_work() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    // The sandbox process fails while setting itself up: nothing may be left.
    let mut broken = with_userns(config("broken"), 1000, 100_000);
    broken.linux.get_or_insert_default().sysctls = BTreeMap::from([(
        "net.ipv4.ip_unprivileged_port_start".into(),
        "nonsense".into(),
    )]);
    let result = daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(broken),
            runtime_handler: String::new(),
        })
        .await;
    match result {
        Err(s) if s.code() == tonic::Code::Internal => {
            ensure!(s.message().contains("sysctl"), "{}", s.message());
        }
        other => bail!("expected Internal, got {other:?}"),
    }
    let list = daemon
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?;
    ensure!(list.into_inner().items.is_empty());
    ensure!(
        std::fs::read_dir(daemon.paths.state.join("pods"))?
            .next()
            .is_none()
    );
    assert_gone(&daemon, &[])?;

    // Every host namespace: network, PID and IPC NODE.
    let mut host = config("all-host");
    let ns = namespace_options(&mut host);
    ns.network = NamespaceMode::Node.into();
    ns.pid = NamespaceMode::Node.into();
    ns.ipc = NamespaceMode::Node.into();
    let id = run(&mut daemon, host).await?;
    let (s, info) = status(&mut daemon, &id).await?;
    ensure!(s.state == PodSandboxState::SandboxReady as i32);
    let pid = pid_of(&info, "sandboxPid")?;
    let monitor = pid_of(&info, "monitorPid")?;
    for ns in ["net", "pid", "ipc", "user"] {
        ensure!(
            inode(&format!("/proc/{pid}/ns/{ns}"))? == inode(&format!("/proc/self/ns/{ns}"))?,
            "{ns} is not the host's"
        );
    }
    ensure!(inode(&format!("/proc/{pid}/ns/uts"))? != inode("/proc/self/ns/uts")?);
    let dir = PathBuf::from(info["podDir"].as_str().context("no pod dir")?);
    ensure!(
        !dir.join("shm").exists(),
        "a pod sharing the host IPC has its own shm"
    );
    // kubelet sends cluster DNS for hostNetwork pods with ClusterFirstWithHostNet: it is used.
    let files = PathBuf::from(info["podFilesDir"].as_str().context("no pod files dir")?);
    let resolv = std::fs::read_to_string(files.join("resolv.conf"))?;
    ensure!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    stop_and_remove(&mut daemon, &id).await?;
    assert_gone(&daemon, &[(id, monitor, pid)])
}

#[tokio::test]
async fn systemd_cgroup_driver_without_systemd_is_refused() -> anyhow::Result<()> {
    if Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    let result = Criusd::start_with(crius_tests::harness::Options {
        config: "cgroup_driver = \"systemd\"\n".into(),
        ..Default::default()
    })
    .await;
    match result {
        Ok(_) => bail!("criusd started with the systemd cgroup driver and no systemd"),
        Err(e) => ensure!(format!("{e:#}").contains("cgroup_driver"), "{e:#}"),
    }
    Ok(())
}

/// A criusd whose `--root` is an overlay mount (where idmapped mounts fail), torn down on drop.
struct OverlayRoot {
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Drop for OverlayRoot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = nix::mount::umount2(
            &self.dir.path().join("root"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

#[tokio::test]
async fn userns_pod_on_a_root_without_idmapped_mounts_is_a_precondition() -> anyhow::Result<()> {
    let mut world = OverlayRoot {
        dir: tempfile::Builder::new().prefix("crius-test-").tempdir()?,
        child: None,
    };
    let dir = world.dir.path().to_path_buf();
    for d in ["lower", "upper", "work", "root"] {
        std::fs::create_dir(dir.join(d))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.join("lower").display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &dir.join("root"),
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )?;
    let paths = crius_tests::harness::Paths::under(&dir);
    world.child = Some(crius_tests::harness::spawn(
        &Criusd::base_args(&paths),
        &paths.log,
    )?);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut runtime = loop {
        if let Ok(channel) = crius_tests::harness::connect(&paths.socket).await {
            let mut client = runtime_service_client::RuntimeServiceClient::new(channel);
            if client.version(VersionRequest::default()).await.is_ok() {
                break client;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "criusd did not start: {}",
            std::fs::read_to_string(&paths.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let status = runtime
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let features = status
        .runtime_handlers
        .first()
        .and_then(|h| h.features)
        .context("no handler features")?;
    ensure!(!features.user_namespaces && !features.recursive_read_only_mounts);
    let info = status.info.get("config").context("no config")?;
    ensure!(info.contains("mount_setattr"), "{info}");

    let result = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(with_userns(config("no-idmap"), 1000, 100_000)),
            runtime_handler: String::new(),
        })
        .await;
    match result {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            let root = paths.root.display().to_string();
            ensure!(s.message().contains(&root), "{}", s.message());
        }
        other => bail!("expected FailedPrecondition, got {other:?}"),
    }
    let list = runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await?;
    ensure!(list.into_inner().items.is_empty());
    Ok(())
}

/// Anonymous (private, written) memory, in KiB, of `pid`'s mappings of the file `binary`.
fn anonymous_kib_of_binary(pid: i32, binary: &Path) -> anyhow::Result<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let binary = binary.display().to_string();
    let mut in_binary = false;
    let mut total = 0;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            if in_binary {
                total += kib.trim().trim_end_matches(" kB").parse::<u64>()?;
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|f| f.contains('-'))
        {
            // A mapping's header: "start-end perms offset dev inode [path]".
            in_binary = line.split_whitespace().nth(5) == Some(binary.as_str());
        }
    }
    Ok(total)
}

/// Per-pod memory: the monitor and the sandbox run criusd's own image, and the pages of that
/// image stay the file's, shared by every pod. A position-independent build relocated
/// `.data.rel.ro` into private copies in each monitor (~800 KiB per pod in a release build).
#[tokio::test]
async fn pod_processes_keep_the_binary_shared() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let id = run(&mut daemon, config("shared-pages")).await?;
    let (_, info) = status(&mut daemon, &id).await?;
    let binary = std::fs::canonicalize(crius_tests::harness::criusd_binary())?;
    let monitor = pid_of(&info, "monitorPid")?;
    let sandbox = pid_of(&info, "sandboxPid")?;
    let written = (
        anonymous_kib_of_binary(monitor, &binary)?,
        anonymous_kib_of_binary(sandbox, &binary)?,
    );
    stop_and_remove(&mut daemon, &id).await?;
    eprintln!(
        "private pages of {} (KiB): monitor, sandbox {written:?}",
        binary.display()
    );
    // What stays private is `.data` and `.bss` written at run time: tens of KiB.
    ensure!(
        written.0 <= 256 && written.1 <= 256,
        "monitor and sandbox hold {written:?} KiB of private copies of {}",
        binary.display()
    );
    Ok(())
}

/// The spare monitors of the criusd `daemon` (pid): processes `… monitor --spare` that lead a
/// session of their own (not the short-lived process criusd started, which forks the spare)
/// and whose stdin is a pipe the daemon holds the other end of.
fn spares_of(daemon: u32) -> Vec<i32> {
    let held: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{daemon}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .map(|target| target.display().to_string())
                .filter(|target| target.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if words.get(1..3) != Some(&[b"monitor".as_slice(), b"--spare".as_slice()][..]) {
            continue;
        }
        let stdin = std::fs::read_link(entry.path().join("fd/0"))
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let leads_session = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let fields: Vec<String> = stat[stat.rfind(')')? + 2..]
                    .split(' ')
                    .map(str::to_owned)
                    .collect();
                fields.get(3).map(|sid| *sid == pid.to_string())
            })
            .unwrap_or(false);
        if held.contains(&stdin) && leads_session && alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Waits up to 10 s for the daemon's one spare monitor other than `not`.
async fn spare_other_than(daemon: u32, not: Option<i32>) -> anyhow::Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spares = spares_of(daemon);
        ensure!(spares.len() <= 1, "more than one spare monitor: {spares:?}");
        if let Some(&pid) = spares.first()
            && Some(pid) != not
        {
            return Ok(pid);
        }
        ensure!(Instant::now() < deadline, "no spare monitor was started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pods_start_on_the_spare_monitor_which_ends_with_its_daemon() -> anyhow::Result<()> {
    let mut daemon = Criusd::start().await?;
    let pid = daemon.pid().context("criusd pid")?;
    let spare = spare_other_than(pid, None).await?;
    // The spare runs detached, in a session of its own, before any pod exists.
    let stat = std::fs::read_to_string(format!("/proc/{spare}/stat"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
        .split(' ')
        .collect();
    ensure!(
        fields[3] == spare.to_string(),
        "the spare leads its session: {stat}"
    );
    ensure!(
        fields[1] != pid.to_string(),
        "the spare is not criusd's child: {stat}"
    );

    let id = run(
        &mut daemon,
        with_userns(config("on-spare"), 65536 * 5, 65536),
    )
    .await?;
    let (pod, info) = status(&mut daemon, &id).await?;
    ensure!(pod.state == PodSandboxState::SandboxReady as i32);
    let monitor = pid_of(&info, "monitorPid")?;
    let sandbox = pid_of(&info, "sandboxPid")?;
    ensure!(
        monitor == spare,
        "the pod's monitor {monitor} is not the spare {spare}"
    );
    // Its stdin no longer leads to criusd, its stderr is the pod's monitor log.
    ensure!(std::fs::read_link(format!("/proc/{monitor}/fd/0"))? == Path::new("/dev/null"));
    let log = daemon
        .paths
        .state
        .join("pods")
        .join(&id)
        .join("monitor.log");
    ensure!(std::fs::read_link(format!("/proc/{monitor}/fd/2"))? == log);
    ensure!(
        std::fs::read_to_string(&log)?.contains(&format!("monitoring pod {id}")),
        "the monitor logs to the pod's log"
    );
    // The next pod's spare is started, and a second pod runs on it.
    let next = spare_other_than(pid, Some(spare)).await?;
    let second = run(&mut daemon, config("second-spare")).await?;
    let (_, info) = status(&mut daemon, &second).await?;
    ensure!(pid_of(&info, "monitorPid")? == next);
    let second_sandbox = pid_of(&info, "sandboxPid")?;
    let third = spare_other_than(pid, Some(next)).await?;

    // criusd dies: its spare ends (no pod to serve), the pods' monitors go on.
    daemon.signal_and_wait(Signal::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(third) {
        ensure!(Instant::now() < deadline, "the spare outlived its daemon");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(alive(monitor) && alive(sandbox) && alive(next) && alive(second_sandbox));
    daemon.restart().await?;
    let pid = daemon.pid().context("criusd pid")?;
    // A spare that died while idle: the pod starts on a monitor of its own.
    let dead = spare_other_than(pid, None).await?;
    kill(Pid::from_raw(dead), Signal::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(dead) {
        ensure!(Instant::now() < deadline, "the spare did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = run(&mut daemon, config("no-spare")).await?;
    let (pod, info) = status(&mut daemon, &fresh).await?;
    ensure!(pod.state == PodSandboxState::SandboxReady as i32);
    let fresh_monitor = pid_of(&info, "monitorPid")?;
    let fresh_sandbox = pid_of(&info, "sandboxPid")?;
    ensure!(fresh_monitor != dead);
    for (monitor, pod) in [(monitor, &id), (fresh_monitor, &fresh)] {
        ensure!(std::fs::read_link(format!("/proc/{monitor}/cwd"))? == Path::new("/"));
        ensure!(
            std::fs::read_link(format!("/proc/{monitor}/fd/1"))? == Path::new("/dev/null"),
            "the monitor of {pod} still writes to criusd"
        );
    }
    spare_other_than(pid, Some(dead)).await?;
    for pod in [&id, &second, &fresh] {
        stop_and_remove(&mut daemon, pod).await?;
    }
    assert_gone(
        &daemon,
        &[
            (id, monitor, sandbox),
            (second, next, second_sandbox),
            (fresh, fresh_monitor, fresh_sandbox),
        ],
    )
}
