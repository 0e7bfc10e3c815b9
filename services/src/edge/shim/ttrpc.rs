//! ttrpc over unix sockets, async: a multiplexing client (daemon -> shim, and daemon -> NRI
//! plugin over any byte stream) and the daemon's server for the events shims forward.

use crate::core::error::{Error, Kind, Result};
use crate::core::events::{Envelope, Exchange};
use berth_proto::ttrpc::{Request, Response};
use berth_proto::ttrpc_wire::{FrameType, Header, HEADER_LEN, MAX_PAYLOAD};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// Reads one frame; the length is checked before anything is allocated.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<(Header, Vec<u8>)> {
    let mut hb = [0u8; HEADER_LEN];
    r.read_exact(&mut hb).await?;
    let h = Header::decode(&hb)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let mut payload = vec![0u8; h.length as usize];
    r.read_exact(&mut payload).await?;
    Ok((h, payload))
}

/// Writes one frame (header and payload in one write).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream_id: u32,
    kind: FrameType,
    payload: &[u8],
) -> std::io::Result<()> {
    if payload.len() > MAX_PAYLOAD as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "ttrpc message too large",
        ));
    }
    let h = Header {
        length: payload.len() as u32,
        stream_id,
        kind,
        flags: 0,
    };
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&h.encode());
    frame.extend_from_slice(payload);
    w.write_all(&frame).await
}

/// gRPC's code for a service or method the server does not have.
const UNIMPLEMENTED: i32 = 12;

fn code_kind(code: i32) -> Kind {
    match code {
        5 => Kind::NotFound,
        6 => Kind::AlreadyExists,
        3 => Kind::InvalidArgument,
        9 => Kind::FailedPrecondition,
        14 => Kind::Unavailable,
        11 => Kind::OutOfRange,
        4 => Kind::DeadlineExceeded,
        8 => Kind::ResourceExhausted,
        _ => Kind::Internal,
    }
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Response>>>>;

/// A connection to one shim. Calls may overlap (Wait stays open while others run).
pub struct Client {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    pending: Pending,
    next: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
    /// Becomes true when the shim's connection is gone.
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| Error::io(format!("connect to shim at {}", path.display()), e))?;
        Ok(Self::over(stream))
    }

    /// A client over an established byte stream (an NRI plugin's multiplexed channel).
    pub fn over<S: AsyncRead + AsyncWrite + Send + 'static>(stream: S) -> Self {
        let (mut r, w) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let p = pending.clone();
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(async move {
            while let Ok((h, payload)) = read_frame(&mut r).await {
                if h.kind != FrameType::Response {
                    continue;
                }
                let Ok(resp) = Response::decode(payload.as_slice()) else {
                    continue;
                };
                let waiter = p.lock().ok().and_then(|mut m| m.remove(&h.stream_id));
                if let Some(tx) = waiter {
                    let _ = tx.send(resp);
                }
            }
            // Connection gone: every waiting call fails.
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
            let _ = closed_tx.send(true);
        });
        Client {
            writer: tokio::sync::Mutex::new(Box::new(w)),
            pending,
            next: AtomicU32::new(1),
            reader,
            closed,
        }
    }

    /// Resolves when the connection to the shim is gone.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Calls `service/method`; `timeout` None waits as long as the shim takes (Wait).
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let resp = self.exchange(service, method, req, timeout).await?;
        if let Some(st) = resp.status.filter(|s| s.code != 0) {
            return Err(Error::new(code_kind(st.code), st.message));
        }
        Resp::decode(resp.payload.as_slice()).map_err(|e| {
            Error::new(
                Kind::Internal,
                format!("shim answered {method} with garbage: {e}"),
            )
        })
    }

    /// Whether the peer serves `service`: any answer to `method` but Unimplemented says it
    /// does (ttrpc answers a service it does not know with Unimplemented, before any method
    /// runs).
    pub async fn serves<Req: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<bool> {
        let resp = self.exchange(service, method, req, Some(timeout)).await?;
        Ok(resp.status.is_none_or(|s| s.code != UNIMPLEMENTED))
    }

    /// Sends one request and waits for its response frame, whatever its status.
    pub async fn exchange<Req: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        let request = Request {
            service: service.to_string(),
            method: method.to_string(),
            payload: req.encode_to_vec(),
            timeout_nano: timeout.map(|t| t.as_nanos() as i64).unwrap_or(0),
            metadata: vec![],
        }
        .encode_to_vec();
        let (tx, rx) = oneshot::channel();
        let poisoned = || Error::new(Kind::Internal, "ttrpc client poisoned");
        {
            // The stream id is taken under the writer's lock: a ttrpc server refuses an id
            // lower than one it has seen, so concurrent calls (an exec's Wait beside its
            // Start) must reach the socket in the order their ids were given.
            let mut w = self.writer.lock().await;
            let id = self.next.fetch_add(2, Ordering::Relaxed);
            self.pending.lock().map_err(|_| poisoned())?.insert(id, tx);
            if let Err(e) = write_frame(&mut *w, id, FrameType::Request, &request).await {
                self.pending.lock().map_err(|_| poisoned())?.remove(&id);
                return Err(Error::new(
                    Kind::Unavailable,
                    format!("shim connection lost: {e}"),
                ));
            }
        }
        match timeout {
            Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| {
                Error::new(
                    Kind::Unavailable,
                    format!("shim did not answer {method} within {t:?}"),
                )
            })?,
            None => rx.await,
        }
        .map_err(|_| {
            Error::new(
                Kind::Unavailable,
                format!("shim connection lost during {method}"),
            )
        })
    }
}

