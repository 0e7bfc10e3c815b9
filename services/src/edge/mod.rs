//! berthd's faces: the containerd API over gRPC ([`grpc`]), the Kubernetes CRI ([`cri`]) and
//! the NRI plugins beside it ([`nri`]),
//! HTTP/1 for metrics ([`http1`], [`metrics_endpoint`]), and the daemon's wiring
//! ([`daemon`]) that opens the core and serves the faces. Each converts between its wire and
//! the core's types; policy lives in [`crate::core`].

pub mod cri;
pub mod daemon;
pub mod grpc;
pub mod http1;
pub mod metrics_endpoint;
pub mod nri;
pub mod shim;
pub mod snapshotter_proxy;
