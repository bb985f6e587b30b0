//! The bytes on a hub connection's socket.
//!
//! Server frames are unmasked (RFC 6455 §5.1), so a frame's bytes are the same for every
//! connection: each event is framed once when it is rendered ([`text`]) and a page of events once
//! per page, and whoever writes a connection hands those shared bytes to the socket as they are.
//! No per-connection framing or copying on the fan-out path; at 10,000 subscribers that was a
//! fifth of the hub's CPU.
//!
//! tungstenite still parses what clients send (masking, fragmentation, limits, UTF-8) through
//! [`ReadSide`]. The few frames it writes itself (pongs, a close reply) are queued on the
//! connection's link like every other frame, so frames are never interleaved.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;

/// One unfragmented, unmasked frame.
fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 10);
    write_frame(&mut b, opcode, payload);
    b.freeze()
}

fn write_frame(b: &mut BytesMut, opcode: u8, payload: &[u8]) {
    b.put_u8(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        b.put_u8(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        b.put_u8(126);
        b.put_u16(n);
    } else {
        b.put_u8(127);
        b.put_u64(n as u64);
    }
    b.extend_from_slice(payload);
}

/// A text frame.
pub fn text(payload: &str) -> Bytes {
    frame(OP_TEXT, payload.as_bytes())
}

/// Frames back to back, in one buffer (a page every all-streams connection is sent).
pub fn concat<'a>(frames: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let mut b = BytesMut::with_capacity(frames.clone().map(|f| f.len()).sum());
    for f in frames {
        b.extend_from_slice(f);
    }
    b.freeze()
}

/// A close frame with a status code and a reason (at most 123 bytes, as the RFC allows).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut p = Vec::with_capacity(2 + cut);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OP_CLOSE, &p)
}

/// An empty ping.
pub fn ping() -> Bytes {
    Bytes::from_static(&[0x80 | OP_PING, 0])
}

/// Is this chunk (as tungstenite wrote it) a close frame?
pub fn is_close(chunk: &[u8]) -> bool {
    chunk.first().is_some_and(|b| b & 0x0f == OP_CLOSE)
}

/// Frames waiting for the socket, written in order; a write that the socket takes in part leaves
/// the rest here, so a cancelled or refused write never leaves half a frame behind.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl Outbox {
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bytes += b.len();
            self.chunks.push_back(b);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Chunks waiting.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// One write (vectored when several chunks wait); what the socket took is removed.
    pub fn poll_write_some<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = match self.chunks.len() {
            0 => return Poll::Ready(Ok(())),
            1 => ready!(Pin::new(&mut *io).poll_write(cx, &self.chunks[0]))?,
            _ => {
                let mut slices = [IoSlice::new(&[]); 64];
                let mut k = 0;
                for (s, c) in slices.iter_mut().zip(self.chunks.iter()) {
                    *s = IoSlice::new(c);
                    k += 1;
                }
                ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?
            }
        };
        if n == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        self.bytes -= n;
        let mut left = n;
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes until everything is written or the socket takes no more for now.
    pub fn poll_write_all<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        while !self.is_empty() {
            ready!(self.poll_write_some(io, cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// The socket as tungstenite sees it: reads go to the connection's read half; its writes (pongs,
/// a close reply) are queued on the connection's link and written after what waits there. When
/// the link no longer accepts frames (the connection is closing), they are dropped.
pub(crate) struct ReadSide<R, W> {
    pub(crate) rd: R,
    pub(crate) link: std::sync::Arc<super::link::Link<W>>,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for ReadSide<R, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.rd).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for ReadSide<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.link
            .send(super::link::Out::Raw(Bytes::copy_from_slice(buf)));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    fn tungstenite_bytes(f: Frame) -> Vec<u8> {
        let mut v = Vec::new();
        f.format(&mut v).unwrap();
        v
    }

    #[test]
    fn frames_match_tungstenite_at_every_length_class() {
        for n in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let s = "x".repeat(n);
            assert_eq!(
                text(&s).to_vec(),
                tungstenite_bytes(Frame::message(s.clone(), OpCode::Data(Data::Text), true)),
                "length {n}"
            );
        }
        let c = close(1001, "{\"reason\":\"server_shutdown\"}");
        assert_eq!(
            c.to_vec(),
            tungstenite_bytes(Frame::close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "{\"reason\":\"server_shutdown\"}".into()
            })))
        );
        assert_eq!(ping().to_vec(), tungstenite_bytes(Frame::ping(Vec::new())));
        assert!(is_close(&c));
        assert!(!is_close(&ping()));
    }

    #[test]
    fn pages_are_frames_back_to_back() {
        let a = "{\"a\":1}";
        let b = "y".repeat(300);
        let frames = [text(a), text(&b)];
        let page = concat(frames.iter());
        let mut expect = text(a).to_vec();
        expect.extend_from_slice(&text(&b));
        assert_eq!(page.to_vec(), expect);
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        let r = "é".repeat(100);
        let c = close(1000, &r);
        assert!(c.len() <= 2 + 125);
        assert!(std::str::from_utf8(&c[4..]).is_ok());
    }

    /// A socket that takes at most 7 bytes per write: frames come out whole and in order.
    #[tokio::test]
    async fn partial_writes_keep_frames_whole() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut out = Outbox::default();
        out.push(text("hello"));
        out.push(text(&"z".repeat(200)));
        out.push(close(1000, ""));
        let expect: Vec<u8> = [text("hello"), text(&"z".repeat(200)), close(1000, "")]
            .iter()
            .flat_map(|b| b.to_vec())
            .collect();
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        std::future::poll_fn(|cx| out.poll_write_all(&mut a, cx))
            .await
            .unwrap();
        drop(a);
        assert_eq!(reader.await.unwrap(), expect);
    }
}
