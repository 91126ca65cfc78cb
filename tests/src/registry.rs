//! A real OCI registry on loopback for tests, and a minimal plain-HTTP client for it.
//!
//! [`Registry`] runs Debian's `docker-registry` (distribution 2.8, package `docker-registry`,
//! binary `/usr/bin/docker-registry`; `apt-get install -y docker-registry`) on a free
//! `127.0.0.1` port, with filesystem storage in a temporary directory. Tests that use it need
//! that binary; they fail with a clear error when it is missing.
//!
//! [`RegistryClient`] speaks the Docker registry HTTP API v2 over plain HTTP: enough to push
//! blobs and manifests with exact bytes and to read them back.

use std::future::Future;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LOCATION};

/// Default path of the registry binary; the `CRIUS_TEST_REGISTRY_BIN` environment variable
/// overrides it.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long [`Registry::start`] waits for `GET /v2/` to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Media types a manifest GET accepts: OCI and Docker manifests and indexes.
pub const MANIFEST_ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// A running `docker-registry` on `127.0.0.1`, killed, reaped and deleted (storage included)
/// when dropped, also when a test panics.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    storage: PathBuf,
    port: u16,
    credentials: Option<(String, String)>,
}

/// The TLS files of a registry serving HTTPS (PEM).
#[derive(Debug, Clone)]
pub struct TlsServer {
    /// The server certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl Registry {
    /// Starts an open registry (no authentication) on a free loopback port.
    pub fn start() -> Result<Registry> {
        Self::start_inner(None, None, None)
    }

