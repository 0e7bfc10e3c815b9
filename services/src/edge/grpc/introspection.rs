//! containerd.services.introspection.v1.Introspection

use crate::core::filters::{Fields, Filter};
use crate::core::plugins::Plugin;
use berth_proto::google::rpc::Status as RpcStatus;
use berth_proto::introspection::{
    introspection_server::Introspection, Plugin as PbPlugin, PluginsRequest, PluginsResponse,
    ServerResponse,
};
use berth_proto::types::Platform;
use tonic::{Request, Response, Status};

pub struct IntrospectionService {
    pub plugins: Vec<Plugin>,
    pub uuid: String,
}

impl Fields for Plugin {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "type" => Some(self.kind.clone()),
            [f] if f == "id" => Some(self.id.clone()),
            [f] if f == "capabilities" => Some(self.capabilities.join(",")),
            [f, k] if f == "exports" => self.exports.get(k).cloned(),
            _ => None,
        }
    }
}

mod convert {
    use super::*;

    pub fn plugin(p: &Plugin) -> PbPlugin {
        PbPlugin {
            r#type: p.kind.clone(),
            id: p.id.clone(),
            requires: p.requires.clone(),
            platforms: vec![Platform {
                os: std::env::consts::OS.to_string(),
                architecture: match std::env::consts::ARCH {
                    "x86_64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                }
                .to_string(),
                variant: String::new(),
            }],
            exports: p
                .exports
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            capabilities: p.capabilities.clone(),
            init_err: p.init_err.as_ref().map(|e| RpcStatus {
                code: tonic::Code::Unknown as i32,
                message: e.clone(),
                details: vec![],
            }),
        }
    }
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter: Filter = super::filter(&req.into_inner().filters)?;
        let plugins = self
            .plugins
            .iter()
            .filter(|p| filter.matches(*p))
            .map(convert::plugin)
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
        }))
    }
}
