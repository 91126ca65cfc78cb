//! The remotecommand protocol (exec and attach), independent of the transport: which streams a
//! session has, how the backend is driven, how terminal sizes are parsed, and the error
//! stream's content (a Kubernetes `Status` from v4 on, plain text before).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::backend::{Backend, StreamIo, TerminalSize};
use crate::error::BackendError;

/// Bytes buffered between a client stream and the backend, per direction.
const PIPE_BUFFER: usize = 64 << 10;
/// Largest partial resize message kept while waiting for the rest.
const MAX_RESIZE_BUFFER: usize = 4 << 10;
/// How long output may keep flowing after the backend returned.
const OUTPUT_DRAIN: Duration = Duration::from_secs(10);

/// SPDY subprotocols of remotecommand, most preferred first.
pub(crate) const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// A remotecommand protocol version (what the error and resize streams mean).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    /// `channel.k8s.io` (or no header): error stream is text.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a `Status`.
    V4,
    /// `v5.channel.k8s.io` (WebSocket only): adds the stdin close signal.
    V5,
}

impl Version {
    /// The version of a SPDY subprotocol name.
    pub(crate) fn from_spdy(name: &str) -> Option<Self> {
        match name {
            "v4.channel.k8s.io" => Some(Version::V4),
            "v3.channel.k8s.io" => Some(Version::V3),
            "v2.channel.k8s.io" => Some(Version::V2),
            "channel.k8s.io" | "" => Some(Version::V1),
            _ => None,
        }
    }

    /// Whether the error stream carries a JSON `Status`.
    pub(crate) fn status_json(self) -> bool {
        self >= Version::V4
    }
}

/// The command a session runs.
#[derive(Debug, Clone)]
pub(crate) enum Command {
    /// An exec.
    Exec {
        /// Container.
        container_id: String,
        /// Command line.
        cmd: Vec<String>,
    },
    /// An attach.
    Attach {
        /// Container.
        container_id: String,
    },
}

/// Which streams the CRI request asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opts {
    /// stdin.
    pub(crate) stdin: bool,
    /// stdout.
    pub(crate) stdout: bool,
    /// stderr.
    pub(crate) stderr: bool,
    /// tty (and so a resize stream).
    pub(crate) tty: bool,
}

/// The streams of a session, as channel numbers in the WebSocket protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Chan {
    /// 0.
    Stdin,
    /// 1.
    Stdout,
    /// 2.
    Stderr,
    /// 3.
    Error,
    /// 4.
    Resize,
}

impl Chan {
    /// The WebSocket channel number.
    pub(crate) fn number(self) -> u8 {
        match self {
            Chan::Stdin => 0,
            Chan::Stdout => 1,
            Chan::Stderr => 2,
            Chan::Error => 3,
            Chan::Resize => 4,
        }
    }

    /// The channel of a SPDY `streamType` header.
    pub(crate) fn from_stream_type(t: &str) -> Option<Self> {
        match t {
            "stdin" => Some(Chan::Stdin),
            "stdout" => Some(Chan::Stdout),
            "stderr" => Some(Chan::Stderr),
            "error" => Some(Chan::Error),
            "resize" => Some(Chan::Resize),
            _ => None,
        }
    }
}

/// Where a session's output goes: implemented by each transport.
pub(crate) trait OutputSink: Clone + Send + Sync + 'static {
    /// Sends data on a stream; false when the client is gone.
    fn send(&self, chan: Chan, data: Bytes) -> impl Future<Output = bool> + Send;
    /// Half-closes a stream.
    fn close(&self, chan: Chan) -> impl Future<Output = ()> + Send;
    /// Tells the client `n` bytes of a stream were consumed (flow control).
    fn consumed(&self, chan: Chan, n: usize) -> impl Future<Output = ()> + Send;
}

/// What came of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An exec ended with this code.
    Exited(i32),
    /// An attach ended.
    Detached,
    /// The backend failed.
    Failed(BackendError),
}

/// The streams the client must open for a session (besides the error stream).
pub(crate) fn expected_streams(opts: Opts, version: Version) -> Vec<Chan> {
    let mut chans = vec![Chan::Error];
    if opts.stdin {
        chans.push(Chan::Stdin);
    }
    if opts.stdout {
        chans.push(Chan::Stdout);
    }
    if opts.stderr && !opts.tty {
        chans.push(Chan::Stderr);
    }
    if opts.tty && version >= Version::V3 {
        chans.push(Chan::Resize);
    }
    chans
}

/// Client input of a session, as chunks.
#[derive(Default)]
pub(crate) struct Inputs {
    /// stdin chunks; the channel ends at the client's half-close.
    pub(crate) stdin: Option<mpsc::Receiver<Bytes>>,
    /// resize stream chunks.
    pub(crate) resize: Option<mpsc::Receiver<Bytes>>,
}

