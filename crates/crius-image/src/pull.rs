//! Talking to registries through `oci-client`: sources (mirrors, then upstream), credentials,
//! manifests and blob streams, and the mapping of registry errors.

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::ImageError;
use crate::manifest::Descriptor;
use crate::reference::ImageName;

/// How registries are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Upstream host → mirror endpoints (`http://host[:port]` or `https://...`), tried first.
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// Credentials of a pull, as CRI `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name for basic authentication.
    pub username: String,
    /// Password for basic authentication.
    pub password: String,
    /// `base64(user:password)`, used when username is empty.
    pub auth: String,
    /// An identity token (OAuth refresh token); not supported by crius.
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `oci-client` authentication these credentials stand for.
    pub fn to_auth(&self) -> Result<RegistryAuth, ImageError> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|e| {
                    ImageError::InvalidRequest(format!("auth.auth is not valid base64: {e}"))
                })?;
            let text = String::from_utf8(decoded).map_err(|_| {
                ImageError::InvalidRequest("auth.auth does not decode to UTF-8 text".into())
            })?;
            let (user, password) = text.split_once(':').ok_or_else(|| {
                ImageError::InvalidRequest("auth.auth must encode user:password".into())
            })?;
            return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
        }
        if !self.identity_token.is_empty() {
            return Err(ImageError::InvalidRequest(
                "auth.identity_token (an OAuth refresh token) is not supported by crius; \
                 pass username/password, auth or registry_token"
                    .into(),
            ));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// One place an image can be pulled from: a mirror or the upstream registry.
pub struct Source {
    /// `host[:port]` asked, for messages.
    pub host: String,
    /// The client (one per pull: it caches credentials per registry).
    pub client: Client,
    /// The reference, with the mirror set when this is a mirror.
    pub reference: Reference,
    /// The credentials.
    pub auth: RegistryAuth,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("host", &self.host).finish()
    }
}

/// Installs the TLS crypto provider once per process.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The sources of `name`, in order: each configured mirror, then the upstream registry.
pub fn sources(
    options: &RegistryOptions,
    name: &ImageName,
    auth: &RegistryAuth,
) -> Result<Vec<Source>, ImageError> {
    install_crypto();
    let mut http_hosts = options.insecure.clone();
    let mut mirror_hosts = Vec::new();
    for endpoint in options.mirrors.get(&name.registry).into_iter().flatten() {
        let (plain, rest) = match endpoint.strip_prefix("http://") {
            Some(rest) => (true, rest),
            None => (false, endpoint.strip_prefix("https://").unwrap_or(endpoint)),
        };
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        if host.is_empty() {
            continue;
        }
        if plain {
            http_hosts.push(host.clone());
        }
        mirror_hosts.push(host);
    }
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(http_hosts),
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        user_agent: concat!("crius/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    let client = Client::try_from(config).map_err(|e| ImageError::Registry {
        reference: name.to_string(),
        registry: name.registry.clone(),
        message: format!("cannot build the registry client: {e}"),
    })?;
    let upstream = reference_of(name);
    let mut out = Vec::new();
    for host in mirror_hosts {
        let mut reference = upstream.clone();
        reference.set_mirror_registry(host.clone());
        out.push(Source {
            host,
            client: client.clone(),
            reference,
            auth: auth.clone(),
        });
    }
    out.push(Source {
        host: name.registry.clone(),
        client,
        reference: upstream,
        auth: auth.clone(),
    });
    Ok(out)
}

fn reference_of(name: &ImageName) -> Reference {
    match (&name.tag, &name.digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            name.registry.clone(),
            name.repository.clone(),
            tag.clone(),
            digest.clone(),
        ),
        (_, Some(digest)) => Reference::with_digest(
            name.registry.clone(),
            name.repository.clone(),
            digest.clone(),
        ),
        (tag, None) => Reference::with_tag(
            name.registry.clone(),
            name.repository.clone(),
            tag.clone()
                .unwrap_or_else(|| crate::reference::DEFAULT_TAG.to_owned()),
        ),
    }
}

