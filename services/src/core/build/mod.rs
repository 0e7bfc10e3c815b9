//! Builds: Dockerfile steps turned into changeset layers by the daemon itself. FROM resolves
//! (or pulls) the base and unpacks it; RUN runs a real container on a snapshot of the current
//! state and diffs it into a layer; COPY and ADD write their files straight into a layer tar;
//! the other instructions only edit the config. A step whose inputs are unchanged reuses its
//! layer: COPY/ADD by their content (the layer's diffID names the snapshot), RUN by a cache
//! record keyed on the parent chain, the instruction and its environment.

mod config;
mod copy;
pub mod dockerfile;
mod from;
mod image;
mod layer;
mod prune;
mod run;
mod stage;
mod usage;

use crate::core::containers::Containers;
use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::diff::Differ;
use crate::core::error::{blocking, Error, Result};
use crate::core::images::Images;
use crate::core::pull::Puller;
use crate::core::registry;
use crate::core::runtime::Tasks;
use crate::core::snapshots::Snapshots;
use crate::core::unpack::Unpacker;
use config::{arg_of, metadata_step};
use dockerfile::Instruction;
pub use prune::{CachePolicy, CacheState, PruneOptions, PruneReport, DEFAULT_MAX_BYTES};
use stage::Stage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::mpsc;
pub use usage::CacheUsage;

/// One report to the client.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub step: u32,
    pub steps: u32,
    pub instruction: String,
    pub done: bool,
    pub cached: bool,
    pub duration_ms: u64,
    pub output: Vec<u8>,
    pub image_digest: String,
}

#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub dockerfile: String,
    pub context: String,
    pub build_args: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub snapshotter: String,
    pub plain_http: bool,
    pub no_cache: bool,
}

#[derive(Clone)]
pub struct Builder {
    pub content: Content,
    pub images: Images,
    pub snapshots: Snapshots,
    pub unpacker: Unpacker,
    pub puller: Puller,
    pub differ: Differ,
    pub containers: Containers,
    pub tasks: Tasks,
    /// `<root>/io.berth.build.v1`: the RUN cache records.
    pub root: PathBuf,
    /// `<state>/io.berth.build.v1`: contexts and step logs while a build runs.
    pub state: PathBuf,
    /// The cache's policy and the records running builds hold.
    pub cache: CacheState,
}

/// What every step of one build shares.
pub(super) struct StepCtx<'a> {
    pub ctx: &'a Ctx,
    pub req: &'a BuildRequest,
    pub snapshotter: &'a str,
    /// The build's private directory (step logs, layer tars).
    pub work: &'a Path,
    /// The extracted build context.
    pub context: &'a Path,
    pub progress: &'a mpsc::Sender<Progress>,
    /// The cache records this build has read or written: no prune takes them meanwhile.
    holds: &'a prune::BuildHolds,
}

