//! What ordinary workloads and kubelet 1.33–1.36 expect: a process reopens its own stdio in
//! pods with and without a user namespace, procMount Unmasked, the configured stop signal, and
//! error messages that name the right kind of object.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::setup;
use crius_tests::image::{BUSYBOX_GROUP, BUSYBOX_PASSWD, Compression, Entry, Image, Layer};

fn run_as(config: &mut ContainerConfig, uid: i64) {
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .run_as_user = Some(Int64Value { value: uid });
}

/// A container reopens `/dev/stdout` and `/dev/stderr` (pipes) as root and as uid 1000, with
/// and without a user namespace; so does an exec.
#[tokio::test]
async fn processes_reopen_their_own_stdio() {
    let mut env = setup(false).await;
    for userns in [false, true] {
        let pod = env.pod(&format!("stdio-{userns}"), userns).await;
        for uid in [0, 1000] {
            let name = format!("stdio-{userns}-{uid}");
            let mut config = env.container_config(
                &name,
                "echo out > /dev/stdout; echo err > /dev/stderr; echo done; exec sleep 1000",
            );
            run_as(&mut config, uid);
            let id = env.run(&pod, config).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            // stdout and stderr are separate pipes, logged as each is read: "done" (stdout)
            // may be logged before "err" (stderr).
            let lines = loop {
                let lines = env.log_lines(&name);
                let seen = |stream: &str, text: &str| {
                    lines.iter().any(|(s, _, t)| s == stream && t == text)
                };
                if seen("stdout", "done") && seen("stderr", "err") {
                    break lines;
                }
                assert!(Instant::now() < deadline, "{name}: {lines:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let has =
                |stream: &str, text: &str| lines.iter().any(|(s, _, t)| s == stream && t == text);
            assert!(has("stdout", "out"), "{name}: {lines:?}");
            assert!(has("stderr", "err"), "{name}: {lines:?}");
            let out = env
                .exec(
                    &id,
                    &["sh", "-c", "echo o1 > /dev/stdout && echo e1 > /dev/stderr"],
                    10,
                )
                .await
                .unwrap();
            assert_eq!(
                (
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                    out.exit_code
                ),
                ("o1\n".to_owned(), "e1\n".to_owned(), 0),
                "{name}"
            );
        }
    }
}

/// An image shaped like nginx's: its log files are symlinks to /dev/stdout and /dev/stderr,
/// and its daemon opens them after start-up. In a `hostUsers: false` pod it serves on port 80
/// and its log lines reach the container log.
#[tokio::test]
async fn nginx_shaped_image_serves_and_logs_in_a_user_namespace() {
    let mut env = setup(false).await;
    let mut entries = crius_tests::image::busybox_entries(BUSYBOX_PASSWD, BUSYBOX_GROUP).unwrap();
    entries.extend([
        Entry::dir("var/log", 0o755),
        Entry::dir("var/log/nginx", 0o755),
        Entry::symlink("var/log/nginx/access.log", "/dev/stdout"),
        Entry::symlink("var/log/nginx/error.log", "/dev/stderr"),
        Entry::dir("www", 0o755),
        Entry::file("www/index.html", "hello from the pod\n", 0o644),
        Entry::file(
            "docker-entrypoint.sh",
            "#!/bin/sh\n\
             httpd -p 80 -h /www || exit 1\n\
             sleep 0.2\n\
             exec 3>>/var/log/nginx/access.log 4>>/var/log/nginx/error.log\n\
             echo 'start worker processes' >&4\n\
             while true; do\n\
               if wget -q -O /dev/null http://127.0.0.1/; then echo '127.0.0.1 \"GET / HTTP/1.1\" 200' >&3; fi\n\
               sleep 1\n\
             done\n",
            0o755,
        ),
    ]);
    let image = Image::new(vec![Layer::new(&entries, Compression::Gzip).unwrap()])
        .with_entrypoint(&["/docker-entrypoint.sh"])
        .with_env(&format!("PATH={}", crius_tests::image::DEFAULT_PATH));
    let reference = env.push_and_pull(image, "crius/nginx-shaped:1").await;
    let pod = env.pod("web", true).await;
    let mut config = env.container_config("web", "");
    config.command = Vec::new();
    config.image = Some(ImageSpec {
        image: reference,
        ..ImageSpec::default()
    });
    let id = env.run(&pod, config).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = env.log_lines("web");
        let access = lines
            .iter()
            .any(|(s, _, t)| s == "stdout" && t.contains("200"));
        let error = lines
            .iter()
            .any(|(s, _, t)| s == "stderr" && t.contains("start worker processes"));
        if access && error {
            break;
        }
        assert!(Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = env
        .exec(&id, &["wget", "-q", "-O", "-", "http://127.0.0.1:80/"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from the pod\n");
    let uid_map = env
        .exec(&id, &["cat", "/proc/self/uid_map"], 10)
        .await
        .unwrap();
    let map: Vec<String> = String::from_utf8_lossy(&uid_map.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(map[0], "0");
    assert_ne!(map[1], "0", "the pod has no user namespace: {map:?}");
}

/// kubelet's default masked and read-only lists for procMount Default, and empty lists for
/// Unmasked: applied exactly as sent.
#[tokio::test]
async fn proc_mount_lists_are_applied_as_sent() {
    // Paths of kubelet's default lists that exist on every kernel this runs on.
    const MASKED: [&str; 3] = ["/proc/acpi", "/proc/keys", "/proc/timer_list"];
    const READONLY: [&str; 2] = ["/proc/bus", "/proc/sys"];
    let mut env = setup(false).await;
    let pod = env.pod("procmount", true).await;
    let script = "awk '$5 ~ \"^/proc/\" {print $5}' /proc/self/mountinfo | sort; echo end; \
                  exec sleep 1000";
    for (name, masked, readonly) in [
        ("default", MASKED.to_vec(), READONLY.to_vec()),
        ("unmasked", Vec::new(), Vec::new()),
    ] {
        let mut config = env.container_config(name, script);
        let sc = config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default();
        sc.masked_paths = masked.iter().map(|p| (*p).to_owned()).collect();
        sc.readonly_paths = readonly.iter().map(|p| (*p).to_owned()).collect();
        env.run(&pod, config).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let lines = loop {
            let lines = env.stdout(name);
            if lines.last().map(String::as_str) == Some("end") {
                break lines;
            }
            assert!(Instant::now() < deadline, "{name}: {lines:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut want: Vec<String> = masked
            .iter()
            .chain(readonly.iter())
            .map(|p| (*p).to_owned())
            .collect();
        want.sort();
        want.push("end".into());
        assert_eq!(lines, want, "{name}");
    }
}

/// ContainerConfig.stop_signal is what StopContainer sends, before the image's STOPSIGNAL and
/// SIGTERM; ContainerStatus reports the signal in force.
#[tokio::test]
async fn stop_signal_is_configured_per_container() {
    let mut env = setup(false).await;
    let image = crius_tests::image::busybox()
        .unwrap()
        .with_stop_signal("SIGINT");
    let sigint_image = env.push_and_pull(image, "crius/stopsignal:1").await;
    let pod = env.pod("stop", false).await;
    let trap = "trap 'echo got INT; exit 0' INT; trap 'echo got USR1; exit 0' USR1; \
                trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done";
    for (name, image, signal, want, status_signal) in [
        (
            "config",
            Some(&sigint_image),
            Signal::Sigusr1,
            "got USR1",
            Signal::Sigusr1,
        ),
        (
            "image",
            Some(&sigint_image),
            Signal::RuntimeDefault,
            "got INT",
            Signal::Sigint,
        ),
        (
            "default",
            None,
            Signal::RuntimeDefault,
            "got TERM",
            Signal::Sigterm,
        ),
    ] {
        let mut config = env.container_config(name, trap);
        if let Some(image) = image {
            config.image = Some(ImageSpec {
                image: image.clone(),
                ..ImageSpec::default()
            });
        }
        config.stop_signal = signal.into();
        let id = env.run(&pod, config).await;
        env.wait_stdout(name, 1).await;
        assert_eq!(
            env.status(&id).await.stop_signal,
            status_signal as i32,
            "{name}"
        );
        env.daemon
            .runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 10,
            })
            .await
            .unwrap();
        let status = env.wait_exit(&id, Duration::from_secs(15)).await;
        assert_eq!(status.exit_code, 0, "{name}: {status:?}");
        let lines = env.stdout(name);
        assert_eq!(
            lines.last().map(String::as_str),
            Some(want),
            "{name}: {lines:?}"
        );
    }
    let mut config = env.container_config("bad", "true");
    config.stop_signal = 99;
    let err = env.create(&pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("stop_signal"), "{err:?}");
}

/// A missing container is "container <id> not found".
#[tokio::test]
async fn missing_containers_are_named_as_containers() {
    let mut env = setup(false).await;
    let err = env
        .daemon
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: "feedbeef".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "container \"feedbeef\" not found");
    let err = env
        .daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "feedbeef".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "pod sandbox \"feedbeef\" not found");
}

/// Each container of a pod reads its own limits under `/sys/fs/cgroup` (read-only), with and
/// without a user namespace: three containers with 64, 96 and 128 MiB memory limits each see
/// theirs.
#[tokio::test]
async fn containers_see_their_own_cgroup() {
    let mut env = setup(false).await;
    for userns in [false, true] {
        let pod = env.pod(&format!("cgroup-{userns}"), userns).await;
        for mib in [64i64, 96, 128] {
            let name = format!("cgroup-{userns}-{mib}");
            let script = "cat /sys/fs/cgroup/memory.max 2>/dev/null || \
                          cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
                          grep -E ':memory:|^0::' /proc/self/cgroup; \
                          for d in /sys/fs/cgroup /sys/fs/cgroup/*; do \
                            [ -L \"$d\" ] || mkdir \"$d/probe\" 2>/dev/null && echo \"WROTE $d\"; done; \
                          awk '$5 ~ \"^/sys/fs/cgroup\" && $6 !~ \"(^|,)ro(,|$)\" {print \"RW \" $5}' \
                            /proc/self/mountinfo; \
                          echo end; exec sleep 1000";
            let mut config = env.container_config(&name, script);
            config
                .linux
                .get_or_insert_default()
                .resources
                .get_or_insert_default()
                .memory_limit_in_bytes = mib << 20;
            let id = env.run(&pod, config).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            let lines = loop {
                let lines = env.stdout(&name);
                if lines.last().map(String::as_str) == Some("end") {
                    break lines;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: {:?}",
                    env.log_lines(&name)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(lines[0], (mib << 20).to_string(), "{name}: {lines:?}");
            // Its own cgroup namespace: the container's cgroup is its root (the memory
            // controller's line on v1, the unified one on a v2-only node).
            let own = lines
                .iter()
                .find(|l| l.contains(":memory:"))
                .or_else(|| lines.iter().find(|l| l.starts_with("0::")));
            assert!(own.is_some_and(|l| l.ends_with(":/")), "{name}: {lines:?}");
            // An exec'd process sees the same: it joins the container's cgroup namespace.
            let exec = env
                .exec(&id, &["cat", "/proc/self/cgroup"], 10)
                .await
                .expect("exec");
            let exec_lines: Vec<String> = String::from_utf8_lossy(&exec.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            let exec_own = exec_lines
                .iter()
                .find(|l| l.contains(":memory:"))
                .or_else(|| exec_lines.iter().find(|l| l.starts_with("0::")));
            assert_eq!(exec_own, own, "{name}: exec sees {exec_lines:?}");
            // And it is in the container's cgroup v2 directory (on a hybrid node too, where
            // the v2 line is not the namespace's root).
            let v2 = |l: &[String]| l.iter().find(|l| l.starts_with("0::")).cloned();
            assert_eq!(
                v2(&exec_lines),
                v2(&lines),
                "{name}: exec sees {exec_lines:?}"
            );
            let written: Vec<&String> = lines
                .iter()
                .filter(|l| l.starts_with("WROTE") || l.starts_with("RW"))
                .collect();
            assert!(written.is_empty(), "{name}: writable: {lines:?}");
        }
    }
}

/// A user-namespaced pod on the host network (KEP-5607) runs: its processes are in the host's
/// network namespace, root in it is an unprivileged host uid and cannot change the host's
/// network configuration, and Status says the runtime supports it.
#[tokio::test]
async fn user_namespace_with_host_network() {
    let mut env = setup(false).await;
    let status = env
        .daemon
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .features
            .as_ref()
            .is_some_and(|f| f.user_namespaces_host_network),
        "{status:?}"
    );
    let pod = env
        .pod_from(crius_tests::env::on_host_network(
            crius_tests::env::pod_config("hostnet-userns", true, env.logs.path()),
        ))
        .await;
    let script = "cat /proc/self/uid_map; \
                  ip link set lo mtu 1400 2>/dev/null && echo CHANGED-MTU; \
                  ip link add crius-probe type dummy 2>/dev/null && echo ADDED-LINK; \
                  echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo WROTE-SYSCTL; \
                  echo end; exec sleep 1000";
    let cid = env
        .run(&pod, env.container_config("hostnet-userns", script))
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = env.stdout("hostnet-userns");
        if lines.last().map(String::as_str) == Some("end") {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}",
            env.log_lines("hostnet-userns")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let map: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(map[0], "0");
    assert_ne!(map[1], "0", "no user namespace: {lines:?}");
    assert_eq!(
        lines.len(),
        2,
        "root in the pod changed the host's network: {lines:?}"
    );
    // The host's network namespace: the same interfaces as the host's.
    let inside = env.exec(&cid, &["cat", "/proc/net/dev"], 10).await.unwrap();
    let names = |text: &str| {
        let mut v: Vec<String> = text
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
            .collect();
        v.sort();
        v
    };
    let host = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    assert_eq!(
        names(&String::from_utf8_lossy(&inside.stdout)),
        names(&host)
    );
    let host_mtu = std::fs::read_to_string("/sys/class/net/lo/mtu").unwrap();
    assert_eq!(host_mtu.trim(), "65536");
}

/// A tty container's process reopens its terminal (`/dev/stdout` is the pty) as root and as
/// uid 1000, with and without a user namespace.
#[tokio::test]
async fn tty_containers_reopen_their_terminal() {
    let mut env = setup(false).await;
    for userns in [false, true] {
        let pod = env.pod(&format!("tty-{userns}"), userns).await;
        for uid in [0, 1000] {
            let name = format!("tty-{userns}-{uid}");
            let mut config = env.container_config(
                &name,
                "echo reopened > /dev/stdout && echo \"done-$(id -u)\"; exec sleep 1000",
            );
            config.tty = true;
            run_as(&mut config, uid);
            env.run(&pod, config).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let lines = env.log_lines(&name);
                let text: Vec<&str> = lines.iter().map(|(_, _, t)| t.trim_end()).collect();
                if text.iter().any(|t| t.starts_with("done-")) {
                    assert!(text.contains(&"reopened"), "{name}: {text:?}");
                    assert!(
                        text.contains(&format!("done-{uid}").as_str()),
                        "{name}: {text:?}"
                    );
                    break;
                }
                assert!(Instant::now() < deadline, "{name}: {text:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// ContainerStatus and ListContainers report the image as containerd does: `image_ref` is the
/// repository digest (`repo@sha256:…`), `image.user_specified_image` what kubelet sent, and
/// `image_id` the image id.
#[tokio::test]
async fn status_reports_the_repository_digest_and_the_users_image() {
    let mut env = setup(false).await;
    let pod = env.pod("digest", false).await;
    let mut config = env.container_config("digest", "exec sleep 1000");
    config.image.as_mut().unwrap().user_specified_image = "busybox:1".into();
    let id = env.run(&pod, config).await;
    let status = env.status(&id).await;
    let repo = env.image.rsplit_once(':').unwrap().0.to_owned();
    assert!(
        status.image_ref.starts_with(&format!("{repo}@sha256:")),
        "{} (image {})",
        status.image_ref,
        env.image
    );
    assert_eq!(
        status.image.as_ref().unwrap().user_specified_image,
        "busybox:1"
    );
    assert!(
        status.image_id.starts_with("sha256:"),
        "{}",
        status.image_id
    );
    let listed = env.containers().await;
    let c = listed.iter().find(|c| c.id == id).unwrap();
    assert_eq!(c.image_ref, status.image_ref);
    assert_eq!(c.image_id, status.image_id);
}

/// A privileged container needs a privileged pod sandbox (the CRI contract; kubelet sets the
/// pod's flag when any container is privileged): in a plain pod it is InvalidArgument naming
/// the field, in a privileged pod it runs.
#[tokio::test]
async fn privileged_containers_need_a_privileged_pod() {
    let mut env = setup(false).await;
    let privileged = |config: &mut ContainerConfig| {
        config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .privileged = true;
    };
    let pod = env.pod("unprivileged", false).await;
    let mut config = env.container_config("priv-in-plain", "true");
    privileged(&mut config);
    let err = env.create(&pod, config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("config.linux.security_context.privileged"),
        "{err:?}"
    );
    let pod = env.privileged_pod("privileged").await;
    let mut config = env.container_config("priv", "echo end; exec sleep 1000");
    privileged(&mut config);
    env.run(&pod, config).await;
    env.wait_end("priv").await;
}
