//! RUN: a real container on a snapshot of the stage, its changes diffed into a layer, with a
//! cache of earlier results.

use super::dockerfile::Instruction;
use super::stage::sha256_hex;
use super::stage::Stage;
use super::Progress;
use super::{Builder, StepCtx};
use crate::core::context::Ctx;
use crate::core::diff::{MEDIA_TAR_GZIP, UNCOMPRESSED_LABEL};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::images::Descriptor;
use crate::core::metadata::containers::{AnyValue, ContainerRecord, Runtime};
use crate::core::metadata::Labels;
use crate::core::runtime::{CreateTask, ProcessRef, Stdio};
use serde_json::{json, Value};

/// The process a RUN step runs.
struct RunSpec {
    argv: Vec<String>,
    env: Vec<String>,
    user: String,
    cwd: String,
}

impl RunSpec {
    /// The process of a RUN instruction, in the stage's environment, user and directory.
    fn of(ins: &Instruction, stage: &Stage) -> RunSpec {
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
        RunSpec {
            argv,
            env,
            user,
            cwd,
        }
    }

    /// The RUN cache key: the parent chain and everything that shapes the process.
    fn cache_key(&self, parent: &str) -> String {
        let RunSpec {
            argv,
            env,
            user,
            cwd,
        } = self;
        sha256_hex(
            serde_json::to_string(&json!([parent, argv, env, user, cwd]))
                .unwrap_or_default()
                .as_bytes(),
        )
    }
}

/// Records a RUN's result in the cache (best effort: a lost record is only a cache miss).
fn remember(cache_file: &std::path::Path, desc: &Descriptor, diff_id: &str) {
    let record = json!({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size, "diff_id": diff_id});
    super::usage::keep_record(cache_file, &record);
}

/// The uid, gid and extra groups `user` names in the rootfs (root when it is empty).
async fn resolve_user(
    mounts: &[berth_snapshotters::Mount],
    user: &str,
) -> Result<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, vec![0]));
    }
    let (m, u) = (mounts.to_vec(), user.to_string());
    blocking(move || crate::core::spec::resolve_user_in_mounts(&m, &u)).await
}

impl Builder {
    /// RUN: a container on a snapshot of the stage, its changes diffed into a layer; a
    /// cache hit (same parent chain, command, env, user, cwd) reuses the layer.
    pub(super) async fn run_step(
        &self,
        sc: &StepCtx<'_>,
        ins: &Instruction,
        stage: &mut Stage,
        step: u32,
    ) -> Result<bool> {
        let (ctx, req, snapshotter, progress) = (sc.ctx, sc.req, sc.snapshotter, sc.progress);
        let spec = RunSpec::of(ins, stage);
        let key = spec.cache_key(&stage.chain);
        let cache_file = self.root.join("cache").join(format!("{key}.json"));
        if !req.no_cache {
            sc.holds.hold(&cache_file);
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
        let outcome = self.run_container(sc, &id, &mounts, spec).await;
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
        sc.holds.hold(&cache_file);
        remember(&cache_file, &desc, &diff_id);
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
        super::usage::touch(file);
        Some((desc, diff_id))
    }

    /// Runs `argv` in a container on the prepared snapshot `id`; returns its exit status
    /// and output (stdout and stderr together).
    async fn run_container(
        &self,
        sc: &StepCtx<'_>,
        id: &str,
        mounts: &[berth_snapshotters::Mount],
        spec: RunSpec,
    ) -> Result<(u32, Vec<u8>)> {
        let (ctx, snapshotter, work) = (sc.ctx, sc.snapshotter, sc.work);
        let RunSpec {
            argv,
            env,
            user,
            cwd,
        } = spec;
        let (uid, gid, extra) = resolve_user(mounts, &user).await?;
        let opts = crate::core::spec::Options {
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
        let spec = crate::core::spec::build(&json!({"config": {}}), &opts);
        let record = ContainerRecord {
            id: id.to_string(),
            runtime: Runtime {
                name: "io.containerd.berth.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&spec)?,
            }),
            snapshotter: snapshotter.to_string(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        self.containers.create(ctx.ns.clone(), record).await?;
        let log = work.join(format!("{id}.log"));
        let uri = format!("file://{}", log.display());
        let ran = self.run_task(ctx, id, mounts, uri).await;
        let _ = self.containers.delete(ctx.ns.clone(), id.to_string()).await;
        let status = ran?;
        let output = std::fs::read(&log).unwrap_or_default();
        Ok((status, output))
    }

    /// Creates, starts and waits for the container's task, then deletes it; its exit status.
    async fn run_task(
        &self,
        ctx: &Ctx,
        id: &str,
        mounts: &[berth_snapshotters::Mount],
        uri: String,
    ) -> Result<u32> {
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
        Ok(status)
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
}
