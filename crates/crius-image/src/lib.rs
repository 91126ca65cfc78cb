//! The image store of crius: pulls images from OCI registries, keeps their blobs verified by
//! digest, unpacks their layers safely into overlayfs lower directories, and records images in
//! the metadata database.
//!
//! On disk, under the daemon's root:
//!
//! ```text
//! blobs/sha256/<hex>     content-addressed blobs (manifests, configs, compressed layers)
//! layers/<chain-hex>/    one unpacked layer per chain id, an overlayfs lowerdir
//! image-tmp/             downloads and unpacks in progress; emptied at start
//! ```
//!
//! Records live in the `images` table of the metadata database (id = config digest → JSON
//! [`ImageRecord`]), written in one transaction once every layer exists; a start-up sweep
//! deletes layers and blobs that no record owns, so a crash mid-pull leaves no half image.
//!
//! Containers call [`ImageStore::lease`] (container id, image) to get a [`RootfsSpec`]: the
//! image config and its layer directories, bottom to top, all under
//! [`ImageStore::layers_dir`]. A lease (table `image_leases`) keeps the layers even when the
//! image is removed; [`ImageStore::release`] ends it.

pub mod blobs;
pub mod digest;
mod error;
mod guard;
pub mod hosts;
pub mod import;
pub mod layout;
pub mod limits;
pub mod manifest;
pub mod pull;
pub mod record;
pub mod reference;
pub mod store;
mod transfers;
pub mod unpack;

pub use error::ImageError;
pub use limits::Limits;
pub use pull::{Credentials, RegistryOptions};
pub use record::{ImageConfig, ImageRecord, LayerRecord};
pub use reference::ImageName;
pub use store::{FsUsage, ImageStore, LeaseCommit, RootfsSpec};
