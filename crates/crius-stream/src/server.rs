//! The HTTP side: the listener, routing, token checks, protocol negotiation and the upgrade to
//! SPDY or WebSocket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, trace, warn};

use crate::admission::{Handshake, Handshakes};
use crate::backend::Backend;
use crate::error::{RequestError, ServerError};
use crate::remotecommand::{Command, Opts, SPDY_PROTOCOLS, Version};
use crate::request::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::spdy;
use crate::token::{self, TokenStore};
use crate::websocket;

/// Header naming the SPDY subprotocols a client speaks, and the one the server chose.
const HEADER_PROTOCOL: &str = "x-stream-protocol-version";
/// Header listing the subprotocols the server accepts, on a failed negotiation.
const HEADER_ACCEPTED: &str = "x-accepted-stream-protocol-versions";
/// Most bytes of a request head (hyper's read buffer; its minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 << 10;
/// Most header fields in a request.
const MAX_HEADERS: usize = 64;
/// Connections the kernel may queue for accept (capped by `net.core.somaxconn`). Far more
/// than the default 128: when the queue is full the kernel drops new connection attempts,
/// and a client then waits a second or more to retry, however quickly junk is evicted.
const LISTEN_BACKLOG: u32 = 4096;
/// Least time between two warnings that handshakes are being evicted.
const EVICTION_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of the streaming server.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Base of the URLs handed out (`http://host:port`); default from the bound address.
    pub base_url: Option<String>,
    /// How long a URL stays valid if unused. Default 30 s.
    pub token_ttl: Duration,
    /// Most URLs handed out and not yet used. Default 1000.
    pub max_in_flight: usize,
    /// How long a client has to open its streams after the upgrade. Default 30 s.
    pub stream_creation_timeout: Duration,
    /// A port-forward session with no open connection closes after this long. Default 4 h.
    pub idle_timeout: Duration,
    /// Most connections at once that have not yet presented a live token; accepting one more
    /// closes the oldest of them. Connections that did present one do not count. Default 128.
    pub max_handshakes: usize,
    /// How long a connection has, from accept, to present a request naming a live token;
    /// then it is closed. Default 5 s.
    pub handshake_timeout: Duration,
    /// Most upgraded sessions running at once; beyond, clients get 503. Default 1024.
    pub max_sessions: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            base_url: None,
            token_ttl: Duration::from_secs(30),
            max_in_flight: 1000,
            stream_creation_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(4 * 3600),
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(5),
            max_sessions: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }
}

#[derive(Debug)]
enum Cached {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Cached {
    fn kind(&self) -> Kind {
        match self {
            Cached::Exec(_) => Kind::Exec,
            Cached::Attach(_) => Kind::Attach,
            Cached::PortForward(_) => Kind::PortForward,
        }
    }
}

struct Shared<B> {
    backend: Arc<B>,
    tokens: TokenStore<Cached>,
    config: StreamConfig,
    /// One permit per upgraded session.
    sessions: Arc<Semaphore>,
}

/// The streaming server: hands out URLs for Exec, Attach and PortForward and serves them.
///
/// Dropping it stops accepting connections; sessions already running go on to their end.
pub struct StreamServer<B: Backend> {
    shared: Arc<Shared<B>>,
    local_addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl<B: Backend> StreamServer<B> {
    /// Binds the listen address and starts serving.
    pub async fn start(config: StreamConfig, backend: Arc<B>) -> Result<Self, ServerError> {
        let listener = listen(config.listen).map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = listener.local_addr().map_err(ServerError::LocalAddr)?;
        let base_url = match &config.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{local_addr}"),
        };
        let shared = Arc::new(Shared {
            backend,
            tokens: TokenStore::new(config.token_ttl, config.max_in_flight),
            sessions: Arc::new(Semaphore::new(config.max_sessions.max(1))),
            config,
        });
        let (stop, stop_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Self {
            shared,
            local_addr,
            base_url,
            stop,
            accept_task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL handed out, `http://host:port`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn url(&self, cached: Cached) -> Result<String, RequestError> {
        let kind = cached.kind();
        let token = self.shared.tokens.insert(cached)?;
        Ok(format!("{}/{}/{token}", self.base_url, kind.path()))
    }

    /// Validates an Exec and returns its single-use URL.
    pub fn exec_url(&self, req: ExecRequest) -> Result<String, RequestError> {
        req.validate()?;
        self.url(Cached::Exec(req))
    }

    /// Validates an Attach and returns its single-use URL.
    pub fn attach_url(&self, req: AttachRequest) -> Result<String, RequestError> {
        req.validate()?;
        self.url(Cached::Attach(req))
    }

    /// Validates a PortForward and returns its single-use URL.
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String, RequestError> {
        req.validate()?;
        self.url(Cached::PortForward(req))
    }

    /// Stops accepting connections (running sessions go on).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl<B: Backend> Drop for StreamServer<B> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept_task.abort();
    }
}

/// A listening socket on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as std sets).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections as fast as they come: the loop never waits for room, it evicts the
/// oldest handshake instead.
async fn accept_loop<B: Backend>(
    listener: TcpListener,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
) {
    let handshakes = Handshakes::new(shared.config.max_handshakes);
    let mut evictions = Evictions::default();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "streaming server accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let admission = handshakes.admit();
        if admission.evicted_oldest {
            evictions.count(shared.config.max_handshakes);
        }
        tokio::spawn(serve_connection(
            tcp,
            peer,
            admission.handshake,
            shared.clone(),
        ));
        // Let the new connection read its request before the next accept can evict it.
        tokio::task::yield_now().await;
    }
}

/// Evictions of handshakes, warned about at most once per [`EVICTION_WARNING_INTERVAL`].
#[derive(Default)]
struct Evictions {
    unreported: u64,
    last_warning: Option<Instant>,
}

impl Evictions {
    fn count(&mut self, max: usize) {
        self.unreported += 1;
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= EVICTION_WARNING_INTERVAL)
        {
            warn!(
                max_handshakes = max,
                evicted = self.unreported,
                "streaming connections that present no token fill the handshake pool; closing the oldest"
            );
            self.unreported = 0;
            self.last_warning = Some(now);
        }
    }
}

/// Serves one connection: its handshake ends at the deadline or on eviction unless its
/// request named a live token first.
async fn serve_connection<B: Backend>(
    tcp: TcpStream,
    peer: SocketAddr,
    handshake: Arc<Handshake>,
    shared: Arc<Shared<B>>,
) {
    let _ = tcp.set_nodelay(true);
    let timeout = shared.config.handshake_timeout;
    let deadline = Instant::now() + timeout;
    let in_service = handshake.clone();
    let service = service_fn(move |req| {
        let shared = shared.clone();
        let handshake = in_service.clone();
        async move { Ok::<_, Infallible>(handle(req, shared, &handshake)) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let cut = tokio::select! {
        result = &mut conn => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "streaming connection ended with an error");
            }
            return;
        }
        () = tokio::time::sleep_until(deadline) => "no token in time",
        () = handshake.evicted() => "evicted by newer connections",
    };
    if handshake.is_authenticated() {
        // Only the response to the upgrade is left to write.
        if let Err(e) = conn.await {
            debug!(%peer, error = %e, "streaming connection ended with an error");
        }
    } else {
        trace!(%peer, reason = cut, "streaming connection closed in its handshake");
    }
}

/// A refusal, after which the connection closes: only upgrades are served, one per
/// connection, so a client cannot keep a handshake going with one request after another.
fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn has_token(headers: &HeaderMap, name: impl http::header::AsHeaderName, want: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
            .unwrap_or(false)
    })
}

fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Why the `port` query parameter of a port forward is unusable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum PortQueryError {
    /// `port=` without a value.
    #[error("query parameter \"port\" cannot be empty")]
    Empty,
    /// A value that is not a port (1-65535).
    #[error("unable to parse {value:?} as a port")]
    NotAPort { value: String },
}

/// Ports named by `port=` in a query string (repeated or comma-separated).
fn query_ports(query: Option<&str>) -> Result<Vec<u16>, PortQueryError> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or_default().split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        if value.is_empty() {
            return Err(PortQueryError::Empty);
        }
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return Err(PortQueryError::NotAPort {
                        value: p.to_owned(),
                    });
                }
            }
        }
    }
    Ok(ports)
}

enum Transport {
    Spdy(String),
    WebSocket(websocket::Negotiated, String),
}

fn handle<B: Backend>(
    mut req: Request<Incoming>,
    shared: Arc<Shared<B>>,
    handshake: &Handshake,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let mut parts = path.split('/');
    let (Some(""), Some(kind), Some(token), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let kind = match kind {
        "exec" => Kind::Exec,
        "attach" => Kind::Attach,
        "portforward" => Kind::PortForward,
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if req.method() != Method::GET && req.method() != Method::POST {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
        return resp;
    }
    if !token::well_formed(token) || !shared.tokens.peek(token, |c| c.kind() == kind) {
        return text(
            StatusCode::NOT_FOUND,
            "streaming token not found or expired\n",
        );
    }

    // Decide the transport and protocol before using up the token.
    let headers = req.headers();
    let upgrade_requested = has_token(headers, CONNECTION, "upgrade");
    let transport = if upgrade_requested && has_token(headers, UPGRADE, "websocket") {
        let Some(key) = headers
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
        else {
            return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
        };
        if !has_token(headers, "sec-websocket-version", "13") {
            let mut resp = text(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported WebSocket version\n",
            );
            resp.headers_mut()
                .insert("sec-websocket-version", HeaderValue::from_static("13"));
            return resp;
        }
        let offered = list(headers, "sec-websocket-protocol");
        let Some(proto) = websocket::negotiate(&offered, kind == Kind::PortForward) else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "unable to upgrade: none of the requested protocols {offered:?} is supported\n"
                ),
            );
        };
        Transport::WebSocket(proto, derive_accept_key(key.as_bytes()))
    } else if upgrade_requested && has_token(headers, UPGRADE, "spdy/3.1") {
        let offered = list(headers, HEADER_PROTOCOL);
        let supported: &[&str] = if kind == Kind::PortForward {
            &[spdy::portforward::PROTOCOL]
        } else {
            SPDY_PROTOCOLS
        };
        let chosen = if offered.is_empty() && kind != Kind::PortForward {
            // Clients from before protocol negotiation speak the first version.
            Some("")
        } else {
            offered
                .iter()
                .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
        };
        let Some(chosen) = chosen else {
            let mut resp = text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n"
                ),
            );
            for s in supported {
                resp.headers_mut()
                    .append(HEADER_ACCEPTED, HeaderValue::from_static(s));
            }
            return resp;
        };
        Transport::Spdy(chosen.to_owned())
    } else {
        return text(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request\n",
        );
    };

    let Ok(session_permit) = shared.sessions.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streaming sessions; try again later\n",
        );
    };
    if !handshake.authenticate() {
        // Evicted meanwhile: the connection is closing, and the token stays for a retry.
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "streaming server busy; try again later\n",
        );
    }
    let Some(cached) = shared.tokens.consume(token) else {
        return text(
            StatusCode::NOT_FOUND,
            "streaming token not found or expired\n",
        );
    };
    let ws_ports = match (&transport, &cached) {
        (Transport::WebSocket(..), Cached::PortForward(pf)) => {
            match query_ports(req.uri().query()) {
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                Ok(p) if !p.is_empty() => p,
                Ok(_) => pf
                    .ports
                    .iter()
                    .filter_map(|p| u16::try_from(*p).ok())
                    .collect(),
            }
        }
        _ => Vec::new(),
    };
    if matches!(&transport, Transport::WebSocket(p, _) if !p.spdy_tunnel)
        && kind == Kind::PortForward
        && ws_ports.is_empty()
    {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required\n",
        );
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match &transport {
        Transport::Spdy(proto) => {
            h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if !proto.is_empty()
                && let Ok(v) = HeaderValue::from_str(proto)
            {
                h.insert(HEADER_PROTOCOL, v);
            }
        }
        Transport::WebSocket(proto, accept) => {
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            if let Ok(v) = HeaderValue::from_str(accept) {
                h.insert("sec-websocket-accept", v);
            }
            if let Some(name) = proto.name {
                h.insert("sec-websocket-protocol", HeaderValue::from_static(name));
            }
        }
    }

    let backend = shared.backend.clone();
    let config = shared.config.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        serve_session(upgraded, transport, cached, ws_ports, backend, &config).await;
        drop(session_permit);
    });
    resp
}

