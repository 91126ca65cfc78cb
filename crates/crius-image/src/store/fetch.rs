//! Pulls: manifests and configs fetched, layers downloaded and unpacked as they arrive (a
//! bounded channel between the download and an unpack on a blocking thread), the record
//! committed after one syncfs.

use super::*;

impl ImageStore {
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
