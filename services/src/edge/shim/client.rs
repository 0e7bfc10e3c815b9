//! The runtime's ttrpc edge: a shim's Task API (`containerd.task.v2.Task`, or `v3` on
//! containerd 2.x's shims: the same messages under another name) called with core types.
//! Every conversion between the runtime's types and the shim API's messages lives here.

use super::{bootstrap, ttrpc};
use crate::core::error::{Error, Kind, Result};
use crate::core::metadata::containers::AnyValue;
use crate::core::runtime::driver::{ShimApi, ShimWire, StartRequest, Started};
use crate::core::runtime::{
    CgroupFigures, CreateTask, ExecProcess, Exited, ProcessInfo, ProcessRef, ProcessState, Resize,
    Status, Stdio, UpdateTask,
};
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::Status as WireStatus;
use berth_proto::vocab::time;
use futures::future::BoxFuture;
use prost::Message;
use std::path::Path;
use std::time::Duration;

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a shim may take to say which Task API it serves (containerd gives a shim 5 s
/// to load).
const NEGOTIATE_TIMEOUT: Duration = Duration::from_secs(10);
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// A connection to one shim.
pub struct ShimClient {
    conn: ttrpc::Client,
    /// The Task service's name on this shim (`TASK_V2` or `TASK_V3`).
    service: &'static str,
}

fn any_in(a: Option<prost_types::Any>) -> Option<AnyValue> {
    a.map(|a| AnyValue {
        type_url: a.type_url,
        value: a.value,
    })
}

fn any_out(a: Option<AnyValue>) -> Option<prost_types::Any> {
    a.map(|a| prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    })
}

fn status_in(s: i32) -> Status {
    match WireStatus::try_from(s).unwrap_or(WireStatus::Unknown) {
        WireStatus::Unknown => Status::Unknown,
        WireStatus::Created => Status::Created,
        WireStatus::Running => Status::Running,
        WireStatus::Stopped => Status::Stopped,
        WireStatus::Paused => Status::Paused,
        WireStatus::Pausing => Status::Pausing,
    }
}

/// The wire number of a core status (containerd's `containerd.v1.types.Status`).
pub fn status_out(s: Status) -> i32 {
    (match s {
        Status::Unknown => WireStatus::Unknown,
        Status::Created => WireStatus::Created,
        Status::Running => WireStatus::Running,
        Status::Stopped => WireStatus::Stopped,
        Status::Paused => WireStatus::Paused,
        Status::Pausing => WireStatus::Pausing,
    }) as i32
}

fn exited(r: api::DeleteResponse) -> Exited {
    Exited {
        pid: r.pid,
        exit_status: r.exit_status,
        exited_at: time::from_proto(r.exited_at.as_ref()),
    }
}

/// What `<shim> delete` printed on stdout (a `DeleteResponse`); garbage reads as nothing.
pub fn decode_deleted(stdout: &[u8]) -> Exited {
    exited(api::DeleteResponse::decode(stdout).unwrap_or_default())
}

/// The runtime options a task is created with: runc's options with runc's state directory
/// set to `runc_root` when the caller left it empty; other runtimes' options untouched.
/// Also the runtime binary runc's options name (`ctr run --runc-binary`), if any.
pub fn runc_options(given: Option<AnyValue>, runc_root: &Path) -> (AnyValue, Option<String>) {
    use berth_proto::containerd::runc::v1::Options;
    let mut opts = match given {
        Some(a) if a.type_url.ends_with(RUNC_OPTIONS) => {
            Options::decode(a.value.as_slice()).unwrap_or_default()
        }
        Some(other) => return (other, None),
        None => Options::default(),
    };
    if opts.root.is_empty() {
        opts.root = runc_root.display().to_string();
    }
    let binary = Some(opts.binary_name.clone()).filter(|b| !b.is_empty());
    let any = AnyValue {
        type_url: RUNC_OPTIONS.into(),
        value: opts.encode_to_vec(),
    };
    (any, binary)
}

