//! Streaming: the CRI `Exec`, `Attach` and `PortForward` calls hand out URLs of crius-stream's
//! server, and [`StreamBackend`] serves them.
//!
//! - **Exec** runs the same helper as ExecSync (`criusd monitor --pod-dir D --exec ID -- CMD`,
//!   see `Pods::exec_command`): without a tty its stdin, stdout and stderr are pipes copied
//!   to and from the client; with a tty criusd allocates a pseudo-terminal, the helper gets
//!   the slave as stdin/stdout/stderr, makes it its own controlling terminal in raw mode,
//!   runs the command on a new pty of the container's devpts (so `tty` names a terminal the
//!   container has) and copies bytes between the two; resizes go to criusd's master
//!   (TIOCSWINSZ) and the helper copies them on at SIGWINCH. When
//!   the client goes away the helper gets SIGTERM, kills and reaps the command, and exits.
//! - **PortForward** connects to `127.0.0.1:PORT` (then `[::1]:PORT`) inside the pod's pinned
//!   network namespace from a short-lived thread of its own (setns never runs on a tokio
//!   worker), hands the socket to tokio and copies both ways. A hostNetwork pod's ports are
//!   the host's.
//! - **Attach** connects to the container's attach socket, which its pod monitor serves (the
//!   monitor holds the container's stdio, so attaching works across criusd restarts):
//!   the client's stdin and resizes go in as frames, the container's output comes back as
//!   frames until the container exits (see crius-runtime's `attach`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crius_runtime::spec::NamespaceMode;
use crius_runtime::{PodError, Pods};
use crius_stream::{
    Backend, BackendError, OutputWriter, PortStream, StreamConfig, StreamIo, StreamServer,
    TerminalSize,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::Cri;
use crate::status::pod_error;

/// How long output may still arrive after the exec'd process ended (a background process
/// holding the stream open is not waited for longer).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long a tty exec waits for the client's first terminal size before starting.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(200);
/// Connecting to a port in the pod's network namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The streaming server of a [`Cri`], started on first use (or at start from `Cri::open`).
pub(crate) struct Streaming {
    server: OnceCell<StreamServer<StreamBackend>>,
    config: StreamConfig,
    pods: Arc<Pods>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("listen", &self.config.listen)
            .field("started", &self.server.get().map(StreamServer::base_url))
            .finish()
    }
}

impl Streaming {
    pub(crate) fn new(listen: SocketAddr, pods: Arc<Pods>) -> Streaming {
        Streaming {
            server: OnceCell::new(),
            config: StreamConfig {
                listen,
                ..StreamConfig::default()
            },
            pods,
        }
    }

    /// The running server, started now if it is not yet.
    pub(crate) async fn server(&self) -> Result<&StreamServer<StreamBackend>, tonic::Status> {
        self.server
            .get_or_try_init(|| async {
                let backend = Arc::new(StreamBackend {
                    pods: self.pods.clone(),
                });
                let server = StreamServer::start(self.config.clone(), backend).await?;
                tracing::info!(url = server.base_url(), "streaming server listening");
                Ok::<_, crius_stream::ServerError>(server)
            })
            .await
            .map_err(|e| tonic::Status::unavailable(format!("streaming server: {e}")))
    }
}

/// A streaming request refused by crius-stream, as a gRPC status.
fn request_status(e: crius_stream::RequestError) -> tonic::Status {
    use crius_stream::RequestError;
    match e {
        e if e.is_invalid_argument() => tonic::Status::invalid_argument(e.to_string()),
        e @ RequestError::TooManyInFlight(_) => tonic::Status::resource_exhausted(e.to_string()),
        e => tonic::Status::internal(e.to_string()),
    }
}

