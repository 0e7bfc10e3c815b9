//! Builds: Dockerfile steps turned into changeset layers by the daemon itself. FROM resolves
//! (or pulls) the base and unpacks it; RUN runs a real container on a snapshot of the current
//! state and diffs it into a layer; COPY and ADD write their files straight into a layer tar;
//! the other instructions only edit the config. A step whose inputs are unchanged reuses its
//! layer: COPY/ADD by their content (the layer's diffID names the snapshot), RUN by a cache
//! record keyed on the parent chain, the instruction and its environment.

pub mod dockerfile;
mod layer;

use crate::containers::Containers;
use crate::content::{Content, Ctx};
use crate::diff::{apply_blob, Differ, MEDIA_TAR_GZIP, UNCOMPRESSED_LABEL};
use crate::error::{blocking, Error, Kind, Result};
use crate::images::{Descriptor, Images};
use crate::metadata::containers::{AnyValue, ContainerRecord, Runtime};
use crate::metadata::images::ImageRecord;
use crate::metadata::Labels;
use crate::oci::{self, Platform, MAX_DOCUMENT};
use crate::pull::{PullRequest, Puller};
use crate::registry;
use crate::runtime::{CreateTask, ProcessRef, Stdio, Tasks};
use crate::snapshots::Snapshots;
use crate::unpack::{resolve, Unpacker};
use dockerfile::Instruction;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;
use tokio::sync::mpsc;

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
}

/// The image being built.
struct Stage {
    config: Value,
    layers: Vec<Value>,
    diff_ids: Vec<String>,
    /// Top snapshot (chain ID); empty for scratch.
    chain: String,
    history: Vec<Value>,
    args: BTreeMap<String, String>,
    /// ARGs declared before FROM: defaults for the same ARG redeclared after it.
    globals: BTreeMap<String, String>,
}

