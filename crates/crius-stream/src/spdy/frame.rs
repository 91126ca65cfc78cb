//! SPDY/3.1 framing: frame types, the header-block codec with its persistent zlib streams, and
//! a defensive frame reader.
//!
//! Wire format (SPDY draft 3): every frame starts with 8 bytes. A control frame has the high bit
//! set, a 15-bit version (3), a 16-bit type, 8 bits of flags and a 24-bit length; a data frame
//! has a 31-bit stream id, flags and a 24-bit length. Header blocks are a 32-bit pair count then
//! length-prefixed names and values, compressed by one zlib stream per direction that starts
//! with the SPDY/3 dictionary and is flushed (Z_SYNC_FLUSH) after each block.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::dictionary::SPDY3_DICTIONARY;

/// The SPDY version spoken.
pub(crate) const VERSION: u16 = 3;
/// Flag on SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender half-closes the stream.
pub(crate) const FLAG_FIN: u8 = 0x01;

/// Largest data frame accepted from a peer.
pub(crate) const MAX_DATA_FRAME: usize = 1 << 20;
/// Largest control frame (and so compressed header block) accepted from a peer.
pub(crate) const MAX_CONTROL_FRAME: usize = 64 << 10;
/// Largest decompressed header block accepted (a guard against decompression bombs).
pub(crate) const MAX_HEADER_BLOCK: usize = 64 << 10;
/// Most header pairs accepted in one block.
pub(crate) const MAX_HEADER_PAIRS: usize = 256;
/// Largest data frame this side sends.
pub(crate) const SEND_CHUNK: usize = 32 << 10;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: protocol error.
pub(crate) const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: the stream was refused (too many streams, or it is not wanted).
pub(crate) const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: the stream is being cancelled.
pub(crate) const RST_CANCEL: u32 = 5;
/// RST_STREAM status: a second SYN_STREAM for an existing stream id.
pub(crate) const RST_STREAM_IN_USE: u32 = 8;
/// GOAWAY status: normal end of session.
pub(crate) const GOAWAY_OK: u32 = 0;
/// GOAWAY status: the peer broke the protocol.
pub(crate) const GOAWAY_PROTOCOL_ERROR: u32 = 1;
/// SETTINGS id of the initial per-stream window.
#[cfg(test)]
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// Header pairs of a header block, names lower-case, multiple values joined by NUL.
pub(crate) type Headers = Vec<(String, String)>;

