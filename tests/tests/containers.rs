//! Containers end to end: a real criusd, real pod monitors and libcontainer, busybox images
//! from a test registry; checked through CRI, the CRI log files and the host's /proc.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::{HOST_ID, MAP_LEN, pod_config, setup};

/// Every file under `dir` with its owner, for before/after comparisons.
fn owners(dir: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                out.push((p.clone(), m.uid(), m.gid()));
                if m.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn plain_container_runs_logs_and_exits_with_its_code() {
    let mut env = setup(false).await;
    let pod = env.pod("plain", false).await;
    let mut config = env.container_config(
        "plain",
        "echo hello; echo oops >&2; printf 'no newline'; exit 3",
    );
    config.envs = vec![KeyValue {
        key: "RAW".into(),
        value: vec![b'a', 0xff, b'b'],
    }];
    let started = Instant::now();
    let id = env.run(&pod, config).await;
    eprintln!("create+start (no user namespace): {:?}", started.elapsed());
    let s = env.wait_exit(&id, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 3);
    assert_eq!(s.reason, "Error");
    assert!(s.started_at > 0 && s.finished_at >= s.started_at);
    assert_eq!(s.image_id.len(), 71, "image id {}", s.image_id);
    assert!(
        s.image_ref.contains("@sha256:"),
        "repository digest {}",
        s.image_ref
    );
    assert!(s.log_path.ends_with("plain.log"));
    assert_eq!(s.labels.get("app").map(String::as_str), Some("plain"));
    let lines = env.log_lines("plain");
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "no newline".into())),
        "{lines:?}"
    );

    let list = env
        .daemon
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.0.clone(),
                ..ContainerFilter::default()
            }),
        })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, ContainerState::ContainerExited as i32);

    for _ in 0..2 {
        env.daemon
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("remove is idempotent");
    }
    let err = env
        .daemon
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let pod_dir = env.daemon.paths.state.join("pods").join(&pod.0);
    assert!(!pod_dir.join("containers").join(&id).exists());
}

#[tokio::test]
async fn userns_root_container_sees_its_mapping_and_no_layer_changes_owner() {
    let mut env = setup(false).await;
    let layers = env.daemon.paths.root.join("layers");
    let before = owners(&layers);
    assert!(!before.is_empty());
    let pod = env.pod("userns", true).await;
    let script = "cat /proc/self/uid_map; id -u; stat -c %u:%g /bin/busybox; \
                  echo data > /written && cat /written; touch /etc/new-file && echo touched; \
                  cat /etc/hostname; sleep 30";
    let started = Instant::now();
    let id = env.run(&pod, env.container_config("userns", script)).await;
    eprintln!("create+start (user namespace): {:?}", started.elapsed());
    // Wait for the output, then look at the process from the host.
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.stdout("userns").len() < 6 {
        assert!(
            Instant::now() < deadline,
            "output: {:?}",
            env.log_lines("userns")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = env.stdout("userns");
    let map: Vec<&str> = out[0].split_whitespace().collect();
    assert_eq!(map, ["0", &HOST_ID.to_string(), &MAP_LEN.to_string()]);
    assert_eq!(out[1], "0");
    assert_eq!(out[2], "0:0", "layer files appear owned by the pod's root");
    assert_eq!(out[3], "data");
    assert_eq!(out[4], "touched");
    assert_eq!(out[5], "userns");

    let s = env.status(&id).await;
    assert_eq!(s.state, ContainerState::ContainerRunning as i32);
    let user = s.user.and_then(|u| u.linux).expect("user");
    assert_eq!((user.uid, user.gid), (0, 0));
    let info = env
        .daemon
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner()
        .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("info json");
    let pid = v["pid"].as_i64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(HOST_ID.to_string().as_str()),
        "the container runs as the mapped host uid"
    );
    // Files the container wrote belong to the mapped root on the host.
    let upper = env
        .daemon
        .paths
        .root
        .join("containers")
        .join(&pod.0)
        .join(&id)
        .join("upper");
    let written = std::fs::metadata(upper.join("written")).expect("written in upper");
    assert_eq!((written.uid(), written.gid()), (HOST_ID, HOST_ID));

    // Stop: sh as PID 1 of nothing ignores SIGTERM; the timeout escalates to SIGKILL.
    let t = Instant::now();
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .expect("stop");
    assert!(t.elapsed() < Duration::from_secs(10));
    let s = env.status(&id).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_ne!(s.exit_code, 0);
    assert_eq!(s.reason, "Error");

    env.daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("remove pod");
    let list = env
        .daemon
        .runtime
        .list_containers(ListContainersRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .containers;
    assert!(list.is_empty(), "the pod's containers went with it");
    let after = owners(&layers);
    assert_eq!(before, after, "no layer file changed owner");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&pod.0), "no mount of the pod is left");
}

