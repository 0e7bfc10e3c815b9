//! containerd.services.snapshots.v1.Snapshots

use super::{ctx, from_timestamp, labels_in, labels_out, mask_paths, namespace, status, timestamp};
use crate::core::snapshots::Snapshots;
use berth_proto::snapshots::{
    snapshots_server::Snapshots as SnapshotsApi, CleanupRequest, CommitSnapshotRequest,
    Info as PbInfo, Kind as PbKind, ListSnapshotsRequest, ListSnapshotsResponse, MountsRequest,
    MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest,
    StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse,
    UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_snapshotters::{Info, Kind};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Infos per List message.
const LIST_BATCH: usize = 100;

pub struct SnapshotsService {
    pub core: Snapshots,
}

pub mod convert {
    use super::*;
    use berth_proto::types::Mount as PbMount;
    use berth_snapshotters::Mount;

    pub fn mounts_out(v: Vec<Mount>) -> Vec<PbMount> {
        v.into_iter().map(Into::into).collect()
    }

    pub fn info_out(i: Info) -> PbInfo {
        PbInfo {
            kind: match i.kind {
                Kind::View => PbKind::View,
                Kind::Active => PbKind::Active,
                Kind::Committed => PbKind::Committed,
            } as i32,
            parent: i.parent.unwrap_or_default(),
            created_at: timestamp(i.created_at),
            updated_at: timestamp(i.updated_at),
            labels: labels_out(&i.labels),
            name: i.name,
        }
    }

    pub fn info_in(i: PbInfo) -> Info {
        Info {
            kind: match PbKind::try_from(i.kind) {
                Ok(PbKind::View) => Kind::View,
                Ok(PbKind::Committed) => Kind::Committed,
                _ => Kind::Active,
            },
            parent: (!i.parent.is_empty()).then_some(i.parent),
            created_at: from_timestamp(i.created_at.as_ref()),
            updated_at: from_timestamp(i.updated_at.as_ref()),
            labels: labels_in(i.labels),
            name: i.name,
        }
    }
}

#[tonic::async_trait]
impl SnapshotsApi for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        let m = self
            .core
            .prepare(ctx, &r.snapshotter, r.key, r.parent, labels_in(r.labels))
            .await
            .map_err(status)?;
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: convert::mounts_out(m),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        let m = self
            .core
            .view(ctx, &r.snapshotter, r.key, r.parent, labels_in(r.labels))
            .await
            .map_err(status)?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: convert::mounts_out(m),
        }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let m = self
            .core
            .mounts(ns, &r.snapshotter, r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(MountsResponse {
            mounts: convert::mounts_out(m),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        self.core
            .commit(ctx, &r.snapshotter, r.name, r.key, labels_in(r.labels))
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .remove(ns, &r.snapshotter, r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let i = self
            .core
            .stat(ns, &r.snapshotter, r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(convert::info_out(i.0)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let i = self
            .core
            .update(
                ns,
                &r.snapshotter,
                convert::info_in(info),
                mask_paths(r.update_mask),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(convert::info_out(i.0)),
        }))
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let filter = super::filter(&r.filters)?;
        let all = self
            .core
            .list(ns, &r.snapshotter, filter)
            .await
            .map_err(status)?;
        let mut batches = vec![];
        let mut it = all.into_iter().map(convert::info_out).peekable();
        while it.peek().is_some() {
            batches.push(Ok(ListSnapshotsResponse {
                info: it.by_ref().take(LIST_BATCH).collect(),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let u = self
            .core
            .usage(ns, &r.snapshotter, r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        let _ns = namespace(&req)?;
        self.core
            .cleanup(&req.into_inner().snapshotter)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }
}
