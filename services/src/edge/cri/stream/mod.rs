//! The CRI streaming server: Exec, Attach and PortForward answer with a URL here, holding a
//! single-use token that expires after a minute; the client upgrades that URL's connection to
//! SPDY/3.1 and speaks Kubernetes' remote-command (`v4.channel.k8s.io` and older) or
//! port-forward protocol over it. Only a connection that presents a valid token holds one of
//! the session places; one still sending its request head holds a place of its own, briefly.

mod attach;
mod exec;
mod port_forward;

mod resize;
pub mod spdy;
mod ws;

use super::container::exec::{ExecIo, ExecSpec};
use super::Cri;
use crate::core::error::{Error, Result};
use attach::{remote_attach, run_attach};
use berth_proto::cri::v1 as cri;
use exec::{remote_exec, run_exec};
use port_forward::port_forward;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// How long a URL stays valid.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How long a client may take to open the streams it asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head read.
const MAX_HEAD: usize = 16 << 10;
/// How long a connection may take to send its request head, before its token is checked.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections sending their request heads at once; a new one closes the oldest.
const MAX_HEADS: usize = 128;
/// Sessions (connections that presented a valid token) at once.
const MAX_SESSIONS: usize = 256;

/// What a URL was made for.
#[derive(Clone, Debug)]
pub enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

#[derive(Clone)]
pub struct StreamServer {
    addr: SocketAddr,
    pending: Arc<Mutex<HashMap<String, (Pending, Instant)>>>,
}

impl StreamServer {
    /// Binds `host:port` ("0" picks a port) and serves until berthd stops.
    pub async fn start(cri: Cri, host: &str, port: &str) -> Result<Self> {
        let bind = format!("{host}:{}", if port.is_empty() { "0" } else { port });
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|e| Error::io(format!("streaming server on {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("streaming server address", e))?;
        let server = StreamServer {
            addr,
            pending: Arc::default(),
        };
        let s = server.clone();
        let admission = Arc::new(Admission::default());
        tokio::spawn(async move {
            loop {
                let (conn, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let place = admission.head_place();
                let (s, cri, admission) = (s.clone(), cri.clone(), admission.clone());
                tokio::spawn(async move {
                    if let Err(e) = s.connection(conn, place, &admission, cri).await {
                        tracing::debug!(error = %e, "streaming session ended");
                    }
                });
            }
        });
        tracing::info!(address = %addr, "CRI streaming server listening");
        Ok(server)
    }

    /// A fresh single-use URL for `p`.
    pub fn url_for(&self, p: Pending) -> String {
        if let Pending::Exec(_) = p {
            // The client connects and the exec's process joins the container's cgroups some
            // milliseconds from now; the kernel's wait for a grace period before that move
            // runs meanwhile.
            crate::core::runtime::warmup::begin();
        }
        let kind = match &p {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        };
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut m = lock(&self.pending);
        m.retain(|_, (_, at)| at.elapsed() < TOKEN_TTL);
        m.insert(token.clone(), (p, Instant::now()));
        format!("http://{}/{kind}/{token}", self.addr)
    }

    fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut m = lock(&self.pending);
        let (p, at) = m.remove(token)?;
        let matches = matches!(
            (kind, &p),
            ("exec", Pending::Exec(_))
                | ("attach", Pending::Attach(_))
                | ("portforward", Pending::PortForward(_))
        );
        (matches && at.elapsed() < TOKEN_TTL).then_some(p)
    }

    async fn connection(
        &self,
        mut conn: TcpStream,
        mut place: HeadPlace,
        admission: &Admission,
        cri: Cri,
    ) -> std::io::Result<()> {
        let read = tokio::time::timeout(
            HEAD_TIMEOUT,
            crate::edge::http1::read_head(&mut conn, MAX_HEAD),
        );
        let (head, rest) = tokio::select! {
            r = read => match r {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            },
            _ = &mut place.closed => return Ok(()),
        };
        drop(place);
        let req = match parse_head(&head) {
            Some(r) => r,
            None => return respond(&mut conn, "400 Bad Request", "malformed request\n").await,
        };
        let mut parts = req.path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // Taken before the token, so that a full server leaves the token for a retry; a
        // connection with a bad token gives its place back at once.
        let Some(_session) = admission.session() else {
            return respond(
                &mut conn,
                "503 Service Unavailable",
                "too many streaming sessions\n",
            )
            .await;
        };
        let Some(pending) = self.take(kind, token) else {
            return respond(
                &mut conn,
                "404 Not Found",
                "unknown or expired stream URL\n",
            )
            .await;
        };
        let upgrade = req.header("upgrade").unwrap_or("").to_ascii_lowercase();
        if upgrade == "websocket" {
            return ws::serve(conn, rest, &req, pending, cri).await;
        }
        if upgrade != "spdy/3.1" {
            return respond(
                &mut conn,
                "400 Bad Request",
                "this server upgrades to SPDY/3.1\n",
            )
            .await;
        }
        // The remote-command protocol spoken here is v4's; older clients are turned away.
        let supported: &[&'static str] = match pending {
            Pending::PortForward(_) => &["portforward.k8s.io"],
            _ => &["v4.channel.k8s.io"],
        };
        let Some(protocol) = req.choose("x-stream-protocol-version", supported) else {
            return respond(&mut conn, "403 Forbidden", "no common stream protocol\n").await;
        };
        let reply = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n\r\n"
        );
        conn.write_all(reply.as_bytes()).await?;
        tracing::debug!(protocol, "streaming session over SPDY");
        let (tx, streams) = spdy::serve(Rewind {
            pre: rest,
            pos: 0,
            inner: conn,
        });
        match pending {
            Pending::Exec(r) => remote_exec(cri, r, tx, streams).await,
            Pending::Attach(r) => remote_attach(cri, r, tx, streams).await,
            Pending::PortForward(r) => port_forward(cri, r, tx, streams).await,
        }
        Ok(())
    }
}

/// Who may hold a connection, and for how long: one still sending its request head holds
/// one of `MAX_HEADS` places (for `HEAD_TIMEOUT` at most, and the oldest is closed when a new
/// connection needs its place), and only one whose token was valid holds one of
/// `MAX_SESSIONS`. Idle or slow connections thus cost a bounded, short-lived share of memory
/// and descriptors, and never the places of sessions.
struct Admission {
    heads: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
    next_head: AtomicU64,
    sessions: Arc<Semaphore>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            heads: Arc::default(),
            next_head: AtomicU64::new(0),
            sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
        }
    }
}