/// A read-only root filesystem refuses writes, and so do the files crius binds into it
/// (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`: the pod's own copies, which live on the
/// host); a writable one leaves them writable. With and without a pod user namespace.
#[tokio::test]
async fn readonly_rootfs_refuses_writes() {
    let mut env = setup(false).await;
    let script = "for f in /x /etc/hostname /etc/hosts /etc/resolv.conf; do \
                  if echo '# x' >> $f 2>/dev/null; then echo $f writable; \
                  else echo $f readonly; fi; done";
    for userns in [false, true] {
        let pod = env
            .pod(if userns { "ro-userns" } else { "ro" }, userns)
            .await;
        for readonly in [true, false] {
            let name = format!("{}-{readonly}", if userns { "u" } else { "p" });
            let mut config = env.container_config(&name, script);
            config
                .linux
                .get_or_insert_default()
                .security_context
                .get_or_insert_default()
                .readonly_rootfs = readonly;
            let id = env.run(&pod, config).await;
            env.wait_exit(&id, Duration::from_secs(20)).await;
            let word = if readonly { "readonly" } else { "writable" };
            assert_eq!(
                env.stdout(&name),
                ["/x", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"]
                    .map(|f| format!("{f} {word}")),
                "{name}"
            );
        }
    }
}

/// Root in a user-namespaced pod binds port 80 (its network namespace belongs to the pod's user
/// namespace) and serves the host, while the host sees only the mapped uid.
#[tokio::test]
async fn userns_root_serves_port_80() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut env = setup(false).await;
    let pod = env.pod("web", true).await;
    let config = env.container_config(
        "web",
        "mkdir -p /www && echo served-by-pod-root > /www/index.html && exec httpd -f -p 80 -h /www",
    );
    let id = env.run(&pod, config).await;
    let reply = env
        .daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.0.clone(),
            verbose: false,
        })
        .await
        .expect("pod status")
        .into_inner();
    let ip = reply.status.and_then(|s| s.network).expect("network").ip;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        match tokio::net::TcpStream::connect((ip.as_str(), 80)).await {
            Ok(mut conn) => {
                conn.write_all(b"GET / HTTP/1.0\r\n\r\n")
                    .await
                    .expect("send");
                let mut body = String::new();
                conn.read_to_string(&mut body).await.expect("read");
                break body;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{ip}:80: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(body.contains("served-by-pod-root"), "{body}");
    let status = env
        .daemon
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).expect("verbose info");
    let pid = i32::try_from(info["pid"].as_i64().expect("pid")).expect("pid");
    let uids = crius_tests::host::status_ids(pid, "Uid:").expect("uids");
    let map = pod_config("web", true, env.logs.path())
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options)
        .and_then(|n| n.userns_options)
        .expect("userns")
        .uids[0];
    assert!(
        uids.iter().all(|u| *u == map.host_id),
        "httpd runs as host uids {uids:?}, not the mapped {}",
        map.host_id
    );
}

