//! A container's attach socket: output fanned out to attached clients, their input to the
//! container's stdin, resizes to its terminal. Everything is non-blocking: a client that falls
//! behind by more than [`MAX_CLIENT_BACKLOG`] is dropped, input waits in a bounded buffer.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crius_proto::attach::{self, Frame};
use nix::poll::PollFlags;

use crate::Error;
use crate::logs::Stream;

/// Output an attached client may have unread before it is dropped.
const MAX_CLIENT_BACKLOG: usize = 1 << 20;
/// Input waiting for the container to read it; clients are not read while it is full.
const MAX_STDIN_BACKLOG: usize = 1 << 20;
/// Clients attached to one container at once; more are turned away.
const MAX_CLIENTS: usize = 32;
/// What a tty container's stdin gets when it is closed: the terminal's end-of-file character.
const TTY_EOF: u8 = 0x04;

/// Something of a container the monitor polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The stdout (or terminal) or stderr read end.
    Output(Stream),
    /// The attach socket.
    Listener,
    /// An attached client.
    Client(u64),
    /// The write end of the container's stdin, while input waits.
    Stdin,
}

#[derive(Debug)]
struct Client {
    id: u64,
    conn: UnixStream,
    /// Bytes read but not yet a whole frame.
    input: Vec<u8>,
    /// Frames not yet written.
    output: Vec<u8>,
    /// The client attached stdin (from its hello).
    stdin: bool,
    /// Drop once `output` is written (the container exited).
    closing: bool,
}

/// A container's stdin, attach socket and clients.
#[derive(Debug)]
pub(crate) struct Attach {
    listener: UnixListener,
    clients: Vec<Client>,
    next_id: u64,
    /// The write side of the container's stdin (a pipe, or the terminal), while open.
    stdin: Option<OwnedFd>,
    stdin_backlog: Vec<u8>,
    /// Close stdin once the backlog is written.
    stdin_closing: bool,
    stdin_once: bool,
    /// The terminal's master, for resizes.
    pty: Option<OwnedFd>,
    exited: bool,
}

