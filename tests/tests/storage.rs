//! Storage as nodes need it: images of any depth within `max_image_layers` start, with and
//! without a user namespace, and each pod mounts its layer views once.

#![allow(clippy::unwrap_used, reason = "test code")]

use cri_api::v1::*;
use crius_tests::env::setup;
use crius_tests::image::{Compression, Entry, Image, Layer};

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
    let reference = env.push_and_pull(deep_image(128), "crius/deep:128").await;
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
        let lines = env.wait_end(&name).await;
        assert_eq!(lines, ["127", "1", "127", "top layer", "end"], "{name}");
        assert_short_rootfs_line(&env, &pod.0, &id, 128);
    }
}

/// The rootfs of container `id` (in pod `pod`) is listed in its monitor's mountinfo with each of
/// its `layers` named by a 12-character id, in one line shorter than a page, and the directory
/// of those names is gone.
fn assert_short_rootfs_line(env: &crius_tests::env::Env, pod: &str, id: &str, layers: usize) {
    let monitor = env.monitor_state(pod)["monitor_pid"].as_i64().unwrap();
    let info = std::fs::read_to_string(format!("/proc/{monitor}/mountinfo")).unwrap();
    let ctr_dir = env.pod_dir(pod).join("containers").join(id);
    let rootfs = format!(" {} ", ctr_dir.join("rootfs").display());
    let line = info
        .lines()
        .find(|l| l.contains(&rootfs) && l.contains(" - overlay "))
        .unwrap_or_else(|| panic!("no overlay at {rootfs} in {info}"));
    assert!(line.len() < 4096, "{} bytes: {line}", line.len());
    let names: Vec<&str> = line
        .split(',')
        .filter_map(|o| o.strip_prefix("lowerdir+="))
        .collect();
    assert_eq!(names.len(), layers, "{line}");
    assert!(
        names
            .iter()
            .all(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_hexdigit())),
        "{line}"
    );
    assert!(!ctr_dir.join(".rootfs.lowers").exists());
}

/// Several containers of one user-namespaced pod share its layers' mapping: a layer is mounted
/// on the host at most once per pod, never once per container (and not at all where overlayfs
/// stacks the layers of a detached idmapped mount, Linux 6.15+).
#[tokio::test]
async fn layers_are_mounted_at_most_once_per_pod() {
    let mut env = setup(false).await;
    let pod = env.pod("views-once", true).await;
    for n in 0..4 {
        let name = format!("views-once-{n}");
        env.run(
            &pod,
            env.container_config(&name, "echo end; exec sleep 1000"),
        )
        .await;
        env.wait_end(&name).await;
    }
    let pod_dir = env.daemon.paths.state.join("pods").join(&pod.0);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let below = |dir: std::path::PathBuf| -> Vec<(String, String)> {
        let prefix = dir.to_string_lossy().into_owned();
        info.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let fs = f
                    .iter()
                    .position(|x| *x == "-")
                    .and_then(|i| f.get(i + 1))?;
                Some(((*f.get(4)?).to_owned(), (*fs).to_owned()))
            })
            .filter(|(p, _)| p.starts_with(&prefix))
            .collect()
    };
    let views = below(pod_dir.join("layers"));
    assert!(views.len() <= 1, "{views:?}");
    let overlays = below(pod_dir.join("containers"))
        .into_iter()
        .filter(|(_, fs)| fs == "overlay")
        .count();
    assert_eq!(overlays, 4, "one rootfs per container");
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
        env.wait_end(&name).await;
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
    env.wait_end("disk-fs").await;
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

