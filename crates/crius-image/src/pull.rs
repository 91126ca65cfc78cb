//! Talking to registries: sources (mirrors, then upstream), credentials, the bearer token
//! challenge, manifests and blob streams, and the mapping of registry errors.
//!
//! Every request goes through a reqwest client of crius whose redirects and name resolution
//! are guarded (see `guard`): `oci-client` follows redirects anywhere, puts whole error bodies
//! into its errors and reads them uncapped, and lets none of that be configured. Only its
//! reference and credential types are used.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_client::Reference;
use oci_client::secrets::RegistryAuth;

use crate::ImageError;
use crate::guard::{self, FailureKind, Reach, Refused, RegistryError};
use crate::limits::MAX_DOCUMENT_BYTES;
use crate::manifest::Descriptor;
use crate::reference::ImageName;

/// How registries are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Upstream host → mirror endpoints (`http://host[:port]` or `https://...`), tried first.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// A `certs.d` directory of per-registry `hosts.toml` files (see [`crate::hosts`]).
    pub hosts_dir: Option<std::path::PathBuf>,
    /// How long a transfer may go without receiving a byte; `None`: no limit.
    pub progress_timeout: Option<Duration>,
}

/// The default of [`RegistryOptions::progress_timeout`].
pub const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            mirrors: BTreeMap::new(),
            hosts_dir: None,
            progress_timeout: Some(DEFAULT_PROGRESS_TIMEOUT),
        }
    }
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

/// Why [`Credentials`] cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InvalidCredentials {
    /// `auth` is not base64.
    #[error("auth.auth is not valid base64: {source}")]
    NotBase64 {
        /// The decoding error.
        source: base64::DecodeError,
    },
    /// `auth` decodes to bytes that are not UTF-8.
    #[error("auth.auth does not decode to UTF-8 text")]
    NotUtf8 {
        /// The conversion error.
        source: std::string::FromUtf8Error,
    },
    /// `auth` decodes to text without a `:`.
    #[error("auth.auth must encode user:password")]
    NoUserPassword,
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
                .map_err(|source| InvalidCredentials::NotBase64 { source })?;
            let text = String::from_utf8(decoded)
                .map_err(|source| InvalidCredentials::NotUtf8 { source })?;
            let (user, password) = text
                .split_once(':')
                .ok_or(InvalidCredentials::NoUserPassword)?;
            return Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()));
        }
        // An identity token alone is exchanged per source (see `Source::authorization`).
        Ok(RegistryAuth::Anonymous)
    }

    /// A digest of every field: pulls with equal fingerprints may share a transfer.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for field in [
            &self.username,
            &self.password,
            &self.auth,
            &self.identity_token,
            &self.registry_token,
        ] {
            text.push_str(&field.len().to_string());
            text.push(':');
            text.push_str(field);
        }
        crate::digest::sha256_of(text.as_bytes())
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
    /// The HTTP client of this source: its redirects and name resolution are guarded (see
    /// `guard`).
    pub http: reqwest::Client,
    /// Whether the source is reached over plain HTTP.
    pub plain_http: bool,
    /// `http[s]://host[:port]`.
    base: String,
    /// The registry API root on it (`/v2`, or a longer path from a `hosts.toml`).
    api_root: String,
    /// How long a transfer may go without a byte.
    progress_timeout: Option<Duration>,
    /// The reference, with the mirror set when this is a mirror.
    pub reference: Reference,
    /// The credentials.
    pub auth: RegistryAuth,
    /// An identity token, exchanged at the registry's token service for an access token.
    pub identity_token: Option<String>,
    /// Where the requests of this source may go.
    reach: Arc<Reach>,
    /// The registry's challenge and the bearer token obtained, once asked.
    session: tokio::sync::Mutex<Session>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("host", &self.host).finish()
    }
}

/// What a source learnt about authenticating to its registry.
#[derive(Debug, Default)]
struct Session {
    /// The challenge `GET /v2/` answered with, once asked.
    challenge: Option<Challenge>,
    /// A bearer token from the token service, and when to renew it.
    token: Option<(String, Instant)>,
}

