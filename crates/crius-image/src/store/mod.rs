//! The image store: its tables, records, lookups and usage; pulls in `fetch`, leases, garbage
//! collection, removal and the start-up sweep in `gc`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crius_proto::blocking;
use futures_util::StreamExt;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::ImageError;
use crate::blobs::{BlobStore, unique};
use crate::digest::{self, chain_ids};
use crate::limits::{self, Limits, MAX_DOCUMENT_BYTES};
use crate::manifest::{self, ConfigFile, Descriptor, Parsed};
use crate::pull::{self, Credentials, RegistryOptions, Source};
use crate::record::{ImageConfig, ImageRecord, LayerRecord};
use crate::reference::ImageName;
use crate::unpack;

mod fetch;
mod gc;
pub use gc::LeaseCommit;

/// The image records: id → JSON of [`ImageRecord`].
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Leases: lease id (a container id) → JSON of the [`ImageRecord`] it uses. A leased image's
/// layers and blobs stay while the lease exists, even after the image is removed.
const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("image_leases");

/// Layers downloaded and unpacked at once per pull.
const LAYER_PARALLELISM: usize = 3;

/// Layers unpacked at once across all pulls and imports. Each unpack holds a blocking thread
/// for its whole length, and a streaming one waits there for its download, whose blob writes
/// need blocking threads too: unbounded, a flood of pulls could take every blocking thread
/// with unpacks waiting for downloads that can no longer write.
const UNPACK_SLOTS: usize = 8;

/// What a container needs from its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsSpec {
    /// The image id.
    pub image_id: String,
    /// Runtime defaults: entrypoint, cmd, env, user, working dir, stop signal.
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom to top (overlayfs takes them top first).
    pub layer_dirs: Vec<PathBuf>,
    /// The highest uid and gid any file of the image carries, when every layer recorded them.
    pub max_ids: Option<(u32, u32)>,
    /// The image's first repository digest (`repo@sha256:…`), if it has one.
    pub repo_digest: Option<String>,
}

/// Space and inodes used by the image store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsUsage {
    /// Bytes allocated.
    pub bytes: u64,
    /// Inodes used.
    pub inodes: u64,
}

/// Where the content of a pull comes from.
pub(crate) enum Origin<'a> {
    /// A registry or mirror.
    Registry(&'a Source),
    /// An OCI image layout directory (`blobs/sha256/...`).
    Layout(&'a Path),
    /// Files named by digest (an unpacked `docker save` archive).
    Files(&'a HashMap<String, PathBuf>),
}

/// Per-key async locks: one download or unpack per digest at a time.
#[derive(Debug, Default)]
struct KeyedLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let mutex = {
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() > 256 {
                map.retain(|_, weak| weak.strong_count() > 0);
            }
            match map.get(&key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key, Arc::downgrade(&m));
                    m
                }
            }
        };
        mutex.lock_owned().await
    }
}

/// The image store under the daemon's root.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: BlobStore,
    layers: PathBuf,
    tmp: PathBuf,
    db: Arc<redb::Database>,
    registry: RegistryOptions,
    locks: KeyedLocks,
    /// Serialises lease, release and removal (short, on blocking threads); pulls never take it.
    gc: Mutex<()>,
    /// Layers (`layer:<chain id>`) and blobs (`blob:<digest>`) that pulls and imports in
    /// progress use, with how many use each: garbage collection leaves them alone.
    pins: Mutex<HashMap<String, usize>>,
    /// The last usage walk and when it was made.
    usage_cache: Mutex<Option<(std::time::Instant, FsUsage)>>,
    /// The caps on images and layers.
    limits: Mutex<Limits>,
    /// Pulls in flight.
    transfers: Arc<crate::transfers::Transfers>,
    /// One permit per layer being unpacked ([`UNPACK_SLOTS`]).
    unpacks: tokio::sync::Semaphore,
}

