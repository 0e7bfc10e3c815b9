//! Any `:authority` a gRPC client sends over a unix socket is accepted. Clients name a unix
//! socket's authority as they please — grpcio sends the percent-encoded path
//! (`tmp%2Fberth.sock`), grpc-go `localhost`, others the socket path — and hyper's HTTP/2
//! server resets every stream whose `:authority` is not a URI authority (h2 answers
//! RST_STREAM PROTOCOL_ERROR before any service sees the request). Over a unix socket the
//! socket is the authority, so a connection's incoming bytes pass through [`AnyAuthority`],
//! which rewrites each request's unusable `:authority` to `localhost` and leaves every other
//! byte as it came.
//!
//! How: HTTP/2 frames are passed through one by one until the connection's first header
//! block (HEADERS plus any CONTINUATION frames) is whole, and it is decoded.
//! - Its `:authority` is usable (grpc-go's `localhost`, tonic's URI authority): from then on
//!   every byte passes through untouched, that block included, and hyper checks each later
//!   request itself. A client names a connection's authority once, for its channel; decoding
//!   every header block cost berthd about an eighth of its CPU in a container start (perf:
//!   HPACK Huffman decoding), for clients that never needed it.
//! - It is not (grpcio): this block and every later one are decoded with the client's HPACK
//!   state and re-encoded as literals without indexing, so the server's HPACK decoder never
//!   depends on table state the client built (RFC 7541 §6.2.2).
//!
//! Nothing else is touched: DATA, SETTINGS, WINDOW_UPDATE and the server's writes go through
//! as they are.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame a peer must accept without asking (SETTINGS_MAX_FRAME_SIZE default).
const MAX_FRAME: usize = 16_384;
/// Header blocks larger than this are refused by any sensible server anyway.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// What `:authority` becomes when a client's value is not a URI authority.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as they came, for the first block, which may go on untouched.
    frames: Vec<u8>,
}

/// What a connection's header blocks get, decided on its first one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// No header block is whole yet.
    Undecided,
    /// Every byte passes through as it came.
    Passthrough,
    /// Every header block is decoded and re-encoded.
    Rewrite,
}

/// An IO stream whose reads rewrite unusable `:authority` values (see the module's text).
pub struct AnyAuthority<S> {
    inner: S,
    /// Bytes read from `inner` that do not make a whole frame yet.
    raw: Vec<u8>,
    /// Bytes ready for the reader, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    preface_left: usize,
    pending: Option<PendingBlock>,
    decoder: loona_hpack::Decoder<'static>,
    mode: Mode,
    eof: bool,
}

impl<S> AnyAuthority<S> {
    pub fn new(inner: S) -> Self {
        AnyAuthority {
            inner,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            preface_left: PREFACE_LEN,
            pending: None,
            decoder: loona_hpack::Decoder::new(),
            mode: Mode::Undecided,
            eof: false,
        }
    }

