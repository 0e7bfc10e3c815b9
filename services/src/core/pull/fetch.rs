//! Fetching a pull's layers: concurrently (a bounded number of downloads), each teed into
//! the content store and, when it is unpacked, into its staging directory while it
//! downloads; a dropped connection resumes from the bytes received.

use super::plan::LayerJob;
use super::{report, ProgressTx, Puller, MAX_ATTEMPTS};
use crate::core::content::{Content, NamespacedWriter};
use crate::core::context::Ctx;
use crate::core::diff::apply_blob_with;
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::Labels;
use crate::core::registry::Remote;
use crate::core::unpack::Resolved;
use berth_snapshotters::layer::{self, Whiteouts};
use futures::StreamExt;
use std::io::Read;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What every layer download of one pull shares.
pub(super) struct LayerFetch {
    pub puller: Puller,
    pub ctx: Ctx,
    pub remote: Remote,
    /// Bounds the downloads running at once.
    pub downloads: Arc<tokio::sync::Semaphore>,
    pub progress: Option<ProgressTx>,
    /// The manifest the layers belong to, as progress reports name it.
    pub parents: Vec<String>,
    /// Labels every fetched blob gets (where it came from).
    pub source: Labels,
    /// What the pull's layers may inflate to, together (`[limits]`).
    pub budget: layer::PullBudget,
}

/// What a pull's layers amounted to.
pub(super) struct Fetched {
    /// Blobs downloaded (the rest were present).
    pub blobs: usize,
    pub bytes: u64,
}

