//! `runtime.v1.ImageService`: each call's request converted, the adapter core called, its
//! answer converted back.

use super::*;

/// The pod annotation naming the runtime handler an image is pulled for, as containerd's
/// CRI read it before PullImage's ImageSpec carried the handler.
const RUNTIME_HANDLER_ANNOTATION: &str = "io.containerd.cri.runtime-handler";

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(&self, r: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        let images = self.images(r.into_inner().filter).await?;
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    type StreamImagesStream = Stream<cri::StreamImagesResponse>;
    async fn stream_images(
        &self,
        r: Request<cri::StreamImagesRequest>,
    ) -> R<Self::StreamImagesStream> {
        let images = self.images(r.into_inner().filter).await?;
        Ok(Response::new(chunked(images, |images| {
            cri::StreamImagesResponse { images }
        })))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let r = r.into_inner();
        let spec = r.image.map(|i| i.image).unwrap_or_default();
        let found = self.cri.image_find(&spec).await.map_err(status)?;
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            if let Some(i) = &found {
                info.insert(
                    "info".to_string(),
                    serde_json::json!({"imageSpec": i.config, "chainID": i.chain_id}).to_string(),
                );
            }
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: found.map(|i| i.to_cri()),
            info,
        }))
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let limit = deadline(&r);
        let r = r.into_inner();
        let (spec, handler) = r
            .image
            .map(|i| (i.image, i.runtime_handler))
            .unwrap_or_default();
        if spec.is_empty() {
            return Err(Status::invalid_argument("PullImage needs an image"));
        }
        // Clients from before the field named the handler in the pod's annotations.
        let handler = match (handler.is_empty(), &r.sandbox_config) {
            (true, Some(pod)) => pod
                .annotations
                .get(RUNTIME_HANDLER_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            _ => handler,
        };
        let pull = self.cri.image_pull(&spec, r.auth.as_ref(), &handler);
        let pulled = match limit {
            Some(d) => tokio::time::timeout(d, pull).await.map_err(|_| {
                status(Error::new(
                    Kind::DeadlineExceeded,
                    format!("pulling {spec} took longer than the caller's deadline ({d:?})"),
                ))
            })?,
            None => pull.await,
        }
        .map_err(status)?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: pulled.id,
        }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let spec = r.into_inner().image.map(|i| i.image).unwrap_or_default();
        self.cri.image_remove(&spec).await.map_err(status)?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let measured = self.cri.image_fs_usage().await.map_err(status)?;
        let timestamp = crate::core::metadata::now();
        let image_filesystems: Vec<cri::FilesystemUsage> = measured
            .into_iter()
            .map(|(mountpoint, bytes, inodes)| cri::FilesystemUsage {
                timestamp,
                fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            })
            .collect();
        // The default snapshotter's row, as before handlers had snapshotters of their own.
        let container_filesystems = image_filesystems.iter().take(1).cloned().collect();
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems,
            container_filesystems,
        }))
    }
}

impl CriService {
    async fn images(&self, f: Option<cri::ImageFilter>) -> Result<Vec<cri::Image>, Status> {
        let want = f
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|s| !s.is_empty());
        match want {
            Some(spec) => Ok(self
                .cri
                .image_find(&spec)
                .await
                .map_err(status)?
                .map(|i| vec![i.to_cri()])
                .unwrap_or_default()),
            None => Ok(self
                .cri
                .image_list()
                .await
                .map_err(status)?
                .iter()
                .map(|i| i.to_cri())
                .collect()),
        }
    }
}
