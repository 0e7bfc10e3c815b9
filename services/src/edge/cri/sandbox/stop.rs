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
        // A pod stopped before (RemovePodSandbox stops it again) has its record as this stop
        // would write it: no second write (and fsync) of it.
        let recorded = before.meta.stopped && !before.meta.network_ready && before.meta.pid == 0;
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
            // Recorded with the rest below, in one write.
            self.pause_gone(&before.id, false).await;
        };
        // DEL also when ADD may have been cut short (berthd died mid-ADD): CNI's DEL is
        // idempotent, and an address half-allocated is released.
        let half_wired = !before.meta.netns.is_empty() && !before.meta.stopped;
        // The namespace is unpinned as soon as CNI is done with it.
        let unwire = async {
            if before.meta.network_ready || half_wired {
                self.network_down(&before).await?;
            }
            self.unpin_network(&before).await
        };
        let ((), unwound) = tokio::join!(kill, unwire);
        let mut sb = self.sandbox(&before.id)?;
        if let Err(e) = unwound {
            // Not stopped: the pause's exit alone is recorded.
            if sb.meta.pid != before.meta.pid {
                self.persist_sandbox(&sb).await?;
            }
            return Err(e);
        }
        sb.meta.network_ready = false;
        sb.meta.stopped = true;
        if !recorded {
            self.persist_sandbox(&sb).await?;
        }
        Ok(())
    }

    /// The pod's pinned network namespace and its /dev/shm go.
    async fn unpin_network(&self, sb: &Sandbox) -> Result<()> {
        let (netns, shm) = (sb.meta.netns.clone(), self.sandbox_files(sb).shm);
        blocking(move || {
            if !netns.is_empty() {
                netns::remove_netns(Path::new(&netns))?;
            }
            if let Some(shm) = shm {
                unmount(&shm);
            }
            Ok(())
        })
        .await
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
