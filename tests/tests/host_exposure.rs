//! Host-side exposure: what a local unprivileged user, a user-namespaced pod's mapped uid or a
//! hostile image can reach of what crius leaves on the host. Each test plays the attacker for
//! real: host commands run as uid 65534 or as the pod's host uid, images carry FIFOs and device
//! nodes, requests name paths and cgroups outside their place.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::{Env, HOST_ID, setup};
use crius_tests::image::{BUSYBOX_GROUP, BUSYBOX_PASSWD, Compression, Entry, Image, Layer};

/// The unprivileged host user the attacks run as.
const NOBODY: u32 = 65534;

/// Runs `script` with the host's `/bin/sh` as `uid`:`uid` (no supplementary groups); returns
/// whether it succeeded and what it printed.
fn host_sh_as(uid: u32, script: &str) -> (bool, String) {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(uid)
        .current_dir("/")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn pod_dir(env: &Env, pod: &str) -> PathBuf {
    env.daemon.paths.state.join("pods").join(pod)
}

/// The busybox entries with `/etc/passwd` replaced by `passwd`.
fn busybox_with_passwd(passwd: Entry) -> Image {
    let mut entries = crius_tests::image::busybox_entries(BUSYBOX_PASSWD, BUSYBOX_GROUP).unwrap();
    entries.retain(|e| e.name != b"etc/passwd");
    entries.push(passwd);
    Image::new(vec![Layer::new(&entries, Compression::Gzip).unwrap()])
        .with_cmd(&["sh"])
        .with_env(&format!("PATH={}", crius_tests::image::DEFAULT_PATH))
}

/// Mount points at or below `dir`, with their per-mount options, from mountinfo.
fn mounts_below(dir: &Path) -> Vec<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f.get(4)?.replace("\\040", " ");
            let opts = (*f.get(5)?).to_owned();
            point.starts_with(&prefix).then_some((point, opts))
        })
        .collect()
}

