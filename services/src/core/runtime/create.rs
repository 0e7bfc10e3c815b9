//! Creating a task: the bundle is written, the shim started and asked to Create; on any
//! failure the shim is told to go and nothing half-created stays behind.

use super::driver::ShimApi;
use super::{bundle, CreateTask, ShimTask, Tasks};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};

impl Tasks {
    pub async fn create(&self, ns: Namespace, req: CreateTask) -> Result<u32> {
        self.create_with(ns, req, None).await
    }

    /// Create, restoring from the CRIU images in `images` when given (see `checkpoint`).
    pub(super) async fn create_with(
        &self,
        ns: Namespace,
        mut req: CreateTask,
        images: Option<std::path::PathBuf>,
    ) -> Result<u32> {
        let id = req.container_id.clone();
        if self.get(&ns, &id).is_ok() {
            return Err(Error::already_exists(format!("task for container {id:?}")));
        }
        let container = self.store.container_get(&ns, &id)?;
        super::warmup::begin();
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
        let (options, runtime) = self.shims.runc_options(given, &self.cfg.runc_root());
        if let Some(r) = runtime.as_deref().filter(|r| *r != "native") {
            runnable(r)?;
        }
        req.options = Some(options);

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
            .create_in_bundle(&ns, &id, req, spec, (binary, runtime), images)
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
        (binary, runtime): (std::path::PathBuf, Option<String>),
        images: Option<std::path::PathBuf>,
    ) -> Result<u32> {
        let bundle = self.cfg.bundle(ns.as_str(), id);
        let work = self.cfg.work(ns.as_str(), id);
        bundle::passable_dir(&bundle).and_then(|()| bundle::private_dir(&work))?;
        let prepared = bundle::prepare(&bundle, &work, spec).and_then(|()| {
            let images = images.map(|i| self.adopt_images(&work, &i)).transpose()?;
            Ok((bundle::open_log(&bundle, id)?, images))
        });
        let (log, images) = match prepared {
            Ok(done) => done,
            Err(e) => {
                bundle::remove(&bundle, &work);
                return Err(e);
            }
        };
        let launch = self.launch(&binary, ns, id, &bundle, runtime.as_deref());
        let mut connected: Option<Box<dyn ShimApi>> = None;
        let created = async {
            let socket = launch.start_with(req.options.as_ref()).await?;
            let client = match super::shim::is_own_shim(&binary) {
                true => self.shims.connect_v2(&socket).await?,
                false => self.shims.connect(&socket).await?,
            };
            let client = connected.insert(client);
            client.create(&bundle, req, images.as_deref()).await
        }
        .await;
        match (created, connected) {
            (Ok(pid), Some(client)) => {
                self.register(
                    ns,
                    id,
                    ShimTask::new(client, bundle, binary, runtime.clone(), Some(log)),
                )?;
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
                    Error::new(crate::core::error::Kind::Internal, "shim connection lost")
                }))
            }
        }
    }
}

/// Refuses, before any shim starts, a runtime binary (runc options' `binary_name`) that is
/// not there or cannot be run.
fn runnable(binary: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let found = super::shim::locate(binary, None).ok_or_else(|| {
        Error::precondition(format!(
            "runtime binary {binary:?} not found (as a path or on berthd's PATH); install it or name another in the runc options' binary_name"
        ))
    })?;
    let mode = std::fs::metadata(&found)
        .map_err(|e| Error::io(format!("stat runtime binary {}", found.display()), e))?
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        return Err(Error::precondition(format!(
            "runtime binary {} is not executable (mode {:o}); chmod +x it or name another",
            found.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}
