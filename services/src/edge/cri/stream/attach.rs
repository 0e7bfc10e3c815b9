//! Attach over the streaming server: a client on a running container's output (and its
//! stdin).

use super::*;

pub(super) async fn remote_attach(
    cri: Cri,
    r: cri::AttachRequest,
    tx: spdy::Sender,
    mut streams: tokio::sync::mpsc::Receiver<spdy::Stream>,
) {
    let want = wanted(r.stdin, r.stdout, r.stderr, r.tty);
    match gather(&mut streams, &want).await {
        Some(got) => run_attach(cri, r, got, tx).await,
        None => tx.go_away().await,
    }
}

pub(super) async fn run_attach(
    cri: Cri,
    r: cri::AttachRequest,
    mut got: HashMap<String, spdy::Stream>,
    tx: spdy::Sender,
) {
    let error_id = got.get("error").map(|s| s.id).unwrap_or(0);
    let result = cri.attach(&r, &mut got, &tx).await;
    let body = match &result {
        Ok(()) => status_json(None, None),
        Err(e) => status_json(None, Some(&e.to_string())),
    };
    tx.data(error_id, body, true).await;
    for s in got.values() {
        tx.close(s.id).await;
    }
    tx.go_away().await;
}

impl Cri {
    /// Attaches a client to a running container's output (and stdin, if it has one) until
    /// the container's output ends or the client goes.
    pub(in crate::edge::cri) async fn attach(
        &self,
        r: &cri::AttachRequest,
        got: &mut HashMap<String, spdy::Stream>,
        tx: &spdy::Sender,
    ) -> Result<()> {
        let c = self.container(&r.container_id)?;
        if Self::container_state(&c) != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        let mut taps = self.logs.with(&c.id, |log| log.tap()).ok_or_else(|| {
            Error::precondition(format!("container {} has no output to attach to", c.id))
        })?;
        let fifo = self.container_state_dir(&c.id).join("stdin");
        let stdin_task = match got.remove("stdin") {
            Some(mut s) if c.config.stdin => {
                let mut w = tokio::net::unix::pipe::OpenOptions::new()
                    .open_sender(&fifo)
                    .map_err(|e| Error::io(format!("open {}", fifo.display()), e))?;
                let once = c.config.stdin_once;
                let (cri, id) = (self.clone(), c.id.clone());
                Some(tokio::spawn(async move {
                    while let Some(chunk) = s.data.recv().await {
                        if w.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    drop(w);
                    if once {
                        cri.close_stdin(crate::edge::cri::init_ref(&id)).await;
                    }
                }))
            }
            _ => None,
        };
        if let Some(s) = got.remove("resize") {
            let p = crate::edge::cri::init_ref(&c.id);
            tokio::spawn(resize::resizes(self.clone(), p, s));
        }
        let out_id = got.get("stdout").map(|s| s.id);
        let err_id = got.get("stderr").map(|s| s.id);
        while let Some((stream, data)) = taps.recv().await {
            let target = if stream == "stderr" && !c.config.tty {
                err_id
            } else {
                out_id
            };
            if let Some(id) = target {
                if !tx.data(id, data, false).await {
                    break;
                }
            }
        }
        if let Some(t) = stdin_task {
            t.abort();
        }
        Ok(())
    }
}