/// How a registry asks clients to authenticate.
#[derive(Debug, Clone)]
enum Challenge {
    /// It does not (`GET /v2/` did not answer 401).
    Open,
    /// HTTP basic authentication (a 401 without a bearer challenge).
    Basic,
    /// Bearer tokens from the token service at `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// What a request carries.
enum Authorization {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The User-Agent of crius' registry requests.
const USER_AGENT: &str = concat!("crius/", env!("CARGO_PKG_VERSION"));
/// How much of an error answer is read, for its distribution error codes.
const ERROR_BODY_CAP: u64 = 64 << 10;
/// How long reading an error answer may take.
const ERROR_BODY_TIME: Duration = Duration::from_secs(10);
/// How large a token service's answer may be.
const TOKEN_ANSWER_CAP: u64 = 1 << 20;
/// The lifetime of a bearer token whose answer gives none (the token spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;
/// The longest a bearer token is used.
const MAX_TOKEN_SECS: u64 = 24 * 3600;

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

/// The sources of `name`, in order: the mirrors of `registry.mirrors`, then those of the
/// registry's `hosts.toml` that may serve this reference, then the upstream server.
pub fn sources(
    options: &RegistryOptions,
    name: &ImageName,
    auth: &RegistryAuth,
    identity_token: Option<&str>,
) -> Result<Vec<Source>, ImageError> {
    install_crypto();
    let build_error = |e: reqwest::Error| ImageError::Registry {
        reference: name.to_string(),
        registry: name.registry.clone(),
        message: format!("cannot build the registry client: {e}"),
    };
    let progress = options.progress_timeout;
    let upstream = reference_of(name, &name.repository);
    let mut out = Vec::new();
    for endpoint in options.mirrors.get(&name.registry).into_iter().flatten() {
        let Some(mirror) = parse_mirror(endpoint) else {
            continue;
        };
        let mut reference = if mirror.prefix.is_empty() {
            upstream.clone()
        } else {
            reference_of(name, &format!("{}/{}", mirror.prefix, name.repository))
        };
        reference.set_mirror_registry(mirror.host.clone());
        let base = base_url(mirror.plain_http, &mirror.host);
        let source = Source::new(
            mirror.host,
            mirror.plain_http,
            (base, "/v2".into()),
            reference,
            (auth, identity_token),
            &Transport::default(),
            progress,
        )
        .map_err(build_error)?;
        out.push(source);
    }
    let hosts = match &options.hosts_dir {
        Some(dir) => {
            crate::hosts::load(dir, &name.registry).map_err(|e| ImageError::HostConfig {
                path: e.path,
                reason: e.reason,
            })?
        }
        None => None,
    };
    let insecure = options.insecure.contains(&name.registry);
    let Some(hosts) = hosts else {
        let base = base_url(insecure, upstream.resolve_registry());
        let source = Source::new(
            name.registry.clone(),
            insecure,
            (base, "/v2".into()),
            upstream,
            (auth, identity_token),
            &Transport::default(),
            progress,
        )
        .map_err(build_error)?;
        out.push(source);
        return Ok(out);
    };
    let by_digest = name.digest.is_some();
    let mut skipped = Vec::new();
    for endpoint in &hosts.endpoints {
        let (host, plain_http) = match &endpoint.host {
            Some(host) => (host.clone(), endpoint.plain_http),
            None => (upstream.resolve_registry().to_owned(), insecure),
        };
        if !endpoint.pull || !(endpoint.resolve || by_digest) {
            skipped.push(host);
            continue;
        }
        let mut reference = upstream.clone();
        if !endpoint.is_server {
            reference.set_mirror_registry(host.clone());
        }
        let transport = Transport::load(endpoint)?;
        let source = Source::new(
            if endpoint.is_server {
                name.registry.clone()
            } else {
                host.clone()
            },
            plain_http,
            (base_url(plain_http, &host), endpoint.api_root.clone()),
            reference,
            (auth, identity_token),
            &transport,
            progress,
        )
        .map_err(build_error)?;
        out.push(source);
    }
    if out.is_empty() {
        return Err(ImageError::HostConfig {
            path: hosts.dir.join("hosts.toml"),
            reason: format!(
                "no host may serve {name}: {} lack the `pull` capability, or `resolve` for a \
                 reference by tag",
                skipped.join(", ")
            ),
        });
    }
    Ok(out)
}

/// `http[s]://host`.
fn base_url(plain_http: bool, host: &str) -> String {
    format!("{}://{host}", if plain_http { "http" } else { "https" })
}

/// How one source's HTTP client connects: its TLS settings, headers and dial timeout.
#[derive(Default)]
struct Transport {
    /// CAs trusted beside the system's roots.
    ca: Vec<reqwest::Certificate>,
    /// The client certificate presented.
    identity: Option<reqwest::Identity>,
    /// The server's certificate is not verified.
    skip_verify: bool,
    /// Headers sent with every request.
    headers: reqwest::header::HeaderMap,
    /// How long connecting may take.
    dial_timeout: Option<Duration>,
}

impl Transport {
    /// Reads the files an endpoint of a `hosts.toml` names.
    fn load(endpoint: &crate::hosts::Endpoint) -> Result<Transport, ImageError> {
        let bad = |path: &std::path::Path, reason: String| ImageError::HostConfig {
            path: path.to_owned(),
            reason,
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))
        };
        let mut transport = Transport {
            skip_verify: endpoint.tls.skip_verify,
            dial_timeout: endpoint.dial_timeout,
            ..Transport::default()
        };
        for path in &endpoint.tls.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&read(path)?)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| bad(path, "holds no PEM certificate".into()))?;
            transport.ca.extend(certs);
        }
        if let Some((cert, key)) = endpoint.tls.client.first() {
            if endpoint.tls.client.len() > 1 {
                tracing::warn!(cert = %cert.display(),
                    "several client certificates are configured; crius presents the first");
            }
            let mut pem = read(cert)?;
            if let Some(key) = key {
                pem.push(b'\n');
                pem.extend(read(key)?);
            }
            transport.identity = Some(reqwest::Identity::from_pem(&pem).map_err(|e| {
                bad(
                    cert,
                    format!("is not a PEM certificate with its private key: {e}"),
                )
            })?);
        }
        for (name, value) in &endpoint.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                bad(
                    std::path::Path::new("hosts.toml"),
                    format!("bad header name {name:?}"),
                )
            })?;
            let value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
                bad(
                    std::path::Path::new("hosts.toml"),
                    format!("bad value of header {name}"),
                )
            })?;
            transport.headers.append(name, value);
        }
        Ok(transport)
    }
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

