//! containerd-shim-berth-v2: one process per container that creates its container
//! (itself, through libcontainer, or by running runc), reaps the
//! container's processes as a subreaper, serves containerd's shim v2 Task API over ttrpc and
//! forwards task events to the daemon. Plain threads and blocking calls: no async runtime,
//! so the shim stays a few megabytes.

pub mod cgroups;
pub mod confine;
pub mod console;
pub mod error;
pub mod events;
pub mod filter;
pub mod fork;
pub mod idmap;
pub mod native;
pub mod reaper;
pub mod rootfs;
pub mod rro;
pub mod runc;
pub mod server;
pub mod service;
pub mod stdio;
pub mod zygote;

pub use berth_proto::ttrpc_wire as wire;

/// Now, as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    berth_proto::vocab::time::to_proto(berth_proto::vocab::time::now_nanos())
}
