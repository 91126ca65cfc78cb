//! Security of containers end to end: seccomp profiles (crius' RuntimeDefault, node profiles
//! given as Localhost, Unconfined) for the first process and for ExecSync, checked by what
//! the process inside can do.

use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::{
    Env, cgroup_file, cpu_max, cpu_shares, memory_and_swap_limit, memory_limit, setup,
};

/// A profile type and, for Localhost, its file.
fn seccomp(profile: security_profile::ProfileType, path: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: profile.into(),
        localhost_ref: path.into(),
    })
}

/// The container's security context, created if missing.
fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
}

/// Waits until the container named `name` has logged `lines` stdout lines.
async fn wait_lines(env: &Env, name: &str, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = env.stdout(name);
        if out.len() >= lines {
            return out;
        }
        assert!(Instant::now() < deadline, "{name}: no output, got {out:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The script each seccomp container runs: tries to make a user namespace (a syscall
/// RuntimeDefault denies to a container without CAP_SYS_ADMIN), then shows it still works.
const UNSHARE: &str =
    "unshare -U true 2>/dev/null && echo allowed || echo denied; echo alive; sleep 300";

/// RuntimeDefault denies `unshare` (making a user namespace) while the container works
/// normally, for root and another user, with and without no_new_privs (libcontainer installs
/// the filter at a different point then), in the first process and through ExecSync;
/// Unconfined allows it. With and without a pod user namespace.
#[tokio::test]
async fn runtime_default_denies_unshare_and_unconfined_allows_it() {
    let mut env = setup(false).await;
    for userns in [false, true] {
        let pod = env
            .pod(if userns { "sec-userns" } else { "sec-plain" }, userns)
            .await;
        let mut cases = Vec::new();
        for (suffix, profile, uid, no_new_privs, expect) in [
            (
                "default",
                security_profile::ProfileType::RuntimeDefault,
                None,
                false,
                "denied",
            ),
            (
                "user",
                security_profile::ProfileType::RuntimeDefault,
                Some(1000),
                false,
                "denied",
            ),
            (
                "nnp",
                security_profile::ProfileType::RuntimeDefault,
                None,
                true,
                "denied",
            ),
            (
                "unconfined",
                security_profile::ProfileType::Unconfined,
                None,
                false,
                "allowed",
            ),
        ] {
            let name = format!("{}-{suffix}", if userns { "u" } else { "p" });
            let mut config = env.container_config(&name, UNSHARE);
            let sc = security(&mut config);
            sc.seccomp = seccomp(profile, "");
            sc.no_new_privs = no_new_privs;
            sc.run_as_user = uid.map(|value| Int64Value { value });
            let id = env.run(&pod, config).await;
            cases.push((name, id, expect));
        }
        for (name, id, expect) in cases {
            assert_eq!(
                wait_lines(&env, &name, 2).await,
                [expect, "alive"],
                "{name}"
            );
            let out = env
                .exec(&id, &["unshare", "-U", "true"], 10)
                .await
                .expect("exec");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if expect == "denied" {
                assert_ne!(out.exit_code, 0, "{name}: exec must get the filter");
                assert!(
                    stderr.contains("Operation not permitted"),
                    "{name}: {stderr}"
                );
            } else {
                assert_eq!(out.exit_code, 0, "{name}: {stderr}");
            }
            // Everything else still works through exec.
            let out = env
                .exec(&id, &["sh", "-c", "echo ok > /tmp/f && cat /tmp/f"], 10)
                .await
                .expect("exec");
            assert_eq!(out.exit_code, 0, "{name}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{name}");
        }
    }
}

/// A node profile (Localhost, and the deprecated `localhost/<path>` form) that makes `mkdir`
/// fail with ENOSPC: busybox `mkdir` reports exactly that errno, in the first process and
/// through ExecSync, while other calls are allowed.
#[tokio::test]
async fn localhost_profile_applies_its_errno() {
    let mut env = setup(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-mkdir.json");
    std::fs::write(
        &path,
        r#"{
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}
            ]
        }"#,
    )
    .expect("write profile");
    let path = path.to_string_lossy().into_owned();
    for userns in [false, true] {
        let pod = env
            .pod(if userns { "lh-userns" } else { "lh-plain" }, userns)
            .await;
        for deprecated in [false, true] {
            let name = format!(
                "{}-{}",
                if userns { "u" } else { "p" },
                if deprecated { "path" } else { "profile" }
            );
            let mut config = env.container_config(
                &name,
                "mkdir /made 2>&1 || echo failed; echo alive; sleep 300",
            );
            let sc = security(&mut config);
            if deprecated {
                #[allow(deprecated, reason = "the old field must work too")]
                {
                    sc.seccomp_profile_path = format!("localhost/{path}");
                }
            } else {
                sc.seccomp = seccomp(security_profile::ProfileType::Localhost, &path);
            }
            let id = env.run(&pod, config).await;
            let out = wait_lines(&env, &name, 3).await;
            assert!(
                out[0].contains("No space left on device"),
                "{name}: {out:?}"
            );
            assert_eq!(out[1..], ["failed", "alive"], "{name}");
            let out = env.exec(&id, &["mkdir", "/other"], 10).await.expect("exec");
            assert_ne!(out.exit_code, 0, "{name}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("No space left on device"),
                "{name}: {stderr}"
            );
            let out = env.exec(&id, &["touch", "/file"], 10).await.expect("exec");
            assert_eq!(out.exit_code, 0, "{name}: other calls are allowed");
        }
    }
}

