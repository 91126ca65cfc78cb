//! A server-side SPDY/3.1 session over an upgraded connection.
//!
//! One task reads frames and routes them; one task owns the deflate stream and writes. The
//! protocol handlers get [`IncomingStream`]s (a client-opened stream with its headers and a
//! receiver of its data) and a [`SpdyHandle`] to reply, send data, half-close and reset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tracing::debug;

use super::frame::{
    FLAG_FIN, Frame, FrameEncoder, FrameError, FrameReader, GOAWAY_OK, GOAWAY_PROTOCOL_ERROR,
    Headers, ProtocolError, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, RST_STREAM_IN_USE, SEND_CHUNK,
};

/// Inbound data chunks buffered per stream before the connection reader waits.
const STREAM_QUEUE: usize = 16;
/// Frames queued for the writer.
const WRITE_QUEUE: usize = 64;

/// A stream the client opened.
pub(crate) struct IncomingStream {
    /// Stream id.
    pub(crate) id: u32,
    /// Its headers (names lower-case).
    pub(crate) headers: Headers,
    /// Its data; ends when the client half-closes or resets the stream.
    pub(crate) data: mpsc::Receiver<Bytes>,
}

impl IncomingStream {
    /// The first value of a header, by lower-case name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }
}

enum WriteCmd {
    Frame(Frame),
    /// Send GOAWAY, flush, half-close the transport, then acknowledge.
    Close(u32, oneshot::Sender<()>),
}

/// Sends on a SPDY session; cheap to clone.
#[derive(Clone)]
pub(crate) struct SpdyHandle {
    tx: mpsc::Sender<WriteCmd>,
    closed: watch::Receiver<bool>,
    reader: Arc<Mutex<Option<AbortHandle>>>,
}

impl SpdyHandle {
    async fn send(&self, frame: Frame) -> bool {
        self.tx.send(WriteCmd::Frame(frame)).await.is_ok()
    }

    /// Accepts a stream with an empty SYN_REPLY.
    pub(crate) async fn reply(&self, stream_id: u32) -> bool {
        self.send(Frame::SynReply {
            stream_id,
            flags: 0,
            headers: Vec::new(),
        })
        .await
    }

    /// Sends data, split into frames of at most [`SEND_CHUNK`] bytes.
    pub(crate) async fn data(&self, stream_id: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(SEND_CHUNK) {
            let frame = Frame::Data {
                stream_id,
                flags: 0,
                data: Bytes::copy_from_slice(chunk),
            };
            if !self.send(frame).await {
                return false;
            }
        }
        true
    }

    /// Half-closes this side of a stream.
    pub(crate) async fn fin(&self, stream_id: u32) -> bool {
        self.send(Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Resets a stream.
    pub(crate) async fn reset(&self, stream_id: u32, status: u32) -> bool {
        self.send(Frame::RstStream { stream_id, status }).await
    }

    /// Returns credit for `n` consumed bytes on a stream and on the session.
    pub(crate) async fn consumed(&self, stream_id: u32, n: usize) {
        let Ok(delta) = u32::try_from(n) else { return };
        if delta == 0 {
            return;
        }
        let _ = self.send(Frame::WindowUpdate { stream_id, delta }).await;
        let _ = self
            .send(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            })
            .await;
    }

    /// Ends the session: GOAWAY, flush, half-close; waits at most `grace` for the writer.
    pub(crate) async fn close(&self, grace: Duration) {
        let (ack_tx, ack_rx) = oneshot::channel();
        if self
            .tx
            .send(WriteCmd::Close(GOAWAY_OK, ack_tx))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(grace, ack_rx).await;
        }
    }

    /// Ends the session and lets the client read the rest: GOAWAY, half-close, then wait up
    /// to `grace` for the client to close before dropping the connection.
    pub(crate) async fn finish(&self, grace: Duration) {
        self.close(grace).await;
        let _ = tokio::time::timeout(grace, self.closed()).await;
        let reader = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(reader) = reader {
            reader.abort();
        }
    }

