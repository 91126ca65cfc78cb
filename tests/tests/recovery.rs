//! Crash recovery: criusd killed with SIGKILL while pods run and containers start, stop and
//! exit; criusd killed at failpoints between the steps of RunPodSandbox, StopPodSandbox,
//! RemovePodSandbox, CreateContainer, StartContainer and RemoveContainer (`CRIUS_FAILPOINT`,
//! builds with the `failpoints` feature); a pod monitor killed; and the start-up sweep of what no record owns. CNI plugins are wrapped so every ADD and DEL is counted.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::{pod_config, setup};
use crius_tests::harness::{Criusd, Options};

/// A directory of CNI plugin wrappers that log `COMMAND IFNAME ID` of every bridge call to
/// `calls.log` and run the real plugin from /usr/lib/cni.
struct CniSpy {
    dir: tempfile::TempDir,
}

impl CniSpy {
    fn new() -> CniSpy {
        let dir = tempfile::Builder::new()
            .prefix("crius-cni-spy-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("calls.log");
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            // The bridge wrapper logs each call as it begins and ends.
            let script = if plugin == "bridge" {
                format!(
                    "#!/bin/sh\n\
                     echo \"$CNI_COMMAND $CNI_IFNAME $CNI_CONTAINERID\" >> {log}\n\
                     [ \"$CNI_COMMAND\" = ADD ] && [ -e {slow} ] && sleep 1\n\
                     /usr/lib/cni/{plugin} \"$@\"\n\
                     rc=$?\n\
                     echo \"END $CNI_COMMAND $CNI_IFNAME $CNI_CONTAINERID\" >> {log}\n\
                     exit $rc\n",
                    log = log.display(),
                    slow = dir.path().join("slow-add").display()
                )
            } else {
                format!("#!/bin/sh\nexec /usr/lib/cni/{plugin} \"$@\"\n")
            };
            let path = dir.path().join(plugin);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        CniSpy { dir }
    }

    /// Makes every ADD on the pod interface take a second longer: long enough for a daemon
    /// killed during it to be back before it ends.
    fn slow_adds(&self) {
        std::fs::write(self.dir.path().join("slow-add"), "").unwrap();
    }

    /// The config line pointing criusd at the wrappers.
    fn config(&self) -> String {
        format!("cni_bin_dirs = [\"{}\"]\n", self.dir.path().display())
    }

    /// How often each `COMMAND ID` ran on the pod interface.
    fn calls(&self) -> HashMap<String, usize> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default();
        let mut out = HashMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 3 && parts[1] == "eth0" {
                *out.entry(format!("{} {}", parts[0], parts[2])).or_default() += 1;
            }
        }
        out
    }

    /// The pods whose DEL on the pod interface began while an ADD of theirs still ran.
    fn del_during_add(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("calls.log")).unwrap_or_default();
        let mut running: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for line in text.lines() {
            match line.split(' ').collect::<Vec<_>>()[..] {
                ["ADD", "eth0", id] => *running.entry(id.to_owned()).or_default() += 1,
                ["END", "ADD", "eth0", id] => *running.entry(id.to_owned()).or_default() -= 1,
                ["DEL", "eth0", id] if running.get(id).is_some_and(|n| *n > 0) => {
                    out.push(id.to_owned());
                }
                _ => {}
            }
        }
        out
    }

    /// The ADD and DEL counts of pod `id`.
    fn add_del(&self, id: &str) -> (usize, usize) {
        let calls = self.calls();
        (
            calls.get(&format!("ADD {id}")).copied().unwrap_or(0),
            calls.get(&format!("DEL {id}")).copied().unwrap_or(0),
        )
    }
}

/// A daemon whose CNI plugins are spied on.
async fn spied_daemon(spy: &CniSpy) -> Criusd {
    Criusd::start_with(Options {
        config: spy.config(),
        ..Options::default()
    })
    .await
    .unwrap()
}

