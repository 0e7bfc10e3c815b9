//! containerd.services.mounts.v1.Mounts (containerd 2.2+'s Mount Manager).

use super::{ctx, labels_in, labels_out, mask_paths, namespace, status, timestamp};
use crate::core::mounts::{Activation, ActiveMount, MountManager, MountSpec};
use berth_proto::mounts::{
    mounts_server::Mounts as MountsApi, ActivateRequest, ActivateResponse, DeactivateRequest,
    InfoRequest, InfoResponse, ListMessage, ListRequest, UpdateRequest, UpdateResponse,
};
use berth_proto::types::{ActivationInfo, ActiveMount as PbActive, Mount as PbMount};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct MountsService {
    pub core: MountManager,
}

fn spec_in(m: PbMount) -> MountSpec {
    MountSpec {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

fn spec_out(m: &MountSpec) -> PbMount {
    PbMount {
        r#type: m.kind.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}

fn active_out(a: &ActiveMount) -> PbActive {
    PbActive {
        mount: Some(spec_out(&a.mount)),
        mounted_at: timestamp(a.mounted_at),
        mount_point: a.mount_point.clone(),
        data: labels_out(&a.data),
    }
}

fn info_out(a: &Activation) -> ActivationInfo {
    ActivationInfo {
        name: a.name.clone(),
        active: a.active.iter().map(active_out).collect(),
        system: a.system.iter().map(spec_out).collect(),
        labels: labels_out(&a.labels),
    }
}

#[tonic::async_trait]
impl MountsApi for MountsService {
    async fn activate(
        &self,
        req: Request<ActivateRequest>,
    ) -> Result<Response<ActivateResponse>, Status> {
        let ctx = ctx(&req)?;
        let r = req.into_inner();
        let mounts = r.mounts.into_iter().map(spec_in).collect();
        let done = self
            .core
            .activate(ctx, r.name, mounts, labels_in(r.labels), r.temporary)
            .await
            .map_err(status)?;
        // containerd's answer when no mount is the manager's: the caller mounts them itself.
        let a = done.ok_or_else(|| {
            Status::unimplemented("no mount needs the mount manager: mount them directly")
        })?;
        Ok(Response::new(ActivateResponse {
            info: Some(info_out(&a)),
        }))
    }

    async fn deactivate(&self, req: Request<DeactivateRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.core
            .deactivate(ns, req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = namespace(&req)?;
        let a = self
            .core
            .info(ns, req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(InfoResponse {
            info: Some(info_out(&a)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let a = self
            .core
            .update(
                ns,
                info.name,
                labels_in(info.labels),
                mask_paths(r.update_mask),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_out(&a)),
        }))
    }

    type ListStream = Pin<Box<dyn Stream<Item = Result<ListMessage, Status>> + Send>>;

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let all = self.core.list(ns, filter).await.map_err(status)?;
        let msgs: Vec<_> = all
            .iter()
            .map(|a| {
                Ok(ListMessage {
                    info: Some(info_out(a)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }
}
