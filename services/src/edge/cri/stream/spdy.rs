//! SPDY/3.1 as Kubernetes' streaming clients speak it (the kubelet, kubectl, critest): frames,
//! header blocks (zlib with SPDY's dictionary, one compression context per direction for the
//! whole connection), and a server-side session that answers every stream the client opens
//! and routes its data. The clients do no flow control, so neither does this side; each
//! stream's incoming data passes through a bounded queue, so a slow consumer slows the
//! connection rather than growing memory.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::collections::HashMap;
use std::sync::LazyLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Largest frame accepted (the clients send at most 32 KiB of data per frame).
pub const MAX_FRAME: usize = 1 << 20;
const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// The words SPDY/3's header dictionary starts with, each stored with a 4-byte length.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// What follows the words, as it stands.
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// SPDY/3's zlib dictionary for header blocks.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut d = Vec::with_capacity(1424);
    for w in DICT_WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICT_TAIL.as_bytes());
    d
});

pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    /// SETTINGS, WINDOW_UPDATE and anything else this side has no use for.
    Ignored,
}

/// The header-block compression state of one direction of a connection.
pub struct HeaderCodec {
    out: Compress,
    inp: Decompress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        let mut out = Compress::new(Compression::default(), true);
        // A fresh compressor takes the dictionary before its first byte.
        let _ = out.set_dictionary(&DICTIONARY);
        HeaderCodec {
            out,
            inp: Decompress::new(true),
        }
    }
}

impl HeaderCodec {
    pub fn encode(&mut self, headers: &Headers) -> std::io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            out.reserve(256);
            let before = self.out.total_in();
            self.out
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            pos += (self.out.total_in() - before) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }

    pub fn decode(&mut self, block: &[u8]) -> std::io::Result<Headers> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut pos = 0;
        while pos < block.len() {
            raw.reserve(1024);
            let before = self.inp.total_in();
            match self
                .inp
                .decompress_vec(&block[pos..], &mut raw, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inp
                        .set_dictionary(&DICTIONARY)
                        .map_err(std::io::Error::other)?;
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
            pos += (self.inp.total_in() - before) as usize;
            if raw.len() > MAX_FRAME {
                return Err(std::io::Error::other("header block too large"));
            }
        }
        parse_headers(&raw)
    }
}

fn parse_headers(raw: &[u8]) -> std::io::Result<Headers> {
    let bad = || std::io::Error::other("malformed SPDY header block");
    let mut p = 0usize;
    let u32_at = |p: &mut usize| -> std::io::Result<usize> {
        let b = raw.get(*p..*p + 4).ok_or_else(bad)?;
        *p += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(&mut p)?;
    if n > 1024 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let kl = u32_at(&mut p)?;
        let k = raw.get(p..p + kl).ok_or_else(bad)?;
        p += kl;
        let vl = u32_at(&mut p)?;
        let v = raw.get(p..p + vl).ok_or_else(bad)?;
        p += vl;
        out.push((
            String::from_utf8_lossy(k).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(out)
}

fn stream_id(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
}

/// Reads one frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    codec: &mut HeaderCodec,
) -> std::io::Result<Frame> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await?;
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "SPDY frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if head[0] & 0x80 == 0 {
        return Ok(Frame::Data {
            stream_id: stream_id(&head[0..4]),
            fin: flags & FLAG_FIN != 0,
            data: body,
        });
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(std::io::Error::other(format!(
            "SPDY version {version} is not 3"
        )));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let short = || std::io::Error::other("short SPDY control frame");
    Ok(match kind {
        SYN_STREAM => {
            if body.len() < 10 {
                return Err(short());
            }
            Frame::SynStream {
                stream_id: stream_id(&body),
                flags,
                headers: codec.decode(&body[10..])?,
            }
        }
        SYN_REPLY | HEADERS => {
            if body.len() < 4 {
                return Err(short());
            }
            let headers = codec.decode(&body[4..])?;
            if kind == SYN_REPLY {
                Frame::SynReply {
                    stream_id: stream_id(&body),
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id: stream_id(&body),
                    flags,
                    headers,
                }
            }
        }
        RST_STREAM if body.len() >= 8 => Frame::RstStream {
            stream_id: stream_id(&body),
            status: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        },
        PING if body.len() >= 4 => {
            Frame::Ping(u32::from_be_bytes([body[0], body[1], body[2], body[3]]))
        }
        GOAWAY if body.len() >= 8 => Frame::GoAway {
            last_stream_id: stream_id(&body),
            status: u32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        },
        SETTINGS | WINDOW_UPDATE => Frame::Ignored,
        _ => Frame::Ignored,
    })
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(0x8000u16 | VERSION).to_be_bytes());
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(body);
    f
}

