//! A backend that runs real host processes (`sh -c`), with a pty for tty sessions, and
//! forwards ports to real TCP listeners on the host's loopback.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use crius_stream::{Backend, BackendError, PortStream, StreamIo, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Runs `cmd` on the host. Attach runs `sh -c <container id>`, which lets tests pick the
/// "container's" program by its id.
pub struct ProcessBackend;

fn set_winsize(fd: &OwnedFd, size: TerminalSize) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is an open pty.
    unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

async fn copy_out(mut from: impl tokio::io::AsyncRead + Unpin, mut to: crius_stream::OutputWriter) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            // A pty master reads EIO once the last slave fd is closed.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

async fn run(cmd: &[String], tty: bool, mut io: StreamIo) -> Result<i32, BackendError> {
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| BackendError::new("empty command"))?;
    let mut command = Command::new(program);
    command.args(args).kill_on_drop(true);
    let mut copies = Vec::new();
    let mut master_keep = None;
    if tty {
        // The first size normally arrives right away; start with it.
        let mut size = TerminalSize {
            width: 80,
            height: 24,
        };
        if let Some(rx) = io.resize.as_mut()
            && let Ok(Some(first)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await
        {
            size = first;
        }
        let pty = nix::pty::openpty(None, None).map_err(|e| BackendError::new(e.to_string()))?;
        set_winsize(&pty.master, size);
        let slave = pty.slave;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| BackendError::new(e.to_string()));
        command
            .stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(dup(&slave)?));
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let master = pty.master;
        if let Some(mut rx) = io.resize.take() {
            let resize_fd = master
                .try_clone()
                .map_err(|e| BackendError::new(e.to_string()))?;
            tokio::spawn(async move {
                while let Some(size) = rx.recv().await {
                    set_winsize(&resize_fd, size);
                }
            });
        }
        let reader = tokio::fs::File::from_std(std::fs::File::from(
            master
                .try_clone()
                .map_err(|e| BackendError::new(e.to_string()))?,
        ));
        let mut writer = tokio::fs::File::from_std(std::fs::File::from(
            master
                .try_clone()
                .map_err(|e| BackendError::new(e.to_string()))?,
        ));
        if let Some(out) = io.stdout.take() {
            copies.push(tokio::spawn(copy_out(reader, out)));
        }
        if let Some(mut stdin) = io.stdin.take() {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut stdin, &mut writer).await;
            });
        }
        master_keep = Some(master);
        let mut child = command
            .spawn()
            .map_err(|e| BackendError::new(e.to_string()))?;
        // The command keeps copies of the slave fds; the master reads EOF only once all close.
        drop(command);
        drop(slave);
        let status = child
            .wait()
            .await
            .map_err(|e| BackendError::new(e.to_string()))?;
        for c in copies {
            let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
        }
        drop(master_keep);
        return Ok(status.code().unwrap_or(128));
    }
    command
        .stdin(if io.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if io.stdout.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if io.stderr.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command
        .spawn()
        .map_err(|e| BackendError::new(e.to_string()))?;
    if let (Some(mut from), Some(mut to)) = (io.stdin.take(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        });
    }
    if let (Some(to), Some(from)) = (io.stdout.take(), child.stdout.take()) {
        copies.push(tokio::spawn(copy_out(from, to)));
    }
    if let (Some(to), Some(from)) = (io.stderr.take(), child.stderr.take()) {
        copies.push(tokio::spawn(copy_out(from, to)));
    }
    let status = child
        .wait()
        .await
        .map_err(|e| BackendError::new(e.to_string()))?;
    for c in copies {
        let _ = c.await;
    }
    drop(master_keep);
    Ok(status.code().unwrap_or(128))
}

impl Backend for ProcessBackend {
    async fn exec(
        &self,
        _container_id: &str,
        cmd: &[String],
        tty: bool,
        io: StreamIo,
    ) -> Result<i32, BackendError> {
        run(cmd, tty, io).await
    }

    async fn attach(
        &self,
        container_id: &str,
        tty: bool,
        io: StreamIo,
    ) -> Result<(), BackendError> {
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), container_id.to_owned()];
        run(&cmd, tty, io).await.map(|_| ())
    }

    async fn port_forward(
        &self,
        _pod_id: &str,
        port: u16,
        mut stream: PortStream,
    ) -> Result<(), BackendError> {
        let mut tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| BackendError::new(format!("dial 127.0.0.1:{port}: {e}")))?;
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
        Ok(())
    }
}

/// A TCP echo server on a free loopback port; returns the port.
pub async fn echo_listener() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo listener");
    let port = listener.local_addr().expect("echo addr").port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rd, mut wr) = conn.split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
            });
        }
    });
    port
}