/// What may be reported of a failed answer to a request of `url`: its status, the
/// distribution errors of its body when the origin asked answered (none otherwise: the body of
/// a redirect target is not read), and a description of it.
async fn failed_answer(
    url: &str,
    response: reqwest::Response,
) -> (reqwest::StatusCode, Vec<RegistryError>, String) {
    let status = response.status();
    let asked = reqwest::Url::parse(url)
        .map(|u| guard::origin_of(&u))
        .unwrap_or_default();
    let answered = guard::origin_of(response.url());
    if answered != asked {
        let text = guard::describe_failure(status, Some(&answered), &[]);
        return (status, Vec::new(), text);
    }
    let body = tokio::time::timeout(ERROR_BODY_TIME, read_capped(response, ERROR_BODY_CAP))
        .await
        .ok()
        .and_then(|read| read.ok())
        .unwrap_or_default();
    let errors = guard::registry_errors(&body);
    let text = guard::describe_failure(status, None, &errors);
    (status, errors, text)
}

impl Source {
    /// A source reached at `base` (`http[s]://host[:port]`) with API root `api_root` and its
    /// own guarded client; `host` names it in messages.
    fn new(
        host: String,
        plain_http: bool,
        (base, api_root): (String, String),
        reference: Reference,
        (auth, identity_token): (&RegistryAuth, Option<&str>),
        transport: &Transport,
        progress_timeout: Option<Duration>,
    ) -> Result<Source, reqwest::Error> {
        let reach = Reach::new(&host);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(transport.dial_timeout.unwrap_or(CONNECT_TIMEOUT))
            .user_agent(USER_AGENT)
            .redirect(guard::redirect_policy(reach.clone()))
            .dns_resolver(guard::Resolver(reach.clone()))
            .default_headers(transport.headers.clone())
            .tls_certs_merge(transport.ca.iter().cloned());
        if let Some(timeout) = progress_timeout {
            builder = builder.read_timeout(timeout);
        }
        if let Some(identity) = &transport.identity {
            builder = builder.identity(identity.clone());
        }
        if transport.skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        Ok(Source {
            host,
            http: builder.build()?,
            plain_http,
            base,
            api_root,
            progress_timeout,
            reference,
            auth: auth.clone(),
            identity_token: identity_token.map(str::to_owned),
            reach,
            session: tokio::sync::Mutex::default(),
        })
    }

