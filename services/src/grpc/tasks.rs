//! containerd.services.tasks.v1.Tasks, forwarded to each container's shim.

use super::{namespace, status};
use crate::runtime::{CreateTask, Tasks};
use berth_proto::containerd::task::v2 as shimapi;
use berth_proto::containerd::v1::types::{Process, Status as ProcStatus};
use berth_proto::tasks::{
    tasks_server::Tasks as TasksApi, CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest,
    CreateTaskRequest, CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest, ListPidsResponse,
    ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use berth_proto::types::Metric;
use tonic::{Request, Response, Status};

pub struct TasksService {
    pub core: Tasks,
}

mod convert {
    use super::*;

    pub fn process(container_id: &str, s: shimapi::StateResponse) -> Process {
        Process {
            container_id: container_id.to_string(),
            id: if s.exec_id.is_empty() {
                s.id.clone()
            } else {
                s.exec_id.clone()
            },
            pid: s.pid,
            status: ProcStatus::try_from(s.status).unwrap_or(ProcStatus::Unknown) as i32,
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            terminal: s.terminal,
            exit_status: s.exit_status,
            exited_at: s.exited_at.or_else(|| super::super::timestamp(0)),
        }
    }

    pub fn deleted(id: String, d: crate::runtime::Deleted) -> DeleteResponse {
        DeleteResponse {
            id,
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: d.exited_at.or_else(|| super::super::timestamp(0)),
        }
    }
}

fn id(s: &str) -> Result<String, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("container id must be set"));
    }
    Ok(s.to_string())
}

#[tonic::async_trait]
impl TasksApi for TasksService {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let cid = id(&r.container_id)?;
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring from a checkpoint needs CRIU, which berth does not drive",
            ));
        }
        let pid = self
            .core
            .create(
                ns,
                CreateTask {
                    container_id: cid.clone(),
                    rootfs: r.rootfs,
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    terminal: r.terminal,
                    options: r.options,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(CreateTaskResponse {
            container_id: cid,
            pid,
        }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let pid = self
            .core
            .start(ns, id(&r.container_id)?, r.exec_id)
            .await
            .map_err(status)?;
        Ok(Response::new(StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let cid = id(&req.into_inner().container_id)?;
        let d = self.core.delete(ns, cid.clone()).await.map_err(status)?;
        Ok(Response::new(convert::deleted(cid, d)))
    }

    async fn delete_process(
        &self,
        req: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = self
            .core
            .delete_process(ns, id(&r.container_id)?, r.exec_id.clone())
            .await
            .map_err(status)?;
        Ok(Response::new(convert::deleted(r.exec_id, d)))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let cid = id(&r.container_id)?;
        let s = self
            .core
            .state(ns, cid.clone(), r.exec_id)
            .await
            .map_err(status)?;
        Ok(Response::new(GetResponse {
            process: Some(convert::process(&cid, s)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let all = self.core.list(ns).await.map_err(status)?;
        let tasks = all
            .into_iter()
            .map(|s| {
                let cid = s.id.clone();
                convert::process(&cid, s)
            })
            .collect();
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .kill(ns, id(&r.container_id)?, r.exec_id, r.signal, r.all)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec id must be set"));
        }
        self.core
            .exec(
                ns,
                shimapi::ExecProcessRequest {
                    id: id(&r.container_id)?,
                    exec_id: r.exec_id,
                    terminal: r.terminal,
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    spec: r.spec,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .resize(
                ns,
                shimapi::ResizePtyRequest {
                    id: id(&r.container_id)?,
                    exec_id: r.exec_id,
                    width: r.width,
                    height: r.height,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .close_io(
                ns,
                shimapi::CloseIoRequest {
                    id: id(&r.container_id)?,
                    exec_id: r.exec_id,
                    stdin: r.stdin,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.core
            .pause(ns, id(&req.into_inner().container_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        self.core
            .resume(ns, id(&req.into_inner().container_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let processes = self
            .core
            .pids(ns, id(&req.into_inner().container_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented(
            "checkpoint needs CRIU, which berth does not drive",
        ))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .update(
                ns,
                shimapi::UpdateTaskRequest {
                    id: id(&r.container_id)?,
                    resources: r.resources,
                    annotations: r.annotations,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = super::filter(&req.into_inner().filters)?;
        let mut metrics = vec![];
        for cid in self.core.running(&ns).await {
            struct Id<'a>(&'a str);
            impl crate::filters::Fields for Id<'_> {
                fn field(&self, path: &[String]) -> Option<String> {
                    (path.len() == 1 && path[0] == "id").then(|| self.0.to_string())
                }
            }
            if !filter.matches(&Id(&cid)) {
                continue;
            }
            if let Ok(Some(data)) = self.core.stats(ns.clone(), cid.clone()).await {
                metrics.push(Metric {
                    timestamp: super::timestamp(crate::metadata::now()),
                    id: cid,
                    data: Some(data),
                });
            }
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let w = self
            .core
            .wait(ns, id(&r.container_id)?, r.exec_id)
            .await
            .map_err(status)?;
        Ok(Response::new(WaitResponse {
            exit_status: w.exit_status,
            exited_at: w.exited_at.or_else(|| super::timestamp(0)),
        }))
    }
}
