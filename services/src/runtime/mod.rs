//! The runtime manager and the tasks it runs: one shim per container, started with the
//! shim v2 protocol and driven over ttrpc. This module is the daemon's ttrpc edge, so it
//! speaks the shim API's messages directly.
//!
//! Everything a task needs at run time lives under berthd's state directory:
//! `<state>/io.containerd.runtime.v2.task/<ns>/<id>` is the bundle (config.json, rootfs/,
//! the `log` FIFO, the shim's `address`), and runc's own state goes to `<state>/runc`.

pub mod shim;
pub mod ttrpc;

use crate::error::{Error, Kind, Result};
use crate::metadata::MetadataStore;
use crate::namespace::Namespace;
use crate::snapshots::Snapshots;
use berth_proto::containerd::task::v2 as shimapi;
use berth_proto::types::Mount as PbMount;
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TASK: &str = "containerd.task.v2.Task";
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub root: PathBuf,
    pub state: PathBuf,
    /// berthd's gRPC socket (shims get it as -address; events go to `<it>.ttrpc`).
    pub address: PathBuf,
}

impl RuntimeConfig {
    pub fn ttrpc_address(&self) -> PathBuf {
        let mut s = self.address.as_os_str().to_owned();
        s.push(".ttrpc");
        PathBuf::from(s)
    }
    fn bundle(&self, ns: &str, id: &str) -> PathBuf {
        self.state
            .join("io.containerd.runtime.v2.task")
            .join(ns)
            .join(id)
    }
    fn work(&self, ns: &str, id: &str) -> PathBuf {
        self.root
            .join("io.containerd.runtime.v2.task")
            .join(ns)
            .join(id)
    }
}

struct ShimTask {
    client: ttrpc::Client,
    bundle: PathBuf,
    binary: PathBuf,
    log: Option<tokio::task::JoinHandle<()>>,
    /// Set when the shim died under a running task: how the task ended.
    dead: Mutex<Option<Deleted>>,
    dead_tx: tokio::sync::watch::Sender<bool>,
}

impl Drop for ShimTask {
    fn drop(&mut self) {
        if let Some(l) = &self.log {
            l.abort();
        }
    }
}

/// What a task's deletion reports.
#[derive(Debug, Clone, Default)]
pub struct Deleted {
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<prost_types::Timestamp>,
}

pub struct CreateTask {
    pub container_id: String,
    pub rootfs: Vec<PbMount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub options: Option<prost_types::Any>,
}

/// Running tasks by (namespace, container id).
type TaskTable = HashMap<(String, String), Arc<ShimTask>>;

#[derive(Clone)]
pub struct Tasks {
    cfg: Arc<RuntimeConfig>,
    store: MetadataStore,
    snapshots: Snapshots,
    events: crate::events::Exchange,
    tasks: Arc<Mutex<TaskTable>>,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let c = context.into();
    move |e| Error::io(c, e)
}

fn private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).map_err(io(format!("create {}", p.display())))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).map_err(io("chmod 0700"))
}

impl Tasks {
    pub fn new(
        cfg: RuntimeConfig,
        store: MetadataStore,
        snapshots: Snapshots,
        events: crate::events::Exchange,
    ) -> Self {
        Tasks {
            cfg: Arc::new(cfg),
            store,
            snapshots,
            events,
            tasks: Arc::default(),
        }
    }

    fn shim_task(
        client: ttrpc::Client,
        bundle: PathBuf,
        binary: PathBuf,
        log: Option<tokio::task::JoinHandle<()>>,
    ) -> Arc<ShimTask> {
        let (dead_tx, _) = tokio::sync::watch::channel(false);
        Arc::new(ShimTask {
            client,
            bundle,
            binary,
            log,
            dead: Mutex::new(None),
            dead_tx,
        })
    }