impl LayerFetch {
    /// Runs every job, the downloads started largest first (the biggest layer is the longest
    /// pipeline) and in that order: each job gets its download slot here, before it is
    /// spawned, as tasks racing for the slots started the smallest layer first (debug log,
    /// 2026-12-07). The first failure cancels the rest. Unpacked layers are checked against
    /// the config's diffIDs.
    pub async fn fetch_all(self, mut jobs: Vec<LayerJob>, unpacked: &Resolved) -> Result<Fetched> {
        jobs.sort_by_key(|j| std::cmp::Reverse(j.desc.size));
        let this = Arc::new(self);
        let mut set = tokio::task::JoinSet::new();
        let mut queue = jobs.into_iter().peekable();
        let mut fetched = Fetched { blobs: 0, bytes: 0 };
        let mut failure: Option<Error> = None;
        loop {
            let dispatch = failure.is_none() && queue.peek().is_some();
            tokio::select! {
                biased;
                Some(joined) = set.join_next(), if !set.is_empty() => {
                    let failed = take_joined(joined, unpacked, &mut fetched, &mut failure);
                    if failed {
                        set.abort_all();
                    }
                }
                permit = this.downloads.clone().acquire_owned(), if dispatch => {
                    let Ok(permit) = permit else {
                        failure.get_or_insert(Error::new(Kind::Internal, "download limiter closed"));
                        continue;
                    };
                    let Some(job) = queue.next() else { continue };
                    let this = this.clone();
                    set.spawn(async move {
                        let r = this.layer(&job, permit).await;
                        (job.unpack.map(|(i, _)| i), r)
                    });
                }
                else => break,
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(fetched),
        }
    }

    /// One layer, in its download slot: fetched (teed into the unpack when it has a staging
    /// directory), or unpacked from the content store when only the snapshot is missing (in
    /// the slot as well: rare, and it bounds those unpacks too).
    async fn layer(
        &self,
        job: &LayerJob,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<LayerOutcome> {
        let digest = job.desc.digest.clone();
        let size = job.desc.size;
        let blob_lock = self.puller.lock_for(&format!("blob {digest}"));
        let _held = blob_lock.lock().await;
        let writer = match self.open_ingest(job).await? {
            Ingest::Open(writer) => *writer,
            Ingest::Present(outcome) => return Ok(outcome),
        };
        let resumed = writer.inner.offset() as u64;
        tracing::debug!(blob = %digest, size, "layer download started");
        if resumed > 0 {
            tracing::info!(blob = %digest, offset = resumed, "resuming download from byte {resumed}");
        }
        let (progress, parents) = (&self.progress, &self.parents[..]);
        report(
            progress,
            "downloading",
            &digest,
            parents,
            resumed as i64,
            size,
        );

        let (tx, rx) = mpsc::channel::<Chunk>(32);
        let content = self.puller.content.clone();
        let unpack = job
            .unpack
            .as_ref()
            .map(|(_, d)| (d.clone(), self.budget.clone()));
        let (digest2, source) = (digest.clone(), self.source.clone());
        let sink = tokio::task::spawn_blocking(move || {
            consume(content, writer, rx, unpack, &digest2, size, source)
        });
        let mut transfer = Transfer {
            fetch: self,
            digest: &digest,
            size,
            tx,
            sent: resumed,
            last_report: std::time::Instant::now(),
        };
        transfer.run().await;
        let sent = transfer.sent;
        drop(transfer);
        // The next download starts now, not once this layer's unpack and commit (an fsync of
        // the blob) are done: those held the slot for up to a second (perf sched, 2026-12-07).
        drop(permit);
        tracing::debug!(blob = %digest, bytes = sent - resumed, "layer downloaded");
        let diff_id = sink
            .await
            .map_err(|e| Error::new(Kind::Internal, format!("unpack task failed: {e}")))??;
        report(progress, "complete", &digest, parents, size, size);
        Ok(LayerOutcome {
            fetched: (sent - resumed).max(1),
            diff_id,
        })
    }

    /// Opens the layer's ingest; when the blob is present already, only its snapshot may be
    /// missing, so it is unpacked from the content store instead.
    async fn open_ingest(&self, job: &LayerJob) -> Result<Ingest> {
        let ctx = &self.ctx;
        let digest = &job.desc.digest;
        let size = job.desc.size;
        let ref_name = format!("layer-{digest}");
        let mut repaired = false;
        loop {
            match self
                .puller
                .content
                .writer(ctx.clone(), ref_name.clone(), size, digest.clone())
                .await
            {
                Ok(w) => return Ok(Ingest::Open(Box::new(w))),
                Err(e) if e.kind() == Kind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let diff_id = match &job.unpack {
                Some((_, dir)) => match self.apply_stored(job, dir).await {
                    Ok(d) => Some(d),
                    // Damaged at rest: dropped and fetched again (a re-pull repairs it).
                    Err(e)
                        if !repaired
                            && e.to_string().contains("corrupted in the content store") =>
                    {
                        tracing::warn!(blob = %digest, "stored blob is corrupted; fetching it again");
                        self.refetch(ctx, digest, dir).await?;
                        repaired = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            report(
                &self.progress,
                "already exists",
                digest,
                &self.parents,
                size,
                size,
            );
            return Ok(Ingest::Present(LayerOutcome {
                fetched: 0,
                diff_id,
            }));
        }
    }

    /// Unpacks a layer the content store holds into its staging directory; its diffID.
    async fn apply_stored(&self, job: &LayerJob, dir: &std::path::Path) -> Result<String> {
        let content = self.puller.content.clone();
        let ns = self.ctx.ns.clone();
        let desc = job.desc.descriptor();
        let (staged, budget) = (dir.to_path_buf(), self.budget.clone());
        blocking(move || {
            apply_blob_with(&content, &ns, &desc, |rd| {
                let rd = std::io::BufReader::with_capacity(1 << 20, rd);
                layer::apply_in_pull(rd, &staged, Whiteouts::Overlay, &budget)
            })
        })
        .await
        .map(|d| d.digest)
    }

    /// Clears a corrupted blob and the staging directory its failed unpack wrote into.
    async fn refetch(&self, ctx: &Ctx, digest: &str, dir: &std::path::Path) -> Result<()> {
        let (content, ns, d, dir) = (
            self.puller.content.clone(),
            ctx.ns.clone(),
            digest.to_string(),
            dir.to_path_buf(),
        );
        blocking(move || {
            content.discard_corrupt_sync(&ns, &d)?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("recreate a staging directory", e))
        })
        .await
    }
}

struct LayerOutcome {
    /// Bytes downloaded (0: the blob was present).
    fetched: u64,
    diff_id: Option<String>,
}

/// A download's message to its consumer: bytes, or why the download ended.
type Chunk = std::result::Result<bytes::Bytes, String>;

/// Whether a layer's ingest was opened or the blob is in the store already.
enum Ingest {
    Open(Box<NamespacedWriter>),
    Present(LayerOutcome),
}

/// How one connection's stream ended.
enum Received {
    /// The stream ran out (the whole blob, or a connection closed early).
    Ended,
    /// A read failed and an attempt is left: resume from the bytes received.
    Interrupted,
    /// The download is over; any failure has been sent to the consumer.
    Stopped,
}

/// One layer's download: its bytes go to the consumer, reconnecting from the bytes
/// received when a connection drops; a failure that ends it is the channel's last message.
struct Transfer<'a> {
    fetch: &'a LayerFetch,
    digest: &'a str,
    size: i64,
    tx: mpsc::Sender<Chunk>,
    /// Bytes received, counting those a resumed ingest held already.
    sent: u64,
    last_report: std::time::Instant,
}

impl Transfer<'_> {
    async fn run(&mut self) {
        let (digest, size) = (self.digest, self.size);
        let mut attempts = 0u32;
        while self.sent < size as u64 || (size == 0 && attempts == 0) {
            attempts += 1;
            let opened = self.fetch.remote.open_blob(digest, size, self.sent).await;
            let (stream, ranged) = match opened {
                Ok(s) => s,
                Err(e) if e.kind() == Kind::Unavailable && attempts < MAX_ATTEMPTS => {
                    backoff(attempts).await;
                    continue;
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e.to_string())).await;
                    break;
                }
            };
            match self.receive(stream, ranged, attempts).await {
                Received::Ended => {}
                Received::Interrupted => {
                    backoff(attempts).await;
                    continue;
                }
                Received::Stopped => break,
            }
            let sent = self.sent;
            if sent < size as u64 {
                if attempts < MAX_ATTEMPTS {
                    tracing::info!(blob = %digest, at = sent, "connection closed early; resuming");
                    backoff(attempts).await;
                    continue;
                }
                let _ = self
                    .tx
                    .send(Err(format!("blob {digest}: the registry closed the connection at byte {sent} of {size}")))
                    .await;
            }
            break;
        }
    }

    /// Passes one connection's bytes on, skipping those already received when the
    /// registry ignored the range.
    async fn receive(
        &mut self,
        mut stream: futures::stream::BoxStream<'static, Result<bytes::Bytes>>,
        ranged: bool,
        attempts: u32,
    ) -> Received {
        let (digest, size) = (self.digest, self.size);
        let mut skip = if ranged { 0 } else { self.sent };
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(mut b) => {
                    if skip > 0 {
                        let k = skip.min(b.len() as u64);
                        b = b.slice(k as usize..);
                        skip -= k;
                    }
                    if b.is_empty() {
                        continue;
                    }
                    self.sent += b.len() as u64;
                    if self.sent > size as u64 {
                        let _ = self
                            .tx
                            .send(Err(format!(
                                "blob {digest} is larger than the {size} bytes its descriptor says"
                            )))
                            .await;
                        return Received::Stopped;
                    }
                    if self.tx.send(Ok(b)).await.is_err() {
                        return Received::Stopped; // the unpack failed; its error is reported later
                    }
                    if self.last_report.elapsed() >= std::time::Duration::from_millis(100) {
                        self.last_report = std::time::Instant::now();
                        let (progress, parents) = (&self.fetch.progress, &self.fetch.parents);
                        report(
                            progress,
                            "downloading",
                            digest,
                            parents,
                            self.sent as i64,
                            size,
                        );
                    }
                }
                Err(e) if attempts < MAX_ATTEMPTS => {
                    tracing::info!(blob = %digest, at = self.sent, error = %e, "download interrupted; resuming");
                    return Received::Interrupted;
                }
                Err(e) => {
                    let _ = self.tx.send(Err(e.to_string())).await;
                    return Received::Stopped;
                }
            }
        }
        Received::Ended
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(5))).await;
}