impl ShimClient {
    /// Connects to a shim known to serve the Task API v2, without asking: berth's own shim
    /// (a Connect call less on every task's start) and tests' fake shims, some of which
    /// answer nothing. Any other shim is asked: [`negotiate`](Self::negotiate).
    pub async fn connect(socket: &Path) -> Result<Self> {
        Ok(ShimClient {
            conn: ttrpc::Client::connect(socket).await?,
            service: TASK_V2,
        })
    }

    /// Connects and asks which Task API the shim serves: v2 (containerd 1.x's shims and
    /// berth's) or v3 (containerd 2.x's), by a Connect call on each in turn.
    pub async fn negotiate(socket: &Path) -> Result<Self> {
        let conn = ttrpc::Client::connect(socket).await?;
        let hello = api::ConnectRequest::default();
        for service in [TASK_V2, TASK_V3] {
            if conn
                .serves(service, "Connect", &hello, NEGOTIATE_TIMEOUT)
                .await?
            {
                return Ok(ShimClient { conn, service });
            }
        }
        Err(Error::new(
            Kind::FailedPrecondition,
            format!(
                "the shim at {} serves neither {TASK_V2} nor {TASK_V3}",
                socket.display()
            ),
        ))
    }

    /// Resolves once the shim's connection is gone.
    pub async fn closed(&self) {
        self.conn.closed().await
    }