/// How long a usage walk is reused (kubelet asks every few seconds; a walk visits every file).
const USAGE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl ImageStore {
    /// Opens the store under `root` with its records in `db`, creating what is missing, and
    /// sweeps leftovers: temporary files, and layers and blobs no record owns (what a crash
    /// in the middle of a pull leaves).
    pub fn open(
        root: &Path,
        db: Arc<redb::Database>,
        registry: RegistryOptions,
    ) -> Result<ImageStore, ImageError> {
        let blobs_dir = root.join("blobs");
        let layers = root.join("layers");
        let tmp = root.join("image-tmp");
        unpack::remove_tree(&tmp).map_err(ImageError::io(format!("emptying {}", tmp.display())))?;
        // Root only: unpacked layers hold image files with their set-id bits, file
        // capabilities and device nodes, which no other host user may reach.
        for dir in [
            blobs_dir.clone(),
            blobs_dir.join("sha256"),
            layers.clone(),
            tmp.clone(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(ImageError::io(format!("creating {}", dir.display())))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(ImageError::io(format!("restricting {}", dir.display())))?;
        }
        let txn = db.begin_write().map_err(ImageError::db("begin"))?;
        txn.open_table(IMAGES)
            .map_err(ImageError::db("create the images table"))?;
        txn.open_table(LEASES)
            .map_err(ImageError::db("create the image leases table"))?;
        txn.commit().map_err(ImageError::db("commit"))?;
        let store = ImageStore {
            root: root.to_owned(),
            blobs: BlobStore::new(blobs_dir, tmp.clone()),
            layers,
            tmp,
            db,
            registry,
            locks: KeyedLocks::default(),
            gc: Mutex::new(()),
            pins: Mutex::new(HashMap::new()),
            usage_cache: Mutex::new(None),
            limits: Mutex::new(Limits::default()),
            transfers: Arc::default(),
            unpacks: tokio::sync::Semaphore::new(UNPACK_SLOTS),
        };
        store.sweep()?;
        Ok(store)
    }

    /// Replaces the caps on images and layers (the defaults are [`Limits::default`]).
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = limits;
    }

    /// The caps on images and layers in force.
    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory holding every unpacked layer (`<root>/layers`): containers mount it once
    /// per pod (idmapped) and stack layers from it.
    pub fn layers_dir(&self) -> &Path {
        &self.layers
    }

    /// The store's root (the daemon's root), the image filesystem's mountpoint as reported.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of downloads, unpacks and imports in progress (emptied at start).
    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The directory of the layer with `chain_id`.
    pub fn layer_dir(&self, chain_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.layers.join(digest::hex_of(chain_id)?))
    }

    /// Every image record.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let txn = self.db.begin_read().map_err(ImageError::db("begin read"))?;
        let table = txn
            .open_table(IMAGES)
            .map_err(ImageError::db("open images"))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(ImageError::db("iterate images"))? {
            let (key, value) = item.map_err(ImageError::db("read image"))?;
            out.push(decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// The image `reference` names: an id (`sha256:<hex>`, the bare hex, or a unique hex
    /// prefix), a name (normalised: `busybox` is `docker.io/library/busybox:latest`) or a repo
    /// digest (`name@sha256:...`).
    pub fn get(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        let records = self.list()?;
        Ok(find(&records, reference).cloned())
    }

    /// What a container of image `reference` needs: config and layer directories.
    pub fn rootfs(&self, reference: &str) -> Result<RootfsSpec, ImageError> {
        let record = self.get(reference)?.ok_or_else(|| ImageError::NotFound {
            reference: reference.to_owned(),
        })?;
        let layer_dirs: Vec<PathBuf> = record
            .layers
            .iter()
            .map(|l| self.layer_dir(&l.chain_id))
            .collect::<Result<_, _>>()?;
        let max_ids = layer_dirs
            .iter()
            .map(|d: &PathBuf| unpack::max_ids(d))
            .try_fold((0, 0), |(u, g), ids| ids.map(|(a, b)| (u.max(a), g.max(b))));
        Ok(RootfsSpec {
            image_id: record.id,
            config: record.config,
            layer_dirs,
            max_ids,
            repo_digest: record.repo_digests.first().cloned(),
        })
    }

    /// The raw config JSON of image `id`.
    pub async fn config_json(&self, id: &str) -> Result<Vec<u8>, ImageError> {
        self.blobs.read(id).await
    }

    /// Bytes and inodes used under `blobs/`, `layers/` and the temporary directory (a walk,
    /// reused for a few seconds).
    pub fn usage(&self) -> FsUsage {
        let mut cache = self
            .usage_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, usage)) = *cache
            && at.elapsed() < USAGE_TTL
        {
            return usage;
        }
        let usage = self.walk_usage();
        *cache = Some((std::time::Instant::now(), usage));
        usage
    }

    /// Forgets the cached usage (after the store changed).
    fn usage_changed(&self) {
        *self
            .usage_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn walk_usage(&self) -> FsUsage {
        let mut usage = FsUsage::default();
        let mut seen = HashSet::new();
        for dir in [self.blobs.dir(), &self.layers, &self.tmp] {
            walk_usage(dir, &mut usage, &mut seen);
        }
        usage
    }

    /// Imports every image of the OCI image layout directory `dir` (its `index.json`; image
    /// indexes in it are resolved to this node's platform). Each image is named by its
    /// `org.opencontainers.image.ref.name` annotation when that is a full name, or by
    /// `name` when given (for a layout holding one image). Every blob is verified.
    pub async fn import_oci_layout(
        self: &Arc<Self>,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let result = self.import_layout_locked(dir, name).await;
        if result.is_err() {
            self.sweep_after_failure().await;
        }
        result
    }

    async fn import_layout_locked(
        &self,
        dir: &Path,
        name: Option<&str>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let display = dir.display().to_string();
        let bad = |reason: String| ImageError::BadImage {
            reference: display.clone(),
            reason,
        };
        if !dir.join(crate::layout::OCI_LAYOUT_FILE).is_file() {
            return Err(bad(format!(
                "not an OCI image layout: no {} file",
                crate::layout::OCI_LAYOUT_FILE
            )));
        }
        let index_path = dir.join("index.json");
        let index = read_document(&index_path, &display).await?;
        let Parsed::Index(entries) =
            manifest::parse(&index, Some(manifest::OCI_INDEX)).map_err(|e| bad(e.to_string()))?
        else {
            return Err(bad("index.json is not an image index".into()));
        };
        let origin = Origin::Layout(dir);
        let mut out = Vec::new();
        for entry in entries {
            // containerd and docker name the image in their own annotation; the OCI one is
            // often a bare tag, which names nothing on its own.
            let ref_name = entry_annotation(&index, &entry.digest, CONTAINERD_NAME_ANNOTATION)
                .or_else(|| {
                    entry_annotation(&index, &entry.digest, crate::layout::REF_NAME_ANNOTATION)
                        .filter(|r| r.contains(['/', ':', '@']))
                });
            let image_name = match (name, ref_name.as_deref()) {
                (Some(n), _) => Some(ImageName::parse(n)?),
                (None, Some(r)) => ImageName::parse(r).ok(),
                (None, None) => None,
            };
            check(display.clone(), &entry, "manifest", MAX_DOCUMENT_BYTES)?;
            let (body, digest) = self.read_layout_blob(dir, &entry.digest).await?;
            let (body, digest) = match manifest::parse(&body, Some(&entry.media_type))
                .map_err(|e| bad(e.to_string()))?
            {
                Parsed::Index(inner) => {
                    let (os, arch) = manifest::host_platform();
                    let chosen = manifest::select_platform(&inner, os, arch).ok_or_else(|| {
                        ImageError::NoMatchingPlatform {
                            reference: display.clone(),
                            platform: format!("{os}/{arch}"),
                            offered: manifest::describe_platforms(&inner),
                        }
                    })?;
                    check(display.clone(), chosen, "manifest", MAX_DOCUMENT_BYTES)?;
                    self.read_layout_blob(dir, &chosen.digest).await?
                }
                Parsed::Image { .. } => (body, digest),
            };
            let Parsed::Image { config, layers } =
                manifest::parse(&body, None).map_err(|e| bad(e.to_string()))?
            else {
                return Err(bad("nested index".into()));
            };
            let tags = image_name.iter().filter_map(ImageName::repo_tag).collect();
            let digests = image_name
                .iter()
                .map(|n| n.repo_digest(&entry.digest))
                .collect();
            let record = self
                .store_image(
                    origin_ref(&origin),
                    display.clone(),
                    &body,
                    &digest,
                    config,
                    layers,
                    tags,
                    digests,
                )
                .await?;
            out.push(record);
        }
        Ok(out)
    }

    async fn read_layout_blob(
        &self,
        dir: &Path,
        digest: &str,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let path = dir.join("blobs/sha256").join(digest::hex_of(digest)?);
        let body = read_document(&path, &dir.display().to_string()).await?;
        let actual = digest::sha256_of(&body);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                digest: digest.to_owned(),
                actual,
            });
        }
        Ok((body, digest.to_owned()))
    }
}

