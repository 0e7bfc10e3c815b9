//! berth's wire types: the containerd API v1 services, events and shared types, and the shim
//! v2 task API. Package and field numbering match containerd so existing clients work unchanged.

#![allow(clippy::all, missing_docs)]

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod berth {
    pub mod services {
        pub mod unpack {
            pub mod v1 {
                tonic::include_proto!("berth.services.unpack.v1");
            }
        }
        pub mod volumes {
            pub mod v1 {
                tonic::include_proto!("berth.services.volumes.v1");
            }
        }
        pub mod networks {
            pub mod v1 {
                tonic::include_proto!("berth.services.networks.v1");
            }
        }
        pub mod build {
            pub mod v1 {
                tonic::include_proto!("berth.services.build.v1");
            }
        }
        pub mod check {
            pub mod v1 {
                tonic::include_proto!("berth.services.check.v1");
            }
        }
    }
}

/// The Kubernetes Container Runtime Interface (`runtime.v1`), served by berthd's CRI adapter.
pub mod cri {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub mod ttrpc {
    tonic::include_proto!("ttrpc");
}

/// The Node Resource Interface (NRI v0.12) spoken with plugins over ttrpc: berthd serves
/// `Runtime` and calls `Plugin`.
pub mod nri {
    include!(concat!(env!("OUT_DIR"), "/ttrpc/nri.pkg.api.v1alpha1.rs"));
}

/// cgroup statistics, as containerd's Tasks.Metrics carries them.
pub mod cgroups {
    pub mod v1 {
        tonic::include_proto!("io.containerd.cgroups.v1");
    }
    pub mod v2 {
        tonic::include_proto!("io.containerd.cgroups.v2");
    }
}

pub mod ttrpc_wire;

pub mod containerd {
    /// The shim start handshake of containerd 2.3 (BootstrapParams in, BootstrapResult out).
    pub mod runtime {
        pub mod bootstrap {
            pub mod v1 {
                tonic::include_proto!("containerd.runtime.bootstrap.v1");
            }
        }
    }
    pub mod types {
        tonic::include_proto!("containerd.types");
        pub mod transfer {
            tonic::include_proto!("containerd.types.transfer");
        }
    }
    pub mod v1 {
        pub mod types {
            tonic::include_proto!("containerd.v1.types");
        }
    }
    pub mod events {
        tonic::include_proto!("containerd.events");
    }
    pub mod runc {
        pub mod v1 {
            tonic::include_proto!("containerd.runc.v1");
        }
    }
    pub mod task {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/ttrpc/containerd.task.v2.rs"));
        }
    }
    pub mod services {
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        pub mod namespaces {
            pub mod v1 {
                tonic::include_proto!("containerd.services.namespaces.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        pub mod version {
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
        pub mod introspection {
            pub mod v1 {
                tonic::include_proto!("containerd.services.introspection.v1");
            }
        }
        pub mod events {
            pub mod v1 {
                tonic::include_proto!("containerd.services.events.v1");
            }
            pub mod berth {
                pub mod services {
                    pub mod unpack {
                        pub mod v1 {
                            tonic::include_proto!("berth.services.unpack.v1");
                        }
                    }
                }
            }

            pub mod ttrpc {
                pub mod v1 {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/ttrpc/containerd.services.events.ttrpc.v1.rs"
                    ));
                }
            }
        }
        pub mod containers {
            pub mod v1 {
                tonic::include_proto!("containerd.services.containers.v1");
            }
        }
        pub mod tasks {
            pub mod v1 {
                tonic::include_proto!("containerd.services.tasks.v1");
            }
        }
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        pub mod transfer {
            pub mod v1 {
                tonic::include_proto!("containerd.services.transfer.v1");
            }
        }
        pub mod streaming {
            pub mod v1 {
                tonic::include_proto!("containerd.services.streaming.v1");
            }
        }
        pub mod mounts {
            pub mod v1 {
                tonic::include_proto!("containerd.services.mounts.v1");
            }
        }
        pub mod sandbox {
            pub mod v1 {
                tonic::include_proto!("containerd.services.sandbox.v1");
            }
        }
    }
}

pub use containerd::services::{
    containers::v1 as containers, content::v1 as content, diff::v1 as diff, events::v1 as events,
    images::v1 as images, introspection::v1 as introspection, leases::v1 as leases,
    mounts::v1 as mounts, namespaces::v1 as namespaces, snapshots::v1 as snapshots,
    streaming::v1 as streaming, tasks::v1 as tasks, transfer::v1 as transfer,
    version::v1 as version,
};
pub use containerd::types;

pub mod vocab;

/// Packs a message into an `Any` with containerd's bare type URL (no `type.googleapis.com/`).
pub fn to_any<M: prost::Message + prost::Name>(msg: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: M::full_name(),
        value: msg.encode_to_vec(),
    }
}