/// What the host holds for the daemon's pods: pod dirs, CNI cache files (temporary ones
/// included), IPs, veths, pod cgroups under `/crius` for these ids, mounts under the daemon's
/// directory and monitor processes.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    pod_dirs: Vec<String>,
    writable_roots: Vec<String>,
    cni_cache: Vec<String>,
    ips: usize,
    veths: usize,
    mounts: usize,
    monitors: usize,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn leftovers(d: &Criusd) -> Leftovers {
    let dir = d.dir().display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let monitors = crius_tests::host::pod_monitors(d.dir(), &d.paths.state.join("pods"));
    let net = d.network.as_ref().unwrap();
    Leftovers {
        pod_dirs: names(&d.paths.state.join("pods")),
        writable_roots: names(&d.paths.root.join("containers")),
        cni_cache: names(&d.paths.root.join("cni")),
        ips: net.allocated_ips().len(),
        veths: net.attached_links().len(),
        mounts: mountinfo
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
            .count(),
        monitors,
    }
}

fn nothing_left() -> Leftovers {
    Leftovers {
        pod_dirs: Vec::new(),
        writable_roots: Vec::new(),
        cni_cache: Vec::new(),
        ips: 0,
        veths: 0,
        mounts: 0,
        monitors: 0,
    }
}

/// The pod cgroups `crius-<id>` under the default parent in every hierarchy.
fn pod_cgroups(id: &str) -> Vec<PathBuf> {
    crius_tests::env::cgroup_hierarchies()
        .into_iter()
        .map(|m| m.join("crius").join(format!("crius-{id}")))
        .filter(|p| p.exists())
        .collect()
}

async fn pods(d: &mut Criusd) -> Vec<PodSandbox> {
    d.pods().await
}

async fn stop_pod(d: &mut Criusd, id: &str) -> Result<(), tonic::Status> {
    d.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(|_| ())
}

async fn remove_pod(d: &mut Criusd, id: &str) -> Result<(), tonic::Status> {
    d.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(|_| ())
}

/// Restarts criusd so that it kills itself (SIGKILL) at `failpoint`.
async fn arm(d: &mut Criusd, failpoint: &str) {
    arm_after(d, failpoint, 0).await;
}

/// Arms `failpoint` to kill criusd `delay_ms` after it is reached.
async fn arm_after(d: &mut Criusd, failpoint: &str, delay_ms: u64) {
    d.restart_with_env(&[
        ("CRIUS_FAILPOINT", failpoint),
        ("CRIUS_FAILPOINT_DELAY_MS", &delay_ms.to_string()),
    ])
    .await
    .unwrap();
}

/// Checks that criusd died of SIGKILL at its failpoint, and starts it again normally.
async fn crashed(d: &mut Criusd, failpoint: &str) {
    use std::os::unix::process::ExitStatusExt;
    let status = d.wait_exit().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "criusd at {failpoint}: {status} (is it built with --features criusd/failpoints?)"
    );
    assert!(d.log().contains(failpoint), "the log names {failpoint}");
    d.restart().await.unwrap();
}

/// A cgroup parent of its own for a test, removed from every v1 hierarchy on drop.
struct CgroupParent(String);

impl CgroupParent {
    fn new(tag: &str) -> CgroupParent {
        CgroupParent(format!("/crius-{tag}-{}", std::process::id()))
    }

    /// The cgroups left beneath it, over every v1 hierarchy.
    fn children(&self) -> Vec<PathBuf> {
        crius_tests::env::cgroup_hierarchies()
            .iter()
            .flat_map(|h| {
                names(&h.join(self.0.trim_start_matches('/')))
                    .into_iter()
                    .map(move |n| h.join(n))
            })
            .filter(|p| p.is_dir())
            .collect()
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        for h in crius_tests::env::cgroup_hierarchies() {
            let _ = std::fs::remove_dir(h.join(self.0.trim_start_matches('/')));
        }
    }
}