fn origin_ref<'a>(origin: &'a Origin<'a>) -> Origin<'a> {
    match origin {
        Origin::Registry(s) => Origin::Registry(s),
        Origin::Layout(d) => Origin::Layout(d),
        Origin::Files(f) => Origin::Files(f),
    }
}

/// A pin on a layer or blob (see [`ImageStore::pin`]); dropping it unpins.
struct Pin<'a> {
    pins: &'a Mutex<HashMap<String, usize>>,
    key: String,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = pins.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.key);
            }
        }
    }
}

/// The pin key of a blob.
fn blob_key(digest: &str) -> String {
    format!("blob:{digest}")
}

/// The pin key of a layer.
fn layer_key(chain_id: &str) -> String {
    format!("layer:{chain_id}")
}

/// Checks a descriptor's size against a cap (see [`limits::check_descriptor`]).
fn check(
    reference: String,
    desc: &Descriptor,
    what: &'static str,
    limit: u64,
) -> Result<u64, ImageError> {
    limits::check_descriptor(desc, what, limit).map_err(|e| match e {
        limits::DescriptorError::NotPositive { .. } => ImageError::BadImage {
            reference,
            reason: e.to_string(),
        },
        limits::DescriptorError::TooLarge { .. } => ImageError::TooLarge {
            reference,
            what: e.to_string(),
        },
    })
}

