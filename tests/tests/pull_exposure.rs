//! What a hostile registry can make a pull reach and report. A registry that is not on
//! loopback must not get criusd to talk to services of the node itself (redirects of manifest
//! and blob requests, a bearer token service on loopback), and no PullImage error may carry raw
//! response bodies: only status lines and the codes of a distribution error document.
//!
//! The hostile registry listens on 198.51.100.1 (TEST-NET-2) on an interface this test adds
//! and removes (`crt-pullx`, dummy or an empty bridge), so it is not a loopback registry; the "secret" service it
//! points at listens on 127.0.0.1. Needs root.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cri_api::v1::{ImageSpec, PullImageRequest};
use crius_tests::harness::{Criusd, Options};
use crius_tests::image::{self, Compression, Entry, Image, Layer};

/// The interface (dummy, else an empty bridge) holding the hostile registry's address.
const IFACE: &str = "crt-pullx";
/// The hostile registry's address: TEST-NET-2, neither loopback nor link-local.
const ADDR: &str = "198.51.100.1";
/// What the service on loopback answers: must never reach an error.
const SECRET: &str = "SECRET-7f3a-loopback-service-body";
/// A plain (HTML) error body of the registry itself: must not be echoed.
const HTML_MARKER: &str = "REGISTRY-HTML-9c41-body";
/// The `detail` of a distribution error: must not be echoed.
const DETAIL_MARKER: &str = "DETAIL-5e02-structured-detail";
/// The body of another (non-local) endpoint a blob is redirected to: must not be echoed.
const OTHER_MARKER: &str = "OTHER-d417-endpoint-body";
/// The repository of every image of the hostile registry.
const REPO: &str = "evil";

/// Runs `ip ARGS` (output discarded), returning whether it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The interface [`IFACE`] with [`ADDR`], deleted on drop (also when the test panics).
struct DummyAddress;

impl DummyAddress {
    fn add() -> DummyAddress {
        // A run killed before its clean-up left one behind.
        if std::path::Path::new(&format!("/sys/class/net/{IFACE}")).exists() {
            ip(&["link", "del", IFACE]);
        }
        // A dummy interface where the kernel has the module; an empty bridge does as well.
        assert!(
            ip(&["link", "add", IFACE, "type", "dummy"])
                || ip(&["link", "add", IFACE, "type", "bridge"]),
            "ip link add {IFACE}"
        );
        let guard = DummyAddress;
        assert!(
            ip(&["addr", "add", &format!("{ADDR}/32"), "dev", IFACE]),
            "ip addr add"
        );
        assert!(ip(&["link", "set", IFACE, "up"]), "ip link set up");
        guard
    }
}

impl Drop for DummyAddress {
    fn drop(&mut self) {
        if !ip(&["link", "del", IFACE]) {
            eprintln!("cannot delete {IFACE}");
        }
    }
}

/// A canned HTTP answer.
#[derive(Clone, Debug)]
struct Answer {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn new(status: &'static str, content_type: &str, body: impl Into<Vec<u8>>) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
        }
    }

    fn redirect(status: &'static str, location: String) -> Answer {
        Answer {
            status,
            headers: vec![("Location", location)],
            body: Vec::new(),
        }
    }

    fn with_header(mut self, name: &'static str, value: String) -> Answer {
        self.headers.push((name, value));
        self
    }
}

type Routes = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// A tiny HTTP/1.1 server answering each request path (query dropped) from its routes; counts
/// the requests it gets. Stopped on drop.
struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(bind: &str, routes: Routes) -> Server {
        let listener = TcpListener::bind((bind, 0)).expect("binding a test server");
        let addr = listener.local_addr().expect("local address");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counting, stopping) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                counting.fetch_add(1, Ordering::SeqCst);
                let routes = routes.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &routes);
                });
            }
        });
        Server {
            addr,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut conn: TcpStream, routes: &Routes) -> std::io::Result<()> {
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
    let mut words = text.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    let answer = routes(&path);
    let mut head = format!("HTTP/1.1 {}\r\nConnection: close\r\n", answer.status);
    for (name, value) in &answer.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", answer.body.len()));
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        conn.write_all(&answer.body)?;
    }
    Ok(())
}

