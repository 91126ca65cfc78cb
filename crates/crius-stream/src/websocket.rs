//! remotecommand and port forwarding over WebSocket: every message is one channel byte and
//! the payload. Binary protocols send binary messages; the `base64.` protocols send text
//! messages whose channel is an ASCII digit and whose payload is base64.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::debug;

use crate::backend::Backend;
use crate::remotecommand::{self, Chan, Command, Inputs, Opts, OutputSink, Version};

/// Largest message accepted from a client.
const MAX_MESSAGE: usize = 1 << 20;
/// The v5 stream-close signal (first byte of a message; the second names the channel).
const STREAM_CLOSE: u8 = 255;
/// Bytes buffered between a forwarded connection and the backend, per direction.
const PIPE_BUFFER: usize = 64 << 10;

/// Remotecommand WebSocket subprotocols, with their version and encoding.
const EXEC_PROTOCOLS: &[(&str, Version, bool)] = &[
    ("v5.channel.k8s.io", Version::V5, false),
    ("v4.channel.k8s.io", Version::V4, false),
    ("v4.base64.channel.k8s.io", Version::V4, true),
    ("channel.k8s.io", Version::V1, false),
    ("base64.channel.k8s.io", Version::V1, true),
];

/// The subprotocol of port forwarding as SPDY/3.1 tunnelled through WebSocket binary
/// messages (client-go's `NewSPDYOverWebsocketDialer`, critest's `--websocket-portforward`).
pub(crate) const SPDY_TUNNEL_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Port-forward WebSocket subprotocols, with their encoding.
const PORT_FORWARD_PROTOCOLS: &[(&str, bool)] = &[
    ("v4.channel.k8s.io", false),
    ("v4.base64.channel.k8s.io", true),
    ("portforward.k8s.io", false),
];

/// A negotiated WebSocket subprotocol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    /// The name to answer with (None when the client offered none).
    pub(crate) name: Option<&'static str>,
    /// remotecommand version.
    pub(crate) version: Version,
    /// base64 text framing.
    pub(crate) base64: bool,
    /// A SPDY session tunnelled in binary messages (port forwarding only).
    pub(crate) spdy_tunnel: bool,
}

/// Picks the first protocol the client offers that is supported; with none offered, the
/// binary `channel.k8s.io` behaviour. `None` when the client offers only unknown ones.
pub(crate) fn negotiate(offered: &[String], port_forward: bool) -> Option<Negotiated> {
    if offered.is_empty() {
        return Some(Negotiated {
            name: None,
            version: if port_forward {
                Version::V4
            } else {
                Version::V1
            },
            base64: false,
            spdy_tunnel: false,
        });
    }
    for want in offered {
        if port_forward && want == SPDY_TUNNEL_PORT_FORWARD {
            return Some(Negotiated {
                name: Some(SPDY_TUNNEL_PORT_FORWARD),
                version: Version::V4,
                base64: false,
                spdy_tunnel: true,
            });
        }
        if port_forward {
            if let Some((name, b64)) = PORT_FORWARD_PROTOCOLS.iter().find(|(n, _)| n == want) {
                return Some(Negotiated {
                    name: Some(name),
                    version: Version::V4,
                    base64: *b64,
                    spdy_tunnel: false,
                });
            }
        } else if let Some((name, version, b64)) = EXEC_PROTOCOLS.iter().find(|(n, _, _)| n == want)
        {
            return Some(Negotiated {
                name: Some(name),
                version: *version,
                base64: *b64,
                spdy_tunnel: false,
            });
        }
    }
    None
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Encodes one channel message.
fn encode(channel: u8, data: &[u8], base64: bool) -> Message {
    if base64 {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0' + channel));
        STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut buf = Vec::with_capacity(1 + data.len());
        buf.push(channel);
        buf.extend_from_slice(data);
        Message::binary(buf)
    }
}

/// A decoded client message.
enum Incoming {
    Data(u8, Bytes),
    CloseChannel(u8),
    Ignore,
    End,
}

fn decode(msg: Message, base64: bool, version: Version) -> Incoming {
    let raw: Bytes = match msg {
        Message::Binary(b) if !base64 => b,
        Message::Text(t) if base64 => Bytes::copy_from_slice(t.as_str().as_bytes()),
        Message::Close(_) => return Incoming::End,
        _ => return Incoming::Ignore,
    };
    let Some(&first) = raw.first() else {
        return Incoming::Ignore;
    };
    if version >= Version::V5 && first == STREAM_CLOSE {
        return match raw.get(1) {
            Some(&ch) if raw.len() == 2 => Incoming::CloseChannel(ch),
            _ => Incoming::Ignore,
        };
    }
    if base64 {
        let Some(ch) = first.checked_sub(b'0') else {
            return Incoming::Ignore;
        };
        match STANDARD.decode(&raw[1..]) {
            Ok(data) => Incoming::Data(ch, Bytes::from(data)),
            Err(_) => Incoming::Ignore,
        }
    } else {
        Incoming::Data(first, raw.slice(1..))
    }
}

/// The Close frame that ends a session: code 1000. A Close without a code reads as 1005
/// ("no status") in gorilla/websocket, which client-go reports as an error on every stream.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// Writes outgoing messages; ends with a Close frame.
fn spawn_writer<S>(mut sink: S) -> mpsc::Sender<Message>
where
    S: futures_util::Sink<Message> + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let close = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tx
}

#[derive(Clone)]
struct WsSink {
    tx: mpsc::Sender<Message>,
    base64: bool,
}

