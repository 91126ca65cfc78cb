//! The store without a registry: offline import of OCI image layouts, leases, reopening.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use crius_image::digest::sha256_of;
use crius_image::{ImageError, ImageStore, RegistryOptions};

/// A one-file layer tar, gzip-compressed: (blob, diff id).
fn layer() -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_path("hello").expect("test step");
    header.set_size(6);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append(&header, &b"hello\n"[..]).expect("test step");
    let tar = builder.into_inner().expect("test step");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("test step");
    (gz.finish().expect("test step"), sha256_of(&tar))
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256_of(data);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(dir.join("blobs/sha256").join(hex), data).expect("test step");
    digest
}

/// Writes an OCI layout with one image named `name`; returns the config digest.
fn write_layout(dir: &Path, name: &str) -> (String, String) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("test step");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("test step");
    let (blob, diff_id) = layer();
    let layer_digest = put_blob(dir, &blob);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/hello"], "User": "65534"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let config_digest = put_blob(dir, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": blob.len()}],
    })
    .to_string();
    let manifest_digest = put_blob(dir, manifest.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    })
    .to_string();
    std::fs::write(dir.join("index.json"), index).expect("test step");
    (config_digest, layer_digest)
}

fn open_store(root: &Path) -> Arc<ImageStore> {
    std::fs::create_dir_all(root).expect("test step");
    let db = redb::Database::create(root.join("metadata.redb")).expect("test step");
    Arc::new(ImageStore::open(root, Arc::new(db), RegistryOptions::default()).expect("test step"))
}

#[tokio::test]
async fn imports_an_oci_layout() {
    let tmp = tempfile::tempdir().expect("test step");
    let layout = tmp.path().join("layout");
    let (config_digest, _) = write_layout(&layout, "registry.k8s.io/pause:3.10");
    let store = open_store(&tmp.path().join("root"));
    let records = store
        .import_oci_layout(&layout, None)
        .await
        .expect("test step");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, config_digest);
    assert_eq!(records[0].repo_tags, ["registry.k8s.io/pause:3.10"]);
    let rootfs = store
        .rootfs("registry.k8s.io/pause:3.10")
        .expect("test step");
    assert_eq!(rootfs.config.cmd, ["/hello"]);
    assert_eq!(rootfs.config.user, "65534");
    assert_eq!(rootfs.layer_dirs.len(), 1);
    assert!(rootfs.layer_dirs[0].starts_with(store.layers_dir()));
    assert_eq!(
        std::fs::read(rootfs.layer_dirs[0].join("hello")).expect("test step"),
        b"hello\n"
    );

    // Records and layers survive reopening the store.
    drop(store);
    let store = open_store(&tmp.path().join("root"));
    assert!(store.get(&config_digest).expect("test step").is_some());
    assert!(
        store.rootfs(&config_digest).expect("test step").layer_dirs[0]
            .join("hello")
            .exists()
    );
}

#[tokio::test]
async fn a_tampered_layout_blob_is_refused() {
    let tmp = tempfile::tempdir().expect("test step");
    let layout = tmp.path().join("layout");
    let (_, layer_digest) = write_layout(&layout, "example.com/app:1");
    let blob = layout
        .join("blobs/sha256")
        .join(layer_digest.trim_start_matches("sha256:"));
    let mut data = std::fs::read(&blob).expect("test step");
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&blob, data).expect("test step");
    let store = open_store(&tmp.path().join("root"));
    let err = store
        .import_oci_layout(&layout, None)
        .await
        .expect_err("expected an error");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(store.list().expect("test step").is_empty());
    assert_eq!(
        std::fs::read_dir(store.layers_dir())
            .expect("test step")
            .count(),
        0
    );
    assert_eq!(
        store.blobs().list().expect("test step"),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_leased_image_keeps_its_layers_after_removal() {
    let tmp = tempfile::tempdir().expect("test step");
    let layout = tmp.path().join("layout");
    let (config_digest, _) = write_layout(&layout, "example.com/app:1");
    let root = tmp.path().join("root");
    let store = open_store(&root);
    store
        .import_oci_layout(&layout, None)
        .await
        .expect("test step");
    let rootfs = store
        .lease("container-1", "example.com/app:1")
        .await
        .expect("test step");
    assert_eq!(rootfs.image_id, config_digest);
    assert_eq!(
        store.leases().expect("test step"),
        [("container-1".to_owned(), config_digest.clone())]
    );
    assert!(
        store
            .remove(&config_digest)
            .await
            .expect("test step")
            .is_some()
    );
    assert!(store.get(&config_digest).expect("test step").is_none());
    assert!(rootfs.layer_dirs[0].join("hello").exists());
    // The lease survives a restart (and its start-up sweep).
    drop(store);
    let store = open_store(&root);
    assert!(rootfs.layer_dirs[0].join("hello").exists());
    store.release("container-1").await.expect("test step");
    assert!(!rootfs.layer_dirs[0].exists());
    assert_eq!(
        store.blobs().list().expect("test step"),
        Vec::<String>::new()
    );
    store.release("container-1").await.expect("test step");
    let err = store
        .lease("c2", "example.com/app:1")
        .await
        .expect_err("expected an error");
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn an_early_lease_keeps_the_layers_from_a_removal_issued_while_it_commits() {
    let tmp = tempfile::tempdir().expect("test step");
    let layout = tmp.path().join("layout");
    let (config_digest, _) = write_layout(&layout, "example.com/app:1");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).expect("test step");
    let db = Arc::new(redb::Database::create(root.join("metadata.redb")).expect("test step"));
    let store = Arc::new(
        ImageStore::open(&root, db.clone(), RegistryOptions::default()).expect("test step"),
    );
    store
        .import_oci_layout(&layout, None)
        .await
        .expect("test step");
    // A removal issued while the lease's commit waits for the database keeps the layers.
    let writer = db.begin_write().expect("test step");
    let (rootfs, commit) = store
        .lease_early("container-1", "example.com/app:1")
        .await
        .expect("test step");
    assert_eq!(rootfs.image_id, config_digest);
    assert!(rootfs.layer_dirs[0].join("hello").exists());
    let removing = {
        let store = store.clone();
        let id = config_digest.clone();
        tokio::spawn(async move { store.remove(&id).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(writer);
    commit.done().await.expect("test step");
    assert!(
        removing
            .await
            .expect("test step")
            .expect("test step")
            .is_some()
    );
    assert!(store.get(&config_digest).expect("test step").is_none());
    assert!(rootfs.layer_dirs[0].join("hello").exists());
    assert_eq!(
        store.leases().expect("test step"),
        [("container-1".to_owned(), config_digest.clone())]
    );
    store.release("container-1").await.expect("test step");
    assert!(!rootfs.layer_dirs[0].exists());
    // An unknown image: refused before anything is recorded.
    let err = store
        .lease_early("c2", "example.com/app:1")
        .await
        .expect_err("expected an error");
    assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
    assert_eq!(store.leases().expect("test step"), Vec::new());
}