/// The supplementalGroupsPolicy table of Kubernetes: image user 1000 is a member of group
/// 50000 in the image's /etc/group.
#[tokio::test]
async fn supplemental_groups_merge_and_strict_with_and_without_userns() {
    let mut env = setup(true).await;
    for userns in [false, true] {
        let pod = env.pod(&format!("groups-{userns}"), userns).await;
        for (policy, expected) in [
            (SupplementalGroupsPolicy::Merge, vec![3000, 4000, 50000]),
            (SupplementalGroupsPolicy::Strict, vec![3000, 4000]),
        ] {
            let name = format!("g-{userns}-{}", policy.as_str_name().to_lowercase());
            let mut config =
                env.container_config(&name, "id -u; id -g; id -G; echo $HOME; sleep 30");
            let sc = config
                .linux
                .get_or_insert_default()
                .security_context
                .get_or_insert_default();
            sc.run_as_user = Some(Int64Value { value: 1000 });
            sc.run_as_group = Some(Int64Value { value: 3000 });
            sc.supplemental_groups = vec![4000];
            sc.supplemental_groups_policy = policy.into();
            let id = env.run(&pod, config).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            while env.stdout(&name).len() < 4 {
                assert!(Instant::now() < deadline, "{:?}", env.log_lines(&name));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let out = env.stdout(&name);
            let want: Vec<String> = expected.iter().map(|g| g.to_string()).collect();
            assert_eq!(out[0], "1000", "userns {userns} {policy:?}");
            assert_eq!(out[1], "3000", "userns {userns} {policy:?}");
            assert_eq!(out[2], want.join(" "), "userns {userns} {policy:?}");
            assert_eq!(
                out[3], "/home/user-defined-in-image",
                "HOME from the image's passwd"
            );
            let user = env
                .status(&id)
                .await
                .user
                .and_then(|u| u.linux)
                .expect("user");
            assert_eq!((user.uid, user.gid), (1000, 3000));
            let mut groups = user.supplemental_groups.clone();
            groups.sort_unstable();
            assert_eq!(
                groups, expected,
                "status.user.linux, userns {userns} {policy:?}"
            );
            env.daemon
                .runtime
                .stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 0,
                })
                .await
                .expect("stop");
        }
    }
    let status = env
        .daemon
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .expect("status")
        .into_inner();
    assert!(
        status
            .features
            .expect("features")
            .supplemental_groups_policy
    );
}

/// A container outlives criusd (killed with SIGKILL): after a restart it is reported with the
/// same state, and an exit that happened while criusd was down is reported with its code.
#[tokio::test]
async fn containers_survive_a_criusd_crash() {
    let mut env = setup(false).await;
    let pod = env.pod("survive", true).await;
    let long = env
        .run(
            &pod,
            env.container_config("long", "trap '' TERM; while true; do sleep 1; done"),
        )
        .await;
    let short = env
        .run(
            &pod,
            env.container_config(
                "short",
                "while [ ! -e /dev/shm/go ]; do sleep 0.05; done; exit 7",
            ),
        )
        .await;
    let before = env.status(&long).await;
    env.daemon
        .signal_and_wait(nix::sys::signal::Signal::SIGKILL)
        .expect("kill criusd");
    // While criusd is down, let the short container finish.
    let pod_shm = env.daemon.paths.state.join("pods").join(&pod.0).join("shm");
    std::fs::write(pod_shm.join("go"), "x\n").expect("release the short container");
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.daemon.restart().await.expect("restart");
    let after = env.status(&long).await;
    assert_eq!(after.state, ContainerState::ContainerRunning as i32);
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(after.created_at, before.created_at);
    let s = env.wait_exit(&short, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 7);
    // It ignores SIGTERM: the stop escalates to SIGKILL after the timeout.
    let t = Instant::now();
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: long.clone(),
            timeout: 1,
        })
        .await
        .expect("stop after restart");
    assert!(t.elapsed() >= Duration::from_secs(1));
    let s = env.status(&long).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);
}

/// ExecSync joins the pod's user namespace first: a file it creates belongs to the mapped
/// uid on the host, and it sees the pod's mapping and the container's identity.
#[tokio::test]
async fn exec_sync_runs_in_the_pods_user_namespace_with_the_containers_identity() {
    let mut env = setup(true).await;
    let pod = env.pod("exec", true).await;
    let root = env
        .run(&pod, env.container_config("root", "sleep 300"))
        .await;
    let out = env
        .exec(&root, &["cat", "/proc/self/uid_map"], 10)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let map: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        map,
        ["0".to_owned(), HOST_ID.to_string(), MAP_LEN.to_string()]
    );
    let out = env
        .exec(&root, &["touch", "/made-by-exec"], 10)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let upper = env
        .daemon
        .paths
        .root
        .join("containers")
        .join(&pod.0)
        .join(&root)
        .join("upper/made-by-exec");
    let meta = std::fs::metadata(&upper).expect("the file is in the container's upper dir");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (HOST_ID, HOST_ID),
        "owned by the mapped root"
    );
    let out = env
        .exec(&root, &["sh", "-c", "echo out; echo err >&2; exit 5"], 10)
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.stdout.as_slice(), out.stderr.as_slice()),
        (5, &b"out\n"[..], &b"err\n"[..])
    );
    let err = env
        .exec(&root, &["sleep", "5"], 1)
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded);

    let mut config = env.container_config("user", "sleep 300");
    let sc = config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default();
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.run_as_group = Some(Int64Value { value: 3000 });
    sc.supplemental_groups = vec![4000];
    let user = env.run(&pod, config).await;
    let out = env.exec(&user, &["id"], 10).await.expect("exec");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("uid=1000"), "{text}");
    let out = env.exec(&user, &["id", "-G"], 10).await.expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3000 4000 50000"
    );
    // The same user cannot write where the pod's root owns the directory.
    let out = env
        .exec(&user, &["touch", "/etc/nope"], 10)
        .await
        .expect("exec");
    assert_ne!(out.exit_code, 0);
}

