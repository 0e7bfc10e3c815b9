//! FROM: the base image the stage starts from.

use super::dockerfile::{self, Instruction};
use super::stage::Stage;
use super::Progress;
use super::{Builder, StepCtx};
use crate::core::error::{blocking, Result};
use crate::core::oci::{Platform, MAX_DOCUMENT};
use crate::core::pull::PullRequest;
use crate::core::registry;
use crate::core::unpack::resolve;
use serde_json::{json, Value};
use std::collections::BTreeMap;

impl Builder {
    /// FROM: the base image's config and layers become the stage, pulled and unpacked if
    /// missing (`scratch`: nothing). Returns whether nothing had to be pulled.
    pub(super) async fn from(
        &self,
        sc: &StepCtx<'_>,
        ins: &Instruction,
        args: &BTreeMap<String, String>,
        stage: &mut Stage,
    ) -> Result<bool> {
        let (ctx, snapshotter) = (sc.ctx, sc.snapshotter);
        let words =
            dockerfile::words(&dockerfile::expand(&ins.rest, args).map_err(|e| ins.error(e))?)?;
        let base = match words.as_slice() {
            [b] => b.clone(),
            [b, as_, _] if as_.eq_ignore_ascii_case("as") => b.clone(),
            _ => return Err(ins.error("give one image (multi-stage builds are not supported)")),
        };
        let platform = Platform::host();
        stage.config =
            json!({"architecture": platform.architecture, "os": platform.os, "config": {}});
        if base == "scratch" {
            return Ok(true);
        }
        let reference = registry::parse_reference(&base).map_err(|e| ins.error(e))?;
        let (name, cached) = self
            .find_or_pull(sc, ins, &base, registry::image_name(&reference))
            .await?;
        let unpacked = self
            .unpacker
            .unpack(ctx.clone(), name.clone(), snapshotter.to_string(), None)
            .await
            .map_err(|e| ins.error(e))?;
        let record = self.images.get(ctx.ns.clone(), name).await?;
        let (content, ns) = (self.content.clone(), ctx.ns.clone());
        let (resolved, config) = blocking(move || {
            let r = resolve(&content, &ns, &record.target, &platform)?;
            let bytes =
                content.read_document_sync(&ns, &r.config.digest, r.config.size, MAX_DOCUMENT)?;
            let config: Value = serde_json::from_slice(&bytes)?;
            Ok((r, config))
        })
        .await?;
        stage.config = config;
        stage.layers = resolved
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size}))
            .collect();
        stage.diff_ids = resolved.diff_ids.clone();
        stage.history = stage.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        stage.chain = unpacked.chain_id;
        Ok(cached)
    }

    /// The local name of the base image (as written, or normalised), pulled and unpacked if
    /// it is missing; whether it was there already.
    async fn find_or_pull(
        &self,
        sc: &StepCtx<'_>,
        ins: &Instruction,
        base: &str,
        normalised: String,
    ) -> Result<(String, bool)> {
        let (ctx, req, snapshotter, progress) = (sc.ctx, sc.req, sc.snapshotter, sc.progress);
        let mut name = normalised;
        let mut found = self.images.get(ctx.ns.clone(), base.to_string()).await;
        if found.is_ok() {
            name = base.to_string();
        } else {
            found = self.images.get(ctx.ns.clone(), name.clone()).await;
        }
        let mut cached = true;
        if found.is_err() {
            let _ = progress
                .send(Progress {
                    output: format!("pulling {name}\n").into_bytes(),
                    ..Default::default()
                })
                .await;
            self.puller
                .pull(
                    ctx.clone(),
                    PullRequest {
                        reference: base.to_string(),
                        unpack: Some(snapshotter.to_string()),
                        access: registry::Access {
                            plain_http: req.plain_http,
                            credentials: None,
                        },
                        ..Default::default()
                    },
                    None,
                )
                .await
                .map_err(|e| ins.error(format!("cannot pull {base}: {e}")))?;
            cached = false;
        }
        Ok((name, cached))
    }
}
