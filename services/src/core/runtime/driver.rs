//! What the runtime needs of the shims' wire, in core types: a connection to one shim
//! ([`ShimApi`], containerd's shim v2 Task API) and the rest of the protocol around it
//! ([`ShimWire`]: connecting, reading what `<shim> delete` printed, runc's options). The
//! ttrpc implementation is an edge (`crate::edge::shim`); the daemon's wiring hands it in.

use super::types::{
    CreateTask, ExecProcess, Exited, ProcessInfo, ProcessRef, ProcessState, Resize, UpdateTask,
};
use crate::core::error::Result;
use crate::core::metadata::containers::AnyValue;
use futures::future::BoxFuture;
use std::path::Path;

/// A connection to one shim.
pub trait ShimApi: Send + Sync {
    /// Resolves once the shim's connection is gone.
    fn closed(&self) -> BoxFuture<'_, ()>;
    fn create<'a>(&'a self, bundle: &'a Path, req: CreateTask) -> BoxFuture<'a, Result<u32>>;
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
    /// Connects to the shim listening on `socket`.
    fn connect<'a>(&'a self, socket: &'a Path) -> BoxFuture<'a, Result<Box<dyn ShimApi>>>;
    /// What `<shim> delete` printed on stdout; garbage reads as nothing.
    fn decode_deleted(&self, stdout: &[u8]) -> Exited;
    /// The runtime options a task is created with: runc's options with runc's state
    /// directory set to `runc_root` when the caller left it empty; other runtimes' options
    /// untouched. Also the runtime binary runc's options name, if any.
    fn runc_options(&self, given: Option<AnyValue>, runc_root: &Path)
        -> (AnyValue, Option<String>);
}
