//! containerd.services.version.v1.Version

use berth_proto::version::{version_server::Version, VersionResponse};
use tonic::{Request, Response, Status};

pub struct VersionService {
    pub version: String,
    pub revision: String,
}

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: self.version.clone(),
            revision: self.revision.clone(),
        }))
    }
}
