//! The attach socket of a container: how criusd reaches the stdio its pod monitor holds.
//!
//! Each container has a unix stream socket [`SOCKET`] in its directory
//! (`<pod dir>/containers/<id>/`). A client connects, sends one [`Frame::Hello`], then any
//! number of [`Frame::Stdin`], [`Frame::StdinEof`] and [`Frame::Resize`] frames; the monitor
//! sends [`Frame::Stdout`] and [`Frame::Stderr`] frames with the output produced from then on,
//! and closes the connection once the container has exited and its output is sent. A client
//! that falls too far behind is disconnected: the monitor never waits for one.
//!
//! A frame is one kind byte, a big-endian `u32` payload length, and the payload.

/// The attach socket's file name in the container directory.
pub const SOCKET: &str = "attach.sock";

/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Bytes before the payload: the kind and the length.
pub const HEADER_LEN: usize = 5;

const HELLO: u8 = 0;
const STDIN: u8 = 1;
const STDIN_EOF: u8 = 2;
const RESIZE: u8 = 3;
const STDOUT: u8 = 11;
const STDERR: u8 = 12;

/// `Hello` flag: the client attaches its stdin.
const WITH_STDIN: u8 = 1;

/// One message on the attach socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client, first: whether the client attaches stdin (a `stdin_once` container's stdin is
    /// closed when the first client that attached stdin leaves).
    Hello {
        /// The client sends input.
        stdin: bool,
    },
    /// Client: input for the container's stdin.
    Stdin(Vec<u8>),
    /// Client: its input ended.
    StdinEof,
    /// Client: the terminal size (tty containers).
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Monitor: the container's standard output (all output with a tty).
    Stdout(Vec<u8>),
    /// Monitor: the container's standard error.
    Stderr(Vec<u8>),
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The kind byte is not one of the protocol's.
    #[error("unknown attach frame kind {0}")]
    UnknownKind(u8),
    /// The length exceeds [`MAX_PAYLOAD`].
    #[error("attach frame of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// The payload does not fit the kind.
    #[error("malformed attach frame of kind {0}")]
    Malformed(u8),
}

impl Frame {
    /// Appends the encoded frame to `out`. Data longer than [`MAX_PAYLOAD`] must be split by
    /// the caller (see [`encode_data`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, payload): (u8, &[u8]) = match self {
            Frame::Hello { stdin } => {
                return push(out, HELLO, &[if *stdin { WITH_STDIN } else { 0 }]);
            }
            Frame::Stdin(d) => (STDIN, d),
            Frame::StdinEof => (STDIN_EOF, &[]),
            Frame::Resize { width, height } => {
                let mut p = [0u8; 4];
                p[..2].copy_from_slice(&width.to_be_bytes());
                p[2..].copy_from_slice(&height.to_be_bytes());
                return push(out, RESIZE, &p);
            }
            Frame::Stdout(d) => (STDOUT, d),
            Frame::Stderr(d) => (STDERR, d),
        };
        push(out, kind, payload);
    }

    /// Takes the first whole frame off the front of `buf`; `Ok(None)` when more bytes are
    /// needed.
    pub fn decode(buf: &mut Vec<u8>) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload: Vec<u8> = buf.drain(..HEADER_LEN + len).skip(HEADER_LEN).collect();
        let frame = match kind {
            HELLO => match payload.as_slice() {
                [flags] => Frame::Hello {
                    stdin: flags & WITH_STDIN != 0,
                },
                _ => return Err(FrameError::Malformed(kind)),
            },
            STDIN => Frame::Stdin(payload),
            STDIN_EOF => Frame::StdinEof,
            RESIZE => match payload.as_slice() {
                [w0, w1, h0, h1] => Frame::Resize {
                    width: u16::from_be_bytes([*w0, *w1]),
                    height: u16::from_be_bytes([*h0, *h1]),
                },
                _ => return Err(FrameError::Malformed(kind)),
            },
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            other => return Err(FrameError::UnknownKind(other)),
        };
        Ok(Some(frame))
    }
}

/// Appends `data` to `out` as frames of at most [`MAX_PAYLOAD`] bytes each, as standard
/// output (`stderr` false) or standard error.
pub fn encode_data(out: &mut Vec<u8>, stderr: bool, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD) {
        push(out, if stderr { STDERR } else { STDOUT }, chunk);
    }
}

/// Appends `data` to `out` as [`Frame::Stdin`] frames of at most [`MAX_PAYLOAD`] bytes.
pub fn encode_stdin(out: &mut Vec<u8>, data: &[u8]) {
    for chunk in data.chunks(MAX_PAYLOAD) {
        push(out, STDIN, chunk);
    }
}

fn push(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    // A payload beyond u32 (never split by its caller) gets a length every reader refuses.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello { stdin: true },
            Frame::Hello { stdin: false },
            Frame::Stdin(b"abc".to_vec()),
            Frame::StdinEof,
            Frame::Resize {
                width: 80,
                height: 24,
            },
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        // Byte by byte: a partial frame waits for the rest.
        let mut partial = Vec::new();
        let mut got = Vec::new();
        for b in buf {
            partial.push(b);
            while let Some(f) = Frame::decode(&mut partial).expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(partial.is_empty());
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut buf = vec![99, 0, 0, 0, 0];
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::UnknownKind(99)));
        let mut buf = vec![STDIN, 0xff, 0, 0, 0];
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::TooLong(_))
        ));
        let mut buf = vec![RESIZE, 0, 0, 0, 1, 7];
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::Malformed(RESIZE)));
    }

    #[test]
    fn long_data_is_split() {
        let mut buf = Vec::new();
        encode_data(&mut buf, true, &vec![7u8; MAX_PAYLOAD + 1]);
        let a = Frame::decode(&mut buf).expect("a").expect("whole");
        let b = Frame::decode(&mut buf).expect("b").expect("whole");
        assert_eq!(a, Frame::Stderr(vec![7u8; MAX_PAYLOAD]));
        assert_eq!(b, Frame::Stderr(vec![7u8]));
    }
}
