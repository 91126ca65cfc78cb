//! Exec, attach and port forwarding over SPDY/3.1 against real processes and a real TCP
//! listener, driven by the independent test client.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use crius_stream::{AttachRequest, PortForwardRequest};
use support::spdy_client::{self, Collected, SpdyClient};
use support::{echo_listener, exec, server, status};

const LIMIT: Duration = Duration::from_secs(20);

/// Opens the named remotecommand streams, sends stdin (then FIN) and resizes, reads to EOF.
async fn run_spdy(
    url: &str,
    protocols: &[&str],
    streams: &[&str],
    stdin: Option<&[u8]>,
    resizes: &[(u16, u16)],
) -> (Collected, HashMap<String, u32>, String) {
    let (upgrade, client) = spdy_client::connect(url, protocols).await;
    assert_eq!(upgrade.status, 101, "upgrade refused: {}", upgrade.head);
    let mut client = client.expect("session");
    let mut ids = HashMap::new();
    for s in streams {
        let id = client.open(&[("streamType", s)]).await;
        ids.insert((*s).to_owned(), id);
    }
    for (w, h) in resizes {
        let json = format!("{{\"Width\":{w},\"Height\":{h}}}");
        client.data(ids["resize"], json.as_bytes(), false).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Some(data) = stdin {
        client.data(ids["stdin"], data, true).await;
    }
    let c = client.collect(LIMIT).await;
    (c, ids, upgrade.head)
}

#[tokio::test]
async fn exec_streams_stdout_and_stderr_and_reports_success() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("echo out; echo err >&2", false, true, true, false))
        .expect("url");
    let (c, ids, head) = run_spdy(
        &url,
        &["v4.channel.k8s.io", "v3.channel.k8s.io"],
        &["error", "stdout", "stderr"],
        None,
        &[],
    )
    .await;
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    assert_eq!(c.replies.len(), 3, "every stream gets a SYN_REPLY");
    assert_eq!(c.text(ids["stdout"]), "out\n");
    assert_eq!(c.text(ids["stderr"]), "err\n");
    let st = status(&c.data[&ids["error"]]);
    assert_eq!(st["status"], "Success", "{st}");
    assert!(c.fin.contains(&ids["stdout"]) && c.fin.contains(&ids["error"]));
    assert_eq!(c.goaway, Some(0), "session ends with GOAWAY OK");
}

#[tokio::test]
async fn exec_non_zero_exit_is_a_status_with_the_exit_code() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("echo bye; exit 3", false, true, false, false))
        .expect("url");
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdout"],
        None,
        &[],
    )
    .await;
    assert_eq!(c.text(ids["stdout"]), "bye\n");
    let st = status(&c.data[&ids["error"]]);
    assert_eq!(st["status"], "Failure", "{st}");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "3");
}

#[tokio::test]
async fn exec_pipes_stdin_through() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("tr a-z A-Z", true, true, false, false))
        .expect("url");
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdin", "stdout"],
        Some(b"hello spdy\n"),
        &[],
    )
    .await;
    assert_eq!(c.text(ids["stdout"]), "HELLO SPDY\n");
    assert_eq!(status(&c.data[&ids["error"]])["status"], "Success");
}

#[tokio::test]
async fn exec_large_output_arrives_whole() {
    let srv = server().await;
    // 1 MiB: far past any 64 KiB window, so the server must not wait for WINDOW_UPDATEs.
    let url = srv
        .exec_url(exec(
            "head -c 1048576 /dev/zero | tr '\\0' x",
            false,
            true,
            false,
            false,
        ))
        .expect("url");
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdout"],
        None,
        &[],
    )
    .await;
    let out = c.data.get(&ids["stdout"]).cloned().unwrap_or_default();
    assert_eq!(out.len(), 1 << 20);
    assert!(out.iter().all(|b| *b == b'x'));
}

#[tokio::test]
async fn exec_tty_applies_resizes() {
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
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdin", "stdout", "resize"],
        Some(b"go\n"),
        &[(91, 31), (123, 45)],
    )
    .await;
    let out = c.text(ids["stdout"]);
    assert!(out.contains("31 91"), "first size: {out:?}");
    assert!(out.contains("45 123"), "resized: {out:?}");
    assert_eq!(status(&c.data[&ids["error"]])["status"], "Success");
}

#[tokio::test]
async fn older_protocols_report_errors_as_text() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("exit 7", false, true, false, false))
        .expect("url");
    let (c, ids, head) = run_spdy(
        &url,
        &["v2.channel.k8s.io"],
        &["error", "stdout"],
        None,
        &[],
    )
    .await;
    assert!(
        head.contains("x-stream-protocol-version: v2.channel.k8s.io"),
        "{head}"
    );
    let text = c.text(ids["error"]);
    assert!(
        text.contains("non-zero exit code") && text.contains('7'),
        "{text:?}"
    );
}

