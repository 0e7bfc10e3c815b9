//! The little HTTP/1.1 berthd speaks itself, on plain TCP: a request head read with a bound,
//! and a whole response that closes the connection. Used by the CRI streaming server (before
//! it upgrades) and the metrics endpoint.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads up to the blank line that ends a request head, at most `max` bytes of it; returns
/// the head and whatever of the body came with it. A longer head or a connection that ends
/// first is an error.
pub async fn read_head(conn: &mut TcpStream, max: usize) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((buf, rest));
        }
        if buf.len() > max {
            return Err(std::io::Error::other("request head too large"));
        }
    }
}

/// Sends a complete response and closes the connection.
pub async fn respond(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(r.as_bytes()).await?;
    conn.shutdown().await
}