    /// Registers a task and watches its shim: a shim that dies while the task is still
    /// registered is cleaned up with `<shim> delete`, and the task reported exited.
    fn register(&self, ns: &Namespace, id: &str, task: Arc<ShimTask>) -> Result<()> {
        self.tasks
            .lock()
            .map_err(|_| Error::new(Kind::Internal, "task table poisoned"))?
            .insert((ns.to_string(), id.to_string()), task.clone());
        let this = self.clone();
        let (ns, id) = (ns.clone(), id.to_string());
        tokio::spawn(async move {
            task.client.closed().await;
            let still_ours = this
                .get(&ns, &id)
                .map(|t| Arc::ptr_eq(&t, &task))
                .unwrap_or(false);
            if !still_ours {
                return; // deleted on purpose
            }
            tracing::warn!(namespace = %ns, id = %id, "shim died; cleaning up and reporting the task exited");
            let out = this
                .launch(&task.binary, &ns, &id, &task.bundle)
                .delete()
                .await
                .unwrap_or_default();
            let r = shimapi::DeleteResponse::decode(out.as_slice()).unwrap_or_default();
            let exited_at = r
                .exited_at
                .or_else(|| crate::grpc::timestamp(crate::metadata::now()));
            let d = Deleted {
                pid: r.pid,
                exit_status: if r.exit_status == 0 {
                    137
                } else {
                    r.exit_status
                },
                exited_at,
            };
            if let Ok(mut dead) = task.dead.lock() {
                *dead = Some(d.clone());
            }
            let _ = task.dead_tx.send(true);
            let ev = berth_proto::containerd::events::TaskExit {
                container_id: id.clone(),
                id: id.clone(),
                pid: d.pid,
                exit_status: d.exit_status,
                exited_at: d.exited_at,
            };
            let env = crate::events::Envelope {
                timestamp: crate::metadata::now(),
                namespace: ns.to_string(),
                topic: "/tasks/exit".into(),
                event: crate::events::Event::Raw {
                    type_url: <berth_proto::containerd::events::TaskExit as prost::Name>::full_name(
                    ),
                    value: ev.encode_to_vec(),
                },
            };
            let _ = this.events.forward(env);
        });
        Ok(())
    }

    fn dead(&self, ns: &Namespace, id: &str) -> Option<Deleted> {
        self.get(ns, id)
            .ok()
            .and_then(|t| t.dead.lock().ok().and_then(|d| d.clone()))
    }

    fn get(&self, ns: &Namespace, id: &str) -> Result<Arc<ShimTask>> {
        self.tasks
            .lock()
            .map_err(|_| Error::new(Kind::Internal, "task table poisoned"))?
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no running task for container {id:?}")))
    }