    /// Resolves when the connection is gone (the peer closed it, or it failed).
    pub(crate) async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Limits of one session.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SessionLimits {
    /// Most client streams open at once.
    pub(crate) max_streams: usize,
}

/// Starts a session on an upgraded transport: returns the send handle and the receiver of
/// client-opened streams (which ends when the connection does).
pub(crate) fn start<IO>(
    io: IO,
    limits: SessionLimits,
) -> Result<(SpdyHandle, mpsc::Receiver<IncomingStream>), FrameError>
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE);
    let (incoming_tx, incoming_rx) = mpsc::channel(limits.max_streams.max(1));
    let (closed_tx, closed_rx) = watch::channel(false);
    let encoder = FrameEncoder::new()?;
    tokio::spawn(write_loop(wr, encoder, write_rx));
    let handle = SpdyHandle {
        tx: write_tx,
        closed: closed_rx,
        reader: Arc::new(Mutex::new(None)),
    };
    let reader_handle = handle.clone();
    let reader = tokio::spawn(async move {
        if let Err(e) = read_loop(rd, &reader_handle, incoming_tx, limits).await {
            debug!(error = %e, "spdy session ended by a protocol error");
            let (ack_tx, ack_rx) = oneshot::channel();
            if reader_handle
                .tx
                .send(WriteCmd::Close(GOAWAY_PROTOCOL_ERROR, ack_tx))
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(Duration::from_secs(1), ack_rx).await;
            }
        }
        let _ = closed_tx.send(true);
    });
    *handle
        .reader
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reader.abort_handle());
    Ok((handle, incoming_rx))
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut encoder: FrameEncoder,
    mut rx: mpsc::Receiver<WriteCmd>,
) {
    let mut last_peer_stream = 0u32;
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriteCmd::Frame(frame) => {
                if let Frame::SynReply { stream_id, .. } = &frame {
                    last_peer_stream = last_peer_stream.max(*stream_id);
                }
                let bytes = match encoder.encode(&frame) {
                    Ok(b) => b,
                    Err(e) => {
                        debug!(error = %e, "spdy encode failed");
                        break;
                    }
                };
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            WriteCmd::Close(status, ack) => {
                let goaway = Frame::GoAway {
                    last_good_stream_id: last_peer_stream,
                    status,
                };
                if let Ok(bytes) = encoder.encode(&goaway) {
                    let _ = wr.write_all(&bytes).await;
                }
                let _ = wr.flush().await;
                let _ = wr.shutdown().await;
                let _ = ack.send(());
                break;
            }
        }
    }
    // Dropping the write half; further sends fail and the handlers wind down.
}

struct StreamState {
    tx: Option<mpsc::Sender<Bytes>>,
}

async fn read_loop<R: AsyncRead + Unpin>(
    rd: R,
    handle: &SpdyHandle,
    incoming: mpsc::Sender<IncomingStream>,
    limits: SessionLimits,
) -> Result<(), FrameError> {
    let mut reader = FrameReader::new(rd);
    let mut streams: HashMap<u32, StreamState> = HashMap::new();
    let mut last_id = 0u32;
    loop {
        let frame = match reader.read_frame().await {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Io(e)) => {
                debug!(error = %e, "spdy read failed");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if stream_id == 0 || stream_id % 2 == 0 {
                    return Err(ProtocolError::EvenStreamId { stream_id }.into());
                }
                if streams.contains_key(&stream_id) {
                    handle.reset(stream_id, RST_STREAM_IN_USE).await;
                    continue;
                }
                if stream_id <= last_id {
                    handle.reset(stream_id, RST_PROTOCOL_ERROR).await;
                    continue;
                }
                last_id = stream_id;
                if streams.len() >= limits.max_streams {
                    handle.reset(stream_id, RST_REFUSED_STREAM).await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                // With FIN the client sends nothing more: the receiver ends at once.
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, StreamState { tx: Some(tx) });
                }
                let stream = IncomingStream {
                    id: stream_id,
                    headers,
                    data: rx,
                };
                if incoming.send(stream).await.is_err() {
                    // Nobody accepts streams any more.
                    handle.reset(stream_id, RST_REFUSED_STREAM).await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let Some(state) = streams.get_mut(&stream_id) else {
                    // Data for a stream that is closed or unknown: drop it (spdystream does).
                    continue;
                };
                if !data.is_empty()
                    && let Some(tx) = &state.tx
                    && tx.send(data).await.is_err()
                {
                    // The handler does not want this stream's data.
                    state.tx = None;
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::Ping { id } => {
                // Echo pings the client started (odd ids); ours would be even.
                if id % 2 == 1 {
                    handle.send(Frame::Ping { id }).await;
                }
            }
            // No new streams will come; the open ones run on until the transport closes.
            Frame::GoAway { .. }
            | Frame::SynReply { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
    }
}
