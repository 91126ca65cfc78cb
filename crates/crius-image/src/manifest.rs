//! Manifests, indexes and image configs as crius reads them (OCI and Docker schema 2).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Every manifest media type a pull accepts.
pub const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:...`.
    pub digest: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Platform, in index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Alternative locations (non-distributable layers); crius does not fetch them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// The size as an upper bound for a download, when the descriptor gives one.
    pub fn size_limit(&self) -> Option<u64> {
        u64::try_from(self.size).ok().filter(|s| *s > 0)
    }
}

/// A platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`.
    pub os: String,
    /// `v8`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A manifest or an index, as fetched.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnyManifest {
    /// 2.
    #[serde(default)]
    pub schema_version: i64,
    /// The media type, when the document states it.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Config (image manifests).
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// Layers, bottom to top (image manifests).
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
    /// Per-platform manifests (indexes).
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
}

/// What a fetched document is.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// An image manifest: config and layers.
    Image {
        /// The config descriptor.
        config: Descriptor,
        /// The layers, bottom to top.
        layers: Vec<Descriptor>,
    },
    /// An index of per-platform manifests.
    Index(Vec<Descriptor>),
}

/// Why a fetched manifest or index is not used.
///
/// A JSON error keeps its category and position only, not serde's message: serde quotes
/// values it refuses, and the document may come from anywhere a registry redirected to.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The document is not JSON of a manifest's shape.
    #[error("manifest {} (line {line}, column {column})", json_category(*category))]
    Json {
        /// What kind of JSON error.
        category: serde_json::error::Category,
        /// Where, 1-based.
        line: usize,
        /// Where, 1-based.
        column: usize,
    },
    /// A schema version other than 2.
    #[error("manifest schema version {version} is not supported (only 2: OCI and Docker schema 2)")]
    SchemaVersion {
        /// The version the document states.
        version: i64,
    },
    /// An image manifest without a config.
    #[error("manifest has no config")]
    NoConfig,
    /// A foreign or non-distributable layer, which crius does not fetch.
    #[error(
        "layer {digest} is non-distributable ({media_type}); crius does not fetch foreign layers"
    )]
    NonDistributable {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// A layer of a media type crius does not unpack.
    #[error("layer {digest} has unsupported media type {media_type}")]
    LayerType {
        /// The layer's digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },
}

impl From<serde_json::Error> for ManifestError {
    fn from(e: serde_json::Error) -> ManifestError {
        ManifestError::Json {
            category: e.classify(),
            line: e.line(),
            column: e.column(),
        }
    }
}

/// What a JSON error category means for a document.
fn json_category(category: serde_json::error::Category) -> &'static str {
    match category {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Data => "is JSON of the wrong shape",
        serde_json::error::Category::Eof => "is truncated JSON",
    }
}