    async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        self.conn.call(self.service, method, req, timeout).await
    }

    pub async fn create(
        &self,
        bundle: &Path,
        req: CreateTask,
        checkpoint: Option<&Path>,
    ) -> Result<u32> {
        let r: api::CreateTaskResponse = self
            .call(
                "Create",
                &api::CreateTaskRequest {
                    id: req.container_id,
                    bundle: bundle.display().to_string(),
                    rootfs: req.rootfs.into_iter().map(Into::into).collect(),
                    terminal: req.io.terminal,
                    stdin: req.io.stdin,
                    stdout: req.io.stdout,
                    stderr: req.io.stderr,
                    checkpoint: checkpoint
                        .map(|c| c.display().to_string())
                        .unwrap_or_default(),
                    parent_checkpoint: String::new(),
                    options: any_out(req.options),
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(r.pid)
    }

    pub async fn start(&self, p: &ProcessRef) -> Result<u32> {
        let r: api::StartResponse = self
            .call(
                "Start",
                &api::StartRequest {
                    id: p.container_id.clone(),
                    exec_id: p.exec_id.clone(),
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(r.pid)
    }

    pub async fn state(&self, p: &ProcessRef) -> Result<ProcessState> {
        let s: api::StateResponse = self
            .call(
                "State",
                &api::StateRequest {
                    id: p.container_id.clone(),
                    exec_id: p.exec_id.clone(),
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(ProcessState {
            container_id: s.id,
            exec_id: s.exec_id,
            pid: s.pid,
            status: status_in(s.status),
            io: Stdio {
                stdin: s.stdin,
                stdout: s.stdout,
                stderr: s.stderr,
                terminal: s.terminal,
            },
            exit_status: s.exit_status,
            exited_at: time::from_proto(s.exited_at.as_ref()),
        })
    }

    pub async fn delete(&self, p: &ProcessRef) -> Result<Exited> {
        let r: api::DeleteResponse = self
            .call(
                "Delete",
                &api::DeleteRequest {
                    id: p.container_id.clone(),
                    exec_id: p.exec_id.clone(),
                },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(exited(r))
    }

    /// Asks the shim to exit (`now`: even with processes left); errors are of no interest.
    pub async fn shutdown(&self, id: &str, now: bool) {
        let _: Result<()> = self
            .call(
                "Shutdown",
                &api::ShutdownRequest {
                    id: id.to_string(),
                    now,
                },
                Some(SHUTDOWN_TIMEOUT),
            )
            .await;
    }

    pub async fn kill(&self, p: &ProcessRef, signal: u32, all: bool) -> Result<()> {
        self.call(
            "Kill",
            &api::KillRequest {
                id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
                signal,
                all,
            },
            Some(CALL_TIMEOUT),
        )
        .await
    }

    pub async fn exec(&self, e: ExecProcess) -> Result<()> {
        self.call(
            "Exec",
            &api::ExecProcessRequest {
                id: e.container_id,
                exec_id: e.exec_id,
                terminal: e.io.terminal,
                stdin: e.io.stdin,
                stdout: e.io.stdout,
                stderr: e.io.stderr,
                spec: any_out(e.spec),
            },
            Some(CALL_TIMEOUT),
        )
        .await
    }

    pub async fn resize(&self, r: &Resize) -> Result<()> {
        self.call(
            "ResizePty",
            &api::ResizePtyRequest {
                id: r.process.container_id.clone(),
                exec_id: r.process.exec_id.clone(),
                width: r.width,
                height: r.height,
            },
            Some(CALL_TIMEOUT),
        )
        .await
    }

    pub async fn close_stdin(&self, p: &ProcessRef) -> Result<()> {
        self.call(
            "CloseIO",
            &api::CloseIoRequest {
                id: p.container_id.clone(),
                exec_id: p.exec_id.clone(),
                stdin: true,
            },
            Some(CALL_TIMEOUT),
        )
        .await
    }

    /// A CRIU dump of the task into `images`; as long as it takes (a dump is as slow as
    /// the container is large).
    pub async fn checkpoint(
        &self,
        id: &str,
        images: &Path,
        options: Option<AnyValue>,
    ) -> Result<()> {
        self.call(
            "Checkpoint",
            &api::CheckpointTaskRequest {
                id: id.to_string(),
                path: images.display().to_string(),
                options: any_out(options),
            },
            None,
        )
        .await
    }

    /// Freezes (`pause`) or thaws the task.
    pub async fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let id = id.to_string();
        if pause {
            self.call("Pause", &api::PauseRequest { id }, Some(CALL_TIMEOUT))
                .await
        } else {
            self.call("Resume", &api::ResumeRequest { id }, Some(CALL_TIMEOUT))
                .await
        }
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        let r: api::PidsResponse = self
            .call(
                "Pids",
                &api::PidsRequest { id: id.to_string() },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(r.processes
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                info: any_in(p.info),
            })
            .collect())
    }

    pub async fn update(&self, u: UpdateTask) -> Result<()> {
        self.call(
            "Update",
            &api::UpdateTaskRequest {
                id: u.container_id,
                resources: any_out(u.resources),
                annotations: u.annotations.into_iter().collect(),
            },
            Some(CALL_TIMEOUT),
        )
        .await
    }

    pub async fn stats(&self, id: &str) -> Result<Option<AnyValue>> {
        let r: api::StatsResponse = self
            .call(
                "Stats",
                &api::StatsRequest { id: id.to_string() },
                Some(CALL_TIMEOUT),
            )
            .await?;
        Ok(any_in(r.stats))
    }

    /// Waits as long as the process runs (no timeout).
    pub async fn wait(&self, p: &ProcessRef) -> Result<Exited> {
        let r: api::WaitResponse = self
            .call(
                "Wait",
                &api::WaitRequest {
                    id: p.container_id.clone(),
                    exec_id: p.exec_id.clone(),
                },
                None,
            )
            .await?;
        Ok(Exited {
            pid: 0,
            exit_status: r.exit_status,
            exited_at: time::from_proto(r.exited_at.as_ref()),
        })
    }
}

/// The shim wire over ttrpc, as the runtime is handed it.
pub struct TtrpcShims;

impl ShimWire for TtrpcShims {
    fn start_input(&self, req: &StartRequest<'_>) -> Vec<u8> {
        bootstrap::start_input(req)
    }

    fn decode_started(&self, stdout: &[u8]) -> Option<Started> {
        bootstrap::decode_started(stdout)
    }

    fn connect<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Result<Box<dyn ShimApi>>> {
        Box::pin(async move {
            let c: Box<dyn ShimApi> = Box::new(ShimClient::negotiate(socket).await?);
            Ok(c)
        })
    }

    fn connect_v2<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Result<Box<dyn ShimApi>>> {
        Box::pin(async move {
            let c: Box<dyn ShimApi> = Box::new(ShimClient::connect(socket).await?);
            Ok(c)
        })
    }

    fn decode_deleted(&self, stdout: &[u8]) -> Exited {
        decode_deleted(stdout)
    }

    fn runc_options(
        &self,
        given: Option<AnyValue>,
        runc_root: &Path,
    ) -> (AnyValue, Option<String>) {
        runc_options(given, runc_root)
    }
}

impl ShimApi for ShimClient {
    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(ShimClient::closed(self))
    }
    fn create<'a>(
        &'a self,
        bundle: &'a Path,
        req: CreateTask,
        checkpoint: Option<&'a Path>,
    ) -> BoxFuture<'a, Result<u32>> {
        Box::pin(ShimClient::create(self, bundle, req, checkpoint))
    }
    fn checkpoint<'a>(
        &'a self,
        id: &'a str,
        images: &'a Path,
        options: Option<AnyValue>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(ShimClient::checkpoint(self, id, images, options))
    }
    fn start<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<u32>> {
        Box::pin(ShimClient::start(self, p))
    }
    fn state<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<ProcessState>> {
        Box::pin(ShimClient::state(self, p))
    }
    fn delete<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<Exited>> {
        Box::pin(ShimClient::delete(self, p))
    }
    fn shutdown<'a>(&'a self, id: &'a str, now: bool) -> BoxFuture<'a, ()> {
        Box::pin(ShimClient::shutdown(self, id, now))
    }
    fn kill<'a>(&'a self, p: &'a ProcessRef, signal: u32, all: bool) -> BoxFuture<'a, Result<()>> {
        Box::pin(ShimClient::kill(self, p, signal, all))
    }
    fn exec(&self, e: ExecProcess) -> BoxFuture<'_, Result<()>> {
        Box::pin(ShimClient::exec(self, e))
    }
    fn resize<'a>(&'a self, r: &'a Resize) -> BoxFuture<'a, Result<()>> {
        Box::pin(ShimClient::resize(self, r))
    }
    fn close_stdin<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<()>> {
        Box::pin(ShimClient::close_stdin(self, p))
    }
    fn pause<'a>(&'a self, id: &'a str, pause: bool) -> BoxFuture<'a, Result<()>> {
        Box::pin(ShimClient::pause(self, id, pause))
    }
    fn pids<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<ProcessInfo>>> {
        Box::pin(ShimClient::pids(self, id))
    }
    fn update(&self, u: UpdateTask) -> BoxFuture<'_, Result<()>> {
        Box::pin(ShimClient::update(self, u))
    }
    fn stats<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AnyValue>>> {
        Box::pin(ShimClient::stats(self, id))
    }
    fn wait<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<Exited>> {
        Box::pin(ShimClient::wait(self, p))
    }
}

