//! The HTTP side: URLs, tokens (single use, expiry, kind), and bad requests answered with the
//! right status.

mod support;

use std::sync::Arc;
use std::time::Duration;

use crius_stream::{AttachRequest, RequestError, StreamConfig, StreamServer};
use support::spdy_client;
use support::{ProcessBackend, exec, raw_http, server, server_with, server_with_ttl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SPDY_HEADERS: &str =
    "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n";

#[tokio::test]
async fn urls_name_the_bound_address_and_a_random_token() {
    let srv = server().await;
    assert!(srv.local_addr().ip().is_loopback());
    assert_eq!(srv.base_url(), format!("http://{}", srv.local_addr()));
    let a = srv
        .exec_url(exec("true", false, true, false, false))
        .expect("url");
    let b = srv
        .exec_url(exec("true", false, true, false, false))
        .expect("url");
    let prefix = format!("{}/exec/", srv.base_url());
    assert!(a.starts_with(&prefix), "{a}");
    assert_eq!(a.len(), prefix.len() + 22);
    assert_ne!(a, b);
    let att = srv
        .attach_url(AttachRequest {
            container_id: "c".into(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .expect("url");
    assert!(att.starts_with(&format!("{}/attach/", srv.base_url())));
}

#[tokio::test]
async fn invalid_requests_are_typed_errors() {
    let srv = server().await;
    let err = srv
        .exec_url(exec("true", false, true, true, true))
        .expect_err("tty+stderr");
    assert_eq!(err, RequestError::TtyWithStderr);
    assert!(err.is_invalid_argument());
    let err = srv
        .exec_url(exec("true", false, false, false, false))
        .expect_err("no streams");
    assert_eq!(err, RequestError::NoStreams);

    let config = StreamConfig {
        max_in_flight: 2,
        ..StreamConfig::default()
    };
    let small = StreamServer::start(config, Arc::new(ProcessBackend))
        .await
        .expect("start");
    small
        .exec_url(exec("true", false, true, false, false))
        .expect("1");
    small
        .exec_url(exec("true", false, true, false, false))
        .expect("2");
    let err = small
        .exec_url(exec("true", false, true, false, false))
        .expect_err("3");
    assert_eq!(err, RequestError::TooManyInFlight(2));
    assert!(!err.is_invalid_argument());
}

#[tokio::test]
async fn tokens_are_single_use() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("echo once", false, true, false, false))
        .expect("url");
    let (up, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    drop(client);
    let (up, _) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 404, "a used token is gone");
}

#[tokio::test]
async fn tokens_expire() {
    let srv = server_with_ttl(Duration::from_millis(300)).await;
    let url = srv
        .exec_url(exec("true", false, true, false, false))
        .expect("url");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _, _) = raw_http(&url, "POST", SPDY_HEADERS).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn bad_requests_get_the_right_status() {
    let srv = server().await;
    let base = srv.base_url().to_owned();
    let url = srv
        .exec_url(exec("echo still-valid", false, true, false, false))
        .expect("url");
    let token = url.rsplit('/').next().expect("token").to_owned();

    let (code, _, _) = raw_http(
        &format!("{base}/exec/AAAAAAAAAAAAAAAAAAAAAA"),
        "GET",
        SPDY_HEADERS,
    )
    .await;
    assert_eq!(code, 404, "unknown token");
    let (code, _, _) = raw_http(
        &format!("{base}/exec/../../etc/passwd"),
        "GET",
        SPDY_HEADERS,
    )
    .await;
    assert_eq!(code, 404, "garbage path");
    let (code, _, _) = raw_http(&format!("{base}/shell/{token}"), "GET", SPDY_HEADERS).await;
    assert_eq!(code, 404, "unknown endpoint");
    let (code, _, _) = raw_http(&format!("{base}/attach/{token}"), "GET", SPDY_HEADERS).await;
    assert_eq!(code, 404, "an exec token does not open an attach");
    let (code, head, _) = raw_http(&url, "PUT", SPDY_HEADERS).await;
    assert_eq!(code, 405, "wrong method");
    assert!(head.contains("allow: get, post"), "{head}");
    let (code, _, body) = raw_http(&url, "GET", "").await;
    assert_eq!(code, 400, "no upgrade");
    assert!(body.contains("upgrade"), "{body}");
    let (code, head, _) = raw_http(
        &url,
        "GET",
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n",
    )
    .await;
    assert_eq!(code, 403, "no common protocol");
    assert!(
        head.contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );

    // None of that used the token up.
    let (up, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut client = client.expect("session");
    let err = client.open(&[("streamType", "error")]).await;
    let out = client.open(&[("streamType", "stdout")]).await;
    let c = client.collect(Duration::from_secs(10)).await;
    assert_eq!(c.text(out), "still-valid\n");
    assert!(c.fin.contains(&err));
}

/// True when the peer closes `tcp` within `limit` (whatever it sent before).
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end).await.is_ok()
}

#[tokio::test]
async fn connections_without_a_token_are_bounded_and_never_keep_a_client_out() {
    let srv = server_with(StreamConfig {
        max_handshakes: 4,
        handshake_timeout: Duration::from_secs(2),
        stream_creation_timeout: Duration::from_secs(5),
        ..StreamConfig::default()
    })
    .await;
    let addr = srv.local_addr();
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // A client with a token gets in past them, and its session outlives the handshake
    // deadline.
    let url = srv
        .exec_url(exec(
            "sleep 2.5; echo after-the-deadline",
            false,
            true,
            false,
            false,
        ))
        .expect("url");
    let (up, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut client = client.expect("session");
    let err = client.open(&[("streamType", "error")]).await;
    let out = client.open(&[("streamType", "stdout")]).await;

    // The pool holds four: the sixteen oldest were closed at once, the others at the deadline.
    for (i, tcp) in idle.iter_mut().enumerate().take(16) {
        assert!(
            closed_within(tcp, Duration::from_secs(1)).await,
            "idle connection {i} was not evicted"
        );
    }
    for (i, tcp) in idle.iter_mut().enumerate().skip(16) {
        assert!(
            closed_within(tcp, Duration::from_secs(4)).await,
            "idle connection {i} outlived the deadline"
        );
    }

    let c = client.collect(Duration::from_secs(10)).await;
    assert_eq!(c.text(out), "after-the-deadline\n");
    assert!(c.fin.contains(&err));

    // A request that names no live token is answered and the connection closed, even when
    // the client asks to keep it.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET /exec/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: {addr}\r\n{SPDY_HEADERS}\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let head = spdy_client::read_head(&mut tcp).await;
    assert_eq!(spdy_client::parse_status(&head), 404, "{head}");
    assert!(closed_within(&mut tcp, Duration::from_secs(1)).await);

    // A request head that never ends is cut at the deadline.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET /exec/").await.expect("write");
    assert!(closed_within(&mut tcp, Duration::from_secs(4)).await);
}