    fn ids(&self, ns: &Namespace) -> Vec<String> {
        self.tasks
            .lock()
            .map(|m| {
                m.keys()
                    .filter(|(n, _)| n == ns.as_str())
                    .map(|(_, id)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reconnects to shims that outlived a previous berthd; cleans up after those that did not.
    /// Reconnects to every shim a previous daemon left (all at once), and cleans up the
    /// bundles of shims that are gone (their exits are reported through `<shim> delete`).
    pub async fn recover(&self) {
        let base = self.cfg.state.join("io.containerd.runtime.v2.task");
        let Ok(namespaces) = std::fs::read_dir(&base) else {
            return;
        };
        let mut found = vec![];
        for ns_entry in namespaces.flatten() {
            let ns_name = ns_entry.file_name().to_string_lossy().into_owned();
            let Ok(ns) = Namespace::parse(&ns_name) else {
                continue;
            };
            let Ok(bundles) = std::fs::read_dir(ns_entry.path()) else {
                continue;
            };
            for b in bundles.flatten() {
                found.push((
                    ns.clone(),
                    b.file_name().to_string_lossy().into_owned(),
                    b.path(),
                ));
            }
        }
        futures::future::join_all(
            found
                .into_iter()
                .map(|(ns, id, bundle)| async move { self.recover_one(ns, id, bundle).await }),
        )
        .await;
    }

    async fn recover_one(&self, ns: Namespace, id: String, bundle: PathBuf) {
        let runtime = self
            .store
            .container_get(&ns, &id)
            .map(|c| c.runtime.name)
            .ok();
        let binary = runtime.as_deref().and_then(|r| shim::find_binary(r).ok());
        let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_default();
        let path = PathBuf::from(
            address
                .trim()
                .strip_prefix("unix://")
                .unwrap_or(address.trim()),
        );
        match (ttrpc::Client::connect(&path).await, binary) {
            (Ok(client), Some(binary)) => {
                tracing::info!(namespace = %ns, id = %id, "reconnected to shim");
                let log = follow_log(&bundle.join("log"), &id).ok();
                let _ = self.register(&ns, &id, Self::shim_task(client, bundle, binary, log));
            }
            (_, binary) => {
                tracing::info!(namespace = %ns, id = %id, "shim gone; cleaning up its bundle");
                if let Some(binary) = binary {
                    let _ = self.launch(&binary, &ns, &id, &bundle).delete().await;
                }
                let _ = std::fs::remove_dir_all(&bundle);
                let _ = std::fs::remove_dir_all(self.cfg.work(ns.as_str(), &id));
            }
        }
    }

    fn launch<'a>(
        &'a self,
        binary: &'a Path,
        ns: &'a Namespace,
        id: &'a str,
        bundle: &'a Path,
    ) -> LaunchOwned<'a> {
        LaunchOwned {
            tasks: self,
            binary,
            ns,
            id,
            bundle,
            ttrpc: self.cfg.ttrpc_address(),
        }
    }

    pub async fn create(&self, ns: Namespace, req: CreateTask) -> Result<u32> {
        let id = req.container_id.clone();
        if self.get(&ns, &id).is_ok() {
            return Err(Error::already_exists(format!("task for container {id:?}")));
        }
        let container = self.store.container_get(&ns, &id)?;
        let spec = container
            .spec
            .as_ref()
            .ok_or_else(|| Error::precondition(format!("container {id} has no spec")))?;
        let binary = shim::find_binary(&container.runtime.name)?;
        let mut rootfs = req.rootfs.clone();
        if rootfs.is_empty() && !container.snapshot_key.is_empty() {
            rootfs = self
                .snapshots
                .mounts(
                    ns.clone(),
                    &container.snapshotter,
                    container.snapshot_key.clone(),
                )
                .await?
                .into_iter()
                .map(crate::grpc::snapshots::convert::mount_out)
                .collect();
        }
        let bundle = self.cfg.bundle(ns.as_str(), &id);
        let work = self.cfg.work(ns.as_str(), &id);
        if bundle.exists() {
            return Err(Error::already_exists(format!(
                "bundle {} exists: a task for {id} is still being cleaned up; delete it first",
                bundle.display()
            )));
        }
        private_dir(&bundle)?;
        private_dir(&work)?;
        let log = match self
            .prepare_bundle(&bundle, &work, &spec.value)
            .and_then(|()| open_log(&bundle, &id))
        {
            Ok(log) => log,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&bundle);
                return Err(e);
            }
        };
        let launch = self.launch(&binary, &ns, &id, &bundle);
        let mut connected: Option<Arc<ttrpc::Client>> = None;
        let started = async {
            let socket = launch.start().await?;
            let client = Arc::new(ttrpc::Client::connect(&socket).await?);
            connected = Some(client.clone());
            let options =
                self.runc_options(req.options.clone(), container.runtime.options.as_ref());
            let resp: shimapi::CreateTaskResponse = client
                .call(
                    TASK,
                    "Create",
                    &shimapi::CreateTaskRequest {
                        id: id.clone(),
                        bundle: bundle.display().to_string(),
                        rootfs,
                        terminal: req.terminal,
                        stdin: req.stdin.clone(),
                        stdout: req.stdout.clone(),
                        stderr: req.stderr.clone(),
                        checkpoint: String::new(),
                        parent_checkpoint: String::new(),
                        options,
                    },
                    Some(CALL_TIMEOUT),
                )
                .await?;
            Ok::<_, Error>((client, resp.pid))
        }
        .await;
        if started.is_ok() {
            connected = None;
        }
        let started = started.and_then(|(c, pid)| {
            Arc::try_unwrap(c)
                .map(|c| (c, pid))
                .map_err(|_| Error::new(Kind::Internal, "shim client still shared"))
        });
        match started {
            Ok((client, pid)) => {
                self.register(&ns, &id, Self::shim_task(client, bundle, binary, Some(log)))?;
                Ok(pid)
            }
            Err(e) => {
                // Nothing half-created stays behind: the shim is told to clean up and go.
                log.abort();
                if let Some(c) = connected.take() {
                    let _: Result<()> = c
                        .call(
                            TASK,
                            "Shutdown",
                            &shimapi::ShutdownRequest {
                                id: id.clone(),
                                now: true,
                            },
                            Some(Duration::from_secs(5)),
                        )
                        .await;
                }
                let _ = launch.delete().await;
                let _ = std::fs::remove_dir_all(&bundle);
                let _ = std::fs::remove_dir_all(&work);
                Err(e)
            }
        }
    }