async fn run_pod_in(
    d: &mut Criusd,
    name: &str,
    parent: &CgroupParent,
) -> Result<String, tonic::Status> {
    let mut config = pod_config(name, false, &d.dir().join("logs"));
    config.linux.get_or_insert_default().cgroup_parent = parent.0.clone();
    d.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

#[tokio::test]
async fn run_pod_sandbox_cut_at_any_step_is_rolled_back_at_restart() {
    let parent = CgroupParent::new("recovery-run");
    let spy = CniSpy::new();
    // The cut at monitor-started comes while ADD runs (it starts once the namespace is
    // pinned; the kill waits 300 ms, well inside the slow ADD's second): the restarted daemon
    // must wait for the dead one's plugins before its DEL.
    spy.slow_adds();
    let mut d = spied_daemon(&spy).await;
    for failpoint in [
        "run-pod:recorded",
        "run-pod:netns-pinned",
        "run-pod:monitor-started",
        "run-pod:cni-added",
    ] {
        let delay = if failpoint == "run-pod:monitor-started" {
            300
        } else {
            0
        };
        arm_after(&mut d, failpoint, delay).await;
        let err = run_pod_in(&mut d, "cut", &parent).await.unwrap_err();
        eprintln!("{failpoint}: {err}");
        crashed(&mut d, failpoint).await;
        assert!(pods(&mut d).await.is_empty(), "{failpoint}: no pod is left");
        assert_eq!(leftovers(&d), nothing_left(), "{failpoint}");
        assert!(
            parent.children().is_empty(),
            "{failpoint}: {:?}",
            parent.children()
        );
        assert_eq!(
            spy.del_during_add(),
            Vec::<String>::new(),
            "{failpoint}: DEL waits for the dead daemon's ADD"
        );
        // Every ADD that ran was undone by exactly one DEL.
        for (call, n) in spy.calls() {
            assert_eq!(n, 1, "{failpoint}: {call} ran {n} times");
            if let Some(id) = call.strip_prefix("ADD ") {
                assert_eq!(spy.add_del(id), (1, 1), "{failpoint}: {id}");
            }
        }
        // The client's retry with the same metadata succeeds.
        let id = run_pod_in(&mut d, "cut", &parent).await.unwrap();
        assert_eq!(spy.add_del(&id), (1, 0));
        stop_pod(&mut d, &id).await.unwrap();
        remove_pod(&mut d, &id).await.unwrap();
        assert_eq!(spy.add_del(&id), (1, 1));
    }
    let adds = spy.calls().keys().filter(|k| k.starts_with("ADD")).count();
    assert_eq!(
        adds,
        6,
        "one ADD in the cuts at monitor-started and cni-added, and one per retry: {:?}",
        spy.calls()
    );
}

#[tokio::test]
async fn stop_and_remove_cut_short_finish_without_a_second_del() {
    let parent = CgroupParent::new("recovery-stop");
    let spy = CniSpy::new();
    let mut d = spied_daemon(&spy).await;
    // StopPodSandbox cut right after CNI DEL.
    let a = run_pod_in(&mut d, "stop-cut", &parent).await.unwrap();
    arm(&mut d, "stop-pod:cni-deleted").await;
    stop_pod(&mut d, &a).await.unwrap_err();
    crashed(&mut d, "stop-pod:cni-deleted").await;
    assert_eq!(spy.add_del(&a), (1, 1));
    assert_eq!(d.network.as_ref().unwrap().allocated_ips().len(), 0);
    stop_pod(&mut d, &a).await.unwrap();
    stop_pod(&mut d, &a).await.unwrap();
    assert_eq!(
        spy.add_del(&a),
        (1, 1),
        "a repeated Stop runs no second DEL"
    );
    let listed = pods(&mut d).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, PodSandboxState::SandboxNotready as i32);
    remove_pod(&mut d, &a).await.unwrap();
    assert_eq!(spy.add_del(&a), (1, 1));

    // RemovePodSandbox (without Stop) cut after the pod was released.
    let b = run_pod_in(&mut d, "remove-cut", &parent).await.unwrap();
    arm(&mut d, "remove-pod:released").await;
    remove_pod(&mut d, &b).await.unwrap_err();
    crashed(&mut d, "remove-pod:released").await;
    let listed = pods(&mut d).await;
    assert_eq!(listed.len(), 1, "the record outlived the crash");
    assert_eq!(listed[0].state, PodSandboxState::SandboxNotready as i32);
    remove_pod(&mut d, &b).await.unwrap();
    assert!(pods(&mut d).await.is_empty());
    assert_eq!(spy.add_del(&b), (1, 1));
    assert_eq!(leftovers(&d), nothing_left());
    assert!(parent.children().is_empty(), "{:?}", parent.children());
}

