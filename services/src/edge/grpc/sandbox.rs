//! containerd.services.sandbox.v1 (containerd 2.x): the Store of sandbox records, which also
//! shows the CRI's pods (sandboxer "podsandbox") in the CRI's namespace, and the Controller,
//! which answers for those pods through the CRI's own status, stop and remove.

use super::containers::convert::{any_in, any_out};
use super::{filter, labels_in, labels_out, namespace, status, timestamp};
use crate::core::context::Namespace;
use crate::core::error::Error;
use crate::core::oci::Platform;
use crate::core::sandboxes::{SandboxRecord, SandboxStore, PODSANDBOX};
use crate::edge::cri::Cri;
use berth_proto::containerd::services::sandbox::v1::{
    controller_server::Controller, store_server::Store, ControllerCreateRequest,
    ControllerCreateResponse, ControllerMetricsRequest, ControllerMetricsResponse,
    ControllerPlatformRequest, ControllerPlatformResponse, ControllerShutdownRequest,
    ControllerShutdownResponse, ControllerStartRequest, ControllerStartResponse,
    ControllerStatusRequest, ControllerStatusResponse, ControllerStopRequest,
    ControllerStopResponse, ControllerUpdateRequest, ControllerUpdateResponse,
    ControllerWaitRequest, ControllerWaitResponse, StoreCreateRequest, StoreCreateResponse,
    StoreDeleteRequest, StoreDeleteResponse, StoreGetRequest, StoreGetResponse, StoreListRequest,
    StoreListResponse, StoreUpdateRequest, StoreUpdateResponse,
};
use berth_proto::types::{sandbox::Runtime as PbRuntime, Platform as PbPlatform, Sandbox};
use tonic::{Request, Response, Status};

pub struct SandboxStoreService {
    pub core: SandboxStore,
    pub cri: Option<Cri>,
}

pub struct SandboxControllerService {
    pub cri: Option<Cri>,
}

fn record_in(s: Sandbox) -> SandboxRecord {
    let runtime = s.runtime.unwrap_or_default();
    SandboxRecord {
        id: s.sandbox_id,
        runtime_name: runtime.name,
        runtime_options: runtime.options.map(any_in),
        spec: s.spec.map(any_in),
        labels: labels_in(s.labels),
        extensions: s
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_in(v)))
            .collect(),
        sandboxer: s.sandboxer,
        ..Default::default()
    }
}

fn record_out(r: &SandboxRecord) -> Sandbox {
    Sandbox {
        sandbox_id: r.id.clone(),
        runtime: Some(PbRuntime {
            name: r.runtime_name.clone(),
            options: r.runtime_options.as_ref().map(any_out),
        }),
        spec: r.spec.as_ref().map(any_out),
        labels: labels_out(&r.labels),
        created_at: timestamp(r.created_at),
        updated_at: timestamp(r.updated_at),
        extensions: r
            .extensions
            .iter()
            .map(|(k, v)| (k.clone(), any_out(v)))
            .collect(),
        sandboxer: r.sandboxer.clone(),
    }
}

fn required(s: Option<Sandbox>) -> Result<Sandbox, Status> {
    s.ok_or_else(|| Status::invalid_argument("the request has no sandbox"))
}

/// The CRI, when `ns` is the namespace of its pods.
fn cri_in<'a>(cri: &'a Option<Cri>, ns: &Namespace) -> Option<&'a Cri> {
    cri.as_ref().filter(|c| c.pods_namespace() == ns)
}