/// A data-only image mounted as a volume (Mount.image): read-only, its files root's inside with
/// and without a user namespace and unchanged on the host, a sub path, a hostile sub path, a
/// missing one; ContainerStatus reports the mount; the image stays leased while mounted.
#[tokio::test]
async fn image_volumes_mount_an_images_layers_read_only() {
    let mut env = setup(false).await;
    // Two layers, the top one replacing a file of the bottom one; a symlink out of the image.
    let data = Image::new(vec![
        Layer::new(
            &[
                Entry::dir("models", 0o755),
                Entry::file("models/a.txt", "bottom\n", 0o644),
                Entry::file("models/b.txt", "b\n", 0o644),
                Entry::symlink("escape", "/etc"),
            ],
            Compression::Gzip,
        )
        .unwrap(),
        Layer::new(
            &[Entry::file("models/a.txt", "top\n", 0o644)],
            Compression::Gzip,
        )
        .unwrap(),
    ]);
    let data_ref = env.push_and_pull(data, "crius/data:1").await;
    let root = env.daemon.paths.root.clone();
    let owners_before: Vec<(String, u32)> = layer_owners(&root);
    for userns in [false, true] {
        let name = format!("vol-{userns}");
        let pod = env.pod(&name, userns).await;
        let mut config = env.container_config(
            &name,
            "cat /data/models/a.txt /sub/b.txt; stat -c '%u %g' /data/models/a.txt; \
             (echo x > /data/new) 2>/dev/null && echo WROTE; \
             grep ' /data ' /proc/self/mountinfo | grep -q ' ro,' && echo RO; echo end; \
             exec sleep 1000",
        );
        let volume = |path: &str, sub: &str| Mount {
            container_path: path.into(),
            image: Some(ImageSpec {
                image: data_ref.clone(),
                ..ImageSpec::default()
            }),
            image_sub_path: sub.into(),
            ..Mount::default()
        };
        config.mounts = vec![volume("/data", ""), volume("/sub", "models")];
        let id = env
            .create(&pod, config)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        env.start(&id).await;
        let lines = env.wait_end(&name).await;
        assert_eq!(lines, ["top", "b", "0 0", "RO", "end"], "{name}");
        let status = env.status(&id).await;
        let reported: Vec<(String, String, String)> = status
            .mounts
            .iter()
            .map(|m| {
                (
                    m.container_path.clone(),
                    m.image
                        .as_ref()
                        .map(|i| i.image.clone())
                        .unwrap_or_default(),
                    m.image_sub_path.clone(),
                )
            })
            .collect();
        assert_eq!(
            reported,
            [
                ("/data".to_owned(), data_ref.clone(), String::new()),
                ("/sub".to_owned(), data_ref.clone(), "models".to_owned())
            ],
            "{name}"
        );
        // Hostile and missing sub paths.
        for (sub, code) in [
            ("../../etc", tonic::Code::InvalidArgument),
            ("/etc", tonic::Code::InvalidArgument),
            ("escape", tonic::Code::FailedPrecondition),
            ("missing", tonic::Code::FailedPrecondition),
        ] {
            let mut config = env.container_config(&format!("{name}-bad"), "true");
            config.mounts = vec![volume("/data", sub)];
            let err = env.create(&pod, config).await.expect_err(sub);
            assert_eq!(err.code(), code, "{name} {sub}: {err:?}");
            assert!(err.message().contains("image_sub_path"), "{err:?}");
        }
    }
    assert_eq!(
        layer_owners(&root),
        owners_before,
        "a layer file changed owner"
    );
    // Removing the image while a container mounts it: the record goes (as in containerd),
    // the layers stay until the container is removed.
    env.daemon
        .images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: data_ref.clone(),
                ..ImageSpec::default()
            }),
        })
        .await
        .unwrap();
    let id = env
        .containers()
        .await
        .into_iter()
        .find(|c| c.metadata.as_ref().is_some_and(|m| m.name == "vol-true"))
        .unwrap()
        .id;
    let lines = env
        .exec(&id, &["cat", "/data/models/b.txt"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&lines.stdout), "b\n");
}

/// The owner of every file in the layer store, by path.
fn layer_owners(root: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.join("layers")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path().display().to_string(), meta.uid()));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// An image with files owned beyond a user-namespaced pod's mapping: CreateContainer says so
/// (a warning in the log and in ContainerStatus' reason and message, naming the image, the
/// highest ids and the mapping's length) and the container still runs; such files show as
/// nobody inside. The same image in a pod without a user namespace, and an image within the
/// mapping, carry no warning.
#[tokio::test]
async fn images_with_ids_beyond_the_mapping_are_reported() {
    let mut env = setup(false).await;
    let high = crius_tests::image::busybox().unwrap().with_layer(
        Layer::new(
            &[Entry::file("high", "x\n", 0o644).owned(70000, 70001)],
            Compression::Gzip,
        )
        .unwrap(),
    );
    let high_ref = env.push_and_pull(high, "crius/high-ids:1").await;
    for userns in [true, false] {
        let name = format!("ids-{userns}");
        let pod = env.pod(&name, userns).await;
        let mut config =
            env.container_config(&name, "stat -c '%u' /high; echo end; exec sleep 1000");
        config.image = Some(ImageSpec {
            image: high_ref.clone(),
            ..ImageSpec::default()
        });
        let id = env.run(&pod, config).await;
        let lines = env.wait_end(&name).await;
        let status = env.status(&id).await;
        if userns {
            assert_eq!(lines, ["65534", "end"]);
            assert_eq!(status.reason, "ImageIdsOutsideUserNamespace", "{status:?}");
            for part in [high_ref.as_str(), "uid 70000", "gid 70001", "65536 uids"] {
                assert!(status.message.contains(part), "{part}: {}", status.message);
            }
            assert!(
                env.daemon
                    .log()
                    .contains("beyond the pod's user namespace mapping")
            );
        } else {
            assert_eq!(lines, ["70000", "end"]);
            assert_eq!((status.reason.as_str(), status.message.as_str()), ("", ""));
        }
    }
    let pod = env.pod("ids-ok", true).await;
    let id = env
        .run(
            &pod,
            env.container_config("ids-ok", "echo end; exec sleep 1000"),
        )
        .await;
    env.wait_end("ids-ok").await;
    let status = env.status(&id).await;
    assert_eq!((status.reason.as_str(), status.message.as_str()), ("", ""));
}