impl Source {
    /// Fetches the manifest the reference names (or `digest`, when given); returns its bytes
    /// and digest (checked against a requested digest by the client).
    pub async fn manifest(
        &self,
        digest: Option<&str>,
        accepted: &[&str],
    ) -> Result<(Vec<u8>, String), ImageError> {
        let reference = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_owned()),
            None => self.reference.clone(),
        };
        let (body, digest) = self
            .client
            .pull_manifest_raw(&reference, &self.auth, accepted)
            .await
            .map_err(|e| self.error(e))?;
        Ok((body.to_vec(), digest))
    }

    /// Opens a stream of the blob `desc`.
    pub async fn blob_stream(
        &self,
        desc: &Descriptor,
    ) -> Result<impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + use<>, ImageError>
    {
        let oci = OciDescriptor {
            media_type: desc.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            ..OciDescriptor::default()
        };
        // Blob requests use the token the manifest request obtained; make sure one exists
        // even when a layer is fetched first (the store may hold the manifest already).
        self.client
            .store_auth_if_needed(self.reference.resolve_registry(), &self.auth)
            .await;
        let stream = self
            .client
            .pull_blob_stream(&self.reference, &oci)
            .await
            .map_err(|e| self.error(e))?;
        // The client checks digests too; its verdict arrives as an I/O error, marked here so
        // the blob store reports a digest mismatch rather than a failed download.
        Ok(futures_util::TryStreamExt::map_err(stream, |e| {
            let digest_error = e
                .get_ref()
                .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
            if digest_error {
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
            } else {
                e
            }
        }))
    }

    /// Maps an `oci-client` error to the store's error, naming this source.
    pub fn error(&self, e: OciDistributionError) -> ImageError {
        let reference = self.reference.whole();
        let registry = self.host.clone();
        let message = e.to_string();
        let not_found = || ImageError::RegistryNotFound {
            reference: reference.clone(),
            registry: registry.clone(),
            message: message.clone(),
        };
        let unauthenticated = || ImageError::Unauthenticated {
            reference: reference.clone(),
            registry: registry.clone(),
            message: message.clone(),
        };
        let denied = || ImageError::PermissionDenied {
            reference: reference.clone(),
            registry: registry.clone(),
            message: message.clone(),
        };
        match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthenticated(),
            OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
            OciDistributionError::ServerError { code: 401, .. } => unauthenticated(),
            OciDistributionError::ServerError { code: 403, .. } => denied(),
            OciDistributionError::ServerError { code: 404, .. } => not_found(),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    unauthenticated()
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    denied()
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    not_found()
                } else {
                    self.other(message)
                }
            }
            OciDistributionError::DigestError(_) => ImageError::DigestMismatch {
                digest: self.reference.digest().unwrap_or_default().to_owned(),
                actual: message,
            },
            _ => self.other(message),
        }
    }

    fn other(&self, message: String) -> ImageError {
        ImageError::Registry {
            reference: self.reference.whole(),
            registry: self.host.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_map_to_auth() {
        let basic = Credentials {
            username: "u".into(),
            password: "p".into(),
            ..Credentials::default()
        };
        assert_eq!(
            basic.to_auth().ok(),
            Some(RegistryAuth::Basic("u".into(), "p".into()))
        );
        let encoded = Credentials {
            auth: "dTpwOmM=".into(), // u:p:c
            ..Credentials::default()
        };
        assert_eq!(
            encoded.to_auth().ok(),
            Some(RegistryAuth::Basic("u".into(), "p:c".into()))
        );
        let token = Credentials {
            registry_token: "t".into(),
            ..Credentials::default()
        };
        assert_eq!(token.to_auth().ok(), Some(RegistryAuth::Bearer("t".into())));
        assert_eq!(
            Credentials::default().to_auth().ok(),
            Some(RegistryAuth::Anonymous)
        );
        let bad = Credentials {
            auth: "!!".into(),
            ..Credentials::default()
        };
        assert!(bad.to_auth().is_err());
        assert!(!format!("{basic:?}").contains("\"p\""));
    }

    #[test]
    fn mirrors_come_first_and_keep_the_upstream_name() {
        let options = RegistryOptions {
            insecure: vec![],
            mirrors: BTreeMap::from([(
                "registry.k8s.io".to_owned(),
                vec![
                    "http://127.0.0.1:5000".to_owned(),
                    "https://m.example/v2".to_owned(),
                ],
            )]),
        };
        let name = ImageName::parse("registry.k8s.io/pause:3.10").expect("name");
        let sources = sources(&options, &name, &RegistryAuth::Anonymous).expect("sources");
        let hosts: Vec<_> = sources.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5000", "m.example", "registry.k8s.io"]);
        assert_eq!(sources[0].reference.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(sources[0].reference.registry(), "registry.k8s.io");
        assert_eq!(sources[0].reference.repository(), "pause");
    }
}