impl SandboxStoreService {
    /// Refuses to change a record that is one of the CRI's pods.
    fn not_a_pod(&self, ns: &Namespace, id: &str, what: &str) -> Result<(), Status> {
        match cri_in(&self.cri, ns).and_then(|c| c.pod_sandbox_record(id)) {
            Some(_) => Err(Status::failed_precondition(format!(
                "sandbox {id:?} is a CRI pod: {what}"
            ))),
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Store for SandboxStoreService {
    async fn create(
        &self,
        req: Request<StoreCreateRequest>,
    ) -> Result<Response<StoreCreateResponse>, Status> {
        let ns = namespace(&req)?;
        let rec = record_in(required(req.into_inner().sandbox)?);
        if cri_in(&self.cri, &ns)
            .and_then(|c| c.pod_sandbox_record(&rec.id))
            .is_some()
        {
            return Err(status(Error::already_exists(format!(
                "sandbox {:?} already exists (a CRI pod)",
                rec.id
            ))));
        }
        let made = self.core.create(&ns, rec).map_err(status)?;
        Ok(Response::new(StoreCreateResponse {
            sandbox: Some(record_out(&made)),
        }))
    }

    async fn update(
        &self,
        req: Request<StoreUpdateRequest>,
    ) -> Result<Response<StoreUpdateResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let rec = record_in(required(r.sandbox)?);
        self.not_a_pod(&ns, &rec.id, "the CRI owns its record")?;
        let done = self.core.update(&ns, rec, &r.fields).map_err(status)?;
        Ok(Response::new(StoreUpdateResponse {
            sandbox: Some(record_out(&done)),
        }))
    }

    async fn delete(
        &self,
        req: Request<StoreDeleteRequest>,
    ) -> Result<Response<StoreDeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().sandbox_id;
        self.not_a_pod(&ns, &id, "remove it with RemovePodSandbox")?;
        self.core.delete(&ns, &id).map_err(status)?;
        Ok(Response::new(StoreDeleteResponse {}))
    }

    async fn list(
        &self,
        req: Request<StoreListRequest>,
    ) -> Result<Response<StoreListResponse>, Status> {
        let ns = namespace(&req)?;
        let f = filter(&req.into_inner().filters)?;
        let mut all = self.core.list(&ns, &f).map_err(status)?;
        if let Some(c) = cri_in(&self.cri, &ns) {
            all.extend(c.pod_records().into_iter().filter(|r| f.matches(r)));
            all.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(Response::new(StoreListResponse {
            list: all.iter().map(record_out).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<StoreGetRequest>,
    ) -> Result<Response<StoreGetResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().sandbox_id;
        let rec = match cri_in(&self.cri, &ns).and_then(|c| c.pod_sandbox_record(&id)) {
            Some(pod) => pod,
            None => self.core.get(&ns, &id).map_err(status)?,
        };
        Ok(Response::new(StoreGetResponse {
            sandbox: Some(record_out(&rec)),
        }))
    }
}

impl SandboxControllerService {
    /// The CRI, when `sandboxer` names its controller and `id` is one of its pods.
    fn pod<T>(&self, req: &Request<T>, sandboxer: &str, id: &str) -> Result<&Cri, Status> {
        let ns = namespace(req)?;
        if !sandboxer.is_empty() && sandboxer != PODSANDBOX {
            return Err(Status::not_found(format!(
                "sandbox controller {sandboxer:?}: berth has only {PODSANDBOX:?}, the CRI's pods"
            )));
        }
        let cri = self.cri.as_ref().ok_or_else(|| {
            Status::not_found(format!(
                "sandbox controller {PODSANDBOX:?}: the CRI is not enabled"
            ))
        })?;
        if cri.pods_namespace() != &ns || cri.pod_sandbox_record(id).is_none() {
            return Err(Status::not_found(format!(
                "sandbox {id:?}: no CRI pod by that id in namespace {:?}",
                ns.as_str()
            )));
        }
        Ok(cri)
    }
}

/// What berth's controller cannot do: its sandboxes are made and run by the CRI.
fn by_the_cri(what: &str) -> Status {
    Status::unimplemented(format!(
        "sandbox controller {PODSANDBOX:?} cannot {what}: berth's sandboxes are the CRI's pods, made and started by RunPodSandbox"
    ))
}

#[tonic::async_trait]
impl Controller for SandboxControllerService {
    async fn create(
        &self,
        _req: Request<ControllerCreateRequest>,
    ) -> Result<Response<ControllerCreateResponse>, Status> {
        Err(by_the_cri("create a sandbox"))
    }

    async fn start(
        &self,
        _req: Request<ControllerStartRequest>,
    ) -> Result<Response<ControllerStartResponse>, Status> {
        Err(by_the_cri("start a sandbox"))
    }

    async fn platform(
        &self,
        req: Request<ControllerPlatformRequest>,
    ) -> Result<Response<ControllerPlatformResponse>, Status> {
        let r = req.get_ref();
        self.pod(&req, &r.sandboxer, &r.sandbox_id)?;
        let p = Platform::host();
        Ok(Response::new(ControllerPlatformResponse {
            platform: Some(PbPlatform {
                os: p.os,
                architecture: p.architecture,
                variant: p.variant,
            }),
        }))
    }

    async fn stop(
        &self,
        req: Request<ControllerStopRequest>,
    ) -> Result<Response<ControllerStopResponse>, Status> {
        let r = req.get_ref();
        let cri = self.pod(&req, &r.sandboxer, &r.sandbox_id)?;
        cri.stop_sandbox(&r.sandbox_id).await.map_err(status)?;
        Ok(Response::new(ControllerStopResponse {}))
    }

    async fn wait(
        &self,
        req: Request<ControllerWaitRequest>,
    ) -> Result<Response<ControllerWaitResponse>, Status> {
        let r = req.get_ref();
        let cri = self.pod(&req, &r.sandboxer, &r.sandbox_id)?;
        let exited = cri.pod_wait(&r.sandbox_id).await.map_err(status)?;
        Ok(Response::new(ControllerWaitResponse {
            exit_status: exited.exit_status,
            exited_at: timestamp(exited.exited_at),
        }))
    }

    async fn status(
        &self,
        req: Request<ControllerStatusRequest>,
    ) -> Result<Response<ControllerStatusResponse>, Status> {
        let r = req.get_ref();
        let cri = self.pod(&req, &r.sandboxer, &r.sandbox_id)?;
        let s = cri
            .pod_sandbox_status(&r.sandbox_id)
            .ok_or_else(|| Status::not_found(format!("sandbox {:?} was removed", r.sandbox_id)))?;
        Ok(Response::new(ControllerStatusResponse {
            sandbox_id: s.id,
            pid: s.pid,
            state: s.state.to_string(),
            info: if r.verbose {
                labels_out(&s.info)
            } else {
                Default::default()
            },
            created_at: timestamp(s.created_at),
            ..Default::default()
        }))
    }

    async fn shutdown(
        &self,
        req: Request<ControllerShutdownRequest>,
    ) -> Result<Response<ControllerShutdownResponse>, Status> {
        let r = req.get_ref();
        let cri = self.pod(&req, &r.sandboxer, &r.sandbox_id)?;
        cri.remove_sandbox(&r.sandbox_id).await.map_err(status)?;
        Ok(Response::new(ControllerShutdownResponse {}))
    }

    async fn metrics(
        &self,
        _req: Request<ControllerMetricsRequest>,
    ) -> Result<Response<ControllerMetricsResponse>, Status> {
        Err(by_the_cri(
            "report metrics: ask the CRI's PodSandboxStats for a pod's",
        ))
    }

    async fn update(
        &self,
        _req: Request<ControllerUpdateRequest>,
    ) -> Result<Response<ControllerUpdateResponse>, Status> {
        Err(by_the_cri("update a sandbox"))
    }
}
