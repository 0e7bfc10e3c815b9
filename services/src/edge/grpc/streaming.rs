//! containerd.services.streaming.v1.Streaming: client-opened streams that a later call (a
//! Transfer's progress, credentials, archive bytes) refers to by id.

use super::namespace;
use berth_proto::streaming::{streaming_server::Streaming, StreamInit};
use prost::Message;
use prost_types::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// A registered stream: what the server sends, and what the client sent after the init.
pub struct Stream {
    pub tx: mpsc::Sender<Result<Any, Status>>,
    pub rx: mpsc::Receiver<Any>,
}

impl Stream {
    /// Sends one message to the client.
    pub async fn send<M: prost::Message + prost::Name>(&self, m: &M) -> Result<(), Status> {
        self.tx
            .send(Ok(berth_proto::to_any(m)))
            .await
            .map_err(|_| Status::cancelled("the client closed its stream"))
    }

    /// The client's next message, None once it closed its side.
    pub async fn recv(&mut self) -> Option<Any> {
        self.rx.recv().await
    }
}

/// Streams opened and not yet taken, by namespace and id.
#[derive(Clone, Default)]
pub struct OpenStreams {
    open: Arc<Mutex<HashMap<String, Stream>>>,
}

impl OpenStreams {
    /// Takes the stream `id` of `ns` for one call; the stream ends when it is dropped.
    pub fn take(&self, ns: &str, id: &str) -> Result<Stream, Status> {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{ns}/{id}"))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "stream {id:?} is not open in namespace {ns}; open it on the Streaming service first"
                ))
            })
    }
}

/// Whether `any` carries message `M` (with or without the type.googleapis.com prefix).
pub fn is<M: prost::Name>(any: &Any) -> bool {
    let url = any.type_url.trim_start_matches('/');
    url == M::full_name() || url.rsplit('/').next() == Some(M::full_name().as_str())
}

pub fn decode<M: prost::Message + prost::Name + Default>(any: &Any) -> Result<M, Status> {
    if !is::<M>(any) {
        return Err(Status::invalid_argument(format!(
            "expected {}, got {:?}",
            M::full_name(),
            any.type_url
        )));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| Status::invalid_argument(format!("{} does not decode: {e}", M::full_name())))
}

pub struct StreamingService {
    pub streams: OpenStreams,
}

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = ReceiverStream<Result<Any, Status>>;

    async fn stream(
        &self,
        req: Request<tonic::Streaming<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ns = namespace(&req)?;
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before its StreamInit"))?;
        let init: StreamInit = decode(&first)?;
        if init.id.is_empty() || init.id.len() > 256 {
            return Err(Status::invalid_argument("stream id must be 1 to 256 bytes"));
        }
        let key = format!("{ns}/{}", init.id);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(64);
        {
            let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
            if open.contains_key(&key) {
                return Err(Status::already_exists(format!(
                    "stream {:?} is already open",
                    init.id
                )));
            }
            let ack = Any {
                type_url: "google.protobuf.Empty".into(),
                value: ().encode_to_vec(),
            };
            let _ = out_tx.try_send(Ok(ack));
            open.insert(
                key.clone(),
                Stream {
                    tx: out_tx,
                    rx: in_rx,
                },
            );
        }
        let registry = self.streams.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if in_tx.send(m).await.is_err() {
                    break;
                }
            }
            // A stream nobody took is forgotten once the client goes away.
            if in_tx.is_closed() {
                return;
            }
            drop(in_tx);
            let mut open = registry.open.lock().unwrap_or_else(|e| e.into_inner());
            if open.get(&key).is_some_and(|s| s.tx.is_closed()) {
                open.remove(&key);
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

/// What berth grants a sender at once: a megabyte in flight keeps a local import at disk
/// speed (containerd's own clients grant 64 KiB).
const RECEIVE_WINDOW: i32 = 1 << 20;
/// Largest Data message berth sends, whatever the window.
const MAX_SEND: usize = 256 << 10;
/// How long a byte stream may stall (no data, no window) before berth gives up on it.
const STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// A blocking reader of the bytes a client sends on a stream (transfer `Data` messages): the
/// client sends what berth granted with `WindowUpdate`, and berth grants again as it takes.
pub struct ByteReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    chunk: Vec<u8>,
    at: usize,
}

impl std::io::Read for ByteReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => (self.chunk, self.at) = (c, 0),
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The bytes of `stream` as a [`ByteReader`] (to read on a blocking thread).
pub fn receive_bytes(mut stream: Stream) -> ByteReader {
    use berth_proto::types::transfer::{Data, WindowUpdate};
    let (tx, rx) = mpsc::channel(32);
    tokio::spawn(async move {
        let grant = |n: i32| WindowUpdate { update: n };
        if stream.send(&grant(RECEIVE_WINDOW)).await.is_err() {
            return;
        }
        loop {
            let m = match tokio::time::timeout(STALL, stream.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(_) => {
                    let _ = tx
                        .send(Err(format!(
                            "the client sent nothing for {} s",
                            STALL.as_secs()
                        )))
                        .await;
                    return;
                }
            };
            let chunk = if is::<Data>(&m) {
                decode::<Data>(&m)
                    .map(|d| d.data)
                    .map_err(|e| e.message().to_string())
            } else if is::<WindowUpdate>(&m) {
                continue;
            } else {
                Err(format!(
                    "the byte stream carried {:?}, not data",
                    m.type_url
                ))
            };
            let (n, failed) = (chunk.as_ref().map_or(0, Vec::len), chunk.is_err());
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
            // Taken into the reader's queue: the sender may send as much again.
            let _ = stream.send(&grant(n as i32)).await;
        }
    });
    ByteReader {
        rx,
        chunk: vec![],
        at: 0,
    }
}

/// A blocking writer whose bytes go to a client's stream as transfer `Data`, no more than the
/// client granted with `WindowUpdate`. The returned task ends once everything written is
/// handed to the client's stream (or the client went away).
pub struct ByteWriter {
    tx: mpsc::Sender<Vec<u8>>,
}

impl std::io::Write for ByteWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx.blocking_send(buf.to_vec()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client closed the stream or stopped reading it",
            )
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn send_bytes(mut stream: Stream) -> (ByteWriter, tokio::task::JoinHandle<()>) {
    use berth_proto::types::transfer::{Data, WindowUpdate};
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let task = tokio::spawn(async move {
        let mut credit: i64 = 0;
        while let Some(chunk) = rx.recv().await {
            let mut rest = chunk.as_slice();
            while !rest.is_empty() {
                while credit <= 0 {
                    // A client that stops granting (or reading) ends the export.
                    let Ok(next) = tokio::time::timeout(STALL, stream.recv()).await else {
                        return;
                    };
                    match next {
                        Some(m) if is::<WindowUpdate>(&m) => {
                            credit +=
                                decode::<WindowUpdate>(&m).map_or(0, |w| w.update.max(0)) as i64;
                        }
                        Some(_) => {}
                        // The client is gone: the writer fails on its next write.
                        None => return,
                    }
                }
                let n = rest.len().min(credit as usize).min(MAX_SEND);
                let data = Data {
                    data: rest[..n].to_vec(),
                };
                if stream.send(&data).await.is_err() {
                    return;
                }
                credit -= n as i64;
                rest = &rest[n..];
            }
        }
        // Everything is queued: wait (a bounded time) until the transport took it all, so the
        // Transfer's answer cannot overtake the archive's last bytes.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while stream.tx.capacity() < stream.tx.max_capacity()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    (ByteWriter { tx }, task)
}
