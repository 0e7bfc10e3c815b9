//! berth.services.build.v1.Build

use super::{ctx, labels_in, status};
use crate::core::build::{BuildRequest, Builder, Progress, PruneOptions};
use berth_proto::berth::services::build::v1::{
    build_server::Build, BuildProgress, BuildRequest as PbBuildRequest, DiskUsageRequest,
    DiskUsageResponse, PruneRequest, PruneResponse,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct BuildService {
    pub core: Builder,
}

fn progress_out(p: Progress) -> BuildProgress {
    BuildProgress {
        step: p.step,
        steps: p.steps,
        instruction: p.instruction,
        done: p.done,
        cached: p.cached,
        duration_ms: p.duration_ms,
        output: p.output,
        image_digest: p.image_digest,
    }
}

#[tonic::async_trait]
impl Build for BuildService {
    type BuildStream = ReceiverStream<Result<BuildProgress, Status>>;

    async fn build(
        &self,
        req: Request<PbBuildRequest>,
    ) -> Result<Response<Self::BuildStream>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        let request = BuildRequest {
            dockerfile: r.dockerfile,
            context: r.context,
            build_args: labels_in(r.build_args),
            tags: r.tags,
            snapshotter: r.snapshotter,
            plain_http: r.plain_http,
            no_cache: r.no_cache,
        };
        let (tx, rx) = mpsc::channel(64);
        let (ptx, mut prx) = mpsc::channel::<Progress>(64);
        let core = self.core.clone();
        tokio::spawn(async move {
            let forward = {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(p) = prx.recv().await {
                        if tx.send(Ok(progress_out(p))).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let result = core.build(ctx, request, ptx).await;
            let _ = forward.await;
            if let Err(e) = result {
                let _ = tx.send(Err(status(e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn disk_usage(
        &self,
        _req: Request<DiskUsageRequest>,
    ) -> Result<Response<DiskUsageResponse>, Status> {
        let usage = self.core.cache_usage().await.map_err(status)?;
        Ok(Response::new(DiskUsageResponse {
            records: usage.records,
            bytes: usage.bytes,
        }))
    }

    async fn prune(&self, req: Request<PruneRequest>) -> Result<Response<PruneResponse>, Status> {
        let r = req.into_inner();
        let opts = PruneOptions {
            all: r.all,
            keep_bytes: (r.keep_bytes > 0).then_some(r.keep_bytes),
            unused_for: (r.unused_for_seconds > 0)
                .then(|| Duration::from_secs(r.unused_for_seconds)),
        };
        let report = self.core.prune(opts).await.map_err(status)?;
        Ok(Response::new(PruneResponse {
            records: report.records,
            bytes: report.bytes,
        }))
    }
}