/// The blocking end of a download: every chunk goes into the ingest (hashed as it is
/// written) and, when there is an `unpack` directory, on to a second thread that decompresses
/// and applies it (within the pull's budget), so writing and unpacking overlap. The blob commits only if its digest and
/// size match; a mismatch drops the ingest, so nothing is stored under that digest.
fn consume(
    content: Content,
    mut writer: NamespacedWriter,
    rx: mpsc::Receiver<Chunk>,
    unpack: Option<(std::path::PathBuf, layer::PullBudget)>,
    digest: &str,
    size: i64,
    labels: Labels,
) -> Result<Option<String>> {
    let reference = writer.reference().to_string();
    let ns = writer.ctx().ns.clone();
    let (atx, arx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(64);
    let applier = match unpack {
        Some((dir, budget)) => Some(spawn_applier(&writer, arx, dir, budget)?),
        None => None,
    };
    let to_apply = applier.is_some().then_some(atx);
    let transport = write_chunks(&mut writer, rx, to_apply);
    let applied = applier.map(|h| {
        h.join()
            .map_err(|_| Error::new(Kind::Internal, format!("unpack of {digest} panicked")))
            .and_then(|r| r.map_err(Error::from))
    });
    let complete = writer.inner.offset() == size;
    let got = writer.inner.digest_so_far().to_string();
    if writer.inner.offset() > size || (complete && got != digest) {
        let offset = writer.inner.offset();
        drop(writer);
        let _ = content.abort_sync(&ns, &reference);
        return Err(Error::precondition(format!(
            "blob {digest} was served as {got} ({offset} bytes); the registry sent different content, nothing was stored"
        )));
    }
    // Otherwise the bytes received so far stay in the ingest for a resume.
    if let Some(e) = transport {
        return Err(e);
    }
    if !complete {
        return Err(Error::new(
            Kind::Unavailable,
            format!(
                "blob {digest}: download ended at byte {} of {size}",
                writer.inner.offset()
            ),
        ));
    }
    let diff_id = match applied {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return Err(e.context(format_args!("layer {digest}"))),
        None => None,
    };
    tracing::debug!(blob = %digest, "layer unpacked");
    content.commit_sync(writer, size, digest, labels)?;
    tracing::debug!(blob = %digest, "layer blob committed");
    Ok(diff_id)
}

/// The thread that unpacks a layer as it arrives: the bytes the ingest holds already, then
/// the chunks sent to it; its result is the layer's diffID.
fn spawn_applier(
    writer: &NamespacedWriter,
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    dir: std::path::PathBuf,
    budget: layer::PullBudget,
) -> Result<std::thread::JoinHandle<berth_snapshotters::Result<String>>> {
    let prefix = writer.inner.received()?;
    Ok(std::thread::spawn(move || {
        let mut rd = ChannelReader {
            prefix: Some(std::io::BufReader::with_capacity(1 << 20, prefix)),
            rx,
            chunk: bytes::Bytes::new(),
        };
        layer::apply_in_pull(&mut rd, &dir, Whiteouts::Overlay, &budget).map(|a| a.diff_id)
    }))
}

/// Writes every chunk into the ingest and passes it on to the unpack, until the download
/// ends; the error that ended it early, if one did.
fn write_chunks(
    writer: &mut NamespacedWriter,
    mut rx: mpsc::Receiver<Chunk>,
    mut to_apply: Option<std::sync::mpsc::SyncSender<bytes::Bytes>>,
) -> Option<Error> {
    let mut unchecked = super::space::CHECK_EVERY;
    let mut behind = WriteBehind::new(writer);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Ok(b) => {
                if unchecked >= super::space::CHECK_EVERY {
                    unchecked = 0;
                    if let Err(e) = nearly_full(writer) {
                        return Some(e);
                    }
                }
                unchecked += b.len() as u64;
                let at = writer.inner.offset();
                if let Err(e) = writer.inner.write_at(at, &b) {
                    return Some(e.context(format_args!("ingest {}", writer.reference())));
                }
                behind.written(writer.inner.offset());
                // An unpack that failed stops listening; the download still completes so
                // a blob that is not what its digest says is reported as exactly that.
                if to_apply.as_ref().is_some_and(|t| t.send(b).is_err()) {
                    to_apply = None;
                }
            }
            Err(m) => return Some(Error::new(Kind::Unavailable, m)),
        }
    }
    None
}

