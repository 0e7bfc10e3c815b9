//! berthd's core. Each module owns one domain and speaks in core types; `grpc` is the only
//! place that knows about protobuf and status codes.

pub mod archive;
pub mod build;
pub mod check;
pub mod containers;
pub mod content;
pub mod context;
pub mod cri;
pub mod daemon;
pub mod diff;
pub mod error;
pub mod events;
pub mod filters;
pub mod gc;
pub mod grpc;
pub mod http1;
pub mod images;
pub mod leases;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod metrics_endpoint;
pub mod namespaces;
pub mod network;
pub mod oci;
pub mod plugins;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod seccomp;
pub mod snapshots;
pub mod spec;
pub mod unpack;
pub mod volumes;

pub use error::{Error, Kind, Result};
