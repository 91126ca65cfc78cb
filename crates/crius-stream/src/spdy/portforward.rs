//! Port forwarding over SPDY (`portforward.k8s.io`): for every forwarded connection the client
//! opens a pair of streams, `error` and `data`, sharing a `requestID` and naming the `port`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::conn::{self, IncomingStream, SessionLimits, SpdyHandle};
use super::frame::{RST_CANCEL, RST_PROTOCOL_ERROR};
use crate::backend::Backend;

/// The SPDY subprotocol of port forwarding.
pub(crate) const PROTOCOL: &str = "portforward.k8s.io";
/// Most streams (two per forwarded connection) open at once on one session.
const MAX_STREAMS: usize = 256;
/// Bytes buffered between the client's data stream and the backend, per direction.
const PIPE_BUFFER: usize = 64 << 10;

struct Half {
    stream: IncomingStream,
    port: u16,
}

#[derive(Default)]
struct Pending {
    data: Option<Half>,
    error: Option<Half>,
    since: Option<Instant>,
}

/// Serves port forwarding on an upgraded SPDY connection until the client closes it or it has
/// been idle (no open forward, no new stream) for `idle_timeout`.
pub(crate) async fn serve<IO, B>(
    io: IO,
    pod_id: String,
    backend: Arc<B>,
    creation_timeout: Duration,
    idle_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    B: Backend,
{
    let limits = SessionLimits {
        max_streams: MAX_STREAMS,
    };
    let (handle, mut incoming) = match conn::start(io, limits) {
        Ok(started) => started,
        Err(e) => {
            debug!(error = %e, "cannot start spdy session");
            return;
        }
    };
    let pod_id: Arc<str> = pod_id.into();
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(16);
    let mut active = 0usize;
    let mut last_activity = Instant::now();
    loop {
        let sweep = tokio::time::sleep(Duration::from_secs(1).min(creation_timeout));
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { break };
                last_activity = Instant::now();
                accept(&handle, stream, &mut pending).await;
                let complete: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.data.is_some() && p.error.is_some())
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in complete {
                    if let Some(Pending { data: Some(data), error: Some(error), .. }) =
                        pending.remove(&key)
                    {
                        active += 1;
                        let done = done_tx.clone();
                        tokio::spawn(forward(
                            handle.clone(),
                            data,
                            error,
                            pod_id.clone(),
                            backend.clone(),
                            done,
                        ));
                    }
                }
            }
            Some(()) = done_rx.recv() => {
                active = active.saturating_sub(1);
                last_activity = Instant::now();
            }
            () = sweep => {
                let now = Instant::now();
                let mut expired = Vec::new();
                pending.retain(|request_id, p| {
                    let fresh = p.since.is_some_and(|t| now.duration_since(t) < creation_timeout);
                    if !fresh {
                        expired.push((request_id.clone(), p.error.take(), p.data.take()));
                    }
                    fresh
                });
                // Like kubelet: say so on the error stream if there is one, drop the rest.
                for (request_id, error, data) in expired {
                    debug!(request = %request_id, "port-forward stream pair incomplete");
                    if let Some(error) = error {
                        let msg = format!("timed out waiting for the streams of request {request_id}");
                        handle.data(error.stream.id, msg.as_bytes()).await;
                        handle.fin(error.stream.id).await;
                    }
                    if let Some(data) = data {
                        handle.reset(data.stream.id, RST_CANCEL).await;
                    }
                }
                if active == 0 && pending.is_empty() && now.duration_since(last_activity) >= idle_timeout {
                    debug!("port-forward session idle; closing");
                    break;
                }
            }
        }
    }
    handle.finish(Duration::from_secs(2)).await;
}

/// Files a new stream under its request id, or resets it when its headers are bad.
async fn accept(
    handle: &SpdyHandle,
    stream: IncomingStream,
    pending: &mut HashMap<String, Pending>,
) {
    let kind = stream.header("streamtype").map(str::to_owned);
    let port = stream
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        debug!(
            stream = stream.id,
            "port-forward stream without a valid port header"
        );
        handle.reset(stream.id, RST_PROTOCOL_ERROR).await;
        return;
    };
    // Old clients send no requestID: the error stream precedes its data stream by 2.
    let request_id = match (stream.header("requestid"), kind.as_deref()) {
        (Some(id), _) => id.to_owned(),
        (None, Some("error")) => stream.id.to_string(),
        (None, _) => stream.id.saturating_sub(2).to_string(),
    };
    let entry = pending.entry(request_id).or_default();
    entry.since.get_or_insert_with(Instant::now);
    let slot = match kind.as_deref() {
        Some("data") => &mut entry.data,
        Some("error") => &mut entry.error,
        _ => {
            debug!(stream = stream.id, "port-forward stream of unknown type");
            handle.reset(stream.id, RST_PROTOCOL_ERROR).await;
            return;
        }
    };
    if slot.is_some() {
        handle.reset(stream.id, RST_PROTOCOL_ERROR).await;
        return;
    }
    handle.reply(stream.id).await;
    *slot = Some(Half { stream, port });
}

/// Runs one forwarded connection: pumps the data stream to and from the backend's pipe and
/// reports a backend failure on the error stream.
async fn forward<B: Backend>(
    handle: SpdyHandle,
    data: Half,
    error: Half,
    pod_id: Arc<str>,
    backend: Arc<B>,
    done: mpsc::Sender<()>,
) {
    let port = data.port;
    if error.port != port {
        debug!("port-forward stream pair names two ports");
    }
    let data_id = data.stream.id;
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    let (mut rd, mut wr) = tokio::io::split(ours);
    let mut inbound = data.stream.data;
    let credit = handle.clone();
    let to_backend = tokio::spawn(async move {
        while let Some(chunk) = inbound.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
            credit.consumed(data_id, chunk.len()).await;
        }
        let _ = wr.shutdown().await;
    });
    let out = handle.clone();
    let to_client = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out.data(data_id, &buf[..n]).await {
                        return;
                    }
                }
            }
        }
        out.fin(data_id).await;
    });
    let result = backend.port_forward(&pod_id, port, theirs).await;
    let _ = to_client.await;
    to_backend.abort();
    if let Err(e) = result {
        let msg = format!("error forwarding port {port} to pod {pod_id}: {e}");
        debug!(%msg);
        handle.data(error.stream.id, msg.as_bytes()).await;
    }
    handle.fin(error.stream.id).await;
    let _ = done.send(()).await;
}
