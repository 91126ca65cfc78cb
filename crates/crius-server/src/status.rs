//! The gRPC codes of crius' errors, chosen here and nowhere else: each domain error keeps its
//! kind up to this point and leaves as a `tonic::Status` with its message.

use crius_image::ImageError;
use tonic::Status;

/// Maps a pod error onto its gRPC code.
pub(crate) fn pod_error(e: crius_runtime::PodError) -> tonic::Status {
    use crius_runtime::FailureKind;
    use crius_runtime::cdi::CdiErrorKind;
    use crius_runtime::{NetworkError, PodError};
    let message = e.to_string();
    match e {
        PodError::Invalid(_) => tonic::Status::invalid_argument(message),
        PodError::NotFound { .. } | PodError::ContainerNotFound { .. } => {
            tonic::Status::not_found(message)
        }
        PodError::AlreadyExists { .. } | PodError::ContainerExists { .. } => {
            tonic::Status::already_exists(message)
        }
        PodError::NoUserns { .. }
        | PodError::AppArmor(_)
        | PodError::SandboxRefused { .. }
        | PodError::PodNotReady { .. }
        | PodError::PodNotRunning { .. }
        | PodError::MonitorGone { .. }
        | PodError::ContainerNotCreated { .. }
        | PodError::ContainerNotRunning { .. } => tonic::Status::failed_precondition(message),
        PodError::MonitorRefused { source } => match source.kind {
            FailureKind::Precondition => tonic::Status::failed_precondition(message),
            FailureKind::Invalid | FailureKind::NotFound | FailureKind::Internal => {
                tonic::Status::internal(message)
            }
        },
        PodError::Monitor { .. }
        | PodError::MonitorSilent { .. }
        | PodError::MonitorNoReport { .. }
        | PodError::SandboxFailed { .. }
        | PodError::CleanupFailed { .. }
        | PodError::Unkillable { .. }
        | PodError::Io { .. }
        | PodError::Remove { .. }
        | PodError::Write { .. }
        | PodError::EncodeSpec { .. }
        | PodError::EncodeProfile { .. }
        | PodError::Store { .. }
        | PodError::Task { .. } => tonic::Status::internal(message),
        PodError::Network(n) => match n {
            NetworkError::NotReady { .. } => tonic::Status::failed_precondition(message),
            NetworkError::Invalid { .. }
            | NetworkError::PortOutOfRange { .. }
            | NetworkError::UnknownProtocol { .. }
            | NetworkError::HostIp { .. } => tonic::Status::invalid_argument(message),
            NetworkError::Failed { .. } | NetworkError::NoNetns { .. } => {
                tonic::Status::internal(message)
            }
        },
        PodError::Cdi(e) => match e.kind() {
            CdiErrorKind::Invalid => tonic::Status::invalid_argument(message),
            CdiErrorKind::Refused => tonic::Status::failed_precondition(message),
            CdiErrorKind::Unsupported => tonic::Status::unimplemented(message),
        },
        PodError::InvalidContainer(_) => tonic::Status::invalid_argument(message),
        PodError::Unsupported { .. } => tonic::Status::unimplemented(message),
        PodError::ImageStopSignal { .. } => tonic::Status::failed_precondition(message),
        PodError::Image { source, .. } => tonic::Status::new(image_error(source).code(), message),
    }
}

/// Maps a request field that breaks the contract onto InvalidArgument, naming the field.
pub(crate) fn invalid_status(e: crius_runtime::Invalid) -> tonic::Status {
    tonic::Status::invalid_argument(e.to_string())
}

/// The gRPC status of an image store error.
pub(crate) fn image_error(e: ImageError) -> Status {
    image_error_ref(&e)
}

/// The gRPC status of an image store error.
fn image_error_ref(e: &ImageError) -> Status {
    let message = e.to_string();
    match e {
        ImageError::Shared(inner) => image_error_ref(inner),
        ImageError::InvalidReference(_)
        | ImageError::InvalidDigest(_)
        | ImageError::InvalidRequest(_) => Status::invalid_argument(message),
        ImageError::NotFound { .. }
        | ImageError::RegistryNotFound { .. }
        | ImageError::NoMatchingPlatform { .. } => Status::not_found(message),
        ImageError::Unauthenticated { .. } => Status::unauthenticated(message),
        ImageError::PermissionDenied { .. } => Status::permission_denied(message),
        ImageError::Registry { .. } | ImageError::Transfer { .. } => Status::unavailable(message),
        ImageError::TooLarge { .. }
        | ImageError::Layer {
            source:
                crius_image::unpack::UnpackError::TooLarge { .. }
                | crius_image::unpack::UnpackError::TooManyEntries { .. },
            ..
        } => Status::resource_exhausted(message),
        ImageError::BadImage { .. } | ImageError::Layer { .. } | ImageError::HostConfig { .. } => {
            Status::failed_precondition(message)
        }
        ImageError::DigestMismatch { .. } | ImageError::SizeMismatch { .. } => {
            Status::data_loss(message)
        }
        ImageError::Io { .. } | ImageError::Metadata { .. } | ImageError::Record { .. } => {
            Status::internal(message)
        }
    }
}
