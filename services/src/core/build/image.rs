//! The finished image: config, manifest, tags, and the record that makes an unchanged
//! rebuild return the very same image.

use super::stage::Stage;
use super::stage::{now_rfc3339, sha256_hex};
use super::{Builder, StepCtx};
use crate::core::context::Ctx;
use crate::core::error::{blocking, Error, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::images::ImageRecord;
use crate::core::metadata::Labels;
use crate::core::oci::{self};
use serde_json::{json, Value};

impl Builder {
    /// The config, manifest and tags of the finished stage; an identical earlier build's
    /// image is returned as it is.
    /// `sc.snapshotter` holds the stage's snapshots: the config refers to the top one, as an
    /// unpack's does, so they are kept with the image.
    pub(super) async fn write_image(
        &self,
        sc: &StepCtx<'_>,
        stage: &Stage,
        tags: &[String],
    ) -> Result<String> {
        let (ctx, snapshotter) = (sc.ctx, sc.snapshotter);
        let mut config = stage.config.clone();
        config["rootfs"] = json!({"type": "layers", "diff_ids": stage.diff_ids});
        // An image identical but for its timestamps was built before: that one is the result,
        // so a rebuild with nothing changed creates nothing.
        let image_key = timeless_key(&config, stage);
        let image_file = self.root.join("images").join(format!("{image_key}.json"));
        sc.holds.hold(&image_file);
        if let Some(target) = self.reusable(ctx, &image_file).await {
            self.tag(ctx, &target, tags).await?;
            return Ok(target.digest);
        }
        config["history"] = json!(stage.history);
        config["created"] = json!(now_rfc3339());
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = format!("sha256:{}", sha256_hex(&config_bytes));
        let mut config_refs = Labels::new();
        if !stage.chain.is_empty() {
            config_refs.insert(
                berth_proto::vocab::labels::gc_ref_snapshot(snapshotter),
                stage.chain.clone(),
            );
        }
        let mut gc = Labels::from([(
            berth_proto::vocab::labels::gc_ref_config(),
            config_digest.clone(),
        )]);
        for (i, l) in stage.layers.iter().enumerate() {
            gc.insert(
                berth_proto::vocab::labels::gc_ref_layer(i),
                l["digest"].as_str().unwrap_or_default().to_string(),
            );
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_MANIFEST,
            "config": {"mediaType": oci::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
            "layers": stage.layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = format!("sha256:{}", sha256_hex(&manifest_bytes));
        let (content, c2, cb, mb, cd, md) = (
            self.content.clone(),
            ctx.clone(),
            config_bytes.clone(),
            manifest_bytes.clone(),
            config_digest.clone(),
            manifest_digest.clone(),
        );
        blocking(move || {
            for (bytes, digest, labels) in [(cb, cd, config_refs), (mb, md, gc)] {
                if content.has_blob_sync(&c2.ns, &digest)? {
                    content.label_sync(&c2.ns, &digest, labels)?;
                    continue;
                }
                content.ingest_sync(&c2, &format!("build-{digest}"), labels, |w| {
                    w.write_all(&bytes)
                        .map_err(|e| Error::io("write a document", e))
                })?;
            }
            Ok(())
        })
        .await?;
        let target = Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as i64,
            annotations: Labels::new(),
        };
        self.tag(ctx, &target, tags).await?;
        remember(&image_file, &target);
        Ok(manifest_digest)
    }

    /// The manifest an earlier build recorded, if it is still in the content store.
    async fn reusable(&self, ctx: &Ctx, file: &std::path::Path) -> Option<Descriptor> {
        let rec: Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        let digest = rec["digest"].as_str()?.to_string();
        self.content
            .info(ctx.ns.clone(), digest.clone())
            .await
            .ok()?;
        super::usage::touch(file);
        Some(Descriptor {
            media_type: oci::OCI_MANIFEST.into(),
            digest,
            size: rec["size"].as_i64()?,
            annotations: Labels::new(),
        })
    }

    async fn tag(&self, ctx: &Ctx, target: &Descriptor, tags: &[String]) -> Result<()> {
        for name in tags {
            let record = ImageRecord {
                name: name.clone(),
                labels: Labels::new(),
                target: target.clone(),
                created_at: 0,
                updated_at: 0,
            };
            self.images.put(ctx.ns.clone(), record).await?;
        }
        Ok(())
    }
}

/// The key of an image apart from its timestamps: its config (with `rootfs`), the
/// commands its history records, and its layers.
fn timeless_key(config: &Value, stage: &Stage) -> String {
    let mut timeless = config.clone();
    timeless["history"] = json!(stage
        .history
        .iter()
        .map(|h| json!([h["created_by"], h["empty_layer"]]))
        .collect::<Vec<_>>());
    timeless["layers"] = json!(stage.layers);
    sha256_hex(timeless.to_string().as_bytes())
}

/// Records the image a build produced under its timeless key (best effort: a lost
/// record only means the next identical build writes the image again).
fn remember(image_file: &std::path::Path, target: &Descriptor) {
    let rec = json!({"digest": target.digest, "size": target.size});
    super::usage::keep_record(image_file, &rec);
}
