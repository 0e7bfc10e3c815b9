//! containerd.services.tasks.v1.Tasks, forwarded to each container's shim.

use super::{namespace, status, timestamp};
use crate::core::metadata::containers::AnyValue;
use crate::core::runtime::{
    CreateTask, ExecProcess, Exited, ProcessRef, ProcessState, Resize, Stdio, Tasks, UpdateTask,
};
use crate::edge::shim::status_out;
use berth_proto::containerd::v1::types::{Process, ProcessInfo};
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

#[path = "tasks_checkpoint.rs"]
mod checkpoint;

pub struct TasksService {
    pub core: Tasks,
    /// Checkpoint, and Create with a checkpoint (`checkpoint.rs` beside this file).
    pub checkpoints: crate::core::checkpoint::Checkpoints,
}

mod convert {
    use super::*;

    pub fn any_in(a: Option<prost_types::Any>) -> Option<AnyValue> {
        a.map(|a| AnyValue {
            type_url: a.type_url,
            value: a.value,
        })
    }

    pub fn any_out(a: AnyValue) -> prost_types::Any {
        prost_types::Any {
            type_url: a.type_url,
            value: a.value,
        }
    }

    pub fn process(s: ProcessState) -> Process {
        Process {
            id: if s.exec_id.is_empty() {
                s.container_id.clone()
            } else {
                s.exec_id
            },
            container_id: s.container_id,
            pid: s.pid,
            status: status_out(s.status),
            stdin: s.io.stdin,
            stdout: s.io.stdout,
            stderr: s.io.stderr,
            terminal: s.io.terminal,
            exit_status: s.exit_status,
            exited_at: timestamp(s.exited_at),
        }
    }

    pub fn deleted(id: String, d: Exited) -> DeleteResponse {
        DeleteResponse {
            id,
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: timestamp(d.exited_at),
        }
    }

    pub fn process_info(p: crate::core::runtime::ProcessInfo) -> ProcessInfo {
        ProcessInfo {
            pid: p.pid,
            info: p.info.map(any_out),
        }
    }
}

fn id(s: &str) -> Result<String, Status> {
    if s.is_empty() {
        return Err(Status::invalid_argument("container id must be set"));
    }
    Ok(s.to_string())
}

fn process(container_id: &str, exec_id: String) -> Result<ProcessRef, Status> {
    Ok(ProcessRef {
        container_id: id(container_id)?,
        exec_id,
    })
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
        let task = CreateTask {
            container_id: cid.clone(),
            rootfs: r.rootfs.into_iter().map(Into::into).collect(),
            io: Stdio {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                terminal: r.terminal,
            },
            options: convert::any_in(r.options),
        };
        let pid = match r.checkpoint {
            Some(c) => {
                self.checkpoints
                    .restore(ns, task, checkpoint::descriptor_in(c))
                    .await
            }
            None => self.core.create(ns, task).await,
        }
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
            .start(ns, process(&r.container_id, r.exec_id)?)
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
            .delete_process(ns, process(&r.container_id, r.exec_id.clone())?)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::deleted(r.exec_id, d)))
    }

    async fn get(&self, req: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let s = self
            .core
            .state(ns, process(&r.container_id, r.exec_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(GetResponse {
            process: Some(convert::process(s)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let all = self.core.list(ns).await.map_err(status)?;
        let tasks = all.into_iter().map(convert::process).collect();
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .kill(ns, process(&r.container_id, r.exec_id)?, r.signal, r.all)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .exec(
                ns,
                ExecProcess {
                    container_id: id(&r.container_id)?,
                    exec_id: r.exec_id,
                    io: Stdio {
                        stdin: r.stdin,
                        stdout: r.stdout,
                        stderr: r.stderr,
                        terminal: r.terminal,
                    },
                    spec: convert::any_in(r.spec),
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
                Resize {
                    process: process(&r.container_id, r.exec_id)?,
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
        let p = process(&r.container_id, r.exec_id)?;
        if r.stdin {
            self.core.close_stdin(ns, p).await.map_err(status)?;
        }
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
        Ok(Response::new(ListPidsResponse {
            processes: processes.into_iter().map(convert::process_info).collect(),
        }))
    }

    async fn checkpoint(
        &self,
        req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        let ctx = super::ctx(&req)?;
        let r = req.into_inner();
        let asked = checkpoint::request(id(&r.container_id)?, r.options)?;
        let descriptors = self
            .checkpoints
            .checkpoint(ctx, asked, checkpoint::encode_spec)
            .await
            .map_err(status)?;
        Ok(Response::new(CheckpointTaskResponse {
            descriptors: descriptors
                .into_iter()
                .map(checkpoint::descriptor_out)
                .collect(),
        }))
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.core
            .update(
                ns,
                UpdateTask {
                    container_id: id(&r.container_id)?,
                    resources: convert::any_in(r.resources),
                    annotations: r.annotations.into_iter().collect(),
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
        for cid in self.core.running(&ns) {
            struct Id<'a>(&'a str);
            impl crate::core::filters::Fields for Id<'_> {
                fn field(&self, path: &[String]) -> Option<String> {
                    (path.len() == 1 && path[0] == "id").then(|| self.0.to_string())
                }
            }
            if !filter.matches(&Id(&cid)) {
                continue;
            }
            if let Ok(Some(data)) = self.core.stats(ns.clone(), cid.clone()).await {
                metrics.push(Metric {
                    timestamp: timestamp(crate::core::metadata::now()),
                    id: cid,
                    data: Some(convert::any_out(data)),
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
            .wait(ns, process(&r.container_id, r.exec_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(WaitResponse {
            exit_status: w.exit_status,
            exited_at: timestamp(w.exited_at),
        }))
    }
}
