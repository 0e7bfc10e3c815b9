//! berth.services.unpack.v1.Unpack

use super::{ctx, status};
use crate::oci::Platform;
use crate::unpack::Unpacker;
use berth_proto::berth::services::unpack::v1::{
    unpack_server::Unpack, UnpackRequest, UnpackResponse,
};
use tonic::{Request, Response, Status};

pub struct UnpackService {
    pub core: Unpacker,
}

#[tonic::async_trait]
impl Unpack for UnpackService {
    async fn unpack(
        &self,
        req: Request<UnpackRequest>,
    ) -> Result<Response<UnpackResponse>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("image name must be set"));
        }
        let platform = if r.platform.is_empty() {
            None
        } else {
            Some(Platform::parse(&r.platform).map_err(status)?)
        };
        let u = self
            .core
            .unpack(ctx, r.name, r.snapshotter, platform)
            .await
            .map_err(status)?;
        Ok(Response::new(UnpackResponse {
            chain_id: u.chain_id,
            layers: u.layers as u32,
            extracted: u.extracted as u32,
        }))
    }
}