impl Cri {
    /// Starts the streaming server in the background if a tokio runtime runs (a failure is
    /// logged here and reported again by the first streaming call).
    pub(crate) fn start_streaming(self: &Arc<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let cri = self.clone();
            handle.spawn(async move {
                if let Err(e) = cri.stream.server().await {
                    tracing::warn!(error = e.message(), "cannot start the streaming server");
                }
            });
        }
    }

    /// The base URL of the streaming server (starting it if needed).
    pub async fn stream_base_url(&self) -> Result<String, tonic::Status> {
        Ok(self.stream.server().await?.base_url().to_owned())
    }

    /// The full id of the running container `id` names (NotFound, or FailedPrecondition when
    /// it is not running).
    fn running_container_id(&self, id: &str) -> Result<String, tonic::Status> {
        Ok(self
            .pods
            .running_container(id)
            .map_err(pod_error)?
            .record
            .id
            .clone())
    }

    /// CRI Exec: checks the request and the container, returns the URL.
    pub(crate) async fn exec(
        &self,
        req: cri_api::v1::ExecRequest,
    ) -> Result<cri_api::v1::ExecResponse, tonic::Status> {
        let req = crius_stream::ExecRequest {
            container_id: req.container_id,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        req.validate().map_err(request_status)?;
        let req = crius_stream::ExecRequest {
            container_id: self.running_container_id(&req.container_id)?,
            ..req
        };
        let url = self
            .stream
            .server()
            .await?
            .exec_url(req)
            .map_err(request_status)?;
        Ok(cri_api::v1::ExecResponse { url })
    }

    /// CRI Attach: checks the request and the container, returns the URL.
    pub(crate) async fn attach(
        &self,
        req: cri_api::v1::AttachRequest,
    ) -> Result<cri_api::v1::AttachResponse, tonic::Status> {
        let req = crius_stream::AttachRequest {
            container_id: req.container_id,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        };
        req.validate().map_err(request_status)?;
        let req = crius_stream::AttachRequest {
            container_id: self.running_container_id(&req.container_id)?,
            ..req
        };
        let url = self
            .stream
            .server()
            .await?
            .attach_url(req)
            .map_err(request_status)?;
        Ok(cri_api::v1::AttachResponse { url })
    }

    /// CRI PortForward: checks the request and that the pod runs, returns the URL.
    pub(crate) async fn port_forward(
        &self,
        req: cri_api::v1::PortForwardRequest,
    ) -> Result<cri_api::v1::PortForwardResponse, tonic::Status> {
        let req = crius_stream::PortForwardRequest {
            pod_id: req.pod_sandbox_id,
            ports: req.port,
        };
        req.validate().map_err(request_status)?;
        let pod = self.pods.get(&req.pod_id).map_err(pod_error)?;
        if !pod.ready {
            return Err(tonic::Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                pod.record.id
            )));
        }
        let req = crius_stream::PortForwardRequest {
            pod_id: pod.record.id.clone(),
            ..req
        };
        let url = self
            .stream
            .server()
            .await?
            .port_forward_url(req)
            .map_err(request_status)?;
        Ok(cri_api::v1::PortForwardResponse { url })
    }
}

/// The runtime side of streaming.
#[derive(Debug)]
pub(crate) struct StreamBackend {
    pods: Arc<Pods>,
}

fn backend_error(e: PodError) -> BackendError {
    BackendError::new(e.to_string())
}

impl Backend for StreamBackend {
    async fn exec(
        &self,
        container_id: &str,
        cmd: &[String],
        tty: bool,
        io: StreamIo,
    ) -> Result<i32, BackendError> {
        let command = self
            .pods
            .exec_command(container_id, cmd)
            .map_err(backend_error)?;
        let status = if tty {
            exec_tty(command, io).await
        } else {
            exec_pipes(command, io).await
        };
        status
            .map(crius_runtime::containers::exit_code_of)
            .map_err(|e| BackendError::new(format!("exec in container {container_id}: {e}")))
    }