/// A decoded SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// Opens a stream.
    SynStream {
        /// Stream id (odd when the client opens it).
        stream_id: u32,
        /// Stream this one is associated with (0 for none).
        associated_id: u32,
        /// Priority, 0 (highest) to 7.
        priority: u8,
        /// FIN / UNIDIRECTIONAL.
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// Stream id.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// Stream id.
        stream_id: u32,
        /// Status code.
        status: u32,
    },
    /// Session settings: (flags, id, value) triples.
    Settings {
        /// Entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// Liveness check, echoed by the receiver when the peer started it.
    Ping {
        /// Ping id.
        id: u32,
    },
    /// End of session.
    GoAway {
        /// Last stream id the sender processed.
        last_good_stream_id: u32,
        /// Status code.
        status: u32,
    },
    /// Extra headers on an open stream.
    Headers {
        /// Stream id.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Flow-control credit (stream 0: the whole session, SPDY/3.1).
    WindowUpdate {
        /// Stream id.
        stream_id: u32,
        /// Credit in bytes.
        delta: u32,
    },
    /// Payload on a stream.
    Data {
        /// Stream id.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Payload.
        data: Bytes,
    },
    /// A control frame of a type this side does not know (to be ignored, per the spec).
    Unknown {
        /// The frame type.
        frame_type: u16,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    /// The transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The peer sent something that is not SPDY/3.1, or a frame is too long to send.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// zlib failed.
    #[error("header compression error: {0}")]
    Compression(#[from] ZlibError),
}

/// What breaks SPDY/3.1 or crius' limits on it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// A frame shorter than its fields.
    #[error("frame payload too short")]
    ShortPayload,
    /// A header block of more pairs than [`MAX_HEADER_PAIRS`].
    #[error("{count} header pairs (limit {MAX_HEADER_PAIRS})")]
    TooManyHeaders { count: usize },
    /// A header block shorter than its lengths say.
    #[error("header block truncated")]
    TruncatedHeaderBlock,
    /// A header name or value that is not UTF-8.
    #[error("header is not UTF-8")]
    HeaderNotUtf8 { source: std::string::FromUtf8Error },
    /// A header with an empty name.
    #[error("empty header name")]
    EmptyHeaderName,
    /// Bytes after the last header pair.
    #[error("trailing bytes after header block")]
    TrailingBytes,
    /// A header block that inflates past [`MAX_HEADER_BLOCK`].
    #[error("header block inflates past {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    /// A frame to send that is longer than the 24-bit length field.
    #[error("frame longer than 24 bits")]
    FrameTooLong,
    /// A data frame longer than [`MAX_DATA_FRAME`].
    #[error("data frame of {len} bytes (limit {MAX_DATA_FRAME})")]
    DataFrameTooLarge { len: usize },
    /// A control frame of another SPDY version.
    #[error("SPDY version {version}, want {VERSION}")]
    Version { version: u16 },
    /// A control frame longer than [`MAX_CONTROL_FRAME`].
    #[error("control frame of {len} bytes (limit {MAX_CONTROL_FRAME})")]
    ControlFrameTooLarge { len: usize },
    /// A SYN_STREAM without room for its fields.
    #[error("SYN_STREAM too short")]
    SynStreamTooShort,
    /// A SETTINGS frame whose length does not match its entry count.
    #[error("SETTINGS length does not match its count")]
    SettingsLength,
    /// A client-initiated stream with an id that is zero or even.
    #[error("client opened stream {stream_id} (must be odd)")]
    EvenStreamId { stream_id: u32 },
}

/// Why a header block's zlib stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ZlibError {
    /// The peer's stream ended, which SPDY never does.
    #[error("zlib stream ended")]
    Ended,
    /// Inflating consumed and produced nothing.
    #[error("zlib made no progress")]
    Stalled,
    /// Inflating failed.
    #[error("{source}")]
    Inflate { source: flate2::DecompressError },
    /// Deflating failed.
    #[error("{source}")]
    Deflate { source: flate2::CompressError },
}

fn be_u32(bytes: &[u8], at: usize) -> Result<u32, FrameError> {
    bytes
        .get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or(FrameError::Protocol(ProtocolError::ShortPayload))
}

/// Parses an uncompressed header block, with limits.
pub(crate) fn parse_header_block(raw: &[u8]) -> Result<Headers, FrameError> {
    let count = be_u32(raw, 0)? as usize;
    if count > MAX_HEADER_PAIRS {
        return Err(ProtocolError::TooManyHeaders { count }.into());
    }
    let mut at = 4;
    let mut headers = Vec::with_capacity(count);
    let take = |at: &mut usize| -> Result<String, FrameError> {
        let len = be_u32(raw, *at)? as usize;
        *at += 4;
        let bytes = raw
            .get(*at..at.saturating_add(len))
            .ok_or(ProtocolError::TruncatedHeaderBlock)?;
        *at += len;
        String::from_utf8(bytes.to_vec())
            .map_err(|source| ProtocolError::HeaderNotUtf8 { source }.into())
    };
    for _ in 0..count {
        let name = take(&mut at)?;
        if name.is_empty() {
            return Err(ProtocolError::EmptyHeaderName.into());
        }
        let value = take(&mut at)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    if at != raw.len() {
        return Err(ProtocolError::TrailingBytes.into());
    }
    Ok(headers)
}

/// Serialises a header block (uncompressed).
pub(crate) fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut raw = Vec::new();
    push_count(&mut raw, headers.len());
    for (name, value) in headers {
        push_count(&mut raw, name.len());
        raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        push_count(&mut raw, value.len());
        raw.extend_from_slice(value.as_bytes());
    }
    raw
}

/// Appends a 32-bit count or length. One beyond u32 becomes u32::MAX, which makes the frame
/// too long to send (see `push_len`).
fn push_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// How far a zlib byte counter moved in one call that was given `limit` bytes (never more).
fn moved(before: u64, after: u64, limit: usize) -> usize {
    usize::try_from(after.saturating_sub(before)).map_or(limit, |n| n.min(limit))
}

/// Inflates one header block from the connection's persistent zlib stream, never producing
/// more than [`MAX_HEADER_BLOCK`] bytes.
pub(crate) struct HeaderInflater {
    zlib: Decompress,
}

impl HeaderInflater {
    /// A fresh inflater for one direction of one connection.
    pub(crate) fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Inflates `input` (one complete, sync-flushed block).
    pub(crate) fn inflate(&mut self, input: &[u8]) -> Result<Headers, FrameError> {
        let mut out = vec![0u8; MAX_HEADER_BLOCK + 1];
        let mut in_pos = 0usize;
        let mut out_pos = 0usize;
        loop {
            let (in0, out0) = (self.zlib.total_in(), self.zlib.total_out());
            let res =
                self.zlib
                    .decompress(&input[in_pos..], &mut out[out_pos..], FlushDecompress::Sync);
            in_pos += moved(in0, self.zlib.total_in(), input.len() - in_pos);
            out_pos += moved(out0, self.zlib.total_out(), out.len() - out_pos);
            match res {
                Ok(Status::StreamEnd) => {
                    return Err(ZlibError::Ended.into());
                }
                Ok(_) => {
                    if out_pos > MAX_HEADER_BLOCK {
                        return Err(ProtocolError::HeaderBlockTooLarge.into());
                    }
                    if in_pos >= input.len() {
                        break;
                    }
                    if self.zlib.total_in() == in0 && self.zlib.total_out() == out0 {
                        return Err(ZlibError::Stalled.into());
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&SPDY3_DICTIONARY)
                        .map_err(|source| ZlibError::Inflate { source })?;
                }
                Err(source) => return Err(ZlibError::Inflate { source }.into()),
            }
        }
        parse_header_block(&out[..out_pos])
    }
}

/// Encodes frames for one direction of a connection (owns the deflate stream).
pub(crate) struct FrameEncoder {
    zlib: Compress,
}

impl FrameEncoder {
    /// A fresh encoder with the SPDY/3 dictionary preset.
    pub(crate) fn new() -> Result<Self, FrameError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(&SPDY3_DICTIONARY)
            .map_err(|source| ZlibError::Deflate { source })?;
        Ok(Self { zlib })
    }

    fn deflate(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let raw = encode_header_block(headers);
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut in_pos = 0usize;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(&raw[in_pos..], &mut out, FlushCompress::Sync)
                .map_err(|source| ZlibError::Deflate { source })?;
            in_pos += moved(before, self.zlib.total_in(), raw.len() - in_pos);
            // A sync flush is complete once all input is consumed and output space remains.
            if in_pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Encodes one frame to its wire bytes.
    pub(crate) fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, FrameError> {
        let (frame_type, flags, payload) = match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                push_len(&mut out, data.len())?;
                out.extend_from_slice(data);
                return Ok(out);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                headers,
            } => {
                let mut p = Vec::new();
                p.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                p.extend_from_slice(&(associated_id & 0x7fff_ffff).to_be_bytes());
                p.push((priority & 0x7) << 5);
                p.push(0);
                p.extend_from_slice(&self.deflate(headers)?);
                (TYPE_SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&self.deflate(headers)?);
                (TYPE_SYN_REPLY, *flags, p)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&self.deflate(headers)?);
                (TYPE_HEADERS, *flags, p)
            }
            Frame::RstStream { stream_id, status } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                (TYPE_RST_STREAM, 0, p)
            }
            Frame::Settings { entries } => {
                let mut p = Vec::new();
                push_count(&mut p, entries.len());
                for (flags, id, value) in entries {
                    p.extend_from_slice(
                        &((u32::from(*flags) << 24) | (id & 0xff_ffff)).to_be_bytes(),
                    );
                    p.extend_from_slice(&value.to_be_bytes());
                }
                (TYPE_SETTINGS, 0, p)
            }
            Frame::Ping { id } => (TYPE_PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut p = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                (TYPE_GOAWAY, 0, p)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut p = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                (TYPE_WINDOW_UPDATE, 0, p)
            }
            Frame::Unknown { frame_type } => (*frame_type, 0, Vec::new()),
        };
        let mut out = Vec::with_capacity(8 + payload.len());
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&frame_type.to_be_bytes());
        out.push(flags);
        push_len(&mut out, payload.len())?;
        out.extend_from_slice(&payload);
        Ok(out)
    }
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), FrameError> {
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l <= 0xff_ffff)
        .ok_or(ProtocolError::FrameTooLong)?;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    Ok(())
}