impl Admission {
    /// A place for a newly accepted connection's request head.
    fn head_place(&self) -> HeadPlace {
        let id = self.next_head.fetch_add(1, Ordering::Relaxed);
        let (tx, closed) = oneshot::channel();
        let mut heads = lock(&self.heads);
        if heads.len() >= MAX_HEADS {
            // Dropping the oldest's sender tells it to close.
            heads.pop_first();
        }
        heads.insert(id, tx);
        HeadPlace {
            heads: self.heads.clone(),
            id,
            closed,
        }
    }

    /// A session's place, if one is free.
    fn session(&self) -> Option<OwnedSemaphorePermit> {
        self.sessions.clone().try_acquire_owned().ok()
    }
}

/// A connection's place while its request head is read; given back when dropped.
struct HeadPlace {
    heads: Arc<Mutex<BTreeMap<u64, oneshot::Sender<()>>>>,
    id: u64,
    /// Resolves when a newer connection has taken this place.
    closed: oneshot::Receiver<()>,
}

impl Drop for HeadPlace {
    fn drop(&mut self) {
        lock(&self.heads).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection whose first bytes were already read with the request head.
pub(super) struct Rewind {
    pub(super) pre: Vec<u8>,
    pub(super) pos: usize,
    pub(super) inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = buf.remaining().min(self.pre.len() - self.pos);
            let (pos, end) = (self.pos, self.pos + n);
            buf.put_slice(&self.pre[pos..end]);
            self.pos = end;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(super) struct Head {
    path: String,
    pub(super) headers: Vec<(String, String)>,
}

impl Head {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first of `supported` (in this side's order of preference) that the client offers
    /// in `header` (repeated, or comma-separated).
    pub(super) fn choose(&self, header: &str, supported: &[&'static str]) -> Option<&'static str> {
        let offered: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| k == header)
            .flat_map(|(_, v)| v.split(',').map(str::trim))
            .collect();
        supported.iter().copied().find(|p| offered.contains(p))
    }
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?, first.next()?);
    if !matches!(method, "GET" | "POST") {
        return None;
    }
    let path = target.split('?').next()?.to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Head { path, headers })
}

/// A plain-text answer before any upgrade.
pub(super) async fn respond(conn: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    crate::edge::http1::respond(conn, status, "text/plain", body).await
}

/// The client's streams by type, once every one it must open has arrived.
async fn gather(
    streams: &mut tokio::sync::mpsc::Receiver<spdy::Stream>,
    want: &[&str],
) -> Option<HashMap<String, spdy::Stream>> {
    let mut got: HashMap<String, spdy::Stream> = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    while want.iter().any(|w| !got.contains_key(*w)) {
        let s = tokio::time::timeout_at(deadline, streams.recv())
            .await
            .ok()??;
        let kind = s.header("streamtype").unwrap_or("").to_string();
        got.insert(kind, s);
    }
    Some(got)
}

/// The v4 status the error stream carries at the end.
fn status_json(exit: Option<i32>, err: Option<&str>) -> Vec<u8> {
    let v = match (exit, err) {
        (_, Some(e)) => {
            serde_json::json!({"metadata": {}, "status": "Failure", "message": e, "reason": "InternalError"})
        }
        (Some(0), None) | (None, None) => serde_json::json!({"metadata": {}, "status": "Success"}),
        (Some(code), None) => serde_json::json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The streams an exec or attach uses, by type.
fn wanted(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Vec<&'static str> {
    let mut want = vec!["error"];
    if stdin {
        want.push("stdin");
    }
    if stdout {
        want.push("stdout");
    }
    if stderr && !tty {
        want.push("stderr");
    }
    if tty {
        want.push("resize");
    }
    want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse() {
        let h = parse_head(b"POST /exec/abc?x=1 HTTP/1.1\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n").unwrap();
        assert_eq!(h.path, "/exec/abc");
        assert_eq!(h.header("upgrade"), Some("SPDY/3.1"));
        assert!(parse_head(b"DELETE / HTTP/1.1\r\n\r\n").is_none());
        assert!(parse_head(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn protocols_are_chosen_by_this_side_and_only_v4_over_spdy() {
        let h = parse_head(b"POST /exec/t HTTP/1.1\r\nX-Stream-Protocol-Version: v5.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io, v4.channel.k8s.io\r\n\r\n").unwrap();
        assert_eq!(
            h.choose("x-stream-protocol-version", &["v4.channel.k8s.io"]),
            Some("v4.channel.k8s.io")
        );
        let old = parse_head(
            b"POST /exec/t HTTP/1.1\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            old.choose("x-stream-protocol-version", &["v4.channel.k8s.io"]),
            None
        );
    }

    #[test]
    fn tokens_are_single_use_and_bound_to_their_kind() {
        let s = StreamServer {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            pending: Arc::default(),
        };
        let url = s.url_for(Pending::Exec(cri::ExecRequest::default()));
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(
            s.take("attach", &token).is_none(),
            "an exec token opens no attach"
        );
        let url = s.url_for(Pending::Exec(cri::ExecRequest::default()));
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(s.take("exec", &token).is_some());
        assert!(s.take("exec", &token).is_none(), "spent");
        assert!(s.take("exec", "0123").is_none());
    }

    #[test]
    fn a_new_connection_closes_the_oldest_waiting_head_and_sessions_are_counted_apart() {
        let a = Admission::default();
        let mut waiting: Vec<HeadPlace> = (0..MAX_HEADS).map(|_| a.head_place()).collect();
        let sessions: Vec<_> = (0..MAX_SESSIONS).map_while(|_| a.session()).collect();
        assert_eq!(sessions.len(), MAX_SESSIONS, "heads take no session places");
        assert!(a.session().is_none());
        let mut newest = a.head_place();
        assert!(
            matches!(
                waiting[0].closed.try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "the oldest head is told to close"
        );
        for w in &mut waiting[1..] {
            assert!(matches!(
                w.closed.try_recv(),
                Err(oneshot::error::TryRecvError::Empty)
            ));
        }
        // A head read to its end gives its place back: the next newcomer closes nobody.
        drop(waiting.pop());
        let _next = a.head_place();
        assert!(matches!(
            waiting[1].closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(matches!(
            newest.closed.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(lock(&a.heads).len(), MAX_HEADS);
        drop(sessions);
        assert!(a.session().is_some());
    }

    #[test]
    fn status_for_exit_codes() {
        let ok: serde_json::Value = serde_json::from_slice(&status_json(Some(0), None)).unwrap();
        assert_eq!(ok["status"], "Success");
        let bad: serde_json::Value = serde_json::from_slice(&status_json(Some(3), None)).unwrap();
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(bad["details"]["causes"][0]["message"], "3");
    }
}
