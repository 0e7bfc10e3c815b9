//! COPY and ADD: files from the build context as a layer.

use super::dockerfile::{self, Instruction};
use super::layer;
use super::stage::Stage;
use super::{Builder, StepCtx};
use crate::core::diff::{apply_blob, MEDIA_TAR_GZIP};
use crate::core::error::{blocking, Kind, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::Labels;

impl Builder {
    /// COPY and ADD: the files written from the context straight into a layer tar; the
    /// layer's diffID names its snapshot, so an unchanged COPY is a cache hit.
    pub(super) async fn copy_step(
        &self,
        sc: &StepCtx<'_>,
        ins: &Instruction,
        stage: &mut Stage,
    ) -> Result<bool> {
        let (ctx, context, work) = (sc.ctx, sc.context, sc.work);
        let plan = copy_plan(ins, stage)?;
        let tar_path = work.join(format!("copy-{}.tar", ins.line));
        let (ctxdir, tp) = (context.to_path_buf(), tar_path.clone());
        let diff_id = blocking(move || layer::write_copy_layer(&ctxdir, &plan, &tp))
            .await
            .map_err(|e| ins.error(e))?;
        let chain = berth_proto::vocab::chain::chain_next(&stage.chain, &diff_id);
        let (content, c2, tp2, d2) = (
            self.content.clone(),
            ctx.clone(),
            tar_path.clone(),
            diff_id.clone(),
        );
        let blob = blocking(move || layer::store_gzip(&content, &c2, &tp2, &d2)).await?;
        let _ = std::fs::remove_file(&tar_path);
        let desc = Descriptor {
            media_type: MEDIA_TAR_GZIP.into(),
            digest: blob.digest.clone(),
            size: blob.size,
            annotations: Labels::new(),
        };
        let exists = self
            .commit_copy(sc, ins, &stage.chain, &chain, &desc)
            .await?;
        stage.push_layer(&desc, &diff_id, chain);
        stage.history(ins, false);
        Ok(exists)
    }

    /// Makes the copy's layer a snapshot named by its chain, unless one is there already
    /// (a cache hit: returns true).
    async fn commit_copy(
        &self,
        sc: &StepCtx<'_>,
        ins: &Instruction,
        parent: &str,
        chain: &str,
        desc: &Descriptor,
    ) -> Result<bool> {
        let (ctx, snapshotter) = (sc.ctx, sc.snapshotter);
        let exists = self
            .snapshots
            .stat(ctx.ns.clone(), snapshotter, chain.to_string())
            .await
            .is_ok();
        if !exists {
            let key = format!("build-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
            let mounts = self
                .snapshots
                .prepare(
                    ctx.clone(),
                    snapshotter,
                    key.clone(),
                    parent.to_string(),
                    Labels::new(),
                )
                .await?;
            let (content, ns, d) = (self.content.clone(), ctx.ns.clone(), desc.clone());
            let applied = blocking(move || apply_blob(&content, &ns, &d, &mounts)).await;
            let committed = match applied {
                Ok(_) => {
                    self.snapshots
                        .commit(
                            ctx.clone(),
                            snapshotter,
                            chain.to_string(),
                            key.clone(),
                            Labels::new(),
                        )
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let _ = self
                    .snapshots
                    .remove(ctx.ns.clone(), snapshotter, key)
                    .await;
                if e.kind() != Kind::AlreadyExists {
                    return Err(ins.error(e));
                }
            }
        }
        Ok(exists)
    }
}

/// What a COPY or ADD writes: its flags, sources and destination, expanded.
fn copy_plan(ins: &Instruction, stage: &Stage) -> Result<layer::CopyPlan> {
    let vars = stage.env();
    let mut words = match ins.json() {
        Some(w) => w,
        None => dockerfile::words(&ins.rest)?,
    };
    let mut chown: Option<(u32, u32)> = None;
    while words.first().is_some_and(|w| w.starts_with("--")) {
        let flag = words.remove(0);
        match flag.split_once('=') {
            Some(("--chown", v)) => {
                let v = dockerfile::expand(v, &vars).map_err(|e| ins.error(e))?;
                let (u, g) = v.split_once(':').unwrap_or((&v, &v));
                let (u, g) = (u.parse().ok(), g.parse().ok());
                match (u, g) {
                    (Some(u), Some(g)) => chown = Some((u, g)),
                    _ => return Err(ins.error(format!("--chown={v}: give numeric uid:gid"))),
                }
            }
            _ => {
                return Err(ins.error(format!(
                    "flag {flag} is not supported (multi-stage --from is not)"
                )))
            }
        }
    }
    if words.len() < 2 {
        return Err(ins.error("give at least one source and a destination"));
    }
    let dest =
        dockerfile::expand(&words.pop().unwrap_or_default(), &vars).map_err(|e| ins.error(e))?;
    let sources: Vec<String> = words
        .iter()
        .map(|w| dockerfile::expand(w, &vars).map_err(|e| ins.error(e)))
        .collect::<Result<_>>()?;
    let workdir = stage.config["config"]["WorkingDir"]
        .as_str()
        .unwrap_or("/")
        .to_string();
    Ok(layer::CopyPlan {
        sources,
        dest,
        workdir,
        chown,
        extract_archives: ins.cmd == "ADD",
    })
}
