//! The errors of the image store.

use crate::digest::InvalidDigest;
use crate::pull::InvalidCredentials;
use crate::reference::InvalidReference;
use crate::unpack::UnpackError;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image reference does not parse.
    #[error(transparent)]
    InvalidReference(#[from] InvalidReference),
    /// A digest in a request or manifest is malformed.
    #[error(transparent)]
    InvalidDigest(#[from] InvalidDigest),
    /// The request's credentials are unusable.
    #[error(transparent)]
    InvalidRequest(#[from] InvalidCredentials),
    /// No image in the store matches the reference.
    #[error("image {reference:?} not found in the image store")]
    NotFound {
        /// What was looked up.
        reference: String,
    },
    /// The registry does not know the image.
    #[error("image {reference} not found in registry {registry}: {message}")]
    RegistryNotFound {
        /// The image.
        reference: String,
        /// The registry (or mirror) asked.
        registry: String,
        /// What it said.
        message: String,
    },
    /// The registry refused the credentials, or demanded some.
    #[error("registry {registry} refused authentication for {reference}: {message}")]
    Unauthenticated {
        /// The image.
        reference: String,
        /// The registry (or mirror) asked.
        registry: String,
        /// What it said.
        message: String,
    },
    /// The registry accepted the credentials but denies access.
    #[error("registry {registry} denied access to {reference}: {message}")]
    PermissionDenied {
        /// The image.
        reference: String,
        /// The registry (or mirror) asked.
        registry: String,
        /// What it said.
        message: String,
    },
    /// The registry could not be reached or answered something unusable.
    #[error("pulling {reference} from {registry}: {message}")]
    Registry {
        /// The image.
        reference: String,
        /// The registry (or mirror) asked.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// The registry's host settings (`hosts.toml` and the files it names) are unusable.
    #[error("registry host settings {path}: {reason}")]
    HostConfig {
        /// The file or directory at fault.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image index lists no image for this node's platform.
    #[error("image {reference} has no manifest for platform {platform} (it offers: {offered})")]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// `linux/amd64`.
        platform: String,
        /// The platforms the index lists.
        offered: String,
    },
    /// A manifest or config is malformed or of an unsupported kind.
    #[error("image {reference}: {reason}")]
    BadImage {
        /// The image.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The image is over one of crius' caps (document size, layer count, layer size or
    /// entries); nothing was stored.
    #[error("image {reference}: {what}")]
    TooLarge {
        /// The image.
        reference: String,
        /// Which cap, and by how much.
        what: String,
    },
    /// Content did not match the digest it was fetched by; nothing was stored.
    #[error("content of {digest} does not match its digest ({actual}); nothing was stored")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Content was larger than its descriptor said; nothing was stored.
    #[error("content of {digest} is larger than the {expected} bytes its descriptor gives")]
    SizeMismatch {
        /// The digest.
        digest: String,
        /// The size from the descriptor.
        expected: u64,
    },
    /// A blob's transfer broke off (the connection failed or stalled); the bytes received are
    /// kept, and the next pull continues from them where the registry allows.
    #[error(
        "downloading {digest} broke off after {received} of {} bytes: {reason}; the bytes \
         received are kept for the next pull",
        total.map_or_else(|| "?".to_owned(), |t| t.to_string())
    )]
    Transfer {
        /// The blob.
        digest: String,
        /// Bytes received, from earlier tries too.
        received: u64,
        /// The blob's size, when known.
        total: Option<u64>,
        /// Why it broke off.
        reason: String,
    },
    /// A layer was refused or could not be unpacked; the partial layer was removed.
    #[error("layer {digest}: {source}")]
    Layer {
        /// The layer blob's digest.
        digest: String,
        /// Why.
        source: UnpackError,
    },
    /// A file operation of the store failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("image metadata: {context}: {source}")]
    Metadata {
        /// What was being done.
        context: String,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// The failure of a pull shared with other callers.
    #[error(transparent)]
    Shared(std::sync::Arc<ImageError>),
    /// A stored record does not decode.
    #[error("image record {id}: {source}")]
    Record {
        /// The record key.
        id: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

impl From<tokio::task::JoinError> for ImageError {
    fn from(e: tokio::task::JoinError) -> ImageError {
        ImageError::Io {
            context: "image store task".into(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl ImageError {
    /// An [`ImageError::Io`] with `context`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    /// An [`ImageError::Metadata`] with `context`.
    pub(crate) fn db<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> ImageError {
        move |e| ImageError::Metadata {
            context: context.to_owned(),
            source: Box::new(e.into()),
        }
    }
}
