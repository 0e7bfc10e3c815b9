//! containerd-shim-berth-v2: one process per container that drives runc, reaps the
//! container's processes as a subreaper, serves containerd's shim v2 Task API over ttrpc and
//! forwards task events to the daemon. Plain threads and blocking calls: no async runtime,
//! so the shim stays a few megabytes.

pub mod cgroups;
pub mod console;
pub mod events;
pub mod reaper;
pub mod runc;
pub mod server;
pub mod service;

pub use berth_proto::ttrpc_wire as wire;

/// Nanoseconds since the epoch as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
