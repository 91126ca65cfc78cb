//! No leaks: many cycles of run pod → create → start → stop → remove container → stop → remove
//! pod leave the host and criusd where they were. Measured from the host: mounts under the
//! daemon's directories, pod cgroups in every v1 hierarchy, pinned netns, pod directories, CNI
//! cache entries and IP allocations, pod monitors still running, and criusd's fds, threads and
//! RSS.
//!
//! The short form runs in the normal suite (30 cycles, measured at 10 and 30). The long form
//! (1000 cycles, measured at 100 and 1000) is ignored and run by
//! `cargo test -p crius-tests --test leak -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::path::Path;

use cri_api::v1::*;
use crius_tests::env::{Env, pod_config, setup};

/// What one measurement saw.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// Cycles done when it was taken.
    cycles: usize,
    /// Mount points under the daemon's directory (root, state, pods, netns pins).
    mounts: usize,
    /// Lines of the host's mountinfo (informational: other tests on the host move it).
    host_mounts: usize,
    /// Directories beneath the test's cgroup parent, over every v1 hierarchy.
    cgroups: usize,
    /// Pinned netns files and pod directories left under the state directory.
    pod_dirs: usize,
    /// CNI cache files under the root.
    cni_cache: usize,
    /// Addresses host-local still holds.
    ips: usize,
    /// veths still on the test bridge.
    veths: usize,
    /// Pod monitor and pause processes of this daemon.
    monitors: usize,
    /// criusd's open fds.
    fds: usize,
    /// criusd's threads.
    threads: usize,
    /// criusd's resident set, KiB.
    rss_kib: u64,
}

/// Counts the entries of `dir` (0 when it does not exist).
fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

/// Counts the directories beneath `dir`, `dir` itself not included.
fn count_dirs_below(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                n += 1;
                stack.push(e.path());
            }
        }
    }
    n
}

