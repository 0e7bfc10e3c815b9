//! Remote snapshots, containerd's lazy-pull protocol. A snapshotter that can serve a layer
//! itself (stargz, SOCI, nydus: it mounts the layer from its registry and reads bytes when
//! they are first touched) is told on Prepare where the layer lives. When it serves the layer
//! it commits the snapshot the `containerd.io/snapshot.ref` label names and answers
//! AlreadyExists; that layer is then neither fetched nor applied. A layer it declines is
//! prepared as usual, and so is every layer above it (each sits on the one below).

use super::{extract_key, Stack, Unpacker};
use crate::core::error::{Error, Result};
use crate::core::metadata::{Labels, MAX_LABEL_SIZE};
use crate::core::oci::DocDescriptor;
use crate::core::snapshots::scoped;
use berth_proto::vocab::labels as vocab;
use berth_snapshotters::Mount;

/// An unpack into a snapshotter that may serve layers itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Remote<'a> {
    /// The name the image is pulled under, which the snapshotter resolves at its registry
    /// (None for an image not yet named, as an import's).
    pub image: Option<&'a str>,
}

/// How a layer's Prepare ended.
pub(crate) enum Prepared {
    /// An extraction snapshot to apply the layer to.
    Mounts(Vec<Mount>),
    /// The snapshotter served the layer: its snapshot is committed.
    Served,
}

