//! The layer's bytes on their way in: decompression, the three threads of [`super::apply`]
//! (this one reads, one hashes the diffID, one parses the tar and applies its entries), and
//! the stream as the parser reads it.

use super::Applier;
use crate::hash::Sha256;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::sync::Mutex;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

type Chunk = Arc<Vec<u8>>;

/// The size of the chunks the reading thread hands on.
const CHUNK: usize = 256 << 10;

/// Whether a stream starting with `head` is gzip or zstd (what [`decompress`] unwraps).
pub fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&GZIP_MAGIC) || head.starts_with(&ZSTD_MAGIC)
}

/// Wraps `r` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    decompress_buffered(BufReader::with_capacity(1 << 20, r))
}

/// [`decompress`] for a reader that buffers already: the decompressor reads its buffer in
/// place (no second copy of the compressed bytes).
pub fn decompress_buffered<'a, R: BufRead + 'a>(mut br: R) -> Result<Box<dyn Read + 'a>> {
    let head = br.fill_buf().map_err(|e| Error::io("read layer", e))?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(crate::layer::inflate::GzipDecoder::new(br).map_err(|e| Error::io("gzip", e))?)
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(br).map_err(|e| Error::io("zstd", e))?)
    } else {
        Box::new(br)
    })
}

/// Reads `stream` to its end on this thread while `applier` parses it on another and a third
/// hashes it. Returns how reading, parsing (the entry count) and hashing (the hasher and the
/// byte count) went.
pub(super) fn run(
    mut stream: impl Read,
    mut applier: Applier,
) -> (Result<()>, Result<u64>, (Sha256, u64)) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(16);
    let (htx, hrx) = std::sync::mpsc::sync_channel::<Chunk>(16);
    let failed = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || hash(hrx));
        let failed = &failed;
        let parser = scope.spawn(move || -> Result<u64> {
            // A thread of its own: its umask can be its own, too.
            applier.creates.exact_modes &= super::own_umask();
            let r = parse(rx, &mut applier);
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            r
        });
        // Ends both channels when it returns: the parser and the hasher see the stream end.
        let read = feed(&mut stream, tx, htx, failed);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidArgument("layer parser panicked".into())));
        let hashed = hashing.join().unwrap_or_else(|_| (Sha256::new(), 0));
        (read, parsed, hashed)
    })
}

/// The diffID: the digest and the length of every byte received.
fn hash(hrx: Receiver<Chunk>) -> (Sha256, u64) {
    let (mut hasher, mut count) = (Sha256::new(), 0u64);
    for chunk in hrx {
        hasher.update(&chunk);
        count += chunk.len() as u64;
    }
    (hasher, count)
}

/// Sends each chunk read from `stream` to the hasher and, while it listens, to the parser.
/// The diffID covers the whole stream, including the end-of-archive padding, so this side
/// reads to the end even after the parser is done.
fn feed(
    stream: &mut impl Read,
    tx: SyncSender<Chunk>,
    htx: SyncSender<Chunk>,
    failed: &AtomicBool,
) -> Result<()> {
    let mut parser_gone = false;
    let mut sent = VecDeque::new();
    loop {
        let mut buf = reuse(&mut sent);
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read layer", e)),
        };
        buf.truncate(n);
        let buf = Arc::new(buf);
        if htx.send(buf.clone()).is_err() {
            return Err(Error::InvalidArgument("layer hasher stopped".into()));
        }
        if !parser_gone && tx.send(buf.clone()).is_err() {
            parser_gone = true;
        }
        sent.push_back(buf);
        if parser_gone && failed.load(Ordering::SeqCst) {
            return Ok(()); // refused: the rest of the stream does not matter
        }
    }
}

