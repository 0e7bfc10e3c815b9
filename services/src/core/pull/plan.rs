//! Planning a pull's layers: which snapshots exist already, which layers are unpacked into
//! which staging directory while they download, and which blobs are fetched at all.

use super::Puller;
use crate::core::context::Ctx;
use crate::core::error::Result;
use crate::core::oci::{self, DocDescriptor};
use crate::core::snapshots::scoped;
use crate::core::unpack::{stage_n, Resolved};
use berth_snapshotters::{Snapshotter, Staged};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

/// What happens to one layer of a pull.
pub(super) struct LayerJob {
    pub desc: DocDescriptor,
    /// Index in the unpacked manifest and its staging directory, when it gets unpacked.
    pub unpack: Option<(usize, PathBuf)>,
}

/// How the first manifest's layers become snapshots.
pub(super) struct UnpackPlan {
    pub snapshotter: String,
    pub snap: Arc<dyn Snapshotter>,
    pub chains: Vec<String>,
    /// Layers whose snapshots are missing (indexes into the unpacked manifest).
    pub missing: Vec<usize>,
    /// A staging directory per missing layer. None: the snapshotter does not stage, so the
    /// image is unpacked after the download, layer after layer.
    pub staged: Option<Vec<Staged>>,
}

impl UnpackPlan {
    /// The staging directory layer `i` of the unpacked manifest is extracted into, if it is
    /// missing and the snapshotter stages.
    pub fn staging_dir(&self, i: usize) -> Option<PathBuf> {
        let j = self.missing.iter().position(|&x| x == i)?;
        Some(self.staged.as_ref()?.get(j)?.fs())
    }

    /// Drops the staging directories of a pull that failed.
    pub fn discard(self) {
        self.staged.into_iter().flatten().for_each(Staged::discard);
    }
}

impl Puller {
    /// The unpack plan for `first` in `snapshotter` (None: a content-only pull).
    pub(super) fn plan_unpack(
        &self,
        ctx: &Ctx,
        snapshotter: Option<String>,
        first: &Resolved,
    ) -> Result<Option<UnpackPlan>> {
        let Some(name) = snapshotter else {
            return Ok(None);
        };
        let name = if name.is_empty() {
            "overlayfs".to_string()
        } else {
            name
        };
        let snap = self.snapshots.get(&name)?;
        let chains = oci::chain_ids(&first.diff_ids);
        let present = chains
            .iter()
            .take_while(|c| snap.stat(&scoped(&ctx.ns, c)).is_ok())
            .count();
        let missing: Vec<usize> = (present..chains.len()).collect();
        let staged = stage_n(snap.as_ref(), missing.len())?;
        Ok(Some(UnpackPlan {
            snapshotter: name,
            snap,
            chains,
            missing,
            staged,
        }))
    }
}

/// The jobs of a pull: every layer of the first (unpacked) manifest that has a staging
/// directory (`staging`), and every other blob once.
pub(super) fn layer_jobs(
    manifests: &[Resolved],
    staging: impl Fn(usize) -> Option<PathBuf>,
) -> Vec<LayerJob> {
    let mut jobs = vec![];
    let mut seen = HashSet::new();
    for (mi, m) in manifests.iter().enumerate() {
        for (i, l) in m.layers.iter().enumerate() {
            let unpack = if mi == 0 {
                staging(i).map(|dir| (i, dir))
            } else {
                None
            };
            if unpack.is_some() || seen.insert(l.digest.clone()) {
                jobs.push(LayerJob {
                    desc: l.clone(),
                    unpack,
                });
            }
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(d: &str) -> DocDescriptor {
        DocDescriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: format!("sha256:{d}"),
            size: 1,
            annotations: Default::default(),
            platform: None,
        }
    }

    fn manifest(layers: &[&str]) -> Resolved {
        Resolved {
            manifest: layer("m"),
            config: layer("c"),
            layers: layers.iter().map(|d| layer(d)).collect(),
            diff_ids: vec![],
            config_bytes: vec![],
        }
    }

    fn summary(jobs: &[LayerJob]) -> Vec<(String, Option<usize>)> {
        jobs.iter()
            .map(|j| (j.desc.digest.clone(), j.unpack.as_ref().map(|(i, _)| *i)))
            .collect()
    }

    #[test]
    fn missing_layers_are_unpacked_and_every_other_blob_fetched_once() {
        // Layers 0 and 1 of the first manifest have snapshots; 2 and 3 are missing. The second
        // platform's manifest shares a layer and adds one.
        let manifests = [manifest(&["a", "b", "c", "a"]), manifest(&["b", "d"])];
        let jobs = layer_jobs(&manifests, |i| {
            (i >= 2).then(|| PathBuf::from(format!("/s{i}")))
        });
        assert_eq!(
            summary(&jobs),
            [
                ("sha256:a".to_string(), None),
                ("sha256:b".to_string(), None),
                ("sha256:c".to_string(), Some(2)),
                // The same blob twice in one image is unpacked at both places.
                ("sha256:a".to_string(), Some(3)),
                ("sha256:d".to_string(), None),
            ]
        );
        assert_eq!(jobs[2].unpack.as_ref().unwrap().1, PathBuf::from("/s2"));
        // Content only: each blob once, nothing unpacked.
        let jobs = layer_jobs(&manifests, |_| None);
        assert_eq!(jobs.len(), 4);
        assert!(jobs.iter().all(|j| j.unpack.is_none()));
    }
}