/// How the hostile registry answers the blobs of one image.
#[derive(Clone, Copy, Debug)]
enum BlobTrick {
    /// 302 to the secret service by its IPv4 address.
    Loopback,
    /// 302 to the secret service by the name `localhost`.
    LocalhostName,
    /// 307 to the secret service by its IPv4-mapped IPv6 address.
    MappedLoopback,
    /// 302 to another endpoint (not local), which answers 403 with a body.
    OtherEndpoint,
    /// 403 with an HTML body from the registry itself.
    Html,
    /// 401 with a distribution error document (`UNAUTHORIZED`, with a detail).
    Coded,
}

const TRICKS: [(&str, BlobTrick); 6] = [
    ("blob-loopback", BlobTrick::Loopback),
    ("blob-localhost", BlobTrick::LocalhostName),
    ("blob-mapped", BlobTrick::MappedLoopback),
    ("blob-other", BlobTrick::OtherEndpoint),
    ("blob-html", BlobTrick::Html),
    ("blob-coded", BlobTrick::Coded),
];

/// A distinct one-layer image per tag.
fn image_for(tag: &str) -> Image {
    Image::new(vec![
        Layer::new(&[Entry::file("tag", tag, 0o644)], Compression::Gzip).expect("layer"),
    ])
    .with_label("crius.test/tag", tag)
}

fn html_page() -> String {
    format!("<html><body><h1>403</h1><p>{HTML_MARKER}</p></body></html>")
}

fn distribution_error(code: &str, message: &str) -> String {
    serde_json::json!({
        "errors": [{"code": code, "message": message, "detail": {"note": DETAIL_MARKER}}]
    })
    .to_string()
}

/// The routes of the hostile registry; `secret` and `other` are the addresses it points at.
fn hostile_routes(secret: SocketAddr, other: SocketAddr) -> Routes {
    let mut manifests = std::collections::HashMap::new();
    let mut blobs = std::collections::HashMap::new();
    for (tag, trick) in TRICKS {
        let image = image_for(tag);
        manifests.insert(tag.to_owned(), image.manifest_json());
        blobs.insert(image.config_digest(), trick);
        for layer in &image.layers {
            blobs.insert(layer.digest().to_owned(), trick);
        }
    }
    let port = secret.port();
    Arc::new(move |path: &str| {
        if path == "/v2/" || path == "/v2" {
            return Answer::new("200 OK", "application/json", "{}");
        }
        let prefix = format!("/v2/{REPO}/");
        let Some(rest) = path.strip_prefix(&prefix) else {
            return Answer::new("404 Not Found", "text/plain", "");
        };
        if let Some(tag) = rest.strip_prefix("manifests/") {
            return match tag {
                "redirect" => Answer::redirect(
                    "307 Temporary Redirect",
                    format!("http://127.0.0.1:{port}/manifest"),
                ),
                "html" => Answer::new("403 Forbidden", "text/html", html_page()),
                "missing" => Answer::new(
                    "404 Not Found",
                    "application/json",
                    distribution_error("MANIFEST_UNKNOWN", "manifest unknown"),
                ),
                tag => match manifests.get(tag) {
                    Some(body) => Answer::new("200 OK", image::MEDIA_TYPE_MANIFEST, body.clone())
                        .with_header("Docker-Content-Digest", image::sha256_digest(body)),
                    None => Answer::new("404 Not Found", "text/plain", ""),
                },
            };
        }
        let Some(digest) = rest.strip_prefix("blobs/") else {
            return Answer::new("404 Not Found", "text/plain", "");
        };
        match blobs.get(digest) {
            Some(BlobTrick::Loopback) => {
                Answer::redirect("302 Found", format!("http://127.0.0.1:{port}/blob"))
            }
            Some(BlobTrick::LocalhostName) => {
                Answer::redirect("302 Found", format!("http://localhost:{port}/blob"))
            }
            Some(BlobTrick::MappedLoopback) => Answer::redirect(
                "307 Temporary Redirect",
                format!("http://[::ffff:127.0.0.1]:{port}/blob"),
            ),
            Some(BlobTrick::OtherEndpoint) => {
                Answer::redirect("302 Found", format!("http://{other}/blob"))
            }
            Some(BlobTrick::Html) => Answer::new("403 Forbidden", "text/html", html_page()),
            Some(BlobTrick::Coded) => Answer::new(
                "401 Unauthorized",
                "application/json",
                distribution_error("UNAUTHORIZED", "authentication required"),
            ),
            None => Answer::new("404 Not Found", "text/plain", ""),
        }
    })
}

/// What one pull must give.
struct Case {
    name: &'static str,
    registry: String,
    tag: &'static str,
    code: Option<tonic::Code>,
    contains: &'static [&'static str],
}

