//! berth.services.unpack.v1.Unpack

use super::{ctx, status};
use crate::error::Kind;
use crate::oci::Platform;
use crate::unpack::Unpacker;
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
        let (name, u) = match self
            .core
            .unpack(
                ctx.clone(),
                r.name.clone(),
                r.snapshotter.clone(),
                platform.clone(),
            )
            .await
        {
            Err(e) if e.kind() == Kind::NotFound => {
                // No image has the name as given: docker's short form made whole, as
                // `berth images pull busybox` stores it.
                let Some(full) = crate::reference::parse(&r.name)
                    .ok()
                    .map(|f| f.whole())
                    .filter(|f| *f != r.name)
                else {
                    return Err(status(e));
                };
                match self
                    .core
                    .unpack(ctx, full.clone(), r.snapshotter, platform)
                    .await
                {
                    Ok(u) => (full, u),
                    Err(e2) if e2.kind() == Kind::NotFound => return Err(status(e)),
                    Err(e2) => return Err(status(e2)),
                }
            }
            Err(e) => return Err(status(e)),
            Ok(u) => (r.name, u),
        };
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
