//! A started process attached to this terminal: its window size followed, Ctrl-C and
//! SIGTERM passed on, its exit status waited for.

use super::stdio::{Pumps, Streams};
use super::terminal::{window_size, RawMode};
use anyhow::anyhow;
use berth_client::Client;
use berth_proto::tasks::{
    CloseIoRequest, KillRequest, ResizePtyRequest, StartRequest, WaitRequest,
};

/// Starts the task's process (`exec_id` empty: its init) and waits for it, with its
/// terminal's size following this one's (a tty), this terminal raw while its keys go there
/// (a tty with stdin: Ctrl-C is then a key for it), Ctrl-C and SIGTERM forwarded otherwise,
/// and the output pumps drained. Returns the exit status.
pub async fn start_and_wait(
    client: &Client,
    id: &str,
    exec_id: &str,
    streams: Streams,
    mut pumps: Pumps,
) -> anyhow::Result<u32> {
    let tty = streams.tty;
    let mut tasks = client.tasks();
    let waiter = {
        let mut t = client.tasks();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            t.wait(WaitRequest {
                container_id: id,
                exec_id,
            })
            .await
        })
    };
    tasks
        .start(StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await
        .map_err(|e| anyhow!("{}", crate::output::said(&e)))?;
    pumps.started();
    // With a terminal taking our keys: this one goes raw (restored on return).
    let _raw = if tty && streams.stdin {
        RawMode::enter()
    } else {
        None
    };
    let resizer = tty.then(|| follow_window_size(client, id, exec_id));
    let closer = pumps
        .stdin_done()
        .map(|done| close_stdin_after(client, id, exec_id, done));
    let forward = forward_signals(client, id, exec_id);
    let status = waiter
        .await?
        .map_err(|e| anyhow!("wait {id}: {}", e.message()))?
        .into_inner();
    forward.abort();
    for t in [resizer, closer].into_iter().flatten() {
        t.abort();
    }
    pumps.join().await;
    Ok(status.exit_status)
}

/// Closes the process's stdin once `done` says ours has all been copied in, so it reads
/// end-of-file (`echo x | berth run -i IMAGE cat` ends).
fn close_stdin_after(
    client: &Client,
    id: &str,
    exec_id: &str,
    done: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    let mut t = client.tasks();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        if done.await.is_ok() {
            let _ = t
                .close_io(CloseIoRequest {
                    container_id: id,
                    exec_id,
                    stdin: true,
                })
                .await;
        }
    })
}

/// Gives the process's terminal this one's size, now and whenever it changes, until aborted.
fn follow_window_size(client: &Client, id: &str, exec_id: &str) -> tokio::task::JoinHandle<()> {
    let mut t = client.tasks();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut winch = signal(SignalKind::window_change()).ok();
        loop {
            if let Some((width, height)) = window_size() {
                let _ = t
                    .resize_pty(ResizePtyRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        width,
                        height,
                    })
                    .await;
            }
            match winch.as_mut() {
                Some(w) => {
                    w.recv().await;
                }
                None => return,
            }
        }
    })
}

/// Forwards Ctrl-C and SIGTERM to the process until aborted.
pub(super) fn forward_signals(
    client: &Client,
    id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<()> {
    let mut t = client.tasks();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let sig =
                tokio::select! { _ = int.recv() => libc::SIGINT, _ = term.recv() => libc::SIGTERM };
            let _ = t
                .kill(KillRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                    signal: sig as u32,
                    all: false,
                })
                .await;
        }
    })
}