    /// Moves every whole frame in `raw` to `out`, rewriting header blocks.
    fn process(&mut self) -> io::Result<()> {
        let mut at = 0;
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            self.out.extend_from_slice(&self.raw[..n]);
            self.preface_left -= n;
            at = n;
        }
        while self.preface_left == 0 && self.raw.len() - at >= FRAME_HEADER_LEN {
            let h = &self.raw[at..at + FRAME_HEADER_LEN];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if self.raw.len() - at < FRAME_HEADER_LEN + len {
                break;
            }
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let payload = at + FRAME_HEADER_LEN..at + FRAME_HEADER_LEN + len;
            match kind {
                HEADERS => {
                    let p = &self.raw[payload];
                    let block = header_fragment(p, flags)
                        .ok_or_else(|| invalid("malformed HEADERS frame"))?;
                    let priority = (flags & PRIORITY != 0).then(|| {
                        let off = usize::from(flags & PADDED != 0);
                        let mut b = [0u8; 5];
                        b.copy_from_slice(&p[off..off + 5]);
                        b
                    });
                    let frames = if self.mode == Mode::Undecided {
                        self.raw[at..at + FRAME_HEADER_LEN + len].to_vec()
                    } else {
                        Vec::new()
                    };
                    self.pending = Some(PendingBlock {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        priority,
                        block: block.to_vec(),
                        frames,
                    });
                }
                CONTINUATION if self.pending.as_ref().is_some_and(|b| b.stream == stream) => {
                    if let Some(b) = self.pending.as_mut() {
                        if self.mode == Mode::Undecided {
                            b.frames
                                .extend_from_slice(&self.raw[at..at + FRAME_HEADER_LEN + len]);
                        }
                        b.block.extend_from_slice(&self.raw[payload]);
                        if b.block.len() > MAX_HEADER_BLOCK {
                            return Err(invalid("header block too large"));
                        }
                    }
                }
                _ => {
                    // Anything else between a HEADERS and its CONTINUATION is the client's
                    // protocol error; the server will say so.
                    let whole = at..at + FRAME_HEADER_LEN + len;
                    self.out.extend_from_slice(&self.raw[whole]);
                }
            }
            at += FRAME_HEADER_LEN + len;
            if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
                if let Some(b) = self.pending.take() {
                    self.emit(b)?;
                }
                if self.mode == Mode::Passthrough {
                    self.out.extend_from_slice(&self.raw[at..]);
                    at = self.raw.len();
                    break;
                }
            }
        }
        self.raw.drain(..at);
        Ok(())
    }

    /// Writes a whole header block as HEADERS (+ CONTINUATION) frames: the first block of
    /// a connection as it came if its `:authority` is usable (and then so is everything
    /// after it), otherwise re-encoded.
    fn emit(&mut self, b: PendingBlock) -> io::Result<()> {
        if self.mode == Mode::Undecided && first_block_authority_usable(&b.block) == Some(true) {
            self.mode = Mode::Passthrough;
            self.out.extend_from_slice(&b.frames);
            return Ok(());
        }
        let headers = self
            .decoder
            .decode(&b.block)
            .map_err(|e| invalid(&format!("undecodable header block: {e}")))?;
        if self.mode == Mode::Undecided {
            let usable = headers
                .iter()
                .all(|(name, value)| name.as_slice() != b":authority" || is_authority(value));
            if usable {
                self.mode = Mode::Passthrough;
                self.out.extend_from_slice(&b.frames);
                return Ok(());
            }
            self.mode = Mode::Rewrite;
        }
        let mut block = Vec::with_capacity(b.block.len() + 64);
        for (name, value) in &headers {
            let value = if name.as_slice() == b":authority" && !is_authority(value) {
                LOCAL_AUTHORITY
            } else {
                value.as_slice()
            };
            encode_literal(name, value, &mut block);
        }
        let mut first = true;
        let mut rest: &[u8] = &block;
        loop {
            let room = if first && b.priority.is_some() {
                MAX_FRAME - 5
            } else {
                MAX_FRAME
            };
            let (chunk, more) = rest.split_at(rest.len().min(room));
            let last = more.is_empty();
            let mut flags = if last { END_HEADERS } else { 0 };
            let kind = if first { HEADERS } else { CONTINUATION };
            let mut payload_len = chunk.len();
            if first {
                if b.end_stream {
                    flags |= END_STREAM;
                }
                if b.priority.is_some() {
                    flags |= PRIORITY;
                    payload_len += 5;
                }
            }
            let len = u32::try_from(payload_len).map_err(|_| invalid("frame too large"))?;
            self.out.extend_from_slice(&len.to_be_bytes()[1..]);
            self.out.push(kind);
            self.out.push(flags);
            self.out.extend_from_slice(&b.stream.to_be_bytes());
            if first {
                if let Some(p) = b.priority {
                    self.out.extend_from_slice(&p);
                }
            }
            self.out.extend_from_slice(chunk);
            if last {
                return Ok(());
            }
            first = false;
            rest = more;
        }
    }
}

/// Whether every `:authority` in a connection's first header block is usable, read without
/// decoding the block: only `:authority` values are Huffman-decoded, and only names that
/// could be `:authority`. The block is a connection's first, so the dynamic table holds only
/// what the block itself adds. None when the block is malformed, or adds so much that an
/// entry might have been evicted; the caller then decodes it all.
fn first_block_authority_usable(block: &[u8]) -> Option<bool> {
    let mut added: Vec<Added> = Vec::new(); // newest first
    let mut room = TABLE_MAX; // what the entries may take at most before one is evicted
    let mut p = block;
    let mut usable = true;
    while let Some(&b) = p.first() {
        let (indexed, index, adds) = if b & 0x80 != 0 {
            (true, hpack_integer(&mut p, 7)?, false)
        } else if b & 0xc0 == 0x40 {
            (false, hpack_integer(&mut p, 6)?, true)
        } else if b & 0xe0 == 0x20 {
            // A dynamic table size update: entries added so far could be evicted.
            let size = hpack_integer(&mut p, 5)?;
            if !added.is_empty() || size > TABLE_MAX {
                return None;
            }
            room = size;
            continue;
        } else {
            (false, hpack_integer(&mut p, 4)?, false)
        };
        let (name_authority, name_bound) = field_name(&mut p, indexed, index, &added)?;
        let value = if indexed {
            indexed_value(index, &added)?
        } else {
            hpack_string(&mut p)?
        };
        if name_authority {
            usable &= value_is_authority(value)?;
        }
        if adds {
            // An entry's size is its name and value, decoded, plus 32 (RFC 7541 §4.1).
            room = room.checked_sub(32 + name_bound + decoded_bound(value))?;
            added.insert(
                0,
                Added {
                    authority: name_authority,
                    name_bound,
                    value,
                },
            );
        }
    }
    Some(usable)
}

