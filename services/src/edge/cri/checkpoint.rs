//! CheckpointContainer: a running container dumped by CRIU (through the core's runtime, so
//! on runc) into the archive CRI-O and containerd 2.x write for the kubelet, at the
//! location the request names (see [`super::checkpoint_archive`] for its members): the
//! CRIU images with CRIU's `stats-dump` and `dump.log`, who the container was
//! (`config.dump`, `status.dump`, `status`), its OCI spec, its log, and its writable
//! layer's changes (`rootfs-diff.tar`, `deleted.files`). The container keeps running. The
//! request's timeout bounds the whole; an archive appears whole or not at all.

use super::checkpoint_archive as archive;
use super::{Container, Cri};
use crate::core::checkpoint::Scratch;
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::containers::AnyValue;
use crate::core::metadata::Labels;
use berth_proto::cri::v1 as cri;
use berth_proto::vocab::time::rfc3339_nanos;
use berth_snapshotters::Mount;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the blocking half writes into the scratch directory besides CRIU's images.
struct Members {
    config: Vec<u8>,
    spec: Vec<u8>,
    status_dump: Vec<u8>,
    status: Vec<u8>,
    log: Option<PathBuf>,
    /// The container's snapshot and its image's (for what an opaque directory hid).
    upper: Vec<Mount>,
    lower: Vec<Mount>,
}

impl Cri {
    pub async fn checkpoint_container(
        &self,
        id: &str,
        location: &str,
        timeout_secs: i64,
    ) -> Result<()> {
        if !location.starts_with('/') {
            return Err(Error::invalid(format!(
                "checkpoint location {location:?} must be an absolute path"
            )));
        }
        // A timed-out checkpoint's blocking half may still be running: it must not put
        // the archive in place after the caller was told it failed.
        let abandoned = Arc::new(AtomicBool::new(false));
        let work = self.write_checkpoint(id, PathBuf::from(location), abandoned.clone());
        if timeout_secs <= 0 {
            return work.await;
        }
        match tokio::time::timeout(Duration::from_secs(timeout_secs as u64), work).await {
            Ok(done) => done,
            Err(_) => {
                abandoned.store(true, Ordering::SeqCst);
                Err(Error::new(
                    Kind::DeadlineExceeded,
                    format!("checkpoint of container {id} did not finish in {timeout_secs}s"),
                ))
            }
        }
    }

    async fn write_checkpoint(
        &self,
        id: &str,
        location: PathBuf,
        abandoned: Arc<AtomicBool>,
    ) -> Result<()> {
        let c = self.container(id)?;
        let state = Self::container_state(&c);
        if state != cri::ContainerState::ContainerRunning {
            return Err(Error::precondition(format!(
                "container {} is {}: only a running container can be checkpointed",
                c.id,
                state.as_str_name()
            )));
        }
        let record = self.records.get(self.ns.clone(), c.id.clone()).await?;
        let snapshotter = if record.snapshotter.is_empty() {
            self.cfg.snapshotter.clone()
        } else {
            record.snapshotter.clone()
        };
        let key = if record.snapshot_key.is_empty() {
            c.id.clone()
        } else {
            record.snapshot_key.clone()
        };
        // The archive's members go into `top`; the raw diff beside it.
        let scratch = Scratch(self.tasks.checkpoint_scratch()?);
        let top = scratch.0.join("archive");
        // CRIU's work directory is the archive's top: dump.log and stats-dump land there.
        self.tasks
            .checkpoint(
                &self.ns,
                &c.id,
                &top.join(archive::CHECKPOINT_DIR),
                Some(leave_running_in(&top)),
            )
            .await?;
        let upper = self
            .snapshots
            .mounts(self.ns.clone(), &snapshotter, key.clone())
            .await?;
        let parent = self
            .snapshots
            .stat(self.ns.clone(), &snapshotter, key)
            .await?
            .0
            .parent;
        let view = parent.map(|p| {
            let key = format!("checkpoint-{}-{}", c.id, uuid::Uuid::new_v4().simple());
            (key, p)
        });
        let lower = match &view {
            Some((key, p)) => {
                self.snapshots
                    .view(
                        self.ctx(),
                        &snapshotter,
                        key.clone(),
                        p.clone(),
                        Labels::new(),
                    )
                    .await?
            }
            None => vec![],
        };
        let members = Members {
            config: self.config_dump(&c, &record.runtime.name)?,
            spec: record.spec.map(|s| s.value).unwrap_or_default(),
            status_dump: serde_json::to_vec(&status_json(&self.container_status(&c)))?,
            status: serde_json::to_vec(&containerd_status(&c))?,
            log: (!c.meta.log_path.is_empty()).then(|| PathBuf::from(&c.meta.log_path)),
            upper,
            lower,
        };
        let written = blocking(move || {
            write_members(&top, &scratch.0.join(archive::ROOTFS_DIFF), members)?;
            let part = PathBuf::from(format!("{}.part", location.display()));
            let io = |what: String| move |e| Error::io(what, e);
            // CRIU's images hold the container's memory: the archive is root's alone.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&part)
                .map_err(io(format!("create {}", part.display())))?;
            let tarred = crate::core::checkpoint::tar_dir(&top, &mut out)
                .and_then(|()| out.sync_all().map_err(io("sync the archive".into())));
            if tarred.is_err() || abandoned.load(Ordering::SeqCst) {
                let _ = std::fs::remove_file(&part);
                return tarred;
            }
            std::fs::rename(&part, &location)
                .map_err(io(format!("move the archive to {}", location.display())))
        })
        .await;
        if let Some((key, _)) = view {
            let _ = self
                .snapshots
                .remove(self.ns.clone(), &snapshotter, key)
                .await;
        }
        written
    }

