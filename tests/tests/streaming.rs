//! Streaming end to end: the CRI Exec, Attach and PortForward calls of a real criusd, and its
//! streaming server spoken to over WebSocket (`v5.channel.k8s.io` for exec,
//! `v4.channel.k8s.io` for port forwarding) by a small client written here.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crius_tests::env::{HOST_ID, MAP_LEN, on_host_network, pod_config};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The shared container-test setup, with this file's own helpers on top.
struct Env(crius_tests::env::Env);

impl std::ops::Deref for Env {
    type Target = crius_tests::env::Env;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

async fn setup() -> Env {
    Env(crius_tests::env::setup(false).await)
}

impl Env {
    /// A pod with one running container running `script`; returns (pod id, container id).
    async fn pod_with(&mut self, name: &str, userns: bool, script: &str) -> (String, String) {
        self.pod_on(pod_config(name, userns, self.logs.path()), name, script)
            .await
    }

    /// A pod with `config` and one running container running `script`.
    async fn pod_on(
        &mut self,
        config: PodSandboxConfig,
        name: &str,
        script: &str,
    ) -> (String, String) {
        let (pod, config) = self.pod_from(config).await;
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..ImageSpec::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            labels: BTreeMap::from([("app".into(), name.into())]),
            linux: Some(LinuxContainerConfig::default()),
            ..ContainerConfig::default()
        };
        let id = self
            .daemon
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container),
                sandbox_config: Some(config),
            })
            .await
            .expect("create")
            .into_inner()
            .container_id;
        self.daemon
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("start");
        (pod, id)
    }

    async fn exec_url(
        &mut self,
        id: &str,
        cmd: &[&str],
        tty: bool,
        stdin: bool,
    ) -> Result<String, tonic::Status> {
        self.daemon
            .runtime
            .exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| (*c).to_owned()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .map(|r| r.into_inner().url)
    }
}

/// Opens a WebSocket to a streaming URL with one subprotocol.
async fn ws_connect(
    url: &str,
    protocol: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = url.replacen("http://", "ws://", 1);
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).expect("header"),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    Ok(ws)
}

/// What an exec session sent back.
#[derive(Debug, Default)]
struct Session {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<serde_json::Value>,
}

