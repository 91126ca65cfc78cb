//! Boundaries: what a client on the node, a container or root in a user-namespaced pod can
//! reach. The CRI socket is root's alone, the streaming server listens on loopback, no state
//! or log file is world-writable, a container sees neither criusd nor another pod through
//! /proc or /run, and root in a user-namespaced pod gains nothing from a host directory
//! bind-mounted without an id mapping.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::setup;

/// Directories whose contents belong to images or containers, not to criusd: image layers,
/// a container's rootfs layers and copies of its volumes, and the pod's `/dev/shm`.
const CONTENT_DIRS: [&str; 7] = [
    "layers", "upper", "work", "merged", "rootfs", "mounts", "shm",
];

/// Every path under `dir` (not following symlinks), not descending into [`CONTENT_DIRS`].
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                let content = CONTENT_DIRS.contains(&e.file_name().to_string_lossy().as_ref());
                if m.is_dir() && !content {
                    stack.push(p.clone());
                }
                if !content {
                    out.push((p, m));
                }
            }
        }
    }
    out
}

/// Waits until the container's log has `n` stdout lines.
async fn wait_lines(env: &crius_tests::env::Env, name: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = env.stdout(name);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: {:?}",
            env.log_lines(name)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn socket_streaming_and_files_are_closed_to_others() {
    let mut env = setup(false).await;
    let pod = env.pod("files", true).await;
    let id = env
        .run(
            &pod,
            env.container_config("files", "echo hi; exec sleep 1000"),
        )
        .await;
    wait_lines(&env, "files", 1).await;

    // The CRI socket: root's, 0600.
    let meta = std::fs::metadata(&env.daemon.paths.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode {:o}", meta.mode());
    assert_eq!(meta.uid(), 0);

    // The streaming server listens on loopback unless told otherwise.
    let url = env
        .daemon
        .runtime
        .exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..ExecRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "exec URL {url}");

    // Nothing criusd or a monitor wrote is writable by others: no world-writable file, and no
    // world-writable directory (sticky or not).
    let mut checked = 0;
    for root in [
        env.daemon.paths.root.clone(),
        env.daemon.paths.state.clone(),
        env.logs.path().to_path_buf(),
    ] {
        for (path, m) in walk(&root) {
            if m.file_type().is_symlink() {
                continue;
            }
            checked += 1;
            assert_eq!(
                m.mode() & 0o002,
                0,
                "{} is world-writable ({:o})",
                path.display(),
                m.mode()
            );
        }
    }
    assert!(checked > 10, "checked {checked} paths");
    let log = env.logs.path().join("files.log");
    let m = std::fs::metadata(&log).unwrap();
    assert_eq!(m.mode() & 0o022, 0, "log mode {:o}", m.mode());
    // The state and root directories are not listable by others.
    for d in [&env.daemon.paths.root, &env.daemon.paths.state] {
        let m = std::fs::metadata(d).unwrap();
        assert_eq!(m.mode() & 0o006, 0, "{} mode {:o}", d.display(), m.mode());
    }
}

#[tokio::test]
async fn a_container_sees_neither_criusd_nor_another_pod() {
    let mut env = setup(false).await;
    let other = env.pod("other", false).await;
    let marker = "crius-boundary-marker-4711";
    let _other_c = env
        .run(
            &other,
            env.container_config("other", &format!("echo {marker}; exec sleep 1000 {marker}")),
        )
        .await;
    wait_lines(&env, "other", 1).await;
    let pod = env.pod("probe", false).await;
    let probe = env
        .run(&pod, env.container_config("probe", "exec sleep 1000"))
        .await;
    let criusd_pid = env.daemon.pid().unwrap();
    let state_dir = env.daemon.paths.state.display().to_string();

    // Every process the container can see, by command line; the pod's pause process (pid 1,
    // a clone of the monitor) shows `pause`, not the monitor's arguments.
    let out = env
        .exec(
            &probe,
            &[
                "/bin/sh",
                "-c",
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done",
            ],
            10,
        )
        .await
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(seen.contains("sleep 1000"), "sees itself: {seen}");
    assert!(!seen.contains("criusd"), "sees criusd or a monitor: {seen}");
    assert!(
        !seen.contains(&state_dir),
        "sees crius' state directory: {seen}"
    );
    let pid1 = env
        .exec(&probe, &["cat", "/proc/1/cmdline"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&pid1.stdout).trim_end_matches('\0'),
        "pause"
    );
    // The pause process has an empty tmpfs for its root: through /proc/1 (root, cwd) the
    // container reaches nothing of the host's filesystem, if it may look at all.
    for path in ["/proc/1/root/", "/proc/1/cwd/"] {
        let out = env.exec(&probe, &["ls", "-a", path], 10).await.unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.exit_code != 0 || listed.split_whitespace().all(|e| e == "." || e == ".."),
            "{path} shows {listed:?}"
        );
    }
    // Nor its memory or environment (the monitor's, from which it was cloned): the pause
    // process of a pod without a user namespace is not dumpable, and its environment is
    // scrubbed in any case.
    for path in ["/proc/1/environ", "/proc/1/maps", "/proc/1/mem"] {
        let out = env.exec(&probe, &["cat", path], 10).await.unwrap();
        assert!(
            out.exit_code != 0 || out.stdout.iter().all(|b| *b == 0),
            "{path} is readable: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(!seen.contains(marker), "sees the other pod: {seen}");

    // criusd's pid (if it exists at all in the pod's namespace) is not criusd.
    let out = env
        .exec(
            &probe,
            &[
                "/bin/sh",
                "-c",
                &format!("cat /proc/{criusd_pid}/cmdline 2>/dev/null; true"),
            ],
            10,
        )
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("criusd"),
        "{:?}",
        out
    );

    // /run and the mount table name neither crius' state nor the other pod.
    let out = env
        .exec(
            &probe,
            &["/bin/sh", "-c", "ls -laR /run 2>&1; ls -la / 2>&1"],
            10,
        )
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!listing.contains("crius.sock"), "{listing}");
    assert!(!listing.contains("monitor.sock"), "{listing}");
    assert!(!listing.contains(&other.0), "{listing}");
    // The paths a container could try: the other pod's directory and criusd's socket do not
    // exist in its mount namespace.
    let other_dir = format!("{state_dir}/pods/{}", other.0);
    let out = env
        .exec(
            &probe,
            &[
                "/bin/sh",
                "-c",
                &format!(
                    "ls {other_dir} 2>&1; ls {} 2>&1; ls /proc/1/root/{other_dir} 2>&1; echo done",
                    env.daemon.paths.socket.display()
                ),
            ],
            10,
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("monitor.sock"), "{text}");
    assert!(!text.contains("state.json"), "{text}");
    assert_eq!(
        text.matches("No such file or directory").count(),
        2,
        "{text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
}

#[tokio::test]
async fn userns_root_gains_nothing_from_an_unmapped_host_directory() {
    let mut env = setup(false).await;
    let host = tempfile::Builder::new()
        .prefix("crius-boundary-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host-only\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = host.path().join("public");
    std::fs::write(&public, "read-only for others\n").unwrap();
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before: Vec<_> = [&secret, &public]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode(), std::fs::read(p).unwrap())
        })
        .collect();

    let pod = env.pod("escape", true).await;
    let mut config = env.container_config("escape", "exec sleep 1000");
    config.mounts = vec![Mount {
        container_path: "/host".into(),
        host_path: host.path().display().to_string(),
        readonly: false,
        ..Mount::default()
    }];
    let id = env.run(&pod, config).await;

    // Each attempt prints "denied" or "DONE"; root in the pod is uid 0 there.
    let attempts = [
        ("id -u", None),
        ("cat /host/secret", Some("read the 0600 file")),
        ("echo x >> /host/public", Some("write a host file")),
        ("echo x > /host/new", Some("create a file")),
        ("rm -f /host/secret", Some("remove a host file")),
        ("mv /host/public /host/moved", Some("rename a host file")),
        ("chmod 666 /host/secret", Some("chmod a host file")),
        ("chown 0:0 /host/secret", Some("chown a host file")),
        ("chmod 777 /host", Some("chmod the directory")),
        ("ln /host/secret /host/link", Some("hard-link a host file")),
        (
            "touch -d 2000-01-01 /host/public",
            Some("set a host file's times"),
        ),
        ("mkdir /host/d", Some("make a directory")),
    ];
    for (cmd, what) in attempts {
        let out = env.exec(&id, &["/bin/sh", "-c", cmd], 10).await.unwrap();
        match what {
            None => assert_eq!(out.stdout, b"0\n", "root in the pod"),
            Some(what) => assert_ne!(
                out.exit_code,
                0,
                "root in a user-namespaced pod could {what}: {cmd}: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
        }
    }
    let out = env
        .exec(&id, &["stat", "-c", "%u:%g %a", "/host/secret"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "65534:65534 600\n",
        "host root's file is the overflow id in the pod"
    );

    env.daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .unwrap();
    let after: Vec<_> = [&secret, &public]
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid(), m.mode(), std::fs::read(p).unwrap())
        })
        .collect();
    assert_eq!(before, after, "the host's files are untouched");
    let mut left: Vec<String> = std::fs::read_dir(host.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["public", "secret"]);
    let m = std::fs::metadata(host.path()).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o755);
}