    fn config_dump(&self, c: &Container, runtime: &str) -> Result<Vec<u8>> {
        let created = UNIX_EPOCH + Duration::from_nanos(c.meta.created_at.max(0) as u64);
        let d = archive::ConfigDump {
            id: c.id.clone(),
            name: c.meta.name.clone(),
            rootfs_image: c.meta.image_ref.clone(),
            rootfs_image_ref: c.meta.image_id.clone(),
            rootfs_image_name: c.meta.image_ref.clone(),
            runtime: runtime.to_string(),
            created_time: rfc3339_nanos(created),
            checkpointed_time: rfc3339_nanos(SystemTime::now()),
        };
        Ok(serde_json::to_vec(&d)?)
    }
}

/// runc's CheckpointOptions: the container keeps running, CRIU works in `work`.
fn leave_running_in(work: &Path) -> AnyValue {
    use prost::Message;
    let o = berth_proto::containerd::runc::v1::CheckpointOptions {
        exit: false,
        work_path: work.display().to_string(),
        ..Default::default()
    };
    AnyValue {
        type_url: "containerd.runc.v1.CheckpointOptions".into(),
        value: o.encode_to_vec(),
    }
}

/// Everything but CRIU's images, written into the archive's directory `dir`; the raw
/// diff of the writable layer goes through `raw_path`, outside it.
fn write_members(dir: &Path, raw_path: &Path, m: Members) -> Result<()> {
    let io = |what: &str| {
        let w = what.to_string();
        move |e| Error::io(w, e)
    };
    // CRIU puts its statistics beside the images; the archive has them at its top.
    let stats = dir.join(archive::CHECKPOINT_DIR).join(archive::STATS_DUMP);
    if stats.is_file() && !dir.join(archive::STATS_DUMP).exists() {
        std::fs::rename(&stats, dir.join(archive::STATS_DUMP)).map_err(io("move stats-dump"))?;
    }
    for (name, bytes) in [
        (archive::CONFIG_DUMP, &m.config),
        (archive::SPEC_DUMP, &m.spec),
        (archive::STATUS_DUMP, &m.status_dump),
        (archive::STATUS, &m.status),
    ] {
        std::fs::write(dir.join(name), bytes).map_err(io(&format!("write {name}")))?;
    }
    if let Some(log) = m.log.filter(|l| l.is_file()) {
        std::fs::copy(&log, dir.join(archive::CONTAINER_LOG))
            .map_err(io(&format!("copy the log {}", log.display())))?;
    }
    let raw = std::fs::File::create(raw_path).map_err(io("create the raw rootfs diff"))?;
    let raw = std::io::BufWriter::new(raw);
    berth_snapshotters::layer::diff_mounts(&m.lower, &m.upper, raw)?
        .flush()
        .map_err(io("write the raw rootfs diff"))?;
    let raw = std::fs::File::open(raw_path).map_err(io("open the raw rootfs diff"))?;
    let raw = std::io::BufReader::new(raw);
    let out = std::fs::File::create(dir.join(archive::ROOTFS_DIFF))
        .map_err(io("create rootfs-diff.tar"))?;
    let out = std::io::BufWriter::new(out);
    let lower = if m.lower.is_empty() {
        None
    } else {
        Some(berth_snapshotters::mount::TempMount::new(&m.lower)?)
    };
    let deleted = archive::split_diff(raw, out, lower.as_ref().map(|l| l.path()))?;
    if !deleted.is_empty() {
        std::fs::write(
            dir.join(archive::DELETED_FILES),
            serde_json::to_vec(&deleted)?,
        )
        .map_err(io("write deleted.files"))?;
    }
    Ok(())
}