/// A buffer for the next chunk: the oldest one sent, once the hasher and the parser are both
/// done with it (they take chunks in order), else a new one. Zeroing a fresh 256 KiB buffer
/// for every chunk was 3.5% of a pull's CPU (perf); the bounded channels keep `sent` short.
fn reuse(sent: &mut VecDeque<Chunk>) -> Vec<u8> {
    let mut buf = match sent.front().map(Arc::strong_count) {
        Some(1) => sent
            .pop_front()
            .and_then(|c| Arc::try_unwrap(c).ok())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    // Only the tail a short read left unused is zeroed again.
    buf.resize(CHUNK, 0);
    buf
}

/// Applies every entry of the tar stream arriving on `rx`; returns how many there were.
fn parse(rx: Receiver<Chunk>, applier: &mut Applier) -> Result<u64> {
    let mut chunks = Chunks {
        rx,
        cur: Arc::default(),
        pos: 0,
        total: 0,
        tail: None,
        direct: applier.direct.clone(),
    };
    let mut entries = 0u64;
    let mut archive = tar::Archive::new(&mut chunks);
    archive.set_ignore_zeros(false);
    let iter = archive.entries().map_err(|e| Error::io("read layer", e))?;
    for entry in iter {
        let mut entry = entry
            .map_err(|e| Error::InvalidArgument(format!("layer is not a valid tar stream: {e}")))?;
        applier.entry(&mut entry)?;
        entries += 1;
    }
    applier.finish()?;
    Ok(entries)
}

/// The layer's bytes as the parser reads them, from the chunks the reading thread sends. A
/// stream that stops without its last block's padding or the end-of-archive blocks (some
/// image builders write such layers, and containerd reads them) is completed with zeros: the
/// bytes that are there were hashed into the diffID, which the caller checks, so nothing
/// unauthenticated is added.
struct Chunks {
    rx: Receiver<Chunk>,
    cur: Chunk,
    pos: usize,
    /// Bytes handed out so far.
    total: u64,
    /// Zero bytes still to hand out once the stream has ended (None: not ended yet).
    tail: Option<u64>,
    direct: Arc<Direct>,
}

/// A regular file's contents written straight from the chunk they arrived in. The tar
/// parser reads an entry's data through [`Chunks`] in calls no larger than what is left of
/// the entry; while a file is open for them ([`Direct::to`]), `Chunks` writes the bytes to it
/// and hands the parser the count alone, sparing a copy of every byte into the applier's
/// buffer (2.7% of a pull's CPU, perf). Bytes the parser makes up itself (a sparse entry's
/// holes, the zeros after a short stream) are not written here: the applier sees that
/// [`Direct::sunk`] did not move and writes them from its buffer.
pub(super) struct Direct {
    fd: AtomicI32,
    sunk: AtomicU64,
    /// The write that failed, for the applier to report as a write.
    failed: Mutex<Option<std::io::Error>>,
}

impl Default for Direct {
    fn default() -> Self {
        Direct {
            fd: AtomicI32::new(-1),
            sunk: AtomicU64::new(0),
            failed: Mutex::new(None),
        }
    }
}

/// While it lives, [`Chunks`] writes what it reads to the file it names.
pub(super) struct DirectTo<'a>(&'a Direct);

impl Drop for DirectTo<'_> {
    fn drop(&mut self) {
        self.0.fd.store(-1, Ordering::Relaxed);
    }
}

impl Direct {
    /// Sends what the parser reads to `fd` until the guard is dropped.
    pub(super) fn to(&self, fd: RawFd) -> DirectTo<'_> {
        self.fd.store(fd, Ordering::Relaxed);
        DirectTo(self)
    }

    /// Bytes written so far.
    pub(super) fn sunk(&self) -> u64 {
        self.sunk.load(Ordering::Relaxed)
    }

    /// The write error that ended the last read, if one did.
    pub(super) fn take_error(&self) -> Option<std::io::Error> {
        self.failed.lock().ok().and_then(|mut e| e.take())
    }

    /// Writes `data` to the open file; false when no file is open.
    fn sink(&self, data: &[u8]) -> std::io::Result<bool> {
        let fd = self.fd.load(Ordering::Relaxed);
        if fd < 0 {
            return Ok(false);
        }
        // SAFETY: the applier keeps `fd` open while the guard naming it lives; the File
        // only borrows it for this write.
        let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        if let Err(e) = std::io::Write::write_all(&mut *file, data) {
            let kind = e.kind();
            if let Ok(mut failed) = self.failed.lock() {
                *failed = Some(e);
            }
            return Err(std::io::Error::new(kind, "write failed"));
        }
        self.sunk.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(true)
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.cur.len() {
            if let Some(left) = self.tail.as_mut() {
                let n = (buf.len() as u64).min(*left) as usize;
                buf[..n].fill(0);
                *left -= n as u64;
                return Ok(n);
            }
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => {
                    let pad = (512 - self.total % 512) % 512;
                    self.tail = Some(pad + 1024);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        let data = &self.cur[self.pos..self.pos + n];
        if !self.direct.sink(data)? {
            buf[..n].copy_from_slice(data);
        }
        self.pos += n;
        self.total += n as u64;
        Ok(n)
    }
}
