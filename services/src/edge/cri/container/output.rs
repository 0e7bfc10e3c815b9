//! A running container's output: the copiers from its FIFOs into its log, and
//! ReopenContainerLog.

use super::*;

impl Cri {
    /// Starts copying the container's FIFOs into its log (when it has one); returns the write
    /// ends to hold until the process has its own.
    pub(in crate::edge::cri) fn attach_logs(
        &self,
        c: &Container,
    ) -> Vec<tokio::net::unix::pipe::Sender> {
        let dir = self.container_state_dir(&c.id);
        let log = if c.meta.log_path.is_empty() {
            LogFile::discard()
        } else {
            LogFile::open(Path::new(&c.meta.log_path)).unwrap_or_else(|e| {
                tracing::warn!(container = c.id, path = c.meta.log_path, error = %e, "cannot open the container log");
                LogFile::discard()
            })
        };
        let mut handles = Vec::new();
        let mut holds = Vec::new();
        let mut streams = vec![("stdout", dir.join("stdout"))];
        if !c.config.tty {
            streams.push(("stderr", dir.join("stderr")));
        }
        for (name, fifo) in streams {
            match logs::open_fifo(&fifo) {
                Ok((rx, tx)) => {
                    handles.push(tokio::spawn(logs::copy(rx, name, log.clone())));
                    holds.push(tx);
                }
                Err(e) => {
                    tracing::warn!(container = c.id, fifo = %fifo.display(), error = %e, "cannot open the container's output")
                }
            }
        }
        self.logs.insert(&c.id, log, handles);
        holds
    }

    /// Waits (a bounded time) for the log copiers to reach the end of the output.
    pub(in crate::edge::cri) async fn detach_logs(&self, id: &str) {
        let entry = self.logs.remove(id);
        if let Some(handles) = entry {
            for h in handles {
                logs::finish(h).await;
            }
        }
    }

    pub async fn reopen_log(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let Some(reopened) = self.logs.with(&c.id, |log| log.reopen()) else {
            return Err(Error::precondition(format!(
                "container {} is not running",
                c.id
            )));
        };
        reopened.map_err(|e| Error::io(format!("reopen {}", c.meta.log_path), e))
    }
}
