//! What the daemon implements: running an exec, attaching, and connecting a forwarded port.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

use crate::error::BackendError;

/// The client's stdin: ends (EOF) when the client closes it.
pub type StdinReader = Box<dyn AsyncRead + Send + Unpin>;
/// A stream of output to the client; drop it (or shut it down) to close it.
pub type OutputWriter = Box<dyn AsyncWrite + Send + Unpin>;
/// The client's side of one forwarded connection: read what the client sends, write what the
/// port answers; shut down the write side to half-close.
pub type PortStream = DuplexStream;

/// A terminal size sent by the client (the JSON of Kubernetes' `TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's streams for one exec or attach; a field is `None` when the request did not
/// ask for that stream.
///
/// The backend must drop `stdout` and `stderr` when the process is done with them: the
/// session waits for them to close before it reports the exit status.
#[derive(Default)]
pub struct StreamIo {
    /// Standard input from the client.
    pub stdin: Option<StdinReader>,
    /// Standard output to the client.
    pub stdout: Option<OutputWriter>,
    /// Standard error to the client (never with a tty).
    pub stderr: Option<OutputWriter>,
    /// Terminal sizes, with a tty only: the first one arrives as soon as the client sends it.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// The runtime side of streaming, implemented by the daemon.
///
/// The streaming server has already validated the request and authenticated the client by its
/// single-use token; the backend checks the container or pod still exists.
///
/// When the client disconnects, the server drops the future of the exec or attach: an
/// implementation cleans up on drop (an attach simply detaches; an exec should kill what it
/// started, e.g. with `kill_on_drop`). An error's message goes to the client as is.
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in the container with the client's streams, returning its exit code.
    fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        io: StreamIo,
    ) -> impl Future<Output = Result<i32, BackendError>> + Send;

    /// Connects the client's streams to the running container's own stdio until the container
    /// exits or the client goes away.
    fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: StreamIo,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Connects `stream` to `port` on the pod's loopback (inside its network namespace) until
    /// either side closes.
    fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
        stream: PortStream,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