/// A Localhost profile that cannot be read or is not a profile is InvalidArgument naming the
/// file, at CreateContainer; nothing is created.
#[tokio::test]
async fn bad_localhost_profiles_are_invalid_argument_naming_the_file() {
    let mut env = setup(false).await;
    let pod = env.pod("bad-profiles", false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.to_string_lossy().into_owned()
    };
    let cases = [
        dir.path()
            .join("missing.json")
            .to_string_lossy()
            .into_owned(),
        write("truncated.json", "{\"defaultAction\": "),
        write("action.json", r#"{"defaultAction": "SCMP_ACT_SOMETIMES"}"#),
        write(
            "rule.json",
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]}"#,
        ),
        "relative/profile.json".to_owned(),
    ];
    for path in cases {
        let mut config = env.container_config("bad", "true");
        security(&mut config).seccomp = seccomp(security_profile::ProfileType::Localhost, &path);
        let err = env.create(&pod, config).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{path}: {err:?}");
        assert!(err.message().contains(&path), "{path}: {}", err.message());
        assert!(err.message().contains("seccomp"), "{}", err.message());
    }
    let listed = env.containers().await;
    assert!(listed.is_empty(), "{listed:?}");
}

/// The container's cgroup directories, from verbose ContainerStatus.
async fn cgroup_dirs(env: &mut Env, id: &str) -> Vec<std::path::PathBuf> {
    env.verbose_info(id).await["cgroupDirs"]
        .as_array()
        .expect("dirs")
        .iter()
        .filter_map(|d| d.as_str().map(std::path::PathBuf::from))
        .collect()
}

/// The 2 MiB hugepage limit in the directories (v2 `hugetlb.2MB.max` or v1's file).
fn hugetlb_2mb(dirs: &[std::path::PathBuf]) -> String {
    let file = if dirs.iter().any(|d| d.join("hugetlb.2MB.max").exists()) {
        "hugetlb.2MB.max"
    } else {
        "hugetlb.2MB.limit_in_bytes"
    };
    cgroup_file(dirs, file)
}

/// The resources ContainerStatus reports for the container.
async fn reported_resources(env: &mut Env, id: &str) -> LinuxContainerResources {
    env.status(id)
        .await
        .resources
        .and_then(|r| r.linux)
        .expect("status.resources.linux")
}

/// Whether the node has a hugetlb controller (v1, or in the v2 hierarchy).
fn hugetlb_available() -> bool {
    std::path::Path::new("/sys/fs/cgroup/hugetlb").is_dir()
        || [
            "/sys/fs/cgroup/unified/cgroup.controllers",
            "/sys/fs/cgroup/cgroup.controllers",
        ]
        .iter()
        .any(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| t.split_whitespace().any(|c| c == "hugetlb"))
        })
}