#[tokio::test]
async fn attach_connects_stdin_and_stdout() {
    let srv = server().await;
    let url = srv
        .attach_url(AttachRequest {
            container_id: "cat".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .expect("url");
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdin", "stdout"],
        Some(b"attached\n"),
        &[],
    )
    .await;
    assert_eq!(c.text(ids["stdout"]), "attached\n");
    assert_eq!(status(&c.data[&ids["error"]])["status"], "Success");
}

#[tokio::test]
async fn port_forward_echoes_through_a_real_listener() {
    let srv = server().await;
    let port = echo_listener().await;
    let url = srv
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![i32::from(port)],
        })
        .expect("url");
    let (upgrade, client) = spdy_client::connect(&url, &["portforward.k8s.io"]).await;
    assert_eq!(upgrade.status, 101, "{}", upgrade.head);
    assert!(
        upgrade
            .head
            .contains("x-stream-protocol-version: portforward.k8s.io")
    );
    let mut client: SpdyClient = client.expect("session");
    let port_s = port.to_string();
    let mut c = Collected::default();
    // Two forwarded connections, one after the other, on the same session.
    for (request, payload) in [("0", &b"first"[..]), ("1", &b"second"[..])] {
        let err = client
            .open(&[
                ("streamType", "error"),
                ("port", &port_s),
                ("requestID", request),
            ])
            .await;
        let data = client
            .open(&[
                ("streamType", "data"),
                ("port", &port_s),
                ("requestID", request),
            ])
            .await;
        client.data(data, payload, true).await;
        client.until_fin(data, &mut c, LIMIT).await;
        assert_eq!(c.data.get(&data).map(Vec::as_slice), Some(payload));
        client.until_fin(err, &mut c, LIMIT).await;
        assert!(c.data.get(&err).is_none_or(Vec::is_empty), "no error");
    }
    // A port nobody listens on: the error stream says why.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let closed_s = closed.to_string();
    let err = client
        .open(&[
            ("streamType", "error"),
            ("port", &closed_s),
            ("requestID", "2"),
        ])
        .await;
    let _data = client
        .open(&[
            ("streamType", "data"),
            ("port", &closed_s),
            ("requestID", "2"),
        ])
        .await;
    client.until_fin(err, &mut c, LIMIT).await;
    let msg = c.text(err);
    assert!(
        msg.contains(&format!("error forwarding port {closed}")),
        "{msg:?}"
    );
    // Pings are echoed.
    client.ping(1).await;
    let mut seen = false;
    for _ in 0..10 {
        if let Some(spdy_client::Frame::Ping(1)) = client.read().await {
            seen = true;
            break;
        }
    }
    assert!(seen, "ping echoed");
}

#[tokio::test]
async fn malformed_frames_end_the_session_but_not_the_server() {
    let srv = server().await;
    for garbage in [
        // A control frame of SPDY version 2.
        &[0x80u8, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00][..],
        // SYN_STREAM whose header block is not zlib.
        &[
            0x80, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0e, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3,
            4,
        ][..],
        // A data frame announcing 16 MiB.
        &[0x00, 0x00, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff][..],
    ] {
        let url = srv
            .exec_url(exec("sleep 30", false, true, false, false))
            .expect("url");
        let (upgrade, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
        assert_eq!(upgrade.status, 101);
        let mut client = client.expect("session");
        client.write_raw(garbage).await;
        let c = client.collect(Duration::from_secs(5)).await;
        assert_eq!(c.goaway, Some(1), "GOAWAY PROTOCOL_ERROR, then close");
    }
    // The server still serves.
    let url = srv
        .exec_url(exec("echo alive", false, true, false, false))
        .expect("url");
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdout"],
        None,
        &[],
    )
    .await;
    assert_eq!(c.text(ids["stdout"]), "alive\n");
}

