//! Errors of the streaming layer.

/// A streaming request the CRI layer must refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The container id is empty.
    #[error("container id must not be empty")]
    EmptyContainerId,
    /// The pod sandbox id is empty.
    #[error("pod sandbox id must not be empty")]
    EmptyPodId,
    /// The exec command is empty.
    #[error("command must not be empty")]
    EmptyCommand,
    /// None of stdin, stdout and stderr was asked for.
    #[error("one of stdin, stdout, or stderr must be set")]
    NoStreams,
    /// A tty merges stderr into stdout, so asking for both is contradictory.
    #[error("tty and stderr cannot both be true")]
    TtyWithStderr,
    /// A port outside 1..=65535.
    #[error("invalid port {0}: must be between 1 and 65535")]
    InvalidPort(i32),
    /// Too many URLs handed out and not yet used.
    #[error("maximum number of in-flight streaming requests ({0}) exceeded")]
    TooManyInFlight(usize),
    /// The kernel's random number generator failed (no token is handed out without it).
    #[error("cannot make a streaming token: {source}")]
    NoRandomness {
        /// What the kernel's generator reported.
        source: getrandom::Error,
    },
}

impl RequestError {
    /// True when the error is the caller's fault (gRPC InvalidArgument); otherwise it is
    /// [`RequestError::TooManyInFlight`] (gRPC ResourceExhausted) or
    /// [`RequestError::NoRandomness`] (gRPC Internal).
    pub fn is_invalid_argument(&self) -> bool {
        !matches!(
            self,
            RequestError::TooManyInFlight(_) | RequestError::NoRandomness { .. }
        )
    }
}

/// The streaming server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the bound address failed.
    #[error("cannot read the bound address: {0}")]
    LocalAddr(std::io::Error),
}

/// A failure the backend reports for an exec, attach or port-forward.
///
/// The message is sent to the client (on the error stream) as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// What went wrong, for the user of kubectl or crictl.
    pub message: String,
}

impl BackendError {
    /// A backend error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}