/// A value (first number) of a `/proc/PID/status` key.
fn status_value(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// Takes a sample of `env`'s daemon; `cgroup_parent` is the pods' parent cgroup.
fn sample(env: &Env, cgroup_parent: &str, cycles: usize) -> Sample {
    let d = &env.daemon;
    let pid = d.pid().unwrap();
    let dir = d.dir().display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts = info
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .count();
    let cgroups = crius_tests::env::cgroup_hierarchies()
        .iter()
        .map(|h| {
            let parent = h.join(cgroup_parent.trim_start_matches('/'));
            count_dirs_below(&parent)
        })
        .sum();
    let net = d.network.as_ref().unwrap();
    Sample {
        cycles,
        mounts,
        host_mounts: info.lines().count(),
        cgroups,
        pod_dirs: count_entries(&d.paths.state.join("pods")),
        cni_cache: count_entries(&d.paths.root.join("cni")),
        ips: net.allocated_ips().len(),
        veths: net.attached_links().len(),
        monitors: crius_tests::host::pod_monitors(d.dir(), &d.paths.state.join("pods")),
        fds: count_entries(Path::new(&format!("/proc/{pid}/fd"))),
        threads: usize::try_from(status_value(pid, "Threads:")).unwrap(),
        rss_kib: status_value(pid, "VmRSS:"),
    }
}

/// One full cycle: a pod (with a user namespace every other time), a container that runs,
/// is stopped and removed, then the pod is stopped and removed.
/// With `probe`, also checks while the container runs that every count sees the pod (so a
/// zero afterwards means "removed", not "not looked at").
async fn cycle(env: &mut Env, n: usize, cgroup_parent: &str, probe: bool) {
    let name = format!("leak-{n}");
    let userns = n % 2 == 1;
    let mut config = pod_config(&name, userns, env.logs.path());
    config.linux.get_or_insert_default().cgroup_parent = cgroup_parent.into();
    let pod_id = env
        .daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("cycle {n}: run pod: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let pod = (pod_id.clone(), config);
    let cfg = env.container_config("c", "echo up; exec sleep 1000");
    let cid = env
        .create(&pod, cfg)
        .await
        .unwrap_or_else(|e| panic!("cycle {n}: create: {e}"));
    env.start(&cid).await;
    if probe {
        let s = sample(env, cgroup_parent, n);
        eprintln!("while running {s:?}");
        assert!(s.mounts > 0, "{s:?}");
        assert!(s.cgroups > 0, "{s:?}");
        assert_eq!(s.pod_dirs, 1, "{s:?}");
        assert_eq!(s.cni_cache, 1, "{s:?}");
        assert_eq!(s.ips, 1, "{s:?}");
        assert_eq!(s.veths, 1, "{s:?}");
        // The monitor and the pause process (a clone of it, same command line).
        assert!(s.monitors >= 1, "{s:?}");
    }
    let rt = &mut env.daemon.runtime;
    rt.stop_container(StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("cycle {n}: stop container: {e}"));
    rt.remove_container(RemoveContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("cycle {n}: remove container: {e}"));
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("cycle {n}: stop pod: {e}"));
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap_or_else(|e| panic!("cycle {n}: remove pod: {e}"));
    let _ = std::fs::remove_file(env.logs.path().join("c.log"));
}

/// Runs `total` cycles, sampling at `first` and `total`, and checks that nothing grew.
async fn no_leaks_over(first: usize, total: usize) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let cgroup_parent = format!("/crius-leak-{}-{nanos}", std::process::id());
    // Declared before the daemon so it is dropped after the daemon removed its pods.
    let _guard = CgroupParent(cgroup_parent.clone());
    let mut env = setup(false).await;
    // Warm-up: the first pod makes the layer store's lazily created state and tokio's workers.
    cycle(&mut env, 0, &cgroup_parent, false).await;
    cycle(&mut env, 1, &cgroup_parent, true).await;
    let baseline = sample(&env, &cgroup_parent, 2);
    eprintln!("baseline {baseline:?}");
    let mut samples = Vec::new();
    for n in 1..=total {
        cycle(&mut env, n + 1, &cgroup_parent, false).await;
        if n == first || n == total {
            let s = sample(&env, &cgroup_parent, n + 2);
            eprintln!("after {n} cycles: {s:?}");
            samples.push(s);
        }
    }
    for s in &samples {
        assert_eq!(
            s.mounts, baseline.mounts,
            "mounts under the daemon dir: {s:?}"
        );
        assert_eq!(s.cgroups, 0, "pod cgroups left: {s:?}");
        assert_eq!(s.pod_dirs, 0, "pod directories left: {s:?}");
        assert_eq!(s.cni_cache, baseline.cni_cache, "CNI cache entries: {s:?}");
        assert_eq!(s.ips, 0, "IP allocations left: {s:?}");
        assert_eq!(s.veths, 0, "veths left: {s:?}");
        assert_eq!(s.monitors, 0, "pod monitors left: {s:?}");
        // A few fds and threads come and go with tokio's blocking pool and connections.
        assert!(
            s.fds <= baseline.fds + 4,
            "criusd fds grew: {baseline:?} → {s:?}"
        );
        assert!(
            s.threads <= baseline.threads.max(16) + 4,
            "criusd threads grew: {baseline:?} → {s:?}"
        );
    }
    let (mid, last) = (&samples[0], &samples[samples.len() - 1]);
    assert!(
        last.fds <= mid.fds + 2,
        "criusd fds grew between {} and {} cycles: {mid:?} → {last:?}",
        mid.cycles,
        last.cycles
    );
    assert!(
        last.rss_kib <= mid.rss_kib + 5 * 1024,
        "criusd RSS grew more than 5 MiB between {} and {} cycles: {mid:?} → {last:?}",
        mid.cycles,
        last.cycles
    );
}

/// Removes the test's cgroup parent from every hierarchy on drop (also when the test fails).
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for h in crius_tests::env::cgroup_hierarchies() {
            let _ = std::fs::remove_dir(h.join(self.0.trim_start_matches('/')));
        }
    }
}

#[tokio::test]
async fn thirty_cycles_leave_nothing_behind() {
    no_leaks_over(10, 30).await;
}

#[tokio::test]
#[ignore = "long: 1000 cycles; run with --ignored"]
async fn thousand_cycles_leave_nothing_behind() {
    no_leaks_over(100, 1000).await;
}