/// Takes in one finished job; true when it is the pull's first failure.
fn take_joined(
    joined: std::result::Result<(Option<usize>, Result<LayerOutcome>), tokio::task::JoinError>,
    unpacked: &Resolved,
    fetched: &mut Fetched,
    failure: &mut Option<Error>,
) -> bool {
    let first = failure.is_none();
    let (index, r) = match joined {
        Ok(v) => v,
        Err(e) => {
            failure.get_or_insert(Error::new(
                Kind::Internal,
                format!("layer task failed: {e}"),
            ));
            return first;
        }
    };
    let outcome = match r {
        Ok(o) => o,
        Err(e) => {
            failure.get_or_insert(e);
            return first;
        }
    };
    if outcome.fetched > 0 {
        fetched.blobs += 1;
        fetched.bytes += outcome.fetched;
    }
    if let (Some(i), Some(diff_id)) = (index, outcome.diff_id) {
        if diff_id != unpacked.diff_ids[i] {
            failure.get_or_insert(Error::precondition(format!(
                "layer {} unpacks to {diff_id}, but the image config says {}; the image is inconsistent",
                unpacked.layers[i].digest, unpacked.diff_ids[i]
            )));
            return first;
        }
    }
    false
}

/// Starts the writeback of an ingest's bytes as they arrive, so the fsync that commits the
/// blob finds little left to write: with all of it at the end, the last layer's fsync was
/// the tail of a pull, and every other layer's held its thread (perf sched, 2026-12-07).
/// It only starts the I/O (SYNC_FILE_RANGE_WRITE); the commit's fsync still makes it durable.
struct WriteBehind {
    file: Option<std::fs::File>,
    /// Bytes handed to writeback so far.
    started: i64,
}