/// Swap, cpusets, hugepages and a pids limit (`unified` `pids.max`) are in the container's
/// cgroup files after create and after UpdateContainerResources; forks beyond pids.max fail
/// inside the container.
#[tokio::test]
async fn pids_cpusets_swap_and_hugepages_apply_at_create_and_update() {
    let mut env = setup(false).await;
    let pod = env.pod("limits", false).await;
    let hugepages = hugetlb_available();
    let mut config = env.container_config("limits", "sleep 300");
    let created = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 500,
        memory_swap_limit_in_bytes: 128 << 20,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: if hugepages {
            vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }]
        } else {
            Vec::new()
        },
        unified: [("pids.max".to_owned(), "12".to_owned())].into(),
    };
    config.linux.get_or_insert_default().resources = Some(created.clone());
    let id = env.run(&pod, config).await;
    assert_eq!(reported_resources(&mut env, &id).await, created);
    let dirs = cgroup_dirs(&mut env, &id).await;
    assert_eq!(cpu_max(&dirs), "50000 100000");
    assert_eq!(cgroup_file(&dirs, "pids.max"), "12");
    assert_eq!(cgroup_file(&dirs, "cpuset.cpus"), "0");
    assert_eq!(cgroup_file(&dirs, "cpuset.mems"), "0");
    if let Some(total) = memory_and_swap_limit(&dirs) {
        assert_eq!(total, 128 << 20, "memory + swap");
    }
    if hugepages {
        assert_eq!(hugetlb_2mb(&dirs), (4u64 << 20).to_string());
    }
    // The container's process is in every one of its cgroups.
    let pid = std::fs::read_to_string(dirs[0].join("cgroup.procs")).expect("procs");
    let pid = pid.lines().next().expect("a process").to_owned();
    for d in &dirs {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).expect("procs");
        assert!(
            procs.lines().any(|l| l == pid),
            "{pid} not in {}",
            d.display()
        );
    }

    // A fork bomb stops at pids.max.
    let out = env
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "for i in $(seq 30); do sleep 2 >/dev/null 2>&1 & done; true",
            ],
            20,
        )
        .await
        .expect("exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fork") || stderr.contains("Resource temporarily unavailable"),
        "forks beyond pids.max must fail: {stderr}"
    );

    let updated = LinuxContainerResources {
        cpu_period: 200_000,
        cpu_quota: 60_000,
        cpu_shares: 256,
        memory_limit_in_bytes: 96 << 20,
        oom_score_adj: 600,
        memory_swap_limit_in_bytes: 192 << 20,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: if hugepages {
            vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 8 << 20,
            }]
        } else {
            Vec::new()
        },
        unified: [("pids.max".to_owned(), "64".to_owned())].into(),
    };
    env.daemon
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(updated.clone()),
            ..UpdateContainerResourcesRequest::default()
        })
        .await
        .expect("update");
    // Every limit is reported as updated; oom_score_adj stays what create set (an update
    // does not change it, as in containerd).
    assert_eq!(
        reported_resources(&mut env, &id).await,
        LinuxContainerResources {
            oom_score_adj: 500,
            ..updated
        }
    );
    assert_eq!(cpu_max(&dirs), "60000 200000");
    let (shares, want) = cpu_shares(&dirs, 256);
    assert_eq!(shares, want, "cpu shares (v1) or weight (v2)");
    assert_eq!(cgroup_file(&dirs, "pids.max"), "64");
    if hugepages {
        assert_eq!(hugetlb_2mb(&dirs), (8u64 << 20).to_string());
    }
    assert_eq!(cgroup_file(&dirs, "cpuset.cpus"), "0-1");
    assert_eq!(memory_limit(&dirs), (96u64 << 20).to_string());
    if let Some(total) = memory_and_swap_limit(&dirs) {
        assert_eq!(total, 192 << 20, "memory + swap");
    }
    // Now the same forks succeed.
    let out = env
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "for i in $(seq 30); do sleep 2 >/dev/null 2>&1 & done; true",
            ],
            20,
        )
        .await
        .expect("exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("fork"), "{stderr}");

    // A limit the node has no file for is refused, not dropped.
    let mut config = env.container_config("nolimit", "sleep 300");
    config.linux.get_or_insert_default().resources = Some(LinuxContainerResources {
        unified: [("no.such.file".to_owned(), "1".to_owned())].into(),
        ..LinuxContainerResources::default()
    });
    let err = env.create(&pod, config).await.expect_err("refused");
    assert!(err.message().contains("no.such.file"), "{err:?}");
}