/// The static table's `:authority` (RFC 7541 Appendix A); its other names are not.
const STATIC_AUTHORITY: usize = 1;
const STATIC_LEN: usize = 61;
/// SETTINGS_HEADER_TABLE_SIZE, hyper's and the protocol's default.
const TABLE_MAX: usize = 4096;
/// The longest name in the static table (`access-control-allow-origin`).
const STATIC_NAME_MAX: usize = 27;

/// An entry a first header block added to the dynamic table.
struct Added<'a> {
    authority: bool,
    name_bound: usize,
    value: (bool, &'a [u8]),
}

/// The most bytes an HPACK string `(huffman, bytes)` decodes to: a Huffman string decodes to
/// at most 8/5 of its length (5 bits is the shortest code).
fn decoded_bound((huffman, s): (bool, &[u8])) -> usize {
    if huffman {
        s.len() * 8 / 5 + 1
    } else {
        s.len()
    }
}

/// A field's name, by `index` or (index 0 of a literal) consumed from `p`: whether it is
/// `:authority`, and the most bytes it takes decoded. None when malformed.
fn field_name(
    p: &mut &[u8],
    indexed: bool,
    index: usize,
    added: &[Added],
) -> Option<(bool, usize)> {
    Some(match index {
        0 if indexed => return None,
        0 => {
            let (huffman, name) = hpack_string(p)?;
            let authority = if huffman {
                huffman_decode(name)? == b":authority"
            } else {
                name == b":authority"
            };
            (authority, decoded_bound((huffman, name)))
        }
        STATIC_AUTHORITY => (true, STATIC_NAME_MAX),
        i if i <= STATIC_LEN => (false, STATIC_NAME_MAX),
        i => {
            let a = added.get(i - STATIC_LEN - 1)?;
            (a.authority, a.name_bound)
        }
    })
}

/// An indexed field's value: the static table's are not the client's (empty here), the
/// dynamic table's are what the block added.
fn indexed_value<'a>(index: usize, added: &[Added<'a>]) -> Option<(bool, &'a [u8])> {
    Some(match index {
        STATIC_AUTHORITY => (false, &b""[..]),
        i if i <= STATIC_LEN => (false, &b""[..]),
        i => added.get(i - STATIC_LEN - 1)?.value,
    })
}

/// Whether an `:authority` value, decoded when Huffman-coded, is one berth accepts. None
/// when its Huffman code is malformed.
fn value_is_authority((huffman, s): (bool, &[u8])) -> Option<bool> {
    let decoded;
    let v = if huffman {
        decoded = huffman_decode(s)?;
        &decoded[..]
    } else {
        s
    };
    Some(is_authority(v))
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), consumed from `p`.
fn hpack_integer(p: &mut &[u8], n: u8) -> Option<usize> {
    let (&first, mut rest) = p.split_first()?;
    let max = (1usize << n) - 1;
    let mut v = usize::from(first) & max;
    if v == max {
        let mut shift = 0u32;
        loop {
            let (&b, r) = rest.split_first()?;
            rest = r;
            v = v.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }
    *p = rest;
    Some(v)
}

/// An HPACK string literal (RFC 7541 §5.2), consumed from `p`: whether it is Huffman-coded,
/// and its bytes as sent.
fn hpack_string<'a>(p: &mut &'a [u8]) -> Option<(bool, &'a [u8])> {
    let huffman = p.first()? & 0x80 != 0;
    let len = hpack_integer(p, 7)?;
    if p.len() < len {
        return None;
    }
    let (s, rest) = p.split_at(len);
    *p = rest;
    Some((huffman, s))
}

fn huffman_decode(s: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        // Built once per thread: building its tables is most of what a decode costs.
        static HUFFMAN: std::cell::RefCell<loona_hpack::huffman::HuffmanDecoder> =
            std::cell::RefCell::new(loona_hpack::huffman::HuffmanDecoder::new());
    }
    HUFFMAN.with(|h| h.borrow_mut().decode(s).ok())
}