/// Reads frames from one direction of a connection (owns the inflate stream).
pub(crate) struct FrameReader<R> {
    io: R,
    inflater: HeaderInflater,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps a transport.
    pub(crate) fn new(io: R) -> Self {
        Self {
            io,
            inflater: HeaderInflater::new(),
        }
    }

    /// Reads the next frame; [`FrameError::Closed`] on a clean end between frames.
    pub(crate) async fn read_frame(&mut self) -> Result<Frame, FrameError> {
        let mut head = [0u8; 8];
        match self.io.read(&mut head[..1]).await? {
            0 => return Err(FrameError::Closed),
            _ => self.io.read_exact(&mut head[1..]).await?,
        };
        let flags = head[4];
        let len = (usize::from(head[5]) << 16) | (usize::from(head[6]) << 8) | usize::from(head[7]);
        if head[0] & 0x80 == 0 {
            if len > MAX_DATA_FRAME {
                return Err(ProtocolError::DataFrameTooLarge { len }.into());
            }
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let mut data = vec![0u8; len];
            self.io.read_exact(&mut data).await?;
            return Ok(Frame::Data {
                stream_id,
                flags,
                data: Bytes::from(data),
            });
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != VERSION {
            return Err(ProtocolError::Version { version }.into());
        }
        if len > MAX_CONTROL_FRAME {
            return Err(ProtocolError::ControlFrameTooLarge { len }.into());
        }
        let frame_type = u16::from_be_bytes([head[2], head[3]]);
        let mut p = vec![0u8; len];
        self.io.read_exact(&mut p).await?;
        let id = |p: &[u8]| be_u32(p, 0).map(|v| v & 0x7fff_ffff);
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                if p.len() < 10 {
                    return Err(ProtocolError::SynStreamTooShort.into());
                }
                Frame::SynStream {
                    stream_id: id(&p)?,
                    associated_id: be_u32(&p, 4)? & 0x7fff_ffff,
                    priority: p[8] >> 5,
                    flags,
                    headers: self.inflater.inflate(&p[10..])?,
                }
            }
            TYPE_SYN_REPLY => Frame::SynReply {
                stream_id: id(&p)?,
                flags,
                headers: self.inflater.inflate(p.get(4..).unwrap_or_default())?,
            },
            TYPE_HEADERS => Frame::Headers {
                stream_id: id(&p)?,
                flags,
                headers: self.inflater.inflate(p.get(4..).unwrap_or_default())?,
            },
            TYPE_RST_STREAM => Frame::RstStream {
                stream_id: id(&p)?,
                status: be_u32(&p, 4)?,
            },
            TYPE_SETTINGS => {
                let count = be_u32(&p, 0)? as usize;
                if count.saturating_mul(8).saturating_add(4) != p.len() {
                    return Err(ProtocolError::SettingsLength.into());
                }
                let mut entries = Vec::with_capacity(count);
                for i in 0..count {
                    let word = be_u32(&p, 4 + i * 8)?;
                    entries.push(((word >> 24) as u8, word & 0xff_ffff, be_u32(&p, 8 + i * 8)?));
                }
                Frame::Settings { entries }
            }
            TYPE_PING => Frame::Ping { id: be_u32(&p, 0)? },
            TYPE_GOAWAY => Frame::GoAway {
                last_good_stream_id: id(&p)?,
                // SPDY/2 GOAWAY had no status; be lenient.
                status: be_u32(&p, 4).unwrap_or(GOAWAY_OK),
            },
            TYPE_WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: id(&p)?,
                delta: be_u32(&p, 4)? & 0x7fff_ffff,
            },
            other => Frame::Unknown { frame_type: other },
        };
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_the_codec() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::SynStream {
                stream_id: 3,
                associated_id: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("x".into(), "y".into()),
                ],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping { id: 7 },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 100,
            },
            Frame::Settings {
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536)],
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: GOAWAY_OK,
            },
        ];
        let mut enc = FrameEncoder::new().expect("encoder");
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(enc.encode(f).expect("encode"));
        }
        let mut reader = FrameReader::new(&wire[..]);
        for f in &frames {
            assert_eq!(&reader.read_frame().await.expect("decode"), f);
        }
        assert!(matches!(reader.read_frame().await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn oversized_and_bomb_frames_are_refused() {
        // A data frame claiming 16 MiB.
        let wire = [0u8, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        let mut reader = FrameReader::new(&wire[..]);
        assert!(matches!(
            reader.read_frame().await,
            Err(FrameError::Protocol(ProtocolError::DataFrameTooLarge {
                len: 0xff_ffff
            }))
        ));

        // A header block that inflates to far more than the limit.
        let mut zlib = Compress::new(Compression::best(), true);
        zlib.set_dictionary(&SPDY3_DICTIONARY).expect("dict");
        let mut raw = 1u32.to_be_bytes().to_vec();
        raw.extend_from_slice(&1u32.to_be_bytes());
        raw.push(b'a');
        raw.extend_from_slice(&(1_000_000u32).to_be_bytes());
        raw.extend(std::iter::repeat_n(b'z', 1_000_000));
        let mut out = Vec::with_capacity(60_000);
        zlib.compress_vec(&raw, &mut out, FlushCompress::Sync)
            .expect("deflate");
        assert!(out.len() < MAX_CONTROL_FRAME - 10);
        let mut inflater = HeaderInflater::new();
        assert!(matches!(
            inflater.inflate(&out),
            Err(FrameError::Protocol(ProtocolError::HeaderBlockTooLarge))
        ));
    }
}