/// A `Name:\tvalue` line of `/proc/PID/status`.
fn proc_status(pid: i64, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// The parked sandbox process holds no capability (with a user namespace, CAP_SYS_PTRACE stays
/// in its permitted set alone, so that only a container holding it may trace the sandbox), has
/// no_new_privs and a seccomp filter, keeps only its standard descriptors (on /dev/null) and
/// sees an empty read-only root: the host's filesystem is not reachable from it. Containers of
/// the pod still work. With and without a user namespace.
#[tokio::test]
async fn sandbox_process_is_hardened() {
    let mut env = setup(false).await;
    for userns in [false, true] {
        let name = if userns { "hard-userns" } else { "hard-plain" };
        let pod = env.pod(name, userns).await;
        let info = env
            .daemon
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.0.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .info;
        let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("json");
        let pid = v["sandboxPid"].as_i64().expect("sandbox pid");
        for field in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            let held = if userns && field == "CapPrm:" {
                "0000000000080000"
            } else {
                "0000000000000000"
            };
            assert_eq!(proc_status(pid, field), held, "{name} {field}");
        }
        assert_eq!(proc_status(pid, "NoNewPrivs:"), "1", "{name}");
        assert_eq!(proc_status(pid, "Seccomp:"), "2", "{name}");
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fds")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut sorted = fds.clone();
        sorted.sort();
        assert_eq!(sorted, ["0", "1", "2"], "{name}: inherited descriptors");
        for fd in &fds {
            // /dev/null (character device 1:3); its path is gone with the host's tree.
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).expect("fd");
            assert!(
                m.file_type().is_char_device() && m.rdev() == 0x103,
                "{name} fd {fd}"
            );
        }
        let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root"))
            .expect("root")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            root.is_empty(),
            "{name}: the sandbox's root is not empty: {root:?}"
        );
        let mountinfo =
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let lines: Vec<&str> = mountinfo.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{name}: only its own root is mounted: {mountinfo}"
        );
        assert!(
            lines[0].contains(" / / ro,") && lines[0].contains(" - tmpfs "),
            "{name}: {mountinfo}"
        );
        // The pod still runs containers.
        let c = format!("{name}-c");
        env.run(&pod, env.container_config(&c, "echo up; sleep 300"))
            .await;
        assert_eq!(wait_lines(&env, &c, 1).await, ["up"], "{name}");
    }
}

/// SELinux: unset or empty options are accepted; a label crius cannot apply is
/// FailedPrecondition naming the field, never ignored. (AppArmor: `apparmor.rs`.)
#[tokio::test]
async fn selinux_options_are_accepted_empty_and_refused_otherwise() {
    let mut env = setup(false).await;
    let pod = env.pod("lsm", false).await;
    let mut config = env.container_config("ok", "true");
    security(&mut config).selinux_options = Some(SeLinuxOption::default());
    env.create(&pod, config)
        .await
        .unwrap_or_else(|e| panic!("empty selinux options: {e:?}"));
    let mut config = env.container_config("refused", "true");
    security(&mut config).selinux_options = Some(SeLinuxOption {
        r#type: "container_t".into(),
        ..SeLinuxOption::default()
    });
    let err = env.create(&pod, config).await.expect_err("selinux type");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("security_context.selinux_options"),
        "{}",
        err.message()
    );
}

/// The pod monitor lives in crius' own `crius-monitors` cgroup in every hierarchy (not in
/// criusd's, so stopping criusd's service leaves it alone, and not in the pod's; its v2 move
/// comes right after its reply); in the v2
/// hierarchy the sandbox sits in the pod cgroup's `sandbox` leaf, so the pod cgroup itself
/// holds no process and can delegate controllers to its containers.
#[tokio::test]
async fn monitor_and_sandbox_cgroups() {
    let mut env = setup(false).await;
    let pod = env.pod("cgroups", false).await;
    let info = env
        .daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.0.clone(),
            verbose: true,
        })
        .await
        .expect("status")
        .into_inner()
        .info;
    let v: serde_json::Value = serde_json::from_str(&info["info"]).expect("json");
    let monitor = v["monitorPid"].as_i64().expect("monitor pid");
    let sandbox = v["sandboxPid"].as_i64().expect("sandbox pid");
    let cgroups = |pid: i64| -> Vec<(String, String)> {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .expect("cgroup")
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                Some((ctrls.to_owned(), path.to_owned()))
            })
            .collect()
    };
    let criusd = cgroups(i64::from(env.daemon.pid().expect("criusd pid")));
    // The monitor's v2 move follows its reply (it waits for the cgroup migration lock): give
    // it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while cgroups(monitor).iter().any(|(_, p)| p != "/crius-monitors")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for (ctrls, path) in cgroups(monitor) {
        assert_eq!(path, "/crius-monitors", "monitor in {ctrls}:{path}");
    }
    assert!(
        criusd.iter().all(|(_, p)| p != "/crius-monitors"),
        "criusd itself stays where it was started: {criusd:?}"
    );
    let pod_cgroup = format!("/crius/crius-{}", pod.0);
    for (ctrls, path) in cgroups(sandbox) {
        if ctrls.is_empty() {
            assert_eq!(path, format!("{pod_cgroup}/sandbox"), "v2");
        } else {
            assert_eq!(path, pod_cgroup, "{ctrls}");
        }
    }
}

/// The pod cgroup of pod `id` (default parent `/crius`) in every hierarchy that has it.
fn pod_cgroup_dirs(id: &str) -> Vec<std::path::PathBuf> {
    crius_tests::env::cgroup_hierarchies()
        .into_iter()
        .map(|m| m.join("crius").join(format!("crius-{id}")))
        .filter(|d| d.is_dir())
        .collect()
}

