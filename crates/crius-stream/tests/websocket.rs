//! Exec, attach and port forwarding over WebSocket with a tokio-tungstenite client.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use crius_stream::PortForwardRequest;
use futures_util::{SinkExt, StreamExt};
use support::{echo_listener, exec, raw_http, server, status};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(url: &str, protocol: Option<&str>) -> (Ws, Option<String>) {
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("request");
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().expect("header"));
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket upgrade");
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (ws, chosen)
}

/// Reads (channel, payload) messages until the server closes, decoding base64 if asked.
async fn read_all(ws: &mut Ws, base64: bool) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Message::Binary(b) if !base64 => {
                out.push((b[0], b[1..].to_vec()));
            }
            Message::Text(t) if base64 => {
                let t = t.as_str().as_bytes();
                out.push((t[0] - b'0', STANDARD.decode(&t[1..]).expect("base64")));
            }
            Message::Close(_) => break,
            other => panic!("unexpected message {other:?}"),
        }
    }
    out
}

fn channel(msgs: &[(u8, Vec<u8>)], ch: u8) -> Vec<u8> {
    msgs.iter()
        .filter(|(c, _)| *c == ch)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

#[tokio::test]
async fn v4_binary_exec_streams_output_and_exit_code() {
    let srv = server().await;
    let url = srv
        .exec_url(exec(
            "echo out; echo err >&2; exit 2",
            false,
            true,
            true,
            false,
        ))
        .expect("url");
    let (mut ws, chosen) = connect(&url, Some("v4.channel.k8s.io")).await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let msgs = read_all(&mut ws, false).await;
    assert_eq!(
        msgs[0],
        (1, vec![]),
        "an empty stdout message opens the session"
    );
    assert_eq!(channel(&msgs, 1), b"out\n");
    assert_eq!(channel(&msgs, 2), b"err\n");
    let st = status(&channel(&msgs, 3));
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "2");
}

#[tokio::test]
async fn v5_close_signal_ends_stdin() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("tr a-z A-Z", true, true, false, false))
        .expect("url");
    let (mut ws, chosen) = connect(&url, Some("v5.channel.k8s.io, v4.channel.k8s.io")).await;
    assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
    ws.send(Message::binary(b"\x00hello ws\n".to_vec()))
        .await
        .expect("send");
    ws.send(Message::binary(vec![255u8, 0]))
        .await
        .expect("close stdin");
    let msgs = read_all(&mut ws, false).await;
    assert_eq!(channel(&msgs, 1), b"HELLO WS\n");
    assert_eq!(status(&channel(&msgs, 3))["status"], "Success");
}

#[tokio::test]
async fn base64_variant_frames_text_messages() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("printf 'a\\001b'", false, true, false, false))
        .expect("url");
    let (mut ws, chosen) = connect(&url, Some("v4.base64.channel.k8s.io")).await;
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let msgs = read_all(&mut ws, true).await;
    assert_eq!(channel(&msgs, 1), b"a\x01b");
    assert_eq!(status(&channel(&msgs, 3))["status"], "Success");
}

#[tokio::test]
async fn v1_channel_protocol_reports_errors_as_text() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("exit 5", false, true, false, false))
        .expect("url");
    let (mut ws, chosen) = connect(&url, None).await;
    assert_eq!(chosen, None, "no protocol offered, none answered");
    let msgs = read_all(&mut ws, false).await;
    let text = String::from_utf8(channel(&msgs, 3)).expect("utf8");
    assert!(
        text.contains("non-zero exit code") && text.contains('5'),
        "{text:?}"
    );
}

#[tokio::test]
async fn tty_exec_receives_resizes() {
    let srv = server().await;
    let url = srv
        .exec_url(exec(
            "stty size; read x; stty size",
            true,
            true,
            false,
            true,
        ))
        .expect("url");
    let (mut ws, _) = connect(&url, Some("v4.channel.k8s.io")).await;
    ws.send(Message::binary(
        b"\x04{\"Width\":77,\"Height\":22}".to_vec(),
    ))
    .await
    .expect("resize");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::binary(
        b"\x04{\"Width\":132,\"Height\":43}".to_vec(),
    ))
    .await
    .expect("resize");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::binary(b"\x00go\n".to_vec()))
        .await
        .expect("stdin");
    let msgs = read_all(&mut ws, false).await;
    let out = String::from_utf8_lossy(&channel(&msgs, 1)).into_owned();
    assert!(out.contains("22 77"), "{out:?}");
    assert!(out.contains("43 132"), "{out:?}");
}

#[tokio::test]
async fn port_forward_prefixes_the_port_and_echoes() {
    let srv = server().await;
    let port = echo_listener().await;
    let url = srv
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![],
        })
        .expect("url");
    let (mut ws, chosen) = connect(&format!("{url}?port={port}"), Some("v4.channel.k8s.io")).await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let le = port.to_le_bytes().to_vec();
    for want in [0u8, 1] {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => assert_eq!((b[0], b[1..].to_vec()), (want, le.clone())),
            other => panic!("expected the port prefix on channel {want}, got {other:?}"),
        }
    }
    ws.send(Message::binary(b"\x00echo me".to_vec()))
        .await
        .expect("send");
    let mut got = Vec::new();
    while got.len() < 7 {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if b[0] == 0 => got.extend_from_slice(&b[1..]),
            other => panic!("expected echo data, got {other:?}"),
        }
    }
    assert_eq!(got, b"echo me");
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn port_forward_without_ports_is_a_bad_request() {
    let srv = server().await;
    let url = srv
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![],
        })
        .expect("url");
    let ws_headers = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (code, _, body) = raw_http(&url, "GET", ws_headers).await;
    assert_eq!(code, 400, "{body}");
    let (code, _, body) = raw_http(
        &srv.exec_url(exec("true", false, true, false, false))
            .expect("url"),
        "GET",
        &format!("{ws_headers}Sec-WebSocket-Protocol: v9.nonsense\r\n"),
    )
    .await;
    assert_eq!(code, 400, "unsupported subprotocol: {body}");
}

#[tokio::test]
async fn attach_over_websocket_ignores_unknown_channels() {
    let srv = server().await;
    let url = srv
        .attach_url(crius_stream::AttachRequest {
            container_id: "cat".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .expect("url");
    let (mut ws, _) = connect(&url, Some("v5.channel.k8s.io")).await;
    // Junk first: an unknown channel, an empty message, a malformed close signal.
    ws.send(Message::binary(b"\x09junk".to_vec()))
        .await
        .expect("send");
    ws.send(Message::binary(Vec::new())).await.expect("send");
    ws.send(Message::binary(vec![255u8])).await.expect("send");
    ws.send(Message::binary(b"\x00to the container\n".to_vec()))
        .await
        .expect("send");
    ws.send(Message::binary(vec![255u8, 0]))
        .await
        .expect("close stdin");
    let msgs = read_all(&mut ws, false).await;
    assert_eq!(channel(&msgs, 1), b"to the container\n");
    assert_eq!(status(&channel(&msgs, 3))["status"], "Success");
}