/// Runs one exec or attach: wires the client's streams to the backend, waits for it (or for
/// the client to go away), drains output and writes the exit status on the error stream.
pub(crate) async fn run<B: Backend, S: OutputSink>(
    backend: Arc<B>,
    command: Command,
    opts: Opts,
    version: Version,
    sink: S,
    inputs: Inputs,
    client_gone: impl Future<Output = ()> + Send,
) {
    let mut io = StreamIo::default();
    let mut tasks = Vec::new();
    if let Some(rx) = inputs.stdin {
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        io.stdin = Some(Box::new(theirs));
        tokio::spawn(feed_stdin(rx, ours, sink.clone()));
    }
    if opts.stdout {
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        io.stdout = Some(Box::new(theirs));
        tasks.push(tokio::spawn(pump_output(ours, Chan::Stdout, sink.clone())));
    }
    if opts.stderr && !opts.tty {
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        io.stderr = Some(Box::new(theirs));
        tasks.push(tokio::spawn(pump_output(ours, Chan::Stderr, sink.clone())));
    }
    if let Some(rx) = inputs.resize {
        let (tx, sizes) = mpsc::channel(16);
        io.resize = Some(sizes);
        tokio::spawn(feed_resize(rx, tx));
    }

    let tty = opts.tty;
    let work = async {
        match &command {
            Command::Exec { container_id, cmd } => {
                match backend.exec(container_id, cmd, tty, io).await {
                    Ok(code) => Outcome::Exited(code),
                    Err(e) => Outcome::Failed(e),
                }
            }
            Command::Attach { container_id } => match backend.attach(container_id, tty, io).await {
                Ok(()) => Outcome::Detached,
                Err(e) => Outcome::Failed(e),
            },
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        () = client_gone => {
            debug!("streaming client went away; backend call dropped");
            return;
        }
    };
    // Output written before the process ended must reach the client before the status.
    for task in tasks {
        if tokio::time::timeout(OUTPUT_DRAIN, task).await.is_err() {
            debug!("output still open after the backend returned; not waiting longer");
        }
    }
    if let Some(body) = error_stream_body(&outcome, version) {
        sink.send(Chan::Error, Bytes::from(body)).await;
    }
    sink.close(Chan::Error).await;
}

async fn feed_stdin<S: OutputSink>(mut rx: mpsc::Receiver<Bytes>, mut pipe: DuplexStream, sink: S) {
    while let Some(chunk) = rx.recv().await {
        if pipe.write_all(&chunk).await.is_err() {
            break;
        }
        sink.consumed(Chan::Stdin, chunk.len()).await;
    }
    let _ = pipe.shutdown().await;
}

async fn pump_output<S: OutputSink>(mut pipe: DuplexStream, chan: Chan, sink: S) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !sink.send(chan, Bytes::copy_from_slice(&buf[..n])).await {
                    // The client is gone: dropping the pipe makes the backend's writes fail.
                    return;
                }
            }
        }
    }
    sink.close(chan).await;
}

async fn feed_resize(mut rx: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TerminalSize>) {
    let mut parser = ResizeParser::default();
    while let Some(chunk) = rx.recv().await {
        let Ok(sizes) = parser.push(&chunk) else {
            debug!("malformed resize stream; ignoring the rest");
            return;
        };
        for size in sizes {
            if tx.send(size).await.is_err() {
                return;
            }
        }
    }
}

/// Splits the resize stream (concatenated JSON objects) into terminal sizes.
#[derive(Default)]
pub(crate) struct ResizeParser {
    buf: Vec<u8>,
}

impl ResizeParser {
    /// Adds bytes; returns the complete sizes now available, or `Err` on garbage.
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Vec<TerminalSize>, ()> {
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut used = 0;
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    sizes.push(size);
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => return Err(()),
                None => {
                    used = it.byte_offset();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > MAX_RESIZE_BUFFER {
            return Err(());
        }
        Ok(sizes)
    }
}

/// What the error stream carries for an outcome, if anything.
pub(crate) fn error_stream_body(outcome: &Outcome, version: Version) -> Option<Vec<u8>> {
    if version.status_json() {
        let status = match outcome {
            Outcome::Exited(0) | Outcome::Detached => {
                json!({"metadata": {}, "status": "Success"})
            }
            Outcome::Exited(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(e) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {e}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": e.message}]},
                "code": 500,
            }),
        };
        return serde_json::to_vec(&status).ok();
    }
    match outcome {
        Outcome::Exited(0) | Outcome::Detached => None,
        Outcome::Exited(code) => Some(
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes(),
        ),
        Outcome::Failed(e) => Some(e.message.clone().into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_parser_handles_split_and_joined_objects() {
        let mut p = ResizeParser::default();
        assert_eq!(p.push(br#"{"Width":80,"#), Ok(vec![]));
        assert_eq!(
            p.push(br#""Height":24}{"Width":100,"Height":30}"#),
            Ok(vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 30
                }
            ])
        );
        assert!(p.push(b"]garbage").is_err());
    }

    #[test]
    fn v4_status_carries_the_exit_code() {
        let body = error_stream_body(&Outcome::Exited(3), Version::V4).expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(error_stream_body(&Outcome::Exited(0), Version::V2), None);
        let failed = Outcome::Failed(BackendError::new("no such container"));
        let body = error_stream_body(&failed, Version::V4).expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["message"], "Internal error occurred: no such container");
        assert_eq!(v["details"]["causes"][0]["message"], "no such container");
        assert_eq!(
            error_stream_body(&failed, Version::V2),
            Some(b"no such container".to_vec())
        );
    }
}