#[tokio::test]
async fn hostile_registries_reach_no_local_service_and_echo_no_bodies() {
    let _dummy = DummyAddress::add();
    let secret = Server::start(
        "127.0.0.1",
        Arc::new(|_path: &str| {
            Answer::new(
                "403 Forbidden",
                "text/plain",
                format!("internal service; token={SECRET}"),
            )
        }),
    );
    let other = Server::start(
        ADDR,
        Arc::new(|_path: &str| {
            Answer::new(
                "403 Forbidden",
                "application/json",
                serde_json::json!({"errors": [{"code": "DENIED", "message": OTHER_MARKER}]})
                    .to_string(),
            )
        }),
    );
    let registry = Server::start(ADDR, hostile_routes(secret.addr, other.addr));
    let secret_port = secret.addr.port();
    let token_registry = Server::start(
        ADDR,
        Arc::new(move |_path: &str| {
            Answer::new("401 Unauthorized", "application/json", "{}").with_header(
                "WWW-Authenticate",
                format!("Bearer realm=\"http://127.0.0.1:{secret_port}/token\",service=\"evil\""),
            )
        }),
    );
    let mut daemon = Criusd::start_with(Options {
        config: format!(
            "insecure_registries = [\"{}\", \"{}\"]\n",
            registry.addr, token_registry.addr
        ),
        ..Options::default()
    })
    .await
    .expect("starting criusd");

    let hostile = registry.addr.to_string();
    let mut cases = vec![
        Case {
            name: "manifest redirected to 127.0.0.1",
            registry: hostile.clone(),
            tag: "redirect",
            code: None,
            contains: &["redirect", "refused", "127.0.0.1"],
        },
        Case {
            name: "manifest refused with an HTML body",
            registry: hostile.clone(),
            tag: "html",
            code: Some(tonic::Code::PermissionDenied),
            contains: &["403"],
        },
        Case {
            name: "manifest unknown (distribution error)",
            registry: hostile.clone(),
            tag: "missing",
            code: Some(tonic::Code::NotFound),
            contains: &["404", "MANIFEST_UNKNOWN"],
        },
        Case {
            name: "token service on 127.0.0.1",
            registry: token_registry.addr.to_string(),
            tag: "any",
            code: None,
            contains: &["token service", "refused"],
        },
    ];
    for (tag, trick) in TRICKS {
        let (code, contains): (Option<tonic::Code>, &'static [&'static str]) = match trick {
            BlobTrick::Loopback => (None, &["redirect", "refused", "127.0.0.1"]),
            BlobTrick::LocalhostName => (None, &["redirect", "refused", "localhost"]),
            BlobTrick::MappedLoopback => (None, &["redirect", "refused"]),
            BlobTrick::OtherEndpoint => (Some(tonic::Code::PermissionDenied), &["403"]),
            BlobTrick::Html => (Some(tonic::Code::PermissionDenied), &["403"]),
            BlobTrick::Coded => (Some(tonic::Code::Unauthenticated), &["401", "UNAUTHORIZED"]),
        };
        cases.push(Case {
            name: tag,
            registry: hostile.clone(),
            tag,
            code,
            contains,
        });
    }

    let mut failures = Vec::new();
    for case in &cases {
        let reference = format!("{}/{REPO}:{}", case.registry, case.tag);
        let before = secret.hits();
        let result = daemon
            .images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: reference.clone(),
                    ..ImageSpec::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await;
        let contacted = secret.hits() - before;
        let mut problems = Vec::new();
        match &result {
            Ok(_) => problems.push("the pull succeeded".to_owned()),
            Err(status) => {
                let message = status.message();
                println!("{}: {:?}: {message}", case.name, status.code());
                for marker in [SECRET, HTML_MARKER, DETAIL_MARKER, OTHER_MARKER] {
                    if message.contains(marker) {
                        problems.push(format!("the error echoes {marker}"));
                    }
                }
                for word in case.contains {
                    if !message.contains(word) {
                        problems.push(format!("the error does not mention {word:?}"));
                    }
                }
                if let Some(code) = case.code
                    && status.code() != code
                {
                    problems.push(format!("code {:?}, expected {code:?}", status.code()));
                }
            }
        }
        if contacted > 0 {
            problems.push(format!("the loopback service got {contacted} request(s)"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({reference}): {}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(secret.hits(), 0, "the loopback service was reached");
    assert!(
        !daemon.log().contains(SECRET),
        "the loopback service's body reached the daemon log"
    );
}