/// Encodes one frame.
pub fn encode_frame(frame: &Frame, codec: &mut HeaderCodec) -> std::io::Result<Vec<u8>> {
    Ok(match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            let mut f = Vec::with_capacity(8 + data.len());
            f.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            f.push(if *fin { FLAG_FIN } else { 0 });
            f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(data);
            f
        }
        Frame::SynStream {
            stream_id,
            flags,
            headers,
        } => {
            let mut body = stream_id.to_be_bytes().to_vec();
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            body.extend(codec.encode(headers)?);
            control(SYN_STREAM, *flags, &body)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let mut body = stream_id.to_be_bytes().to_vec();
            body.extend(codec.encode(headers)?);
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                SYN_REPLY
            } else {
                HEADERS
            };
            control(kind, *flags, &body)
        }
        Frame::RstStream { stream_id, status } => {
            let mut body = stream_id.to_be_bytes().to_vec();
            body.extend_from_slice(&status.to_be_bytes());
            control(RST_STREAM, 0, &body)
        }
        Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_stream_id,
            status,
        } => {
            let mut body = last_stream_id.to_be_bytes().to_vec();
            body.extend_from_slice(&status.to_be_bytes());
            control(GOAWAY, 0, &body)
        }
        Frame::Ignored => Vec::new(),
    })
}

/// A stream the client opened: its headers and its incoming data (None at its end).
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub data: mpsc::Receiver<Vec<u8>>,
}

impl Stream {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends on the connection; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Frame>,
}

impl Sender {
    /// A sender whose frames go to `tx` (another transport carries them).
    pub fn from_channel(tx: mpsc::Sender<Frame>) -> Self {
        Sender { tx }
    }

    /// Data on a stream; an empty `data` with `fin` half-closes it.
    pub async fn data(&self, stream_id: u32, data: Vec<u8>, fin: bool) -> bool {
        self.tx
            .send(Frame::Data {
                stream_id,
                fin,
                data,
            })
            .await
            .is_ok()
    }

    pub async fn close(&self, stream_id: u32) -> bool {
        self.data(stream_id, Vec::new(), true).await
    }

    pub async fn go_away(&self) {
        let _ = self
            .tx
            .send(Frame::GoAway {
                last_stream_id: 0,
                status: 0,
            })
            .await;
    }
}

/// Serves a SPDY connection after the HTTP upgrade: every stream the client opens is answered
/// and handed out through the returned receiver; frames are written by `Sender`s. The session
/// ends when the client goes or every sender and the stream receiver are dropped.
pub fn serve<S>(io: S) -> (Sender, mpsc::Receiver<Stream>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel::<Frame>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    tokio::spawn(write_frames(wr, out_rx));
    let sender = Sender { tx: out_tx.clone() };
    tokio::spawn(read_frames(rd, out_tx, streams_tx));
    (sender, streams_rx)
}

