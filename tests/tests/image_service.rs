//! The image service end to end: a real criusd pulling from a real loopback registry. Needs
//! `/usr/bin/docker-registry`, `/bin/busybox` and root (layers keep their owners, the
//! whiteout test mounts overlayfs).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest, StreamImagesRequest,
};
use crius_tests::harness::{Criusd, Options};
use crius_tests::host::entries;
use crius_tests::image::{
    self, Compression, Entry, EntryKind, Image, Layer, busybox, busybox_with_image_user,
    multilayer_whiteouts, push_index,
};
use crius_tests::registry::{FixedManifestServer, GatedRegistry, Registry};
use nix::sys::signal::Signal;

/// Starts criusd allowed to reach `registry` over plain HTTP.
async fn daemon_for(registry: &Registry, extra: &str) -> Criusd {
    Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n{extra}", registry.host()),
        ..Options::default()
    })
    .await
    .expect("helper call failed")
}

/// Starts criusd allowed to reach `host` over plain HTTP.
async fn daemon_for_host(host: &str) -> Criusd {
    Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{host}\"]\n"),
        ..Options::default()
    })
    .await
    .expect("helper call failed")
}

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_owned(),
        ..ImageSpec::default()
    })
}

async fn pull(
    daemon: &mut Criusd,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    daemon
        .images
        .pull_image(PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(
    daemon: &mut Criusd,
    image: &str,
    verbose: bool,
) -> cri_api::v1::ImageStatusResponse {
    daemon
        .images
        .image_status(ImageStatusRequest {
            image: spec(image),
            verbose,
        })
        .await
        .expect("helper call failed")
        .into_inner()
}

async fn list(daemon: &mut Criusd) -> Vec<cri_api::v1::Image> {
    daemon
        .images
        .list_images(ListImagesRequest::default())
        .await
        .expect("helper call failed")
        .into_inner()
        .images
}

async fn remove(daemon: &mut Criusd, image: &str) {
    daemon
        .images
        .remove_image(RemoveImageRequest { image: spec(image) })
        .await
        .expect("helper call failed");
}

/// The unpacked layer directories of `image`, bottom first, from the verbose status.
async fn layer_dirs(daemon: &mut Criusd, image: &str) -> Vec<PathBuf> {
    let info = status(daemon, image, true).await.info;
    let doc: serde_json::Value = serde_json::from_str(&info["info"]).expect("helper call failed");
    doc["layerDirs"]
        .as_array()
        .expect("helper call failed")
        .iter()
        .map(|d| PathBuf::from(d.as_str().expect("helper call failed")))
        .collect()
}

/// Collects a tonic streaming response.
async fn collect_stream<T>(mut stream: tonic::Streaming<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.expect("helper call failed") {
        out.push(item);
    }
    out
}

#[tokio::test]
async fn pull_by_tag_and_digest_then_status_list_fsinfo_remove() {
    let registry = Registry::start().unwrap();
    let pushed = busybox_with_image_user()
        .unwrap()
        .with_user("1000")
        .with_history()
        .push(&registry.host(), "crius/busybox:1")
        .await
        .unwrap();
    let mut daemon = daemon_for(&registry, "").await;

    let image_ref = pull(&mut daemon, &pushed.reference, None).await.unwrap();
    assert_eq!(image_ref, pushed.config_digest);
    let by_digest = format!(
        "{}/crius/busybox@{}",
        registry.host(),
        pushed.manifest_digest
    );
    assert_eq!(
        pull(&mut daemon, &by_digest, None).await.unwrap(),
        image_ref
    );

    let got = status(&mut daemon, &pushed.reference, false)
        .await
        .image
        .unwrap();
    assert_eq!(got.id, image_ref);
    assert_eq!(got.repo_tags, [pushed.reference.as_str()]);
    assert_eq!(got.repo_digests, [by_digest.as_str()]);
    assert!(got.size > 1_000_000, "size {}", got.size);
    assert_eq!(got.uid.map(|u| u.value), Some(1000));
    assert_eq!(got.spec.unwrap().image, image_ref);
    for alias in [
        image_ref.as_str(),
        by_digest.as_str(),
        image_ref.trim_start_matches("sha256:"),
    ] {
        assert_eq!(
            status(&mut daemon, alias, false).await.image.unwrap().id,
            image_ref,
            "{alias}"
        );
    }
    let missing = status(&mut daemon, "127.0.0.1:1/none:x", false).await;
    assert!(missing.image.is_none());

    let verbose = status(&mut daemon, &image_ref, true).await;
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["User"], "1000");
    let dirs = layer_dirs(&mut daemon, &image_ref).await;
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].starts_with(daemon.paths.root.join("layers")));
    let busybox_bin = std::fs::metadata(dirs[0].join("bin/busybox")).unwrap();
    assert_eq!(busybox_bin.mode() & 0o7777, 0o755);
    let home = std::fs::metadata(dirs[0].join("home/user-defined-in-image")).unwrap();
    assert_eq!(
        (home.uid(), home.gid()),
        (1000, 1000),
        "owners are never remapped"
    );
    assert_eq!(home.mtime(), i64::try_from(image::MTIME).unwrap());
    assert_eq!(
        std::fs::read_link(dirs[0].join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    let listed = list(&mut daemon).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, image_ref);
    let filtered = daemon
        .images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec(&pushed.reference),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let none = daemon
        .images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("docker.io/library/nothing:here"),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(none.is_empty());
    let streamed = daemon
        .images
        .stream_images(StreamImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let streamed: Vec<_> = collect_stream(streamed)
        .await
        .into_iter()
        .flat_map(|r| r.images)
        .collect();
    assert_eq!(streamed.len(), 1);

    let fs = daemon
        .images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert_eq!(
        usage.fs_id.as_ref().unwrap().mountpoint,
        daemon.paths.root.display().to_string()
    );
    assert!(usage.used_bytes.unwrap().value > 1_000_000);
    assert!(usage.inodes_used.unwrap().value > 100);

    // Records survive a restart.
    daemon.restart().await.unwrap();
    let again = status(&mut daemon, &pushed.reference, false)
        .await
        .image
        .unwrap();
    assert_eq!(again.id, image_ref);
    assert_eq!(again.repo_digests, [by_digest.as_str()]);
    assert!(dirs[0].join("bin/busybox").exists());

    remove(&mut daemon, &pushed.reference).await;
    assert!(list(&mut daemon).await.is_empty());
    assert!(entries(&daemon.paths.root.join("layers")).is_empty());
    assert!(entries(&daemon.paths.root.join("blobs/sha256")).is_empty());
    // Removing a missing image is not an error.
    remove(&mut daemon, &pushed.reference).await;
    remove(&mut daemon, &image_ref).await;

    let bad = pull(&mut daemon, "Not A Name", None).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    let unknown = pull(
        &mut daemon,
        &format!("{}/crius/none:1", registry.host()),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown}");
}

#[tokio::test]
async fn shared_layers_stay_until_the_last_image_goes() {
    let registry = Registry::start().unwrap();
    let base = busybox().unwrap();
    let one = base
        .clone()
        .with_label("n", "1")
        .push(&registry.host(), "crius/a:1")
        .await
        .unwrap();
    let two = base
        .with_layer(Layer::new(&[Entry::file("two", "2\n", 0o644)], Compression::Gzip).unwrap())
        .push(&registry.host(), "crius/b:1")
        .await
        .unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    pull(&mut daemon, &one.reference, None).await.unwrap();
    pull(&mut daemon, &two.reference, None).await.unwrap();
    let layers = daemon.paths.root.join("layers");
    assert_eq!(entries(&layers).len(), 2, "the busybox layer is shared");
    remove(&mut daemon, &one.config_digest).await;
    assert_eq!(entries(&layers).len(), 2);
    let dirs = layer_dirs(&mut daemon, &two.reference).await;
    assert!(dirs[0].join("bin/busybox").exists());
    remove(&mut daemon, &two.reference).await;
    assert!(entries(&layers).is_empty());
}

#[tokio::test]
async fn a_tag_moves_to_the_newer_image() {
    let registry = Registry::start().unwrap();
    let old = busybox()
        .unwrap()
        .with_label("v", "1")
        .push(&registry.host(), "crius/t:x")
        .await
        .unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    pull(&mut daemon, &old.reference, None).await.unwrap();
    let new = busybox()
        .unwrap()
        .with_label("v", "2")
        .push(&registry.host(), "crius/t:x")
        .await
        .unwrap();
    assert_eq!(
        pull(&mut daemon, &new.reference, None).await.unwrap(),
        new.config_digest
    );
    let old_status = status(&mut daemon, &old.config_digest, false)
        .await
        .image
        .unwrap();
    assert!(old_status.repo_tags.is_empty());
    let new_status = status(&mut daemon, &new.reference, false)
        .await
        .image
        .unwrap();
    assert_eq!(new_status.id, new.config_digest);
}

#[tokio::test]
async fn an_index_resolves_to_linux_amd64() {
    let registry = Registry::start().unwrap();
    let arm = busybox().unwrap().with_label("platform", "arm64");
    let amd = busybox().unwrap().with_label("platform", "amd64");
    let pushed = push_index(
        &registry.host(),
        "crius/multi:1",
        &[("linux", "arm64/v8", &arm), ("linux", "amd64", &amd)],
    )
    .await
    .unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    let image_ref = pull(&mut daemon, &pushed.reference, None).await.unwrap();
    assert_eq!(image_ref, pushed.manifests[1].config_digest);
    let got = status(&mut daemon, &pushed.reference, false)
        .await
        .image
        .unwrap();
    assert_eq!(
        got.repo_digests,
        [format!(
            "{}/crius/multi@{}",
            registry.host(),
            pushed.index_digest
        )]
    );

    let only_arm = push_index(
        &registry.host(),
        "crius/armonly:1",
        &[("linux", "arm64", &arm)],
    )
    .await
    .unwrap();
    let err = pull(&mut daemon, &only_arm.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("linux/amd64"), "{err}");
}

#[tokio::test]
async fn gzip_zstd_and_plain_layers_unpack() {
    let registry = Registry::start().unwrap();
    let image = busybox()
        .unwrap()
        .with_layer(
            Layer::new(
                &[
                    Entry::dir("z", 0o755),
                    Entry::file("z/zstd", "zstd\n", 0o600).owned(7, 8),
                ],
                Compression::Zstd,
            )
            .unwrap(),
        )
        .with_layer(
            Layer::new(
                &[
                    Entry::file("plain", "plain\n", 0o644),
                    Entry::char_device("dev/null", 1, 3, 0o666),
                    Entry::fifo("run/fifo", 0o600),
                    Entry::hardlink("plain-link", "plain"),
                ],
                Compression::None,
            )
            .unwrap(),
        );
    let pushed = image.push(&registry.host(), "crius/comp:1").await.unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    pull(&mut daemon, &pushed.reference, None).await.unwrap();
    let dirs = layer_dirs(&mut daemon, &pushed.reference).await;
    assert_eq!(dirs.len(), 3);
    assert!(dirs[0].join("bin/busybox").is_file());
    let zstd = std::fs::metadata(dirs[1].join("z/zstd")).unwrap();
    assert_eq!(
        (zstd.uid(), zstd.gid(), zstd.mode() & 0o7777),
        (7, 8, 0o600)
    );
    assert_eq!(std::fs::read(dirs[1].join("z/zstd")).unwrap(), b"zstd\n");
    assert_eq!(std::fs::read(dirs[2].join("plain")).unwrap(), b"plain\n");
    let null = std::fs::metadata(dirs[2].join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(
        std::fs::metadata(dirs[2].join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(std::fs::metadata(dirs[2].join("plain")).unwrap().nlink(), 2);
}

/// An overlay mount removed when dropped (also when the test fails).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_hide_lower_files_in_overlayfs() {
    let registry = Registry::start().unwrap();
    let pushed = multilayer_whiteouts()
        .unwrap()
        .push(&registry.host(), "crius/wh:1")
        .await
        .unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    pull(&mut daemon, &pushed.reference, None).await.unwrap();
    let dirs = layer_dirs(&mut daemon, &pushed.reference).await;
    assert_eq!(dirs.len(), 2);
    let target = tempfile::tempdir().unwrap();
    let lowerdir = format!("lowerdir={}:{}", dirs[1].display(), dirs[0].display());
    nix::mount::mount(
        Some("overlay"),
        target.path(),
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(lowerdir.as_str()),
    )
    .unwrap();
    let _mount = Mount(target.path().to_owned());
    let merged = target.path();
    assert_eq!(entries(&merged.join("data")), ["b"]);
    assert_eq!(entries(&merged.join("opq")), ["z"]);
    assert_eq!(std::fs::read(merged.join("opq/z")).unwrap(), b"z\n");
    assert!(merged.join("bin/busybox").is_file());
    // The lower layer itself is untouched.
    assert_eq!(entries(&dirs[0].join("data")), ["a", "b"]);
}

/// A busybox image with one more layer of `entries` on top.
fn with_hostile(entries: &[Entry]) -> Image {
    busybox()
        .expect("busybox image")
        .with_layer(Layer::new(entries, Compression::Gzip).expect("hostile layer"))
}

#[tokio::test]
async fn hostile_layers_are_refused_and_write_nothing_outside() {
    let registry = Registry::start().unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    let tag = std::process::id();
    let escape = format!("crius-escape-{tag}");
    let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dotdot",
            vec![Entry::raw_file(format!("../../{escape}"), "x")],
        ),
        (
            "absolute",
            vec![Entry::raw_file(format!("/etc/{escape}"), "x")],
        ),
        (
            "symlink",
            vec![
                Entry::symlink("evil", "/"),
                Entry::raw_file(format!("evil/tmp/{escape}"), "x"),
            ],
        ),
        (
            "hardlink",
            vec![Entry::raw(
                "passwd",
                EntryKind::Hardlink(b"/etc/passwd".to_vec()),
                0o644,
            )],
        ),
        (
            "hardlink-through-symlink",
            vec![
                Entry::symlink("etc2", "/etc"),
                Entry::raw(
                    "passwd",
                    EntryKind::Hardlink(b"etc2/passwd".to_vec()),
                    0o644,
                ),
            ],
        ),
    ];
    for (name, layer) in cases {
        let pushed = with_hostile(&layer)
            .push(&registry.host(), &format!("crius/hostile-{name}:1"))
            .await
            .unwrap();
        let err = pull(&mut daemon, &pushed.reference, None)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{name}: {err}");
        assert!(err.message().contains("refused"), "{name}: {err}");
        assert!(list(&mut daemon).await.is_empty(), "{name}");
        assert!(
            entries(&daemon.paths.root.join("image-tmp")).is_empty(),
            "{name}"
        );
        assert!(
            entries(&daemon.paths.root.join("layers")).is_empty(),
            "{name}"
        );
    }
    for path in [
        daemon.paths.root.join(&escape),
        daemon.dir().join(&escape),
        PathBuf::from(format!("/etc/{escape}")),
        PathBuf::from(format!("/tmp/{escape}")),
        PathBuf::from(format!("/{escape}")),
    ] {
        assert!(!path.exists(), "{} was written", path.display());
    }
    assert_eq!(
        std::fs::metadata("/etc/passwd").unwrap().nlink(),
        passwd_links
    );
}

#[tokio::test]
async fn a_tampered_blob_is_refused() {
    let registry = Registry::start().unwrap();
    let image = busybox().unwrap();
    let layer_digest = image.layers[0].digest().to_owned();
    let pushed = image
        .push(&registry.host(), "crius/tampered:1")
        .await
        .unwrap();
    let blob = registry.blob_path(&layer_digest);
    let mut data = std::fs::read(&blob).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    let err = pull(&mut daemon, &pushed.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    assert!(err.message().contains(&layer_digest), "{err}");
    assert!(list(&mut daemon).await.is_empty());
    assert!(
        !daemon
            .paths
            .root
            .join("blobs/sha256")
            .join(layer_digest.trim_start_matches("sha256:"))
            .exists()
    );
    assert!(entries(&daemon.paths.root.join("layers")).is_empty());
}

#[tokio::test]
async fn htpasswd_registry_needs_the_right_credentials() {
    let registry = Registry::start_with_htpasswd("crius", "s3cret").unwrap();
    let pushed = busybox()
        .unwrap()
        .push_to(&registry.client().unwrap(), "crius/private:1")
        .await
        .unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    let basic = |user: &str, password: &str| AuthConfig {
        username: user.into(),
        password: password.into(),
        ..AuthConfig::default()
    };
    let err = pull(&mut daemon, &pushed.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let err = pull(
        &mut daemon,
        &pushed.reference,
        Some(basic("crius", "wrong")),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains(&registry.host()), "{err}");
    assert!(
        !err.message().contains("wrong"),
        "the password leaked: {err}"
    );
    let image_ref = pull(
        &mut daemon,
        &pushed.reference,
        Some(basic("crius", "s3cret")),
    )
    .await
    .unwrap();
    assert_eq!(image_ref, pushed.config_digest);
    remove(&mut daemon, &image_ref).await;
    // The same credentials as `auth` (base64 of user:password).
    let encoded = AuthConfig {
        auth: "Y3JpdXM6czNjcmV0".into(),
        ..AuthConfig::default()
    };
    assert_eq!(
        pull(&mut daemon, &pushed.reference, Some(encoded))
            .await
            .unwrap(),
        image_ref
    );
}

#[tokio::test]
async fn mirrors_serve_upstream_names() {
    let registry = Registry::start().unwrap();
    let pushed = busybox()
        .unwrap()
        .push(&registry.host(), "pause:3.10")
        .await
        .unwrap();
    let mut daemon = daemon_for(
        &registry,
        &format!(
            "[registry.mirrors]\n\"registry.k8s.io\" = [\"http://127.0.0.1:1\", \"http://{}\"]\n",
            registry.host()
        ),
    )
    .await;
    let image_ref = pull(&mut daemon, "registry.k8s.io/pause:3.10", None)
        .await
        .unwrap();
    assert_eq!(image_ref, pushed.config_digest);
    let got = status(&mut daemon, "registry.k8s.io/pause:3.10", false)
        .await
        .image
        .unwrap();
    assert_eq!(got.repo_tags, ["registry.k8s.io/pause:3.10"]);
    assert_eq!(
        got.repo_digests,
        [format!("registry.k8s.io/pause@{}", pushed.manifest_digest)]
    );
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_the_work() {
    let registry = Registry::start().unwrap();
    let pushed = image::large(2000)
        .unwrap()
        .push(&registry.host(), "crius/concurrent:1")
        .await
        .unwrap();
    let daemon = daemon_for(&registry, "").await;
    let pulls: Vec<_> = (0..3)
        .map(|_| {
            let mut client = daemon.images.clone();
            let reference = pushed.reference.clone();
            tokio::spawn(async move {
                client
                    .pull_image(PullImageRequest {
                        image: spec(&reference),
                        auth: None,
                        sandbox_config: None,
                    })
                    .await
                    .map(|r| r.into_inner().image_ref)
            })
        })
        .collect();
    for pull in pulls {
        assert_eq!(pull.await.unwrap().unwrap(), pushed.config_digest);
    }
    assert_eq!(entries(&daemon.paths.root.join("layers")).len(), 2);
    let log = daemon.log();
    assert_eq!(
        log.matches("layer unpacked").count(),
        2,
        "each layer is unpacked once"
    );
}

#[tokio::test]
async fn kill_9_during_a_large_pull_leaves_no_half_image() {
    let registry = Registry::start().unwrap();
    let pushed = image::large(20000)
        .unwrap()
        .push(&registry.host(), "crius/large:1")
        .await
        .unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    let root = daemon.paths.root.clone();
    let mut client = daemon.images.clone();
    let reference = pushed.reference.clone();
    let pulling = tokio::spawn(async move {
        client
            .pull_image(PullImageRequest {
                image: spec(&reference),
                auth: None,
                sandbox_config: None,
            })
            .await
    });
    // Wait until the large layer is being unpacked (a temporary layer directory with files).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let busy = entries(&root.join("image-tmp")).iter().any(|e| {
            e.starts_with("layer-") && root.join("image-tmp").join(e).join("large").exists()
        });
        if busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pull never reached the large layer"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    daemon.signal_and_wait(Signal::SIGKILL).unwrap();
    assert!(pulling.await.unwrap().is_err());
    daemon.restart().await.unwrap();
    assert!(list(&mut daemon).await.is_empty());
    assert!(entries(&root.join("image-tmp")).is_empty());
    assert!(
        entries(&root.join("layers")).is_empty(),
        "{:?}",
        entries(&root.join("layers"))
    );
    assert!(entries(&root.join("blobs/sha256")).is_empty());
    let started = Instant::now();
    let image_ref = pull(&mut daemon, &pushed.reference, None).await.unwrap();
    eprintln!(
        "pull of large(20000) from the loopback registry: {:?}",
        started.elapsed()
    );
    for line in daemon.log().lines() {
        if line.contains("layer unpacked")
            || line.contains("blob stored")
            || line.contains("image pulled")
        {
            eprintln!("{line}");
        }
    }
    assert_eq!(image_ref, pushed.config_digest);
    let dirs = layer_dirs(&mut daemon, &image_ref).await;
    assert_eq!(entries(&dirs[1].join("large")).len(), 200);
    assert_eq!(
        std::fs::read(dirs[1].join("large/d0199/f0019999")).unwrap(),
        b"19999\n"
    );
}

/// Asserts a failed pull left no image, layer, blob or temporary file behind.
async fn assert_nothing_left(daemon: &mut Criusd, what: &str) {
    assert!(list(daemon).await.is_empty(), "{what}");
    for dir in ["image-tmp", "layers", "blobs/sha256"] {
        assert!(
            entries(&daemon.paths.root.join(dir)).is_empty(),
            "{what}: {dir} holds {:?}",
            entries(&daemon.paths.root.join(dir))
        );
    }
}

/// A one-layer image of `entries`.
fn tiny(entries: &[Entry]) -> Image {
    Image::new(vec![
        Layer::new(entries, Compression::Gzip).expect("helper call failed"),
    ])
}

#[tokio::test]
async fn layers_over_the_configured_caps_fail_cleanly() {
    let registry = Registry::start().unwrap();
    let mut daemon = daemon_for(
        &registry,
        "max_layer_bytes = 262144\nmax_layer_entries = 100\nmax_image_layers = 2\n",
    )
    .await;
    // A few KiB of gzip that expands to 8 MiB.
    let bomb = tiny(&[Entry::file("zeros", vec![0u8; 8 << 20], 0o644)]);
    assert!(
        bomb.layers[0].size() < 16 * 1024,
        "{}",
        bomb.layers[0].size()
    );
    let pushed = bomb.push(&registry.host(), "crius/bomb:1").await.unwrap();
    let err = pull(&mut daemon, &pushed.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("max_layer_bytes"), "{err}");
    assert!(err.message().contains("262144"), "{err}");
    assert_nothing_left(&mut daemon, "bytes").await;

    let many: Vec<Entry> = (0..150)
        .map(|i| Entry::file(&format!("f{i}"), "x", 0o644))
        .collect();
    let pushed = tiny(&many)
        .push(&registry.host(), "crius/many:1")
        .await
        .unwrap();
    let err = pull(&mut daemon, &pushed.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("max_layer_entries"), "{err}");
    assert_nothing_left(&mut daemon, "entries").await;

    let layer = |name: &str| {
        Layer::new(&[Entry::file(name, "x", 0o644)], Compression::Gzip).expect("layer")
    };
    let three = Image::new(vec![layer("a"), layer("b"), layer("c")]);
    let pushed = three.push(&registry.host(), "crius/three:1").await.unwrap();
    let err = pull(&mut daemon, &pushed.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("3 layers"), "{err}");
    assert!(err.message().contains("max_image_layers"), "{err}");
    assert_nothing_left(&mut daemon, "layers").await;

    // Within every cap the same daemon pulls.
    let fine = Image::new(vec![layer("a"), layer("b")]);
    let pushed = fine.push(&registry.host(), "crius/fine:1").await.unwrap();
    assert_eq!(
        pull(&mut daemon, &pushed.reference, None).await.unwrap(),
        pushed.config_digest
    );
}

#[tokio::test]
async fn hostile_documents_and_descriptors_are_refused() {
    let registry = Registry::start().unwrap();
    let mut daemon = daemon_for(&registry, "").await;
    let client = registry.client().unwrap();
    let image = tiny(&[Entry::file("a", "x", 0o644)]);
    image.push(&registry.host(), "crius/base:1").await.unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifest_json()).unwrap();
    // Descriptors with a size of zero or less, or an absurd one.
    for (name, pointer, size) in [
        ("zero-layer", "/layers/0/size", serde_json::json!(0)),
        ("negative-config", "/config/size", serde_json::json!(-1)),
        ("huge-config", "/config/size", serde_json::json!(5 << 20)),
        (
            "absurd-layer",
            "/layers/0/size",
            serde_json::json!(i64::MAX),
        ),
    ] {
        let mut doc = manifest.clone();
        *doc.pointer_mut(pointer).unwrap() = size;
        let body = serde_json::to_vec(&doc).unwrap();
        client
            .put_manifest("crius/base", name, image::MEDIA_TYPE_MANIFEST, &body)
            .await
            .unwrap();
        let err = pull(
            &mut daemon,
            &format!("{}/crius/base:{name}", registry.host()),
            None,
        )
        .await
        .unwrap_err();
        let expected = if name.starts_with("huge") || name.starts_with("absurd") {
            tonic::Code::ResourceExhausted
        } else {
            tonic::Code::FailedPrecondition
        };
        assert_eq!(err.code(), expected, "{name}: {err}");
        assert!(err.message().contains("size"), "{name}: {err}");
        assert_nothing_left(&mut daemon, name).await;
    }
    // A config over 4 MiB, honestly described.
    let fat = tiny(&[Entry::file("a", "x", 0o644)]).with_label("padding", &"x".repeat(5 << 20));
    let pushed = fat.push(&registry.host(), "crius/fat:1").await.unwrap();
    let err = pull(&mut daemon, &pushed.reference, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("config"), "{err}");
    assert_nothing_left(&mut daemon, "fat config").await;
    // A manifest over 4 MiB, from a hostile registry (with and without Content-Length).
    let mut doc = manifest.clone();
    doc["annotations"] = serde_json::json!({"padding": "x".repeat(5 << 20)});
    let body = serde_json::to_vec(&doc).unwrap();
    for content_length in [true, false] {
        let hostile = FixedManifestServer::start(body.clone(), content_length).unwrap();
        let mut daemon = daemon_for_host(&hostile.host()).await;
        let err = pull(
            &mut daemon,
            &format!("{}/crius/fat:1", hostile.host()),
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
        assert!(err.message().contains("manifest"), "{err}");
        assert!(err.message().contains("4194304"), "{err}");
        assert_nothing_left(&mut daemon, "fat manifest").await;
    }
}

#[tokio::test]
async fn a_mirror_path_is_a_repository_prefix() {
    let registry = Registry::start().unwrap();
    let pushed = busybox()
        .unwrap()
        .push(&registry.host(), "cache/k8s/pause:3.10")
        .await
        .unwrap();
    let mut daemon = daemon_for(
        &registry,
        &format!(
            "[registry.mirrors]\n\"registry.k8s.io\" = [\"http://{}/cache/k8s\"]\n",
            registry.host()
        ),
    )
    .await;
    let image_ref = pull(&mut daemon, "registry.k8s.io/pause:3.10", None)
        .await
        .unwrap();
    assert_eq!(image_ref, pushed.config_digest);
    let got = status(&mut daemon, "registry.k8s.io/pause:3.10", false)
        .await
        .image
        .unwrap();
    assert_eq!(got.repo_tags, ["registry.k8s.io/pause:3.10"]);
    assert_eq!(
        got.repo_digests,
        [format!("registry.k8s.io/pause@{}", pushed.manifest_digest)]
    );
    // The content came from the prefixed repository on the mirror.
    let log = registry.log();
    assert!(log.contains("/v2/cache/k8s/pause/blobs/"), "{log}");
}

/// Runs `criusd import ARGS...`; returns (success, stdout, stderr).
fn criusd_import(args: &[String]) -> (bool, String, String) {
    let out = std::process::Command::new(crius_tests::harness::criusd_binary())
        .arg("import")
        .args(args)
        .output()
        .expect("helper call failed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A busybox image told apart from the others by a label.
fn labelled_busybox(label: &str) -> Image {
    busybox()
        .expect("busybox image")
        .with_label("crius.test/imported", label)
}

#[tokio::test]
async fn criusd_import_loads_docker_save_oci_layouts_and_archives() {
    let mut env = crius_tests::env::setup(false).await;
    let work = tempfile::tempdir().unwrap();
    let root = env.daemon.paths.root.display().to_string();
    let docker = labelled_busybox("docker");
    let docker_tar = work.path().join("docker-save.tar");
    std::fs::write(
        &docker_tar,
        image::tarball_of(&docker.docker_save_files(&["example.com/air/busybox:docker"])).unwrap(),
    )
    .unwrap();
    let layout = labelled_busybox("layout");
    let layout_dir = work.path().join("layout");
    image::write_files(
        &layout_dir,
        &layout.oci_layout_files("example.com/air/busybox:layout"),
    )
    .unwrap();
    let archive = labelled_busybox("archive");
    let archive_tar = work.path().join("oci-archive.tar.gz");
    std::fs::write(
        &archive_tar,
        Compression::Gzip
            .compress(
                &image::tarball_of(&archive.oci_layout_files("example.com/air/busybox:archive"))
                    .unwrap(),
            )
            .unwrap(),
    )
    .unwrap();
    let paths: Vec<String> = [&docker_tar, &layout_dir, &archive_tar]
        .iter()
        .map(|p| p.display().to_string())
        .collect();

    // The daemon holds the root: the CLI says so and changes nothing.
    let mut args = vec!["--root".to_owned(), root.clone()];
    args.extend(paths.clone());
    let (ok, _, stderr) = criusd_import(&args);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(stderr.contains("import_dir"), "{stderr}");

    env.daemon.signal_and_wait(Signal::SIGTERM).unwrap();
    let (ok, stdout, stderr) = criusd_import(&args);
    assert!(ok, "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    // Importing again changes nothing and succeeds.
    let (ok, _, stderr) = criusd_import(&args);
    assert!(ok, "{stderr}");

    // Hostile tarballs: a path escape, and a layer that is a symlink out of the archive.
    let escape = format!("crius-import-escape-{}", std::process::id());
    let mut files = docker.docker_save_files(&["example.com/air/evil:1"]);
    files.push((format!("../../{escape}"), b"x".to_vec()));
    let evil = image::tar_of(
        &files
            .iter()
            .map(|(n, d)| Entry::raw_file(n.as_bytes().to_vec(), d.clone()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let evil_tar = work.path().join("evil.tar");
    std::fs::write(&evil_tar, evil).unwrap();
    let mut entries: Vec<Entry> = docker
        .docker_save_files(&["example.com/air/evil:2"])
        .iter()
        .filter(|(n, _)| n != "layer0/layer.tar")
        .map(|(n, d)| Entry::file(n, d.clone(), 0o644))
        .collect();
    entries.push(Entry::symlink("layer0/layer.tar", "/etc/passwd"));
    let link_tar = work.path().join("link.tar");
    std::fs::write(&link_tar, image::tar_of(&entries).unwrap()).unwrap();
    for hostile in [&evil_tar, &link_tar] {
        let (ok, _, stderr) =
            criusd_import(&["--root".into(), root.clone(), hostile.display().to_string()]);
        assert!(!ok, "{stderr}");
        assert!(stderr.contains("refused"), "{stderr}");
    }
    for dir in [
        work.path(),
        env.daemon.dir(),
        Path::new("/tmp"),
        Path::new("/"),
    ] {
        assert!(!dir.join(&escape).exists(), "{}", dir.display());
    }

    env.daemon.restart().await.unwrap();
    for (image, name) in [
        (&docker, "example.com/air/busybox:docker"),
        (&layout, "example.com/air/busybox:layout"),
        (&archive, "example.com/air/busybox:archive"),
    ] {
        let got = status(&mut env.daemon, name, false).await.image.unwrap();
        assert_eq!(got.id, image.config_digest(), "{name}");
        assert_eq!(got.repo_tags, [name]);
    }
    assert!(
        status(&mut env.daemon, "example.com/air/evil:1", false)
            .await
            .image
            .is_none()
    );
    assert!(entries_of_tmp(&env.daemon).is_empty());
    env.image = "example.com/air/busybox:docker".into();
    let pod = env.pod("imported", false).await;
    let config = env.container_config("imported", "echo from-an-imported-image");
    let id = env.run(&pod, config).await;
    let exited = env.wait_exit(&id, Duration::from_secs(30)).await;
    assert_eq!(exited.exit_code, 0);
    assert_eq!(env.stdout("imported"), ["from-an-imported-image"]);
}

fn entries_of_tmp(daemon: &Criusd) -> Vec<String> {
    entries(&daemon.paths.root.join("image-tmp"))
}

#[tokio::test]
async fn import_dir_is_imported_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let good = labelled_busybox("import-dir");
    std::fs::write(
        dir.path().join("good.tar"),
        image::tarball_of(&good.docker_save_files(&["example.com/air/startup:1"])).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("garbage.tar"), b"not a tarball at all").unwrap();
    let mut daemon = Criusd::start_with(Options {
        config: format!("import_dir = \"{}\"\n", dir.path().display()),
        ..Options::default()
    })
    .await
    .unwrap();
    let got = status(&mut daemon, "example.com/air/startup:1", false)
        .await
        .image
        .unwrap();
    assert_eq!(got.id, good.config_digest());
    let log = daemon.log();
    assert!(log.contains("imported an image from import_dir"), "{log}");
    assert!(
        log.contains("garbage.tar") && log.contains("skipped"),
        "{log}"
    );
    // Unchanged files are not imported again; a removed image comes back.
    daemon.restart().await.unwrap();
    assert!(
        !daemon.log().contains("imported an image from import_dir"),
        "{}",
        daemon.log()
    );
    remove(&mut daemon, "example.com/air/startup:1").await;
    daemon.restart().await.unwrap();
    let got = status(&mut daemon, "example.com/air/startup:1", false)
        .await
        .image
        .unwrap();
    assert_eq!(got.id, good.config_digest());
    assert!(entries_of_tmp(&daemon).is_empty());
}

#[tokio::test]
async fn a_stalled_pull_blocks_neither_removal_nor_other_pulls() {
    let registry = Registry::start().unwrap();
    let first = tiny(&[Entry::file("first", "1", 0o644)])
        .push(&registry.host(), "crius/first:1")
        .await
        .unwrap();
    let second = tiny(&[Entry::file("second", "2", 0o644)])
        .push(&registry.host(), "crius/second:1")
        .await
        .unwrap();
    let slow = tiny(&[Entry::file("slow", vec![7u8; 256 * 1024], 0o644)]);
    let gated = std::sync::Arc::new(
        GatedRegistry::start(&slow, "crius/slow", "1", slow.layers[0].digest()).unwrap(),
    );
    let mut daemon = Criusd::start_with(Options {
        config: format!(
            "insecure_registries = [\"{}\", \"{}\"]\n",
            registry.host(),
            gated.host()
        ),
        ..Options::default()
    })
    .await
    .unwrap();
    pull(&mut daemon, &first.reference, None).await.unwrap();
    let mut client = daemon.images.clone();
    let slow_ref = format!("{}/crius/slow:1", gated.host());
    let stalled = tokio::spawn(async move {
        client
            .pull_image(PullImageRequest {
                image: spec(&slow_ref),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
    });
    // Once this returns, the stalled pull is in the middle of its layer download.
    let reached = gated.clone();
    tokio::task::spawn_blocking(move || reached.wait_reached())
        .await
        .unwrap();
    // A bound so a regression shows as a failure rather than a hang.
    let bound = Duration::from_secs(120);
    tokio::time::timeout(bound, remove(&mut daemon, &first.reference))
        .await
        .expect("RemoveImage waited for an unrelated pull");
    assert!(
        status(&mut daemon, &first.reference, false)
            .await
            .image
            .is_none()
    );
    let image_ref = tokio::time::timeout(bound, pull(&mut daemon, &second.reference, None))
        .await
        .expect("a pull waited for an unrelated pull")
        .unwrap();
    assert_eq!(image_ref, second.config_digest);
    assert!(!stalled.is_finished(), "the gated pull finished early");
    gated.open_gate();
    assert_eq!(stalled.await.unwrap().unwrap(), slow.config_digest());
    assert_eq!(list(&mut daemon).await.len(), 2);
}

#[tokio::test]
async fn an_identity_token_is_exchanged_at_the_token_service() {
    let image = tiny(&[Entry::file("token", "t", 0o644)]);
    let registry =
        GatedRegistry::start_with_token_service(&image, "crius/private", "1", "refresh-s3cret")
            .unwrap();
    let mut daemon = daemon_for_host(&registry.host()).await;
    let reference = format!("{}/crius/private:1", registry.host());
    let identity = |token: &str| AuthConfig {
        identity_token: token.into(),
        ..AuthConfig::default()
    };
    let err = pull(&mut daemon, &reference, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let err = pull(&mut daemon, &reference, Some(identity("wrong")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("identity token"), "{err}");
    assert!(!err.message().contains("wrong"), "the token leaked: {err}");
    let image_ref = pull(&mut daemon, &reference, Some(identity("refresh-s3cret")))
        .await
        .unwrap();
    assert_eq!(image_ref, image.config_digest());
}
