//! StopContainer: the stop signal, a grace period, then SIGKILL.

use super::*;

impl Cri {
    /// Stops a running container: its stop signal, then SIGKILL after `timeout` seconds.
    /// Unknown ids and stopped containers are not errors.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if c.meta.started_at == 0 || c.meta.finished_at != 0 {
            return Ok(());
        }
        let init = init_ref(&c.id);
        if timeout > 0 {
            let sig = signal_number(c.config.stop_signal)
                .or_else(|| self.image_stop_signal(&c))
                .unwrap_or(libc::SIGTERM as u32);
            match self
                .tasks
                .kill(self.ns.clone(), init.clone(), sig, false)
                .await
            {
                Ok(()) => {}
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => tracing::debug!(container = c.id, error = %e, "stop signal"),
            }
            let waited = tokio::time::timeout(
                Duration::from_secs(timeout as u64),
                self.tasks.wait(self.ns.clone(), init.clone()),
            )
            .await;
            if let Ok(Ok(e)) = waited {
                let lock = self.lock_for(&c.id);
                let _held = lock.lock().await;
                self.container_exited(&c.id, Some((e.exit_status, e.exited_at)))
                    .await;
                return Ok(());
            }
        }
        match self
            .tasks
            .kill(self.ns.clone(), init.clone(), libc::SIGKILL as u32, true)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => tracing::debug!(container = c.id, error = %e, "SIGKILL"),
        }
        let exit = match tokio::time::timeout(
            Duration::from_secs(30),
            self.tasks.wait(self.ns.clone(), init),
        )
        .await
        {
            Ok(Ok(e)) => Some((e.exit_status, e.exited_at)),
            Ok(Err(_)) => None,
            Err(_) => {
                return Err(Error::new(
                    Kind::DeadlineExceeded,
                    format!("container {} did not die 30 s after SIGKILL", c.id),
                ))
            }
        };
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        self.container_exited(&c.id, exit).await;
        Ok(())
    }

    pub(in crate::edge::cri) fn image_stop_signal(&self, c: &Container) -> Option<u32> {
        Some(c.meta.stop_signal.as_str())
            .filter(|s| !s.is_empty())
            .and_then(signal_by_name)
    }
}
