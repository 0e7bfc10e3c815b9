//! containerd.services.containers.v1.Containers

use super::{from_timestamp, labels_in, labels_out, mask_paths, namespace, status, timestamp};
use crate::core::containers::Containers;
use crate::core::metadata::containers::{AnyValue, ContainerRecord, Runtime};
use berth_proto::containers::{
    container::Runtime as PbRuntime, containers_server::Containers as ContainersApi, Container,
    CreateContainerRequest, CreateContainerResponse, DeleteContainerRequest, GetContainerRequest,
    GetContainerResponse, ListContainerMessage, ListContainersRequest, ListContainersResponse,
    UpdateContainerRequest, UpdateContainerResponse,
};
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct ContainersService {
    pub core: Containers,
}

pub mod convert {
    use super::*;

    pub fn any_in(a: prost_types::Any) -> AnyValue {
        AnyValue {
            type_url: a.type_url,
            value: a.value,
        }
    }

    pub fn any_out(a: &AnyValue) -> prost_types::Any {
        prost_types::Any {
            type_url: a.type_url.clone(),
            value: a.value.clone(),
        }
    }

    pub fn container_in(c: Container) -> ContainerRecord {
        let runtime = c.runtime.unwrap_or_default();
        ContainerRecord {
            id: c.id,
            labels: labels_in(c.labels),
            image: c.image,
            runtime: Runtime {
                name: runtime.name,
                options: runtime.options.map(any_in),
            },
            spec: c.spec.map(any_in),
            snapshotter: c.snapshotter,
            snapshot_key: c.snapshot_key,
            created_at: from_timestamp(c.created_at.as_ref()),
            updated_at: from_timestamp(c.updated_at.as_ref()),
            extensions: c
                .extensions
                .into_iter()
                .map(|(k, v)| (k, any_in(v)))
                .collect(),
        }
    }

    pub fn container_out(c: &ContainerRecord) -> Container {
        Container {
            id: c.id.clone(),
            labels: labels_out(&c.labels),
            image: c.image.clone(),
            runtime: Some(PbRuntime {
                name: c.runtime.name.clone(),
                options: c.runtime.options.as_ref().map(any_out),
            }),
            spec: c.spec.as_ref().map(any_out),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            created_at: timestamp(c.created_at),
            updated_at: timestamp(c.updated_at),
            extensions: c
                .extensions
                .iter()
                .map(|(k, v)| (k.clone(), any_out(v)))
                .collect(),
        }
    }
}

fn body(c: Option<Container>) -> Result<Container, Status> {
    c.ok_or_else(|| Status::invalid_argument("container must be set"))
}

#[tonic::async_trait]
impl ContainersApi for ContainersService {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = self
            .core
            .get(ns, req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(GetContainerResponse {
            container: Some(convert::container_out(&c)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let all = self.core.list(ns, filter).await.map_err(status)?;
        Ok(Response::new(ListContainersResponse {
            containers: all.iter().map(convert::container_out).collect(),
        }))
    }

    type ListStreamStream =
        Pin<Box<dyn Stream<Item = Result<ListContainerMessage, Status>> + Send>>;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let all = self.core.list(ns, filter).await.map_err(status)?;
        let msgs: Vec<_> = all
            .iter()
            .map(|c| {
                Ok(ListContainerMessage {
                    container: Some(convert::container_out(c)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = convert::container_in(body(req.into_inner().container)?);
        let c = self.core.create(ns, c).await.map_err(status)?;
        Ok(Response::new(CreateContainerResponse {
            container: Some(convert::container_out(&c)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let c = convert::container_in(body(r.container)?);
        let c = self
            .core
            .update(ns, c, mask_paths(r.update_mask))
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateContainerResponse {
            container: Some(convert::container_out(&c)),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.core
            .delete(ns, req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }
}