/// The sandbox's `linux.resources` plus its overhead reach the pod cgroup: cpu and memory
/// add up, so does the memory+swap total (with the overhead's memory), cpusets, hugepage
/// limits and `unified` files are written; UpdatePodSandboxResources changes them.
#[tokio::test]
async fn pod_resources_and_overhead_reach_the_pod_cgroup() {
    let mut env = setup(false).await;
    let hugepages = hugetlb_available();
    let mut config = crius_tests::env::pod_config("podlimits", false, env.logs.path());
    let linux = config.linux.get_or_insert_default();
    linux.resources = Some(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        memory_limit_in_bytes: 128 << 20,
        memory_swap_limit_in_bytes: 256 << 20,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: if hugepages {
            vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }]
        } else {
            Vec::new()
        },
        unified: [("pids.max".to_owned(), "40".to_owned())].into(),
        ..LinuxContainerResources::default()
    });
    linux.overhead = Some(LinuxContainerResources {
        cpu_quota: 10_000,
        memory_limit_in_bytes: 32 << 20,
        ..LinuxContainerResources::default()
    });
    let (id, _) = env.pod_from(config).await;
    let dirs = pod_cgroup_dirs(&id);
    assert_eq!(cpu_max(&dirs), "60000 100000");
    assert_eq!(memory_limit(&dirs), (160u64 << 20).to_string());
    if let Some(total) = memory_and_swap_limit(&dirs) {
        assert_eq!(total, 288 << 20, "memory + swap");
    }
    assert_eq!(cgroup_file(&dirs, "cpuset.cpus"), "0");
    assert_eq!(cgroup_file(&dirs, "cpuset.mems"), "0");
    assert_eq!(cgroup_file(&dirs, "pids.max"), "40");
    if hugepages {
        assert_eq!(hugetlb_2mb(&dirs), (4u64 << 20).to_string());
    }

    env.daemon
        .runtime
        .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: id.clone(),
            resources: Some(LinuxContainerResources {
                cpuset_cpus: "0-1".into(),
                unified: [("pids.max".to_owned(), "80".to_owned())].into(),
                ..LinuxContainerResources::default()
            }),
            ..UpdatePodSandboxResourcesRequest::default()
        })
        .await
        .expect("update pod resources");
    assert_eq!(cgroup_file(&dirs, "cpuset.cpus"), "0-1");
    assert_eq!(cgroup_file(&dirs, "pids.max"), "80");
    assert_eq!(
        memory_limit(&dirs),
        (160u64 << 20).to_string(),
        "what the update leaves unset stays"
    );
}

/// A device of this node that this (root) process can open: its type, numbers and the shell
/// redirection that opens it.
struct HostDevice {
    kind: char,
    major: u32,
    minor: u32,
    redirect: &'static str,
}

/// The devices of this node that this (root) process can open: the disk under `/` (read)
/// where this host lets root read it, and the kernel log (`/dev/kmsg`, write-only: opening it
/// so needs no capability, and nothing is written).
fn host_devices() -> Vec<HostDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut found = Vec::new();
    let dev = std::fs::metadata("/").expect("stat /").dev();
    let disk = std::fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == dev)
        });
    if disk.is_some_and(|d| std::fs::File::open(d).is_ok()) {
        found.push(HostDevice {
            kind: 'b',
            major: u32::try_from(nix::sys::stat::major(dev)).expect("major"),
            minor: u32::try_from(nix::sys::stat::minor(dev)).expect("minor"),
            redirect: "<",
        });
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .is_ok()
    {
        found.push(HostDevice {
            kind: 'c',
            major: 1,
            minor: 11,
            redirect: ">",
        });
    }
    assert!(!found.is_empty(), "no host device this test can open");
    found
}

/// Whether this node mounts a cgroup v2 hierarchy.
fn has_cgroup_v2() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
}

/// ExecSync of `script` with `sh -c`: its stdout and stderr lines.
async fn exec_lines(env: &mut Env, id: &str, script: &str) -> Vec<String> {
    let out = env.exec(id, &["sh", "-c", script], 10).await.expect("exec");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_owned)
        .collect()
}