/// The header block fragment of a HEADERS frame's payload (padding and priority removed).
fn header_fragment(p: &[u8], flags: u8) -> Option<&[u8]> {
    let (pad, mut start) = if flags & PADDED != 0 {
        (usize::from(*p.first()?), 1)
    } else {
        (0, 0)
    };
    if flags & PRIORITY != 0 {
        start += 5;
    }
    let end = p.len().checked_sub(pad)?;
    p.get(start..end)
}

/// Whether hyper would take `v` as an `:authority`.
fn is_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// A header as a literal without indexing, name and value as raw strings (RFC 7541 §6.2.2).
fn encode_literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        encode_integer(s.len(), 7, 0x00, out);
        out.extend_from_slice(s);
    }
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits from `high` (§5.1).
fn encode_integer(mut v: usize, n: u8, high: u8, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                return Poll::Ready(Ok(()));
            }
            this.out.clear();
            this.out_pos = 0;
            if this.mode == Mode::Passthrough && this.raw.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // What is left is not a whole frame; the server gets it as it is.
                let rest = std::mem::take(&mut this.raw);
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.out = rest;
                continue;
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.raw.extend_from_slice(rb.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    /// Reported false, though the socket takes vectored writes: h2 then copies a message of
    /// up to 1 KiB into its write buffer rather than chaining it (it chains from 256 bytes
    /// for vectored IO), and a chained message must be written before the next frame can be
    /// buffered. A small response then goes in one write, trailers included, not two: a
    /// client reading thousands of documents (`ctr images ls`) wakes once per answer.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl tonic::transport::server::Connected for AnyAuthority<tokio::net::UnixStream> {
    type ConnectInfo = <tokio::net::UnixStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/containerd.services.version.v1.Version/Version"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Feeds `input` through the rewriter in small pieces; returns what it reads out.
    async fn rewrite(input: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(7) {
                client.write_all(piece).await.unwrap();
            }
        });
        let mut out = vec![];
        AnyAuthority::new(server)
            .read_to_end(&mut out)
            .await
            .unwrap();
        writer.await.unwrap();
        out
    }

    /// Splits frames; returns (kind, flags, stream, payload) each.
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut v = vec![];
        while !b.is_empty() {
            let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            v.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        v
    }

    #[tokio::test]
    async fn unusable_authorities_become_localhost_and_all_else_passes() {
        let mut enc = loona_hpack::Encoder::new();
        let first = request("tmp%2Fberth.sock");
        let block1 = enc.encode(first.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        // The second request leans on the client's dynamic table (indexed fields).
        let second = request("tmp%2Fberth.sock");
        let block2 = enc.encode(second.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let good = request("localhost:1234");
        let block3 = enc.encode(good.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        input.extend(frame(HEADERS, END_HEADERS, 1, &block1));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
                                                                // A block split over HEADERS (padded, with priority) and a CONTINUATION.
        let (a, b) = block2.split_at(block2.len() / 2);
        let mut padded = vec![3u8];
        padded.extend([0, 0, 0, 0, 16]);
        padded.extend_from_slice(a);
        padded.extend([0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 3, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &block3));

        let out = rewrite(input).await;
        assert_eq!(&out[..PREFACE_LEN], PREFACE);
        let f = frames(&out[PREFACE_LEN..]);
        assert_eq!(f.len(), 5, "{f:?}");
        assert_eq!((f[0].0, f[0].3.len()), (0x4, 0));
        assert_eq!(f[2], (0x0, END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
        let mut dec = loona_hpack::Decoder::new();
        let decoded = |d: &mut loona_hpack::Decoder, p: &[u8]| d.decode(p).unwrap();
        let authority = |h: &[(Vec<u8>, Vec<u8>)]| {
            h.iter()
                .find(|(k, _)| k == b":authority")
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        let h1 = decoded(&mut dec, &f[1].3);
        assert_eq!(authority(&h1).as_deref(), Some("localhost"));
        assert_eq!(h1.len(), first.len());
        assert_eq!(h1[2], first[2]);
        // Padding and the CONTINUATION are gone; priority and END_STREAM are kept.
        assert_eq!(f[3].0, HEADERS);
        assert_eq!(f[3].1, END_HEADERS | END_STREAM | PRIORITY);
        assert_eq!(&f[3].3[..5], &[0, 0, 0, 0, 16]);
        let h2 = decoded(&mut dec, &f[3].3[5..]);
        assert_eq!(authority(&h2).as_deref(), Some("localhost"));
        let h3 = decoded(&mut dec, &f[4].3);
        assert_eq!(authority(&h3).as_deref(), Some("localhost:1234"));
    }

    #[tokio::test]
    async fn a_connection_whose_first_authority_is_usable_passes_untouched() {
        let mut enc = loona_hpack::Encoder::new();
        let block1 = enc.encode(
            request("localhost")
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        let block2 = enc.encode(
            request("localhost")
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        // The first block split over a padded HEADERS and a CONTINUATION: both go as they came.
        let (a, b) = block1.split_at(block1.len() / 2);
        let mut padded = vec![2u8];
        padded.extend_from_slice(a);
        padded.extend([0, 0]);
        input.extend(frame(HEADERS, PADDED, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
        // Later blocks lean on the client's dynamic table, which the server now shares.
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block2));
        assert_eq!(rewrite(input.clone()).await, input);
    }

    #[tokio::test]
    async fn an_undecodable_first_block_is_an_error() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
        ));
        let (mut client, server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client.write_all(&input).await.unwrap();
        drop(client);
        let mut out = vec![];
        let err = AnyAuthority::new(server)
            .read_to_end(&mut out)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn a_first_block_is_read_without_a_full_decode() {
        let hex = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        let raw = |s: &str| {
            let mut v = vec![s.len() as u8];
            v.extend_from_slice(s.as_bytes());
            v
        };
        // RFC 7541 C.4.1: :authority www.example.com, Huffman-coded, added to the table.
        let rfc = hex("828684418cf1e3c2e5f23a6ba0ab90f4ff");
        assert_eq!(first_block_authority_usable(&rfc), Some(true));
        // Indexed name :authority (static 1), raw values; then the dynamic entry again (62).
        let mut bad = vec![0x82, 0x41];
        bad.extend(raw("tmp%2Fberth.sock"));
        assert_eq!(first_block_authority_usable(&bad), Some(false));
        let mut good_then_bad = vec![0x41];
        good_then_bad.extend(raw("localhost"));
        good_then_bad.push(0xbe);
        assert_eq!(first_block_authority_usable(&good_then_bad), Some(true));
        good_then_bad.extend([0x01]); // without indexing, static name 1
        good_then_bad.extend(raw("a/b"));
        assert_eq!(first_block_authority_usable(&good_then_bad), Some(false));
        // A literal name spelled out.
        let mut literal = vec![0x00];
        literal.extend(raw(":authority"));
        literal.extend(raw("a%2Fb"));
        assert_eq!(first_block_authority_usable(&literal), Some(false));
        // What loona's encoder writes, as clients do.
        let enc = |a: &str| {
            loona_hpack::Encoder::new()
                .encode(request(a).iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        };
        assert_eq!(first_block_authority_usable(&enc("localhost")), Some(true));
        assert_eq!(first_block_authority_usable(&enc("x%2Fy")), Some(false));
        // Malformed: cut short, an index past the table, index 0; and a table that may evict.
        assert_eq!(first_block_authority_usable(&rfc[..rfc.len() - 3]), None);
        assert_eq!(first_block_authority_usable(&[0xbf]), None);
        assert_eq!(first_block_authority_usable(&[0x80]), None);
        let mut big = vec![];
        for _ in 0..40 {
            big.push(0x40);
            big.extend(raw("x-some-long-header-name"));
            big.push(0x7f);
            big.push(0x00);
            big.extend([b'v'; 127]);
        }
        assert_eq!(first_block_authority_usable(&big), None);
    }

    #[tokio::test]
    async fn large_header_blocks_are_split_into_continuations() {
        let mut enc = loona_hpack::Encoder::new();
        let mut headers = request("a%2Fb");
        headers.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
        let block = enc.encode(headers.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, 0, 1, &block[..10_000]));
        input.extend(frame(CONTINUATION, 0, 1, &block[10_000..30_000]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[30_000..]));
        let out = rewrite(input).await;
        let f = frames(&out[PREFACE_LEN..]);
        assert!(f.len() >= 3);
        assert!(f.iter().all(|x| x.3.len() <= MAX_FRAME));
        assert_eq!(f[0].0, HEADERS);
        assert!(f[1..].iter().all(|x| x.0 == CONTINUATION));
        assert_eq!(f.last().unwrap().1 & END_HEADERS, END_HEADERS);
        let block: Vec<u8> = f.iter().flat_map(|x| x.3.clone()).collect();
        let h = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(h.last().unwrap().1.len(), 40_000);
    }
}