impl OutputSink for WsSink {
    async fn send(&self, chan: Chan, data: Bytes) -> bool {
        self.tx
            .send(encode(chan.number(), &data, self.base64))
            .await
            .is_ok()
    }

    async fn close(&self, _chan: Chan) {
        // Channels have no close signal towards the client; the connection's end closes them.
    }

    async fn consumed(&self, _chan: Chan, _n: usize) {}
}

/// Serves one exec or attach on an upgraded WebSocket connection.
pub(crate) async fn serve_remotecommand<IO, B>(
    io: IO,
    proto: Negotiated,
    command: Command,
    opts: Opts,
    backend: Arc<B>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (sink, mut stream) = ws.split();
    let tx = spawn_writer(sink);
    // Tell the client the session is up: an empty message on the lowest writable channel.
    let first = if opts.stdout {
        Chan::Stdout
    } else if opts.stderr {
        Chan::Stderr
    } else {
        Chan::Error
    };
    let _ = tx.send(encode(first.number(), &[], proto.base64)).await;

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<Bytes>(16);
    let (gone_tx, gone_rx) = watch::channel(false);
    let version = proto.version;
    let base64 = proto.base64;
    let reader = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            match decode(msg, base64, version) {
                Incoming::Data(0, data) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Incoming::Data(4, data) => {
                    let _ = resize_tx.send(data).await;
                }
                Incoming::CloseChannel(0) => stdin_tx = None,
                Incoming::End => break,
                Incoming::Data(..) | Incoming::CloseChannel(_) | Incoming::Ignore => {}
            }
        }
        let _ = gone_tx.send(true);
    });
    let inputs = Inputs {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: opts.tty.then_some(resize_rx),
    };
    let ws_sink = WsSink {
        tx: tx.clone(),
        base64,
    };
    let mut gone = gone_rx.clone();
    remotecommand::run(
        backend,
        command,
        opts,
        version,
        ws_sink,
        inputs,
        async move {
            let _ = gone.wait_for(|g| *g).await;
        },
    )
    .await;
    let _ = tx.send(normal_close()).await;
    drop(tx);
    // Let the client read everything and answer the close.
    let mut gone = gone_rx;
    let _ = tokio::time::timeout(Duration::from_secs(5), gone.wait_for(|g| *g)).await;
    reader.abort();
}

/// Turns an upgraded WebSocket connection whose binary messages carry a byte stream (a
/// tunnelled SPDY session) back into that byte stream. The pump ends, closing the WebSocket,
/// when either side ends.
pub(crate) async fn tunnel<IO>(io: IO) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(ours);
        let inbound = async {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(data) if wr.write_all(&data).await.is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; PIPE_BUFFER];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.send(normal_close()).await;
            let _ = sink.close().await;
        };
        // Either end finishing ends the other: the SPDY side's end closes the WebSocket, the
        // client's end closes the SPDY side's input. Neither waits long for the other.
        let mut inbound = std::pin::pin!(inbound);
        let mut outbound = std::pin::pin!(outbound);
        tokio::select! {
            () = &mut outbound => {
                let _ = tokio::time::timeout(Duration::from_secs(5), inbound).await;
            }
            () = &mut inbound => {
                let _ = tokio::time::timeout(Duration::from_secs(5), outbound).await;
            }
        }
    });
    theirs
}

/// Serves port forwarding for `ports` on an upgraded WebSocket connection: channel 2i carries
/// port i's data both ways, 2i+1 its errors; each starts with the port, 2 bytes little-endian.
pub(crate) async fn serve_port_forward<IO, B>(
    io: IO,
    proto: Negotiated,
    pod_id: String,
    ports: Vec<u16>,
    backend: Arc<B>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await;
    let (sink, mut stream) = ws.split();
    let tx = spawn_writer(sink);
    let base64 = proto.base64;
    let mut inbound = Vec::new();
    let mut tasks = Vec::new();
    let pod_id: Arc<str> = pod_id.into();
    for (i, port) in ports.iter().copied().enumerate() {
        let (Ok(data_ch), Ok(err_ch)) = (u8::try_from(2 * i), u8::try_from(2 * i + 1)) else {
            break;
        };
        let _ = tx.send(encode(data_ch, &port.to_le_bytes(), base64)).await;
        let _ = tx.send(encode(err_ch, &port.to_le_bytes(), base64)).await;
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(16);
        inbound.push(in_tx);
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        let (mut rd, mut wr) = tokio::io::split(ours);
        tokio::spawn(async move {
            while let Some(chunk) = in_rx.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = wr.shutdown().await;
        });
        let out = tx.clone();
        let pump = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.send(encode(data_ch, &buf[..n], base64)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let backend = backend.clone();
        let pod = pod_id.clone();
        let out = tx.clone();
        tasks.push(tokio::spawn(async move {
            let result = backend.port_forward(&pod, port, theirs).await;
            let _ = pump.await;
            if let Err(e) = result {
                let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                debug!(%msg);
                let _ = out.send(encode(err_ch, msg.as_bytes(), base64)).await;
            }
        }));
    }
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match decode(msg, base64, Version::V4) {
                Incoming::Data(ch, data) if ch % 2 == 0 => {
                    if let Some(tx) = inbound.get(usize::from(ch / 2))
                        && tx.send(data).await.is_err()
                    {
                        debug!(channel = ch, "forwarded connection already closed");
                    }
                }
                Incoming::End => break,
                _ => {}
            }
        }
    });
    for task in tasks {
        let _ = task.await;
    }
    let _ = tx.send(normal_close()).await;
    drop(tx);
    let abort = reader.abort_handle();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    abort.abort();
}
