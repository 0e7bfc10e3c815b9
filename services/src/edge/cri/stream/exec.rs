//! Exec over the streaming server: the command run with its streams pumped to and from
//! the client's, its exit reported on the error stream.

use super::*;

/// Copies a FIFO's output into a stream until the FIFO ends.
async fn pump_out(mut rx: tokio::net::unix::pipe::Receiver, tx: spdy::Sender, id: u32) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !tx.data(id, buf[..n].to_vec(), false).await {
                    break;
                }
            }
        }
    }
}

/// Writes a stream's data into a FIFO until the stream ends.
async fn pump_in(mut s: spdy::Stream, mut w: tokio::net::unix::pipe::Sender) {
    while let Some(chunk) = s.data.recv().await {
        if w.write_all(&chunk).await.is_err() {
            break;
        }
    }
}

pub(super) async fn remote_exec(
    cri: Cri,
    r: cri::ExecRequest,
    tx: spdy::Sender,
    mut streams: tokio::sync::mpsc::Receiver<spdy::Stream>,
) {
    let want = wanted(r.stdin, r.stdout, r.stderr, r.tty);
    match gather(&mut streams, &want).await {
        Some(got) => run_exec(cri, r, got, tx).await,
        None => tx.go_away().await,
    }
}

/// Runs an exec over the client's streams, then reports its status on the error stream
/// and closes the session.
pub(super) async fn run_exec(
    cri: Cri,
    r: cri::ExecRequest,
    mut got: HashMap<String, spdy::Stream>,
    tx: spdy::Sender,
) {
    let error_id = got.get("error").map(|s| s.id).unwrap_or(0);
    let result = exec_with(&cri, &r, &mut got, &tx).await;
    let body = match &result {
        Ok(code) => status_json(Some(*code), None),
        Err(e) => status_json(None, Some(&e.to_string())),
    };
    tx.data(error_id, body, true).await;
    for s in got.values() {
        tx.close(s.id).await;
    }
    tx.go_away().await;
}

async fn exec_with(
    cri: &Cri,
    r: &cri::ExecRequest,
    got: &mut HashMap<String, spdy::Stream>,
    tx: &spdy::Sender,
) -> Result<i32> {
    let c = cri.container(&r.container_id)?;
    let process = cri.exec_spec(&c.id, &r.cmd, r.tty).await?;
    let (exec_id, dir) = cri.exec_dir(&c.id, "stream")?;
    let x = ExecSpec {
        container_id: &c.id,
        exec_id: &exec_id,
        dir: &dir,
        process,
        io: ExecIo {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            tty: r.tty,
        },
    };
    let out = exec_over(cri, x, got, tx).await;
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// Runs an exec with its streams pumped to and from the client's, to its end.
async fn exec_over(
    cri: &Cri,
    x: ExecSpec<'_>,
    got: &mut HashMap<String, spdy::Stream>,
    tx: &spdy::Sender,
) -> Result<i32> {
    let e = cri.exec_create(x).await?;
    let p = e.process;
    let mut pumps = Vec::new();
    for (f, rx) in [("stdout", e.stdout), ("stderr", e.stderr)] {
        if let (Some(rx), Some(s)) = (rx, got.get(f)) {
            pumps.push(tokio::spawn(pump_out(rx, tx.clone(), s.id)));
        }
    }
    if let Err(e) = cri.exec_start(&p, e.holds).await {
        let _ = cri.tasks.delete_process(cri.ns.clone(), p).await;
        return Err(e);
    }
    let mut side = Vec::new();
    if let (Some(w), Some(s)) = (e.stdin, got.remove("stdin")) {
        let (cri, p) = (cri.clone(), p.clone());
        side.push(tokio::spawn(async move {
            pump_in(s, w).await;
            cri.close_stdin(p).await;
        }));
    }
    if let Some(s) = got.remove("resize") {
        side.push(tokio::spawn(resize::resizes(cri.clone(), p.clone(), s)));
    }
    let waited = cri.tasks.wait(cri.ns.clone(), p.clone()).await;
    for t in side {
        t.abort();
    }
    let _ = cri.tasks.delete_process(cri.ns.clone(), p).await;
    for h in pumps {
        crate::edge::cri::logs::finish(h).await;
    }
    Ok(waited?.exit_status as i32)
}
