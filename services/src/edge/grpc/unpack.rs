//! berth.services.unpack.v1.Unpack

use super::{ctx, status};
use crate::core::oci::Platform;
use crate::core::unpack::Unpacker;
use berth_proto::berth::services::unpack::v1::{
    unpack_server::Unpack, UnpackRequest, UnpackResponse,
};
use tonic::{Request, Response, Status};

/// The largest image config an Unpack answer carries.
const MAX_INLINE_CONFIG: usize = 1 << 20;

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
        let name = self.core.stored_name(&ctx.ns, &r.name);
        let u = self
            .core
            .unpack(ctx, name.clone(), r.snapshotter, platform)
            .await
            .map_err(status)?;
        Ok(Response::new(UnpackResponse {
            chain_id: u.chain_id,
            layers: u.layers as u32,
            extracted: u.extracted as u32,
            // A config too large for a client's default 4 MiB message limit with the rest
            // is left out; the client reads it as content.
            config: if u.config.len() <= MAX_INLINE_CONFIG {
                u.config
            } else {
                Vec::new()
            },
            name,
        }))
    }
}
