//! Talking to registries through `oci-client`: sources (mirrors, then upstream), credentials,
//! manifests and blob streams, and the mapping of registry errors.

use std::collections::BTreeMap;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::ImageError;
use crate::limits::MAX_DOCUMENT_BYTES;
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
    /// An identity token (an OAuth2 refresh token), exchanged at the registry's bearer token
    /// service for an access token; used when nothing else is given.
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
        // An identity token alone is exchanged per source (see `Source::effective_auth`).
        Ok(RegistryAuth::Anonymous)
    }

    /// The identity token, when it is the credential to use (nothing else is given).
    pub fn identity_token(&self) -> Option<String> {
        let only = self.registry_token.is_empty()
            && self.username.is_empty()
            && self.auth.is_empty()
            && !self.identity_token.is_empty();
        only.then(|| self.identity_token.clone())
    }
}

/// One place an image can be pulled from: a mirror or the upstream registry.
pub struct Source {
    /// `host[:port]` asked, for messages.
    pub host: String,
    /// The client (one per pull: it caches credentials per registry).
    pub client: Client,
    /// Plain HTTP client for manifests, which are read with a size cap.
    pub http: reqwest::Client,
    /// Whether the source is reached over plain HTTP.
    pub plain_http: bool,
    /// The reference, with the mirror set when this is a mirror.
    pub reference: Reference,
    /// The credentials.
    pub auth: RegistryAuth,
    /// An identity token to exchange for a bearer token before the first request.
    pub identity_token: Option<String>,
    /// The bearer token the identity token was exchanged for.
    pub exchanged: tokio::sync::OnceCell<RegistryAuth>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("host", &self.host).finish()
    }
}

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a registry may stay silent during a transfer.
const READ_TIMEOUT: Duration = Duration::from_secs(300);
/// The User-Agent of crius' registry requests.
const USER_AGENT: &str = concat!("crius/", env!("CARGO_PKG_VERSION"));

/// Why a capped read stopped.
enum Capped {
    /// The body is longer than the cap.
    Over,
    /// The connection failed.
    Read(reqwest::Error),
}

/// Reads a response body of at most `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Vec<u8>, Capped> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Capped::Read)? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(Capped::Over);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The parameters of a `Bearer realm="...",service="..."` challenge.
fn parse_bearer_challenge(header: &str) -> Option<BTreeMap<String, String>> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(params)
}

/// `application/x-www-form-urlencoded` encoding of a value.
fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Installs the TLS crypto provider once per process.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A mirror endpoint split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorEndpoint {
    /// Plain HTTP (`http://`).
    pub plain_http: bool,
    /// `host[:port]`.
    pub host: String,
    /// A repository prefix on the mirror (`some/prefix`), empty for none.
    pub prefix: String,
}

/// Parses a mirror endpoint `http[s]://host[:port][/path]`. The path is a repository prefix
/// on the mirror; a leading `v2` component (the API root) is not part of it.
pub fn parse_mirror(endpoint: &str) -> Option<MirrorEndpoint> {
    let (plain_http, rest) = match endpoint.strip_prefix("http://") {
        Some(rest) => (true, rest),
        None => (false, endpoint.strip_prefix("https://").unwrap_or(endpoint)),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.first() == Some(&"v2") {
        parts.remove(0);
    }
    Some(MirrorEndpoint {
        plain_http,
        host: host.to_owned(),
        prefix: parts.join("/"),
    })
}

/// The sources of `name`, in order: each configured mirror, then the upstream registry.
pub fn sources(
    options: &RegistryOptions,
    name: &ImageName,
    auth: &RegistryAuth,
    identity_token: Option<&str>,
) -> Result<Vec<Source>, ImageError> {
    install_crypto();
    let mut http_hosts = options.insecure.clone();
    let mut mirrors = Vec::new();
    for endpoint in options.mirrors.get(&name.registry).into_iter().flatten() {
        let Some(mirror) = parse_mirror(endpoint) else {
            continue;
        };
        if mirror.plain_http {
            http_hosts.push(mirror.host.clone());
        }
        mirrors.push(mirror);
    }
    let build_error = |e: String| ImageError::Registry {
        reference: name.to_string(),
        registry: name.registry.clone(),
        message: format!("cannot build the registry client: {e}"),
    };
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(http_hosts.clone()),
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        ..ClientConfig::default()
    };
    let client = Client::try_from(config).map_err(|e| build_error(e.to_string()))?;
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| build_error(e.to_string()))?;
    let upstream = reference_of(name, &name.repository);
    let mut out = Vec::new();
    for mirror in mirrors {
        let mut reference = if mirror.prefix.is_empty() {
            upstream.clone()
        } else {
            reference_of(name, &format!("{}/{}", mirror.prefix, name.repository))
        };
        reference.set_mirror_registry(mirror.host.clone());
        out.push(Source {
            host: mirror.host,
            client: client.clone(),
            http: http.clone(),
            plain_http: mirror.plain_http,
            reference,
            auth: auth.clone(),
            identity_token: identity_token.map(str::to_owned),
            exchanged: tokio::sync::OnceCell::new(),
        });
    }
    out.push(Source {
        plain_http: http_hosts.contains(&name.registry),
        host: name.registry.clone(),
        client,
        http,
        reference: upstream,
        auth: auth.clone(),
        identity_token: identity_token.map(str::to_owned),
        exchanged: tokio::sync::OnceCell::new(),
    });
    Ok(out)
}

