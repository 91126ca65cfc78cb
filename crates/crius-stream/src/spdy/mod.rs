//! SPDY/3.1, as far as Kubernetes streaming needs it: the client opens streams, this side
//! replies, both sides send data and half-close.
//!
//! # Why not a crate
//!
//! The one SPDY/3.1 crate on crates.io, `spdystream-rs` 0.1.2, was evaluated and not used:
//! it parses the HTTP upgrade itself byte by byte (so it cannot share a hyper server with the
//! WebSocket endpoints and the plain HTTP errors), it allocates whatever frame length a peer
//! announces (up to 16 MiB per frame), its header inflater has no size limit and stops at the
//! first full output buffer (silently truncating large blocks instead of refusing them), and
//! it treats unknown control frames as fatal where the spec says to ignore them. The framing
//! here is small, bounded everywhere, and tested against an independent client.
//!
//! # Flow control
//!
//! The SPDY client Kubernetes uses (moby/spdystream) neither sends WINDOW_UPDATE nor honours
//! the peer's windows. Waiting for send credit would therefore stall every stream after 64 KiB,
//! so this side does not block on the peer's windows (as kubelet's server does not), and
//! bounds memory by backpressure instead: a stream's inbound data waits in a small bounded
//! queue, and the connection reader waits when it is full. WINDOW_UPDATEs are still sent as
//! data is consumed (stream and session level) so a client that does enforce windows works.

pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod portforward;
pub(crate) mod remotecommand;