/// A stand-in shim for the runtime's tests: speaks ttrpc on a unix socket, answers the Task
/// calls a task's life needs, and can die on purpose.
/// The figures of a shim's Stats answer (containerd's `io.containerd.cgroups.v1/v2.Metrics`);
/// None for another type or bytes that do not decode.
pub fn cgroup_figures(any: &AnyValue) -> Option<CgroupFigures> {
    use berth_proto::cgroups::{v1, v2};
    if any.type_url.ends_with("io.containerd.cgroups.v1.Metrics") {
        let m = v1::Metrics::decode(any.value.as_slice()).ok()?;
        let cpu = m.cpu.and_then(|c| c.usage).unwrap_or_default();
        let mem = m.memory.unwrap_or_default();
        let usage = mem.usage.unwrap_or_default();
        let pids = m.pids.unwrap_or_default();
        return Some(CgroupFigures {
            cpu_ns: cpu.total,
            cpu_user_ns: cpu.user,
            cpu_system_ns: cpu.kernel,
            memory_usage: usage.usage,
            memory_limit: usage.limit,
            memory_working_set: usage.usage.saturating_sub(mem.total_inactive_file),
            memory_rss: mem.total_rss,
            page_faults: mem.total_pg_fault,
            major_page_faults: mem.total_pg_maj_fault,
            oom_kills: m.memory_oom_control.unwrap_or_default().oom_kill,
            pids: pids.current,
            pids_limit: pids.limit,
            ..Default::default()
        });
    }
    if !any.type_url.ends_with("io.containerd.cgroups.v2.Metrics") {
        return None;
    }
    let m = v2::Metrics::decode(any.value.as_slice()).ok()?;
    let (cpu, mem, pids) = (
        m.cpu.unwrap_or_default(),
        m.memory.unwrap_or_default(),
        m.pids.unwrap_or_default(),
    );
    let events = m.memory_events.unwrap_or_default();
    let io = m.io.unwrap_or_default();
    let (read, write) = io
        .usage
        .iter()
        .fold((0u64, 0u64), |(r, w), e| (r + e.rbytes, w + e.wbytes));
    Some(CgroupFigures {
        cpu_ns: cpu.usage_usec * 1000,
        cpu_user_ns: cpu.user_usec * 1000,
        cpu_system_ns: cpu.system_usec * 1000,
        cpu_throttled_periods: Some(cpu.nr_throttled),
        memory_usage: mem.usage,
        memory_limit: mem.usage_limit,
        memory_working_set: mem.usage.saturating_sub(mem.inactive_file),
        memory_rss: mem.anon,
        memory_anon: Some(mem.anon),
        memory_file: Some(mem.file),
        page_faults: mem.pgfault,
        major_page_faults: mem.pgmajfault,
        oom_events: Some(events.oom),
        oom_kills: events.oom_kill,
        pids: pids.current,
        pids_limit: pids.limit,
        io_read_bytes: Some(read),
        io_write_bytes: Some(write),
    })
}