/// Unmounts and removes what the orphan test made, also when it fails.
struct Orphan {
    mount: PathBuf,
    cgroups: Vec<PathBuf>,
}

impl Drop for Orphan {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        for c in &self.cgroups {
            let _ = std::fs::remove_dir(c.join("child"));
            let _ = std::fs::remove_dir(c);
        }
    }
}

#[tokio::test]
async fn start_up_sweep_removes_what_no_record_owns() {
    let mut d = Criusd::start().await.unwrap();
    let id = "0f".repeat(32);
    let dir = d.paths.state.join("pods").join(&id);
    std::fs::create_dir_all(dir.join("shm")).unwrap();
    let mut orphan = Orphan {
        mount: dir.join("shm"),
        cgroups: Vec::new(),
    };
    nix::mount::mount(
        Some("tmpfs"),
        &dir.join("shm"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    std::fs::write(dir.join("shm/data"), "x").unwrap();
    for h in crius_tests::env::cgroup_hierarchies() {
        let c = h.join("crius").join(format!("crius-{id}"));
        if std::fs::create_dir_all(c.join("child")).is_ok() {
            orphan.cgroups.push(c);
        }
    }
    assert!(!orphan.cgroups.is_empty());
    let pods_tmp = d.paths.state.join("pods").join(".spec.json.tmp.4242");
    std::fs::write(&pods_tmp, "{").unwrap();
    std::fs::create_dir_all(d.paths.root.join("cni")).unwrap();
    let cni_tmp = d.paths.root.join("cni").join(format!(".{id}.json.tmp"));
    std::fs::write(&cni_tmp, "{").unwrap();

    d.signal_and_wait(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    d.restart().await.unwrap();

    assert!(!dir.exists(), "the orphaned pod directory is gone");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&id), "its mount is gone");
    for c in &orphan.cgroups {
        assert!(!c.exists(), "cgroup {} is gone", c.display());
    }
    assert!(!pods_tmp.exists());
    assert!(!cni_tmp.exists());
    assert_eq!(leftovers(&d), nothing_left());
}

#[tokio::test]
async fn killed_monitor_leaves_a_not_ready_pod_that_stop_and_remove_clean_up() {
    let mut env = setup(false).await;
    let pod = env.pod("monitorless", false).await;
    let c = env
        .run(&pod, env.container_config("victim", "exec sleep 1000"))
        .await;
    let state = env.monitor_state(&pod.0);
    let monitor = i32::try_from(state["monitor_pid"].as_i64().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = pods(&mut env.daemon).await;
        if listed[0].state == PodSandboxState::SandboxNotready as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "pod still ready: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The container died with the sandbox (the init of its pid namespace): reported exited,
    // with a reason that says why.
    let s = loop {
        let s = env.status(&c).await;
        if s.state == ContainerState::ContainerExited as i32 {
            break s;
        }
        assert!(Instant::now() < deadline, "container not exited: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(s.reason, "PodMonitorDied", "{s:?}");
    assert_eq!(s.exit_code, 137, "{s:?}");
    assert!(s.message.contains("monitor"), "{s:?}");
    assert!(s.finished_at >= s.started_at && s.started_at > 0, "{s:?}");
    // The same on every call: the finish time is not the time of asking.
    assert_eq!(env.status(&c).await.finished_at, s.finished_at);
    stop_pod(&mut env.daemon, &pod.0).await.unwrap();
    remove_pod(&mut env.daemon, &pod.0).await.unwrap();
    assert!(pods(&mut env.daemon).await.is_empty());
    assert_eq!(leftovers(&env.daemon), nothing_left());
    assert!(pod_cgroups(&pod.0).is_empty());
}

/// A pod whose state went with a reboot (monitor gone, pod directory gone, records kept):
/// StopPodSandbox and RemovePodSandbox still remove what it had on disk, its files and its
/// containers' writable layers beneath the container root.
#[tokio::test]
async fn a_pod_whose_state_is_gone_leaves_nothing_on_disk() {
    let mut env = setup(false).await;
    let pod = env.pod("rebooted", true).await;
    env.run(&pod, env.container_config("c", "echo up; sleep 1000"))
        .await;
    assert_eq!(env.wait_stdout("c", 1).await, ["up"]);
    let writable = env.daemon.paths.root.join("containers").join(&pod.0);
    assert!(writable.join("etc/resolv.conf").exists());
    let state = env.monitor_state(&pod.0);
    let monitor = i32::try_from(state["monitor_pid"].as_i64().unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // What a reboot takes: every mount and file beneath the pod directory (a tmpfs on a node).
    let dir = env.pod_dir(&pod.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut beneath: Vec<&str> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&dir))
            .collect();
        if beneath.is_empty() {
            break;
        }
        beneath.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in beneath {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        assert!(
            Instant::now() < deadline,
            "mounts beneath {}",
            dir.display()
        );
    }
    crius_proto::tree::remove(&dir).unwrap();
    stop_pod(&mut env.daemon, &pod.0).await.unwrap();
    remove_pod(&mut env.daemon, &pod.0).await.unwrap();
    assert!(
        !writable.exists(),
        "{} outlived its pod",
        writable.display()
    );
    assert_eq!(leftovers(&env.daemon), nothing_left());
}

#[tokio::test]
async fn kill_9_keeps_pods_containers_exit_codes_finish_times_and_logs() {
    let mut env = setup(false).await;
    let pod = env.pod("survivor", true).await;
    let stopped_pod = env.pod("stopped", false).await;
    stop_pod(&mut env.daemon, &stopped_pod.0).await.unwrap();
    let running = env
        .run(
            &pod,
            env.container_config("running", "echo up; exec sleep 1000"),
        )
        .await;
    let exited = env
        .run(&pod, env.container_config("exited", "echo bye; exit 3"))
        .await;
    env.wait_exit(&exited, Duration::from_secs(20)).await;
    let created = env
        .create(&pod, env.container_config("created", "exit 0"))
        .await
        .unwrap();
    // Exits while criusd is down.
    let late = env
        .run(
            &pod,
            env.container_config("late", "echo before; sleep 2; echo after; exit 7"),
        )
        .await;
    let before_pods = pods(&mut env.daemon).await;
    let mut before = HashMap::new();
    for id in [&running, &exited, &created] {
        before.insert(id.clone(), env.status(id).await);
    }
    let ips_before = env.daemon.network.as_ref().unwrap().allocated_ips();
    let cache_before = names(&env.daemon.paths.root.join("cni"));
    assert_eq!(ips_before.len(), 1, "the running pod's address only");

    env.daemon
        .signal_and_wait(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // `late` exits while criusd is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.daemon.restart().await.unwrap();

    let mut after_pods = pods(&mut env.daemon).await;
    let mut before_pods = before_pods;
    before_pods.sort_by(|a, b| a.id.cmp(&b.id));
    after_pods.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(before_pods, after_pods, "pods are reported as before");
    for (id, was) in &before {
        let now = env.status(id).await;
        assert_eq!(&now, was, "container {id} is reported as before");
    }
    let s = env.status(&late).await;
    assert_eq!(s.state, ContainerState::ContainerExited as i32, "{s:?}");
    assert_eq!(s.exit_code, 7);
    assert_eq!(s.reason, "Error");
    assert!(
        u128::try_from(s.finished_at).unwrap() > killed_at,
        "finished while criusd was down: {s:?}"
    );
    assert_eq!(env.stdout("late"), ["before", "after"]);
    assert_eq!(env.stdout("running"), ["up"]);
    assert_eq!(env.stdout("exited"), ["bye"]);
    // No ADD or DEL ran at restart: the same address and cache entry, no more.
    assert_eq!(
        env.daemon.network.as_ref().unwrap().allocated_ips(),
        ips_before
    );
    assert_eq!(names(&env.daemon.paths.root.join("cni")), cache_before);
    // The running container still answers.
    let out = env.exec(&running, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(out.stdout, b"alive\n");
    // And everything cleans up.
    for p in [&pod.0, &stopped_pod.0] {
        stop_pod(&mut env.daemon, p).await.unwrap();
        remove_pod(&mut env.daemon, p).await.unwrap();
    }
    assert_eq!(leftovers(&env.daemon), nothing_left());
}

/// What a pod holds of its containers on the host: container directories, mounts under the
/// pod directory other than the pod's own, and cgroups beneath the pod cgroup.
fn container_leftovers(d: &Criusd, pod_id: &str) -> Vec<String> {
    let pod_dir = d.paths.state.join("pods").join(pod_id);
    let mut out: Vec<String> = names(&pod_dir.join("containers"))
        .into_iter()
        .map(|n| format!("dir {n}"))
        .collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let containers = pod_dir.join("containers").display().to_string();
    out.extend(
        mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&containers))
            .map(|m| format!("mount {m}")),
    );
    for c in pod_cgroups(pod_id) {
        out.extend(
            names(&c)
                .into_iter()
                .filter(|n| n.starts_with("crius-") && c.join(n).is_dir())
                .map(|n| format!("cgroup {}", c.join(n).display())),
        );
    }
    out
}

async fn containers_of(d: &mut Criusd, pod_id: &str) -> Vec<Container> {
    d.runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod_id.into(),
                ..ContainerFilter::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
}

async fn remove_container(d: &mut Criusd, id: &str) -> Result<(), tonic::Status> {
    d.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .map(|_| ())
}

/// Removes the test image and checks its layers went (no lease kept them), then pulls it
/// again.
async fn image_is_freed(env: &mut crius_tests::env::Env, failpoint: &str) {
    let spec = ImageSpec {
        image: env.image.clone(),
        ..ImageSpec::default()
    };
    env.daemon
        .images
        .remove_image(RemoveImageRequest {
            image: Some(spec.clone()),
        })
        .await
        .unwrap();
    let layers = env.daemon.paths.root.join("layers");
    assert!(
        names(&layers).is_empty(),
        "{failpoint}: a lease kept layers {:?}",
        names(&layers)
    );
    env.daemon
        .images
        .pull_image(PullImageRequest {
            image: Some(spec),
            ..PullImageRequest::default()
        })
        .await
        .unwrap();
}

/// Creates, starts and checks `name` again (the client's retry after the crash), then removes
/// it.
async fn retry_works(
    env: &mut crius_tests::env::Env,
    pod: &(String, PodSandboxConfig),
    name: &str,
) {
    let id = env
        .create(
            pod,
            env.container_config(name, "echo again; exec sleep 1000"),
        )
        .await
        .unwrap();
    env.start(&id).await;
    let out = env.exec(&id, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(out.stdout, b"alive\n");
    remove_container(&mut env.daemon, &id).await.unwrap();
}

#[tokio::test]
async fn create_container_cut_at_any_step_is_rolled_back_at_restart() {
    let mut env = setup(false).await;
    let pod = env.pod("create-cut", false).await;
    for failpoint in [
        "create-container:leased",
        "create-container:recorded",
        "create-container:monitor-created",
    ] {
        arm(&mut env.daemon, failpoint).await;
        let err = env
            .create(&pod, env.container_config("cut", "exec sleep 1000"))
            .await
            .unwrap_err();
        eprintln!("{failpoint}: {err}");
        crashed(&mut env.daemon, failpoint).await;
        assert!(
            containers_of(&mut env.daemon, &pod.0).await.is_empty(),
            "{failpoint}: no container is left"
        );
        assert_eq!(
            container_leftovers(&env.daemon, &pod.0),
            Vec::<String>::new(),
            "{failpoint}"
        );
        image_is_freed(&mut env, failpoint).await;
        retry_works(&mut env, &pod, "cut").await;
        assert_eq!(
            container_leftovers(&env.daemon, &pod.0),
            Vec::<String>::new()
        );
    }
    // Cut after the container was committed, before the answer: it is kept, usable, and the
    // same name and attempt are taken.
    let failpoint = "create-container:committed";
    arm(&mut env.daemon, failpoint).await;
    env.create(
        &pod,
        env.container_config("kept", "echo kept; exec sleep 1000"),
    )
    .await
    .unwrap_err();
    crashed(&mut env.daemon, failpoint).await;
    let listed = containers_of(&mut env.daemon, &pod.0).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, ContainerState::ContainerCreated as i32);
    let again = env
        .create(&pod, env.container_config("kept", "exit 0"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again}");
    env.start(&listed[0].id).await;
    let out = env
        .exec(&listed[0].id, &["echo", "alive"], 10)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"alive\n");
    remove_container(&mut env.daemon, &listed[0].id)
        .await
        .unwrap();
    assert_eq!(
        container_leftovers(&env.daemon, &pod.0),
        Vec::<String>::new()
    );
    image_is_freed(&mut env, failpoint).await;
    retry_works(&mut env, &pod, "kept").await;

    stop_pod(&mut env.daemon, &pod.0).await.unwrap();
    remove_pod(&mut env.daemon, &pod.0).await.unwrap();
    assert_eq!(leftovers(&env.daemon), nothing_left());
}

#[tokio::test]
async fn start_and_remove_container_cut_short_are_completed_at_restart() {
    let mut env = setup(false).await;
    let pod = env.pod("start-remove-cut", false).await;
    // StartContainer cut after the monitor started it: it runs, and is reported running.
    let failpoint = "start-container:started";
    let id = env
        .create(
            &pod,
            env.container_config("started", "echo up; exec sleep 1000"),
        )
        .await
        .unwrap();
    arm(&mut env.daemon, failpoint).await;
    env.daemon
        .runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    crashed(&mut env.daemon, failpoint).await;
    assert_eq!(
        env.status(&id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let out = env.exec(&id, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(out.stdout, b"alive\n");
    remove_container(&mut env.daemon, &id).await.unwrap();
    assert_eq!(
        container_leftovers(&env.daemon, &pod.0),
        Vec::<String>::new()
    );
    image_is_freed(&mut env, failpoint).await;

    // RemoveContainer cut after the monitor removed it, and after its record went.
    for failpoint in [
        "remove-container:monitor-removed",
        "remove-container:forgotten",
    ] {
        let id = env
            .run(&pod, env.container_config("removed", "exec sleep 1000"))
            .await;
        arm(&mut env.daemon, failpoint).await;
        remove_container(&mut env.daemon, &id).await.unwrap_err();
        crashed(&mut env.daemon, failpoint).await;
        assert!(
            containers_of(&mut env.daemon, &pod.0).await.is_empty(),
            "{failpoint}: the container is gone"
        );
        remove_container(&mut env.daemon, &id).await.unwrap();
        assert_eq!(
            container_leftovers(&env.daemon, &pod.0),
            Vec::<String>::new(),
            "{failpoint}"
        );
        image_is_freed(&mut env, failpoint).await;
        retry_works(&mut env, &pod, "removed").await;
    }
    stop_pod(&mut env.daemon, &pod.0).await.unwrap();
    remove_pod(&mut env.daemon, &pod.0).await.unwrap();
    assert_eq!(leftovers(&env.daemon), nothing_left());
}
