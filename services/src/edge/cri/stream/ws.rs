//! The streaming server's WebSocket side, for clients moving off SPDY: remote command over
//! `v5.channel.k8s.io` / `v4.channel.k8s.io` (binary messages whose first byte is the channel:
//! 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; in v5 `[255, n]` closes channel n), and
//! port-forward as SPDY tunnelled through the WebSocket (`SPDY/3.1+portforward.k8s.io`).

use super::spdy::{self, Frame};
use super::{respond, Head, Pending, Rewind};
use crate::edge::cri::Cri;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const CHANNELS: [(&str, u8); 5] = [
    ("stdin", 0),
    ("stdout", 1),
    ("stderr", 2),
    ("error", 3),
    ("resize", 4),
];
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

pub(super) async fn serve(
    mut conn: TcpStream,
    rest: Vec<u8>,
    req: &Head,
    pending: Pending,
    cri: Cri,
) -> std::io::Result<()> {
    let Some(key) = req.header("sec-websocket-key").map(str::to_string) else {
        return respond(&mut conn, "400 Bad Request", "missing Sec-WebSocket-Key\n").await;
    };
    let supported: &[&'static str] = match pending {
        Pending::PortForward(_) => &[TUNNEL],
        _ => &["v5.channel.k8s.io", "v4.channel.k8s.io"],
    };
    let Some(protocol) = req.choose("sec-websocket-protocol", supported) else {
        return respond(&mut conn, "403 Forbidden", "no common stream protocol\n").await;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    conn.write_all(reply.as_bytes()).await?;
    tracing::debug!(protocol, "streaming session over WebSocket");
    let ws = WebSocketStream::from_raw_socket(
        Rewind {
            pre: rest,
            pos: 0,
            inner: conn,
        },
        Role::Server,
        None,
    )
    .await;
    match pending {
        Pending::PortForward(r) => {
            let (spdy_side, tunnel_side) = tokio::io::duplex(256 << 10);
            tokio::spawn(tunnel(ws, tunnel_side));
            let (tx, streams) = spdy::serve(spdy_side);
            super::port_forward(cri, r, tx, streams).await;
        }
        Pending::Exec(r) => {
            let want = super::wanted(r.stdin, r.stdout, r.stderr, r.tty);
            let (got, tx) = channels(ws, &want, protocol == "v5.channel.k8s.io");
            super::run_exec(cri, r, got, tx).await;
        }
        Pending::Attach(r) => {
            let want = super::wanted(r.stdin, r.stdout, r.stderr, r.tty);
            let (got, tx) = channels(ws, &want, protocol == "v5.channel.k8s.io");
            super::run_attach(cri, r, got, tx).await;
        }
    }
    Ok(())
}

/// The channels of a remote-command WebSocket as the streams the exec and attach code uses:
/// incoming messages are routed to stdin and resize, frames sent on a channel become messages.
fn channels(
    ws: WebSocketStream<Rewind>,
    want: &[&str],
    v5: bool,
) -> (HashMap<String, spdy::Stream>, spdy::Sender) {
    let (mut sink, mut source) = ws.split();
    let mut got = HashMap::new();
    let mut inbound: HashMap<u8, mpsc::Sender<Vec<u8>>> = HashMap::new();
    for (name, ch) in CHANNELS {
        if !want.contains(&name) {
            continue;
        }
        let (tx, rx) = mpsc::channel(16);
        if name == "stdin" || name == "resize" {
            inbound.insert(ch, tx);
        }
        got.insert(
            name.to_string(),
            spdy::Stream {
                id: ch as u32,
                headers: vec![("streamtype".into(), name.into())],
                data: rx,
            },
        );
    }
    let (frames_tx, mut frames_rx) = mpsc::channel::<Frame>(64);
    tokio::spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            match f {
                Frame::Data {
                    stream_id, data, ..
                } if !data.is_empty() => {
                    let mut m = Vec::with_capacity(data.len() + 1);
                    m.push(stream_id as u8);
                    m.extend_from_slice(&data);
                    if sink.send(Message::Binary(m.into())).await.is_err() {
                        break;
                    }
                }
                Frame::GoAway { .. } => break,
                _ => {}
            }
        }
        let close = CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if !b.is_empty() => {
                    let ch = b[0];
                    if v5 && ch == 255 {
                        if let Some(c) = b.get(1) {
                            inbound.remove(c);
                        }
                        continue;
                    }
                    if let Some(tx) = inbound.get(&ch) {
                        if b.len() > 1 && tx.send(b[1..].to_vec()).await.is_err() {
                            inbound.remove(&ch);
                        }
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    (got, spdy::Sender::from_channel(frames_tx))
}

/// Carries a byte stream (the tunnelled SPDY connection) over binary WebSocket messages.
async fn tunnel(ws: WebSocketStream<Rewind>, io: tokio::io::DuplexStream) {
    let (mut sink, mut source) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(io);
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let close = CloseFrame {
            code: 1000.into(),
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    };
    let up = async move {
        while let Some(Ok(m)) = source.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(down, up);
}