/// Capabilities follow the request, for the container and for processes exec'd into it.
/// (seccomp profiles are covered by the security suite.)
#[tokio::test]
async fn capabilities_follow_the_request() {
    let mut env = setup(false).await;
    let pod = env.pod("caps", true).await;
    let script = "touch /f; chown 5 /f && echo chowned || echo denied; sleep 300";
    let default = env
        .run(&pod, env.container_config("caps-default", script))
        .await;
    let mut config = env.container_config("caps-dropped", script);
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .capabilities = Some(Capability {
        drop_capabilities: vec!["CHOWN".into()],
        ..Capability::default()
    });
    let dropped = env.run(&pod, config).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.stdout("caps-default").is_empty() || env.stdout("caps-dropped").is_empty() {
        assert!(Instant::now() < deadline, "no output");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.stdout("caps-default"), ["chowned"]);
    assert_eq!(env.stdout("caps-dropped"), ["denied"]);
    // Exec gets the container's capabilities too.
    let out = env
        .exec(&dropped, &["sh", "-c", "touch /g; chown 5 /g"], 10)
        .await
        .expect("exec");
    assert_ne!(out.exit_code, 0, "exec must not regain CAP_CHOWN");
    let out = env
        .exec(&default, &["sh", "-c", "touch /g; chown 5 /g"], 10)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
}

/// Memory limits are applied to the container cgroup, can be changed live, and an OOM kill is
/// reported as such.
#[tokio::test]
async fn resources_update_and_oom_kill() {
    let mut env = setup(false).await;
    let pod = env.pod("res", false).await;
    let mut config = env.container_config("res", "sleep 300");
    config.linux.get_or_insert_default().resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        ..LinuxContainerResources::default()
    });
    let id = env.run(&pod, config).await;
    let v = env.verbose_info(&id).await;
    let dirs: Vec<PathBuf> = v["cgroupDirs"]
        .as_array()
        .expect("dirs")
        .iter()
        .filter_map(|d| d.as_str().map(PathBuf::from))
        .collect();
    let limit = || crius_tests::env::memory_limit(&dirs);
    assert_eq!(limit(), (64u64 << 20).to_string());
    env.daemon
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                ..LinuxContainerResources::default()
            }),
            ..UpdateContainerResourcesRequest::default()
        })
        .await
        .expect("update");
    assert_eq!(limit(), (96u64 << 20).to_string());
    let reported = env
        .status(&id)
        .await
        .resources
        .and_then(|r| r.linux)
        .expect("resources");
    assert_eq!(
        (reported.memory_limit_in_bytes, reported.cpu_shares),
        (96 << 20, 512)
    );

    let mut config = env.container_config("oom", "tail /dev/zero");
    config.linux.get_or_insert_default().resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        ..LinuxContainerResources::default()
    });
    let oom = env.run(&pod, config).await;
    let s = env.wait_exit(&oom, Duration::from_secs(30)).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137);
}

