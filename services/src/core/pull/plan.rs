//! Planning a pull's layers: which snapshots exist already, which layers are unpacked into
//! which staging directory while they download, and which blobs are fetched at all. A
//! snapshotter that may serve layers itself is offered them first; the layers it serves are
//! not fetched.

use super::Puller;
use crate::core::context::Ctx;
use crate::core::error::Result;
use crate::core::oci::{self, DocDescriptor};
use crate::core::snapshots::scoped;
use crate::core::unpack::{stage_n, Remote, Resolved, Stack};
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

/// What a pull does with one layer of the manifest it unpacks.
#[derive(Debug, PartialEq)]
pub(super) enum LayerPlan {
    /// Fetched and unpacked into this staging directory as it downloads.
    UnpackInto(PathBuf),
    /// Fetched into the content store (unpacked afterwards if its snapshot is missing).
    Fetch,
    /// Neither: the snapshotter serves it from the registry itself.
    Remote,
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
    /// The snapshotter serves the layers below `missing` that had no snapshot.
    pub remote: bool,
}

impl UnpackPlan {
    /// The staging directory layer `i` of the unpacked manifest is extracted into, if it is
    /// missing and the snapshotter stages.
    pub fn staging_dir(&self, i: usize) -> Option<PathBuf> {
        let j = self.missing.iter().position(|&x| x == i)?;
        Some(self.staged.as_ref()?.get(j)?.fs())
    }

    /// What the pull does with layer `i` of the unpacked manifest.
    pub fn layer(&self, i: usize) -> LayerPlan {
        if let Some(dir) = self.staging_dir(i) {
            return LayerPlan::UnpackInto(dir);
        }
        if self.remote && !self.missing.contains(&i) {
            return LayerPlan::Remote;
        }
        LayerPlan::Fetch
    }

    /// Drops the staging directories of a pull that failed.
    pub fn discard(self) {
        self.staged.into_iter().flatten().for_each(Staged::discard);
    }
}

impl Puller {
    /// The unpack plan for `first`, pulled as `image`, in `snapshotter` (None: a
    /// content-only pull). Blocking: it asks the snapshotter, and a remote one serves layers.
    pub(super) fn plan_unpack(
        &self,
        ctx: &Ctx,
        snapshotter: Option<String>,
        (first, image): (&Resolved, &str),
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
        let mut missing: Vec<usize> = (present..chains.len()).collect();
        let remote = snap.remote_snapshots();
        let staged = if remote {
            let stack = Stack {
                ctx,
                snapshotter: &name,
                snap: snap.as_ref(),
                resolved: first,
                chains: &chains,
                missing: &missing,
                remote: Some(Remote { image: Some(image) }),
            };
            missing = self.unpacker.offer_remote(&stack)?;
            None
        } else {
            stage_n(snap.as_ref(), missing.len())?
        };
        Ok(Some(UnpackPlan {
            snapshotter: name,
            snap,
            chains,
            missing,
            staged,
            remote,
        }))
    }
}

/// The jobs of a pull: every layer of the first (unpacked) manifest as `plan` says (each
/// one unpacked into its staging directory; the others fetched unless remote), and every
/// other blob once.
pub(super) fn layer_jobs(
    manifests: &[Resolved],
    plan: impl Fn(usize) -> LayerPlan,
) -> Vec<LayerJob> {
    let mut jobs = vec![];
    let mut seen = HashSet::new();
    for (mi, m) in manifests.iter().enumerate() {
        for (i, l) in m.layers.iter().enumerate() {
            let unpack = match (mi, plan(i)) {
                (0, LayerPlan::UnpackInto(dir)) => Some((i, dir)),
                (0, LayerPlan::Remote) => continue,
                _ => None,
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
        let jobs = layer_jobs(&manifests, |i| match i {
            0 | 1 => LayerPlan::Fetch,
            _ => LayerPlan::UnpackInto(PathBuf::from(format!("/s{i}"))),
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
        let jobs = layer_jobs(&manifests, |_| LayerPlan::Fetch);
        assert_eq!(jobs.len(), 4);
        assert!(jobs.iter().all(|j| j.unpack.is_none()));
    }

    #[test]
    fn layers_a_remote_snapshotter_serves_are_not_fetched() {
        let manifests = [manifest(&["a", "b", "c"]), manifest(&["a", "d"])];
        let dir = tempfile::tempdir().unwrap();
        let plan = UnpackPlan {
            snapshotter: "stargz".into(),
            snap: berth_snapshotters::open("native", dir.path())
                .unwrap()
                .into(),
            chains: vec!["ca".into(), "cb".into(), "cc".into()],
            // It served a and b; c is fetched and applied.
            missing: vec![2],
            staged: None,
            remote: true,
        };
        assert_eq!(plan.layer(0), LayerPlan::Remote);
        assert_eq!(plan.layer(2), LayerPlan::Fetch);
        let jobs = layer_jobs(&manifests, |i| plan.layer(i));
        // The other platform's manifest still gets its blobs, a included.
        assert_eq!(
            summary(&jobs),
            [
                ("sha256:c".to_string(), None),
                ("sha256:a".to_string(), None),
                ("sha256:d".to_string(), None),
            ]
        );
        // With berth's own snapshotters a layer whose snapshot exists is still fetched.
        let local = UnpackPlan {
            remote: false,
            ..plan
        };
        assert_eq!(local.layer(0), LayerPlan::Fetch);
    }
}