/// Reads a manifest, index or config file of at most [`MAX_DOCUMENT_BYTES`], refusing a
/// larger one before reading it.
pub(crate) async fn read_document(path: &Path, reference: &str) -> Result<Vec<u8>, ImageError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(ImageError::io(format!("opening {}", path.display())))?;
    let mut body = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut body)
        .await
        .map_err(ImageError::io(format!("reading {}", path.display())))?;
    if body.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ImageError::TooLarge {
            reference: reference.to_owned(),
            what: format!(
                "{} is larger than crius' limit of {MAX_DOCUMENT_BYTES} bytes for a manifest, index or config",
                path.display()
            ),
        });
    }
    Ok(body)
}

/// The annotation containerd and docker use for an image's full name in an index.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// The annotation `key` of the index entry `digest`.
fn entry_annotation(index: &[u8], digest: &str, key: &str) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(index).ok()?;
    doc.get("manifests")?
        .as_array()?
        .iter()
        .find(|m| m.get("digest").and_then(|d| d.as_str()) == Some(digest))?
        .get("annotations")?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

/// Writes everything of the file system holding `dir` to disk (`syncfs`).
fn sync_file_system(dir: &Path) -> Result<(), ImageError> {
    let handle =
        std::fs::File::open(dir).map_err(ImageError::io(format!("opening {}", dir.display())))?;
    nix::unistd::syncfs(&handle).map_err(|e| ImageError::Io {
        context: format!("syncing the file system of {}", dir.display()),
        source: e.into(),
    })
}

fn commit_record(db: &redb::Database, mut record: ImageRecord) -> Result<ImageRecord, ImageError> {
    let txn = db.begin_write().map_err(ImageError::db("begin"))?;
    {
        let mut table = txn
            .open_table(IMAGES)
            .map_err(ImageError::db("open images"))?;
        let mut others = Vec::new();
        for item in table.iter().map_err(ImageError::db("iterate images"))? {
            let (key, value) = item.map_err(ImageError::db("read image"))?;
            others.push(decode(key.value(), value.value())?);
        }
        for mut other in others {
            if other.id == record.id {
                for name in other.repo_tags.drain(..) {
                    if !record.repo_tags.contains(&name) {
                        record.repo_tags.push(name);
                    }
                }
                for name in other.repo_digests.drain(..) {
                    if !record.repo_digests.contains(&name) {
                        record.repo_digests.push(name);
                    }
                }
                continue;
            }
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                let json = encode(&other)?;
                table
                    .insert(other.id.as_str(), json.as_slice())
                    .map_err(ImageError::db("update image"))?;
            }
        }
        let json = encode(&record)?;
        table
            .insert(record.id.as_str(), json.as_slice())
            .map_err(ImageError::db("insert image"))?;
    }
    txn.commit().map_err(ImageError::db("commit"))?;
    Ok(record)
}

