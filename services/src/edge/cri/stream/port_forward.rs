//! PortForward over the streaming server: each data stream a connection to a port inside
//! the pod's network namespace.

use super::*;

pub(super) async fn port_forward(
    cri: Cri,
    r: cri::PortForwardRequest,
    tx: spdy::Sender,
    mut streams: tokio::sync::mpsc::Receiver<spdy::Stream>,
) {
    let sb = match cri.sandbox(&r.pod_sandbox_id) {
        Ok(s) => s,
        Err(_) => {
            tx.go_away().await;
            return;
        }
    };
    let netns = sb.meta.netns.clone();
    // Streams come in pairs per request id: "error" then "data".
    let mut errors: HashMap<String, u32> = HashMap::new();
    while let Some(s) = streams.recv().await {
        let kind = s.header("streamtype").unwrap_or("").to_string();
        let rid = s.header("requestid").unwrap_or("").to_string();
        let port: u16 = s.header("port").and_then(|p| p.parse().ok()).unwrap_or(0);
        match kind.as_str() {
            "error" => {
                errors.insert(rid, s.id);
            }
            "data" => {
                let err_id = errors.remove(&rid);
                let (tx, netns) = (tx.clone(), netns.clone());
                tokio::spawn(async move {
                    if let Err(e) = forward_one(&netns, port, s, &tx).await {
                        if let Some(id) = err_id {
                            let msg = format!("error forwarding port {port}: {e}");
                            tx.data(id, msg.into_bytes(), true).await;
                        }
                    } else if let Some(id) = err_id {
                        tx.close(id).await;
                    }
                });
            }
            _ => {}
        }
    }
}

/// A TCP connection to `127.0.0.1:port` inside the network namespace at `netns` (the
/// host's when empty), made from a thread that enters the namespace for that one call.
fn connect_in(netns: &str, port: u16) -> std::io::Result<std::net::TcpStream> {
    let ns = netns.to_string();
    std::thread::spawn(move || -> std::io::Result<std::net::TcpStream> {
        if !ns.is_empty() {
            let f = std::fs::File::open(&ns)?;
            // SAFETY: setns on this short-lived thread only; the descriptor is open.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        std::net::TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )
    })
    .join()
    .map_err(|_| std::io::Error::other("the connecting thread panicked"))?
}

async fn forward_one(
    netns: &str,
    port: u16,
    mut s: spdy::Stream,
    tx: &spdy::Sender,
) -> std::io::Result<()> {
    if port == 0 {
        return Err(std::io::Error::other("no port given"));
    }
    let ns = netns.to_string();
    let std_conn = tokio::task::spawn_blocking(move || connect_in(&ns, port))
        .await
        .map_err(std::io::Error::other)??;
    std_conn.set_nonblocking(true)?;
    let conn = TcpStream::from_std(std_conn)?;
    let (mut rd, mut wr) = conn.into_split();
    let id = s.id;
    let up = async {
        while let Some(chunk) = s.data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !tx.data(id, buf[..n].to_vec(), false).await {
                        break;
                    }
                }
            }
        }
        tx.close(id).await;
    };
    tokio::join!(up, down);
    Ok(())
}
