//! The CRI `ImageService`: maps CRI image requests onto the crius image store.

use std::sync::Arc;

use cri_api::v1::image_service_server::ImageService;
use cri_api::v1::*;
use crius_image::{Credentials, ImageRecord, ImageStore};
use tonic::{Request, Response, Status};

use crate::status::image_error;
use crate::{BoxStream, Cri};

/// The `ImageService` implementation.
#[derive(Debug)]
pub struct Images(pub(crate) Arc<Cri>);

impl Images {
    fn store(&self) -> Arc<ImageStore> {
        self.0.images.clone()
    }
}

impl Cri {
    /// Applies the image settings of the configuration to the image store (caps on images and
    /// layers) and imports the images of `import_dir`. A file that cannot be imported is
    /// logged and skipped: start-up goes on.
    pub async fn prepare_images(&self) {
        let config = &self.config;
        self.images.set_limits(crius_image::Limits {
            max_layer_bytes: config.max_layer_bytes,
            max_layer_entries: config.max_layer_entries,
            max_layers: config.max_image_layers,
        });
        let Some(dir) = &config.import_dir else {
            return;
        };
        match self.images.import_directory(dir).await {
            Ok(results) => {
                for (path, result) in results {
                    match result {
                        Ok(records) => {
                            for record in records {
                                tracing::info!(path = %path.display(), id = %record.id,
                                    tags = ?record.repo_tags, "imported an image from import_dir");
                            }
                        }
                        Err(e) => tracing::error!(path = %path.display(), error = %e,
                            "cannot import an image from import_dir; skipped"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read import_dir; skipped");
            }
        }
    }
}

/// The CRI form of an image record.
fn cri_image(record: &ImageRecord) -> Image {
    let (uid, username) = record.config.uid_or_name();
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size.max(1),
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: record.id.clone(),
            image_ref: record.id.clone(),
            ..ImageSpec::default()
        }),
        pinned: false,
    }
}

/// The images matching a filter (all without one).
async fn filtered(
    store: Arc<ImageStore>,
    filter: Option<ImageFilter>,
) -> Result<Vec<Image>, Status> {
    let wanted = filter
        .and_then(|f| f.image)
        .map(|spec| spec.image)
        .filter(|image| !image.is_empty());
    let records = crius_runtime::blocking(move || store.list())
        .await
        .map_err(image_error)?;
    Ok(match wanted {
        None => records.iter().map(cri_image).collect(),
        Some(reference) => crius_image::store::find(&records, &reference)
            .map(cri_image)
            .into_iter()
            .collect(),
    })
}

fn image_name(spec: Option<ImageSpec>, rpc: &str) -> Result<String, Status> {
    let image = spec.map(|s| s.image).unwrap_or_default();
    if image.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{rpc}: image.image is empty"
        )));
    }
    Ok(image)
}

#[tonic::async_trait]
impl ImageService for Images {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = request.into_inner().filter;
        crate::fields::refuse_unhandled_image(
            "filter.image",
            filter.as_ref().and_then(|f| f.image.as_ref()),
        )?;
        let images = filtered(self.store(), filter).await?;
        Ok(Response::new(ListImagesResponse { images }))
    }

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let filter = request.into_inner().filter;
        crate::fields::refuse_unhandled_image(
            "filter.image",
            filter.as_ref().and_then(|f| f.image.as_ref()),
        )?;
        let images = filtered(self.store(), filter).await?;
        let chunks: Vec<Result<StreamImagesResponse, Status>> = images
            .chunks(100)
            .map(|chunk| {
                Ok(StreamImagesResponse {
                    images: chunk.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        crate::fields::refuse_unhandled_image("image", request.image.as_ref())?;
        let reference = image_name(request.image, "ImageStatus")?;
        tracing::Span::current().record("id", reference.as_str());
        let store = self.store();
        let found = {
            let store = store.clone();
            crius_runtime::blocking(move || store.get(&reference))
                .await
                .map_err(image_error)?
        };
        let Some(record) = found else {
            // CRI: a missing image is an empty answer, not an error.
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = std::collections::BTreeMap::new();
        if request.verbose {
            let config: serde_json::Value = store
                .config_json(&record.id)
                .await
                .ok()
                .and_then(|raw| serde_json::from_slice(&raw).ok())
                .unwrap_or(serde_json::Value::Null);
            let layer_dirs: Vec<String> = record
                .layers
                .iter()
                .filter_map(|l| store.layer_dir(&l.chain_id).ok())
                .map(|p| p.display().to_string())
                .collect();
            let doc = serde_json::json!({
                "id": record.id,
                "manifestDigest": record.manifest_digest,
                "manifestMediaType": record.manifest_media_type,
                "chainIDs": record.layers.iter().map(|l| &l.chain_id).collect::<Vec<_>>(),
                "layers": record.layers,
                "layerDirs": layer_dirs,
                "imageSpec": config,
            });
            info.insert("info".to_owned(), doc.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(cri_image(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        crate::fields::refuse_unhandled_image("image", request.image.as_ref())?;
        let reference = image_name(request.image, "PullImage")?;
        tracing::Span::current().record("id", reference.as_str());
        let credentials = request
            .auth
            .map(|a| Credentials {
                username: a.username,
                password: a.password,
                auth: a.auth,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
            })
            .unwrap_or_default();
        // The transfer runs in a task of the store, shared with identical pulls; it stops
        // when every client waiting for it has hung up or passed its deadline.
        let record = self
            .store()
            .pull(&reference, &credentials)
            .await
            .map_err(image_error)?;
        crate::metrics::metrics().record_pull(record.size);
        Ok(Response::new(PullImageResponse {
            image_ref: record.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let request = request.into_inner();
        crate::fields::refuse_unhandled_image("image", request.image.as_ref())?;
        let reference = image_name(request.image, "RemoveImage")?;
        tracing::Span::current().record("id", reference.as_str());
        let store = self.store();
        // Removal of a missing image succeeds, as CRI asks.
        tokio::spawn(async move { store.remove(&reference).await })
            .await
            .map_err(|e| Status::internal(format!("remove task failed: {e}")))?
            .map_err(image_error)?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let store = self.store();
        let usage = crius_runtime::blocking(move || Ok(store.usage()))
            .await
            .map_err(image_error)?;
        let timestamp = crius_runtime::now_ns();
        let fs = FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.0.images.root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        };
        let containers = self
            .0
            .container_filesystem(
                self.0.images.root().to_path_buf(),
                fs.fs_id.clone().unwrap_or_default(),
            )
            .await?;
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![fs],
            container_filesystems: vec![containers],
        }))
    }
}
