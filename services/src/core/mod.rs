//! berthd's core: one module per domain (content, images, snapshots, containers, tasks'
//! runtime, networks, volumes, builds, pulls…) over the metadata store, speaking its own
//! types. Nothing here names the wire (protobuf, tonic, HTTP): the faces in [`crate::edge`]
//! convert at the door. The runtime's southbound driver to shims is the one exception the
//! layering test names.

pub mod archive;
pub mod build;
pub mod check;
pub mod checkpoint;
pub mod containers;
pub mod content;
pub mod context;
pub mod diff;
pub mod error;
pub mod events;
pub mod filters;
pub mod gc;
pub mod images;
pub mod leases;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod mounts;
pub mod namespaces;
pub mod network;
pub mod oci;
pub mod plugins;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod restart;
pub mod runtime;
pub mod sandboxes;
pub mod seccomp;
pub mod snapshots;
pub mod spec;
pub mod unpack;
pub mod volumes;