/// ReopenContainerLog: after the log file is moved away, output goes to a new file.
#[tokio::test]
async fn reopen_container_log() {
    let mut env = setup(false).await;
    let pod = env.pod("reopen", false).await;
    let id = env
        .run(
            &pod,
            env.container_config(
                "reopen",
                "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
            ),
        )
        .await;
    let path = env.logs.path().join("reopen.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.stdout("reopen").is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&path, env.logs.path().join("reopen.log.1")).expect("rotate");
    env.daemon
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect("reopen");
    while env.stdout("reopen").is_empty() {
        assert!(Instant::now() < deadline, "nothing in the reopened log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(env.stdout("reopen")[0].starts_with("line"));
}

/// Unmounts a test tmpfs on drop (also when the test fails).
struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A volume carrying the pod's mapping is bound idmapped: host root's 0400 file is root's in
/// the pod (readable, read-only); the same directory without the mapping is not readable by the
/// pod's root. The pod's own files are idmapped too.
#[tokio::test]
async fn idmapped_volumes_and_pod_files_in_a_userns_pod() {
    let volume = tempfile::Builder::new()
        .prefix("crius-volume-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(
        volume.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    nix::mount::mount(
        Some("tmpfs"),
        volume.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755,size=1m"),
    )
    .expect("mount a tmpfs");
    let _guard = TmpfsGuard(volume.path().to_path_buf());
    // Declared after the volume and its guard: the pod goes first.
    let mut env = setup(false).await;
    let secret = volume.path().join("secret");
    std::fs::write(&secret, "s3cret\n").expect("write");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o400))
        .expect("chmod");
    let before = std::fs::metadata(&secret).expect("stat");

    let pod = env.pod("volumes", true).await;
    let map = IdMapping {
        host_id: HOST_ID,
        container_id: 0,
        length: MAP_LEN,
    };
    let script = "stat -c %u:%g /mapped/secret; cat /mapped/secret; \
                  echo x > /mapped/secret 2>/dev/null && echo writable || echo readonly; \
                  cat /plain/secret >/dev/null 2>&1 && echo readable || echo unreadable; \
                  stat -c %u /etc/hosts; sleep 300";
    let mut config = env.container_config("volumes", script);
    config.mounts = vec![
        Mount {
            container_path: "/mapped".into(),
            host_path: volume.path().display().to_string(),
            readonly: true,
            uid_mappings: vec![map],
            gid_mappings: vec![map],
            ..Mount::default()
        },
        Mount {
            container_path: "/plain".into(),
            host_path: volume.path().display().to_string(),
            readonly: true,
            ..Mount::default()
        },
    ];
    let id = env.run(&pod, config).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.stdout("volumes").len() < 5 {
        assert!(Instant::now() < deadline, "{:?}", env.log_lines("volumes"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.stdout("volumes"),
        ["0:0", "s3cret", "readonly", "unreadable", "0"]
    );
    let s = env.status(&id).await;
    assert_eq!(s.mounts.len(), 2);
    // Another mapping than the pod's is refused, not silently ignored.
    let mut other = env.container_config("other-map", "true");
    let wrong = IdMapping {
        host_id: HOST_ID + 1,
        ..map
    };
    other.mounts = vec![Mount {
        container_path: "/x".into(),
        host_path: volume.path().display().to_string(),
        uid_mappings: vec![wrong],
        gid_mappings: vec![wrong],
        ..Mount::default()
    }];
    let err = env.create(&pod, other).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    env.daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("remove pod");
    let after = std::fs::metadata(&secret).expect("the host file is still there");
    assert_eq!(
        (after.uid(), after.gid(), after.mode(), after.len()),
        (before.uid(), before.gid(), before.mode(), before.len())
    );
    assert_eq!(std::fs::read_to_string(&secret).expect("read"), "s3cret\n");
}

/// pid CONTAINER gives a container its own PID namespace; pid TARGET joins another container's.
#[tokio::test]
async fn container_and_target_pid_namespaces() {
    let mut env = setup(false).await;
    let pod = env.pod("pidns", true).await;
    let pid_mode = |config: &mut ContainerConfig, mode: NamespaceMode, target: &str| {
        config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .namespace_options = Some(NamespaceOption {
            pid: mode.into(),
            target_id: target.into(),
            ..NamespaceOption::default()
        });
    };
    let mut own = env.container_config("own", "echo $$; exec sleep 300");
    pid_mode(&mut own, NamespaceMode::Container, "");
    let own_id = env.run(&pod, own).await;
    let mut joined = env.container_config("joined", "tr '\\0' ' ' < /proc/1/cmdline; echo");
    pid_mode(&mut joined, NamespaceMode::Target, &own_id);
    let joined_id = env.run(&pod, joined).await;
    env.wait_exit(&joined_id, Duration::from_secs(20)).await;
    assert_eq!(env.stdout("own"), ["1"]);
    assert_eq!(env.stdout("joined"), ["sleep 300 "]);
}

/// When a pod monitor dies, its containers die with the sandbox and are reported exited with
/// reason `PodMonitorDied` (never silently Running or forgotten), and RemovePodSandbox still
/// releases what is left: processes, mounts and cgroups.
#[tokio::test]
async fn monitor_death_is_reported_and_cleaned_up() {
    let mut env = setup(false).await;
    let pod = env.pod("orphan", true).await;
    let id = env
        .run(&pod, env.container_config("orphan", "sleep 300"))
        .await;
    let v = env.verbose_info(&id).await;
    let pid = i32::try_from(v["pid"].as_i64().expect("pid")).expect("pid fits");
    let cgroups: Vec<PathBuf> = v["cgroupDirs"]
        .as_array()
        .expect("dirs")
        .iter()
        .filter_map(|d| d.as_str().map(PathBuf::from))
        .filter(|d| d.exists())
        .collect();
    assert!(!cgroups.is_empty());
    let pod_dir = env.daemon.paths.state.join("pods").join(&pod.0);
    let state = env.monitor_state(&pod.0);
    let monitor = i32::try_from(state["monitor_pid"].as_i64().expect("monitor pid")).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the monitor");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = env.status(&id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            assert_eq!(s.reason, "PodMonitorDied", "{s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("remove pod");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            break;
        }
        assert!(Instant::now() < deadline, "the container process survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for dir in &cgroups {
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
    assert!(!pod_dir.exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mountinfo.contains(&pod.0), "no mount of the pod is left");
}

/// Mount propagation host-to-container: a mount made on the host under the volume after the
/// container started shows up in it; the same directory mounted private does not see it.
#[tokio::test]
async fn host_to_container_propagation() {
    let volume = tempfile::Builder::new()
        .prefix("crius-prop-")
        .tempdir()
        .expect("tempdir");
    std::fs::create_dir(volume.path().join("sub")).expect("mkdir");
    let flags = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(
        Some(volume.path()),
        volume.path(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .expect("bind the volume onto itself");
    let _outer = TmpfsGuard(volume.path().to_path_buf());
    nix::mount::mount(
        None::<&str>,
        volume.path(),
        None::<&str>,
        nix::mount::MsFlags::MS_SHARED,
        None::<&str>,
    )
    .expect("make it shared");
    // Declared after the volume and its guard: the pod goes first.
    let mut env = setup(false).await;
    let pod = env.pod("prop", false).await;
    let script = "i=0; while [ ! -e /slave/sub/marker ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
                  [ -e /slave/sub/marker ] && echo slave-sees || echo slave-blind; \
                  [ -e /private/sub/marker ] && echo private-sees || echo private-blind";
    let mut config = env.container_config("prop", script);
    let host_path = volume.path().display().to_string();
    config.mounts = vec![
        Mount {
            container_path: "/slave".into(),
            host_path: host_path.clone(),
            propagation: MountPropagation::PropagationHostToContainer.into(),
            ..Mount::default()
        },
        Mount {
            container_path: "/private".into(),
            host_path,
            ..Mount::default()
        },
    ];
    let id = env.run(&pod, config).await;
    let sub = volume.path().join("sub");
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("mount under the volume");
    let _inner = TmpfsGuard(sub.clone());
    std::fs::write(sub.join("marker"), "x").expect("marker");
    env.wait_exit(&id, Duration::from_secs(20)).await;
    assert_eq!(env.stdout("prop"), ["slave-sees", "private-blind"]);
    let s = env.status(&id).await;
    assert_eq!(
        s.mounts[0].propagation,
        MountPropagation::PropagationHostToContainer as i32
    );
}

/// recursive_read_only makes submounts read-only too; the host's mounts stay writable.
#[tokio::test]
async fn recursive_read_only_mounts() {
    let volume = tempfile::Builder::new()
        .prefix("crius-rro-")
        .tempdir()
        .expect("tempdir");
    let sub = volume.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .expect("submount");
    let _guard = TmpfsGuard(sub.clone());
    // Declared after the volume and its guard: the pod goes first.
    let mut env = setup(false).await;
    let pod = env.pod("rro", true).await;
    let script = "touch /rro/sub/x 2>/dev/null && echo rro-writable || echo rro-readonly; \
                  touch /rro/top 2>/dev/null && echo top-writable || echo top-readonly";
    let mut config = env.container_config("rro", script);
    config.mounts = vec![Mount {
        container_path: "/rro".into(),
        host_path: volume.path().display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Mount::default()
    }];
    let id = env.run(&pod, config).await;
    env.wait_exit(&id, Duration::from_secs(20)).await;
    assert_eq!(env.stdout("rro"), ["rro-readonly", "top-readonly"]);
    std::fs::write(sub.join("host-still-writes"), "x").expect("the host mount stays writable");
    let mut bad = env.container_config("rro-bad", "true");
    bad.mounts = vec![Mount {
        container_path: "/rro".into(),
        host_path: volume.path().display().to_string(),
        recursive_read_only: true,
        ..Mount::default()
    }];
    let err = env
        .create(&pod, bad)
        .await
        .expect_err("rro without readonly");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// Devices: a host character device appears at the requested path; a block device in a
/// user-namespaced pod is refused.
#[tokio::test]
async fn devices_and_block_devices_in_userns_pods() {
    let mut env = setup(false).await;
    let pod = env.pod("dev", false).await;
    let mut config = env.container_config("dev", "head -c 3 /dev/myzero | wc -c");
    config.devices = vec![Device {
        container_path: "/dev/myzero".into(),
        host_path: "/dev/zero".into(),
        permissions: "rwm".into(),
    }];
    let id = env.run(&pod, config).await;
    let s = env.wait_exit(&id, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 0);
    assert_eq!(env.stdout("dev"), ["3"]);

    let block = ["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0"]
        .into_iter()
        .find(|p| {
            std::fs::metadata(p)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        });
    if let Some(block) = block {
        let userns_pod = env.pod("dev-userns", true).await;
        let mut config = env.container_config("dev-block", "true");
        config.devices = vec![Device {
            container_path: block.into(),
            host_path: block.into(),
            permissions: "r".into(),
        }];
        let err = env.create(&userns_pod, config).await.expect_err("refused");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{}",
            err.message()
        );
    }
}

/// A descriptor criusd inherited from whoever started it reaches neither the container's
/// process nor an exec'd one: each sees only its standard descriptors.
#[tokio::test]
async fn inherited_descriptors_stay_out_of_containers() {
    // A descriptor without close-on-exec in this process: the criusd it spawns inherits it.
    let devnull = std::fs::File::open("/dev/null").expect("open /dev/null");
    // SAFETY: dup of a valid descriptor; the copy is closed at the end of the test.
    let leaked = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&devnull)) };
    assert!(leaked > 2, "dup: {}", std::io::Error::last_os_error());
    let mut env = setup(false).await;
    let pod = env.pod("fds", false).await;
    let id = env
        .run(&pod, env.container_config("fds", "sleep 300"))
        .await;
    // `ls /proc/self/fd` also lists the descriptor `ls` holds on that directory.
    for (cmd, expected) in [
        ("ls /proc/1/fd", &["0", "1", "2"][..]),
        ("ls /proc/self/fd", &["0", "1", "2", "3"][..]),
    ] {
        let out = env.exec(&id, &["sh", "-c", cmd], 10).await.expect("exec");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut listed: Vec<u32> = text
            .split_whitespace()
            .map(|f| f.parse().expect("a descriptor number"))
            .collect();
        listed.sort_unstable();
        let expected: Vec<u32> = expected
            .iter()
            .map(|f| f.parse().expect("number"))
            .collect();
        assert_eq!(listed, expected, "{cmd} (criusd inherited {leaked})");
    }
    // SAFETY: closes the descriptor dup'ed above.
    unsafe { libc::close(leaked) };
}

/// A monitor's failure keeps its kind up to the gRPC code: libcontainer failing to create a
/// container (its working directory is a file in the image) is Internal and names
/// libcontainer; a request crius refuses before any monitor sees it is InvalidArgument; a
/// container started twice is FailedPrecondition. None leaves a container behind.
#[tokio::test]
async fn failures_keep_their_kind_up_to_the_grpc_code() {
    let mut env = setup(false).await;
    let pod = env.pod("kinds", false).await;

    let mut config = env.container_config("badcwd", "sleep 300");
    config.working_dir = "/bin/busybox".into();
    let err = env
        .create(&pod, config)
        .await
        .expect_err("a working directory that is a file");
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.message().contains("libcontainer"), "{err:?}");

    let mut config = env.container_config("badlog", "sleep 300");
    config.log_path = "../outside.log".into();
    let err = env
        .create(&pod, config)
        .await
        .expect_err("a log path outside the pod's log directory");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let id = env
        .run(&pod, env.container_config("twice", "sleep 300"))
        .await;
    let err = env
        .daemon
        .runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("a second start");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    let listed = env.containers().await;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()],
        "only the started container exists"
    );
}
