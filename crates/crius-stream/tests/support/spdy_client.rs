//! A minimal SPDY/3.1 client written for the tests, sharing no code with the server's framing:
//! an HTTP/1.1 upgrade by hand, then frames built and parsed here, header blocks compressed
//! with the dictionary in `dictionary.rs`.

use std::collections::HashMap;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::dictionary::SPDY3_DICTIONARY;

/// A frame as the test client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_REPLY.
    Reply(u32),
    /// DATA (stream, payload, fin).
    Data(u32, Vec<u8>, bool),
    /// RST_STREAM (stream, status).
    Reset(u32, u32),
    /// GOAWAY (status).
    GoAway(u32),
    /// PING.
    Ping(u32),
    /// Anything else (type).
    Other(u16),
}

/// The answer to the upgrade request.
pub struct Upgrade {
    /// HTTP status.
    pub status: u16,
    /// Response head, lower-cased.
    pub head: String,
}

/// A SPDY client session.
pub struct SpdyClient {
    tcp: TcpStream,
    deflate: Compress,
    inflate: Decompress,
    next_id: u32,
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let slash = rest.find('/').expect("path");
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

/// Sends `GET path` asking for SPDY/3.1 with `protocols`; returns the answer and, on 101, the
/// session.
pub async fn connect(url: &str, protocols: &[&str]) -> (Upgrade, Option<SpdyClient>) {
    let (host, path) = split_url(url);
    let mut tcp = TcpStream::connect(&host).await.expect("connect");
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send request");
    let head = read_head(&mut tcp).await;
    let status = parse_status(&head);
    if status != 101 {
        return (Upgrade { status, head }, None);
    }
    let mut deflate = Compress::new(Compression::default(), true);
    deflate
        .set_dictionary(&SPDY3_DICTIONARY)
        .expect("dictionary");
    let client = SpdyClient {
        tcp,
        deflate,
        inflate: Decompress::new(true),
        next_id: 1,
    };
    (Upgrade { status, head }, Some(client))
}

/// Reads an HTTP response head byte by byte (so no session bytes are consumed).
pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.expect("read head") == 0 {
            break;
        }
        head.push(b[0]);
        assert!(head.len() < 16384, "response head too long");
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

/// The status code of a response head.
pub fn parse_status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn control(frame_type: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 0x03];
    out.extend_from_slice(&frame_type.to_be_bytes());
    out.push(flags);
    let len = u32::try_from(payload.len()).expect("a control payload under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

impl SpdyClient {
    /// Writes raw bytes (for malformed-frame tests).
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let _ = self.tcp.write_all(bytes).await;
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let count = |n: usize| u32::try_from(n).expect("a header count under 4 Gi");
        let mut raw = count(headers.len()).to_be_bytes().to_vec();
        for (n, v) in headers {
            raw.extend_from_slice(&count(n.len()).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&count(v.len()).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 1024);
        self.deflate
            .compress_vec(&raw, &mut out, FlushCompress::Sync)
            .expect("deflate");
        out
    }

    /// Opens a stream with headers; returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        p.extend(self.header_block(headers));
        let frame = control(1, 0, &p);
        self.tcp.write_all(&frame).await.expect("syn_stream");
        id
    }

    /// Sends data on a stream.
    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut out = id.to_be_bytes().to_vec();
        out.push(u8::from(fin));
        let len = u32::try_from(data.len()).expect("a data frame under 4 GiB");
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.extend_from_slice(data);
        let _ = self.tcp.write_all(&out).await;
    }

    /// Sends a PING.
    pub async fn ping(&mut self, id: u32) {
        let frame = control(6, 0, &id.to_be_bytes());
        self.tcp.write_all(&frame).await.expect("ping");
    }