impl Builder {
    /// Removes the work directories of builds a previous daemon was killed in (contexts,
    /// layer tars, logs: nothing a later build reads). Called at start, before any build.
    pub fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.state) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("build-") {
                tracing::info!(dir = %e.path().display(), "removing an interrupted build's work");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    pub async fn build(
        &self,
        ctx: Ctx,
        req: BuildRequest,
        progress: mpsc::Sender<Progress>,
    ) -> Result<String> {
        if req.tags.is_empty() {
            return Err(Error::invalid(
                "a build needs at least one tag (-t NAME[:TAG])",
            ));
        }
        let tags = req
            .tags
            .iter()
            .map(|t| registry::parse_reference(t).map(|r| registry::image_name(&r)))
            .collect::<Result<Vec<_>>>()?;
        // Parsing is CPU work on client input: off the executor's threads.
        let text = req.dockerfile.clone();
        let instructions = blocking(move || dockerfile::parse(&text)).await?;
        let this = self.clone();
        let built = self
            .puller
            .with_lease(ctx, move |ctx| async move {
                this.build_leased(ctx, req, instructions, tags, progress)
                    .await
            })
            .await;
        // Its records released, this build's new ones count against the bound like any.
        self.enforce_cache_policy().await;
        built
    }

    async fn build_leased(
        &self,
        ctx: Ctx,
        req: BuildRequest,
        instructions: Vec<Instruction>,
        tags: Vec<String>,
        progress: mpsc::Sender<Progress>,
    ) -> Result<String> {
        let snapshotter = if req.snapshotter.is_empty() {
            "overlayfs".to_string()
        } else {
            req.snapshotter.clone()
        };
        let work = self
            .state
            .join(format!("build-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&work).map_err(|e| Error::io("create the build directory", e))?;
        let holds = prune::BuildHolds::new(&self.cache);
        let result = async {
            let context = work.join("context");
            let sc = StepCtx {
                ctx: &ctx,
                req: &req,
                snapshotter: &snapshotter,
                work: &work,
                context: &context,
                progress: &progress,
                holds: &holds,
            };
            self.extract_context(&sc).await?;
            let stage = self.run_steps(&sc, &instructions).await?;
            self.write_image(&sc, &stage, &tags).await
        }
        .await;
        let _ = std::fs::remove_dir_all(&work);
        let digest = result?;
        let _ = progress
            .send(Progress {
                image_digest: digest.clone(),
                done: true,
                ..Default::default()
            })
            .await;
        Ok(digest)
    }

    /// Unpacks the build context the client uploaded (if any) into the context directory.
    async fn extract_context(&self, sc: &StepCtx<'_>) -> Result<()> {
        std::fs::create_dir_all(sc.context).map_err(|e| Error::io("create the context", e))?;
        if !sc.req.context.is_empty() {
            let (content, ns, digest, dir) = (
                self.content.clone(),
                sc.ctx.ns.clone(),
                sc.req.context.clone(),
                sc.context.to_path_buf(),
            );
            blocking(move || layer::extract_context(&content, &ns, &digest, &dir)).await?;
        }
        Ok(())
    }

    /// Runs every instruction in order, reporting each step's start and end; the stage
    /// the last one leaves.
    async fn run_steps(&self, sc: &StepCtx<'_>, instructions: &[Instruction]) -> Result<Stage> {
        let mut stage = Stage::new();
        let mut preamble = Preamble::default();
        let steps = instructions.len() as u32;
        for (i, ins) in instructions.iter().enumerate() {
            let started = Instant::now();
            let step = i as u32 + 1;
            let _ = sc
                .progress
                .send(Progress {
                    step,
                    steps,
                    instruction: ins.text(),
                    ..Default::default()
                })
                .await;
            let cached = self.step(sc, ins, step, &mut stage, &mut preamble).await?;
            stage.check_size().map_err(|e| ins.error(e))?;
            let _ = sc
                .progress
                .send(Progress {
                    step,
                    steps,
                    instruction: ins.text(),
                    done: true,
                    cached,
                    duration_ms: started.elapsed().as_millis() as u64,
                    ..Default::default()
                })
                .await;
        }
        Ok(stage)
    }

    /// One instruction applied to the stage; whether it was a cache hit.
    async fn step(
        &self,
        sc: &StepCtx<'_>,
        ins: &Instruction,
        step: u32,
        stage: &mut Stage,
        preamble: &mut Preamble,
    ) -> Result<bool> {
        let req = sc.req;
        Ok(match ins.cmd.as_str() {
            "ARG" if !preamble.seen_from => {
                let (k, v) = arg_of(ins, &req.build_args, &preamble.args)?;
                preamble.args.insert(k, v);
                false
            }
            "FROM" => {
                if preamble.seen_from {
                    return Err(ins.error("multi-stage builds are not supported: use one FROM"));
                }
                preamble.seen_from = true;
                stage.globals = preamble.args.clone();
                self.from(sc, ins, &preamble.args, stage).await?
            }
            "RUN" => self.run_step(sc, ins, stage, step).await?,
            "COPY" | "ADD" => self.copy_step(sc, ins, stage).await?,
            _ => {
                // Substitution is CPU work on client input: off the executor too.
                let (i, args) = (ins.clone(), req.build_args.clone());
                let mut moved = std::mem::replace(stage, Stage::new());
                *stage = blocking(move || {
                    metadata_step(&i, &mut moved, &args)?;
                    Ok(moved)
                })
                .await?;
                false
            }
        })
    }
}

/// What the instructions before FROM leave for it.
#[derive(Default)]
struct Preamble {
    /// ARGs before FROM are visible to FROM only.
    args: BTreeMap<String, String>,
    seen_from: bool,
}
