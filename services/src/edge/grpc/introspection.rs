//! containerd.services.introspection.v1.Introspection

use crate::core::filters::{Fields, Filter};
use crate::core::plugins::{runtime_info, Plugin};
use berth_proto::google::rpc::Status as RpcStatus;
use berth_proto::introspection::{
    introspection_server::Introspection, Plugin as PbPlugin, PluginInfoRequest, PluginInfoResponse,
    PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_proto::types::{Platform, RuntimeInfo, RuntimeRequest};
use prost::{Message, Name};
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

    /// An `Any` holding a `T`, under the type URL containerd's typeurl gives it (the bare
    /// full name); the `type.googleapis.com/` form is read too.
    pub fn from_any<T: Message + Name + Default>(any: &prost_types::Any) -> Result<T, Status> {
        let url = any.type_url.as_str();
        let name = url.strip_prefix("type.googleapis.com/").unwrap_or(url);
        if name != T::full_name() {
            return Err(Status::invalid_argument(format!(
                "options of type {url:?}: this plugin reads {}",
                T::full_name()
            )));
        }
        T::decode(any.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("options: bad {}: {e}", T::full_name())))
    }

    pub fn to_any<T: Message + Name>(m: &T) -> prost_types::Any {
        prost_types::Any {
            type_url: T::full_name(),
            value: m.encode_to_vec(),
        }
    }
}

/// The PID namespace berthd runs in: the inode /proc/self/ns/pid links to.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or_default()
}

/// What the task runtime says of the shim a RuntimeRequest names: the shim's own
/// RuntimeInfo, checked to be one.
async fn runtime_extra(options: &prost_types::Any) -> Result<prost_types::Any, Status> {
    let req: RuntimeRequest = convert::from_any(options)?;
    let stdin = req.options.map(|o| o.encode_to_vec()).unwrap_or_default();
    let out = runtime_info::ask(&req.runtime_path, stdin)
        .await
        .map_err(super::status)?;
    let info = RuntimeInfo::decode(out.as_slice()).map_err(|e| {
        Status::failed_precondition(format!(
            "runtime {}: its -info answer is not a RuntimeInfo: {e}",
            req.runtime_path
        ))
    })?;
    Ok(convert::to_any(&info))
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
            pid: u64::from(std::process::id()),
            pidns: pid_namespace(),
            deprecations: vec![],
        }))
    }

    /// One plugin's record; with options, what the plugin tells beyond it (only the task
    /// runtime does: a shim's RuntimeInfo).
    async fn plugin_info(
        &self,
        req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        let req = req.into_inner();
        let plugin = self
            .plugins
            .iter()
            .find(|p| p.kind == req.r#type && p.id == req.id)
            .ok_or_else(|| {
                Status::not_found(format!("plugin {}.{} not found", req.r#type, req.id))
            })?;
        let mut resp = PluginInfoResponse {
            plugin: Some(convert::plugin(plugin)),
            extra: None,
        };
        let Some(options) = req.options else {
            return Ok(Response::new(resp));
        };
        if plugin.init_err.is_some() {
            return Err(Status::failed_precondition(format!(
                "plugin {} did not start: it has no more to tell",
                plugin.uri()
            )));
        }
        if !plugin.describes_runtimes() {
            return Err(Status::unimplemented(format!(
                "plugin {} does not provide extra information",
                plugin.uri()
            )));
        }
        resp.extra = Some(runtime_extra(&options).await?);
        Ok(Response::new(resp))
    }
}