impl Attach {
    /// Binds the attach socket in the container directory `dir` (mode 0600).
    pub(crate) fn bind(
        dir: &Path,
        stdin: Option<OwnedFd>,
        stdin_once: bool,
        pty: Option<OwnedFd>,
    ) -> Result<Attach, Error> {
        let path = dir.join(attach::SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = crius_proto::socket_path(dir, attach::SOCKET)
            .and_then(|(_dir, short)| UnixListener::bind(short))
            .map_err(Error::io(format!("cannot listen on {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io(format!("cannot restrict {}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("cannot make the attach socket non-blocking"))?;
        if let Some(fd) = &stdin {
            set_nonblocking(fd)?;
        }
        Ok(Attach {
            listener,
            clients: Vec::new(),
            next_id: 0,
            stdin,
            stdin_backlog: Vec::new(),
            stdin_closing: false,
            stdin_once,
            pty,
            exited: false,
        })
    }

    /// What to poll, besides the output ends.
    pub(crate) fn interest(&self, out: &mut Vec<(Source, RawFd, PollFlags)>) {
        out.push((
            Source::Listener,
            self.listener.as_raw_fd(),
            PollFlags::POLLIN,
        ));
        let stdin_full = self.stdin_backlog.len() >= MAX_STDIN_BACKLOG;
        for c in &self.clients {
            let mut flags = PollFlags::empty();
            if !stdin_full && !c.closing {
                flags |= PollFlags::POLLIN;
            }
            if !c.output.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            // POLLHUP and POLLERR are reported even with no events asked: a client that is
            // neither read nor written is left out until stdin has room again.
            if !flags.is_empty() {
                out.push((Source::Client(c.id), c.conn.as_raw_fd(), flags));
            }
        }
        if let Some(fd) = &self.stdin
            && !self.stdin_backlog.is_empty()
        {
            out.push((Source::Stdin, fd.as_raw_fd(), PollFlags::POLLOUT));
        }
    }

    /// Handles a ready source (not the outputs).
    pub(crate) fn ready(&mut self, source: Source, revents: PollFlags) {
        match source {
            Source::Listener => self.accept(),
            Source::Client(id) => self.serve_client(id, revents),
            Source::Stdin => self.write_stdin(),
            Source::Output(_) => {}
        }
    }

    /// Sends output to every client; drops those too far behind.
    pub(crate) fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() || data.is_empty() {
            return;
        }
        let mut frames = Vec::with_capacity(data.len() + attach::HEADER_LEN);
        attach::encode_data(&mut frames, stream == Stream::Stderr, data);
        let mut gone = Vec::new();
        for c in &mut self.clients {
            if c.output.len() + frames.len() > MAX_CLIENT_BACKLOG {
                crate::log(format_args!(
                    "attach client {} reads too slowly: dropped",
                    c.id
                ));
                gone.push(c.id);
                continue;
            }
            c.output.extend_from_slice(&frames);
            if flush(c).is_err() {
                gone.push(c.id);
            }
        }
        for id in gone {
            self.drop_client(id);
        }
    }

    /// The container exited: clients are closed once their output is written; stdin closes.
    pub(crate) fn exited(&mut self) {
        self.exited = true;
        self.stdin = None;
        self.stdin_backlog.clear();
        let done: Vec<u64> = self
            .clients
            .iter_mut()
            .filter_map(|c| {
                c.closing = true;
                c.output.is_empty().then_some(c.id)
            })
            .collect();
        for id in done {
            self.drop_client(id);
        }
    }

    fn accept(&mut self) {
        while let Ok((conn, _)) = self.listener.accept() {
            if self.exited || self.clients.len() >= MAX_CLIENTS {
                if !self.exited {
                    crate::log(format_args!("attach: too many clients, one refused"));
                }
                continue;
            }
            if conn.set_nonblocking(true).is_err() {
                continue;
            }
            self.next_id += 1;
            self.clients.push(Client {
                id: self.next_id,
                conn,
                input: Vec::new(),
                output: Vec::new(),
                stdin: false,
                closing: false,
            });
        }
    }

    fn serve_client(&mut self, id: u64, revents: PollFlags) {
        let Some(index) = self.clients.iter().position(|c| c.id == id) else {
            return;
        };
        let mut ok = true;
        if revents.intersects(PollFlags::POLLOUT) {
            ok = flush(&mut self.clients[index]).is_ok();
        }
        if ok && revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            ok = self.read_client(index);
        }
        let c = &self.clients[index];
        if !ok || (c.closing && c.output.is_empty()) {
            self.drop_client(id);
        }
    }

    /// Reads what a client sent and acts on whole frames; false when it is gone or broken.
    fn read_client(&mut self, index: usize) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let mut alive = true;
        loop {
            if self.stdin_backlog.len() >= MAX_STDIN_BACKLOG {
                break;
            }
            match self.clients[index].conn.read(&mut buf) {
                Ok(0) => {
                    alive = false;
                    break;
                }
                Ok(n) => self.clients[index].input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    alive = false;
                    break;
                }
            }
            if !self.take_frames(index) {
                return false;
            }
        }
        self.take_frames(index) && alive
    }

    /// Acts on the whole frames a client sent; false on a protocol error.
    fn take_frames(&mut self, index: usize) -> bool {
        loop {
            let frame = match Frame::decode(&mut self.clients[index].input) {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(e) => {
                    crate::log(format_args!("attach client: {e}"));
                    return false;
                }
            };
            match frame {
                Frame::Hello { stdin } => self.clients[index].stdin = stdin,
                Frame::Stdin(data) => {
                    if self.stdin.is_some() && !self.stdin_closing {
                        self.stdin_backlog.extend_from_slice(&data);
                        self.write_stdin();
                    }
                }
                Frame::StdinEof => {
                    if self.clients[index].stdin {
                        self.clients[index].stdin = false;
                        self.stdin_ended();
                    }
                }
                Frame::Resize { width, height } => self.resize(width, height),
                Frame::Stdout(_) | Frame::Stderr(_) => return false,
            }
        }
    }

    /// A client's input ended: with `stdin_once` the container's stdin closes.
    fn stdin_ended(&mut self) {
        if !self.stdin_once || self.stdin.is_none() || self.stdin_closing {
            return;
        }
        self.stdin_closing = true;
        if self.pty.is_some() {
            self.stdin_backlog.push(TTY_EOF);
        }
        self.write_stdin();
    }

    fn drop_client(&mut self, id: u64) {
        if let Some(index) = self.clients.iter().position(|c| c.id == id) {
            let c = self.clients.swap_remove(index);
            if c.stdin {
                self.stdin_ended();
            }
        }
    }

    /// Writes waiting input to the container; closes stdin when asked and done.
    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_backlog.clear();
            return;
        };
        while !self.stdin_backlog.is_empty() {
            match nix::unistd::write(fd, &self.stdin_backlog) {
                Ok(n) => {
                    self.stdin_backlog.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    // The reader is gone (EPIPE) or the terminal hung up.
                    self.stdin = None;
                    self.stdin_backlog.clear();
                    return;
                }
            }
        }
        if self.stdin_closing {
            self.stdin = None;
        }
    }

    fn resize(&self, width: u16, height: u16) {
        let Some(pty) = &self.pty else {
            return;
        };
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
        let ret = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if ret < 0 {
            crate::log(format_args!(
                "cannot resize the terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
}

/// Writes what a client's output holds without blocking; an error when it is gone.
fn flush(c: &mut Client) -> std::io::Result<()> {
    while !c.output.is_empty() {
        match nix::sys::socket::send(
            c.conn.as_raw_fd(),
            &c.output,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let _ = (&c.conn).flush();
    Ok(())
}

/// Sets O_NONBLOCK on a descriptor.
pub(crate) fn set_nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(Error::sys("F_GETFL"))?;
    fcntl(
        fd.as_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(Error::sys("cannot make a descriptor non-blocking"))?;
    Ok(())
}