    /// `<base><api root>/<repository>/<tail>`, with the `ns` parameter of a mirror.
    fn repository_url(&self, tail: &str) -> String {
        format!(
            "{base}{root}/{repository}/{tail}{ns}",
            base = self.base,
            root = self.api_root,
            repository = self.reference.repository(),
            ns = self
                .reference
                .namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default(),
        )
    }

    /// A GET of `url` carrying `authorization`.
    fn get(&self, url: &str, authorization: &Authorization) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match authorization {
            Authorization::Anonymous => request,
            Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
            Authorization::Bearer(token) => request.bearer_auth(token),
        }
    }

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
        let tag = reference
            .digest()
            .or_else(|| reference.tag())
            .unwrap_or(crate::reference::DEFAULT_TAG);
        let url = self.repository_url(&format!("manifests/{tag}"));
        let authorization = self.authorization().await?;
        let response = self
            .get(&url, &authorization)
            .header(reqwest::header::ACCEPT, accepted.join(", "))
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        if !response.status().is_success() {
            return Err(self.failure(&url, response).await);
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
                Capped::Read(e) => {
                    self.other(format!("reading {url}: {}", guard::describe_error(&e)))
                }
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

    /// Opens a stream of the blob `desc` from byte `offset` on where the registry serves
    /// ranges (else from the start); returns where the stream starts. The blob store checks
    /// size and digest.
    pub async fn blob_stream(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<
        (
            u64,
            impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + use<>,
        ),
        ImageError,
    > {
        crate::digest::hex_of(&desc.digest)?;
        let url = self.repository_url(&format!("blobs/{}", desc.digest));
        let authorization = self.authorization().await?;
        let mut request = self.get(&url, &authorization);
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        let status = response.status();
        let start = if offset > 0 && status == reqwest::StatusCode::PARTIAL_CONTENT {
            let range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {offset}-")) {
                return Err(self.other(format!(
                    "GET {url}: asked for bytes from {offset}, answered range {:?}",
                    guard::sanitize(range, 80)
                )));
            }
            offset
        } else if offset > 0 && status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
            drop(response);
            return Box::pin(self.blob_stream(desc, 0)).await;
        } else if status.is_success() {
            0
        } else {
            return Err(self.failure(&url, response).await);
        };
        let host = self.host.clone();
        let progress = self.progress_timeout;
        let stream = futures_util::TryStreamExt::map_err(response.bytes_stream(), move |e| {
            if e.is_timeout()
                && let Some(limit) = progress
            {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{host} sent nothing for {limit:?} (pull_progress_timeout)"),
                )
            } else {
                std::io::Error::other(guard::describe_error(&e))
            }
        });
        Ok((start, stream))
    }

    /// What requests carry: the credentials as given, or a bearer token from the token service
    /// the registry's challenge names (obtained once, renewed before it expires).
    async fn authorization(&self) -> Result<Authorization, ImageError> {
        if let RegistryAuth::Bearer(token) = &self.auth {
            return Ok(Authorization::Bearer(token.clone()));
        }
        let mut session = self.session.lock().await;
        let challenge = match &session.challenge {
            Some(challenge) => challenge.clone(),
            None => {
                let challenge = self.challenge().await?;
                session.challenge = Some(challenge.clone());
                challenge
            }
        };
        let basic = || match &self.auth {
            RegistryAuth::Basic(user, password) => {
                Authorization::Basic(user.clone(), password.clone())
            }
            _ => Authorization::Anonymous,
        };
        match challenge {
            Challenge::Open => Ok(basic()),
            Challenge::Basic if self.identity_token.is_some() => {
                Err(self.unauthenticated(format!(
                    "{}{}/ asks for basic authentication: an identity_token needs a bearer \
                     token service",
                    self.base, self.api_root
                )))
            }
            Challenge::Basic => Ok(basic()),
            Challenge::Bearer { realm, service } => {
                if let Some((token, renew)) = &session.token
                    && Instant::now() < *renew
                {
                    return Ok(Authorization::Bearer(token.clone()));
                }
                let (token, lifetime) = self.fetch_token(&realm, service.as_deref()).await?;
                session.token = Some((token.clone(), Instant::now() + lifetime));
                Ok(Authorization::Bearer(token))
            }
        }
    }

    /// Asks `GET /v2/` how to authenticate.
    async fn challenge(&self) -> Result<Challenge, ImageError> {
        let url = format!("{}{}/", self.base, self.api_root);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unreachable(&url, &e))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(Challenge::Open);
        }
        let bearer = response
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_bearer_challenge);
        let Some(params) = bearer else {
            return Ok(Challenge::Basic);
        };
        let realm = params.get("realm").ok_or_else(|| {
            self.unauthenticated(format!(
                "{url} answers 401 with a bearer challenge that names no token service"
            ))
        })?;
        Ok(Challenge::Bearer {
            realm: realm.clone(),
            service: params.get("service").cloned(),
        })
    }

    /// Gets a bearer token with pull scope on this repository from the token service at
    /// `realm`: for the identity token (OAuth2 `refresh_token` grant), else for the basic
    /// credentials or anonymously. Returns the token and how long to use it.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
    ) -> Result<(String, Duration), ImageError> {
        let mut url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                self.other(format!(
                    "the registry names an unusable token service {:?}",
                    guard::sanitize(realm, 200)
                ))
            })?;
        self.reach.check_url(&url).map_err(|local| {
            self.other(
                Refused::Realm {
                    target: local.target,
                }
                .to_string(),
            )
        })?;
        let shown = format!(
            "{}{}",
            guard::origin_of(&url),
            guard::sanitize(url.path(), 100)
        );
        let scope = format!("repository:{}:pull", self.reference.repository());
        let (request, what) = match &self.identity_token {
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "crius"),
                    ("scope", scope.as_str()),
                ];
                if let Some(service) = service {
                    form.push(("service", service));
                }
                let body: Vec<String> = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", form_encode(v)))
                    .collect();
                let request = self
                    .http
                    .post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.join("&"));
                (request, "the identity token")
            }
            None => {
                {
                    let mut query = url.query_pairs_mut();
                    query.append_pair("scope", &scope);
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                }
                let request = self.http.get(url.clone());
                match &self.auth {
                    RegistryAuth::Basic(user, password) => {
                        (request.basic_auth(user, Some(password)), "the credentials")
                    }
                    _ => (request, "anonymous access"),
                }
            }
        };
        let response = request.send().await.map_err(|e| {
            self.other(format!(
                "token service {shown}: {}",
                guard::describe_error(&e)
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            let (_, _, text) = failed_answer(url.as_str(), response).await;
            let message = format!("the token service {shown} refused {what}: {text}");
            return Err(if status.is_client_error() {
                self.unauthenticated(message)
            } else {
                self.other(message)
            });
        }
        let body = read_capped(response, TOKEN_ANSWER_CAP)
            .await
            .map_err(|e| match e {
                Capped::Over => self.other(format!(
                    "the answer of the token service {shown} is over {TOKEN_ANSWER_CAP} bytes"
                )),
                Capped::Read(e) => self.other(format!(
                    "reading the answer of the token service {shown}: {}",
                    guard::describe_error(&e)
                )),
            })?;
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
            self.other(format!(
                "the answer of the token service {shown} is not JSON"
            ))
        })?;
        let token = doc
            .get("access_token")
            .or_else(|| doc.get("token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.other(format!(
                    "the answer of the token service {shown} holds no token"
                ))
            })?;
        let expires_in = doc
            .get("expires_in")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(DEFAULT_TOKEN_SECS)
            .min(MAX_TOKEN_SECS);
        Ok((token.to_owned(), Duration::from_secs(expires_in * 3 / 4)))
    }

    /// The error of a failed answer to `GET url`: status line and distribution error codes.
    async fn failure(&self, url: &str, response: reqwest::Response) -> ImageError {
        let (status, errors, text) = failed_answer(url, response).await;
        let reference = self.reference.whole();
        let registry = self.host.clone();
        let message = format!("GET {url}: {text}");
        match guard::classify(status.as_u16(), &errors) {
            FailureKind::Unauthenticated => ImageError::Unauthenticated {
                reference,
                registry,
                message,
            },
            FailureKind::Denied => ImageError::PermissionDenied {
                reference,
                registry,
                message,
            },
            FailureKind::NotFound => ImageError::RegistryNotFound {
                reference,
                registry,
                message,
            },
            FailureKind::Other => ImageError::Registry {
                reference,
                registry,
                message,
            },
        }
    }

    /// The error of a `GET url` that got no answer (or a refused redirect).
    fn unreachable(&self, url: &str, e: &reqwest::Error) -> ImageError {
        if e.is_timeout()
            && let Some(limit) = self.progress_timeout
        {
            return self.other(format!(
                "GET {url}: no answer for {limit:?} (pull_progress_timeout)"
            ));
        }
        let text = guard::describe_error(e);
        let hint = if !self.plain_http && text.contains("certificate") {
            " (a registry with a private CA or client certificates is configured in \
             registry_config_dir: <host>/hosts.toml `ca`, `client`, as in containerd's certs.d)"
        } else {
            ""
        };
        self.other(format!("GET {url}: {text}{hint}"))
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
        assert!(matches!(
            bad.to_auth(),
            Err(ImageError::InvalidRequest(
                InvalidCredentials::NotBase64 { .. }
            ))
        ));
        let no_colon = Credentials {
            auth: "dXNlcg==".into(),
            ..Credentials::default()
        };
        let err = no_colon.to_auth().expect_err("no password");
        assert!(matches!(
            err,
            ImageError::InvalidRequest(InvalidCredentials::NoUserPassword)
        ));
        assert_eq!(err.to_string(), "auth.auth must encode user:password");
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
            ..RegistryOptions::default()
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
            ..RegistryOptions::default()
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

    #[test]
    fn hosts_files_give_mirrors_by_capability_then_the_server() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host_dir = dir.path().join("registry.example_5000_");
        std::fs::create_dir(&host_dir).expect("mkdir");
        std::fs::write(
            host_dir.join("hosts.toml"),
            r#"server = "https://upstream.example:5000"
[host."http://pull-only.example/cache"]
  capabilities = ["pull"]
[host."https://full.example"]
  capabilities = ["pull", "resolve"]
"#,
        )
        .expect("write");
        let options = RegistryOptions {
            hosts_dir: Some(dir.path().to_owned()),
            ..RegistryOptions::default()
        };
        let urls = |reference: &str| {
            let name = ImageName::parse(reference).expect("name");
            sources(&options, &name, &RegistryAuth::Anonymous, None)
                .expect("sources")
                .iter()
                .map(|s| s.repository_url("manifests/x"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            urls("registry.example:5000/app:1"),
            [
                "https://full.example/v2/app/manifests/x?ns=registry.example:5000",
                "https://upstream.example:5000/v2/app/manifests/x",
            ]
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            urls(&format!("registry.example:5000/app@{digest}"))[0],
            "http://pull-only.example/cache/v2/app/manifests/x?ns=registry.example:5000"
        );
        std::fs::write(
            host_dir.join("hosts.toml"),
            "capabilities = [\"pull\"]\nca = \"missing.pem\"\n",
        )
        .expect("write");
        let name = ImageName::parse("registry.example:5000/app:1").expect("name");
        let err = sources(&options, &name, &RegistryAuth::Anonymous, None).expect_err("no source");
        assert!(err.to_string().contains("resolve"), "{err}");
        let name = ImageName::parse(&format!("registry.example:5000/app@{digest}")).expect("name");
        let err = sources(&options, &name, &RegistryAuth::Anonymous, None).expect_err("no ca");
        assert!(matches!(err, ImageError::HostConfig { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
