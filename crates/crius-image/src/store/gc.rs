//! Leases, garbage collection, removal and the start-up sweep of the image store.

use super::*;

impl ImageStore {
    /// Leases image `reference` to `lease_id` (a container id) and returns what the container
    /// needs. The image's layers stay until [`ImageStore::release`], even if the image is
    /// removed in between (as CRI allows). Leasing again under the same id replaces the lease.
    pub async fn lease(
        self: &Arc<Self>,
        lease_id: &str,
        reference: &str,
    ) -> Result<RootfsSpec, ImageError> {
        let (rootfs, commit) = self.lease_early(lease_id, reference).await?;
        commit.done().await?;
        Ok(rootfs)
    }

    /// Leases image `reference` to `lease_id` as [`ImageStore::lease`] does, but hands the
    /// image's rootfs over while the lease is still being committed: no removal or garbage
    /// collection runs until that commit has ended. The returned [`LeaseCommit`] gives the
    /// commit's outcome; a lease whose commit failed does not hold the image, and the caller
    /// must stop using its layers.
    pub async fn lease_early(
        self: &Arc<Self>,
        lease_id: &str,
        reference: &str,
    ) -> Result<(RootfsSpec, LeaseCommit), ImageError> {
        let this = self.clone();
        let (lease_id, reference) = (lease_id.to_owned(), reference.to_owned());
        let (found, rootfs) = tokio::sync::oneshot::channel();
        let commit = tokio::task::spawn_blocking(move || {
            let _gc = this.gc.lock().unwrap_or_else(PoisonError::into_inner);
            let resolved = this.get(&reference).and_then(|record| {
                let record = record.ok_or_else(|| ImageError::NotFound {
                    reference: reference.clone(),
                })?;
                let rootfs = this.rootfs(&record.id)?;
                Ok((record, rootfs))
            });
            match resolved {
                Ok((record, rootfs)) => {
                    let _ = found.send(Ok(rootfs));
                    this.commit_lease(&lease_id, &record)
                }
                Err(e) => {
                    let _ = found.send(Err(e));
                    Ok(())
                }
            }
        });
        let rootfs = rootfs.await.map_err(|_| ImageError::Io {
            context: "image lease task".into(),
            source: std::io::Error::other("it ended without resolving the image"),
        })??;
        Ok((rootfs, LeaseCommit(commit)))
    }

    /// Records lease `lease_id` on image `record` (the gc lock held).
    fn commit_lease(&self, lease_id: &str, record: &ImageRecord) -> Result<(), ImageError> {
        let json = encode(record)?;
        let txn = self.db.begin_write().map_err(ImageError::db("begin"))?;
        {
            let mut table = txn
                .open_table(LEASES)
                .map_err(ImageError::db("open image leases"))?;
            table
                .insert(lease_id, json.as_slice())
                .map_err(ImageError::db("insert image lease"))?;
        }
        txn.commit().map_err(ImageError::db("commit"))
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
    pub(super) fn pin(&self, key: String) -> Pin<'_> {
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
    pub(super) fn sweep(&self) -> Result<(), ImageError> {
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
}

/// The commit of a lease taken with [`ImageStore::lease_early`], still running.
#[derive(Debug)]
pub struct LeaseCommit(tokio::task::JoinHandle<Result<(), ImageError>>);

impl LeaseCommit {
    /// Waits for the commit to end.
    pub async fn done(self) -> Result<(), ImageError> {
        self.0.await?
    }
}
