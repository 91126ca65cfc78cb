//! End-to-end tests of the test-image builder and the loopback registry: build images offline,
//! push them to a real `docker-registry`, read everything back over HTTP and check digests,
//! media types and contents. Needs `/usr/bin/docker-registry` and `/bin/busybox`.

use std::collections::BTreeMap;
use std::io::Read;

use crius_tests::image::{
    self, Compression, Entry, Image, Layer, MEDIA_TYPE_CONFIG, MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD, MEDIA_TYPE_MANIFEST, Pushed, sha256_digest,
};
use crius_tests::registry::{Registry, RegistryClient};
use serde_json::Value;

/// One tar entry read back: type, link target, mode, uid, gid, data.
#[derive(Debug)]
struct ReadEntry {
    kind: tar::EntryType,
    link: Option<String>,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
}

/// Every entry of `tar`, by name.
fn read_tar(tar: &[u8]) -> BTreeMap<String, ReadEntry> {
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let header = entry.header();
        let (kind, mode, uid, gid) = (
            header.entry_type(),
            header.mode().expect("mode"),
            header.uid().expect("uid"),
            header.gid().expect("gid"),
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        out.insert(
            name,
            ReadEntry {
                kind,
                link,
                mode,
                uid,
                gid,
                data,
            },
        );
    }
    out
}

/// What was read back from the registry for one image.
struct Fetched {
    manifest: Value,
    config: Value,
    /// Uncompressed tars, lowest layer first.
    layers: Vec<Vec<u8>>,
}

/// Fetches the manifest `reference` of `repo` and all its blobs, checking every digest, size
/// and media type against `image` and `pushed`.
async fn fetch_and_verify(
    client: &RegistryClient,
    repo: &str,
    reference: &str,
    image: &Image,
    pushed: &Pushed,
) -> Fetched {
    let fetched = client
        .get_manifest(repo, reference)
        .await
        .expect("GET manifest");
    assert_eq!(fetched.media_type, MEDIA_TYPE_MANIFEST);
    assert_eq!(fetched.digest.as_deref(), Some(&*pushed.manifest_digest));
    assert_eq!(sha256_digest(&fetched.body), pushed.manifest_digest);
    assert_eq!(
        fetched.body,
        image.manifest_json(),
        "manifest bytes changed"
    );
    let manifest: Value = serde_json::from_slice(&fetched.body).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], MEDIA_TYPE_CONFIG);
    assert_eq!(manifest["config"]["digest"], *pushed.config_digest);

    let config_bytes = client
        .get_blob(repo, &pushed.config_digest)
        .await
        .expect("GET config");
    assert_eq!(sha256_digest(&config_bytes), pushed.config_digest);
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let config: Value = serde_json::from_slice(&config_bytes).expect("config JSON");
    assert_eq!(config["rootfs"]["type"], "layers");

    let descriptors = manifest["layers"].as_array().expect("layers array");
    assert_eq!(descriptors.len(), image.layers.len());
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids array");
    assert_eq!(diff_ids.len(), image.layers.len());
    let mut layers = Vec::new();
    for ((descriptor, diff_id), layer) in descriptors.iter().zip(diff_ids).zip(&image.layers) {
        let digest = descriptor["digest"].as_str().expect("layer digest");
        assert_eq!(digest, layer.digest());
        let media_type = descriptor["mediaType"].as_str().expect("layer media type");
        let compression = match media_type {
            MEDIA_TYPE_LAYER => Compression::None,
            MEDIA_TYPE_LAYER_GZIP => Compression::Gzip,
            MEDIA_TYPE_LAYER_ZSTD => Compression::Zstd,
            other => panic!("unexpected layer media type {other}"),
        };
        assert_eq!(compression, layer.compression());
        let blob = client.get_blob(repo, digest).await.expect("GET layer");
        assert_eq!(sha256_digest(&blob), digest);
        assert_eq!(descriptor["size"], blob.len());
        let tar = compression.decompress(&blob).expect("decompress layer");
        assert_eq!(sha256_digest(&tar), diff_id.as_str().expect("diff_id"));
        layers.push(tar);
    }
    Fetched {
        manifest,
        config,
        layers,
    }
}