#[cfg(test)]
pub(crate) mod fake {
    use berth_proto::containerd::task::v2 as api;
    use berth_proto::ttrpc::{Request, Response};
    use berth_proto::ttrpc_wire::{read_frame, write_frame, FrameType};
    use prost::Message;
    use std::path::Path;

    pub enum Mode {
        /// Accepts the connection and closes it: the shim died.
        Die,
        /// Answers until asked to Shutdown, then closes the connection (as a shim exits).
        Serve,
        /// As Serve, but only under Task API v3's name (containerd 2.x's shims); the v2 name
        /// is answered Unimplemented, as ttrpc answers a service it does not have.
        ServeV3,
    }

    pub const PID: u32 = 42;

    pub fn serve(path: &Path, mode: Mode) -> std::thread::JoinHandle<()> {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            if matches!(mode, Mode::Die) {
                return;
            }
            while let Ok((h, payload)) = read_frame(&mut conn) {
                let req = Request::decode(payload.as_slice()).unwrap();
                if matches!(mode, Mode::ServeV3) && req.service != "containerd.task.v3.Task" {
                    let resp = Response {
                        status: Some(berth_proto::google::rpc::Status {
                            code: 12,
                            message: format!("service {}", req.service),
                            details: vec![],
                        }),
                        payload: vec![],
                    };
                    let frame = resp.encode_to_vec();
                    write_frame(&mut conn, h.stream_id, FrameType::Response, &frame).unwrap();
                    continue;
                }
                let body = match req.method.as_str() {
                    "Delete" => api::DeleteResponse {
                        pid: PID,
                        exit_status: 0,
                        exited_at: Some(berth_proto::vocab::time::to_proto(1)),
                    }
                    .encode_to_vec(),
                    "State" => api::StateResponse {
                        id: "c1".into(),
                        pid: PID,
                        status: berth_proto::containerd::v1::types::Status::Running as i32,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    _ => vec![],
                };
                let resp = Response {
                    status: None,
                    payload: body,
                };
                write_frame(
                    &mut conn,
                    h.stream_id,
                    FrameType::Response,
                    &resp.encode_to_vec(),
                )
                .unwrap();
                if req.method == "Shutdown" {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod cgroup_tests {
    use super::*;
    use berth_proto::cgroups::{v1, v2};

    fn any(type_url: &str, value: Vec<u8>) -> AnyValue {
        AnyValue {
            type_url: type_url.into(),
            value,
        }
    }

    #[test]
    fn both_cgroup_versions_read_and_other_types_refused() {
        let m2 = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 5,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                usage: 100,
                inactive_file: 30,
                anon: 60,
                ..Default::default()
            }),
            io: Some(v2::IoStat {
                usage: vec![
                    v2::IoEntry {
                        rbytes: 1,
                        wbytes: 2,
                        ..Default::default()
                    },
                    v2::IoEntry {
                        rbytes: 10,
                        wbytes: 20,
                        ..Default::default()
                    },
                ],
            }),
            ..Default::default()
        };
        let f = cgroup_figures(&any(
            "types.containerd.io/io.containerd.cgroups.v2.Metrics",
            m2.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(
            (f.cpu_ns, f.memory_working_set, f.memory_rss),
            (5000, 70, 60)
        );
        assert_eq!((f.io_read_bytes, f.io_write_bytes), (Some(11), Some(22)));
        let m1 = v1::Metrics {
            memory: Some(v1::MemoryStat {
                total_rss: 7,
                usage: Some(v1::MemoryEntry {
                    usage: 50,
                    limit: 64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f =
            cgroup_figures(&any("io.containerd.cgroups.v1.Metrics", m1.encode_to_vec())).unwrap();
        assert_eq!((f.memory_usage, f.memory_limit, f.memory_rss), (50, 64, 7));
        assert_eq!(f.io_read_bytes, None);
        assert!(
            cgroup_figures(&any("io.containerd.cgroups.v2.Metrics", vec![0xff, 0xff])).is_none()
        );
        assert!(cgroup_figures(&any("google.protobuf.Empty", vec![])).is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_keep_state_under_berth() {
        let root = Path::new("/run/berth/runc");
        let (a, binary) = runc_options(None, root);
        assert_eq!((a.type_url.as_str(), binary), (RUNC_OPTIONS, None));
        let o = berth_proto::containerd::runc::v1::Options::decode(a.value.as_slice()).unwrap();
        assert_eq!(o.root, "/run/berth/runc");

        let given = berth_proto::containerd::runc::v1::Options {
            root: "/elsewhere".into(),
            systemd_cgroup: true,
            binary_name: "/usr/local/bin/crun".into(),
            ..Default::default()
        };
        let (a, binary) = runc_options(
            Some(AnyValue {
                type_url: format!("type.googleapis.com/{RUNC_OPTIONS}"),
                value: given.encode_to_vec(),
            }),
            root,
        );
        let o = berth_proto::containerd::runc::v1::Options::decode(a.value.as_slice()).unwrap();
        assert_eq!((o.root.as_str(), o.systemd_cgroup), ("/elsewhere", true));
        assert_eq!(o.binary_name, "/usr/local/bin/crun");
        assert_eq!(binary.as_deref(), Some("/usr/local/bin/crun"));

        let other = AnyValue {
            type_url: "example.com/Other".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(runc_options(Some(other.clone()), root), (other, None));
    }

    #[tokio::test]
    async fn the_task_api_version_is_asked_of_the_shim() {
        use super::fake::{self, Mode};
        let dir = tempfile::tempdir().unwrap();
        for (mode, service) in [(Mode::Serve, TASK_V2), (Mode::ServeV3, TASK_V3)] {
            let socket = dir.path().join(format!("{service}.sock"));
            fake::serve(&socket, mode);
            let shim = ShimClient::negotiate(&socket).await.unwrap();
            assert_eq!(shim.service, service);
            let p = ProcessRef {
                container_id: "c1".into(),
                exec_id: String::new(),
            };
            assert_eq!(shim.state(&p).await.unwrap().pid, fake::PID);
        }
    }

    #[test]
    fn statuses_round_trip_and_deleted_output_decodes() {
        for s in [
            Status::Unknown,
            Status::Created,
            Status::Running,
            Status::Stopped,
            Status::Paused,
            Status::Pausing,
        ] {
            assert_eq!(status_in(status_out(s)), s);
        }
        assert_eq!(status_in(99), Status::Unknown);
        let out = api::DeleteResponse {
            pid: 42,
            exit_status: 3,
            exited_at: Some(time::to_proto(5_000_000_000)),
        }
        .encode_to_vec();
        assert_eq!(
            decode_deleted(&out),
            Exited {
                pid: 42,
                exit_status: 3,
                exited_at: 5_000_000_000
            }
        );
        assert_eq!(decode_deleted(b"\xff\xff garbage"), Exited::default());
    }
}
