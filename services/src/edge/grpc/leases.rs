//! containerd.services.leases.v1.Leases

use super::{labels_in, labels_out, namespace, status, timestamp};
use crate::core::leases::Leases;
use crate::core::metadata::leases::{LeaseRecord, LeaseResource};
use berth_proto::leases::{
    leases_server::Leases as LeasesApi, AddResourceRequest, CreateRequest, CreateResponse,
    DeleteRequest, DeleteResourceRequest, Lease, ListRequest, ListResourcesRequest,
    ListResourcesResponse, ListResponse, Resource,
};
use tonic::{Request, Response, Status};

pub struct LeasesService {
    pub core: Leases,
}

mod convert {
    use super::*;

    pub fn lease(l: LeaseRecord) -> Lease {
        Lease {
            created_at: timestamp(l.created_at),
            labels: labels_out(&l.labels),
            id: l.id,
        }
    }

    pub fn resource_in(r: Option<Resource>) -> Result<LeaseResource, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("resource must be set"))?;
        Ok(LeaseResource {
            kind: r.r#type,
            id: r.id,
        })
    }

    pub fn resource_out(r: LeaseResource) -> Resource {
        Resource {
            id: r.id,
            r#type: r.kind,
        }
    }
}

#[tonic::async_trait]
impl LeasesApi for LeasesService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let lease = self
            .core
            .create(ns, req.id, labels_in(req.labels))
            .await
            .map_err(status)?;
        Ok(Response::new(CreateResponse {
            lease: Some(convert::lease(lease)),
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .delete_then_collect(ns, r.id, r.sync)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let leases = self.core.list(ns, filter).await.map_err(status)?;
        Ok(Response::new(ListResponse {
            leases: leases.into_iter().map(convert::lease).collect(),
        }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let r = convert::resource_in(req.resource)?;
        self.core
            .add_resource(ns, req.id, r)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let r = convert::resource_in(req.resource)?;
        self.core
            .delete_resource(ns, req.id, r)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = namespace(&req)?;
        let rs = self
            .core
            .resources(ns, req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(ListResourcesResponse {
            resources: rs.into_iter().map(convert::resource_out).collect(),
        }))
    }
}
