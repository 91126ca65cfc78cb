//! The streaming server under a flood of junk connections (issue 14): an unprivileged local
//! process holds 1,000 connections to it open (idle, sending a request head a byte a second,
//! repeating a request with a made-up token) and opens a new one for each the server closes,
//! while 10 execs go through the CRI Exec call and a WebSocket upgrade. Every exec must
//! succeed, each within a few seconds.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use cri_api::v1::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crius_tests::env::Env;
use crius_tests::flood::{Flood, FloodConfig};

/// Junk connections the attacker keeps open.
const JUNK: usize = 1000;
/// Execs made during the flood.
const EXECS: usize = 10;
/// The longest an exec may take during the flood.
const EXEC_BUDGET: Duration = Duration::from_secs(5);
/// When an exec is given up (and counted as failed).
const EXEC_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause between execs, so that they are spread over the flood.
const EXEC_GAP: Duration = Duration::from_millis(1500);
/// The unprivileged user the attacker runs as (nobody).
const NOBODY: u32 = 65534;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The exec URL of `echo <word>` in `container`.
async fn exec_url(env: &mut Env, container: &str, word: &str) -> Result<String, String> {
    env.daemon
        .runtime
        .exec(ExecRequest {
            container_id: container.into(),
            cmd: vec!["echo".into(), word.into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .await
        .map(|r| r.into_inner().url)
        .map_err(|e| format!("Exec: {e}"))
}

/// Upgrades `url` to WebSocket (`v5.channel.k8s.io`).
async fn ws_connect(url: &str) -> Result<Ws, String> {
    let url = url.replacen("http://", "ws://", 1);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// Reads a session to its end: (stdout, the status JSON).
async fn read_session(ws: &mut Ws) -> Result<(String, serde_json::Value), String> {
    let mut stdout = Vec::new();
    let mut status = None;
    while let Some(msg) = ws.next().await {
        match msg.map_err(|e| format!("session: {e}"))? {
            Message::Binary(b) if b.first() == Some(&1) => stdout.extend_from_slice(&b[1..]),
            Message::Binary(b) if b.first() == Some(&3) && b.len() > 1 => {
                status = Some(serde_json::from_slice(&b[1..]).map_err(|e| e.to_string())?);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let status = status.ok_or("the session ended without a status")?;
    Ok((String::from_utf8_lossy(&stdout).into_owned(), status))
}

/// One exec of `echo <word>`, end to end; its duration.
async fn exec_once(env: &mut Env, container: &str, word: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let run = async {
        let url = exec_url(env, container, word).await?;
        let mut ws = ws_connect(&url).await?;
        let (stdout, status) = read_session(&mut ws).await?;
        if stdout != format!("{word}\n") || status["status"] != "Success" {
            return Err(format!("unexpected output {stdout:?}, status {status}"));
        }
        Ok(())
    };
    match tokio::time::timeout(EXEC_TIMEOUT, run).await {
        Ok(Ok(())) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer in {EXEC_TIMEOUT:?}")),
    }
}

/// The streaming server's address, from an exec URL.
fn server_addr(url: &str) -> SocketAddrV4 {
    let rest = url.strip_prefix("http://").expect("http URL");
    let host = rest.split('/').next().expect("host");
    host.parse().expect("an IPv4 address")
}

#[tokio::test]
async fn junk_connections_do_not_starve_exec() {
    let mut env = crius_tests::env::setup(false).await;
    let pod = env.pod("flood", false).await;
    let config = env.container_config("flood", "sleep 600");
    let id = env.run(&pod, config).await;

    // Without the flood, for comparison, and to learn the server's address.
    let baseline = exec_once(&mut env, &id, "baseline")
        .await
        .expect("exec before the flood");
    let url = exec_url(&mut env, &id, "unused").await.expect("exec URL");
    let target = server_addr(&url);
    eprintln!("exec without the flood: {baseline:?}");

    let flood = Flood::start(&FloodConfig {
        target,
        connections: JUNK,
        uid: NOBODY,
        gid: NOBODY,
        lifetime: Duration::from_secs(180),
    })
    .expect("start the flood");
    flood
        .wait_open(JUNK as u64 / 2, Duration::from_secs(20))
        .await
        .expect("the flood holds its connections");
    eprintln!("flood established: {:?}", flood.stats());

    let started = Instant::now();
    let mut results = Vec::new();
    for i in 0..EXECS {
        tokio::time::sleep(EXEC_GAP).await;
        let result = exec_once(&mut env, &id, &format!("exec-{i}")).await;
        eprintln!(
            "exec {i} at {:?}: {result:?}; flood {:?}",
            started.elapsed(),
            flood.stats()
        );
        results.push(result);
    }
    let stats = flood.stop();
    eprintln!("flood at the end: {stats:?}");

    // The server serves again once the flood is gone.
    let after = exec_once(&mut env, &id, "after").await;
    eprintln!("exec after the flood: {after:?}");

    let ok: Vec<Duration> = results.iter().filter_map(|r| r.clone().ok()).collect();
    eprintln!(
        "{} of {EXECS} execs succeeded during the flood, slowest {:?}",
        ok.len(),
        ok.iter().max()
    );
    assert!(
        stats.connects >= JUNK as u64,
        "the flood opened too few connections: {stats:?}"
    );
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(d) => assert!(
                *d <= EXEC_BUDGET,
                "exec {i} took {d:?} (over {EXEC_BUDGET:?})"
            ),
            Err(e) => panic!("exec {i} failed during the flood: {e}"),
        }
    }
    after.expect("exec after the flood");
}