/// Parses a manifest or index; `content_type` is the registry's Content-Type, if any.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, ManifestError> {
    let doc: AnyManifest = serde_json::from_slice(body)?;
    if doc.schema_version != 2 {
        return Err(ManifestError::SchemaVersion {
            version: doc.schema_version,
        });
    }
    let media_type = doc
        .media_type
        .as_deref()
        .or(content_type)
        .unwrap_or_default();
    let is_index = matches!(media_type, OCI_INDEX | DOCKER_LIST)
        || (doc.manifests.is_some() && doc.config.is_none());
    if is_index {
        return Ok(Parsed::Index(doc.manifests.unwrap_or_default()));
    }
    let config = doc.config.ok_or(ManifestError::NoConfig)?;
    let layers = doc.layers.unwrap_or_default();
    for layer in &layers {
        if layer.urls.is_some()
            || layer.media_type.contains("foreign")
            || layer.media_type.contains("nondistributable")
        {
            return Err(ManifestError::NonDistributable {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
        if !layer.media_type.is_empty() && !is_layer_type(&layer.media_type) {
            return Err(ManifestError::LayerType {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
    }
    Ok(Parsed::Image { config, layers })
}

/// Whether `media_type` is a layer crius unpacks (tar, gzip or zstd).
pub fn is_layer_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// This node's platform in OCI terms: (`linux`, `amd64`).
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    (std::env::consts::OS, arch)
}

/// Picks the entry of an index for `os`/`arch`: the first match, preferring `v8` for arm64
/// when several variants exist.
pub fn select_platform<'a>(
    entries: &'a [Descriptor],
    os: &str,
    arch: &str,
) -> Option<&'a Descriptor> {
    let matching = entries.iter().filter(|e| {
        e.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    });
    let all: Vec<_> = matching.collect();
    all.iter()
        .find(|e| {
            arch != "arm64"
                || e.platform
                    .as_ref()
                    .is_some_and(|p| p.variant.as_deref().is_none_or(|v| v == "v8"))
        })
        .or(all.first())
        .copied()
}

/// The platforms an index offers, for error messages.
pub fn describe_platforms(entries: &[Descriptor]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        })
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The parts of an image config crius uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigFile {
    /// `amd64`.
    #[serde(default)]
    pub architecture: String,
    /// `linux`.
    #[serde(default)]
    pub os: String,
    /// The runtime defaults.
    #[serde(default)]
    pub config: Option<RunConfig>,
    /// The layers' uncompressed digests.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    /// The uncompressed digests of the layers, bottom to top.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// `config` of an image config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    /// `User`.
    #[serde(default)]
    pub user: Option<String>,
    /// `Env`.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// `Entrypoint`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `StopSignal`.
    #[serde(default)]
    pub stop_signal: Option<String>,
    /// `Labels`.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, d: char) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", d.to_string().repeat(64)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
            urls: None,
        }
    }

    #[test]
    fn selects_the_platform() {
        let entries = [
            entry("linux", "arm64", Some("v8"), 'a'),
            entry("windows", "amd64", None, 'b'),
            entry("linux", "amd64", None, 'c'),
        ];
        assert_eq!(
            select_platform(&entries, "linux", "amd64").map(|e| &e.digest),
            Some(&entries[2].digest)
        );
        assert_eq!(
            select_platform(&entries, "linux", "arm64").map(|e| &e.digest),
            Some(&entries[0].digest)
        );
        assert!(select_platform(&entries, "linux", "s390x").is_none());
        assert_eq!(
            describe_platforms(&entries),
            "linux/arm64/v8, windows/amd64, linux/amd64"
        );
    }

    #[test]
    fn parses_manifests_and_refuses_odd_ones() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:aa","size":1},
            "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:bb","size":2}]}"#;
        assert!(
            matches!(parse(image, None), Ok(Parsed::Image { layers, .. }) if layers.len() == 1)
        );
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse(index, Some(OCI_INDEX)),
            Ok(Parsed::Index(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion { version: 1 })
        ));
        let odd = br#"{"schemaVersion":2,"config":{"digest":"sha256:aa"},
            "layers":[{"mediaType":"application/x-tar-lz4","digest":"sha256:bb"}]}"#;
        let Err(e) = parse(odd, None) else {
            panic!("accepted an lz4 layer");
        };
        assert!(matches!(e, ManifestError::LayerType { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "layer sha256:bb has unsupported media type application/x-tar-lz4"
        );
    }

    #[test]
    fn json_errors_quote_nothing_of_the_document() {
        for body in [
            &br#"{"schemaVersion":"SECRET-VALUE"}"#[..],
            br#"{"schemaVersion":2,"mediaType":{"SECRET-VALUE":1}}"#,
            b"<html>SECRET-VALUE</html>",
            br#"{"schemaVersion":2,"config":"SECRET-VALUE"#,
        ] {
            let Err(e) = parse(body, None) else {
                panic!("accepted {}", String::from_utf8_lossy(body));
            };
            let e = e.to_string();
            assert!(e.starts_with("manifest "), "{e}");
            assert!(e.contains("line 1"), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }
}