    fn prepare_bundle(&self, bundle: &Path, work: &Path, spec: &[u8]) -> Result<()> {
        serde_json::from_slice::<serde_json::Value>(spec)
            .map_err(|e| Error::invalid(format!("container spec is not valid JSON: {e}")))?;
        std::fs::write(bundle.join("config.json"), spec).map_err(io("write config.json"))?;
        std::fs::create_dir(bundle.join("rootfs")).map_err(io("create rootfs"))?;
        std::os::unix::fs::symlink(work, bundle.join("work")).map_err(io("link work dir"))?;
        Ok(())
    }

    /// runc options with runc's state kept under berthd's state directory.
    fn runc_options(
        &self,
        given: Option<prost_types::Any>,
        container: Option<&crate::metadata::containers::AnyValue>,
    ) -> Option<prost_types::Any> {
        use berth_proto::containerd::runc::v1::Options;
        let any = given.or_else(|| {
            container.map(|a| prost_types::Any {
                type_url: a.type_url.clone(),
                value: a.value.clone(),
            })
        });
        let mut opts = match &any {
            Some(a) if a.type_url.ends_with(RUNC_OPTIONS) => {
                Options::decode(a.value.as_slice()).unwrap_or_default()
            }
            Some(other) => return Some(other.clone()),
            None => Options::default(),
        };
        if opts.root.is_empty() {
            opts.root = self.cfg.state.join("runc").display().to_string();
        }
        Some(prost_types::Any {
            type_url: RUNC_OPTIONS.into(),
            value: opts.encode_to_vec(),
        })
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        ns: &Namespace,
        id: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let task = self.get(ns, id)?;
        task.client.call(TASK, method, req, timeout).await
    }

