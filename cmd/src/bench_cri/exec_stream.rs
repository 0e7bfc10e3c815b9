//! The stream behind an Exec URL, over WebSocket (Kubernetes' `v5.channel.k8s.io` or
//! `v4.channel.k8s.io`: binary messages whose first byte names the channel), read to the end:
//! stdout is handed back, a failure status on the error channel is an error.

use anyhow::Context;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::Message;

const PROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io";
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;

/// Opens `url` (http://host:port/exec/TOKEN), reads every message until the server closes,
/// and returns what the command wrote to stdout.
pub async fn run(url: &str) -> anyhow::Result<Vec<u8>> {
    let uri: Uri = url.parse().with_context(|| format!("exec URL {url}"))?;
    let authority = uri
        .authority()
        .with_context(|| format!("exec URL {url} has no host"))?
        .to_string();
    let mut req = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .with_context(|| format!("exec URL {url}"))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(PROTOCOLS),
    );
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connect to the stream server at {authority}"))?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .with_context(|| format!("WebSocket upgrade of {url}"))?;
    let (mut stdout, mut stderr, mut status) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(msg) = ws.next().await {
        let Message::Binary(b) = msg.context("exec stream")? else {
            continue;
        };
        match b.split_first() {
            Some((&STDOUT, rest)) => stdout.extend_from_slice(rest),
            Some((&STDERR, rest)) => stderr.extend_from_slice(rest),
            Some((&STATUS, rest)) => status.extend_from_slice(rest),
            _ => {}
        }
    }
    // v4 and v5 send a Status object; v1-style servers send a bare error text. Either way
    // anything but "Success" is a failed exec.
    if !status.is_empty() {
        let ok = serde_json::from_slice::<serde_json::Value>(&status)
            .is_ok_and(|v| v["status"] == "Success");
        anyhow::ensure!(
            ok,
            "exec failed: {} (stderr {:?})",
            String::from_utf8_lossy(&status),
            String::from_utf8_lossy(&stderr)
        );
    }
    Ok(stdout)
}
