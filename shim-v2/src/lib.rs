//! containerd-shim-berth-v2 building blocks. The ttrpc wire format lives in
//! `berth_proto::ttrpc_wire`, shared with the daemon.

pub use berth_proto::ttrpc_wire as wire;
