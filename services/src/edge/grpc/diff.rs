//! containerd.services.diff.v1.Diff

use super::images::convert::{descriptor_in, descriptor_out};
use super::{ctx, labels_in, namespace, status};
use crate::core::diff::Differ;
use berth_proto::diff::{
    diff_server::Diff as DiffApi, ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use tonic::{Request, Response, Status};

pub struct DiffService {
    pub core: Differ,
}

#[tonic::async_trait]
impl DiffApi for DiffService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor must be set"))?;
        let applied = self
            .core
            .apply(
                ns,
                descriptor_in(desc),
                r.mounts.into_iter().map(Into::into).collect(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(ApplyResponse {
            applied: Some(descriptor_out(&applied)),
        }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        let d = self
            .core
            .diff(
                ctx,
                r.left.into_iter().map(Into::into).collect(),
                r.right.into_iter().map(Into::into).collect(),
                r.media_type,
                r.r#ref,
                labels_in(r.labels),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(DiffResponse {
            diff: Some(descriptor_out(&d)),
        }))
    }
}
