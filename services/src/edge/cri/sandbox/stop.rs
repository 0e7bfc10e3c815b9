//! StopPodSandbox: the pod's containers, its pause process and its network.

use super::*;

impl Cri {
    /// Stops every container of the pod, the pause process, and the network. Unknown ids
    /// are not errors.
    pub async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.sandbox(id) {
            Ok(s) => s,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for c in self.members(&sb.id) {
            self.stop_container(&c.id, 0).await?;
        }
        // Plugins hear of the stop with the containers down and the pod still there.
        self.nri_pod_event(&sb, false).await;
        let lock = self.lock_for(&sb.id);
        let _held = lock.lock().await;
        let before = self.sandbox(&sb.id)?;
        // The pause process goes while CNI unwires its namespace.
        let kill = async {
            if before.meta.pid != 0 {
                match self
                    .tasks
                    .kill(
                        self.ns.clone(),
                        init_ref(&before.id),
                        libc::SIGKILL as u32,
                        true,
                    )
                    .await
                {
                    Ok(()) => {
                        let _ = self.tasks.wait(self.ns.clone(), init_ref(&before.id)).await;
                    }
                    Err(e) if e.kind() == Kind::NotFound => {}
                    Err(e) => tracing::debug!(sandbox = before.id, error = %e, "kill pause"),
                }
            }
            self.sandbox_exited(&before.id).await;
        };
        // DEL also when ADD may have been cut short (berthd died mid-ADD): CNI's DEL is
        // idempotent, and an address half-allocated is released.
        let half_wired = !before.meta.netns.is_empty() && !before.meta.stopped;
        let unwire = async {
            if before.meta.network_ready || half_wired {
                self.network_down(&before).await
            } else {
                Ok(())
            }
        };
        let ((), unwired) = tokio::join!(kill, unwire);
        unwired?;
        let mut sb = self.sandbox(&before.id)?;
        sb.meta.network_ready = false;
        let (netns, shm) = (sb.meta.netns.clone(), self.sandbox_files(&sb).shm);
        blocking(move || {
            if !netns.is_empty() {
                netns::remove_netns(Path::new(&netns))?;
            }
            if let Some(shm) = shm {
                unmount(&shm);
            }
            Ok(())
        })
        .await?;
        sb.meta.stopped = true;
        self.persist_sandbox(&sb).await?;
        Ok(())
    }

    pub(in crate::edge::cri) async fn network_down(&self, sb: &Sandbox) -> Result<()> {
        let net = match cni::load(&self.cfg.cni_conf_dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(sandbox = sb.id, error = %e, "no CNI configuration to tear the pod's network down with");
                return Ok(());
            }
        };
        net.del(
            &self.cfg.cni_bin_dir,
            &self.attachment(sb),
            sb.meta.cni_result.as_ref(),
        )
        .await
    }
}
