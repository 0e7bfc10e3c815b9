//! Planning a pull's layers: which snapshots exist already, which layers are unpacked into
//! which staging directory while they download, and which blobs are fetched at all.

use super::Puller;
use crate::context::Ctx;
use crate::error::Result;
use crate::oci::{self, DocDescriptor};
use crate::snapshots::scoped;
use crate::unpack::{stage_n, Resolved};
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

/// The jobs of a pull: every missing layer of the unpacked manifest with its staging
/// directory, and every other blob once.
pub(super) fn layer_jobs(manifests: &[Resolved], plan: Option<&UnpackPlan>) -> Vec<LayerJob> {
    let staging = |i: usize| -> Option<(usize, PathBuf)> {
        let p = plan?;
        let j = p.missing.iter().position(|&x| x == i)?;
        Some((i, p.staged.as_ref()?.get(j)?.fs()))
    };
    let mut jobs = vec![];
    let mut seen = HashSet::new();
    for (mi, m) in manifests.iter().enumerate() {
        for (i, l) in m.layers.iter().enumerate() {
            let unpack = if mi == 0 { staging(i) } else { None };
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