    /// Starts a registry that requires HTTP basic authentication as `user` / `password`
    /// (htpasswd with a bcrypt hash; distribution 2.8 accepts it over plain HTTP).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Result<Registry> {
        Self::start_inner(Some((user.to_owned(), password.to_owned())), None, None)
    }

    /// Starts a registry serving HTTPS with `tls`, over the storage of another registry (to
    /// push to over plain HTTP) that must outlive it.
    pub fn start_tls(storage: &Path, tls: &TlsServer) -> Result<Registry> {
        Self::start_inner(None, Some(storage), Some(tls))
    }

    fn start_inner(
        credentials: Option<(String, String)>,
        shared_storage: Option<&Path>,
        tls: Option<&TlsServer>,
    ) -> Result<Registry> {
        let bin = std::env::var("CRIUS_TEST_REGISTRY_BIN").unwrap_or_else(|_| REGISTRY_BIN.into());
        if !Path::new(&bin).exists() {
            bail!("registry binary {bin} not found: apt-get install -y docker-registry");
        }
        let dir = tempfile::Builder::new()
            .prefix("crius-registry-")
            .tempdir()
            .context("creating the registry tempdir")?;
        let storage = match shared_storage {
            Some(storage) => storage.to_owned(),
            None => {
                let storage = dir.path().join("storage");
                std::fs::create_dir(&storage).context("creating the registry storage dir")?;
                storage
            }
        };
        let tls_config = match tls {
            None => String::new(),
            Some(tls) => {
                let mut text = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    tls.cert.display(),
                    tls.key.display()
                );
                if let Some(ca) = &tls.client_ca {
                    text.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
                }
                text
            }
        };
        let auth = match &credentials {
            None => String::new(),
            Some((user, password)) => {
                let hash = bcrypt::hash(password, 5).context("bcrypt hash")?;
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n"))
                    .context("writing htpasswd")?;
                format!(
                    "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
        };
        // The port is picked by binding :0 and released before the registry binds it, so
        // another process may take it in between: retry a few times on an early exit.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\n\
                     log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n  secret: crius-test-secret\n\
                     {tls_config}{auth}",
                    storage.display()
                ),
            )
            .context("writing the registry config")?;
            let log = std::fs::File::create(dir.path().join("registry.log"))
                .context("creating the registry log")?;
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("dup log fd")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawning {bin}"))?;
            match wait_ready(&mut child, port, credentials.is_some(), tls.is_some()) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        dir,
                        storage,
                        port,
                        credentials,
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(dir.path().join("registry.log"))
                        .unwrap_or_default();
                    last_err = Some(e.context(format!("registry log:\n{log}")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// The registry's address as `127.0.0.1:PORT`, the host part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The root of the registry's filesystem storage (`docker/registry/v2/...` below it).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Where the registry stores the blob with `digest` (`sha256:...`), so a test can tamper
    /// with it.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        let prefix = hex.get(..2).unwrap_or(hex);
        self.storage
            .join("docker/registry/v2/blobs")
            .join(algo)
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// Stores `body` as the manifest `repo:tag` directly in the registry's storage (the
    /// registry refuses to accept manifests over 4 MiB through its API, but serves whatever
    /// its storage holds): pushes it as a blob, then writes the tag and revision links.
    /// Returns the manifest's digest.
    pub async fn plant_manifest(&self, repo: &str, tag: &str, body: &[u8]) -> Result<String> {
        let digest = crate::image::sha256_digest(body);
        self.client()?.push_blob(repo, &digest, body).await?;
        let hex = digest.trim_start_matches("sha256:");
        let manifests = self
            .storage
            .join("docker/registry/v2/repositories")
            .join(repo)
            .join("_manifests");
        for dir in [
            manifests.join("revisions/sha256").join(hex),
            manifests.join("tags").join(tag).join("current"),
            manifests
                .join("tags")
                .join(tag)
                .join("index/sha256")
                .join(hex),
        ] {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("link"), &digest)?;
        }
        Ok(digest)
    }

    /// The `(user, password)` of a registry started with [`Registry::start_with_htpasswd`].
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// A client for this registry, authenticated when the registry requires it.
    pub fn client(&self) -> Result<RegistryClient> {
        let client = RegistryClient::new(&self.host())?;
        Ok(match self.credentials() {
            Some((user, password)) => client.with_basic_auth(user, password),
            None => client,
        })
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the registry has logged so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /v2/` until it answers 200 (or 401 when authentication is on, or 400 when it
/// serves HTTPS: the answer to plain HTTP on a TLS port).
fn wait_ready(child: &mut Child, port: u16, auth: bool, tls: bool) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("polling the registry")? {
            bail!("registry exited early: {status}");
        }
        if let Ok(code) = http_get_status(port, "/v2/") {
            match (code, auth) {
                (200, _) | (401, true) => return Ok(()),
                (400, _) if tls => return Ok(()),
                _ => bail!("GET /v2/ answered {code}"),
            }
        }
        if Instant::now() > deadline {
            bail!("registry did not answer GET /v2/ within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns; nothing holds it).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A blocking `GET path` on 127.0.0.1:port that returns the HTTP status code. Plain std so it
/// works inside and outside an async runtime.
fn http_get_status(port: u16, path: &str) -> Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .context("empty HTTP response")?
        .parse()
        .context("bad HTTP status line")?;
    Ok(code)
}

/// Runs `fut` to completion on a fresh single-threaded tokio runtime in a new thread, so that
/// async helpers can be called from a plain `#[test]` and from inside another runtime alike.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A manifest as the registry served it.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    /// The `Content-Type` the registry answered with.
    pub media_type: String,
    /// The `Docker-Content-Digest` header, if any.
    pub digest: Option<String>,
    /// The manifest bytes exactly as served.
    pub body: Vec<u8>,
}

/// A minimal async client of the Docker registry HTTP API v2 over plain HTTP, with optional
/// basic authentication. Built on reqwest without TLS.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    host: String,
    auth: Option<(String, String)>,
    http: reqwest::Client,
}