/// containerd's `status` file (checkpointctl reads it for a containerd archive).
fn containerd_status(c: &Container) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": c.meta.created_at,
        "StartedAt": c.meta.started_at,
        "FinishedAt": c.meta.finished_at,
        "ExitCode": c.meta.exit_code,
        "Pid": c.meta.pid,
        "Reason": c.meta.reason,
        "Message": c.meta.message,
    })
}

/// The CRI ContainerStatus as `status.dump`: the CRI's own JSON names, as Go's encoding
/// of the generated types writes them (what restore reads back).
fn status_json(s: &cri::ContainerStatus) -> serde_json::Value {
    let md = s.metadata.clone().unwrap_or_default();
    let image = s.image.clone().unwrap_or_default();
    let mounts: Vec<serde_json::Value> = s
        .mounts
        .iter()
        .map(|m| {
            serde_json::json!({
                "container_path": m.container_path,
                "host_path": m.host_path,
                "readonly": m.readonly,
                "selinux_relabel": m.selinux_relabel,
                "propagation": m.propagation,
            })
        })
        .collect();
    serde_json::json!({
        "id": s.id,
        "metadata": { "name": md.name, "attempt": md.attempt },
        "state": s.state,
        "created_at": s.created_at,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "exit_code": s.exit_code,
        "image": {
            "image": image.image,
            "annotations": image.annotations,
            "user_specified_image": image.user_specified_image,
        },
        "image_ref": s.image_ref,
        "image_id": s.image_id,
        "reason": s.reason,
        "message": s.message,
        "labels": s.labels,
        "annotations": s.annotations,
        "mounts": mounts,
        "log_path": s.log_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_dump_uses_the_cri_json_names_restore_reads() {
        let s = cri::ContainerStatus {
            id: "c1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "counter".into(),
                attempt: 2,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                user_specified_image: "busybox:latest".into(),
                ..Default::default()
            }),
            annotations: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let v = status_json(&s);
        assert_eq!(v["metadata"]["name"], "counter");
        assert_eq!(v["metadata"]["attempt"], 2);
        assert_eq!(v["image"]["user_specified_image"], "busybox:latest");
        assert_eq!(v["annotations"]["a"], "b");
        assert!(v.get("created_at").is_some() && v.get("log_path").is_some());
    }

    #[test]
    fn checkpoint_options_leave_the_container_running_and_name_the_work_path() {
        use prost::Message;
        let any = leave_running_in(Path::new("/scratch/archive"));
        assert_eq!(any.type_url, "containerd.runc.v1.CheckpointOptions");
        let o = berth_proto::containerd::runc::v1::CheckpointOptions::decode(any.value.as_slice())
            .unwrap();
        assert!(!o.exit);
        assert_eq!(o.work_path, "/scratch/archive");
    }
}