impl Stage {
    fn env(&self) -> BTreeMap<String, String> {
        let mut vars = self.args.clone();
        for e in self.config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some((k, v)) = e.as_str().and_then(|s| s.split_once('=')) {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        vars
    }

    fn history(&mut self, ins: &Instruction, empty: bool) {
        let mut h = json!({"created": now_rfc3339(), "created_by": ins.text()});
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }

    fn push_layer(&mut self, desc: &Descriptor, diff_id: &str, chain: String) {
        self.layers
            .push(json!({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}));
        self.diff_ids.push(diff_id.to_string());
        self.chain = chain;
    }
}

fn now_rfc3339() -> String {
    berth_proto::vocab::time::rfc3339(std::time::SystemTime::now())
}

fn sha256_hex(data: &[u8]) -> String {
    crate::content::digest::Digest::of(data).hex().to_string()
}

impl Builder {
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
        let instructions = dockerfile::parse(&req.dockerfile)?;
        let this = self.clone();
        self.puller
            .with_lease(ctx, move |ctx| async move {
                this.build_leased(ctx, req, instructions, tags, progress)
                    .await
            })
            .await
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
        let result = async {
            let context = work.join("context");
            std::fs::create_dir_all(&context).map_err(|e| Error::io("create the context", e))?;
            if !req.context.is_empty() {
                let (content, ns, digest, dir) = (
                    self.content.clone(),
                    ctx.ns.clone(),
                    req.context.clone(),
                    context.clone(),
                );
                blocking(move || layer::extract_context(&content, &ns, &digest, &dir)).await?;
            }
            let mut stage = Stage {
                config: json!({}),
                layers: vec![],
                diff_ids: vec![],
                chain: String::new(),
                history: vec![],
                args: BTreeMap::new(),
                globals: BTreeMap::new(),
            };
            // ARGs before FROM are visible to FROM only.
            let mut global_args: BTreeMap<String, String> = BTreeMap::new();
            let mut seen_from = false;
            let steps = instructions.len() as u32;
            for (i, ins) in instructions.iter().enumerate() {
                let started = Instant::now();
                let step = i as u32 + 1;
                let _ = progress
                    .send(Progress {
                        step,
                        steps,
                        instruction: ins.text(),
                        ..Default::default()
                    })
                    .await;
                let cached = match ins.cmd.as_str() {
                    "ARG" if !seen_from => {
                        let (k, v) = arg_of(ins, &req.build_args, &global_args)?;
                        global_args.insert(k, v);
                        false
                    }
                    "FROM" => {
                        if seen_from {
                            return Err(
                                ins.error("multi-stage builds are not supported: use one FROM")
                            );
                        }
                        seen_from = true;
                        stage.globals = global_args.clone();
                        self.from(
                            &ctx,
                            &req,
                            &snapshotter,
                            ins,
                            &global_args,
                            &mut stage,
                            &progress,
                        )
                        .await?
                    }
                    "RUN" => {
                        self.run_step(
                            &ctx,
                            &req,
                            &snapshotter,
                            ins,
                            &mut stage,
                            &work,
                            &progress,
                            step,
                        )
                        .await?
                    }
                    "COPY" | "ADD" => {
                        self.copy_step(&ctx, &snapshotter, ins, &mut stage, &context, &work)
                            .await?
                    }
                    _ => {
                        metadata_step(ins, &mut stage, &req.build_args)?;
                        false
                    }
                };
                let _ = progress
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
            self.write_image(&ctx, &stage, &tags).await
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

    #[allow(clippy::too_many_arguments)]
    async fn from(
        &self,
        ctx: &Ctx,
        req: &BuildRequest,
        snapshotter: &str,
        ins: &Instruction,
        args: &BTreeMap<String, String>,
        stage: &mut Stage,
        progress: &mpsc::Sender<Progress>,
    ) -> Result<bool> {
        let words = dockerfile::words(&dockerfile::expand(&ins.rest, args))?;
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
        let mut name = registry::image_name(&reference);
        let mut found = self.images.get(ctx.ns.clone(), base.clone()).await;
        if found.is_ok() {
            name = base.clone();
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
                        reference: base.clone(),
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

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        ctx: &Ctx,
        req: &BuildRequest,
        snapshotter: &str,
        ins: &Instruction,
        stage: &mut Stage,
        work: &std::path::Path,
        progress: &mpsc::Sender<Progress>,
        step: u32,
    ) -> Result<bool> {
        let argv = match ins.json() {
            Some(a) if !a.is_empty() => a,
            _ => vec!["/bin/sh".into(), "-c".into(), ins.rest.clone()],
        };
        let env: Vec<String> = stage
            .env()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let user = stage.config["config"]["User"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let cwd = stage.config["config"]["WorkingDir"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let key = sha256_hex(
            serde_json::to_string(&json!([stage.chain, argv, env, user, cwd]))
                .unwrap_or_default()
                .as_bytes(),
        );
        let cache_file = self.root.join("cache").join(format!("{key}.json"));
        if !req.no_cache {
            if let Some(hit) = self
                .cached(ctx, snapshotter, &cache_file, &stage.chain)
                .await
            {
                let (desc, diff_id) = hit;
                let chain = berth_proto::vocab::chain::chain_next(&stage.chain, &diff_id);
                stage.push_layer(&desc, &diff_id, chain);
                stage.history(ins, false);
                return Ok(true);
            }
        }
        let id = format!("build-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mounts = self
            .snapshots
            .prepare(
                ctx.clone(),
                snapshotter,
                id.clone(),
                stage.chain.clone(),
                Labels::new(),
            )
            .await?;
        let outcome = self
            .run_container(ctx, snapshotter, &id, &mounts, argv, env, &user, &cwd, work)
            .await;
        let (status, output) = match outcome {
            Ok(v) => v,
            Err(e) => {
                let _ = self.snapshots.remove(ctx.ns.clone(), snapshotter, id).await;
                return Err(ins.error(e));
            }
        };
        if !output.is_empty() {
            let _ = progress
                .send(Progress {
                    step,
                    output: output.clone(),
                    ..Default::default()
                })
                .await;
        }
        if status != 0 {
            let _ = self.snapshots.remove(ctx.ns.clone(), snapshotter, id).await;
            return Err(ins.error(format!(
                "the command exited with status {status}; its output:\n{}",
                String::from_utf8_lossy(&output)
            )));
        }
        let committed = self
            .commit_changes(ctx, snapshotter, &id, &stage.chain)
            .await;
        let (desc, diff_id, chain) = match committed {
            Ok(v) => v,
            Err(e) => {
                let _ = self.snapshots.remove(ctx.ns.clone(), snapshotter, id).await;
                return Err(ins.error(e));
            }
        };
        let record = json!({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size, "diff_id": diff_id});
        let _ = std::fs::create_dir_all(self.root.join("cache"));
        let tmp = cache_file.with_extension("tmp");
        if std::fs::write(&tmp, record.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &cache_file);
        }
        stage.push_layer(&desc, &diff_id, chain);
        stage.history(ins, false);
        Ok(false)
    }

    /// A cached RUN result whose layer and snapshot both still exist.
    async fn cached(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        file: &std::path::Path,
        parent: &str,
    ) -> Option<(Descriptor, String)> {
        let rec: Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
        let desc = Descriptor {
            media_type: rec["mediaType"].as_str()?.to_string(),
            digest: rec["digest"].as_str()?.to_string(),
            size: rec["size"].as_i64()?,
            annotations: Labels::new(),
        };
        let diff_id = rec["diff_id"].as_str()?.to_string();
        self.content
            .info(ctx.ns.clone(), desc.digest.clone())
            .await
            .ok()?;
        self.snapshots
            .stat(
                ctx.ns.clone(),
                snapshotter,
                berth_proto::vocab::chain::chain_next(parent, &diff_id),
            )
            .await
            .ok()?;
        Some((desc, diff_id))
    }

    /// Runs `argv` in a container on the prepared snapshot `id`; returns its exit status
    /// and output (stdout and stderr together).
    #[allow(clippy::too_many_arguments)]
    async fn run_container(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        id: &str,
        mounts: &[berth_snapshotters::Mount],
        argv: Vec<String>,
        env: Vec<String>,
        user: &str,
        cwd: &str,
        work: &std::path::Path,
    ) -> Result<(u32, Vec<u8>)> {
        let (uid, gid, extra) = if user.is_empty() {
            (0, 0, vec![0])
        } else {
            let (m, u) = (mounts.to_vec(), user.to_string());
            blocking(move || {
                let mounted = berth_snapshotters::mount::TempMount::new(&m)?;
                crate::spec::resolve_user(mounted.path(), &u)
            })
            .await?
        };
        let opts = crate::spec::Options {
            id: id.to_string(),
            namespace: ctx.ns.to_string(),
            args: argv,
            env,
            cwd: (!cwd.is_empty()).then(|| cwd.to_string()),
            uid,
            gid,
            additional_gids: extra,
            host_network: true,
            ..Default::default()
        };
        let spec = crate::spec::build(&json!({"config": {}}), &opts);
        let record = ContainerRecord {
            id: id.to_string(),
            runtime: Runtime {
                name: "io.containerd.berth.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: crate::spec::SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&spec)?,
            }),
            snapshotter: snapshotter.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        self.containers.create(ctx.ns.clone(), record).await?;
        let log = work.join(format!("{id}.log"));
        let uri = format!("file://{}", log.display());
        let ran = async {
            self.tasks
                .create(
                    ctx.ns.clone(),
                    CreateTask {
                        container_id: id.to_string(),
                        rootfs: mounts.to_vec(),
                        io: Stdio {
                            stdout: uri.clone(),
                            stderr: uri,
                            ..Default::default()
                        },
                        options: None,
                    },
                )
                .await?;
            let waited = async {
                let init = ProcessRef {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                };
                self.tasks.start(ctx.ns.clone(), init.clone()).await?;
                self.tasks.wait(ctx.ns.clone(), init).await
            }
            .await;
            let deleted = self.tasks.delete(ctx.ns.clone(), id.to_string()).await;
            let status = waited?.exit_status;
            deleted?;
            Ok::<u32, Error>(status)
        }
        .await;
        let _ = self.containers.delete(ctx.ns.clone(), id.to_string()).await;
        let status = ran?;
        let output = std::fs::read(&log).unwrap_or_default();
        Ok((status, output))
    }

    /// Diffs the snapshot `key` against `parent` into a gzip layer and commits the snapshot
    /// under its chain ID.
    async fn commit_changes(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        key: &str,
        parent: &str,
    ) -> Result<(Descriptor, String, String)> {
        let upper = self
            .snapshots
            .mounts(ctx.ns.clone(), snapshotter, key.to_string())
            .await?;
        let view = format!("{key}-parent");
        let lower = if parent.is_empty() {
            vec![]
        } else {
            self.snapshots
                .view(
                    ctx.clone(),
                    snapshotter,
                    view.clone(),
                    parent.to_string(),
                    Labels::new(),
                )
                .await?
        };
        let diffed = self
            .differ
            .diff(
                ctx.clone(),
                lower,
                upper,
                MEDIA_TAR_GZIP.into(),
                format!("build-{key}"),
                Labels::new(),
            )
            .await;
        if !parent.is_empty() {
            let _ = self
                .snapshots
                .remove(ctx.ns.clone(), snapshotter, view)
                .await;
        }
        let desc = diffed?;
        let diff_id = self
            .content
            .info(ctx.ns.clone(), desc.digest.clone())
            .await?
            .labels
            .get(UNCOMPRESSED_LABEL)
            .cloned()
            .ok_or_else(|| Error::new(Kind::Internal, "the new layer has no diffID label"))?;
        let chain = berth_proto::vocab::chain::chain_next(parent, &diff_id);
        match self
            .snapshots
            .commit(
                ctx.clone(),
                snapshotter,
                chain.clone(),
                key.to_string(),
                Labels::new(),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::AlreadyExists => {
                let _ = self
                    .snapshots
                    .remove(ctx.ns.clone(), snapshotter, key.to_string())
                    .await;
            }
            Err(e) => return Err(e),
        }
        Ok((desc, diff_id, chain))
    }

    async fn copy_step(
        &self,
        ctx: &Ctx,
        snapshotter: &str,
        ins: &Instruction,
        stage: &mut Stage,
        context: &std::path::Path,
        work: &std::path::Path,
    ) -> Result<bool> {
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
                    let v = dockerfile::expand(v, &vars);
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
        let dest = dockerfile::expand(&words.pop().unwrap_or_default(), &vars);
        let sources: Vec<String> = words.iter().map(|w| dockerfile::expand(w, &vars)).collect();
        let workdir = stage.config["config"]["WorkingDir"]
            .as_str()
            .unwrap_or("/")
            .to_string();
        let plan = layer::CopyPlan {
            sources,
            dest,
            workdir,
            chown,
            extract_archives: ins.cmd == "ADD",
        };
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
            .snapshots
            .stat(ctx.ns.clone(), snapshotter, chain.clone())
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
                    stage.chain.clone(),
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
                            chain.clone(),
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
        stage.push_layer(&desc, &diff_id, chain);
        stage.history(ins, false);
        Ok(exists)
    }

    async fn write_image(&self, ctx: &Ctx, stage: &Stage, tags: &[String]) -> Result<String> {
        let mut config = stage.config.clone();
        config["rootfs"] = json!({"type": "layers", "diff_ids": stage.diff_ids});
        // An image identical but for its timestamps was built before: that one is the result,
        // so a rebuild with nothing changed creates nothing.
        let mut timeless = config.clone();
        timeless["history"] = json!(stage
            .history
            .iter()
            .map(|h| json!([h["created_by"], h["empty_layer"]]))
            .collect::<Vec<_>>());
        timeless["layers"] = json!(stage.layers);
        let image_key = sha256_hex(timeless.to_string().as_bytes());
        let image_file = self.root.join("images").join(format!("{image_key}.json"));
        if let Some(target) = self.reusable(ctx, &image_file).await {
            self.tag(ctx, &target, tags).await?;
            return Ok(target.digest);
        }
        config["history"] = json!(stage.history);
        config["created"] = json!(now_rfc3339());
        let config_bytes = serde_json::to_vec(&config)?;
        let config_digest = format!("sha256:{}", sha256_hex(&config_bytes));
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
            for (bytes, digest, labels) in [(cb, cd, Labels::new()), (mb, md, gc)] {
                if content.has_blob_sync(&c2.ns, &digest)? {
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
        let _ = std::fs::create_dir_all(self.root.join("images"));
        let tmp = image_file.with_extension("tmp");
        let rec = json!({"digest": target.digest, "size": target.size});
        if std::fs::write(&tmp, rec.to_string()).is_ok() {
            let _ = std::fs::rename(&tmp, &image_file);
        }
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

fn arg_of(
    ins: &Instruction,
    given: &BTreeMap<String, String>,
    known: &BTreeMap<String, String>,
) -> Result<(String, String)> {
    let text = dockerfile::expand(&ins.rest, known);
    let (name, default) = match text.split_once('=') {
        Some((n, d)) => (n.trim().to_string(), dockerfile::words(d)?.join(" ")),
        None => (text.trim().to_string(), String::new()),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ins.error("give NAME or NAME=default"));
    }
    let value = given.get(&name).cloned().unwrap_or(default);
    Ok((name, value))
}

/// Instructions that only change the config.
fn metadata_step(
    ins: &Instruction,
    stage: &mut Stage,
    build_args: &BTreeMap<String, String>,
) -> Result<()> {
    let vars = stage.env();
    if !stage.config["config"].is_object() {
        stage.config["config"] = json!({});
    }
    let expanded = dockerfile::expand(&ins.rest, &vars);
    let cfg = &mut stage.config["config"];
    let command = |ins: &Instruction| match ins.json() {
        Some(a) => json!(a),
        None => json!(["/bin/sh", "-c", ins.rest]),
    };
    match ins.cmd.as_str() {
        "ARG" => {
            let (k, mut v) = arg_of(ins, build_args, &vars)?;
            if v.is_empty() && !ins.rest.contains('=') {
                v = stage.globals.get(&k).cloned().unwrap_or_default();
            }
            stage.args.insert(k, v);
        }
        "ENV" => {
            let mut env: Vec<Value> = cfg["Env"].as_array().cloned().unwrap_or_default();
            for (k, v) in dockerfile::pairs(&ins.rest)? {
                let v = dockerfile::expand(&v, &vars);
                env.retain(|e| {
                    e.as_str().and_then(|s| s.split_once('=')).map(|(ek, _)| ek) != Some(k.as_str())
                });
                env.push(json!(format!("{k}={v}")));
            }
            cfg["Env"] = json!(env);
        }
        "WORKDIR" => {
            let current = cfg["WorkingDir"].as_str().unwrap_or("/").to_string();
            let next = if expanded.starts_with('/') {
                expanded
            } else {
                format!("{}/{expanded}", current.trim_end_matches('/'))
            };
            cfg["WorkingDir"] = json!(next);
        }
        "USER" => cfg["User"] = json!(expanded.trim()),
        "STOPSIGNAL" => cfg["StopSignal"] = json!(expanded.trim()),
        "CMD" => cfg["Cmd"] = command(ins),
        "ENTRYPOINT" => cfg["Entrypoint"] = command(ins),
        "LABEL" => {
            if !cfg["Labels"].is_object() {
                cfg["Labels"] = json!({});
            }
            for (k, v) in dockerfile::pairs(&expanded)? {
                cfg["Labels"][k] = json!(v);
            }
        }
        "EXPOSE" => {
            if !cfg["ExposedPorts"].is_object() {
                cfg["ExposedPorts"] = json!({});
            }
            for p in expanded.split_whitespace() {
                let port = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                cfg["ExposedPorts"][port] = json!({});
            }
        }
        "VOLUME" => {
            if !cfg["Volumes"].is_object() {
                cfg["Volumes"] = json!({});
            }
            let paths = match ins.json() {
                Some(a) => a,
                None => expanded.split_whitespace().map(str::to_string).collect(),
            };
            for p in paths {
                if !p.starts_with('/') {
                    return Err(ins.error(format!("{p:?} must be an absolute path")));
                }
                cfg["Volumes"][p] = json!({});
            }
        }
        other => return Err(ins.error(format!("{other} is not handled here"))),
    }
    stage.history(ins, true);
    Ok(())
}