    pub async fn start(&self, ns: Namespace, id: String, exec_id: String) -> Result<u32> {
        let r: shimapi::StartResponse = self
            .call(
                &ns,
                &id,
                "Start",
                &shimapi::StartRequest {
                    id: id.clone(),
                    exec_id,
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(r.pid)
    }

    pub async fn state(
        &self,
        ns: Namespace,
        id: String,
        exec_id: String,
    ) -> Result<shimapi::StateResponse> {
        if let Some(d) = self.dead(&ns, &id) {
            return Ok(shimapi::StateResponse {
                id: id.clone(),
                pid: d.pid,
                status: berth_proto::containerd::v1::types::Status::Stopped as i32,
                exit_status: d.exit_status,
                exited_at: d.exited_at,
                exec_id,
                ..Default::default()
            });
        }
        self.call(
            &ns,
            &id,
            "State",
            &shimapi::StateRequest {
                id: id.clone(),
                exec_id,
            },
            Some(CALL_TIMEOUT),
        )
        .await
    }

    pub async fn list(&self, ns: Namespace) -> Result<Vec<shimapi::StateResponse>> {
        let mut out = vec![];
        for id in self.ids(&ns) {
            match self.state(ns.clone(), id.clone(), String::new()).await {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(id = %id, error = %e, "task state unavailable"),
            }
        }
        Ok(out)
    }

    pub async fn delete(&self, ns: Namespace, id: String) -> Result<Deleted> {
        let task = self.get(&ns, &id)?;
        let dead = task.dead.lock().ok().and_then(|d| d.clone());
        if let Some(d) = dead {
            if let Ok(mut m) = self.tasks.lock() {
                m.remove(&(ns.to_string(), id.clone()));
            }
            let _ = std::fs::remove_dir_all(&task.bundle);
            let _ = std::fs::remove_dir_all(self.cfg.work(ns.as_str(), &id));
            return Ok(d);
        }
        let resp: Result<shimapi::DeleteResponse> = task
            .client
            .call(
                TASK,
                "Delete",
                &shimapi::DeleteRequest {
                    id: id.clone(),
                    exec_id: String::new(),
                },
                Some(CALL_TIMEOUT),
            )
            .await;
        let resp = match resp {
            Ok(r) => {
                let _: Result<()> = task
                    .client
                    .call(
                        TASK,
                        "Shutdown",
                        &shimapi::ShutdownRequest {
                            id: id.clone(),
                            now: false,
                        },
                        Some(Duration::from_secs(5)),
                    )
                    .await;
                r
            }
            Err(e) if e.kind() == Kind::Unavailable => {
                let out = self
                    .launch(&task.binary, &ns, &id, &task.bundle)
                    .delete()
                    .await?;
                shimapi::DeleteResponse::decode(out.as_slice()).unwrap_or_default()
            }
            Err(e) => return Err(e),
        };
        if let Ok(mut m) = self.tasks.lock() {
            m.remove(&(ns.to_string(), id.clone()));
        }
        let _ = std::fs::remove_dir_all(&task.bundle);
        let _ = std::fs::remove_dir_all(self.cfg.work(ns.as_str(), &id));
        Ok(Deleted {
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at,
        })
    }

    pub async fn delete_process(
        &self,
        ns: Namespace,
        id: String,
        exec_id: String,
    ) -> Result<Deleted> {
        if exec_id.is_empty() {
            return Err(Error::invalid(
                "exec id must be set; delete the task itself with Delete",
            ));
        }
        let r: shimapi::DeleteResponse = self
            .call(
                &ns,
                &id,
                "Delete",
                &shimapi::DeleteRequest {
                    id: id.clone(),
                    exec_id,
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(Deleted {
            pid: r.pid,
            exit_status: r.exit_status,
            exited_at: r.exited_at,
        })
    }

    pub async fn kill(
        &self,
        ns: Namespace,
        id: String,
        exec_id: String,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        if self.dead(&ns, &id).is_some() {
            return Err(Error::not_found("process already finished: its shim died"));
        }
        let _: () = self
            .call(
                &ns,
                &id,
                "Kill",
                &shimapi::KillRequest {
                    id: id.clone(),
                    exec_id,
                    signal,
                    all,
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(())
    }

    pub async fn exec(&self, ns: Namespace, req: shimapi::ExecProcessRequest) -> Result<()> {
        let id = req.id.clone();
        let _: () = self
            .call(&ns, &id, "Exec", &req, Some(CALL_TIMEOUT))
            .await?;
        Ok(())
    }

    pub async fn resize(&self, ns: Namespace, req: shimapi::ResizePtyRequest) -> Result<()> {
        let id = req.id.clone();
        let _: () = self
            .call(&ns, &id, "ResizePty", &req, Some(CALL_TIMEOUT))
            .await?;
        Ok(())
    }

    pub async fn close_io(&self, ns: Namespace, req: shimapi::CloseIoRequest) -> Result<()> {
        let id = req.id.clone();
        let _: () = self
            .call(&ns, &id, "CloseIO", &req, Some(CALL_TIMEOUT))
            .await?;
        Ok(())
    }

    pub async fn pause(&self, ns: Namespace, id: String) -> Result<()> {
        let _: () = self
            .call(
                &ns,
                &id,
                "Pause",
                &shimapi::PauseRequest { id: id.clone() },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(())
    }

    pub async fn resume(&self, ns: Namespace, id: String) -> Result<()> {
        let _: () = self
            .call(
                &ns,
                &id,
                "Resume",
                &shimapi::ResumeRequest { id: id.clone() },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(())
    }

    pub async fn pids(
        &self,
        ns: Namespace,
        id: String,
    ) -> Result<Vec<berth_proto::containerd::v1::types::ProcessInfo>> {
        let r: shimapi::PidsResponse = self
            .call(
                &ns,
                &id,
                "Pids",
                &shimapi::PidsRequest { id: id.clone() },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(r.processes)
    }

    pub async fn update(&self, ns: Namespace, req: shimapi::UpdateTaskRequest) -> Result<()> {
        let id = req.id.clone();
        let _: () = self
            .call(&ns, &id, "Update", &req, Some(CALL_TIMEOUT))
            .await?;
        Ok(())
    }

    pub async fn stats(&self, ns: Namespace, id: String) -> Result<Option<prost_types::Any>> {
        let r: shimapi::StatsResponse = self
            .call(
                &ns,
                &id,
                "Stats",
                &shimapi::StatsRequest { id: id.clone() },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(r.stats)
    }

    pub async fn running(&self, ns: &Namespace) -> Vec<String> {
        self.ids(ns)
    }

    /// Waits for the process to exit; may take as long as the process runs.
    pub async fn wait(
        &self,
        ns: Namespace,
        id: String,
        exec_id: String,
    ) -> Result<shimapi::WaitResponse> {
        let task = self.get(&ns, &id)?;
        let mut dead_rx = task.dead_tx.subscribe();
        if let Some(d) = self.dead(&ns, &id) {
            return Ok(shimapi::WaitResponse {
                exit_status: d.exit_status,
                exited_at: d.exited_at,
            });
        }
        let req = shimapi::WaitRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
        };
        match self.call(&ns, &id, "Wait", &req, None).await {
            Err(e) if e.kind() == Kind::Unavailable && exec_id.is_empty() => {
                // The shim died and took the task with it: report that once cleaned up.
                let _ =
                    tokio::time::timeout(Duration::from_secs(30), dead_rx.wait_for(|d| *d)).await;
                let d = task.dead.lock().ok().and_then(|d| d.clone()).ok_or(e)?;
                Ok(shimapi::WaitResponse {
                    exit_status: d.exit_status,
                    exited_at: d.exited_at,
                })
            }
            other => other,
        }
    }
}

struct LaunchOwned<'a> {
    tasks: &'a Tasks,
    binary: &'a Path,
    ns: &'a Namespace,
    id: &'a str,
    bundle: &'a Path,
    ttrpc: PathBuf,
}

impl LaunchOwned<'_> {
    fn as_launch(&self) -> shim::Launch<'_> {
        shim::Launch {
            binary: self.binary,
            namespace: self.ns.as_str(),
            id: self.id,
            bundle: self.bundle,
            address: &self.tasks.cfg.address,
            ttrpc_address: &self.ttrpc,
        }
    }
    async fn start(&self) -> Result<PathBuf> {
        self.as_launch().start().await
    }
    async fn delete(&self) -> Result<Vec<u8>> {
        self.as_launch().delete().await
    }
}

/// The shim writes its log to the `log` FIFO in the bundle, opening it for writing: the
/// daemon opens the reading end first and copies every line into its own log.
fn open_log(bundle: &Path, id: &str) -> Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::ffi::OsStrExt;
    let path = bundle.join("log");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("bundle path has a NUL byte"))?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(Error::io(
            "create shim log fifo",
            std::io::Error::last_os_error(),
        ));
    }
    follow_log(&path, id)
}

/// Copies the shim's log lines into berthd's log until the task goes (the handle is aborted
/// then: the FIFO is held open read-write so a shim restart never sees a closed pipe).
fn follow_log(path: &Path, id: &str) -> Result<tokio::task::JoinHandle<()>> {
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(io("open shim log fifo"))?;
    let id = id.to_string();
    Ok(tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "berth_services::shim", id = %id, "{line}");
        }
    }))
}