fn encode(record: &ImageRecord) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(record).map_err(|source| ImageError::Record {
        id: record.id.clone(),
        source,
    })
}

fn decode(id: &str, json: &[u8]) -> Result<ImageRecord, ImageError> {
    serde_json::from_slice(json).map_err(|source| ImageError::Record {
        id: id.to_owned(),
        source,
    })
}

/// Finds the record `reference` names (see [`ImageStore::get`]).
pub fn find<'a>(records: &'a [ImageRecord], reference: &str) -> Option<&'a ImageRecord> {
    if let Some(r) = records.iter().find(|r| r.matches(reference)) {
        return Some(r);
    }
    if digest::is_hex64(reference) {
        let id = format!("{}{reference}", digest::SHA256_PREFIX);
        return records.iter().find(|r| r.id == id);
    }
    if let Ok(name) = ImageName::parse(reference) {
        let wanted = match &name.digest {
            Some(d) => name.repo_digest(d),
            None => name.repo_tag().unwrap_or_default(),
        };
        if let Some(r) = records.iter().find(|r| r.matches(&wanted)) {
            return Some(r);
        }
    }
    let hex = reference
        .strip_prefix(digest::SHA256_PREFIX)
        .unwrap_or(reference);
    if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matching = records.iter().filter(|r| {
            r.id.trim_start_matches(digest::SHA256_PREFIX)
                .starts_with(hex)
        });
        if let (Some(one), None) = (matching.next(), matching.next()) {
            return Some(one);
        }
    }
    None
}

/// The chain ids and blob digests the records own.
fn owned(records: &[ImageRecord]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut chains = BTreeSet::new();
    let mut blobs = BTreeSet::new();
    for record in records {
        chains.extend(record.layers.iter().map(|l| l.chain_id.clone()));
        blobs.extend(record_blobs(record));
    }
    (chains, blobs)
}

fn record_blobs(record: &ImageRecord) -> Vec<String> {
    let mut out = vec![record.id.clone(), record.manifest_digest.clone()];
    out.extend(record.layers.iter().map(|l| l.digest.clone()));
    out
}

fn config_media_type_to_manifest(config_media_type: &str) -> String {
    if config_media_type == manifest::DOCKER_CONFIG {
        manifest::DOCKER_MANIFEST.into()
    } else {
        manifest::OCI_MANIFEST.into()
    }
}

/// Whether another source might succeed where this one failed.
fn is_source_error(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::Registry { .. }
            | ImageError::RegistryNotFound { .. }
            | ImageError::Unauthenticated { .. }
            | ImageError::PermissionDenied { .. }
            | ImageError::DigestMismatch { .. }
            | ImageError::SizeMismatch { .. }
            | ImageError::Transfer { .. }
            | ImageError::Io { .. }
    )
}

/// Appends the failures of earlier sources (mirrors) to the final error's message.
fn annotate(e: ImageError, failed: &[String]) -> ImageError {
    if failed.is_empty() {
        return e;
    }
    let note = format!(" (mirrors tried first: {})", failed.join("; "));
    match e {
        ImageError::Registry {
            reference,
            registry,
            message,
        } => ImageError::Registry {
            reference,
            registry,
            message: message + &note,
        },
        ImageError::RegistryNotFound {
            reference,
            registry,
            message,
        } => ImageError::RegistryNotFound {
            reference,
            registry,
            message: message + &note,
        },
        ImageError::Unauthenticated {
            reference,
            registry,
            message,
        } => ImageError::Unauthenticated {
            reference,
            registry,
            message: message + &note,
        },
        ImageError::PermissionDenied {
            reference,
            registry,
            message,
        } => ImageError::PermissionDenied {
            reference,
            registry,
            message: message + &note,
        },
        other => other,
    }
}

fn walk_usage(dir: &Path, usage: &mut FsUsage, seen: &mut HashSet<(u64, u64)>) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            usage.bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
}