impl WriteBehind {
    /// Bytes written between two starts of writeback.
    const STEP: i64 = 8 << 20;

    fn new(writer: &NamespacedWriter) -> Self {
        WriteBehind {
            file: writer.inner.received().ok().map(std::io::Take::into_inner),
            started: writer.inner.offset(),
        }
    }

    /// The ingest holds `offset` bytes now.
    fn written(&mut self, offset: i64) {
        use std::os::fd::AsRawFd;
        let Some(file) = &self.file else { return };
        if offset - self.started < Self::STEP {
            return;
        }
        // SAFETY: sync_file_range on a descriptor we own; it reads no memory of ours.
        // A failure only leaves the bytes to the commit's fsync.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                self.started,
                offset - self.started,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        self.started = offset;
    }
}

/// Fails when the filesystem the ingest (and the layer's unpack, beside it under the root)
/// writes to has fallen under its floor of free space.
fn nearly_full(writer: &NamespacedWriter) -> Result<()> {
    let data = writer.inner.received()?.into_inner();
    super::space::check(&data, &format!("ingest {}", writer.reference()))
}

/// Replays the bytes an ingest already holds, then reads the chunks that arrive. It is the
/// decompressor's buffer: the chunks are inflated where they are (copying them into a
/// buffer of the decompressor's own was 1.5% of a pull's CPU, perf).
struct ChannelReader {
    prefix: Option<std::io::BufReader<std::io::Take<std::fs::File>>>,
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    chunk: bytes::Bytes,
}

impl std::io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let replayed = match &mut self.prefix {
            Some(p) => p.fill_buf()?.is_empty(),
            None => true,
        };
        if !replayed {
            return match &mut self.prefix {
                Some(p) => p.fill_buf(),
                None => Ok(&[]),
            };
        }
        self.prefix = None;
        while self.chunk.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.chunk = b,
                Err(_) => break,
            }
        }
        Ok(&self.chunk)
    }

    fn consume(&mut self, n: usize) {
        match &mut self.prefix {
            Some(p) => p.consume(n),
            None => {
                let n = n.min(self.chunk.len());
                bytes::Buf::advance(&mut self.chunk, n);
            }
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let have = std::io::BufRead::fill_buf(self)?;
        let n = buf.len().min(have.len());
        buf[..n].copy_from_slice(&have[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}
