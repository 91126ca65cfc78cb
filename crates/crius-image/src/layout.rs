//! Offline import of OCI image layout directories: see [`crate::ImageStore::import_oci_layout`].

/// The file naming an OCI image layout.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The annotation naming an image in a layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
