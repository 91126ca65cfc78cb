//! The CRI `ImageService`.

use std::sync::Arc;

use cri_api::v1::image_service_server::ImageService;
use cri_api::v1::*;

use crate::{BoxStream, Cri, unimplemented_rpcs};

/// The `ImageService` implementation.
#[derive(Debug)]
#[allow(dead_code, reason = "the image store arrives with PullImage")]
pub struct Images(pub(crate) Arc<Cri>);

#[tonic::async_trait]
impl ImageService for Images {
    type StreamImagesStream = BoxStream<StreamImagesResponse>;

    unimplemented_rpcs! {
        list_images(ListImagesRequest) -> ListImagesResponse = "ListImages";
        stream_images(StreamImagesRequest) -> Self::StreamImagesStream = "StreamImages";
        image_status(ImageStatusRequest) -> ImageStatusResponse = "ImageStatus";
        pull_image(PullImageRequest) -> PullImageResponse = "PullImage";
        remove_image(RemoveImageRequest) -> RemoveImageResponse = "RemoveImage";
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse = "ImageFsInfo";
    }
}
