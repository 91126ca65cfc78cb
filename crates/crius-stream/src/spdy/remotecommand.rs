//! remotecommand (exec, attach) over a SPDY session: one stream per `streamType`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::conn::{self, IncomingStream, SessionLimits, SpdyHandle};
use super::frame::RST_REFUSED_STREAM;
use crate::backend::Backend;
use crate::remotecommand::{self, Chan, Command, Inputs, Opts, OutputSink, Version};

/// The stream ids of a session's streams, by channel.
#[derive(Clone)]
struct SpdySink {
    handle: SpdyHandle,
    ids: Arc<HashMap<Chan, u32>>,
}

impl OutputSink for SpdySink {
    async fn send(&self, chan: Chan, data: Bytes) -> bool {
        match self.ids.get(&chan) {
            Some(id) => self.handle.data(*id, &data).await,
            None => true,
        }
    }

    async fn close(&self, chan: Chan) {
        if let Some(id) = self.ids.get(&chan) {
            self.handle.fin(*id).await;
        }
    }

    async fn consumed(&self, chan: Chan, n: usize) {
        if let Some(id) = self.ids.get(&chan) {
            self.handle.consumed(*id, n).await;
        }
    }
}

/// Serves one exec or attach on an upgraded SPDY connection.
pub(crate) async fn serve<IO, B>(
    io: IO,
    version: Version,
    command: Command,
    opts: Opts,
    backend: Arc<B>,
    creation_timeout: Duration,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
    B: Backend,
{
    let (handle, mut incoming) = match conn::start(io, SessionLimits { max_streams: 8 }) {
        Ok(started) => started,
        Err(e) => {
            debug!(error = %e, "cannot start spdy session");
            return;
        }
    };
    let expected = remotecommand::expected_streams(opts, version);
    let mut streams: HashMap<Chan, IncomingStream> = HashMap::new();
    let deadline = tokio::time::Instant::now() + creation_timeout;
    while !expected.iter().all(|c| streams.contains_key(c)) {
        let stream = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => {
                debug!("client closed before opening its streams");
                handle.finish(Duration::from_millis(100)).await;
                return;
            }
            Err(_) => {
                debug!("client did not open its streams in time");
                handle.finish(Duration::from_secs(1)).await;
                return;
            }
        };
        let chan = stream.header("streamtype").and_then(Chan::from_stream_type);
        match chan {
            Some(chan) if expected.contains(&chan) && !streams.contains_key(&chan) => {
                handle.reply(stream.id).await;
                streams.insert(chan, stream);
            }
            _ => {
                debug!(stream = stream.id, "refusing an unexpected stream");
                handle.reset(stream.id, RST_REFUSED_STREAM).await;
            }
        }
    }
    // Later streams are not wanted.
    let refuse = handle.clone();
    tokio::spawn(async move {
        while let Some(stream) = incoming.recv().await {
            refuse.reset(stream.id, RST_REFUSED_STREAM).await;
        }
    });

    let ids: HashMap<Chan, u32> = streams.iter().map(|(c, s)| (*c, s.id)).collect();
    let mut inputs = Inputs::default();
    if let Some(s) = streams.remove(&Chan::Stdin) {
        inputs.stdin = Some(s.data);
    }
    if let Some(s) = streams.remove(&Chan::Resize) {
        inputs.resize = Some(s.data);
    }
    // Data the client sends on output streams is not wanted: dropping the receivers discards it.
    drop(streams);
    let sink = SpdySink {
        handle: handle.clone(),
        ids: Arc::new(ids),
    };
    let gone = handle.clone();
    remotecommand::run(backend, command, opts, version, sink, inputs, async move {
        gone.closed().await
    })
    .await;
    handle.finish(Duration::from_secs(5)).await;
}