async fn serve_session<B: Backend>(
    io: TokioIo<hyper::upgrade::Upgraded>,
    transport: Transport,
    cached: Cached,
    ws_ports: Vec<u16>,
    backend: Arc<B>,
    config: &StreamConfig,
) {
    let (command, opts) = match cached {
        Cached::PortForward(pf) => {
            match transport {
                Transport::Spdy(_) => {
                    spdy::portforward::serve(
                        io,
                        pf.pod_id,
                        backend,
                        config.stream_creation_timeout,
                        config.idle_timeout,
                    )
                    .await;
                }
                Transport::WebSocket(proto, _) if proto.spdy_tunnel => {
                    spdy::portforward::serve(
                        websocket::tunnel(io).await,
                        pf.pod_id,
                        backend,
                        config.stream_creation_timeout,
                        config.idle_timeout,
                    )
                    .await;
                }
                Transport::WebSocket(proto, _) => {
                    websocket::serve_port_forward(io, proto, pf.pod_id, ws_ports, backend).await;
                }
            }
            return;
        }
        Cached::Exec(e) => (
            Command::Exec {
                container_id: e.container_id,
                cmd: e.cmd,
            },
            Opts {
                stdin: e.stdin,
                stdout: e.stdout,
                stderr: e.stderr,
                tty: e.tty,
            },
        ),
        Cached::Attach(a) => (
            Command::Attach {
                container_id: a.container_id,
            },
            Opts {
                stdin: a.stdin,
                stdout: a.stdout,
                stderr: a.stderr,
                tty: a.tty,
            },
        ),
    };
    match transport {
        Transport::Spdy(proto) => {
            let version = Version::from_spdy(&proto).unwrap_or(Version::V1);
            spdy::remotecommand::serve(
                io,
                version,
                command,
                opts,
                backend,
                config.stream_creation_timeout,
            )
            .await;
        }
        Transport::WebSocket(proto, _) => {
            websocket::serve_remotecommand(io, proto, command, opts, backend).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PortQueryError, query_ports};

    #[test]
    fn query_ports_parse_repeated_and_comma_lists() {
        assert_eq!(
            query_ports(Some("port=80&port=443,8080")),
            Ok(vec![80, 443, 8080])
        );
        assert_eq!(query_ports(None), Ok(vec![]));
        assert_eq!(
            query_ports(Some("port=0")),
            Err(PortQueryError::NotAPort { value: "0".into() })
        );
        assert_eq!(query_ports(Some("port=")), Err(PortQueryError::Empty));
        assert_eq!(
            query_ports(Some("port=x")).map_err(|e| e.to_string()),
            Err("unable to parse \"x\" as a port".to_owned())
        );
    }
}