/// The `oci-client` reference of `name` with repository `repository`.
fn reference_of(name: &ImageName, repository: &str) -> Reference {
    let repository = repository.to_owned();
    match (&name.tag, &name.digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            name.registry.clone(),
            repository,
            tag.clone(),
            digest.clone(),
        ),
        (_, Some(digest)) => {
            Reference::with_digest(name.registry.clone(), repository, digest.clone())
        }
        (tag, None) => Reference::with_tag(
            name.registry.clone(),
            repository,
            tag.clone()
                .unwrap_or_else(|| crate::reference::DEFAULT_TAG.to_owned()),
        ),
    }
}

impl Source {
    /// Fetches the manifest the reference names (or `digest`, when given); returns its bytes
    /// and digest (checked against a requested digest). A document over
    /// [`MAX_DOCUMENT_BYTES`] is refused before it is read whole.
    pub async fn manifest(
        &self,
        digest: Option<&str>,
        accepted: &[&str],
    ) -> Result<(Vec<u8>, String), ImageError> {
        let reference = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_owned()),
            None => self.reference.clone(),
        };
        let auth = self.effective_auth().await?;
        // oci-client runs the bearer challenge and keeps the token for the blob requests.
        let token = self
            .client
            .auth(&reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| self.error(e))?;
        let url = format!(
            "{scheme}://{registry}/v2/{repository}/manifests/{tag}{ns}",
            scheme = if self.plain_http { "http" } else { "https" },
            registry = reference.resolve_registry(),
            repository = reference.repository(),
            tag = reference
                .digest()
                .or_else(|| reference.tag())
                .unwrap_or(crate::reference::DEFAULT_TAG),
            ns = reference
                .namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default(),
        );
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, accepted.join(", "));
        request = match (&token, &auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Anonymous) => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.other(format!("GET {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_capped(response, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body).trim().to_owned();
            let message = format!("GET {url}: {status}: {text}");
            return Err(match status.as_u16() {
                401 => self.unauthenticated(message),
                403 => ImageError::PermissionDenied {
                    reference: self.reference.whole(),
                    registry: self.host.clone(),
                    message,
                },
                404 => ImageError::RegistryNotFound {
                    reference: self.reference.whole(),
                    registry: self.host.clone(),
                    message,
                },
                _ => self.other(message),
            });
        }
        if let Some(length) = response.content_length()
            && length > MAX_DOCUMENT_BYTES
        {
            return Err(self.too_large(Some(length)));
        }
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| match e {
                Capped::Over => self.too_large(None),
                Capped::Read(e) => self.other(format!("reading {url}: {e}")),
            })?;
        let actual = crate::digest::sha256_of(&body);
        if let Some(wanted) = reference.digest().or(header_digest.as_deref())
            && wanted.starts_with(crate::digest::SHA256_PREFIX)
            && wanted != actual
        {
            return Err(ImageError::DigestMismatch {
                digest: wanted.to_owned(),
                actual,
            });
        }
        Ok((body, actual))
    }

    /// The credentials to send: the identity token's access token once exchanged, else the
    /// credentials as given.
    async fn effective_auth(&self) -> Result<RegistryAuth, ImageError> {
        match &self.identity_token {
            None => Ok(self.auth.clone()),
            Some(refresh) => self
                .exchanged
                .get_or_try_init(|| self.exchange_identity_token(refresh))
                .await
                .cloned(),
        }
    }

    /// Exchanges an identity token (OAuth2 refresh token) at the bearer token service the
    /// registry's challenge names, for an access token with pull scope on this repository.
    async fn exchange_identity_token(&self, refresh: &str) -> Result<RegistryAuth, ImageError> {
        let base = format!(
            "{}://{}/v2/",
            if self.plain_http { "http" } else { "https" },
            self.reference.resolve_registry()
        );
        let response = self
            .http
            .get(&base)
            .send()
            .await
            .map_err(|e| self.other(format!("GET {base}: {e}")))?;
        if response.status().is_success() {
            return Ok(RegistryAuth::Anonymous);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let params = parse_bearer_challenge(&challenge).ok_or_else(|| {
            self.unauthenticated(format!(
                "{base} answers {} with challenge {challenge:?}: an identity_token needs a \
                 bearer token service",
                response.status()
            ))
        })?;
        let realm = params
            .get("realm")
            .ok_or_else(|| self.unauthenticated(format!("{base}: the challenge names no realm")))?;
        let scope = format!("repository:{}:pull", self.reference.repository());
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", "crius"),
            ("scope", scope.as_str()),
        ];
        if let Some(service) = params.get("service") {
            form.push(("service", service.as_str()));
        }
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect();
        let response = self
            .http
            .post(realm.as_str())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.join("&"))
            .send()
            .await
            .map_err(|e| self.other(format!("POST {realm}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.unauthenticated(format!(
                "the token service {realm} refused the identity token: {status}"
            )));
        }
        let body = read_capped(response, 1 << 20).await.map_err(|e| match e {
            Capped::Over => self.other(format!("{realm}: the token answer is over 1 MiB")),
            Capped::Read(e) => self.other(format!("reading {realm}: {e}")),
        })?;
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.other(format!("{realm}: the token answer is not JSON: {e}")))?;
        let token = doc
            .get("access_token")
            .or_else(|| doc.get("token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.other(format!("{realm}: the token answer holds no token")))?;
        Ok(RegistryAuth::Bearer(token.to_owned()))
    }

    /// The refusal of a manifest of `size` bytes (`None`: longer than the cap, size unknown).
    fn too_large(&self, size: Option<u64>) -> ImageError {
        let size = size.map_or_else(
            || "more than the limit".to_owned(),
            |s| format!("{s} bytes"),
        );
        ImageError::TooLarge {
            reference: self.reference.whole(),
            what: format!(
                "the manifest from {} is {size}, over crius' limit of {MAX_DOCUMENT_BYTES} bytes",
                self.host
            ),
        }
    }

    fn unauthenticated(&self, message: String) -> ImageError {
        ImageError::Unauthenticated {
            reference: self.reference.whole(),
            registry: self.host.clone(),
            message,
        }
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
        let auth = self.effective_auth().await?;
        self.client
            .store_auth_if_needed(self.reference.resolve_registry(), &auth)
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
        let identity = Credentials {
            identity_token: "refresh".into(),
            ..Credentials::default()
        };
        assert_eq!(identity.to_auth().ok(), Some(RegistryAuth::Anonymous));
        assert_eq!(identity.identity_token().as_deref(), Some("refresh"));
        assert_eq!(basic.identity_token(), None);
        let challenge = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull,push""#,
        )
        .expect("challenge");
        assert_eq!(challenge["realm"], "https://auth.example/token");
        assert_eq!(challenge["service"], "reg");
        assert_eq!(challenge["scope"], "repository:a:pull,push");
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
        assert_eq!(form_encode("a b/c:d"), "a%20b%2Fc%3Ad");
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
        let sources = sources(&options, &name, &RegistryAuth::Anonymous, None).expect("sources");
        let hosts: Vec<_> = sources.iter().map(|s| s.host.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5000", "m.example", "registry.k8s.io"]);
        assert_eq!(sources[0].reference.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(sources[0].reference.registry(), "registry.k8s.io");
        assert_eq!(sources[0].reference.repository(), "pause");
        assert!(sources[0].plain_http && !sources[1].plain_http && !sources[2].plain_http);
        assert_eq!(sources[1].reference.repository(), "pause");
    }

    #[test]
    fn mirror_paths_are_repository_prefixes() {
        let parsed = |e: &str| parse_mirror(e).map(|m| (m.plain_http, m.host, m.prefix));
        assert_eq!(
            parsed("http://127.0.0.1:5000/some/prefix/"),
            Some((true, "127.0.0.1:5000".into(), "some/prefix".into()))
        );
        assert_eq!(
            parsed("https://m.example/v2/cache"),
            Some((false, "m.example".into(), "cache".into()))
        );
        assert_eq!(
            parsed("https://m.example/v2"),
            Some((false, "m.example".into(), String::new()))
        );
        assert_eq!(parsed("http:///x"), None);
        let options = RegistryOptions {
            insecure: vec![],
            mirrors: BTreeMap::from([(
                "docker.io".to_owned(),
                vec!["http://127.0.0.1:5000/hub/cache".to_owned()],
            )]),
        };
        let name = ImageName::parse("busybox:1").expect("name");
        let sources = sources(&options, &name, &RegistryAuth::Anonymous, None).expect("sources");
        assert_eq!(
            sources[0].reference.repository(),
            "hub/cache/library/busybox"
        );
        assert_eq!(sources[0].reference.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(sources[1].reference.repository(), "library/busybox");
    }
}
