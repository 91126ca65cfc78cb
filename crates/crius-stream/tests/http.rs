//! The HTTP side: URLs, tokens (single use, expiry, kind), and bad requests answered with the
//! right status.

mod support;

use std::sync::Arc;
use std::time::Duration;

use crius_stream::{AttachRequest, RequestError, StreamConfig, StreamServer};
use support::spdy_client;
use support::{ProcessBackend, exec, raw_http, server, server_with_ttl};

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
