//! Caps that keep a hostile registry or image from exhausting the node: document sizes,
//! descriptor sizes, layer counts and what one layer may expand to.

use crate::manifest::Descriptor;

/// The largest manifest, index or image config crius reads (4 MiB, as containerd).
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

/// Default cap on one layer's uncompressed bytes (64 GiB).
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 << 30;
/// Default cap on the tar entries of one layer.
pub const DEFAULT_MAX_LAYER_ENTRIES: u64 = 2_000_000;
/// Default cap on the layers of one image (overlayfs stacks at most 500 lower directories).
pub const DEFAULT_MAX_LAYERS: usize = 256;

/// The caps in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most uncompressed bytes one layer may hold; a compressed layer blob may not be larger
    /// either.
    pub max_layer_bytes: u64,
    /// Most tar entries one layer may hold.
    pub max_layer_entries: u64,
    /// Most layers one image may have.
    pub max_layers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: DEFAULT_MAX_LAYER_ENTRIES,
            max_layers: DEFAULT_MAX_LAYERS,
        }
    }
}

/// Why a descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The size is zero, negative or missing.
    #[error("descriptor {digest} has size {size}: a blob must have a positive size")]
    NotPositive {
        /// The digest.
        digest: String,
        /// The size given.
        size: i64,
    },
    /// The size is over the cap for its kind.
    #[error("descriptor {digest} ({what}) has size {size}, over crius' limit of {limit} bytes")]
    TooLarge {
        /// The digest.
        digest: String,
        /// `manifest`, `config` or `layer`.
        what: &'static str,
        /// The size given.
        size: i64,
        /// The cap.
        limit: u64,
    },
}

/// Checks that `desc` announces a positive size no larger than `limit`; returns the size.
pub fn check_descriptor(
    desc: &Descriptor,
    what: &'static str,
    limit: u64,
) -> Result<u64, DescriptorError> {
    let size = u64::try_from(desc.size)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| DescriptorError::NotPositive {
            digest: desc.digest.clone(),
            size: desc.size,
        })?;
    if size > limit {
        return Err(DescriptorError::TooLarge {
            digest: desc.digest.clone(),
            what,
            size: desc.size,
            limit,
        });
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(size: i64) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size,
            platform: None,
            urls: None,
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(check_descriptor(&desc(10), "config", 10), Ok(10));
        for bad in [0, -1, i64::MIN] {
            assert!(matches!(
                check_descriptor(&desc(bad), "config", 10),
                Err(DescriptorError::NotPositive { .. })
            ));
        }
        assert!(matches!(
            check_descriptor(&desc(11), "config", 10),
            Err(DescriptorError::TooLarge { .. })
        ));
        assert!(matches!(
            check_descriptor(&desc(i64::MAX), "layer", 1 << 40),
            Err(DescriptorError::TooLarge { .. })
        ));
    }
}
