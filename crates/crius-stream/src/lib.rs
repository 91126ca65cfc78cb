//! The streaming server of crius: serves the URLs that the CRI Exec, Attach and PortForward
//! calls return, speaking what kubelet, the API server, kubectl and crictl speak to them —
//! the Kubernetes remotecommand and port-forward protocols over SPDY/3.1 and WebSocket.
//!
//! The daemon starts a [`StreamServer`] with its [`Backend`], and for each CRI call asks it
//! for a URL ([`StreamServer::exec_url`] and friends): the request is validated, stored under a
//! single-use random token that expires, and the URL names the token. When the client
//! connects, the server upgrades the connection, collects the client's streams and calls the
//! backend with them ([`StreamIo`]), then reports the exit status the way the negotiated
//! protocol wants it.
//!
//! Connections that have not yet named a live token are handshakes: a small pool of their
//! own with a deadline, where a new connection evicts the oldest, so junk connections cannot
//! keep a client holding a token out (see `admission`).
//!
//! Modules: `server` (HTTP, routing, negotiation), `admission` (the handshake pool), `token`
//! (the token store), `spdy` (SPDY/3.1 framing and sessions, with remotecommand and port
//! forwarding on top), `websocket` (both protocols over WebSocket), `remotecommand` (what
//! exec and attach mean, transport-free).

mod admission;
mod backend;
mod dictionary;
mod error;
mod remotecommand;
mod request;
mod server;
mod spdy;
mod token;
mod websocket;

pub use backend::{Backend, OutputWriter, PortStream, StdinReader, StreamIo, TerminalSize};
pub use error::{BackendError, RequestError, ServerError};
pub use request::{AttachRequest, ExecRequest, PortForwardRequest};
pub use server::{StreamConfig, StreamServer};

/// Entry points of the fuzz targets in `fuzz/` into parsers of untrusted input.
#[doc(hidden)]
pub mod fuzzing {
    use futures_util::FutureExt;

    /// Reads SPDY frames from `data` as a connection does until the end or an error; the
    /// number of frames read.
    pub fn read_frames(data: &[u8]) -> usize {
        let mut reader = crate::spdy::frame::FrameReader::new(data);
        let mut n = 0;
        // Reading from a slice never waits: every poll completes.
        while let Some(Ok(_)) = reader.read_frame().now_or_never() {
            n += 1;
        }
        n
    }
}
