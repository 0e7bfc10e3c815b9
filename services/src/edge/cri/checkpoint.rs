//! CheckpointContainer: a running container dumped by CRIU (through the core's runtime, so
//! on runc) into the archive CRI-O and containerd 2.x write for the kubelet, at the
//! location the request names: `checkpoint/` (the CRIU images), `config.dump` (who the
//! container was, in checkpointctl's field names) and `spec.dump` (its OCI spec). The
//! container keeps running. Not yet: `rootfs-diff.tar` and `deleted.files` (the writable
//! layer's changes), and CreateContainer restoring from such an archive.

use super::Cri;
use crate::core::checkpoint::Scratch;
use crate::core::error::{blocking, Error, Result};
use std::path::PathBuf;

impl Cri {
    pub async fn checkpoint_container(&self, id: &str, location: &str) -> Result<()> {
        if !location.starts_with('/') {
            return Err(Error::invalid(format!(
                "checkpoint location {location:?} must be an absolute path"
            )));
        }
        let c = self.container(id)?;
        let record = self.records.get(self.ns.clone(), c.id.clone()).await?;
        let scratch = Scratch(self.tasks.checkpoint_scratch()?);
        let images = scratch.0.join("checkpoint");
        self.tasks
            .checkpoint(&self.ns, &c.id, &images, None)
            .await?;
        let config = serde_json::json!({
            "id": c.id,
            "name": c.meta.name,
            "rootfsImage": c.meta.image_ref,
            "rootfsImageRef": c.meta.image_id,
            "rootfsImageName": c.meta.image_ref,
            "runtime": record.runtime.name,
            "createdTime": berth_proto::vocab::time::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(c.meta.created_at.max(0) as u64)
            ),
            "checkpointedTime": berth_proto::vocab::time::rfc3339(std::time::SystemTime::now()),
        });
        let spec = record.spec.map(|s| s.value).unwrap_or_default();
        let location = PathBuf::from(location);
        blocking(move || {
            let dir = &scratch.0;
            let io = |what: &str| {
                let w = what.to_string();
                move |e| Error::io(w, e)
            };
            std::fs::write(dir.join("config.dump"), config.to_string())
                .map_err(io("write config.dump"))?;
            std::fs::write(dir.join("spec.dump"), &spec).map_err(io("write spec.dump"))?;
            let mut out = std::fs::File::create(&location)
                .map_err(io(&format!("create {}", location.display())))?;
            crate::core::checkpoint::tar_dir(dir, &mut out)?;
            out.sync_all().map_err(io("sync checkpoint archive"))
        })
        .await
    }
}
