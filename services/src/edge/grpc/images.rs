//! containerd.services.images.v1.Images

use super::{labels_in, labels_out, mask_paths, namespace, status};
use crate::core::images::{Descriptor, Images};
use crate::core::metadata::images::ImageRecord;
use berth_proto::images::{
    images_server::Images as ImagesApi, CreateImageRequest, CreateImageResponse,
    DeleteImageRequest, GetImageRequest, GetImageResponse, Image, ListImagesRequest,
    ListImagesResponse, UpdateImageRequest, UpdateImageResponse,
};
use berth_proto::types::Descriptor as PbDescriptor;
use tonic::{Request, Response, Status};

pub struct ImagesService {
    pub core: Images,
}

pub mod convert {
    use super::*;

    pub fn descriptor_in(d: PbDescriptor) -> Descriptor {
        Descriptor {
            media_type: d.media_type,
            digest: d.digest,
            size: d.size,
            annotations: labels_in(d.annotations),
        }
    }

    pub fn descriptor_out(d: &Descriptor) -> PbDescriptor {
        PbDescriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: labels_out(&d.annotations),
        }
    }

    pub fn image_in(i: Image) -> ImageRecord {
        ImageRecord {
            name: i.name,
            labels: labels_in(i.labels),
            target: i.target.map(descriptor_in).unwrap_or_default(),
            created_at: super::super::from_timestamp(i.created_at.as_ref()),
            updated_at: super::super::from_timestamp(i.updated_at.as_ref()),
        }
    }

    pub fn image_out(i: ImageRecord) -> Image {
        Image {
            labels: labels_out(&i.labels),
            target: Some(descriptor_out(&i.target)),
            created_at: super::super::timestamp(i.created_at),
            updated_at: super::super::timestamp(i.updated_at),
            name: i.name,
        }
    }
}

fn body(i: Option<Image>) -> Result<Image, Status> {
    i.ok_or_else(|| Status::invalid_argument("image must be set"))
}

#[tonic::async_trait]
impl ImagesApi for ImagesService {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let img = self
            .core
            .get(ns, req.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(GetImageResponse {
            image: Some(convert::image_out(img)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let all = self.core.list(ns, filter).await.map_err(status)?;
        Ok(Response::new(ListImagesResponse {
            images: all.into_iter().map(convert::image_out).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let img = convert::image_in(body(req.into_inner().image)?);
        let img = self.core.create(ns, img).await.map_err(status)?;
        Ok(Response::new(CreateImageResponse {
            image: Some(convert::image_out(img)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let img = convert::image_in(body(req.image)?);
        let img = self
            .core
            .update(ns, img, mask_paths(req.update_mask))
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateImageResponse {
            image: Some(convert::image_out(img)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .delete_then_collect(ns, r.name, r.sync)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }
}