/// A hostile image ships nodes of the host's disk and kernel log (`/hostdev/dN`), and a root
/// container with the default capabilities also tries to make such a node itself: the device
/// cgroup (v1) and the device program (v2, each alone) keep it from opening the image's nodes
/// and from making new ones, in the first process and through ExecSync, while the devices every
/// container has still work; a privileged container opens the image's nodes.
#[tokio::test]
async fn a_container_cannot_use_host_devices_from_its_image() {
    let mut env = setup(false).await;
    let devices = host_devices();
    let mut entries = crius_tests::image::busybox_entries(
        crius_tests::image::BUSYBOX_PASSWD,
        crius_tests::image::BUSYBOX_GROUP,
    )
    .expect("busybox");
    entries.push(crius_tests::image::Entry::dir("hostdev", 0o755));
    for (i, d) in devices.iter().enumerate() {
        let path = format!("hostdev/d{i}");
        entries.push(if d.kind == 'b' {
            crius_tests::image::Entry::block_device(&path, d.major, d.minor, 0o666)
        } else {
            crius_tests::image::Entry::char_device(&path, d.major, d.minor, 0o666)
        });
    }
    let image = crius_tests::image::Image::new(vec![
        crius_tests::image::Layer::new(&entries, crius_tests::image::Compression::Gzip)
            .expect("layer"),
    ])
    .with_cmd(&["sh"])
    .with_env(&format!("PATH={}", crius_tests::image::DEFAULT_PATH));
    let image = env.push_and_pull(image, "crius/hostdev:1").await;

    // One line per image node ("opened" or the error), one for a node made here, one for
    // /dev/zero.
    let probe: String = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "(: {} /hostdev/d{i}) 2>/tmp/err && echo opened || cat /tmp/err; ",
                d.redirect
            )
        })
        .collect::<String>()
        + &format!(
            "mknod /tmp/made {} {} {} 2>/tmp/err && echo made || cat /tmp/err; \
             head -c 1 /dev/zero > /dev/null && echo zero",
            devices[0].kind, devices[0].major, devices[0].minor
        );
    let lines = devices.len() + 2;
    let config = |env: &Env, name: &str| {
        let mut c = env.container_config(name, &format!("{probe} 2>&1; sleep 300"));
        c.image = Some(ImageSpec {
            image: image.clone(),
            ..ImageSpec::default()
        });
        c
    };
    let denied = |out: &[String], what: &str| {
        assert_eq!(out.len(), lines, "{what}: {out:?}");
        for line in &out[..lines - 1] {
            assert!(
                line.contains("Operation not permitted"),
                "{what}: a host device was used: {out:?}"
            );
        }
        assert_eq!(out[lines - 1], "zero", "{what}: {out:?}");
    };

    let pod = env.pod("devices", false).await;
    let id = env.run(&pod, config(&env, "devices")).await;
    denied(&wait_lines(&env, "devices", lines).await, "first process");
    denied(
        &exec_lines(&mut env, &id, &probe.replace("/tmp/made", "/tmp/e1")).await,
        "ExecSync",
    );
    // Where a v1 devices controller enforces the rules too (a hybrid node), open it up as the
    // node's admin could: the v2 program alone must still refuse.
    let v1: Vec<_> = cgroup_dirs(&mut env, &id)
        .await
        .into_iter()
        .filter(|d| d.join("devices.allow").exists())
        .collect();
    // The v1 list is exactly the container's rules (libcontainer adds rules of its own to the
    // spec's: making any node, the host's console).
    let mut expected = [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
        "c 10:200 rwm",
    ];
    expected.sort_unstable();
    for dir in &v1 {
        let mut list: Vec<String> = std::fs::read_to_string(dir.join("devices.list"))
            .expect("devices.list")
            .lines()
            .map(str::to_owned)
            .collect();
        list.sort();
        assert_eq!(list, expected, "{}", dir.display());
    }
    if has_cgroup_v2() && !v1.is_empty() {
        for dir in &v1 {
            std::fs::write(dir.join("devices.allow"), "a *:* rwm").expect("open the v1 devices");
        }
        denied(
            &exec_lines(&mut env, &id, &probe.replace("/tmp/made", "/tmp/e2")).await,
            "ExecSync with the v1 controller open",
        );
    }

    let pod = env.privileged_pod("devices-priv").await;
    let mut c = config(&env, "devices-priv");
    security(&mut c).privileged = true;
    env.run(&pod, c).await;
    let out = wait_lines(&env, "devices-priv", lines).await;
    assert_eq!(
        out,
        [vec!["opened"; devices.len()], vec!["made", "zero"]].concat(),
        "privileged"
    );
}

