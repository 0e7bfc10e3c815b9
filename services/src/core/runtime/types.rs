//! The runtime's own vocabulary: what callers ask of a task and what a task reports, in core
//! types. The shim API's messages appear only in `shim_client`, the runtime's ttrpc edge.

use crate::core::metadata::containers::AnyValue;
use crate::core::metadata::{Labels, Timestamp};
use berth_snapshotters::Mount;

/// A request to create a container's task (its init process, created but not started).
#[derive(Debug, Clone, Default)]
pub struct CreateTask {
    pub container_id: String,
    /// The root filesystem; empty means "the container's snapshot".
    pub rootfs: Vec<Mount>,
    pub io: Stdio,
    /// Runtime options (e.g. `containerd.runc.v1.Options`); the container's own when unset.
    pub options: Option<AnyValue>,
}

/// Where a process's standard streams go: FIFO paths or `file://`/`binary://` URIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// An additional process in a running task.
#[derive(Debug, Clone, Default)]
pub struct ExecProcess {
    pub container_id: String,
    pub exec_id: String,
    pub io: Stdio,
    /// The process spec (`types.containerd.io/opencontainers/runtime-spec/1/Process`).
    pub spec: Option<AnyValue>,
}

/// Identifies a process: a task's init process when `exec_id` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessRef {
    pub container_id: String,
    pub exec_id: String,
}

/// A process's lifecycle state, as containerd numbers them on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Status {
    #[default]
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// What a task or exec reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessState {
    pub container_id: String,
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub io: Stdio,
    pub exit_status: u32,
    /// 0 while the process runs.
    pub exited_at: Timestamp,
}

/// How a process ended (deletion and wait report this).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exited {
    pub pid: u32,
    pub exit_status: u32,
    /// 0 when the shim did not say.
    pub exited_at: Timestamp,
}

/// A process inside a task, as the shim lists them (`info` is runtime-specific).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub info: Option<AnyValue>,
}

/// New resource limits for a running task.
#[derive(Debug, Clone, Default)]
pub struct UpdateTask {
    pub container_id: String,
    /// `opencontainers/runtime-spec/1/LinuxResources` (or the Windows equivalent).
    pub resources: Option<AnyValue>,
    pub annotations: Labels,
}

/// A terminal's new size.
#[derive(Debug, Clone, Default)]
pub struct Resize {
    pub process: ProcessRef,
    pub width: u32,
    pub height: u32,
}

/// The exit a dead shim's task is reported with when its shim could not say better.
pub const KILLED_EXIT_STATUS: u32 = 137;

/// A container's cgroup figures as the shim reports them (cgroup v1 or v2), in the units the
/// kernel counts. What one version has and the other lacks is None.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupFigures {
    pub cpu_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_throttled_periods: Option<u64>,
    pub memory_usage: u64,
    pub memory_limit: u64,
    /// Usage less inactive file pages: what the kubelet calls the working set.
    pub memory_working_set: u64,
    /// Resident anonymous memory (v1 total_rss, v2 anon).
    pub memory_rss: u64,
    pub memory_anon: Option<u64>,
    pub memory_file: Option<u64>,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub oom_events: Option<u64>,
    pub oom_kills: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}