impl RegistryClient {
    /// A client for the registry at `host` (`127.0.0.1:PORT`), anonymous.
    pub fn new(host: &str) -> Result<RegistryClient> {
        // A workspace build unifies reqwest's features with the daemon's, whose TLS stack
        // (rustls without a built-in provider) needs a provider before any client is built.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(RegistryClient {
            host: host.to_owned(),
            auth: None,
            http,
        })
    }

    /// The same client, sending HTTP basic credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> RegistryClient {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The registry's `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    /// `GET /v2/` and return the status code (200, or 401 without valid credentials).
    pub async fn ping(&self) -> Result<u16> {
        let res = self
            .request(reqwest::Method::GET, &self.url("/v2/"))
            .send()
            .await?;
        Ok(res.status().as_u16())
    }

    /// Whether the blob `digest` exists in `repo` (`HEAD /v2/<repo>/blobs/<digest>`).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let res = self.request(reqwest::Method::HEAD, &url).send().await?;
        match res.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => bail!("HEAD {url}: {s}"),
        }
    }

    /// Uploads `data` as blob `digest` into `repo` (monolithic: POST an upload, then PUT the
    /// bytes with `?digest=`). Skips the upload when the blob already exists.
    pub async fn push_blob(&self, repo: &str, digest: &str, data: &[u8]) -> Result<()> {
        if self.blob_exists(repo, digest).await? {
            return Ok(());
        }
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let res = self.request(reqwest::Method::POST, &url).send().await?;
        if res.status() != StatusCode::ACCEPTED {
            bail!("POST {url}: {}: {}", res.status(), res.text().await?);
        }
        let location = self.location(res.headers())?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={digest}");
        let res = self
            .request(reqwest::Method::PUT, &put_url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await?;
        if res.status() != StatusCode::CREATED {
            bail!(
                "PUT blob {digest} to {repo}: {}: {}",
                res.status(),
                res.text().await?
            );
        }
        Ok(())
    }

    fn location(&self, headers: &HeaderMap) -> Result<String> {
        let location = headers
            .get(LOCATION)
            .context("upload response without Location")?
            .to_str()
            .context("non-ASCII Location")?;
        Ok(
            if location.starts_with("http://") || location.starts_with("https://") {
                location.to_owned()
            } else {
                self.url(location)
            },
        )
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with exactly `body` as `media_type`; returns the
    /// digest the registry reports (`Docker-Content-Digest`).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let res = self
            .request(reqwest::Method::PUT, &url)
            .header(CONTENT_TYPE, media_type)
            .body(body.to_vec())
            .send()
            .await?;
        if res.status() != StatusCode::CREATED {
            bail!("PUT {url}: {}: {}", res.status(), res.text().await?);
        }
        let digest = res
            .headers()
            .get("docker-content-digest")
            .context("manifest PUT without Docker-Content-Digest")?
            .to_str()?
            .to_owned();
        Ok(digest)
    }

    /// `GET /v2/<repo>/manifests/<reference>` (tag or digest), accepting OCI and Docker
    /// manifests and indexes.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let res = self
            .request(reqwest::Method::GET, &url)
            .header(ACCEPT, MANIFEST_ACCEPT.join(", "))
            .send()
            .await?;
        if res.status() != StatusCode::OK {
            bail!("GET {url}: {}: {}", res.status(), res.text().await?);
        }
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let media_type = header(CONTENT_TYPE.as_str()).unwrap_or_default();
        let digest = header("docker-content-digest");
        let body = res.bytes().await?.to_vec();
        Ok(FetchedManifest {
            media_type,
            digest,
            body,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`: the blob's bytes as served (not verified).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let res = self.request(reqwest::Method::GET, &url).send().await?;
        if res.status() != StatusCode::OK {
            bail!("GET {url}: {}", res.status());
        }
        Ok(res.bytes().await?.to_vec())
    }
}

/// A hostile registry on a free loopback port that answers every manifest request with one
/// fixed body (a real registry refuses to store or serve manifests over 4 MiB). `/v2/`
/// answers 200 without authentication; anything else is 404.
#[derive(Debug)]
pub struct FixedManifestServer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FixedManifestServer {
    /// Starts serving `body` as an OCI manifest, with a `Content-Length` header when
    /// `content_length`, else chunked (the size is only known by reading).
    pub fn start(body: Vec<u8>, content_length: bool) -> Result<FixedManifestServer> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fixed server")?;
        let addr = listener.local_addr()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    // Errors are the client hanging up early, which is the point.
                    let _ = serve_fixed(conn, &body, content_length);
                }
            }
        });
        Ok(FixedManifestServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for FixedManifestServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_fixed(mut conn: TcpStream, body: &[u8], content_length: bool) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("");
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n")
    };
    if path == "/v2/" || path == "/v2" {
        conn.write_all(head("200 OK", "Content-Length: 2\r\n").as_bytes())?;
        return conn.write_all(b"{}");
    }
    if !path.contains("/manifests/") {
        return conn.write_all(head("404 Not Found", "Content-Length: 0\r\n").as_bytes());
    }
    let digest = crate::image::sha256_digest(body);
    let mut extra = format!(
        "Content-Type: {}\r\nDocker-Content-Digest: {digest}\r\n",
        crate::image::MEDIA_TYPE_MANIFEST
    );
    if content_length {
        extra.push_str(&format!("Content-Length: {}\r\n", body.len()));
        conn.write_all(head("200 OK", &extra).as_bytes())?;
        return conn.write_all(body);
    }
    extra.push_str("Transfer-Encoding: chunked\r\n");
    conn.write_all(head("200 OK", &extra).as_bytes())?;
    for chunk in body.chunks(64 * 1024) {
        conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        conn.write_all(chunk)?;
        conn.write_all(b"\r\n")?;
    }
    conn.write_all(b"0\r\n\r\n")
}

/// A read-only registry on a free loopback port serving one image from memory, whose one
/// blob can be held back: the answer's headers and first half go out, the rest only after
/// [`GatedRegistry::open_gate`]. Lets a test keep a pull in the middle of a download for as
/// long as it needs, without timing anything.
#[derive(Debug)]
pub struct GatedRegistry {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    gate: std::sync::Arc<(std::sync::Mutex<GateState>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the held-back download is.
#[derive(Debug, Default)]
struct GateState {
    /// The gated blob was asked for.
    reached: bool,
    /// The rest may go.
    open: bool,
    /// The `Range` header (empty: none) of every GET of the gated blob, in order.
    requests: Vec<String>,
    /// Held-back downloads whose client closed the connection while held.
    abandoned: usize,
}

impl GatedRegistry {
    /// Serves `image` as `repo:tag`, holding back the blob `gated` (a digest).
    pub fn start(
        image: &crate::image::Image,
        repo: &str,
        tag: &str,
        gated: &str,
    ) -> Result<GatedRegistry> {
        GatedRegistry::start_inner(&[(image, repo, tag)], Some(gated), None)
    }

    /// Serves each `(image, repo, tag)`, holding back every layer blob of every image.
    pub fn start_all_gated(images: &[(&crate::image::Image, &str, &str)]) -> Result<GatedRegistry> {
        GatedRegistry::start_inner(images, None, None)
    }

    /// Serves `image` as `repo:tag` (nothing held back) to clients with a bearer token only:
    /// `/v2/` and every other request answer 401 with a challenge naming this server's
    /// `/token`, which trades the OAuth2 refresh token `refresh_token` (form `grant_type=
    /// refresh_token`) for an access token.
    pub fn start_with_token_service(
        image: &crate::image::Image,
        repo: &str,
        tag: &str,
        refresh_token: &str,
    ) -> Result<GatedRegistry> {
        GatedRegistry::start_inner(
            &[(image, repo, tag)],
            Some(""),
            Some(refresh_token.to_owned()),
        )
    }

    /// Serves `images`; holds back the blob `gated` (a digest) of each, or every layer blob
    /// when `gated` is `None`.
    fn start_inner(
        images: &[(&crate::image::Image, &str, &str)],
        gated: Option<&str>,
        refresh_token: Option<String>,
    ) -> Result<GatedRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the gated registry")?;
        let addr = listener.local_addr()?;
        let mut routes: std::collections::HashMap<String, (String, Vec<u8>)> =
            std::collections::HashMap::new();
        let mut gated_paths = std::collections::HashSet::new();
        for (image, repo, tag) in images {
            add_routes(&mut routes, image, repo, tag);
            match gated {
                Some(digest) => {
                    gated_paths.insert(format!("/v2/{repo}/blobs/{digest}"));
                }
                None => gated_paths.extend(
                    image
                        .layers
                        .iter()
                        .map(|l| format!("/v2/{repo}/blobs/{}", l.digest())),
                ),
            }
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = std::sync::Arc::new((
            std::sync::Mutex::new(GateState::default()),
            std::sync::Condvar::new(),
        ));
        let (stopping, gating) = (stop.clone(), gate.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let routes = routes.clone();
                let gated_paths = gated_paths.clone();
                let gating = gating.clone();
                let refresh_token = refresh_token.clone();
                std::thread::spawn(move || {
                    let _ = serve_route(
                        conn,
                        &routes,
                        &gated_paths,
                        &gating,
                        refresh_token.as_deref(),
                    );
                });
            }
        });
        Ok(GatedRegistry {
            addr,
            stop,
            gate,
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Waits until a client has started downloading the gated blob.
    pub fn wait_reached(&self) {
        let (state, changed) = &*self.gate;
        let mut guard = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !guard.reached {
            guard = changed
                .wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The `Range` header (empty: none) of every GET of the gated blob so far.
    pub fn gated_requests(&self) -> Vec<String> {
        self.gate
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .clone()
    }

    /// How many held-back downloads their client abandoned (closed while held).
    pub fn abandoned(&self) -> usize {
        self.gate
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .abandoned
    }

    /// Lets the gated download finish.
    pub fn open_gate(&self) {
        let (state, changed) = &*self.gate;
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .open = true;
        changed.notify_all();
    }
}

/// Adds the manifest (by tag and digest), config and layer blobs of `image` as `repo:tag`.
fn add_routes(
    routes: &mut std::collections::HashMap<String, (String, Vec<u8>)>,
    image: &crate::image::Image,
    repo: &str,
    tag: &str,
) {
    let manifest = image.manifest_json();
    let manifest_type = crate::image::MEDIA_TYPE_MANIFEST.to_owned();
    routes.insert(
        format!("/v2/{repo}/manifests/{tag}"),
        (manifest_type.clone(), manifest.clone()),
    );
    routes.insert(
        format!(
            "/v2/{repo}/manifests/{}",
            crate::image::sha256_digest(&manifest)
        ),
        (manifest_type, manifest),
    );
    let config = image.config_json();
    routes.insert(
        format!("/v2/{repo}/blobs/{}", crate::image::sha256_digest(&config)),
        ("application/octet-stream".into(), config),
    );
    for layer in &image.layers {
        routes.insert(
            format!("/v2/{repo}/blobs/{}", layer.digest()),
            ("application/octet-stream".into(), layer.blob().to_vec()),
        );
    }
}

impl Drop for GatedRegistry {
    fn drop(&mut self) {
        self.open_gate();
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_route(
    mut conn: TcpStream,
    routes: &std::collections::HashMap<String, (String, Vec<u8>)>,
    gated_paths: &std::collections::HashSet<String>,
    gate: &(std::sync::Mutex<GateState>, std::sync::Condvar),
    refresh_token: Option<&str>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 65536 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request);
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if let Some(refresh) = refresh_token {
        const ACCESS: &str = "crius-test-access-token";
        if path == "/token" {
            let header_end = request
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(request.len(), |i| i + 4);
            let length: usize = text
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = request[header_end..].to_vec();
            while body.len() < length {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            let form = String::from_utf8_lossy(&body);
            let fields: Vec<&str> = form.split('&').collect();
            let granted = method == "POST"
                && fields.contains(&"grant_type=refresh_token")
                && fields.contains(&format!("refresh_token={refresh}").as_str());
            let answer = if granted {
                let json = format!("{{\"access_token\":\"{ACCESS}\",\"expires_in\":300}}");
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n{json}",
                    json.len()
                )
            } else {
                "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
                    .to_owned()
            };
            return conn.write_all(answer.as_bytes());
        }
        let authorized = text.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("authorization") && v.trim() == format!("Bearer {ACCESS}")
            })
        });
        if !authorized {
            let addr = conn.local_addr()?;
            let answer = format!(
                "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\
                 WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"crius-test\"\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            return conn.write_all(answer.as_bytes());
        }
    }
    if path == "/v2/" || path == "/v2" {
        conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")?;
        return Ok(());
    }
    let Some((content_type, body)) = routes.get(path) else {
        conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )?;
        return Ok(());
    };
    let range = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("range").then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let (gate_lock, changed) = gate;
    if gated_paths.contains(path) && method == "GET" {
        gate_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .requests
            .push(range.clone());
    }
    // `Range: bytes=N-` is served as 206 from byte N, never held back.
    let from = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < body.len());
    if let Some(from) = from {
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
             Content-Range: bytes {from}-{}/{}\r\nContent-Length: {}\r\n\r\n",
            body.len() - 1,
            body.len(),
            body.len() - from
        );
        conn.write_all(head.as_bytes())?;
        return conn.write_all(&body[from..]);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: {content_type}\r\n\
         Docker-Content-Digest: {}\r\nContent-Length: {}\r\n\r\n",
        crate::image::sha256_digest(body),
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    if !gated_paths.contains(path) {
        return conn.write_all(body);
    }
    let half = body.len() / 2;
    conn.write_all(&body[..half])?;
    conn.flush()?;
    let mut guard = gate_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.reached = true;
    changed.notify_all();
    conn.set_nonblocking(true)?;
    while !guard.open {
        guard = changed
            .wait_timeout(guard, Duration::from_millis(100))
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
        // A client that gave up closes the connection: reading finds its end.
        let mut probe = [0u8; 1];
        match conn.read(&mut probe) {
            Ok(0) => {
                guard.abandoned += 1;
                return Ok(());
            }
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => {
                guard.abandoned += 1;
                return Ok(());
            }
            _ => {}
        }
    }
    drop(guard);
    conn.set_nonblocking(false)?;
    conn.write_all(&body[half..])
}
