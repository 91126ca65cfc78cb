//! The client side of the monitor socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crius_proto::{
    Failure, MonitorState, PROTOCOL_VERSION, Reply, ReplyBody, Request, RequestBody, layout,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long a monitor may take to answer. StopSandbox waits for the sandbox to die, and a
/// monitor of a node starting hundreds of containers at once answers late but answers (seen
/// past 30 s with 250 pods creating their second container together on 2 cores); kubelet's
/// own deadline (`--runtime-request-timeout`, 2 minutes by default) ends a call before this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);

/// A monitor request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The monitor cannot be reached (it is gone).
    #[error("cannot reach the pod monitor at {path}: {source}")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The exchange failed midway or timed out.
    #[error("pod monitor at {path}: {reason}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The monitor answered with an error.
    #[error("pod monitor: {0}")]
    Refused(#[source] Failure),
}

/// Sends one request to the monitor of the pod in `dir` and returns the state it reports.
pub async fn request(dir: &Path, body: RequestBody) -> Result<MonitorState, ClientError> {
    let path = dir.join(layout::SOCKET);
    let protocol = |reason: String| ClientError::Protocol {
        path: path.clone(),
        reason,
    };
    let exchange = async {
        let unreachable = |source| ClientError::Unreachable {
            path: path.clone(),
            source,
        };
        let (_dir, short) = crius_proto::socket_path(dir, layout::SOCKET).map_err(unreachable)?;
        let stream = tokio::net::UnixStream::connect(&short)
            .await
            .map_err(unreachable)?;
        let (read, mut write) = stream.into_split();
        let mut line =
            serde_json::to_string(&Request::new(body)).map_err(|e| protocol(e.to_string()))?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let mut answer = String::new();
        BufReader::new(read)
            .read_line(&mut answer)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        if answer.is_empty() {
            return Err(protocol("closed the connection without an answer".into()));
        }
        let reply: Reply =
            serde_json::from_str(&answer).map_err(|e| protocol(format!("bad answer: {e}")))?;
        if reply.version != PROTOCOL_VERSION {
            return Err(protocol(format!(
                "speaks protocol version {}",
                reply.version
            )));
        }
        match reply.result.map_err(ClientError::Refused)? {
            ReplyBody::State(state) => Ok(state),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(protocol(format!("no answer in {REQUEST_TIMEOUT:?}"))),
    }
}
