//! ListImages: every CRI-visible image, grouped by id; what a target resolves to is read
//! once and kept.

use super::*;

impl Cri {
    /// Every CRI-visible image, grouped by id.
    pub async fn image_list(&self) -> Result<Vec<ImageInfo>> {
        let records = self
            .images
            .list(self.ns.clone(), Default::default())
            .await?;
        // What no record points at any more leaves the cache.
        self.described
            .retain(|digest| records.iter().any(|r| r.target.digest == digest));
        let mut by_id: BTreeMap<String, ImageInfo> = BTreeMap::new();
        for r in records {
            let Ok(info) = self.describe(&r).await else {
                continue;
            };
            match by_id.get_mut(&info.id) {
                Some(existing) => existing.names.push(r.name.clone()),
                None => {
                    by_id.insert(info.id.clone(), info);
                }
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// The image `r` refers to, resolved for this host's platform. Targets are
    /// content-addressed, so what one resolves to is read once and kept.
    pub(in crate::edge::cri) async fn describe(&self, r: &ImageRecord) -> Result<ImageInfo> {
        if let Some(known) = self.described.get(&r.target.digest) {
            return Ok(ImageInfo {
                names: vec![r.name.clone()],
                ..known
            });
        }
        let info = self.resolve_image(r).await?;
        self.described.insert(&r.target.digest, info.clone());
        Ok(info)
    }

    pub(in crate::edge::cri) async fn resolve_image(&self, r: &ImageRecord) -> Result<ImageInfo> {
        let content = self.content.clone();
        let ns = self.ns.clone();
        let target = r.target.clone();
        let name = r.name.clone();
        blocking(move || {
            let resolved = crate::core::unpack::resolve(&content, &ns, &target, &Platform::host())?;
            let cbytes = content.read_document_sync(
                &ns,
                &resolved.config.digest,
                resolved.config.size,
                crate::core::oci::MAX_DOCUMENT,
            )?;
            let config: Value = serde_json::from_slice(&cbytes)?;
            let size = resolved
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .sum::<u64>()
                + resolved.config.size.max(0) as u64
                + resolved.manifest.size.max(0) as u64;
            let chain_id =
                berth_proto::vocab::chain::chain_id(&resolved.diff_ids).unwrap_or_default();
            Ok(ImageInfo {
                id: resolved.config.digest.clone(),
                names: vec![name],
                target,
                size,
                config,
                chain_id,
            })
        })
        .await
    }
}