/// The writer: the one owner of the outgoing compression context; it ends after a GOAWAY.
async fn write_frames<W: AsyncWrite + Unpin>(mut wr: W, mut out_rx: mpsc::Receiver<Frame>) {
    let mut codec = HeaderCodec::default();
    while let Some(f) = out_rx.recv().await {
        let last = matches!(f, Frame::GoAway { .. });
        let Ok(bytes) = encode_frame(&f, &mut codec) else {
            break;
        };
        if wr.write_all(&bytes).await.is_err() {
            break;
        }
        if last {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// The reader: new streams answered and handed out, data routed to its stream, pings
/// returned, until the client goes.
async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    out_tx: mpsc::Sender<Frame>,
    streams_tx: mpsc::Sender<Stream>,
) {
    let mut codec = HeaderCodec::default();
    let mut open: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
    loop {
        let frame = match read_frame(&mut rd, &mut codec).await {
            Ok(f) => f,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(error = %e, "SPDY connection ended");
                }
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
            } => {
                let opened = Opened {
                    stream_id,
                    fin: flags & FLAG_FIN != 0,
                    headers,
                };
                if !open_stream(opened, &out_tx, &streams_tx, &mut open).await {
                    break;
                }
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if let Some(tx) = open.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        open.remove(&stream_id);
                    }
                }
                if fin {
                    open.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            Frame::Ping(id) => {
                let _ = out_tx.send(Frame::Ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Ignored => {}
        }
    }
}

/// A stream the client opens: its id, whether it is half-closed already, its headers.
struct Opened {
    stream_id: u32,
    fin: bool,
    headers: Headers,
}

/// Answers a new stream and hands it out (refusing it when no one takes streams any more);
/// false when the connection can no longer be written.
async fn open_stream(
    o: Opened,
    out_tx: &mpsc::Sender<Frame>,
    streams_tx: &mpsc::Sender<Stream>,
    open: &mut HashMap<u32, mpsc::Sender<Vec<u8>>>,
) -> bool {
    let stream_id = o.stream_id;
    let reply = Frame::SynReply {
        stream_id,
        flags: 0,
        headers: vec![],
    };
    if out_tx.send(reply).await.is_err() {
        return false;
    }
    let (tx, rx) = mpsc::channel(16);
    if !o.fin {
        open.insert(stream_id, tx);
    }
    let s = Stream {
        id: stream_id,
        headers: o.headers,
        data: rx,
    };
    if streams_tx.send(s).await.is_err() {
        let _ = out_tx
            .send(Frame::RstStream {
                stream_id,
                status: 3,
            })
            .await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in DICTIONARY.iter() {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(
            (b << 16) | a,
            0xe3c6_a7c2,
            "Adler-32 of the SPDY/3 dictionary"
        );
    }

    #[tokio::test]
    async fn frames_round_trip_with_one_context_per_direction() {
        let mut tx = HeaderCodec::default();
        let mut rx = HeaderCodec::default();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "stdout".into()),
                    ("port".into(), "80".into()),
                ],
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: b"hello".to_vec(),
            },
            Frame::Ping(7),
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::GoAway {
                last_stream_id: 3,
                status: 0,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode_frame(f, &mut tx).unwrap());
        }
        let mut r = std::io::Cursor::new(wire);
        for f in &frames {
            assert_eq!(&read_frame(&mut r, &mut rx).await.unwrap(), f);
        }
    }

    #[tokio::test]
    async fn bad_frames_are_refused() {
        let mut codec = HeaderCodec::default();
        // version 2
        let mut r = std::io::Cursor::new(vec![0x80, 2, 0, 1, 0, 0, 0, 0]);
        assert!(read_frame(&mut r, &mut codec).await.is_err());
        // a length beyond the limit
        let mut r = std::io::Cursor::new(vec![0, 0, 0, 1, 0, 0xff, 0xff, 0xff]);
        assert!(read_frame(&mut r, &mut codec).await.is_err());
        // a header block that is not zlib
        let f = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        let mut r = std::io::Cursor::new(f);
        assert!(read_frame(&mut r, &mut codec).await.is_err());
    }

    #[test]
    fn header_blocks_that_expand_too_far_or_claim_too_much_are_refused() {
        // 4 MiB of zeros compresses to a few KiB: the decoder stops at MAX_FRAME.
        let mut z = Compress::new(Compression::best(), true);
        let bomb = vec![0u8; 4 << 20];
        let mut block = Vec::with_capacity(64 << 10);
        z.compress_vec(&bomb, &mut block, FlushCompress::Finish)
            .unwrap();
        assert!(block.len() < 64 << 10);
        assert!(HeaderCodec::default().decode(&block).is_err());
        // A count of pairs beyond the limit, and a length that runs past the block.
        assert!(parse_headers(&2000u32.to_be_bytes()).is_err());
        let mut raw = 1u32.to_be_bytes().to_vec();
        raw.extend_from_slice(&100u32.to_be_bytes());
        raw.extend_from_slice(b"short");
        assert!(parse_headers(&raw).is_err());
    }
}
