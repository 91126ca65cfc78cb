//! Attach: one session on a container's attach socket, which its pod monitor serves (the
//! monitor holds the container's stdio, so attaching works across criusd restarts). The
//! client's stdin and terminal sizes go in as frames, the container's output comes back as
//! frames until the container exits (the framing is `crius_proto::attach`).

use std::io;

use crius_proto::attach::{self, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{PodError, Pods};

/// The client's stdin: ends (EOF) when the client closes it.
pub type Input = Box<dyn AsyncRead + Send + Unpin>;
/// A stream of output to the client; dropped (or shut down) when the session ends.
pub type Output = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal size sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The client's streams for one attach session; a field is `None` when the client did not
/// ask for that stream.
#[derive(Default)]
pub struct AttachIo {
    /// Standard input from the client.
    pub stdin: Option<Input>,
    /// Standard output to the client.
    pub stdout: Option<Output>,
    /// Standard error to the client (never with a tty).
    pub stderr: Option<Output>,
    /// Terminal sizes, with a tty only.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for AttachIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// Why an attach session failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// No such running container, or its pod monitor is gone.
    #[error(transparent)]
    Container(#[from] PodError),
    /// The attach socket could not be reached.
    #[error("cannot attach to container {id}: {source}")]
    Connect {
        /// The container.
        id: String,
        /// What the connection said.
        source: io::Error,
    },
    /// The session broke.
    #[error("attach to container {id}: {source}")]
    Session {
        /// The container.
        id: String,
        /// What broke.
        source: io::Error,
    },
}

impl Pods {
    /// Attaches `io` to running container `id` until the container exits (the monitor closes
    /// the socket) or the future is dropped (the client went away).
    pub async fn attach(&self, id: &str, io: AttachIo) -> Result<(), AttachError> {
        let (id, path) = self.attach_socket(id)?;
        let conn = connect_attach(&path)
            .await
            .map_err(|source| AttachError::Connect {
                id: id.clone(),
                source,
            })?;
        run_attach(conn, io)
            .await
            .map_err(|source| AttachError::Session { id, source })
    }
}

/// Connects to a container's attach socket (its path may be longer than a socket address).
async fn connect_attach(path: &std::path::Path) -> io::Result<tokio::net::UnixStream> {
    let (dir, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => (dir.to_owned(), name.to_owned()),
        _ => {
            return Err(io::Error::other(format!(
                "bad socket path {}",
                path.display()
            )));
        }
    };
    let (handle, short) =
        tokio::task::spawn_blocking(move || crius_proto::socket_path(&dir, &name))
            .await
            .map_err(io::Error::other)??;
    let conn = tokio::net::UnixStream::connect(&short).await;
    drop(handle);
    conn
}

/// Runs one attach session on a connected attach socket until the container exits (the
/// monitor closes the socket) or the future is dropped (the client went away: the monitor
/// sees the connection close).
async fn run_attach(conn: tokio::net::UnixStream, io: AttachIo) -> io::Result<()> {
    let (mut rd, mut wr) = conn.into_split();
    let mut hello = Vec::new();
    Frame::Hello {
        stdin: io.stdin.is_some(),
    }
    .encode(&mut hello);
    wr.write_all(&hello).await?;

    let mut stdin = io.stdin;
    let mut resize = io.resize;
    let input = async move {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let mut frames = Vec::new();
            tokio::select! {
                read = async { stdin.as_mut().expect("guarded").read(&mut buf).await },
                    if stdin.is_some() => match read {
                    Ok(0) | Err(_) => {
                        stdin = None;
                        Frame::StdinEof.encode(&mut frames);
                    }
                    Ok(n) => attach::encode_stdin(&mut frames, &buf[..n]),
                },
                size = async { resize.as_mut().expect("guarded").recv().await },
                    if resize.is_some() => match size {
                    Some(size) => Frame::Resize {
                        width: size.width,
                        height: size.height,
                    }
                    .encode(&mut frames),
                    None => resize = None,
                },
                else => break,
            }
            if wr.write_all(&frames).await.is_err() {
                break;
            }
        }
        // Keep the write half open: closing it would read as a detach.
        std::future::pending::<()>().await;
        drop(wr);
    };

    let mut stdout = io.stdout;
    let mut stderr = io.stderr;
    let output = async {
        let mut buf = Vec::with_capacity(64 << 10);
        let mut chunk = vec![0u8; 64 << 10];
        let result = loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let (to, data) = match Frame::decode(&mut buf) {
                    Ok(Some(Frame::Stdout(d))) => (&mut stdout, d),
                    Ok(Some(Frame::Stderr(d))) => (&mut stderr, d),
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => return Err(io::Error::other(e)),
                };
                if let Some(w) = to
                    && w.write_all(&data).await.is_err()
                {
                    *to = None;
                }
            }
        };
        for w in [&mut stdout, &mut stderr].into_iter().flatten() {
            let _ = w.shutdown().await;
        }
        result
    };
    tokio::select! {
        result = output => result,
        () = input => Ok(()),
    }
}