#[tokio::test]
async fn concurrent_execs_all_complete() {
    let srv = std::sync::Arc::new(server().await);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = srv
            .exec_url(exec(
                &format!("echo n{i}; exit {}", i % 3),
                false,
                true,
                false,
                false,
            ))
            .expect("url");
        tasks.push(tokio::spawn(async move {
            let (c, ids, _) = run_spdy(
                &url,
                &["v4.channel.k8s.io"],
                &["error", "stdout"],
                None,
                &[],
            )
            .await;
            (i, c.text(ids["stdout"]), status(&c.data[&ids["error"]]))
        }));
    }
    for t in tasks {
        let (i, out, st) = t.await.expect("task");
        assert_eq!(out, format!("n{i}\n"));
        if i % 3 == 0 {
            assert_eq!(st["status"], "Success");
        } else {
            assert_eq!(st["details"]["causes"][0]["message"], (i % 3).to_string());
        }
    }
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_block_others() {
    let srv = server().await;
    // 64 MiB of output to a client that reads nothing: backpressure, not memory.
    let url = srv
        .exec_url(exec(
            "head -c 67108864 /dev/zero",
            false,
            true,
            false,
            false,
        ))
        .expect("url");
    let (up, stuck) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut stuck = stuck.expect("session");
    stuck.open(&[("streamType", "error")]).await;
    stuck.open(&[("streamType", "stdout")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = srv
        .exec_url(exec("echo fine", false, true, false, false))
        .expect("url");
    let (c, ids, _) = run_spdy(
        &url,
        &["v4.channel.k8s.io"],
        &["error", "stdout"],
        None,
        &[],
    )
    .await;
    assert_eq!(c.text(ids["stdout"]), "fine\n");
    drop(stuck);
}

#[tokio::test]
async fn a_client_that_opens_no_streams_is_dropped() {
    let srv = support::server_with(crius_stream::StreamConfig {
        stream_creation_timeout: Duration::from_millis(500),
        ..crius_stream::StreamConfig::default()
    })
    .await;
    let url = srv
        .exec_url(exec("true", false, true, false, false))
        .expect("url");
    let (up, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut client = client.expect("session");
    // Only the error stream: stdout never comes.
    client.open(&[("streamType", "error")]).await;
    let started = std::time::Instant::now();
    let c = client.collect(Duration::from_secs(10)).await;
    assert_eq!(c.goaway, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the creation timeout"
    );

    // Port forwarding: half a stream pair is reset after the same timeout.
    let pf = srv
        .port_forward_url(PortForwardRequest {
            pod_id: "pod".into(),
            ports: vec![],
        })
        .expect("url");
    let (up, client) = spdy_client::connect(&pf, &["portforward.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut client = client.expect("session");
    let lonely = client
        .open(&[("streamType", "error"), ("port", "80"), ("requestID", "9")])
        .await;
    let bad = client
        .open(&[("streamType", "data"), ("requestID", "10")])
        .await;
    let mut c = Collected::default();
    client
        .until_fin(lonely, &mut c, Duration::from_secs(5))
        .await;
    assert!(
        c.text(lonely).contains("timed out waiting for the streams"),
        "an incomplete pair is reported on its error stream: {c:?}"
    );
    assert!(
        c.resets.iter().any(|(id, _)| *id == bad),
        "a stream without a port header is reset: {c:?}"
    );
}

#[tokio::test]
async fn control_frames_a_client_may_send_are_tolerated() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("echo tolerant", false, true, false, false))
        .expect("url");
    let (up, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut client = client.expect("session");
    // SETTINGS (initial window 1 MiB), a session WINDOW_UPDATE, and a control frame type
    // this side does not know: all must be accepted or ignored.
    client
        .write_raw(&[
            0x80, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x0c, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0x10, 0, 0,
        ])
        .await;
    client
        .write_raw(&[
            0x80, 0x03, 0x00, 0x09, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 0, 0, 1, 0, 0,
        ])
        .await;
    client
        .write_raw(&[0x80, 0x03, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x02, 0xde, 0xad])
        .await;
    let err = client.open(&[("streamType", "error")]).await;
    let out = client.open(&[("streamType", "stdout")]).await;
    let c = client.collect(LIMIT).await;
    assert_eq!(c.text(out), "tolerant\n");
    assert_eq!(status(&c.data[&err])["status"], "Success");
    assert_eq!(c.goaway, Some(0));
}

#[tokio::test]
async fn oversized_header_blocks_end_the_session() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("true", false, true, false, false))
        .expect("url");
    let (up, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(up.status, 101);
    let mut client = client.expect("session");
    // 300 header pairs (the limit is 256); one compressed block inflating past 64 KiB.
    let many: Vec<(String, String)> = (0..300).map(|i| (format!("h{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    client.open(&refs).await;
    let c = client.collect(Duration::from_secs(5)).await;
    assert_eq!(c.goaway, Some(1));

    let url = srv
        .exec_url(exec("true", false, true, false, false))
        .expect("url");
    let (_, client) = spdy_client::connect(&url, &["v4.channel.k8s.io"]).await;
    let mut client = client.expect("session");
    let big = "x".repeat(100_000);
    client.open(&[("streamType", big.as_str())]).await;
    let c = client.collect(Duration::from_secs(5)).await;
    assert_eq!(c.goaway, Some(1));
}