impl Remote<'_> {
    /// What the snapshotter is told about layer `i` of `stack`: the layer descriptor's
    /// `containerd.io/snapshot/` annotations (an eStargz layer's TOC digest), then the target
    /// snapshot, the layer's diffID and parent, and where the layer lives, as containerd's
    /// unpacker and its image handler pass them.
    pub fn labels(&self, stack: &Stack<'_>, i: usize) -> Labels {
        let (resolved, chains) = (stack.resolved, stack.chains);
        let layer = &resolved.layers[i];
        let mut labels: Labels = layer
            .annotations
            .iter()
            .filter(|(k, v)| {
                k.starts_with(vocab::SNAPSHOT_INHERITED) && k.len() + v.len() <= MAX_LABEL_SIZE
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut set = |k: &str, v: String| labels.insert(k.to_string(), v);
        // A snapshotter holds berth's snapshots as `<namespace>/<name>`; the target is one.
        set(vocab::SNAPSHOT_REF, scoped(&stack.ctx.ns, &chains[i]));
        set(vocab::SNAPSHOT_DIFF_ID, resolved.diff_ids[i].clone());
        if i > 0 {
            set(vocab::SNAPSHOT_PARENT_CHAIN_ID, chains[i - 1].clone());
        }
        if let Some(image) = self.image {
            set(vocab::SNAPSHOT_IMAGE_REF, image.to_string());
        }
        set(
            vocab::SNAPSHOT_MANIFEST_DIGEST,
            resolved.manifest.digest.clone(),
        );
        set(vocab::SNAPSHOT_LAYER_DIGEST, layer.digest.clone());
        set(
            vocab::SNAPSHOT_IMAGE_LAYERS,
            layers_list(&resolved.layers[i..]),
        );
        labels
    }
}

/// The digests of `layers`, comma-separated, as many whole ones as fit in the label (the
/// snapshotter may prepare those ahead; leaving some out costs only that).
fn layers_list(layers: &[DocDescriptor]) -> String {
    let room = MAX_LABEL_SIZE - vocab::SNAPSHOT_IMAGE_LAYERS.len();
    let mut out = String::new();
    for l in layers {
        let comma = usize::from(!out.is_empty());
        if out.len() + comma + l.digest.len() > room {
            break;
        }
        if comma == 1 {
            out.push(',');
        }
        out.push_str(&l.digest);
    }
    out
}

impl Unpacker {
    /// Prepares layer `i`'s extraction snapshot `key` on its parent. With a remote
    /// snapshotter the layer's labels go along, and AlreadyExists with the layer's chain ID
    /// committed means the snapshotter served it.
    pub(crate) fn prepare_layer(&self, stack: &Stack<'_>, i: usize, key: &str) -> Result<Prepared> {
        let Stack {
            ctx,
            snapshotter,
            snap,
            chains,
            remote,
            ..
        } = *stack;
        let parent = (i > 0).then(|| scoped(&ctx.ns, &chains[i - 1]));
        let labels = remote.map_or_else(Labels::new, |r| r.labels(stack, i));
        match snap.prepare(key, parent.as_deref(), labels) {
            Ok(mounts) => Ok(Prepared::Mounts(mounts)),
            Err(berth_snapshotters::Error::AlreadyExists(_)) if remote.is_some() => {
                snap.stat(&scoped(&ctx.ns, &chains[i])).map_err(|e| {
                    Error::from(e).context(format_args!(
                        "snapshotter {snapshotter} answered that layer {}'s snapshot exists, but it has none",
                        stack.resolved.layers[i].digest
                    ))
                })?;
                self.snapshots
                    .committed(ctx, snapshotter, &chains[i], &chains[i])?;
                Ok(Prepared::Served)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Offers `stack`'s missing layers, bottom-up, to its remote snapshotter before anything
    /// is fetched: the layers it serves are committed; the rest (from the first it declines)
    /// are returned, to be fetched and applied.
    pub(crate) fn offer_remote(&self, stack: &Stack<'_>) -> Result<Vec<usize>> {
        for (j, &i) in stack.missing.iter().enumerate() {
            let key = extract_key(stack, i);
            if let Prepared::Mounts(_) = self.prepare_layer(stack, i, &key)? {
                // Prepared again once its blob is here; an unfilled snapshot is not kept.
                let _ = stack.snap.remove(&key);
                return Ok(stack.missing[j..].to_vec());
            }
        }
        Ok(vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::content::Content;
    use crate::core::context::{Ctx, Namespace};
    use crate::core::events::Exchange;
    use crate::core::metadata::images::{Descriptor, ImageRecord};
    use crate::core::metadata::MetadataStore;
    use crate::core::snapshots::Snapshots;
    use berth_proto::vocab::media;
    use berth_snapshotters::{Info, Snapshotter, Usage};
    use std::collections::{BTreeMap, HashSet};
    use std::sync::{Arc, Mutex};

    /// A remote snapshotter as stargz behaves: it serves the layers named in `serves` (by
    /// committing the labelled target and answering AlreadyExists) and prepares the rest on
    /// berth's native snapshotter; it records the labels of every Prepare.
    struct FakeRemote {
        inner: Box<dyn Snapshotter>,
        serves: HashSet<String>,
        prepared: Mutex<Vec<Labels>>,
    }

    impl Snapshotter for FakeRemote {
        fn prepare(
            &self,
            key: &str,
            parent: Option<&str>,
            labels: Labels,
        ) -> berth_snapshotters::Result<Vec<Mount>> {
            self.prepared.lock().unwrap().push(labels.clone());
            let layer = labels.get(vocab::SNAPSHOT_LAYER_DIGEST).cloned();
            if !layer.is_some_and(|l| self.serves.contains(&l)) {
                return self.inner.prepare(key, parent, Labels::new());
            }
            let target = &labels[vocab::SNAPSHOT_REF];
            self.inner.prepare(key, parent, Labels::new())?;
            self.inner.commit(target, key, labels.clone())?;
            Err(berth_snapshotters::Error::AlreadyExists(target.clone()))
        }
        fn stat(&self, key: &str) -> berth_snapshotters::Result<Info> {
            self.inner.stat(key)
        }
        fn update(&self, info: Info, paths: &[String]) -> berth_snapshotters::Result<Info> {
            self.inner.update(info, paths)
        }
        fn usage(&self, key: &str) -> berth_snapshotters::Result<Usage> {
            self.inner.usage(key)
        }
        fn mounts(&self, key: &str) -> berth_snapshotters::Result<Vec<Mount>> {
            self.inner.mounts(key)
        }
        fn view(
            &self,
            key: &str,
            parent: Option<&str>,
            labels: Labels,
        ) -> berth_snapshotters::Result<Vec<Mount>> {
            self.inner.view(key, parent, labels)
        }
        fn commit(&self, name: &str, key: &str, labels: Labels) -> berth_snapshotters::Result<()> {
            self.inner.commit(name, key, labels)
        }
        fn remove(&self, key: &str) -> berth_snapshotters::Result<()> {
            self.inner.remove(key)
        }
        fn walk(&self, visit: &mut dyn FnMut(&Info) -> bool) -> berth_snapshotters::Result<()> {
            self.inner.walk(visit)
        }
        fn cleanup(&self) -> berth_snapshotters::Result<()> {
            self.inner.cleanup()
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        ctx: Ctx,
        content: Content,
        unpacker: Unpacker,
        snapshots: Snapshots,
        snap: Arc<FakeRemote>,
        /// Layer blobs (digest = diffID: uncompressed), bottom-up.
        layers: Vec<String>,
        manifest: String,
        manifest_size: i64,
    }

    const IMAGE: &str = "registry.test/lazy:1";

    fn put(content: &Content, ctx: &Ctx, data: &[u8]) -> String {
        content
            .ingest_sync(
                ctx,
                &format!("test-{}", uuid::Uuid::new_v4()),
                Labels::new(),
                |w| w.write_all(data).map_err(|e| Error::io("write", e)),
            )
            .unwrap()
            .digest
    }

    fn layer_tar(file: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, file, &b"hi"[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// An image of two layers whose bottom blob is not in the content store (a lazy pull
    /// leaves it at the registry), and a snapshotter that serves the layers in `serves`.
    fn fixture(serves: &[usize]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        let content =
            Content::open(&dir.path().join("content"), store.clone(), Exchange::new()).unwrap();
        let ctx = Ctx {
            ns: Namespace::parse("test").unwrap(),
            lease: None,
        };
        let tars = [layer_tar("a"), layer_tar("b")];
        let digests: Vec<String> = tars
            .iter()
            .map(|t| crate::core::content::digest::Digest::of(t).to_string())
            .collect();
        put(&content, &ctx, &tars[1]);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": digests},
        })
        .to_string();
        let config_digest = put(&content, &ctx, config.as_bytes());
        let layer = |i: usize, annotations: serde_json::Value| {
            serde_json::json!({
                "mediaType": media::OCI_LAYER, "digest": digests[i],
                "size": tars[i].len(), "annotations": annotations,
            })
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": [
                layer(0, serde_json::json!({
                    "containerd.io/snapshot/stargz/toc.digest": "sha256:toc",
                    "org.example.other": "not a snapshot label",
                })),
                layer(1, serde_json::json!({})),
            ],
        })
        .to_string();
        let manifest_digest = put(&content, &ctx, manifest.as_bytes());
        store
            .image_create(
                &ctx.ns,
                &ImageRecord {
                    name: IMAGE.into(),
                    target: Descriptor {
                        media_type: media::OCI_MANIFEST.into(),
                        digest: manifest_digest.clone(),
                        size: manifest.len() as i64,
                        annotations: Labels::new(),
                    },
                    ..Default::default()
                },
            )
            .unwrap();
        let snap = Arc::new(FakeRemote {
            inner: berth_snapshotters::open("native", &dir.path().join("native")).unwrap(),
            serves: serves.iter().map(|&i| digests[i].clone()).collect(),
            prepared: Mutex::default(),
        });
        let backend: Arc<dyn Snapshotter> = snap.clone();
        let snapshots = Snapshots::new(
            BTreeMap::from([("remote".to_string(), backend)]),
            store.clone(),
            Exchange::new(),
        );
        let gc = crate::core::gc::Gc::new(
            Default::default(),
            store.clone(),
            content.clone(),
            snapshots.clone(),
        );
        Fixture {
            ctx,
            unpacker: Unpacker::new(content.clone(), snapshots.clone(), store, gc),
            snapshots,
            content,
            snap,
            layers: digests,
            manifest: manifest_digest,
            manifest_size: manifest.len() as i64,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn a_layer_the_snapshotter_serves_is_neither_fetched_nor_applied() {
        let f = fixture(&[0]);
        let u = f
            .unpacker
            .unpack(f.ctx.clone(), IMAGE.into(), "remote".into(), None)
            .await
            .unwrap();
        assert_eq!((u.layers, u.extracted), (2, 1));
        let chains = crate::core::oci::chain_ids(&f.layers);
        assert_eq!(u.chain_id, chains[1]);
        let top = f.snap.stat(&format!("test/{}", chains[1])).unwrap();
        assert_eq!(top.parent, Some(format!("test/{}", chains[0])));
        // The served layer's blob was never needed.
        assert!(!f.content.has_blob_sync(&f.ctx.ns, &f.layers[0]).unwrap());

        let prepared = f.snap.prepared.lock().unwrap().clone();
        assert_eq!(prepared.len(), 2);
        let (bottom, upper) = (&prepared[0], &prepared[1]);
        let label = |l: &Labels, k: &str| l.get(k).cloned().unwrap_or_default();
        assert_eq!(
            label(bottom, vocab::SNAPSHOT_REF),
            format!("test/{}", chains[0])
        );
        assert_eq!(label(bottom, vocab::SNAPSHOT_IMAGE_REF), IMAGE);
        assert_eq!(label(bottom, vocab::SNAPSHOT_MANIFEST_DIGEST), f.manifest);
        assert_eq!(label(bottom, vocab::SNAPSHOT_LAYER_DIGEST), f.layers[0]);
        assert_eq!(label(bottom, vocab::SNAPSHOT_DIFF_ID), f.layers[0]);
        assert_eq!(
            label(bottom, vocab::SNAPSHOT_IMAGE_LAYERS),
            f.layers.join(",")
        );
        assert_eq!(
            label(bottom, "containerd.io/snapshot/stargz/toc.digest"),
            "sha256:toc"
        );
        assert!(!bottom.contains_key("org.example.other"));
        assert!(!bottom.contains_key(vocab::SNAPSHOT_PARENT_CHAIN_ID));
        assert_eq!(label(upper, vocab::SNAPSHOT_PARENT_CHAIN_ID), chains[0]);
        assert_eq!(label(upper, vocab::SNAPSHOT_IMAGE_LAYERS), f.layers[1]);
    }

    #[tokio::test]
    async fn a_declined_layer_needs_its_blob_and_nothing_half_made_stays() {
        let f = fixture(&[]);
        let e = f
            .unpacker
            .unpack(f.ctx.clone(), IMAGE.into(), "remote".into(), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::core::error::Kind::NotFound, "{e}");
        let mut left = vec![];
        f.snap
            .walk(&mut |i| {
                left.push(i.name.clone());
                true
            })
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    #[tokio::test]
    async fn a_client_naming_the_chain_id_finds_the_served_snapshot_in_its_namespace() {
        // A client unpacking through the Snapshots service (containerd's client-side unpack)
        // names the bare chain ID; the snapshotter commits it inside the namespace.
        let f = fixture(&[0]);
        let chain = crate::core::oci::chain_ids(&f.layers)[0].clone();
        let labels = Labels::from([
            (vocab::SNAPSHOT_REF.to_string(), chain.clone()),
            (
                vocab::SNAPSHOT_LAYER_DIGEST.to_string(),
                f.layers[0].clone(),
            ),
        ]);
        let e = f
            .snapshots
            .prepare(
                f.ctx.clone(),
                "remote",
                "extract-1".into(),
                String::new(),
                labels,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::core::error::Kind::AlreadyExists);
        let info = f
            .snapshots
            .stat(f.ctx.ns.clone(), "remote", chain.clone())
            .await
            .unwrap();
        assert_eq!(info.0.kind, berth_snapshotters::Kind::Committed);
        assert!(f.snap.stat(&format!("test/{chain}")).is_ok());
    }

    #[test]
    fn an_offer_stops_at_the_first_layer_the_snapshotter_declines() {
        let f = fixture(&[0]);
        let resolved = super::super::resolve(
            &f.content,
            &f.ctx.ns,
            &crate::core::images::Descriptor {
                media_type: media::OCI_MANIFEST.into(),
                digest: f.manifest.clone(),
                size: f.manifest_size,
                annotations: Labels::new(),
            },
            &crate::core::oci::Platform::host(),
        )
        .unwrap();
        let chains = crate::core::oci::chain_ids(&resolved.diff_ids);
        let stack = Stack {
            ctx: &f.ctx,
            snapshotter: "remote",
            snap: f.snap.as_ref(),
            resolved: &resolved,
            chains: &chains,
            missing: &[0, 1],
            remote: Some(Remote { image: Some(IMAGE) }),
        };
        assert_eq!(f.unpacker.offer_remote(&stack).unwrap(), vec![1]);
        let mut kinds = vec![];
        f.snap
            .walk(&mut |i| {
                kinds.push((i.name.clone(), i.kind));
                true
            })
            .unwrap();
        // The served layer is committed; the declined one's extraction snapshot is gone.
        assert_eq!(
            kinds,
            [(
                format!("test/{}", chains[0]),
                berth_snapshotters::Kind::Committed
            )]
        );
    }

    fn layer(n: usize) -> DocDescriptor {
        DocDescriptor {
            media_type: berth_proto::vocab::media::OCI_LAYER_GZIP.into(),
            digest: format!("sha256:{n:064x}"),
            size: 1,
            annotations: Default::default(),
            platform: None,
        }
    }

    #[test]
    fn the_layers_list_keeps_whole_digests_within_the_label_limit() {
        let few: Vec<_> = (0..3).map(layer).collect();
        assert_eq!(
            layers_list(&few),
            few.iter()
                .map(|l| l.digest.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let many: Vec<_> = (0..100).map(layer).collect();
        let list = layers_list(&many);
        assert!(vocab::SNAPSHOT_IMAGE_LAYERS.len() + list.len() <= MAX_LABEL_SIZE);
        let kept: Vec<&str> = list.split(',').collect();
        // 71 bytes a digest and its comma: 56 fit beside the 39-byte key.
        assert_eq!(kept.len(), 56);
        assert!(kept.iter().zip(&many).all(|(k, l)| *k == l.digest));
    }
}
