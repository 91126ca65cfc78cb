//! Storage as nodes need it: images of any depth within `max_image_layers` start, with and
//! without a user namespace, and each pod mounts its layer views once.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::{Env, setup};
use crius_tests::image::{Compression, Entry, Image, Layer};

/// Pushes `image` as `repo` and pulls it; returns its reference.
async fn push_and_pull(env: &mut Env, image: Image, repo: &str) -> String {
    let host = env.image.split('/').next().unwrap().to_owned();
    let pushed = image.push(&host, repo).await.unwrap();
    env.daemon
        .images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..ImageSpec::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap();
    pushed.reference
}

async fn wait_end(env: &Env, name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = env.stdout(name);
        if lines.last().map(String::as_str) == Some("end") {
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

/// busybox with 127 more layers on top, layer N adding `/layers/N` and the top one replacing a
/// file of the bottom one.
fn deep_image(depth: usize) -> Image {
    let mut image = crius_tests::image::busybox().unwrap();
    for n in 1..depth {
        let mut entries = vec![Entry::file(
            &format!("layers/{n:03}"),
            format!("{n}\n"),
            0o644,
        )];
        if n == depth - 1 {
            entries.push(Entry::file("etc/motd", "top layer\n", 0o644));
        }
        image = image.with_layer(Layer::new(&entries, Compression::Gzip).unwrap());
    }
    image
}

/// A 128-layer image starts in a pod with and without a user namespace; every layer is
/// visible and the topmost wins.
#[tokio::test]
async fn a_128_layer_image_starts_in_both_kinds_of_pod() {
    let mut env = setup(false).await;
    let reference = push_and_pull(&mut env, deep_image(128), "crius/deep:128").await;
    for userns in [false, true] {
        let name = format!("deep-{userns}");
        let pod = env.pod(&name, userns).await;
        let mut config = env.container_config(
            &name,
            "ls /layers | wc -l; cat /layers/001 /layers/127 /etc/motd; echo end; exec sleep 1000",
        );
        config.image = Some(ImageSpec {
            image: reference.clone(),
            ..ImageSpec::default()
        });
        let id = env
            .create(&pod, config)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        env.start(&id).await;
        let lines = wait_end(&env, &name).await;
        assert_eq!(lines, ["127", "1", "127", "top layer", "end"], "{name}");
    }
}

/// Several containers of one user-namespaced pod share its layer views: each layer is mounted
/// once per pod, not once per container.
#[tokio::test]
async fn layer_views_are_mounted_once_per_pod() {
    let mut env = setup(false).await;
    let pod = env.pod("views-once", true).await;
    for n in 0..4 {
        let name = format!("views-once-{n}");
        env.run(
            &pod,
            env.container_config(&name, "echo end; exec sleep 1000"),
        )
        .await;
        wait_end(&env, &name).await;
    }
    let views = env
        .daemon
        .paths
        .state
        .join("pods")
        .join(&pod.0)
        .join("layers");
    let prefix = views.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    assert_eq!(points.len(), 1, "{points:?}");
}

/// Every path below `dir` named `name` (not following symlinks, not into mounts' content).
fn find_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if e.file_name() == name {
                out.push(e.path());
            }
            let content = ["rootfs", "layers", "mounts", "shm"]
                .contains(&e.file_name().to_string_lossy().as_ref());
            if meta.is_dir() && !content {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Writable layers live on disk under the root (`<root>/containers/<pod>/<container>`), never
/// in the state directory; stats and ImageFsInfo count them there; removal and the start-up
/// sweep take them away.
#[tokio::test]
async fn writable_layers_live_under_the_root() {
    const MIB: u64 = 1 << 20;
    let mut env = setup(false).await;
    let root = env.daemon.paths.root.clone();
    let state = env.daemon.paths.state.clone();
    for userns in [false, true] {
        let name = format!("disk-{userns}");
        let pod = env.pod(&name, userns).await;
        let id = env
            .run(
                &pod,
                env.container_config(
                    &name,
                    "dd if=/dev/zero of=/data.bin bs=1M count=4 2>/dev/null; echo end; \
                     exec sleep 1000",
                ),
            )
            .await;
        wait_end(&env, &name).await;
        let upper = root.join("containers").join(&pod.0).join(&id).join("upper");
        let data = std::fs::metadata(upper.join("data.bin")).unwrap();
        assert_eq!(data.len(), 4 * MIB, "{name}");
        assert!(
            find_named(&state, "upper").is_empty(),
            "{name}: an upper dir in the state"
        );
        let stats = env
            .daemon
            .runtime
            .container_stats(ContainerStatsRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let layer = stats.writable_layer.unwrap();
        assert!(
            layer.used_bytes.unwrap().value >= 4 * MIB,
            "{name}: {layer:?}"
        );
        env.daemon
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
        assert!(
            !upper.exists(),
            "{name}: the writable layer outlived its container"
        );
        env.daemon
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.0.clone(),
            })
            .await
            .unwrap();
        assert!(!root.join("containers").join(&pod.0).exists(), "{name}");
    }
    // ImageFsInfo names the filesystem the writable layers are on.
    let pod = env.pod("disk-fs", false).await;
    env.run(
        &pod,
        env.container_config(
            "disk-fs",
            "dd if=/dev/zero of=/f bs=1M count=2 2>/dev/null; echo end; exec sleep 1000",
        ),
    )
    .await;
    wait_end(&env, "disk-fs").await;
    let info = env
        .daemon
        .images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let containers = &info.container_filesystems[0];
    assert!(
        containers.used_bytes.as_ref().unwrap().value >= 2 * MIB,
        "{info:?}"
    );
    assert_eq!(
        containers.fs_id, info.image_filesystems[0].fs_id,
        "root and the container root share a disk here: {info:?}"
    );
    // A writable root no pod owns is swept at start.
    let stray = root.join("containers").join("0123456789abcdef");
    std::fs::create_dir_all(stray.join("c/upper")).unwrap();
    env.daemon.restart().await.unwrap();
    assert!(
        !stray.exists(),
        "the start-up sweep left {}",
        stray.display()
    );
    assert!(
        root.join("containers").join(&pod.0).exists(),
        "a live pod's layers were swept"
    );
}
