//! A [`Snapshotter`] served as a containerd proxy plugin: `containerd.services.snapshots.v1`
//! answered straight from the snapshotter, keyed by the daemon's keys as they come.
//!
//! The daemon calling it keeps the metadata (namespaces, leases, labels' meaning, collection);
//! this side keeps the snapshots. The `containerd-namespace` header is logged, not used: the
//! keys already carry the namespace, and the daemon's collector walks, removes and cleans up
//! without one. The request's `snapshotter` name is the daemon's name for this plugin and is
//! not checked either (containerd's own plugin servers ignore it too).

use crate::core::error::blocking;
use crate::core::snapshots::SnapshotInfo;
use crate::edge::grpc::snapshots::convert::{info_in, info_out, mounts_out};
use crate::edge::grpc::{labels_in, mask_paths, status, NAMESPACE_HEADER};
use berth_proto::snapshots::snapshots_server::{Snapshots as SnapshotsApi, SnapshotsServer};
use berth_proto::snapshots::{
    CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, ListSnapshotsResponse,
    MountsRequest, MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse,
    RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest,
    UpdateSnapshotResponse, UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_proto::types::Mount as PbMount;
use berth_snapshotters::{Error, Kind, Snapshotter};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Infos per List message.
const INFOS_PER_MESSAGE: usize = 100;

/// The Snapshots service over one snapshotter.
#[derive(Clone)]
pub struct PluginService {
    snapshotter: Arc<dyn Snapshotter>,
}

impl PluginService {
    pub fn new(snapshotter: Arc<dyn Snapshotter>) -> Self {
        PluginService { snapshotter }
    }

    /// The tonic service, with containerd's message size limits.
    pub fn into_server(self) -> SnapshotsServer<Self> {
        SnapshotsServer::new(self)
            .max_decoding_message_size(crate::edge::daemon::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::edge::daemon::MAX_MESSAGE_SIZE)
    }

    /// Runs `op` on the snapshotter off the async runtime.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Snapshotter) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Status> {
        let s = self.snapshotter.clone();
        blocking(move || Ok(op(s.as_ref())))
            .await
            .map_err(status)?
            .map_err(plugin_status)
    }
}

impl PluginService {
    /// Prepare (`Kind::Active`) or View: a snapshot on `parent` (none when empty).
    async fn create(
        &self,
        kind: Kind,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<PbMount>, Status> {
        let labels = labels_in(labels);
        let parent = (!parent.is_empty()).then_some(parent);
        let mounts = self
            .run(move |s| match kind {
                Kind::View => s.view(&key, parent.as_deref(), labels),
                _ => s.prepare(&key, parent.as_deref(), labels),
            })
            .await?;
        Ok(mounts_out(mounts))
    }
}

/// A snapshotter's error as the status containerd's proxy client turns back into its kind.
fn plugin_status(e: Error) -> Status {
    let code = match &e {
        Error::NotFound(_) => tonic::Code::NotFound,
        Error::AlreadyExists(_) => tonic::Code::AlreadyExists,
        Error::InvalidArgument(_) => tonic::Code::InvalidArgument,
        Error::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
        Error::Unavailable(_) => tonic::Code::Unavailable,
        Error::Io { .. } => tonic::Code::Internal,
    };
    if code == tonic::Code::Internal {
        tracing::error!(error = %e, "snapshotter failed");
    }
    Status::new(code, e.to_string())
}

/// Notes the caller's namespace in the request's span (it changes nothing here).
fn traced<T>(method: &'static str, req: &Request<T>) {
    let ns = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::debug!(method, namespace = ns, "snapshot request");
}

#[tonic::async_trait]
impl SnapshotsApi for PluginService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        traced("Prepare", &req);
        let r = req.into_inner();
        let mounts = self.create(Kind::Active, r.key, r.parent, r.labels).await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        traced("View", &req);
        let r = req.into_inner();
        let mounts = self.create(Kind::View, r.key, r.parent, r.labels).await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        traced("Mounts", &req);
        let key = req.into_inner().key;
        let mounts = self.run(move |s| s.mounts(&key)).await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts_out(mounts),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        traced("Commit", &req);
        let r = req.into_inner();
        let labels = labels_in(r.labels);
        self.run(move |s| s.commit(&r.name, &r.key, labels)).await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        traced("Remove", &req);
        let key = req.into_inner().key;
        self.run(move |s| s.remove(&key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        traced("Stat", &req);
        let key = req.into_inner().key;
        let info = self.run(move |s| s.stat(&key)).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_out(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        traced("Update", &req);
        let r = req.into_inner();
        let Some(info) = r.info else {
            return Err(Status::invalid_argument("info must be set"));
        };
        let (info, paths) = (info_in(info), mask_paths(r.update_mask));
        let updated = self.run(move |s| s.update(info, &paths)).await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_out(updated)),
        }))
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        traced("List", &req);
        let filter = crate::edge::grpc::filter(&req.get_ref().filters)?;
        let infos = self
            .run(move |s| {
                let mut kept = vec![];
                s.walk(&mut |i| {
                    let candidate = SnapshotInfo(i.clone());
                    if filter.matches(&candidate) {
                        kept.push(info_out(candidate.0));
                    }
                    true
                })?;
                Ok(kept)
            })
            .await?;
        let messages: Vec<_> = infos
            .chunks(INFOS_PER_MESSAGE)
            .map(|part| {
                Ok(ListSnapshotsResponse {
                    info: part.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        traced("Usage", &req);
        let key = req.into_inner().key;
        let u = self.run(move |s| s.usage(&key)).await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        traced("Cleanup", &req);
        self.run(|s| s.cleanup()).await?;
        Ok(Response::new(()))
    }
}