    /// Reads one frame; None at EOF.
    pub async fn read(&mut self) -> Option<Frame> {
        let mut head = [0u8; 8];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut p = vec![0u8; len];
        self.tcp.read_exact(&mut p).await.ok()?;
        let word = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            return Some(Frame::Data(id, p, head[4] & 1 == 1));
        }
        assert_eq!(
            u16::from_be_bytes([head[0] & 0x7f, head[1]]),
            3,
            "spdy version"
        );
        Some(match u16::from_be_bytes([head[2], head[3]]) {
            2 => {
                // Inflate so the shared zlib stream stays in step.
                let mut out = vec![0u8; 65536];
                let mut input = &p[4..];
                let mut produced = 0;
                while !input.is_empty() {
                    let before_in = self.inflate.total_in();
                    let before_out = self.inflate.total_out();
                    match self.inflate.decompress(
                        input,
                        &mut out[produced..],
                        FlushDecompress::Sync,
                    ) {
                        Ok(_) => {}
                        Err(e) if e.needs_dictionary().is_some() => {
                            self.inflate
                                .set_dictionary(&SPDY3_DICTIONARY)
                                .expect("set dictionary");
                        }
                        Err(e) => panic!("inflate: {e}"),
                    }
                    let moved = |before: u64, after: u64| {
                        usize::try_from(after - before).expect("zlib moved what it was given")
                    };
                    input = &input[moved(before_in, self.inflate.total_in())..];
                    produced += moved(before_out, self.inflate.total_out());
                }
                assert!(produced >= 4, "reply header block");
                Frame::Reply(word(0))
            }
            3 => Frame::Reset(word(0), word(4)),
            6 => Frame::Ping(word(0)),
            7 => Frame::GoAway(word(4)),
            t => Frame::Other(t),
        })
    }

    /// Reads until EOF (or `limit`): data per stream, which streams got FIN, replies, resets,
    /// and whether a GOAWAY came.
    pub async fn collect(&mut self, limit: Duration) -> Collected {
        let mut c = Collected::default();
        let deadline = tokio::time::Instant::now() + limit;
        while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.read()).await {
            match frame {
                Frame::Reply(id) => c.replies.push(id),
                Frame::Data(id, d, fin) => {
                    c.data.entry(id).or_default().extend(d);
                    if fin {
                        c.fin.push(id);
                    }
                }
                Frame::Reset(id, status) => c.resets.push((id, status)),
                Frame::GoAway(status) => c.goaway = Some(status),
                Frame::Ping(id) => c.pings.push(id),
                Frame::Other(_) => {}
            }
        }
        c
    }

    /// Reads until `stream` has FIN (or `limit`), keeping what else arrives.
    pub async fn until_fin(&mut self, stream: u32, c: &mut Collected, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !c.fin.contains(&stream) {
            let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.read()).await else {
                return;
            };
            match frame {
                Frame::Reply(id) => c.replies.push(id),
                Frame::Data(id, d, fin) => {
                    c.data.entry(id).or_default().extend(d);
                    if fin {
                        c.fin.push(id);
                    }
                }
                Frame::Reset(id, status) => c.resets.push((id, status)),
                Frame::GoAway(status) => c.goaway = Some(status),
                Frame::Ping(id) => c.pings.push(id),
                Frame::Other(_) => {}
            }
        }
    }
}

/// What a session delivered.
#[derive(Debug, Default)]
pub struct Collected {
    /// Replied stream ids.
    pub replies: Vec<u32>,
    /// Data by stream.
    pub data: HashMap<u32, Vec<u8>>,
    /// Streams the server half-closed.
    pub fin: Vec<u32>,
    /// Reset streams with status.
    pub resets: Vec<(u32, u32)>,
    /// GOAWAY status, if one came.
    pub goaway: Option<u32>,
    /// Echoed pings.
    pub pings: Vec<u32>,
}

impl Collected {
    /// A stream's data as text.
    pub fn text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.data.get(&id).map(Vec::as_slice).unwrap_or_default())
            .into_owned()
    }
}
