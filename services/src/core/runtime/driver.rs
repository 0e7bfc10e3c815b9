//! What the runtime needs of the shims' wire, in core types: a connection to one shim
//! ([`ShimApi`], containerd's shim v2 Task API) and the rest of the protocol around it
//! ([`ShimWire`]: what a shim is given and answers at `start`, connecting, reading what
//! `<shim> delete` printed, runc's options). The ttrpc implementation is an edge
//! (`crate::edge::shim`); the daemon's wiring hands it in.

use super::types::{
    CreateTask, ExecProcess, Exited, ProcessInfo, ProcessRef, ProcessState, Resize, UpdateTask,
};
use crate::core::error::Result;
use crate::core::metadata::containers::AnyValue;
use futures::future::BoxFuture;
use std::path::Path;

/// What a shim reads on its stdin at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartProtocol {
    /// The runtime options as a protobuf `Any` (or nothing): shims before containerd 2.3.
    Options,
    /// containerd 2.3's `BootstrapParams`, the options among its extensions.
    Bootstrap,
}

/// What berthd tells a shim at `start`, beyond its command line.
pub struct StartRequest<'a> {
    pub protocol: StartProtocol,
    pub id: &'a str,
    pub namespace: &'a str,
    /// berthd's gRPC socket.
    pub grpc_address: &'a Path,
    /// Where shims forward task events.
    pub ttrpc_address: &'a Path,
    /// berthd's own binary (containerd's "publish binary").
    pub daemon: &'a Path,
    /// Where a shim that asks the caller puts its socket (`<state>/s`).
    pub socket_dir: &'a Path,
    pub options: Option<&'a AnyValue>,
}

/// A shim's answer to `start`: where it listens, the Task API version it serves there
/// (2 or 3) and over which protocol (`ttrpc` or `grpc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub version: i32,
    pub address: String,
    pub protocol: String,
}

/// A connection to one shim.
pub trait ShimApi: Send + Sync {
    /// Resolves once the shim's connection is gone.
    fn closed(&self) -> BoxFuture<'_, ()>;
    /// Creates the task; with `checkpoint` (a directory of CRIU images), to be restored from
    /// it at Start.
    fn create<'a>(
        &'a self,
        bundle: &'a Path,
        req: CreateTask,
        checkpoint: Option<&'a Path>,
    ) -> BoxFuture<'a, Result<u32>>;
    /// Dumps the running task into `images` (CRIU), with the runtime's checkpoint options.
    fn checkpoint<'a>(
        &'a self,
        id: &'a str,
        images: &'a Path,
        options: Option<AnyValue>,
    ) -> BoxFuture<'a, Result<()>>;
    fn start<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<u32>>;
    fn state<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<ProcessState>>;
    fn delete<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<Exited>>;
    /// Asks the shim to exit (`now`: even with processes left); errors are of no interest.
    fn shutdown<'a>(&'a self, id: &'a str, now: bool) -> BoxFuture<'a, ()>;
    fn kill<'a>(&'a self, p: &'a ProcessRef, signal: u32, all: bool) -> BoxFuture<'a, Result<()>>;
    fn exec(&self, e: ExecProcess) -> BoxFuture<'_, Result<()>>;
    fn resize<'a>(&'a self, r: &'a Resize) -> BoxFuture<'a, Result<()>>;
    fn close_stdin<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<()>>;
    /// Freezes (`pause`) or thaws the task.
    fn pause<'a>(&'a self, id: &'a str, pause: bool) -> BoxFuture<'a, Result<()>>;
    fn pids<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Vec<ProcessInfo>>>;
    fn update(&self, u: UpdateTask) -> BoxFuture<'_, Result<()>>;
    fn stats<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AnyValue>>>;
    /// Waits as long as the process runs (no timeout).
    fn wait<'a>(&'a self, p: &'a ProcessRef) -> BoxFuture<'a, Result<Exited>>;
}

/// The shim protocol around a connection.
pub trait ShimWire: Send + Sync {
    /// The bytes written to a shim's stdin at `start`.
    fn start_input(&self, req: &StartRequest<'_>) -> Vec<u8>;
    /// What a shim printed on stdout at `start`, whichever generation it is; None when it
    /// names no address at all.
    fn decode_started(&self, stdout: &[u8]) -> Option<Started>;
    /// Connects to the shim listening on `socket`, on whichever Task API version (2 or 3)
    /// it serves.
    fn connect<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Result<Box<dyn ShimApi>>>;
    /// Connects to a shim known to serve the Task API v2 (berth's own), without asking.
    fn connect_v2<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Result<Box<dyn ShimApi>>>;
    /// What `<shim> delete` printed on stdout; garbage reads as nothing.
    fn decode_deleted(&self, stdout: &[u8]) -> Exited;
    /// The runtime options a task is created with: runc's options with runc's state
    /// directory set to `runc_root` when the caller left it empty; other runtimes' options
    /// untouched. Also the runtime binary runc's options name, if any.
    fn runc_options(&self, given: Option<AnyValue>, runc_root: &Path)
        -> (AnyValue, Option<String>);
}
