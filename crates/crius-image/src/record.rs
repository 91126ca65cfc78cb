//! Image records as stored in the metadata database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::ConfigFile;

/// One image in the store. Its id is the digest of its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:` of the config blob; the CRI image id and `image_ref`.
    pub id: String,
    /// `registry/repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:...` names (the manifest or index pulled).
    pub repo_digests: Vec<String>,
    /// `sha256:` of the image manifest (not of an index).
    pub manifest_digest: String,
    /// Media type of the manifest.
    pub manifest_media_type: String,
    /// Layers, bottom to top.
    pub layers: Vec<LayerRecord>,
    /// Bytes of config and layer blobs as pulled (compressed).
    pub size: u64,
    /// The config fields containers need.
    pub config: ImageConfig,
    /// When the record was written, in nanoseconds since the epoch.
    pub created_ns: i64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `sha256:` of the blob as pulled.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// The chain id: names the unpacked directory `layers/<hex>`.
    pub chain_id: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Blob media type.
    pub media_type: String,
}

/// The runtime defaults from an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `User` (`uid`, `uid:gid`, `name`, `name:group`), empty when unset.
    pub user: String,
    /// `Env`, `NAME=value`.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`, empty when unset.
    pub working_dir: String,
    /// `StopSignal`, empty when unset.
    pub stop_signal: String,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
}

impl ImageConfig {
    /// The fields of a parsed config file.
    pub fn from_file(file: &ConfigFile) -> ImageConfig {
        let run = file.config.clone().unwrap_or_default();
        ImageConfig {
            user: run.user.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            stop_signal: run.stop_signal.unwrap_or_default(),
            labels: run.labels.unwrap_or_default(),
            os: file.os.clone(),
            architecture: file.architecture.clone(),
        }
    }

    /// The user part of `User` split into a numeric uid or a name: `(Some(uid), "")` for
    /// `1000` or `1000:1000`, `(None, "name")` for `name[:group]`, `(None, "")` when unset.
    pub fn uid_or_name(&self) -> (Option<i64>, String) {
        let user = self.user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_owned()),
        }
    }
}

impl ImageRecord {
    /// Whether `reference` (normalised name, repo digest, or id) names this image.
    pub fn matches(&self, reference: &str) -> bool {
        self.id == reference
            || self.repo_tags.iter().any(|t| t == reference)
            || self.repo_digests.iter().any(|d| d == reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parsing() {
        let with = |u: &str| ImageConfig {
            user: u.into(),
            ..ImageConfig::default()
        };
        assert_eq!(with("").uid_or_name(), (None, String::new()));
        assert_eq!(with("1000").uid_or_name(), (Some(1000), String::new()));
        assert_eq!(with("1000:50").uid_or_name(), (Some(1000), String::new()));
        assert_eq!(with("nobody").uid_or_name(), (None, "nobody".into()));
        assert_eq!(with("www:www").uid_or_name(), (None, "www".into()));
    }
}