    async fn attach(
        &self,
        container_id: &str,
        _tty: bool,
        io: StreamIo,
    ) -> Result<(), BackendError> {
        // Terminal sizes as the runtime takes them; the forwarder ends with either side.
        let resize = io.resize.map(|mut sizes| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Some(size) = sizes.recv().await {
                    let size = crius_runtime::attach::TerminalSize {
                        width: size.width,
                        height: size.height,
                    };
                    if tx.send(size).await.is_err() {
                        break;
                    }
                }
            });
            rx
        });
        let io = crius_runtime::attach::AttachIo {
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            resize,
        };
        self.pods
            .attach(container_id, io)
            .await
            .map_err(|e| BackendError::new(e.to_string()))
    }

    async fn port_forward(
        &self,
        pod_id: &str,
        port: u16,
        mut stream: PortStream,
    ) -> Result<(), BackendError> {
        let pod = self.pods.get(pod_id).map_err(backend_error)?;
        if !pod.ready {
            return Err(BackendError::new(format!(
                "pod sandbox {} is not ready",
                pod.record.id
            )));
        }
        let netns = if pod.record.spec.namespaces.network == NamespaceMode::Node {
            None
        } else {
            Some(pod.record.netns.clone().ok_or_else(|| {
                BackendError::new(format!(
                    "pod sandbox {} has no network namespace",
                    pod.record.id
                ))
            })?)
        };
        let mut tcp = connect_in(netns, port)
            .await
            .map_err(|e| BackendError::new(format!("cannot connect to port {port}: {e}")))?;
        if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await {
            tracing::debug!(pod = pod_id, port, error = %e, "forwarded connection ended");
        }
        Ok(())
    }
}

/// Connects to `port` on the loopback of a network namespace (`None`: the host's).
async fn connect_in(netns: Option<PathBuf>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("crius-portfwd".into())
        .spawn(move || {
            let _ = tx.send(connect_blocking(netns, port));
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the connecting thread died"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// On a thread of its own (which ends right after): joins the network namespace, connects.
fn connect_blocking(netns: Option<PathBuf>, port: u16) -> io::Result<std::net::TcpStream> {
    if let Some(path) = netns {
        let ns = std::fs::File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("setns {}: {e}", path.display())))?;
    }
    let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
            std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
        }
        Err(e) => Err(e),
    }
}