/// A static probe (`tests/probes/security.c`, built by `gcc -static` in the build script),
/// run as `/probe sockets` or `/probe sandbox`, printing one line of `key=value` pairs.
///
/// `sockets`: the errno of `socket()` (0 when it worked) for AF_ALG (the kernel's crypto API,
/// whose splice path wrote into the page cache on unpatched kernels), AF_VSOCK, AF_INET and
/// AF_UNIX, and for AF_ALG and AF_VSOCK again with bit 32 of the family's register set (the
/// kernel reads an int there; a filter comparing 64 bits must not be fooled).
///
/// `sandbox`: plays a container taking over the pod's pause process, PID 1 of a shared PID
/// namespace. It prints PID 1's `comm`, command line and `Seccomp:` mode, the errno of
/// PTRACE_SEIZE on it and of opening its `/proc/1/mem` for writing. Where the seize works it
/// stops PID 1, makes it run `socket(AF_ALG, SOCK_SEQPACKET, 0)` at its own system call
/// instruction (x86_64), closes what that opened, restores its registers and lets it go:
/// `inject` is the call's result (a descriptor, or minus its errno).
const PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/security-probe"));

/// busybox with [`PROBE`] as `/probe`, pushed and pulled; its reference.
async fn probe_image(env: &mut Env) -> String {
    use crius_tests::image::{BUSYBOX_GROUP, BUSYBOX_PASSWD, Compression, Entry, Image, Layer};
    let mut entries =
        crius_tests::image::busybox_entries(BUSYBOX_PASSWD, BUSYBOX_GROUP).expect("busybox");
    assert!(
        !PROBE.is_empty(),
        "the probe was not built: the tests need gcc and libc6-dev (apt-get install gcc libc6-dev)"
    );
    entries.push(Entry::file("probe", PROBE.to_vec(), 0o755));
    let image = Image::new(vec![
        Layer::new(&entries, Compression::Gzip).expect("layer"),
    ])
    .with_cmd(&["sh"])
    .with_env(&format!("PATH={}", crius_tests::image::DEFAULT_PATH));
    env.push_and_pull(image, "crius/probe:1").await
}

/// The `key=value` pairs of a probe line.
fn pairs(line: &str) -> std::collections::BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A container config running `script` in the probe image.
fn probe_config(env: &Env, image: &str, name: &str, script: &str) -> ContainerConfig {
    let mut config = env.container_config(name, script);
    config.image = Some(ImageSpec {
        image: image.to_owned(),
        ..ImageSpec::default()
    });
    config
}

/// RuntimeDefault refuses sockets of the kernel's crypto API (AF_ALG) and of the hypervisor
/// (AF_VSOCK) with EPERM while INET and UNIX sockets work, in the first process and through
/// ExecSync, with and without a user namespace. Unconfined leaves both to the kernel, which
/// answers AF_ALG with a socket or, built without its socket interface, EAFNOSUPPORT: never
/// EPERM, so the refusal is the filter's.
#[tokio::test]
async fn runtime_default_refuses_crypto_api_and_vsock_sockets() {
    let mut env = setup(false).await;
    let image = probe_image(&mut env).await;
    for userns in [false, true] {
        let pod = env
            .pod(if userns { "af-userns" } else { "af-plain" }, userns)
            .await;
        for profile in [
            security_profile::ProfileType::RuntimeDefault,
            security_profile::ProfileType::Unconfined,
        ] {
            let confined = profile == security_profile::ProfileType::RuntimeDefault;
            let name = format!(
                "{}-{}",
                if userns { "u" } else { "p" },
                if confined { "default" } else { "unconfined" }
            );
            let mut config = probe_config(&env, &image, &name, "/probe sockets; sleep 300");
            security(&mut config).seccomp = seccomp(profile, "");
            let id = env.run(&pod, config).await;
            let first = wait_lines(&env, &name, 1).await;
            let out = env
                .exec(&id, &["/probe", "sockets"], 10)
                .await
                .expect("exec");
            assert_eq!(out.exit_code, 0, "{name}");
            let exec = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            for (how, line) in [("first process", &first[0]), ("ExecSync", &exec)] {
                let errno = pairs(line);
                let what = format!("{name} {how}: {line}");
                assert_eq!(errno["inet"], "0", "{what}");
                assert_eq!(errno["unix"], "0", "{what}");
                if confined {
                    for family in ["alg", "vsock", "alg_high", "vsock_high"] {
                        assert_eq!(errno[family], "1", "{family} must be EPERM: {what}");
                    }
                } else {
                    // The kernel's own answer: a socket, or EAFNOSUPPORT where it is built
                    // without the crypto API's socket interface.
                    assert!(["0", "97"].contains(&errno["alg"].as_str()), "{what}");
                    assert_ne!(errno["vsock"], "1", "{what}");
                }
            }
        }
    }
}

/// Host-side: the pids of zombies whose parent is `parent`.
fn zombie_children(parent: i64) -> Vec<i64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
        })
        .collect()
}