impl Session {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Reads an exec session to its end (the error channel's status and the close).
async fn read_session(ws: &mut Ws) -> Session {
    let mut s = Session::default();
    let deadline = Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("the session ends in time");
        let Some(Ok(msg)) = msg else { break };
        match msg {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => s.stdout.extend_from_slice(&b[1..]),
                2 => s.stderr.extend_from_slice(&b[1..]),
                3 if b.len() > 1 => {
                    s.status = Some(serde_json::from_slice(&b[1..]).expect("status JSON"));
                }
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    s
}

async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut buf = vec![channel];
    buf.extend_from_slice(data);
    ws.send(Message::binary(buf)).await.expect("send");
}

#[tokio::test]
async fn exec_streams_output_stdin_tty_and_the_exit_code() {
    let mut env = setup().await;
    let (_pod, id) = env.pod_with("exec", false, "sleep 300").await;

    // stdout, stderr and a non-zero exit code in a v4+ Status.
    let url = env
        .exec_url(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        )
        .await
        .expect("exec url");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io")
        .await
        .expect("connect");
    let s = read_session(&mut ws).await;
    assert_eq!(s.stdout(), "out\n");
    assert_eq!(String::from_utf8_lossy(&s.stderr), "err\n");
    let status = s.status.expect("status");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    // The token is single-use: a second connection gets 404.
    match ws_connect(&url, "v5.channel.k8s.io").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404);
        }
        Err(e) => panic!("second use: unexpected error {e}"),
        Ok(_) => panic!("second use of a token was accepted"),
    }

    // stdin through cat, closed with the v5 close signal.
    let url = env
        .exec_url(&id, &["cat"], false, true)
        .await
        .expect("exec url");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io")
        .await
        .expect("connect");
    send(&mut ws, 0, b"hello through stdin\n").await;
    ws.send(Message::binary(vec![255u8, 0]))
        .await
        .expect("close stdin");
    let s = read_session(&mut ws).await;
    assert_eq!(s.stdout(), "hello through stdin\n");
    assert_eq!(s.status.expect("status")["status"], "Success");

    // A terminal: the command sees a tty of the size the client sent.
    let url = env
        .exec_url(
            &id,
            &["sh", "-c", "test -t 0 && echo IS-A-TTY; stty size"],
            true,
            true,
        )
        .await
        .expect("exec url");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io")
        .await
        .expect("connect");
    send(&mut ws, 4, br#"{"Width":100,"Height":30}"#).await;
    let s = read_session(&mut ws).await;
    let out = s.stdout();
    assert!(out.contains("IS-A-TTY"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");
    assert!(
        out.contains("\r\n"),
        "a terminal turns \\n into \\r\\n: {out:?}"
    );
    assert_eq!(s.status.expect("status")["status"], "Success");

    // A client that goes away kills what it started.
    let url = env
        .exec_url(
            &id,
            &["sh", "-c", "echo started; exec sleep 1000"],
            false,
            false,
        )
        .await
        .expect("exec url");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io")
        .await
        .expect("connect");
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b.first() == Some(&1) && b.len() > 1 => break,
            Some(Ok(_)) => {}
            other => panic!("no output: {other:?}"),
        }
    }
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = env
            .daemon
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "ps | grep -c 'sleep 1000$' || true".into(),
                ],
                timeout: 10,
            })
            .await
            .expect("exec sync")
            .into_inner();
        let n = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if n == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "sleep 1000 still runs ({n})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Errors: an unknown container, a bad request, Attach.
    let err = env
        .exec_url("0123456789abcdef", &["true"], false, false)
        .await
        .expect_err("unknown container");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = env
        .exec_url(&id, &[], false, false)
        .await
        .expect_err("empty command");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = env
        .daemon
        .runtime
        .exec(ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            tty: true,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect_err("tty with stderr");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = env
        .daemon
        .runtime
        .attach(AttachRequest {
            container_id: id.clone(),
            stdin: false,
            tty: true,
            stdout: true,
            stderr: true,
        })
        .await
        .expect_err("attach with tty and stderr");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = env
        .daemon
        .runtime
        .attach(AttachRequest {
            container_id: id.clone(),
            stdin: false,
            tty: false,
            stdout: false,
            stderr: false,
        })
        .await
        .expect_err("attach without streams");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = env
        .daemon
        .runtime
        .attach(AttachRequest {
            container_id: "0123456789abcdef".into(),
            stdin: false,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect_err("attach");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}

/// Exec joins the pod's user namespace first: the command is the pod's root, not the host's.
/// A stopped container gets no URL.
#[tokio::test]
async fn exec_in_a_user_namespaced_pod_runs_as_the_pods_root() {
    let mut env = setup().await;
    let (_pod, id) = env.pod_with("userns", true, "sleep 300").await;
    let url = env
        .exec_url(
            &id,
            &["sh", "-c", "id -u; cat /proc/self/uid_map"],
            false,
            false,
        )
        .await
        .expect("exec url");
    let mut ws = ws_connect(&url, "v5.channel.k8s.io")
        .await
        .expect("connect");
    let s = read_session(&mut ws).await;
    let words: Vec<String> = s.stdout().split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        words,
        [
            "0".to_owned(),
            "0".to_owned(),
            HOST_ID.to_string(),
            MAP_LEN.to_string()
        ],
        "stderr: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    assert_eq!(s.status.expect("status")["status"], "Success");

    // A container that is not running: FailedPrecondition, no URL.
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .expect("stop");
    let err = env
        .exec_url(&id, &["true"], false, false)
        .await
        .expect_err("exec in a stopped container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}

/// An interactive tty exec runs on a terminal of the container's own devpts (in a plain pod
/// and in a user-namespaced one): `tty` names a `/dev/pts` entry the container has, the
/// terminal is the shell's controlling tty, a resize reaches it, ^D ends `cat`, and the exit
/// code comes back.
#[tokio::test]
async fn tty_exec_runs_on_a_terminal_of_the_container() {
    let mut env = setup().await;
    for userns in [false, true] {
        let name = if userns { "ttyexec-userns" } else { "ttyexec" };
        let (_pod, id) = env.pod_with(name, userns, "sleep 300").await;
        let url = env
            .exec_url(&id, &["sh"], true, true)
            .await
            .expect("exec url");
        let mut ws = ws_connect(&url, "v5.channel.k8s.io")
            .await
            .expect("connect");
        send(&mut ws, 4, br#"{"Width":100,"Height":30}"#).await;
        // `kubectl exec -it` through the API server opens stdin with one NUL byte: it must
        // not reach the terminal (which would echo it as ^@ before the user's input).
        send(&mut ws, 0, b"\0").await;
        // The typed text is echoed: the answers are computed so they differ from the input.
        send(
            &mut ws,
            0,
            b"test -t 0 && echo TTY-$((40+2)); t=$(tty); echo NAME=$t=; test -c \"$t\" && ls /dev/pts | grep -qx \"${t#/dev/pts/}\" && echo LISTED-$((1+1)); echo CTTY-$(cut -d' ' -f7 /proc/self/stat); stty size; echo DONE-$((2+1))\n",
        )
        .await;
        let (out, _) = read_until(&mut ws, |o, _| o.contains("DONE-3")).await;
        // The session starts clean: no stray bytes before the shell's own output.
        assert!(
            !out.contains('\0') && !out.contains("^@"),
            "NUL bytes on the terminal: {out:?}"
        );
        assert!(out.contains("TTY-42"), "stdin is a terminal: {out:?}");
        assert!(
            out.contains("NAME=/dev/pts/") && !out.contains("not a tty"),
            "tty names the terminal ({name}): {out:?}"
        );
        assert!(
            out.contains("LISTED-2"),
            "the terminal is in the container's /dev/pts ({name}): {out:?}"
        );
        assert!(
            out.contains("\nCTTY-") && !out.contains("CTTY-0\r"),
            "the terminal is the shell's controlling tty: {out:?}"
        );
        assert!(out.contains("30 100"), "{out:?}");

        // A resize reaches the container's terminal (asked again until it shows, as the
        // resize and the typed command travel apart).
        send(&mut ws, 4, br#"{"Width":50,"Height":10}"#).await;
        let mut resized = false;
        for round in 0..20 {
            let line = format!("stty size; echo ROUND-$(({round}+100))\n");
            send(&mut ws, 0, line.as_bytes()).await;
            let marker = format!("ROUND-{}", round + 100);
            let (out, _) = read_until(&mut ws, |o, _| o.contains(&marker)).await;
            let before = out.rsplit_once(&marker).map_or("", |(b, _)| b);
            if before
                .rsplit("ROUND-")
                .next()
                .unwrap_or("")
                .contains("10 50")
            {
                resized = true;
                break;
            }
        }
        assert!(resized, "stty size never showed 10 50 ({name})");

        // ^D ends cat's input; then the shell's exit code is the session's.
        // ^D is the end of input only in the terminal's line mode: the shell leaves its own
        // line editor (raw mode) before it runs the command, so the line is typed only once
        // the command's first word has printed, and ^D only once cat has copied the line back
        // (the terminal's echo and cat's copy: twice).
        send(
            &mut ws,
            0,
            b"echo CAT-STARTS-$((2+3)); cat; echo CAT-ENDED-$((3+4))\n",
        )
        .await;
        read_until(&mut ws, |o, _| o.contains("CAT-STARTS-5")).await;
        send(&mut ws, 0, b"ping-cat\n").await;
        read_until(&mut ws, |o, _| o.matches("ping-cat").count() >= 2).await;
        send(&mut ws, 0, b"\x04").await;
        read_until(&mut ws, |o, _| o.contains("CAT-ENDED-7")).await;
        send(&mut ws, 0, b"exit 7\n").await;
        let s = read_session(&mut ws).await;
        let status = s.status.expect("status");
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "7", "{status}");
    }
}

/// The container's root owns its `/dev`: it replaces `/dev/ptmx` with a symlink to a FIFO a
/// reader waits on. A tty exec (whose helper opens the pty multiplexer as host root in a pod
/// without a user namespace) must open only a real multiplexer (a character device 5:2 on
/// devpts): it takes `/dev/pts/ptmx` and works, and the FIFO is never opened (the reader,
/// which an open for writing would release, never prints).
#[tokio::test]
async fn a_tty_exec_opens_only_a_real_pty_multiplexer() {
    let mut env = setup().await;
    for userns in [false, true] {
        let name = if userns { "ptmx-userns" } else { "ptmx" };
        let script = "mkfifo /tmp/f && rm /dev/ptmx && ln -s /tmp/f /dev/ptmx && echo READY; \
                      cat /tmp/f >/dev/null; echo FIFO-OPENED; sleep 300";
        let (_pod, id) = env.pod_with(name, userns, script).await;
        assert_eq!(env.wait_stdout(name, 1).await, ["READY"], "{name}");
        let url = env
            .exec_url(&id, &["sh"], true, true)
            .await
            .expect("exec url");
        let mut ws = ws_connect(&url, "v5.channel.k8s.io")
            .await
            .expect("connect");
        send(&mut ws, 0, b"test -t 0 && echo TTY-$((40+2)); exit 3\n").await;
        let s = read_session(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            env.stdout(name),
            ["READY"],
            "{name}: the exec helper opened what the container put at /dev/ptmx ({s:?})"
        );
        assert!(
            s.stdout().contains("TTY-42"),
            "{name}: the exec runs on a terminal: {s:?}"
        );
        let status = s.status.expect("status");
        assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
    }
}

/// One forwarded connection over WebSocket: sends `request` on `port`'s data channel and
/// collects what comes back until `want` shows up (or the session ends).
async fn forward_once(url: &str, port: u16, request: &[u8], want: &str) -> (String, String) {
    let mut ws = ws_connect(&format!("{url}?port={port}"), "v4.channel.k8s.io")
        .await
        .expect("connect");
    let mut data = Vec::new();
    let mut errors = Vec::new();
    let mut seen = [false, false];
    let mut sent = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Ok(msg) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await else {
            break;
        };
        let Some(Ok(msg)) = msg else { break };
        match msg {
            Message::Binary(b) if !b.is_empty() => {
                let ch = usize::from(b[0]);
                if ch > 1 {
                    continue;
                }
                if !seen[ch] {
                    // The first frame of each channel names the port, little-endian.
                    assert_eq!(&b[1..], &port.to_le_bytes(), "channel {ch} prefix");
                    seen[ch] = true;
                } else if ch == 0 {
                    data.extend_from_slice(&b[1..]);
                } else {
                    errors.extend_from_slice(&b[1..]);
                }
                if seen == [true, true] && !sent {
                    send(&mut ws, 0, request).await;
                    sent = true;
                }
                if String::from_utf8_lossy(&data).contains(want) || !errors.is_empty() {
                    break;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    (
        String::from_utf8_lossy(&data).into_owned(),
        String::from_utf8_lossy(&errors).into_owned(),
    )
}

impl Env {
    /// Fetches `/index.html` from `port` in `pod` through PortForward until it answers with
    /// `want` (the server may not listen yet).
    async fn fetch_through_port_forward(&mut self, pod: &str, port: u16, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let url = self
                .daemon
                .runtime
                .port_forward(PortForwardRequest {
                    pod_sandbox_id: pod.into(),
                    port: vec![i32::from(port)],
                })
                .await
                .expect("port forward url")
                .into_inner()
                .url;
            let (data, errors) = forward_once(
                &url,
                port,
                b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n",
                want,
            )
            .await;
            if data.contains(want) {
                assert!(data.starts_with("HTTP/1."), "{data:?}");
                return;
            }
            // The error channel says the connection was refused while nothing listens.
            assert!(
                Instant::now() < deadline,
                "no answer through the forwarded port: data {data:?}, errors {errors:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// PortForward reaches a server listening on the pod's own loopback (inside its network
/// namespace), and for a hostNetwork pod the host's; an unknown pod is NotFound.
#[tokio::test]
async fn port_forward_reaches_the_pods_loopback() {
    let mut env = setup().await;
    let (pod, _id) = env
        .pod_with(
            "pf",
            false,
            "mkdir -p /tmp/www && echo hello-from-the-pod > /tmp/www/index.html && \
             exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
        )
        .await;
    env.fetch_through_port_forward(&pod, 8080, "hello-from-the-pod")
        .await;

    // A hostNetwork pod's loopback is the host's.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = on_host_network(pod_config("pf-host", false, env.logs.path()));
    let (host_pod, _) = env
        .pod_on(
            config,
            "pf-host",
            &format!(
                "mkdir -p /tmp/www && echo hello-from-the-host > /tmp/www/index.html && \
                 exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
            ),
        )
        .await;
    env.fetch_through_port_forward(&host_pod, port, "hello-from-the-host")
        .await;
    let direct = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(
        direct.is_ok(),
        "the host pod's server is on the host's loopback"
    );

    let err = env
        .daemon
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "0123456789abcdef".into(),
            port: vec![80],
        })
        .await
        .expect_err("unknown pod");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = env
        .daemon
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![70000],
        })
        .await
        .expect_err("bad port");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

impl Env {
    /// A running container of `config` in a new pod of its own; returns (pod id, container id).
    async fn run_in_new_pod(&mut self, name: &str, config: ContainerConfig) -> (String, String) {
        let pod = self.pod(name, false).await;
        let id = self.run(&pod, config).await;
        (pod.0, id)
    }

    async fn attach_url(&mut self, id: &str, tty: bool, stdin: bool) -> String {
        self.daemon
            .runtime
            .attach(AttachRequest {
                container_id: id.into(),
                stdin,
                tty,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("attach url")
            .into_inner()
            .url
    }

    /// Attaches over WebSocket `v5.channel.k8s.io`.
    async fn attach(&mut self, id: &str, tty: bool, stdin: bool) -> Ws {
        let url = self.attach_url(id, tty, stdin).await;
        ws_connect(&url, "v5.channel.k8s.io")
            .await
            .expect("connect")
    }

    async fn state(&mut self, id: &str) -> ContainerState {
        ContainerState::try_from(self.status(id).await.state).expect("state")
    }
}

/// Reads a session until its stdout and stderr satisfy `done` (or the session ends, a failure).
async fn read_until(ws: &mut Ws, done: impl Fn(&str, &str) -> bool) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let (o, e) = (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        );
        if done(&o, &e) {
            return (o, e);
        }
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no more output; stdout {o:?}, stderr {e:?}"));
        match msg {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                2 => err.extend_from_slice(&b[1..]),
                _ => {}
            },
            Some(Ok(_)) => {}
            other => panic!("the session ended ({other:?}); stdout {o:?}, stderr {e:?}"),
        }
    }
}

fn stdin_config(env: &Env, name: &str, script: &str, stdin_once: bool) -> ContainerConfig {
    ContainerConfig {
        stdin: true,
        stdin_once,
        ..env.container_config(name, script)
    }
}

/// Attach gets the output a running container writes from then on (stdout and stderr apart)
/// and feeds its stdin; stdin stays open across detaches without `stdin_once`, and the
/// monitor keeps the container's stdio through a criusd restart.
#[tokio::test]
async fn attach_reads_output_and_writes_stdin_across_detach_and_restart() {
    let mut env = setup().await;
    let script = r#"echo ready; while read -r line; do echo "got $line"; echo "err $line" >&2; done; echo stdin-closed"#;
    let config = stdin_config(&env, "echo", script, false);
    let (_pod, id) = env.run_in_new_pod("echo", config).await;
    // "ready" is in the log, so written before the attach (a running container may not have
    // reached its first line yet).
    env.wait_stdout("echo", 1).await;

    let mut ws = env.attach(&id, false, true).await;
    send(&mut ws, 0, b"one\n").await;
    let (out, err) = read_until(&mut ws, |o, e| {
        o.contains("got one") && e.contains("err one")
    })
    .await;
    assert!(
        !out.contains("ready"),
        "output from before the attach: {out:?}"
    );
    assert_eq!(err, "err one\n");
    // Closing the client's stdin of a container without stdin_once leaves its stdin open.
    ws.send(Message::binary(vec![255u8, 0]))
        .await
        .expect("close stdin");
    drop(ws);

    env.daemon.restart().await.expect("restart criusd");
    assert_eq!(env.state(&id).await, ContainerState::ContainerRunning);
    let mut ws = env.attach(&id, false, true).await;
    send(&mut ws, 0, b"two\n").await;
    read_until(&mut ws, |o, _| o.contains("got two")).await;
    // Two clients at once both get the output. (Output is sent to a client from its
    // connection on: input it sends itself comes after that.)
    let mut second = env.attach(&id, false, true).await;
    send(&mut second, 0, b"three\n").await;
    read_until(&mut ws, |o, _| o.contains("got three")).await;
    read_until(&mut second, |o, _| o.contains("got three")).await;
    drop(ws);
    drop(second);
    assert_eq!(env.state(&id).await, ContainerState::ContainerRunning);

    let lines = env.log_lines("echo");
    for want in [
        ("stdout", "ready"),
        ("stdout", "got one"),
        ("stderr", "err one"),
        ("stdout", "got two"),
        ("stdout", "got three"),
    ] {
        assert!(
            lines
                .iter()
                .any(|(s, _, t)| (s.as_str(), t.as_str()) == want),
            "{want:?} not in the log: {lines:?}"
        );
    }
    assert!(
        !lines.iter().any(|(_, _, t)| t == "stdin-closed"),
        "{lines:?}"
    );
}

/// With `stdin_once`, the container's stdin closes when the first attached client's input
/// ends: by the client closing stdin, or by the client going away.
#[tokio::test]
async fn stdin_once_closes_stdin_after_the_first_attach() {
    let mut env = setup().await;

    // The client closes its stdin: cat ends, the container exits, the session ends.
    let config = stdin_config(&env, "once", "cat; echo cat-ended", true);
    let (_pod, id) = env.run_in_new_pod("once", config).await;
    let mut ws = env.attach(&id, false, true).await;
    send(&mut ws, 0, b"hello once\n").await;
    read_until(&mut ws, |o, _| o.contains("hello once")).await;
    ws.send(Message::binary(vec![255u8, 0]))
        .await
        .expect("close stdin");
    let s = read_session(&mut ws).await;
    assert!(s.stdout().contains("cat-ended"), "{s:?}");
    assert_eq!(s.status.expect("status")["status"], "Success");
    let status = env.wait_exit(&id, Duration::from_secs(30)).await;
    assert_eq!(status.exit_code, 0);
    assert_eq!(env.stdout("once"), ["hello once", "cat-ended"]);
    // An exited container cannot be attached to.
    let err = env
        .daemon
        .runtime
        .attach(AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .expect_err("attach to an exited container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // The client goes away without closing stdin: the same.
    let config = stdin_config(&env, "detach", "cat; echo cat-ended", true);
    let (_pod, id) = env.run_in_new_pod("detach", config).await;
    let mut ws = env.attach(&id, false, true).await;
    send(&mut ws, 0, b"bye\n").await;
    read_until(&mut ws, |o, _| o.contains("bye")).await;
    drop(ws);
    let status = env.wait_exit(&id, Duration::from_secs(30)).await;
    assert_eq!(status.exit_code, 0);
    assert_eq!(env.stdout("detach"), ["bye", "cat-ended"]);

    // A client that attached without stdin does not close it.
    let config = stdin_config(&env, "watch", "cat; echo cat-ended", true);
    let (_pod, id) = env.run_in_new_pod("watch", config).await;
    drop(env.attach(&id, false, false).await);
    let mut ws = env.attach(&id, false, true).await;
    send(&mut ws, 0, b"still open\n").await;
    read_until(&mut ws, |o, _| o.contains("still open")).await;
}

/// A tty container: the shell has a terminal as its controlling tty, attach resizes it, and
/// the terminal's output is logged as stdout in the CRI format.
#[tokio::test]
async fn attach_to_a_tty_container_resizes_its_terminal() {
    let mut env = setup().await;
    let config = ContainerConfig {
        command: vec!["/bin/sh".into()],
        stdin: true,
        tty: true,
        ..env.container_config("tty", "")
    };
    let (_pod, id) = env.run_in_new_pod("tty", config).await;
    let mut ws = env.attach(&id, true, true).await;
    send(&mut ws, 4, br#"{"Width":100,"Height":30}"#).await;
    // The typed text is echoed: the answers are computed so they differ from the input.
    send(
        &mut ws,
        0,
        b"test -t 0 && echo TTY-$((40+2)); stty size; tty; echo CTTY-$(cut -d' ' -f7 /proc/self/stat); echo DONE-$((1+1))\n",
    )
    .await;
    let (out, _) = read_until(&mut ws, |o, _| o.contains("DONE-2")).await;
    assert!(out.contains("TTY-42") && out.contains("30 100"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(
        out.contains("\nCTTY-") && !out.contains("CTTY-0\r"),
        "the terminal is the shell's controlling tty: {out:?}"
    );
    send(&mut ws, 4, br#"{"Width":50,"Height":10}"#).await;
    send(&mut ws, 0, b"stty size\n").await;
    read_until(&mut ws, |o, _| o.contains("10 50")).await;
    send(&mut ws, 0, b"exit 0\n").await;
    let s = read_session(&mut ws).await;
    assert_eq!(s.status.expect("status")["status"], "Success");
    env.wait_exit(&id, Duration::from_secs(30)).await;
    let lines = env.log_lines("tty");
    assert!(lines.iter().all(|(s, _, _)| s == "stdout"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(_, _, t)| t.trim_end_matches('\r') == "30 100"),
        "{lines:?}"
    );
}

/// Twenty exec sessions at once all complete with their own output.
#[tokio::test]
async fn twenty_concurrent_execs_all_complete() {
    let mut env = setup().await;
    let (_pod, id) = env.pod_with("many", false, "sleep 300").await;
    let mut urls = Vec::new();
    for i in 0..20 {
        let cmd = format!("echo start-{i}; cat; echo end-{i}");
        urls.push(
            env.exec_url(&id, &["sh", "-c", &cmd], false, true)
                .await
                .expect("exec url"),
        );
    }
    let sessions = urls.into_iter().enumerate().map(|(i, url)| async move {
        let mut ws = ws_connect(&url, "v5.channel.k8s.io")
            .await
            .expect("connect");
        send(&mut ws, 0, format!("in-{i}\n").as_bytes()).await;
        ws.send(Message::binary(vec![255u8, 0]))
            .await
            .expect("close stdin");
        let s = read_session(&mut ws).await;
        assert_eq!(s.stdout(), format!("start-{i}\nin-{i}\nend-{i}\n"));
        assert_eq!(s.status.expect("status")["status"], "Success");
    });
    futures_util::future::join_all(sessions).await;
}

/// `--stream-address` puts the streaming server where it says; a bad value stops criusd
/// before it starts, naming the key.
#[tokio::test]
async fn stream_address_flag_places_the_streaming_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut daemon = crius_tests::harness::Criusd::start_with(crius_tests::harness::Options {
        config: String::new(),
        args: vec!["--stream-address".into(), format!("127.0.0.1:{port}")],
    })
    .await
    .expect("start criusd");
    let logs = tempfile::tempdir().expect("tempdir");
    let pod = daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("addr", false, logs.path())),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let url = daemon
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod,
            port: vec![80],
        })
        .await
        .expect("port forward")
        .into_inner()
        .url;
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{port}/")),
        "{url}"
    );

    let out = std::process::Command::new(crius_tests::harness::criusd_binary())
        .args(["--stream-address", "not-an-address"])
        .output()
        .expect("run criusd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stream_address"), "{stderr}");
}

/// The SPDY/3 header dictionary of crius-stream's test client.
#[path = "../../crates/crius-stream/tests/support/dictionary.rs"]
mod dictionary;
/// The SPDY/3.1 client of crius-stream's own tests (independent of the server's framing).
#[allow(
    dead_code,
    reason = "shared with crius-stream's tests, which use all of it"
)]
#[path = "../../crates/crius-stream/tests/support/spdy_client.rs"]
mod spdy_client;

/// Opens `streams` over SPDY with one subprotocol, sends `stdin` (then FIN), reads to the end.
async fn spdy_session(
    url: &str,
    protocol: &str,
    streams: &[&str],
    stdin: &[u8],
) -> (HashMap<String, String>, String) {
    let (upgrade, client) = spdy_client::connect(url, &[protocol]).await;
    assert_eq!(upgrade.status, 101, "upgrade refused: {}", upgrade.head);
    let mut client = client.expect("session");
    let mut ids = HashMap::new();
    for s in streams {
        let id = client.open(&[("streamType", s)]).await;
        ids.insert((*s).to_owned(), id);
    }
    if let Some(id) = ids.get("stdin") {
        client.data(*id, stdin, true).await;
    }
    let c = client.collect(Duration::from_secs(30)).await;
    let texts = ids.iter().map(|(k, id)| (k.clone(), c.text(*id))).collect();
    (texts, upgrade.head)
}

/// Every remotecommand subprotocol over SPDY runs an exec in a real container: the older
/// `channel.k8s.io`, `v2.` and `v3.` (exit codes as error text) and `v4.` (a Status).
#[tokio::test]
async fn every_spdy_subprotocol_runs_an_exec() {
    let mut env = setup().await;
    let (_pod, id) = env.pod_with("spdy", false, "sleep 300").await;
    for protocol in [
        "channel.k8s.io",
        "v2.channel.k8s.io",
        "v3.channel.k8s.io",
        "v4.channel.k8s.io",
    ] {
        let script = "echo out-$((1+1)); echo err >&2; cat; exit 3";
        let url = env
            .exec_url(&id, &["sh", "-c", script], false, true)
            .await
            .expect("exec url");
        let (texts, head) = spdy_session(
            &url,
            protocol,
            &["error", "stdin", "stdout", "stderr"],
            b"in\n",
        )
        .await;
        assert!(
            head.contains(&format!("x-stream-protocol-version: {protocol}")),
            "{head}"
        );
        assert_eq!(texts["stdout"], "out-2\nin\n", "{protocol}");
        assert_eq!(texts["stderr"], "err\n", "{protocol}");
        let error = &texts["error"];
        if protocol == "v4.channel.k8s.io" {
            let status: serde_json::Value = serde_json::from_str(error).expect("status");
            assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
            assert_eq!(status["details"]["causes"][0]["message"], "3");
        } else {
            assert!(
                error.contains("non-zero exit code") && error.contains('3'),
                "{protocol}: {error:?}"
            );
        }
    }
}

/// Attach over SPDY (what kubelet speaks): input reaches a `stdin_once` container, its output
/// comes back, and the session ends with the container.
#[tokio::test]
async fn attach_over_spdy() {
    let mut env = setup().await;
    let config = stdin_config(&env, "spdy-attach", "cat; echo done", true);
    let (_pod, id) = env.run_in_new_pod("spdy-attach", config).await;
    let url = env.attach_url(&id, false, true).await;
    let (texts, _) = spdy_session(
        &url,
        "v4.channel.k8s.io",
        &["error", "stdin", "stdout", "stderr"],
        b"via spdy\n",
    )
    .await;
    assert_eq!(texts["stdout"], "via spdy\ndone\n");
    let status: serde_json::Value = serde_json::from_str(&texts["error"]).expect("status");
    assert_eq!(status["status"], "Success", "{status}");
    let status = env.wait_exit(&id, Duration::from_secs(30)).await;
    assert_eq!(status.exit_code, 0);
}

/// An attached client that never reads holds nothing up: the container writes 20 MB, exits,
/// and its log has every line.
#[tokio::test]
async fn an_attached_client_that_never_reads_blocks_nothing() {
    let mut env = setup().await;
    let script =
        "read -r go; yes 0123456789abcdefghijklmnopqrstuvwxyz | head -n 540000; echo finished";
    let config = stdin_config(&env, "flood", script, false);
    let (_pod, id) = env.run_in_new_pod("flood", config).await;
    let mut ws = env.attach(&id, false, true).await;
    // Input goes through the same connection as the client's registration: the output that
    // follows is sent to this client, which never reads it.
    send(&mut ws, 0, b"go\n").await;
    let status = env.wait_exit(&id, Duration::from_secs(120)).await;
    assert_eq!(status.exit_code, 0);
    let lines = env.stdout("flood");
    assert_eq!(lines.len(), 540_001, "every line is logged");
    assert_eq!(lines.last().map(String::as_str), Some("finished"));
    drop(ws);
}

/// Container and exec processes start with no signal ignored or blocked (the monitor, a Rust
/// program, ignores SIGPIPE and blocks SIGCHLD; exec keeps both): `yes | head` ends.
#[tokio::test]
async fn container_and_exec_processes_start_with_default_signals() {
    let mut env = setup().await;
    let script = "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -n 1; sleep 300";
    let (_pod, id) = env.pod_with("signals", false, script).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.stdout("signals").len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", env.stdout("signals"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        env.stdout("signals"),
        [
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
            "y"
        ]
    );
    let out = env
        .exec(
            &id,
            &[
                "sh",
                "-c",
                "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -n 1",
            ],
            10,
        )
        .await
        .expect("exec sync");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\ny\n"
    );
}
