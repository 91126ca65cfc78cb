//! Test support: a process backend, an independent SPDY client, raw HTTP and server set-up.

#![allow(dead_code)]

pub mod backend;
pub mod dictionary;
pub mod spdy_client;

use std::sync::Arc;
use std::time::Duration;

use crius_stream::{ExecRequest, StreamConfig, StreamServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(unused_imports)]
pub use backend::{ProcessBackend, echo_listener};

/// A server with the process backend and the given token lifetime.
pub async fn server_with_ttl(ttl: Duration) -> StreamServer<ProcessBackend> {
    server_with(StreamConfig {
        token_ttl: ttl,
        stream_creation_timeout: Duration::from_secs(5),
        ..StreamConfig::default()
    })
    .await
}

/// A server with the process backend and `config`.
pub async fn server_with(config: StreamConfig) -> StreamServer<ProcessBackend> {
    StreamServer::start(config, Arc::new(ProcessBackend))
        .await
        .expect("start stream server")
}

/// A server with default settings.
pub async fn server() -> StreamServer<ProcessBackend> {
    server_with_ttl(Duration::from_secs(30)).await
}

/// An exec of `sh -c script`.
pub fn exec(script: &str, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        tty,
        stdin,
        stdout,
        stderr,
    }
}

/// Sends a raw HTTP/1.1 request and returns (status, lower-cased head, body).
pub async fn raw_http(url: &str, method: &str, extra_headers: &str) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let slash = rest.find('/').unwrap_or(rest.len());
    let (host, path) = (&rest[..slash], &rest[slash..]);
    let mut tcp = TcpStream::connect(host).await.expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        spdy_client::parse_status(head),
        head.to_ascii_lowercase(),
        body.to_owned(),
    )
}

/// Parses a v4 error-stream Status.
pub fn status(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "error stream is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })
}