/// Runs the probe in sandbox mode as container `name` of `pod`, with RuntimeDefault seccomp
/// and `add` capabilities, AppArmor Unconfined (on a node with AppArmor crius-default would
/// refuse the trace before the layers these tests are about); its report.
async fn probe_sandbox(
    env: &mut Env,
    pod: &(String, PodSandboxConfig),
    image: &str,
    name: &str,
    add: &[&str],
) -> (String, std::collections::BTreeMap<String, String>) {
    let mut config = probe_config(env, image, name, "/probe sandbox; sleep 300");
    let sc = security(&mut config);
    sc.seccomp = seccomp(security_profile::ProfileType::RuntimeDefault, "");
    sc.apparmor = seccomp(security_profile::ProfileType::Unconfined, "");
    sc.capabilities = Some(Capability {
        add_capabilities: add.iter().map(|c| (*c).to_owned()).collect(),
        ..Capability::default()
    });
    let id = env.run(pod, config).await;
    let line = wait_lines(env, name, 1).await.remove(0);
    eprintln!("{name}: {line}");
    let seen = pairs(&line);
    assert_eq!(seen["comm"], "criusd", "PID 1 is the pause process: {line}");
    assert_eq!(seen["cmdline"], "pause", "{line}");
    (id, seen)
}

/// In a pod whose containers share its PID namespace the pause process is PID 1. With a user
/// namespace it runs as the pod's root and stays dumpable; without one it is not dumpable. In
/// both, a root container (default capabilities, RuntimeDefault) can neither seize it with
/// ptrace nor open its memory for writing, in its first process or through ExecSync, and the
/// pause process runs under a seccomp filter of its own: a container granted CAP_SYS_PTRACE
/// may seize it (as in any runtime), but a call it makes the pause process run (a socket of
/// the crypto API) fails with EPERM. Traced and let go, the pause process still reaps the
/// pod's orphans and parks asleep.
#[tokio::test]
async fn a_container_cannot_take_over_the_pause_process() {
    let mut env = setup(false).await;
    let image = probe_image(&mut env).await;
    for userns in [true, false] {
        let tag = if userns { "u" } else { "p" };
        let mut config =
            crius_tests::env::pod_config(&format!("pause-{tag}"), userns, env.logs.path());
        crius_tests::env::namespace_options(&mut config).pid = NamespaceMode::Pod.into();
        let pod = env.pod_from(config).await;
        let sandbox_pid = env.monitor_state(&pod.0)["sandbox_pid"]
            .as_i64()
            .expect("sandbox pid");

        let name = format!("{tag}-root");
        let (root_id, seen) = probe_sandbox(&mut env, &pod, &image, &name, &[]).await;
        assert_eq!(seen["seize"], "1", "{name}: PTRACE_SEIZE must be EPERM");
        assert_ne!(seen["mem"], "0", "{name}: /proc/1/mem opened for writing");
        assert_eq!(seen["inject"], "none", "{name}");
        assert_eq!(seen["seccomp"], "2", "{name}: the pause process's filter");
        let out = env
            .exec(&root_id, &["/probe", "sandbox"], 10)
            .await
            .expect("exec");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        eprintln!("{name} ExecSync: {line}");
        let seen = pairs(&line);
        assert_eq!(seen["seize"], "1", "{name} ExecSync: {line}");
        assert_ne!(seen["mem"], "0", "{name} ExecSync: {line}");

        let name = format!("{tag}-tracer");
        let (_, seen) = probe_sandbox(&mut env, &pod, &image, &name, &["SYS_PTRACE"]).await;
        assert_eq!(seen["seize"], "0", "{name}: CAP_SYS_PTRACE may trace");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                seen["inject"], "-1",
                "{name}: a call injected into the pause process must fail with EPERM"
            );
        }

        // An orphan of a container becomes the pause process's child, and must not stay a
        // zombie.
        let name = format!("{tag}-orphan");
        let orphan = probe_config(
            &env,
            &image,
            &name,
            "sh -c 'sleep 5 &'; echo gone; sleep 300",
        );
        env.run(&pod, orphan).await;
        wait_lines(&env, &name, 1).await;
        let children = || {
            std::fs::read_to_string(format!("/proc/{sandbox_pid}/task/{sandbox_pid}/children"))
                .expect("children of the pause process")
        };
        let adopted = children();
        assert!(!adopted.trim().is_empty(), "{name}: not adopted");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(children().trim().is_empty() && zombie_children(sandbox_pid).is_empty()) {
            assert!(
                Instant::now() < deadline,
                "{name}: the pause process did not reap {adopted}: zombies {:?}",
                zombie_children(sandbox_pid)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            proc_status(sandbox_pid, "State:").chars().next(),
            Some('S'),
            "{name}: the pause process sleeps"
        );
    }
}
