//! Creating a task: the bundle is written, the shim started and asked to Create; on any
//! failure the shim is told to go and nothing half-created stays behind.

use super::shim_client::{binary_name, runc_options, ShimClient};
use super::{bundle, CreateTask, ShimTask, Tasks};
use crate::context::Namespace;
use crate::error::{Error, Result};

impl Tasks {
    pub async fn create(&self, ns: Namespace, mut req: CreateTask) -> Result<u32> {
        let id = req.container_id.clone();
        if self.get(&ns, &id).is_ok() {
            return Err(Error::already_exists(format!("task for container {id:?}")));
        }
        super::warmup::begin();
        let container = self.store.container_get(&ns, &id)?;
        let spec = container
            .spec
            .as_ref()
            .ok_or_else(|| Error::precondition(format!("container {id} has no spec")))?;
        let binary = super::shim::find_binary(&container.runtime.name)?;
        if req.rootfs.is_empty() && !container.snapshot_key.is_empty() {
            req.rootfs = self
                .snapshots
                .mounts(
                    ns.clone(),
                    &container.snapshotter,
                    container.snapshot_key.clone(),
                )
                .await?;
        }
        let given = req.options.take().or(container.runtime.options.clone());
        req.options = Some(runc_options(given, &self.cfg.runc_root()));
        let runtime = binary_name(req.options.as_ref());

        let bundle = self.cfg.bundle(ns.as_str(), &id);
        if bundle.exists() {
            return Err(Error::already_exists(format!(
                "bundle {} exists: a task for {id} is still being cleaned up; delete it first",
                bundle.display()
            )));
        }
        let networked = match &self.networks {
            Some(n) => n.attach(&ns, &container, &spec.value).await?,
            None => None,
        };
        let spec = networked.as_deref().unwrap_or(&spec.value);
        let created = self
            .create_in_bundle(&ns, &id, req, spec, binary, runtime.as_deref())
            .await;
        if created.is_err() {
            self.leave_networks(&ns, &id).await;
        }
        created
    }

    /// The bundle written, the shim started and its Create answered; on failure nothing of
    /// them stays.
    async fn create_in_bundle(
        &self,
        ns: &Namespace,
        id: &str,
        req: CreateTask,
        spec: &[u8],
        binary: std::path::PathBuf,
        runtime: Option<&str>,
    ) -> Result<u32> {
        let bundle = self.cfg.bundle(ns.as_str(), id);
        let work = self.cfg.work(ns.as_str(), id);
        bundle::bundle_dir(&bundle).and_then(|()| bundle::private_dir(&work))?;
        let log = match bundle::prepare(&bundle, &work, spec)
            .and_then(|()| bundle::open_log(&bundle, id))
        {
            Ok(log) => log,
            Err(e) => {
                bundle::remove(&bundle, &work);
                return Err(e);
            }
        };
        let launch = self.launch(&binary, ns, id, &bundle, runtime);
        let mut connected: Option<ShimClient> = None;
        let created = async {
            let socket = launch.start().await?;
            let client = connected.insert(ShimClient::connect(&socket).await?);
            client.create(&bundle, req).await
        }
        .await;
        match (created, connected) {
            (Ok(pid), Some(client)) => {
                self.register(ns, id, ShimTask::new(client, bundle, binary, Some(log)))?;
                Ok(pid)
            }
            (created, connected) => {
                log.abort();
                if let Some(c) = connected {
                    c.shutdown(id, true).await;
                }
                let _ = launch.delete().await;
                bundle::remove(&bundle, &work);
                Err(created.err().unwrap_or_else(|| {
                    Error::new(crate::error::Kind::Internal, "shim connection lost")
                }))
            }
        }
    }
}