/// A unix socket at `path` (replacing what is there), created 0600 from the start: no window
/// with a looser socket. Called at start, before anything else changes the umask.
pub(crate) fn bind_private(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

/// Serves `containerd.services.events.ttrpc.v1.Events/Forward` to shims on `path`.
pub fn serve_events(path: &Path, exchange: Exchange) -> Result<tokio::task::JoinHandle<()>> {
    let listener = bind_private(path)?;
    Ok(tokio::spawn(async move {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        while let Ok((stream, _)) = listener.accept().await {
            // Only peers running as our own user may publish.
            match stream.peer_cred() {
                Ok(c) if c.uid() == me => {}
                _ => continue,
            }
            let exchange = exchange.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                while let Ok((h, payload)) = read_frame(&mut r).await {
                    if h.kind != FrameType::Request {
                        continue;
                    }
                    let status = match Request::decode(payload.as_slice()) {
                        Ok(req) => forward(&exchange, &req),
                        Err(e) => Some((3, format!("bad request: {e}"))),
                    };
                    let resp = Response {
                        status: Some(berth_proto::google::rpc::Status {
                            code: status.as_ref().map(|s| s.0).unwrap_or(0),
                            message: status.map(|s| s.1).unwrap_or_default(),
                            details: vec![],
                        }),
                        payload: vec![],
                    };
                    if write_frame(
                        &mut w,
                        h.stream_id,
                        FrameType::Response,
                        &resp.encode_to_vec(),
                    )
                    .await
                    .is_err()
                    {
                        break;
                    }
                }
            });
        }
    }))
}

fn forward(exchange: &Exchange, req: &Request) -> Option<(i32, String)> {
    use berth_proto::containerd::services::events::ttrpc::v1::ForwardRequest;
    if req.service != "containerd.services.events.ttrpc.v1.Events" || req.method != "Forward" {
        return Some((
            12,
            format!("{}/{} is not served here", req.service, req.method),
        ));
    }
    let f = match ForwardRequest::decode(req.payload.as_slice()) {
        Ok(f) => f,
        Err(e) => return Some((3, format!("bad forward request: {e}"))),
    };
    let Some(env) = f.envelope else {
        return Some((3, "envelope must be set".into()));
    };
    let ts = berth_proto::vocab::time::from_proto(env.timestamp.as_ref());
    let event = match env.event {
        Some(a) => crate::edge::grpc::events::convert::event_in(a),
        None => return Some((3, "event must be set".into())),
    };
    let envelope = Envelope {
        timestamp: if ts == 0 {
            crate::core::metadata::now()
        } else {
            ts
        },
        namespace: env.namespace,
        topic: env.topic,
        event,
    };
    exchange.forward(envelope).err().map(|e| (3, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::ttrpc_wire as wire;

    /// A shim that refuses, as containerd's ttrpc server does, a stream id not above the
    /// last it saw, and answers everything else at once.
    fn strict_shim(path: &Path) -> std::thread::JoinHandle<Vec<u32>> {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut seen = vec![];
            while let Ok((h, _)) = wire::read_frame(&mut conn) {
                let refused = seen.last().is_some_and(|&last| h.stream_id <= last);
                seen.push(h.stream_id);
                let status = refused.then(|| berth_proto::google::rpc::Status {
                    code: 3,
                    message: "StreamID cannot be re-used and must increment".into(),
                    details: vec![],
                });
                let resp = Response {
                    status,
                    payload: vec![],
                };
                let frame = resp.encode_to_vec();
                if wire::write_frame(&mut conn, h.stream_id, wire::FrameType::Response, &frame)
                    .is_err()
                {
                    break;
                }
            }
            seen
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_calls_reach_the_shim_in_stream_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.sock");
        let shim = strict_shim(&path);
        let client = Arc::new(Client::connect(&path).await.unwrap());
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..400 {
            let c = client.clone();
            calls.spawn(async move {
                c.call::<_, ()>("s", "m", &(), Some(Duration::from_secs(10)))
                    .await
            });
        }
        while let Some(r) = calls.join_next().await {
            r.unwrap().unwrap();
        }
        drop(client);
        let seen = shim.join().unwrap();
        assert_eq!(seen.len(), 400);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }
}