/// Copies `from` into `to` until `from` ends, then closes `to`.
async fn copy_and_close(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// A running exec helper. Dropped before it ended (the client went away), it gets SIGTERM,
/// on which it kills and reaps the command before it exits (a SIGKILL would leave the
/// command to its parent-death signal and its corpse to the namespace's init); tokio reaps
/// the helper.
struct Helper(tokio::process::Child);

impl Helper {
    fn spawn(command: &mut tokio::process::Command) -> io::Result<Helper> {
        command.kill_on_drop(false).spawn().map(Helper)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Not yet reaped, so the pid is still this helper's.
        if let Ok(None) = self.0.try_wait()
            && let Some(pid) = self.0.id().and_then(|p| i32::try_from(p).ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// [`copy_and_close`] when both ends exist.
async fn copy_some(from: Option<impl AsyncRead + Unpin>, to: Option<OutputWriter>) {
    if let (Some(from), Some(to)) = (from, to) {
        copy_and_close(from, to).await;
    }
}

/// Runs the helper with pipes; returns its exit status.
async fn exec_pipes(
    mut command: tokio::process::Command,
    io: StreamIo,
) -> io::Result<std::process::ExitStatus> {
    let piped = |yes: bool| if yes { Stdio::piped() } else { Stdio::null() };
    command
        .stdin(piped(io.stdin.is_some()))
        .stdout(piped(io.stdout.is_some()))
        .stderr(piped(io.stderr.is_some()));
    let mut child = Helper::spawn(&mut command)?;
    drop(command);
    let child_stdin = child.0.stdin.take();
    let stdin = async {
        if let (Some(from), Some(to)) = (io.stdin, child_stdin) {
            copy_and_close(from, to).await;
        }
        // The client may keep stdin open after the process ended: never wait for it.
        std::future::pending::<()>().await;
    };
    let out = child.0.stdout.take();
    let err = child.0.stderr.take();
    let outputs = async {
        tokio::join!(copy_some(out, io.stdout), copy_some(err, io.stderr));
    };
    let run = async {
        let mut outputs = std::pin::pin!(outputs);
        let mut drained = false;
        let status = loop {
            tokio::select! {
                status = child.0.wait() => break status,
                () = &mut outputs, if !drained => drained = true,
            }
        };
        if !drained {
            let _ = tokio::time::timeout(OUTPUT_GRACE, outputs).await;
        }
        status
    };
    tokio::select! {
        status = run => status,
        () = stdin => Err(io::Error::other("stdin ended the exec")),
    }
}

/// The master side of a pseudo-terminal, non-blocking, for tokio.
struct PtyMaster(AsyncFd<OwnedFd>);

impl PtyMaster {
    /// Opens a pty pair: the master (close-on-exec) and the slave (close-on-exec, no
    /// controlling terminal for criusd).
    fn open(size: Option<TerminalSize>) -> io::Result<(PtyMaster, OwnedFd)> {
        use nix::fcntl::OFlag;
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
        nix::pty::grantpt(&master)?;
        nix::pty::unlockpt(&master)?;
        let name = nix::pty::ptsname_r(&master)?;
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)?
            .into();
        let master: OwnedFd = master.into();
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open while registered.
        let master = PtyMaster(unsafe { AsyncFd::register(master) }?);
        if let Some(size) = size {
            master.resize(size);
        }
        Ok((master, slave))
    }

    fn resize(&self, size: TerminalSize) {
        let ws = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
        let ret = unsafe {
            libc::ioctl(
                self.0.get_ref().as_raw_fd(),
                libc::TIOCSWINSZ,
                &ws as *const libc::winsize,
            )
        };
        if ret < 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "TIOCSWINSZ failed");
        }
    }

    /// Reads output; 0 when every slave is closed (the kernel answers EIO).
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` (input to the terminal).
    async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Runs the helper on a new pseudo-terminal; returns its exit status.
async fn exec_tty(
    mut command: tokio::process::Command,
    io: StreamIo,
) -> io::Result<std::process::ExitStatus> {
    let mut resize = io.resize;
    let first = match &mut resize {
        Some(rx) => tokio::time::timeout(FIRST_SIZE_WAIT, rx.recv())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let (master, slave) = PtyMaster::open(first)?;
    command
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    let spawned = Helper::spawn(&mut command);
    // The command holds criusd's copies of the slave: they must close, or the master never
    // sees the end of the output.
    drop(command);
    let mut child = spawned?;

    let input = async {
        if let Some(mut from) = io.stdin {
            let mut buf = vec![0u8; 32 << 10];
            let mut first = true;
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // `kubectl exec -it` through the API server's stream translator opens
                        // stdin with one NUL byte, which the terminals echo as `^@^@` before
                        // anything the user typed; a terminal session never starts with ^@.
                        let data = match &buf[..n] {
                            [0, rest @ ..] if first => rest,
                            data => data,
                        };
                        first = false;
                        if master.write_all(data).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        std::future::pending::<()>().await;
    };
    let sizes = async {
        if let Some(rx) = &mut resize {
            while let Some(size) = rx.recv().await {
                master.resize(size);
            }
        }
        std::future::pending::<()>().await;
    };
    let output = pump_tty_output(&master, io.stdout);
    let run = async {
        let mut output = std::pin::pin!(output);
        let mut drained = false;
        let status = loop {
            tokio::select! {
                status = child.0.wait() => break status,
                () = &mut output, if !drained => drained = true,
            }
        };
        if !drained {
            let _ = tokio::time::timeout(OUTPUT_GRACE, output).await;
        }
        status
    };
    tokio::select! {
        status = run => status,
        () = input => Err(io::Error::other("stdin ended the exec")),
        () = sizes => Err(io::Error::other("resize ended the exec")),
    }
}

/// Copies the terminal's output to the client (or discards it when stdout was not asked for,
/// so the command never blocks on a full terminal).
async fn pump_tty_output(master: &PtyMaster, mut to: Option<OutputWriter>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match master.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(w) = &mut to
                    && w.write_all(&buf[..n]).await.is_err()
                {
                    to = None;
                }
            }
        }
    }
    if let Some(mut w) = to {
        let _ = w.shutdown().await;
    }
}
