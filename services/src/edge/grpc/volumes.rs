//! berth.services.volumes.v1.Volumes

use super::{filter, labels_in, labels_out, namespace, status, timestamp};
use crate::core::volumes::{Seed, VolumeInfo, Volumes};
use berth_proto::berth::services::volumes::v1::{
    volumes_server::Volumes as VolumesApi, CreateVolumeRequest, CreateVolumeResponse,
    GetVolumeRequest, GetVolumeResponse, ListVolumesRequest, ListVolumesResponse,
    PruneVolumesRequest, PruneVolumesResponse, RemoveVolumeRequest, Volume,
};
use tonic::{Request, Response, Status};

pub struct VolumesService {
    pub core: Volumes,
}

fn volume_out(v: VolumeInfo) -> Volume {
    Volume {
        name: v.record.name,
        labels: labels_out(&v.record.labels),
        mountpoint: v.mountpoint.to_string_lossy().into_owned(),
        created_at: timestamp(v.record.created_at),
        anonymous: v.record.anonymous,
        used_by: v.used_by,
        usage: v.usage,
    }
}

#[tonic::async_trait]
impl VolumesApi for VolumesService {
    async fn create(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let seed = (!r.seed_mounts.is_empty()).then(|| Seed {
            mounts: r.seed_mounts.into_iter().map(Into::into).collect(),
            path: r.seed_path,
        });
        let v = self
            .core
            .create(ns, r.name, labels_in(r.labels), seed)
            .await
            .map_err(status)?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume_out(v)),
        }))
    }

    async fn get(
        &self,
        req: Request<GetVolumeRequest>,
    ) -> Result<Response<GetVolumeResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let v = self.core.get(ns, r.name, r.usage).await.map_err(status)?;
        Ok(Response::new(GetVolumeResponse {
            volume: Some(volume_out(v)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let f = filter(&r.filters)?;
        let vs = self.core.list(ns, f, r.usage).await.map_err(status)?;
        Ok(Response::new(ListVolumesResponse {
            volumes: vs.into_iter().map(volume_out).collect(),
        }))
    }

    async fn remove(&self, req: Request<RemoveVolumeRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .remove(ns, r.name, r.force)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn prune(
        &self,
        req: Request<PruneVolumesRequest>,
    ) -> Result<Response<PruneVolumesResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let (removed, reclaimed) = self.core.prune(ns, r.all).await.map_err(status)?;
        Ok(Response::new(PruneVolumesResponse { removed, reclaimed }))
    }
}
