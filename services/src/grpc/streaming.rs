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
