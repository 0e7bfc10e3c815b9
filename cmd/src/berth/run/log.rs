//! Where a detached container's output goes (`run -d`, `--log`, written by the shim in the
//! kubelet's log format), and reading it back while the task runs (`berth logs -f`,
//! `berth tasks attach`).

use super::attach::forward_signals;
use super::logread::{Follower, View};
use super::Run;
use anyhow::{anyhow, Context};
use berth_client::Client;
use berth_proto::tasks::WaitRequest;
use std::path::{Path, PathBuf};

/// Label naming the log file of a task started with `--log` (berthd's restart supervisor
/// appends a restarted task's output there too).
pub use berth_services::core::restart::LOG_LABEL;

/// The log as the shim and the container's label name it: --log made absolute, or with -d
/// and no --log the default one (its directory made); None for an attached run.
pub(super) fn place(r: &Run, ns: &str) -> anyhow::Result<Option<PathBuf>> {
    Ok(match &r.log {
        Some(log) if log.is_relative() => Some(std::env::current_dir()?.join(log)),
        Some(log) => Some(log.clone()),
        None if r.detach => {
            let log = default_log(&r.address, ns, &r.id);
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create the log directory {}", dir.display()))?;
            }
            Some(log)
        }
        None => None,
    })
}

/// Where `run -d` keeps a container's output when no --log is given: under $BERTH_LOG_DIR;
/// else /var/log/berth for the default daemon, or a `logs` directory beside another
/// daemon's socket (so two daemons' containers of one name never share a log).
fn default_log(address: &Path, ns: &str, id: &str) -> PathBuf {
    let dir = match std::env::var_os("BERTH_LOG_DIR") {
        Some(d) => PathBuf::from(d),
        None if address == Path::new(berth_client::DEFAULT_ADDRESS) => {
            PathBuf::from("/var/log/berth")
        }
        None => address.parent().unwrap_or(Path::new("/")).join("logs"),
    };
    dir.join(ns).join(format!("{id}.log"))
}

/// Prints the log so far and what the task appends to it until the task exits (signals
/// forwarded); returns its exit status.
pub async fn follow(client: &Client, id: &str, log: &Path) -> anyhow::Result<u32> {
    follow_view(client, id, log, View::default()).await
}

/// [`follow`], printing the lines `view` shows (each to the stream it came from).
pub async fn follow_view(client: &Client, id: &str, log: &Path, view: View) -> anyhow::Result<u32> {
    let mut waiter = {
        let mut t = client.tasks();
        let id = id.to_string();
        tokio::spawn(async move {
            t.wait(WaitRequest {
                container_id: id,
                exec_id: String::new(),
            })
            .await
        })
    };
    let forward = forward_signals(client, id, "");
    let mut f = tokio::fs::File::open(log)
        .await
        .with_context(|| format!("open the log {}", log.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut out = Follower::new(view);
    let status = loop {
        let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
        if n > 0 {
            out.push(&buf[..n])?;
            continue;
        }
        tokio::select! {
            done = &mut waiter => break done?,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    };
    // What the task wrote last.
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
        if n == 0 {
            break;
        }
        out.push(&buf[..n])?;
    }
    out.finish()?;
    forward.abort();
    Ok(status
        .map_err(|e| anyhow!("wait {id}: {}", e.message()))?
        .into_inner()
        .exit_status)
}
