//! containerd.services.namespaces.v1.Namespaces

use super::{labels_in, labels_out, mask_paths, status};
use crate::core::context::Namespace;
use crate::core::namespaces::{NamespaceInfo, Namespaces};
use berth_proto::namespaces::{
    namespaces_server::Namespaces as NamespacesApi, CreateNamespaceRequest,
    CreateNamespaceResponse, DeleteNamespaceRequest, GetNamespaceRequest, GetNamespaceResponse,
    ListNamespacesRequest, ListNamespacesResponse, Namespace as PbNamespace,
    UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use tonic::{Request, Response, Status};

pub struct NamespacesService {
    pub core: Namespaces,
}

fn out(n: NamespaceInfo) -> PbNamespace {
    PbNamespace {
        labels: labels_out(&n.labels),
        name: n.name,
    }
}

fn name(s: &str) -> Result<Namespace, Status> {
    Namespace::parse(s).map_err(status)
}

fn body(ns: Option<PbNamespace>) -> Result<PbNamespace, Status> {
    ns.ok_or_else(|| Status::invalid_argument("namespace must be set"))
}

#[tonic::async_trait]
impl NamespacesApi for NamespacesService {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let ns = name(&req.into_inner().name)?;
        let info = self.core.get(ns).await.map_err(status)?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(out(info)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let f = req.into_inner().filter;
        let filter = super::filter(&[f])?;
        let all = self.core.list(filter).await.map_err(status)?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: all.into_iter().map(out).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let pb = body(req.into_inner().namespace)?;
        let ns = name(&pb.name)?;
        let info = self
            .core
            .create(ns, labels_in(pb.labels))
            .await
            .map_err(status)?;
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(out(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let pb = body(req.namespace)?;
        let ns = name(&pb.name)?;
        let info = self
            .core
            .update(ns, labels_in(pb.labels), mask_paths(req.update_mask))
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(out(info)),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let ns = name(&req.into_inner().name)?;
        self.core.delete(ns).await.map_err(status)?;
        Ok(Response::new(()))
    }
}
