//! The image store: pulls, records, lookups, removal, start-up sweep and usage.

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

    /// Leases image `reference` to `lease_id` (a container id) and returns what the container
    /// needs. The image's layers stay until [`ImageStore::release`], even if the image is
    /// removed in between (as CRI allows). Leasing again under the same id replaces the lease.
    pub async fn lease(
        self: &Arc<Self>,
        lease_id: &str,
        reference: &str,
    ) -> Result<RootfsSpec, ImageError> {
        let this = self.clone();
        let (lease_id, reference) = (lease_id.to_owned(), reference.to_owned());
        blocking(move || this.lease_now(&lease_id, &reference)).await
    }

    fn lease_now(&self, lease_id: &str, reference: &str) -> Result<RootfsSpec, ImageError> {
        let _gc = self.gc.lock().unwrap_or_else(PoisonError::into_inner);
        let record = self.get(reference)?.ok_or_else(|| ImageError::NotFound {
            reference: reference.to_owned(),
        })?;
        let json = encode(&record)?;
        let txn = self.db.begin_write().map_err(ImageError::db("begin"))?;
        {
            let mut table = txn
                .open_table(LEASES)
                .map_err(ImageError::db("open image leases"))?;
            table
                .insert(lease_id, json.as_slice())
                .map_err(ImageError::db("insert image lease"))?;
        }
        txn.commit().map_err(ImageError::db("commit"))?;
        self.rootfs(&record.id)
    }

    /// Ends lease `lease_id`, and every lease `<lease_id>/…` (a container's image volumes), and
    /// deletes the layers and blobs nothing owns any more. Releasing an unknown lease does
    /// nothing.
    pub async fn release(self: &Arc<Self>, lease_id: &str) -> Result<(), ImageError> {
        let this = self.clone();
        let lease_id = lease_id.to_owned();
        blocking(move || this.release_now(&lease_id)).await
    }

    fn release_now(&self, lease_id: &str) -> Result<(), ImageError> {
        let _gc = self.gc.lock().unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().map_err(ImageError::db("begin"))?;
        let removed = {
            let mut table = txn
                .open_table(LEASES)
                .map_err(ImageError::db("open image leases"))?;
            // `<lease_id>/…` sorts between `<lease_id>/` and `<lease_id>0` ('0' follows '/').
            let (low, high) = (format!("{lease_id}/"), format!("{lease_id}0"));
            let mut ids = vec![lease_id.to_owned()];
            for entry in table
                .range::<&str>(low.as_str()..high.as_str())
                .map_err(ImageError::db("read image leases"))?
            {
                let (key, _) = entry.map_err(ImageError::db("read image leases"))?;
                ids.push(key.value().to_owned());
            }
            let mut removed = Vec::new();
            for id in &ids {
                let value = table
                    .remove(id.as_str())
                    .map_err(ImageError::db("remove image lease"))?;
                if let Some(v) = value {
                    removed.push(decode(id, v.value())?);
                }
            }
            removed
        };
        txn.commit().map_err(ImageError::db("commit"))?;
        for record in &removed {
            self.collect_garbage(record)?;
        }
        Ok(())
    }

    /// Every lease: (lease id, image id).
    pub fn leases(&self) -> Result<Vec<(String, String)>, ImageError> {
        Ok(self
            .leased_records()?
            .into_iter()
            .map(|(lease, record)| (lease, record.id))
            .collect())
    }

    fn leased_records(&self) -> Result<Vec<(String, ImageRecord)>, ImageError> {
        let txn = self.db.begin_read().map_err(ImageError::db("begin read"))?;
        let table = txn
            .open_table(LEASES)
            .map_err(ImageError::db("open image leases"))?;
        let mut out = Vec::new();
        for item in table
            .iter()
            .map_err(ImageError::db("iterate image leases"))?
        {
            let (key, value) = item.map_err(ImageError::db("read image lease"))?;
            out.push((key.value().to_owned(), decode(key.value(), value.value())?));
        }
        Ok(out)
    }

    /// Every record that owns layers and blobs: images and leased images.
    fn owners(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let mut records = self.list()?;
        records.extend(self.leased_records()?.into_iter().map(|(_, r)| r));
        Ok(records)
    }

    /// Deletes the layers and blobs of `record` that no image or lease owns.
    fn collect_garbage(&self, record: &ImageRecord) -> Result<(), ImageError> {
        self.usage_changed();
        let (chains, blobs) = owned(&self.owners()?);
        for layer in &record.layers {
            if !chains.contains(&layer.chain_id) {
                self.remove_layer(&layer.chain_id)?;
            }
        }
        for digest in record_blobs(record) {
            if !blobs.contains(&digest) {
                self.remove_blob(&digest)?;
            }
        }
        Ok(())
    }

    /// Keeps `key` (`layer:<chain id>` or `blob:<digest>`) from garbage collection until the
    /// returned guard is dropped.
    fn pin(&self, key: String) -> Pin<'_> {
        *self
            .pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert(0) += 1;
        Pin {
            pins: &self.pins,
            key,
        }
    }

    /// Deletes blob `digest` unless a pull or import in progress uses it.
    fn remove_blob(&self, digest: &str) -> Result<(), ImageError> {
        let pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        if pins.contains_key(&blob_key(digest)) {
            tracing::debug!(%digest, "blob in use by a pull; kept");
            return Ok(());
        }
        self.blobs.remove(digest)
    }

    /// The raw config JSON of image `id`.
    pub async fn config_json(&self, id: &str) -> Result<Vec<u8>, ImageError> {
        self.blobs.read(id).await
    }

    /// Pulls `reference` with `credentials`: mirrors first, then the upstream registry.
    /// Returns the record written (its id is the `image_ref` of CRI). Identical pulls in
    /// flight share one transfer, which stops (keeping what it downloaded) when every caller
    /// waiting for it has gone away.
    pub async fn pull(
        self: &Arc<Self>,
        reference: &str,
        credentials: &Credentials,
    ) -> Result<ImageRecord, ImageError> {
        let name = ImageName::parse(reference)?;
        let auth = credentials.to_auth()?;
        let key = format!("{name}\0{}", credentials.fingerprint());
        let this = self.clone();
        let credentials = credentials.clone();
        self.transfers
            .join(&key, move || async move {
                let identity_token = credentials.identity_token();
                let sources =
                    pull::sources(&this.registry, &name, &auth, identity_token.as_deref())?;
                let result = this.pull_sources(&name, &sources).await;
                if result.is_err() {
                    this.sweep_after_failure().await;
                }
                result
            })
            .await
    }

    /// Drops what a failed pull or import left (blobs, lower layers); what other pulls in
    /// progress use is pinned and stays.
    pub(crate) async fn sweep_after_failure(self: &Arc<Self>) {
        let this = self.clone();
        if let Err(e) = blocking(move || this.sweep()).await {
            tracing::warn!(error = %e, "cannot sweep after a failed pull");
        }
    }

    async fn pull_sources(
        &self,
        name: &ImageName,
        sources: &[Source],
    ) -> Result<ImageRecord, ImageError> {
        let started = std::time::Instant::now();
        let mut failed = Vec::new();
        let count = sources.len();
        for (i, source) in sources.iter().enumerate() {
            match self.pull_from(source, name).await {
                Ok(record) => {
                    tracing::info!(image = %name, id = %record.id, from = %source.host,
                        elapsed = ?started.elapsed(), "image pulled");
                    return Ok(record);
                }
                Err(e) if i + 1 < count && is_source_error(&e) => {
                    tracing::warn!(image = %name, mirror = %source.host, error = %e,
                        "mirror failed, trying the next source");
                    failed.push(format!("{}: {e}", source.host));
                }
                Err(e) => return Err(annotate(e, &failed)),
            }
        }
        Err(ImageError::Registry {
            reference: name.to_string(),
            registry: name.registry.clone(),
            message: "no source to pull from".into(),
        })
    }

    async fn pull_from(
        &self,
        source: &Source,
        name: &ImageName,
    ) -> Result<ImageRecord, ImageError> {
        let bad = |reason: String| ImageError::BadImage {
            reference: name.to_string(),
            reason,
        };
        let (body, top_digest) = source.manifest(None, manifest::ACCEPTED).await?;
        let (manifest_body, manifest_digest, parsed) =
            match manifest::parse(&body, None).map_err(|e| bad(e.to_string()))? {
                Parsed::Index(entries) => {
                    let (os, arch) = manifest::host_platform();
                    let entry = manifest::select_platform(&entries, os, arch).ok_or_else(|| {
                        ImageError::NoMatchingPlatform {
                            reference: name.to_string(),
                            platform: format!("{os}/{arch}"),
                            offered: manifest::describe_platforms(&entries),
                        }
                    })?;
                    digest::hex_of(&entry.digest)?;
                    check(name.to_string(), entry, "manifest", MAX_DOCUMENT_BYTES)?;
                    let (body, digest) = source
                        .manifest(Some(&entry.digest), manifest::ACCEPTED)
                        .await?;
                    let actual = digest::sha256_of(&body);
                    if actual != entry.digest || digest != entry.digest {
                        return Err(ImageError::DigestMismatch {
                            digest: entry.digest.clone(),
                            actual,
                        });
                    }
                    let parsed = manifest::parse(&body, None).map_err(|e| bad(e.to_string()))?;
                    (body, digest, parsed)
                }
                parsed => (body, top_digest.clone(), parsed),
            };
        let actual = digest::sha256_of(&manifest_body);
        if actual != manifest_digest {
            return Err(ImageError::DigestMismatch {
                digest: manifest_digest,
                actual,
            });
        }
        let Parsed::Image { config, layers } = parsed else {
            return Err(bad("an index lists another index for this platform".into()));
        };
        let mut tags = Vec::new();
        if let Some(tag) = name.repo_tag() {
            tags.push(tag);
        }
        self.store_image(
            Origin::Registry(source),
            name.to_string(),
            &manifest_body,
            &manifest_digest,
            config,
            layers,
            tags,
            vec![name.repo_digest(&top_digest)],
        )
        .await
    }

    /// Fetches config and layers of one image manifest, unpacks the layers and writes the
    /// record in one transaction once everything exists.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private step of pull and import"
    )]
    pub(crate) async fn store_image(
        &self,
        origin: Origin<'_>,
        display: String,
        manifest_body: &[u8],
        manifest_digest: &str,
        config: Descriptor,
        layers: Vec<Descriptor>,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
    ) -> Result<ImageRecord, ImageError> {
        let bad = |reason: String| ImageError::BadImage {
            reference: display.clone(),
            reason,
        };
        digest::hex_of(&config.digest)?;
        let limits = self.limits();
        if layers.len() > limits.max_layers {
            return Err(ImageError::TooLarge {
                reference: display.clone(),
                what: format!(
                    "it has {} layers, over crius' limit of {} (max_image_layers)",
                    layers.len(),
                    limits.max_layers
                ),
            });
        }
        check(display.clone(), &config, "config", MAX_DOCUMENT_BYTES)?;
        for layer in &layers {
            check(display.clone(), layer, "layer", limits.max_layer_bytes)?;
        }
        if !config.media_type.is_empty()
            && config.media_type != manifest::OCI_CONFIG
            && config.media_type != manifest::DOCKER_CONFIG
        {
            return Err(bad(format!(
                "not a container image: its config has media type {}",
                config.media_type
            )));
        }
        // Everything this image uses stays out of garbage collection until its record exists.
        let mut pins = vec![
            self.pin(blob_key(&config.digest)),
            self.pin(blob_key(manifest_digest)),
        ];
        self.ensure_blob(&origin, &config).await?;
        let config_bytes = self.blobs.read(&config.digest).await?;
        let config_file: ConfigFile = serde_json::from_slice(&config_bytes).map_err(|e| {
            bad(format!(
                "image config {} does not parse: {e}",
                config.digest
            ))
        })?;
        let diff_ids = config_file.rootfs.diff_ids.clone();
        if diff_ids.len() != layers.len() {
            return Err(bad(format!(
                "the manifest lists {} layers but the config {} diff ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        for d in layers.iter().map(|l| &l.digest).chain(&diff_ids) {
            digest::hex_of(d)?;
        }
        let chains = chain_ids(&diff_ids);
        for (layer, chain) in layers.iter().zip(&chains) {
            pins.push(self.pin(blob_key(&layer.digest)));
            pins.push(self.pin(layer_key(chain)));
        }
        let origin = &origin;
        // Owned job arguments: a closure over borrowed tuples is not general enough to be Send.
        let jobs: Vec<_> = layers
            .iter()
            .cloned()
            .zip(diff_ids.iter().cloned())
            .zip(chains.iter().cloned())
            .map(|((desc, diff_id), chain_id)| async move {
                self.ensure_layer(origin, &desc, &diff_id, &chain_id).await
            })
            .collect();
        // Every job runs to its end, also after another failed: an unpack runs on a blocking
        // thread that would otherwise finish unobserved after the failure's clean-up.
        let results: Vec<Result<(), ImageError>> = futures_util::stream::iter(jobs)
            .buffer_unordered(LAYER_PARALLELISM)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        if !self.blobs.contains(manifest_digest)? {
            self.blobs
                .write_bytes(manifest_digest, manifest_body)
                .await?;
        }
        let layer_records: Vec<LayerRecord> = layers
            .iter()
            .zip(diff_ids)
            .zip(chains)
            .map(|((desc, diff_id), chain_id)| LayerRecord {
                digest: desc.digest.clone(),
                diff_id,
                chain_id,
                size: u64::try_from(desc.size).unwrap_or(0),
                media_type: desc.media_type.clone(),
            })
            .collect();
        let size = u64::try_from(config.size).unwrap_or(0)
            + layer_records.iter().map(|l| l.size).sum::<u64>();
        let record = ImageRecord {
            id: config.digest.clone(),
            repo_tags,
            repo_digests,
            manifest_digest: manifest_digest.to_owned(),
            manifest_media_type: config_media_type_to_manifest(&config.media_type),
            layers: layer_records,
            size,
            config: ImageConfig::from_file(&config_file),
            created_ns: crius_proto::now_ns(),
        };
        let committed = self.commit(record).await;
        drop(pins);
        committed
    }

    /// Makes sure blob `desc` is stored, downloading it once even under concurrent pulls.
    async fn ensure_blob(
        &self,
        origin: &Origin<'_>,
        desc: &Descriptor,
    ) -> Result<PathBuf, ImageError> {
        let _lock = self.locks.lock(format!("blob:{}", desc.digest)).await;
        let path = self.blobs.path(&desc.digest)?;
        if path.is_file() {
            return Ok(path);
        }
        let from = match origin {
            Origin::Registry(source) => {
                let kept = self.blobs.partial_len(&desc.digest).await;
                let (offset, stream) = source.blob_stream(desc, kept).await?;
                return self
                    .blobs
                    .write_download(&desc.digest, desc.size_limit(), offset, stream)
                    .await;
            }
            Origin::Layout(dir) => dir.join("blobs/sha256").join(digest::hex_of(&desc.digest)?),
            Origin::Files(files) => {
                files
                    .get(&desc.digest)
                    .cloned()
                    .ok_or_else(|| ImageError::BadImage {
                        reference: desc.digest.clone(),
                        reason: "the archive has no file for this blob".into(),
                    })?
            }
        };
        let file = tokio::fs::File::open(&from)
            .await
            .map_err(ImageError::io(format!("opening {}", from.display())))?;
        self.blobs
            .write_stream(&desc.digest, desc.size_limit(), tokio_util_stream(file))
            .await
    }

    /// Makes sure the layer `chain_id` is unpacked, fetching its blob if needed.
    async fn ensure_layer(
        &self,
        origin: &Origin<'_>,
        desc: &Descriptor,
        diff_id: &str,
        chain_id: &str,
    ) -> Result<(), ImageError> {
        let dest = self.layer_dir(chain_id)?;
        let _lock = self.locks.lock(format!("layer:{chain_id}")).await;
        if dest.is_dir() {
            return Ok(());
        }
        // Held until the layer is in place (the semaphore is never closed).
        let _slot = self.unpacks.acquire().await.map_err(|e| ImageError::Io {
            context: "unpack slot".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if let Origin::Registry(source) = origin {
            let _blob_lock = self.locks.lock(format!("blob:{}", desc.digest)).await;
            if !self.blobs.contains(&desc.digest)?
                && self.blobs.partial_len(&desc.digest).await == 0
            {
                return self
                    .download_and_unpack(source, desc, diff_id, chain_id, dest)
                    .await;
            }
        }
        let blob = self.ensure_blob(origin, desc).await?;
        let tmp = self
            .tmp
            .join(format!("layer-{}-{}", digest::hex_of(chain_id)?, unique()));
        let digest = desc.digest.clone();
        let diff_id = diff_id.to_owned();
        let started = std::time::Instant::now();
        let limits = self.limits();
        let caps = unpack::UnpackLimits {
            max_bytes: limits.max_layer_bytes,
            max_entries: limits.max_layer_entries,
        };
        let unpacked =
            tokio::task::spawn_blocking(move || unpack_into(&blob, &tmp, &dest, &diff_id, caps))
                .await
                .map_err(|e| ImageError::Io {
                    context: "unpack task".into(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(|e| match e {
                    UnpackFailure::Unpack(source) => ImageError::Layer {
                        digest: digest.clone(),
                        source,
                    },
                    UnpackFailure::Io(e) => e,
                })?;
        tracing::debug!(%digest, %chain_id, entries = unpacked.entries,
            elapsed = ?started.elapsed(), "layer unpacked");
        Ok(())
    }

    /// Downloads the layer blob `desc` and unpacks it as it arrives: the bytes go to the blob
    /// store (hashed, kept when the transfer breaks off) and through a bounded channel to an
    /// unpack on a blocking thread, which checks the uncompressed tar against `diff_id` before
    /// the layer is renamed into place. The caller holds the layer's and the blob's locks.
    async fn download_and_unpack(
        &self,
        source: &Source,
        desc: &Descriptor,
        diff_id: &str,
        chain_id: &str,
        dest: PathBuf,
    ) -> Result<(), ImageError> {
        let (_, stream) = source.blob_stream(desc, 0).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel::<Piece>(STREAM_CHUNKS);
        let tmp = self
            .tmp
            .join(format!("layer-{}-{}", digest::hex_of(chain_id)?, unique()));
        let (owned_diff_id, limits) = (diff_id.to_owned(), self.limits());
        let caps = unpack::UnpackLimits {
            max_bytes: limits.max_layer_bytes,
            max_entries: limits.max_layer_entries,
        };
        let started = std::time::Instant::now();
        let unpacking = tokio::task::spawn_blocking(move || {
            unpack_reader_into(
                PieceReader::new(receiver),
                &tmp,
                &dest,
                &owned_diff_id,
                caps,
            )
        });
        let feed = sender.clone();
        let tee = futures_util::StreamExt::then(stream, move |chunk| {
            let feed = feed.clone();
            async move {
                let chunk = chunk?;
                // An unpack that stopped (a refused tar) ends the download too; its own error
                // is the one reported.
                feed.send(Piece::Data(chunk.clone()))
                    .await
                    .map_err(|_| std::io::Error::other(UNPACK_STOPPED))?;
                Ok::<_, std::io::Error>(chunk)
            }
        });
        let downloaded = self
            .blobs
            .write_download(&desc.digest, desc.size_limit(), 0, tee)
            .await;
        if downloaded.is_ok() {
            let _ = sender.send(Piece::End).await;
        }
        drop(sender);
        let unpacked = unpacking.await.map_err(|e| ImageError::Io {
            context: "unpack task".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let digest = desc.digest.clone();
        let failed = |f: UnpackFailure| match f {
            UnpackFailure::Unpack(source) => ImageError::Layer {
                digest: digest.clone(),
                source,
            },
            UnpackFailure::Io(e) => e,
        };
        match (downloaded, unpacked) {
            (Ok(_), Ok(u)) => {
                tracing::debug!(%digest, %chain_id, entries = u.entries,
                    elapsed = ?started.elapsed(), while_downloading = true, "layer unpacked");
                Ok(())
            }
            (Ok(_), Err(f)) => Err(failed(f)),
            // The unpack stopped first: its error says why.
            (Err(ImageError::Transfer { reason, .. }), Err(f)) if reason == UNPACK_STOPPED => {
                Err(failed(f))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Writes `record` in one transaction, merging it with a record of the same id and moving
    /// its tags away from other images.
    async fn commit(&self, record: ImageRecord) -> Result<ImageRecord, ImageError> {
        self.usage_changed();
        let db = self.db.clone();
        let dirs = [self.blobs.dir().to_owned(), self.layers.clone()];
        tokio::task::spawn_blocking(move || {
            // Blobs and layers are written without fsyncs: what the record names reaches the
            // disk here, in one syncfs per file system, before the record. A crash earlier
            // leaves blobs and layers no record owns, which the start-up sweep removes.
            for dir in &dirs {
                sync_file_system(dir)?;
            }
            commit_record(&db, record)
        })
        .await
        .map_err(|e| ImageError::Io {
            context: "metadata task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
    }

    /// Removes the image `reference` names, and the layers and blobs no other image or lease
    /// uses.
    /// Returns the removed record, or `None` when no image matched (not an error in CRI).
    pub async fn remove(
        self: &Arc<Self>,
        reference: &str,
    ) -> Result<Option<ImageRecord>, ImageError> {
        let this = self.clone();
        let reference = reference.to_owned();
        blocking(move || this.remove_now(&reference)).await
    }

    fn remove_now(&self, reference: &str) -> Result<Option<ImageRecord>, ImageError> {
        let _gc = self.gc.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(record) = self.get(reference)? else {
            return Ok(None);
        };
        let txn = self.db.begin_write().map_err(ImageError::db("begin"))?;
        {
            let mut table = txn
                .open_table(IMAGES)
                .map_err(ImageError::db("open images"))?;
            table
                .remove(record.id.as_str())
                .map_err(ImageError::db("remove image"))?;
        }
        txn.commit().map_err(ImageError::db("commit"))?;
        self.collect_garbage(&record)?;
        tracing::info!(id = %record.id, tags = ?record.repo_tags, "image removed");
        Ok(Some(record))
    }

    /// Moves a layer out of the layers directory (atomic), then deletes it, unless a pull or
    /// import in progress uses it.
    fn remove_layer(&self, chain_id: &str) -> Result<(), ImageError> {
        let dir = self.layer_dir(chain_id)?;
        let doomed = self.tmp.join(format!("del-{}", unique()));
        {
            let pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
            if pins.contains_key(&layer_key(chain_id)) {
                tracing::debug!(%chain_id, "layer in use by a pull; kept");
                return Ok(());
            }
            match std::fs::rename(&dir, &doomed) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(ImageError::io(format!("removing {}", dir.display()))(e)),
            }
        }
        unpack::remove_tree(&doomed)
            .map_err(ImageError::io(format!("removing {}", doomed.display())))
    }

    /// Deletes layers and blobs no image or lease owns.
    fn sweep(&self) -> Result<(), ImageError> {
        let (chains, blobs) = owned(&self.owners()?);
        let chain_hex: HashSet<&str> = chains
            .iter()
            .filter_map(|c| digest::hex_of(c).ok())
            .collect();
        let entries = std::fs::read_dir(&self.layers)
            .map_err(ImageError::io(format!("listing {}", self.layers.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(ImageError::io(format!("listing {}", self.layers.display())))?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(|n| chain_hex.contains(n)) {
                tracing::info!(layer = ?name, "removing a layer no image owns");
                let path = entry.path();
                if let Some(hex) = name.to_str().filter(|n| digest::is_hex64(n)) {
                    self.remove_layer(&format!("{}{hex}", digest::SHA256_PREFIX))?;
                    continue;
                }
                if path.is_dir() {
                    unpack::remove_tree(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .map_err(ImageError::io(format!("removing {}", path.display())))?;
            }
        }
        for digest in self.blobs.list()? {
            if !blobs.contains(&digest) {
                tracing::info!(%digest, "removing a blob no image owns");
                if digest::hex_of(&digest).is_ok() {
                    self.remove_blob(&digest)?;
                } else {
                    let path = self
                        .blobs
                        .dir()
                        .join("sha256")
                        .join(digest.trim_start_matches(digest::SHA256_PREFIX));
                    std::fs::remove_file(&path)
                        .map_err(ImageError::io(format!("removing {}", path.display())))?;
                }
            }
        }
        Ok(())
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

/// A stream of a file's chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 256 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Chunks of a layer download buffered for its unpack (each up to a network read).
const STREAM_CHUNKS: usize = 64;

/// What a download hands its unpack.
enum Piece {
    /// The next bytes of the blob.
    Data(bytes::Bytes),
    /// The blob is complete.
    End,
}

/// Why a download stops when its unpack has stopped.
const UNPACK_STOPPED: &str = "the layer's unpack stopped";

/// Reads the pieces of a download on a blocking thread: the end of the blob at [`Piece::End`],
/// an error when the download stops without it.
struct PieceReader {
    receiver: tokio::sync::mpsc::Receiver<Piece>,
    current: bytes::Bytes,
    ended: bool,
}

impl PieceReader {
    fn new(receiver: tokio::sync::mpsc::Receiver<Piece>) -> PieceReader {
        PieceReader {
            receiver,
            current: bytes::Bytes::new(),
            ended: false,
        }
    }
}

impl std::io::Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                Some(Piece::Data(bytes)) => self.current = bytes,
                Some(Piece::End) => self.ended = true,
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the layer's download broke off",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Why an unpack job failed.
enum UnpackFailure {
    Unpack(unpack::UnpackError),
    Io(ImageError),
}

/// Unpacks `blob` into a fresh `tmp` directory and renames it to `dest`; removes `tmp` on
/// any failure.
fn unpack_into(
    blob: &Path,
    tmp: &Path,
    dest: &Path,
    diff_id: &str,
    caps: unpack::UnpackLimits,
) -> Result<unpack::Unpacked, UnpackFailure> {
    let file = std::fs::File::open(blob)
        .map_err(|e| UnpackFailure::Io(ImageError::io(format!("opening {}", blob.display()))(e)))?;
    unpack_reader_into(file, tmp, dest, diff_id, caps)
}

/// Unpacks the layer blob read from `blob` into a fresh `tmp` directory and renames it to
/// `dest`; removes `tmp` on any failure.
fn unpack_reader_into(
    blob: impl std::io::Read,
    tmp: &Path,
    dest: &Path,
    diff_id: &str,
    caps: unpack::UnpackLimits,
) -> Result<unpack::Unpacked, UnpackFailure> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(tmp)
        .map_err(|e| UnpackFailure::Io(ImageError::io(format!("creating {}", tmp.display()))(e)))?;
    let result = unpack::unpack_blob(blob, tmp, Some(diff_id), caps)
        .map_err(UnpackFailure::Unpack)
        .inspect(|u| unpack::record_max_ids(tmp, u.max_ids))
        .and_then(|u| {
            std::fs::rename(tmp, dest).map(|()| u).map_err(|e| {
                UnpackFailure::Io(ImageError::io(format!("renaming into {}", dest.display()))(
                    e,
                ))
            })
        });
    if result.is_err()
        && let Err(e) = unpack::remove_tree(tmp)
    {
        tracing::warn!(path = %tmp.display(), error = %e, "cannot remove a failed unpack");
    }
    result
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