/// Point 1: the pod's view of image layers holds only its own layers, is read-only, nosuid
/// and nodev; the mapped uid cannot write an image layer through it.
#[tokio::test]
async fn layer_views_are_read_only_and_hold_only_the_pods_layers() {
    let mut env = setup(false).await;
    // A second image in the store, with a layer of its own the pod does not use.
    let other = crius_tests::image::busybox().unwrap().with_layer(
        Layer::new(&[Entry::file("other-image", "x", 0o644)], Compression::Gzip).unwrap(),
    );
    env.push_and_pull(other, "crius/other:1").await;
    let store: Vec<String> = std::fs::read_dir(env.daemon.paths.root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(store.len(), 2, "layer store {store:?}");

    let pod = env.pod("views", true).await;
    // Root in the pod makes a setuid-root copy of a binary in its writable layer.
    env.run(
        &pod,
        env.container_config(
            "views",
            "cp /bin/busybox /tmp/suid && chmod 4755 /tmp/suid && echo ready; exec sleep 1000",
        ),
    )
    .await;
    env.wait_stdout("views", 1).await;
    let dir = pod_dir(&env, &pod.0);
    let views = dir.join("layers");
    // Every idmapped mount the host sees below the pod: the pod's files and volumes staged
    // for its containers, and its layer views where the kernel needs them.
    for (point, _) in mounts_below(&dir)
        .into_iter()
        .filter(|(_, opts)| opts.split(',').any(|o| o == "idmapped"))
    {
        assert!(
            point.contains("/mounts/") || point.starts_with(&views.display().to_string()),
            "an idmapped mount {point} on the host"
        );
    }
    let used: Vec<String> = if views.exists() {
        // Attached views (kernels before 6.15): only the pod's layers, read-only, nosuid,
        // nodev, and not writable even by root.
        let names: Vec<String> = std::fs::read_dir(&views)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "the pod's layer views {names:?} (store {store:?})"
        );
        assert!(store.contains(&names[0]), "{names:?} not in {store:?}");
        let mounts = mounts_below(&views);
        assert_eq!(mounts.len(), 1, "{mounts:?}");
        for (point, opts) in &mounts {
            let opts: Vec<&str> = opts.split(',').collect();
            for want in ["ro", "nosuid", "nodev"] {
                assert!(opts.contains(&want), "{point}: {opts:?} lacks {want}");
            }
        }
        let layer = views.join(&names[0]);
        let (ok, out) = host_sh_as(
            HOST_ID,
            &format!("echo hacked >> {}/etc/passwd", layer.display()),
        );
        assert!(!ok, "the pod's uid wrote an image layer: {out}");
        let err = std::fs::OpenOptions::new()
            .append(true)
            .open(layer.join("etc/passwd"))
            .expect_err("the layer view is writable");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        names
    } else {
        // The rootfs stacks the layers of a detached idmapped clone of the store: no view of
        // any layer is attached on the host (the check above).
        store.clone()
    };
    // The pod's host uid cannot write an image file in the store either.
    for name in &used {
        let layer = env.daemon.paths.root.join("layers").join(name);
        let (ok, out) = host_sh_as(
            HOST_ID,
            &format!("echo hacked >> {}/etc/passwd", layer.display()),
        );
        assert!(!ok, "the pod's uid wrote an image layer: {out}");
        if let Ok(passwd) = std::fs::read_to_string(layer.join("etc/passwd")) {
            assert!(!passwd.contains("hacked"), "{passwd}");
        }
    }

    // The setuid copy in the container's writable layer is out of reach of host users.
    let rootfs = std::fs::read_dir(dir.join("containers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("rootfs");
    let (ok, out) = host_sh_as(NOBODY, &format!("{}/tmp/suid id -u", rootfs.display()));
    assert!(!ok, "uid {NOBODY} ran the pod's setuid binary: {out}");
    assert!(
        out.contains("Permission denied"),
        "expected a permission error: {out}"
    );
}

/// Points 2 and 3: no host user but root (and, for traversal only, the pod's mapped root) can
/// enter a pod's directory, run or read anything in a container's root filesystem, write its
/// `/dev/shm`, or read a spec, environment, annotation or record crius wrote.
#[tokio::test]
async fn host_users_cannot_reach_pods_or_their_secrets() {
    const SECRET: &str = "s3cr3t-7f1d9c";
    let mut env = setup(false).await;
    let mut pods = Vec::new();
    for (name, userns) in [("secrets-plain", false), ("secrets-userns", true)] {
        let mut config = crius_tests::env::pod_config(name, userns, env.logs.path());
        config.annotations.insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            SECRET.into(),
        );
        let pod = env.pod_from(config).await;
        let mut c = env.container_config(name, "echo up; exec sleep 1000");
        c.envs.push(KeyValue {
            key: "DB_PASSWORD".into(),
            value: SECRET.into(),
        });
        env.run(&pod, c).await;
        env.wait_stdout(name, 1).await;
        pods.push(pod);
    }

    let mut secret_files = Vec::new();
    let mut stack = vec![
        env.daemon.paths.root.clone(),
        env.daemon.paths.state.clone(),
    ];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                // Image and container content, not crius' own files.
                if ![
                    "layers", "rootfs", "upper", "work", "mounts", "shm", "blobs",
                ]
                .contains(&name.as_str())
                {
                    stack.push(path);
                }
            } else if meta.is_file() && meta.len() < (64 << 20) {
                let data = std::fs::read(&path).unwrap_or_default();
                if data.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
                    secret_files.push((path, meta.mode()));
                }
            }
        }
    }
    let names: Vec<String> = secret_files
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The environment (the containers' runtime specs) and the annotation (the metadata
    // database) are on disk: each must be root's alone.
    assert!(names.iter().any(|n| n == "config.json"), "{names:?}");
    assert!(names.iter().any(|n| n == "metadata.redb"), "{names:?}");
    for (path, mode) in &secret_files {
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {:o}",
            path.display(),
            mode & 0o7777
        );
        let (ok, out) = host_sh_as(NOBODY, &format!("cat '{}'", path.display()));
        assert!(!ok, "uid {NOBODY} read {}: {out}", path.display());
    }
    let db = env.daemon.paths.root.join("metadata.redb");
    assert_eq!(std::fs::metadata(&db).unwrap().mode() & 0o777, 0o600);

    for (pod, _) in &pods {
        let dir = pod_dir(&env, pod);
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert!(
            mode == 0o700 || mode == 0o710,
            "{} is {mode:o}",
            dir.display()
        );
        let (ok, out) = host_sh_as(NOBODY, &format!("ls {}", dir.display()));
        assert!(!ok, "uid {NOBODY} listed {}: {out}", dir.display());
        let rootfs = std::fs::read_dir(dir.join("containers"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("rootfs");
        for attack in [
            format!("{}/bin/busybox true", rootfs.display()),
            format!("cat {}/etc/passwd", rootfs.display()),
            format!("echo x > {}/shm/planted", dir.display()),
            format!("cat {}/config.json", rootfs.parent().unwrap().display()),
        ] {
            let (ok, out) = host_sh_as(NOBODY, &attack);
            assert!(!ok, "uid {NOBODY}: `{attack}` worked: {out}");
        }
    }
    // Root in the user-namespaced pod still reaches its own root filesystem and /dev/shm.
    let userns_pod = &pods[1].0;
    let containers = env
        .daemon
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: userns_pod.clone(),
                ..ContainerFilter::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    let out = env
        .exec(
            &containers[0].id,
            &["sh", "-c", "echo x > /dev/shm/f && cat /dev/shm/f && id -u"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n0\n");
}

/// Point 9: a user-namespaced pod's `/dev/shm` is its root's, mode 1777, inside.
#[tokio::test]
async fn user_namespaced_shm_is_owned_by_the_pods_root() {
    let mut env = setup(false).await;
    let pod = env.pod("shm", true).await;
    env.run(
        &pod,
        env.container_config("shm", "stat -c '%u %g %a' /dev/shm; exec sleep 1000"),
    )
    .await;
    let lines = env.wait_stdout("shm", 1).await;
    assert_eq!(lines[0], "0 0 1777");
}

/// Point 4: an image whose `/etc/passwd` is a FIFO or a device node is never read through it:
/// CreateContainer neither hangs nor reads the host device, and the pod's other container
/// keeps running and logging.
#[tokio::test]
async fn identity_files_that_are_not_regular_are_not_read() {
    let mut env = setup(false).await;
    let fifo = env
        .push_and_pull(
            busybox_with_passwd(Entry::fifo("etc/passwd", 0o644)),
            "crius/fifo-passwd:1",
        )
        .await;
    // A block device of this host (the first one listed), else /dev/urandom.
    let (kind, major, minor) = std::fs::read_dir("/sys/dev/block")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .and_then(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (a, b) = name.split_once(':')?;
            Some(("block", a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or(("char", 1, 9));
    let device = if kind == "block" {
        Entry::block_device("etc/passwd", major, minor, 0o644)
    } else {
        Entry::char_device("etc/passwd", major, minor, 0o644)
    };
    let dev = env
        .push_and_pull(busybox_with_passwd(device), "crius/dev-passwd:1")
        .await;

    let pod = env.pod("ids", false).await;
    let steady = env
        .run(
            &pod,
            env.container_config("steady", "while true; do echo tick; sleep 0.1; done"),
        )
        .await;
    env.wait_stdout("steady", 1).await;

    for (name, image) in [("fifo", &fifo), ("device", &dev)] {
        let mut c = env.container_config(name, "echo \"home=$HOME\"; exec sleep 1000");
        c.image = Some(ImageSpec {
            image: image.clone(),
            ..ImageSpec::default()
        });
        let created = tokio::time::timeout(Duration::from_secs(15), env.create(&pod, c))
            .await
            .unwrap_or_else(|_| panic!("CreateContainer with a {name} as /etc/passwd hung"))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        env.start(&created).await;
        let lines = env.wait_stdout(name, 1).await;
        assert_eq!(lines[0], "home=/", "{name}: {lines:?}");
    }
    // The sibling kept logging and still answers.
    let before = env.stdout("steady").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        env.stdout("steady").len() > before,
        "the sibling's log stalled"
    );
    tokio::time::timeout(
        Duration::from_secs(15),
        env.daemon.runtime.stop_container(StopContainerRequest {
            container_id: steady,
            timeout: 1,
        }),
    )
    .await
    .expect("StopContainer hung")
    .unwrap();
}

/// Point 10: a log path is relative and stays beneath the pod's log directory, at create and
/// at ReopenContainerLog; nothing is ever written outside it.
#[tokio::test]
async fn log_paths_cannot_leave_the_pods_log_directory() {
    let mut env = setup(false).await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("profile.sh");
    let pod = env.pod("logs", false).await;
    std::os::unix::fs::symlink(outside.path(), env.logs.path().join("evil")).unwrap();
    for log_path in [
        target.display().to_string(),
        format!(
            "../{}",
            outside.path().file_name().unwrap().to_string_lossy()
        ),
        "a/../../x.log".to_owned(),
        "evil/profile.sh".to_owned(),
    ] {
        let mut c = env.container_config("logs", "echo 'touch /tmp/pwned'");
        c.log_path = log_path.clone();
        let err = env.create(&pod, c).await.expect_err(&log_path);
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{log_path}: {err:?}"
        );
        assert!(err.message().contains("log_path"), "{err:?}");
    }
    // A directory swapped for a symlink after create: reopening refuses it.
    let mut c = env.container_config("rotated", "while true; do echo line; sleep 0.1; done");
    c.log_path = "rotated/0.log".into();
    let id = env.run(&pod, c).await;
    let dir = env.logs.path().join("rotated");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(dir.join("0.log"))
        .map(|m| m.len())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&dir, env.logs.path().join("rotated.old")).unwrap();
    std::os::unix::fs::symlink(outside.path(), &dir).unwrap();
    let err = env
        .daemon
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .expect_err("reopened through a symlink");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leaked: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert!(
        leaked.is_empty(),
        "written outside the log directory: {leaked:?}"
    );
    // The container is fine and a proper reopen works again.
    std::fs::remove_file(&dir).unwrap();
    env.daemon
        .runtime
        .reopen_container_log(ReopenContainerLogRequest { container_id: id })
        .await
        .unwrap();
    assert!(dir.join("0.log").is_file());
}

/// Point 11: a pod cannot be placed inside crius' own cgroups or another pod's.
#[tokio::test]
async fn cgroup_parent_cannot_nest_in_crius_or_another_pod() {
    let mut env = setup(false).await;
    let victim = env.pod("victim", false).await;
    for parent in [
        "/crius-monitors".to_owned(),
        format!("/crius/crius-{}", victim.0),
    ] {
        let mut config = crius_tests::env::pod_config("nested", false, env.logs.path());
        config.linux.as_mut().unwrap().cgroup_parent = parent.clone();
        let err = env
            .daemon
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .expect_err(&parent);
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{parent}: {err:?}"
        );
        assert!(err.message().contains("cgroup_parent"), "{err:?}");
    }
}

/// Removes the probe cgroups a failing run made on the host, also on panic.
struct ProbeCgroups(String);

impl ProbeCgroups {
    /// Removes them; returns those that existed.
    fn remove(&self) -> Vec<PathBuf> {
        let mut made = Vec::new();
        let mut candidates = vec![Path::new("/sys/fs/cgroup").join(&self.0)];
        for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            candidates.push(e.path().join(&self.0));
        }
        for p in candidates {
            if p.exists() {
                let _ = std::fs::remove_dir(&p);
                made.push(p);
            }
        }
        made
    }
}

impl Drop for ProbeCgroups {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Point 12: a non-privileged container of a host-network pod sees `/sys` read-only in every
/// submount: it cannot make cgroups or change limits in the host's hierarchies. Without a
/// user namespace it has a sysfs of its own, without the host's submounts (tracefs, debugfs,
/// securityfs, bpf): none of the host's mounts below `/sys` but its own cgroups.
#[tokio::test]
async fn host_network_containers_cannot_write_the_hosts_sys() {
    let mut env = setup(false).await;
    let pod = env
        .pod_from(crius_tests::env::on_host_network(
            crius_tests::env::pod_config("hostnet", false, env.logs.path()),
        ))
        .await;
    let probe = format!("crius-sysprobe-{}", std::process::id());
    let script = format!(
        "for d in /sys/fs/cgroup/* /sys/fs/cgroup; do mkdir \"$d/{probe}\" 2>/dev/null && echo \"WROTE $d\"; done; \
         for f in $(find /sys/fs/cgroup -maxdepth 3 -name memory.max -o -name memory.limit_in_bytes -o -name cgroup.freeze | head -40); do \
           v=$(cat \"$f\"); (echo \"$v\" > \"$f\") 2>/dev/null && echo \"WROTE $f\"; done; \
         awk '$5 ~ \"^/sys\" && $6 !~ \"(^|,)ro(,|$)\" {{print \"RW \" $5}}' /proc/self/mountinfo; \
         awk '$5 ~ \"^/sys/\" && $5 !~ \"^/sys/fs/cgroup\" {{print \"HOST \" $5}}' /proc/self/mountinfo; \
         echo done; exec sleep 1000"
    );
    let cleanup = ProbeCgroups(probe.clone());
    env.run(&pod, env.container_config("hostnet", &script))
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let lines = loop {
        let lines = env.stdout("hostnet");
        if lines.last().map(String::as_str) == Some("done") {
            break lines;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let made = cleanup.remove();
    // The sysfs check shows something only where the host has mounts below /sys besides its
    // cgroups (tracefs, debugfs, securityfs: every systemd node has some).
    let host_sys: Vec<_> = mounts_below(Path::new("/sys/"))
        .into_iter()
        .filter(|(point, _)| !point.starts_with("/sys/fs/cgroup"))
        .collect();
    if host_sys.is_empty() {
        eprintln!("no host mount below /sys but cgroups: the container's own sysfs is not shown");
    }
    assert_eq!(lines.last().map(String::as_str), Some("done"), "{lines:?}");
    assert_eq!(
        lines.len(),
        1,
        "the container wrote the host's /sys: {lines:?}"
    );
    assert!(made.is_empty(), "cgroups made on the host: {made:?}");
    // The host's own /sys is untouched: its cgroup mount is still read-write on the host (its
    // mode bits say nothing of that: cgroup2's root is 0555 on systemd hosts).
    let host = mounts_below(Path::new("/sys/fs/cgroup"));
    let top = host
        .iter()
        .find(|(point, _)| point == "/sys/fs/cgroup")
        .unwrap_or_else(|| panic!("no /sys/fs/cgroup mount: {host:?}"));
    assert!(top.1.split(',').any(|o| o == "rw"), "{top:?}");
}

/// The sum of the sizes of the files the directory `dir` itself holds: mounts beneath it (a
/// container's root, the binds staged for it) are not entered.
fn bytes_beneath(dir: &Path) -> u64 {
    let mount_points: std::collections::BTreeSet<PathBuf> =
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .collect();
    fn walk(dir: &Path, skip: &std::collections::BTreeSet<PathBuf>) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !skip.contains(&e.path()))
            .map(|e| match std::fs::symlink_metadata(e.path()) {
                Ok(m) if m.is_dir() => walk(&e.path(), skip),
                Ok(m) if m.is_file() => m.len(),
                _ => 0,
            })
            .sum()
    }
    walk(dir, &mount_points)
}

/// A container (no memory limit) that writes to its `/etc/resolv.conf`, `/etc/hosts` and
/// `/etc/hostname` fills the disk beneath crius' root, beside its writable layer, not the state
/// directory, which on a node is a tmpfs in the host's `/run`, where it would starve the host's
/// services of memory and space. With and without a user namespace; the files go with the pod.
#[tokio::test]
async fn what_a_container_writes_to_its_pod_files_stays_out_of_the_state_directory() {
    let mut env = setup(false).await;
    let root = env.daemon.paths.root.clone();
    for userns in [false, true] {
        let name = if userns { "files-u" } else { "files-p" };
        let pod = env.pod(name, userns).await;
        let script = "head -c 4194304 /dev/zero >> /etc/resolv.conf && \
            head -c 1048576 /dev/zero >> /etc/hosts && head -c 1048576 /dev/zero >> /etc/hostname \
            && echo written; sleep 300";
        env.run(&pod, env.container_config(name, script)).await;
        assert_eq!(env.wait_stdout(name, 1).await, ["written"], "{name}");
        let info = env
            .daemon
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.0.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info;
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let files = PathBuf::from(info["podFilesDir"].as_str().unwrap());
        assert!(files.starts_with(&root), "{name}: {}", files.display());
        let written = std::fs::metadata(files.join("resolv.conf")).unwrap().len();
        assert!(
            written >= 4 << 20,
            "{name}: resolv.conf has {written} bytes"
        );
        let state = bytes_beneath(&pod_dir(&env, &pod.0));
        assert!(
            state < 1 << 20,
            "{name}: the pod's state directory holds {state} bytes"
        );
        env.daemon
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();
        env.daemon
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();
        assert!(
            !files.exists(),
            "{name}: {} outlived its pod",
            files.display()
        );
    }
}
