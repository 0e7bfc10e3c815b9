//! StartContainer: the task created in the pod's namespaces and started, its output
//! copied into the log; a failed start is recorded as the container's exit.

use super::*;
use crate::edge::cri::nri::Happened;

impl Cri {
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        let mut c = self.container(&c.id)?;
        if c.meta.started_at != 0 {
            return Err(Error::precondition(format!(
                "container {} was started already; create a new one",
                c.id
            )));
        }
        let sb = self.sandbox(&c.meta.sandbox_id)?;
        if !self.sandbox_ready(&sb) {
            return Err(Error::precondition(format!(
                "pod sandbox {} is not ready",
                sb.id
            )));
        }
        self.nri_start(&c).await?;
        let dir = self.container_state_dir(&c.id);
        let io = Stdio {
            stdin: if c.config.stdin {
                dir.join("stdin").display().to_string()
            } else {
                String::new()
            },
            stdout: dir.join("stdout").display().to_string(),
            stderr: if c.config.tty {
                String::new()
            } else {
                dir.join("stderr").display().to_string()
            },
            terminal: c.config.tty,
        };
        let holds = self.attach_logs(&c);
        // The shim holds stdin open from create until CloseIO; this end only covers the
        // moment before it does.
        let stdin_hold = if c.config.stdin {
            tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(dir.join("stdin"))
                .map_err(|e| tracing::warn!(container = c.id, error = %e, "cannot open the container's stdin"))
                .ok()
        } else {
            None
        };
        let created = self
            .create_or_restore_task(
                &c.id,
                CreateTask {
                    container_id: c.id.clone(),
                    io,
                    options: self.runtime_options(&sb),
                    ..Default::default()
                },
            )
            .await;
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                drop(holds);
                self.start_failed(&mut c, &e).await;
                return Err(e);
            }
        };
        let started = self.tasks.start(self.ns.clone(), init_ref(&c.id)).await;
        drop(holds);
        drop(stdin_hold);
        if let Err(e) = started {
            let _ = self.tasks.delete(self.ns.clone(), c.id.clone()).await;
            self.start_failed(&mut c, &e).await;
            return Err(e);
        }
        c.meta.pid = pid;
        c.meta.started_at = crate::core::metadata::now();
        self.persist_container(&c).await?;
        self.watch_container(&c.id);
        self.event(&c, cri::ContainerEventType::ContainerStartedEvent);
        self.nri_container_event(&c, Happened::Started).await;
        Ok(())
    }

    /// A start that failed: the container ends as exited with StartError and the reason.
    pub(in crate::edge::cri) async fn start_failed(&self, c: &mut Container, e: &Error) {
        self.detach_logs(&c.id).await;
        c.meta.started_at = crate::core::metadata::now();
        c.meta.finished_at = c.meta.started_at;
        c.meta.exit_code = 128;
        c.meta.reason = "StartError".into();
        c.meta.message = e.to_string();
        let _ = self.persist_container(c).await;
    }
}