#[tokio::test]
async fn busybox_pushes_and_reads_back() {
    let registry = Registry::start().expect("start registry");
    let client = registry.client().expect("client");
    assert_eq!(client.ping().await.expect("ping"), 200);
    let image = image::busybox().expect("busybox image");
    let pushed = image
        .push(&registry.host(), "test/busybox:1.0")
        .await
        .expect("push");
    assert_eq!(
        pushed.reference,
        format!("{}/test/busybox:1.0", registry.host())
    );
    assert_eq!(pushed.manifest_digest, image.manifest_digest());
    assert_eq!(pushed.config_digest, image.config_digest());

    let got = fetch_and_verify(&client, "test/busybox", "1.0", &image, &pushed).await;
    // By digest too.
    fetch_and_verify(
        &client,
        "test/busybox",
        &pushed.manifest_digest,
        &image,
        &pushed,
    )
    .await;
    assert_eq!(got.config["architecture"], "amd64");
    assert_eq!(got.config["os"], "linux");
    assert_eq!(
        got.config["config"]["Env"],
        serde_json::json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    assert_eq!(got.config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(
        got.manifest["layers"][0]["mediaType"],
        MEDIA_TYPE_LAYER_GZIP
    );

    let files = read_tar(&got.layers[0]);
    let busybox = &files["bin/busybox"];
    assert_eq!(busybox.kind, tar::EntryType::Regular);
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(
        busybox.data,
        std::fs::read(image::BUSYBOX).expect("read host busybox"),
        "pushed /bin/busybox differs from the host's"
    );
    for applet in ["sh", "ls", "id", "cat"] {
        let link = &files[&format!("bin/{applet}")];
        assert_eq!(link.kind, tar::EntryType::Symlink);
        assert_eq!(link.link.as_deref(), Some("busybox"));
    }
    assert_eq!(
        files
            .keys()
            .filter(|k| k.starts_with("bin/") && *k != "bin/")
            .count(),
        image::busybox_applets().expect("applets").len() + 1
    );
    assert_eq!(files["tmp/"].kind, tar::EntryType::Directory);
    assert_eq!(files["tmp/"].mode, 0o1777);
    assert_eq!(files["root/"].kind, tar::EntryType::Directory);
    let passwd = String::from_utf8_lossy(&files["etc/passwd"].data).into_owned();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    assert!(passwd.contains("\nnobody:x:65534:65534:"), "{passwd}");
    assert!(files.contains_key("etc/group"));
    assert!(files.values().all(|e| e.uid == 0 && e.gid == 0));

    // The registry stores blobs where blob_path says, for tamper tests.
    let stored = registry.blob_path(image.layers[0].digest());
    assert_eq!(
        std::fs::read(&stored).expect("stored blob"),
        image.layers[0].blob()
    );
    assert!(stored.starts_with(registry.storage_dir()));
}

#[tokio::test]
async fn zstd_and_uncompressed_layers() {
    let registry = Registry::start().expect("start registry");
    let client = registry.client().expect("client");
    let image = image::busybox()
        .expect("busybox image")
        .with_layer(
            Layer::new(
                &[
                    Entry::dir("zstd", 0o755),
                    Entry::file("zstd/hello", "hello from zstd\n", 0o644).owned(1000, 1000),
                ],
                Compression::Zstd,
            )
            .expect("zstd layer"),
        )
        .with_layer(
            Layer::new(
                &[Entry::file("plain", "plain tar\n", 0o600)],
                Compression::None,
            )
            .expect("plain layer"),
        )
        .with_entrypoint(&["/bin/sh", "-c"])
        .with_user("1000:1000")
        .with_working_dir("/zstd")
        .with_stop_signal("SIGINT")
        .with_history();
    let pushed = image
        .push(&registry.host(), "test/zstd")
        .await
        .expect("push");
    assert!(pushed.reference.ends_with("/test/zstd:latest"));
    let got = fetch_and_verify(&client, "test/zstd", "latest", &image, &pushed).await;
    let media_types: Vec<_> = got.manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        media_types,
        [
            MEDIA_TYPE_LAYER_GZIP,
            MEDIA_TYPE_LAYER_ZSTD,
            MEDIA_TYPE_LAYER
        ]
    );
    let zstd = read_tar(&got.layers[1]);
    let hello = &zstd["zstd/hello"];
    assert_eq!(hello.data, b"hello from zstd\n");
    assert_eq!((hello.uid, hello.gid), (1000, 1000));
    assert_eq!(read_tar(&got.layers[2])["plain"].mode, 0o600);
    let config = &got.config["config"];
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/zstd");
    assert_eq!(config["StopSignal"], "SIGINT");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(got.config["history"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn multilayer_whiteouts_push() {
    let registry = Registry::start().expect("start registry");
    let client = registry.client().expect("client");
    let image = image::multilayer_whiteouts().expect("image");
    let pushed = image
        .push(&registry.host(), "test/multilayer:v1")
        .await
        .expect("push");
    let got = fetch_and_verify(&client, "test/multilayer", "v1", &image, &pushed).await;
    assert_eq!(got.layers.len(), 2);
    let lower = read_tar(&got.layers[0]);
    for (name, data) in [
        ("data/a", "a\n"),
        ("data/b", "b\n"),
        ("opq/x", "x\n"),
        ("opq/y", "y\n"),
    ] {
        assert_eq!(lower[name].data, data.as_bytes());
    }
    assert!(lower.contains_key("bin/busybox"));
    let upper = read_tar(&got.layers[1]);
    let names: Vec<_> = upper.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["data/", "data/.wh.a", "opq/", "opq/.wh..wh..opq", "opq/z"]
    );
    assert!(upper["data/.wh.a"].data.is_empty());
    assert_eq!(upper["opq/z"].data, b"z\n");
}

#[tokio::test]
async fn index_lists_both_platforms() {
    let registry = Registry::start().expect("start registry");
    let client = registry.client().expect("client");
    let amd64 = image::busybox().expect("busybox");
    let arm64 = image::busybox().expect("busybox").with_layer(
        Layer::new(&[Entry::file("arch", "arm64\n", 0o644)], Compression::Gzip).expect("layer"),
    );
    let pushed = image::push_index(
        &registry.host(),
        "test/multiarch:latest",
        &[("linux", "arm64/v8", &arm64), ("linux", "amd64", &amd64)],
    )
    .await
    .expect("push index");
    assert_eq!(pushed.manifests.len(), 2);
    assert_eq!(pushed.manifests[1].manifest_digest, amd64.manifest_digest());

    let index = client
        .get_manifest("test/multiarch", "latest")
        .await
        .expect("GET index");
    assert_eq!(index.media_type, MEDIA_TYPE_INDEX);
    assert_eq!(index.digest.as_deref(), Some(&*pushed.index_digest));
    assert_eq!(sha256_digest(&index.body), pushed.index_digest);
    let doc: Value = serde_json::from_slice(&index.body).expect("index JSON");
    assert_eq!(doc["mediaType"], MEDIA_TYPE_INDEX);
    let entries = doc["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 2);
    let find = |arch: &str| {
        entries
            .iter()
            .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
            .unwrap_or_else(|| panic!("no linux/{arch} in the index"))
    };
    assert_eq!(find("arm64")["platform"]["variant"], "v8");
    assert!(find("amd64")["platform"].get("variant").is_none());
    for (arch, image, pushed_one) in [
        ("amd64", &amd64, &pushed.manifests[1]),
        ("arm64", &arm64, &pushed.manifests[0]),
    ] {
        let entry = find(arch);
        assert_eq!(entry["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(entry["digest"], *pushed_one.manifest_digest);
        assert_eq!(
            pushed_one.reference,
            format!(
                "{}/test/multiarch@{}",
                registry.host(),
                pushed_one.manifest_digest
            )
        );
        let mut platform_image = image.clone();
        platform_image.architecture = arch.into();
        platform_image.variant = (arch == "arm64").then(|| "v8".to_owned());
        let got = fetch_and_verify(
            &client,
            "test/multiarch",
            &pushed_one.manifest_digest,
            &platform_image,
            pushed_one,
        )
        .await;
        assert_eq!(got.config["architecture"], arch);
        assert_eq!(got.config["os"], "linux");
        assert_eq!(entry["size"], platform_image.manifest_json().len());
    }
}

#[tokio::test]
async fn htpasswd_registry_requires_credentials() {
    let registry = Registry::start_with_htpasswd("tester", "s3cret").expect("start registry");
    assert_eq!(registry.credentials(), Some(("tester", "s3cret")));
    let anonymous = RegistryClient::new(&registry.host()).expect("client");
    assert_eq!(anonymous.ping().await.expect("ping"), 401);
    let wrong = RegistryClient::new(&registry.host())
        .expect("client")
        .with_basic_auth("tester", "wrong");
    assert_eq!(wrong.ping().await.expect("ping"), 401);
    let client = registry.client().expect("client");
    assert_eq!(client.ping().await.expect("ping"), 200);

    let image = image::busybox().expect("busybox");
    assert!(image.push(&registry.host(), "test/private").await.is_err());
    let pushed = image
        .push_to(&client, "test/private:v1")
        .await
        .expect("authenticated push");
    assert!(anonymous.get_manifest("test/private", "v1").await.is_err());
    fetch_and_verify(&client, "test/private", "v1", &image, &pushed).await;
}

#[tokio::test]
async fn image_user_preset() {
    let registry = Registry::start().expect("start registry");
    let client = registry.client().expect("client");
    let image = image::busybox_with_image_user().expect("image");
    let pushed = image
        .push(&registry.host(), "test/image-user")
        .await
        .expect("push");
    let got = fetch_and_verify(&client, "test/image-user", "latest", &image, &pushed).await;
    let files = read_tar(&got.layers[0]);
    let passwd = String::from_utf8_lossy(&files["etc/passwd"].data).into_owned();
    assert!(
        passwd
            .contains("\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n")
    );
    let group = String::from_utf8_lossy(&files["etc/group"].data).into_owned();
    assert!(group.contains("\ngroup-defined-in-image:x:50000:user-defined-in-image\n"));
    let home = &files["home/user-defined-in-image/"];
    assert_eq!((home.uid, home.gid), (1000, 1000));
    assert!(got.config["config"].get("User").is_none());
}

#[test]
fn blocking_push_from_a_plain_test() {
    let registry = Registry::start().expect("start registry");
    let image = image::busybox().expect("busybox");
    let pushed = image
        .push_blocking(&registry.host(), "test/blocking:v1")
        .expect("push");
    assert_eq!(pushed.manifest_digest, image.manifest_digest());
    let index = image::push_index_blocking(
        &registry.host(),
        "test/blocking:index",
        &[("linux", "amd64", &image)],
    )
    .expect("push index");
    assert_eq!(index.manifests[0].manifest_digest, image.manifest_digest());
    let client = registry.client().expect("client");
    let fetched = crius_tests::registry::block_on(client.get_manifest("test/blocking", "v1"))
        .expect("GET manifest");
    assert_eq!(fetched.body, image.manifest_json());
}

#[test]
fn large_image_builds_quickly_and_reproducibly() {
    let start = std::time::Instant::now();
    let image = image::large(20_000).expect("large image");
    let elapsed = start.elapsed();
    assert_eq!(image.layers.len(), 2);
    let files = read_tar(image.layers[1].tar());
    assert_eq!(
        files.keys().filter(|k| k.starts_with("large/d")).count(),
        20_000 + 20_000 / image::LARGE_FILES_PER_DIR
    );
    assert_eq!(files["large/d0199/f0019999"].data, b"19999\n");
    assert!(
        elapsed < std::time::Duration::from_secs(60),
        "large(20000) took {elapsed:?}"
    );
    let again = image::large(20_000).expect("large image");
    assert_eq!(again.manifest_digest(), image.manifest_digest());

    let registry = Registry::start().expect("start registry");
    let pushed = image
        .push_blocking(&registry.host(), "test/large")
        .expect("push large");
    let stored = registry.blob_path(image.layers[1].digest());
    assert_eq!(
        std::fs::metadata(stored).expect("stored layer").len(),
        image.layers[1].size()
    );
    assert_eq!(pushed.manifest_digest, image.manifest_digest());
}

#[test]
fn registry_is_killed_and_removed_on_drop() {
    let registry = Registry::start().expect("start registry");
    let pid = registry.pid();
    let storage = registry.storage_dir().to_owned();
    assert!(storage.is_dir());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _registry = registry;
        panic!("test failure while the registry runs");
    }));
    assert!(result.is_err());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "registry {pid} still running (or a zombie) after drop"
    );
    assert!(!storage.exists(), "registry storage not removed");
}
