//! The wire's vocabulary beyond protobuf, defined once for every crate: OCI and Docker media
//! types, containerd's label keys, chain IDs, and timestamps as containerd sends them.

pub mod chain;
pub mod crilog;
pub mod labels;
pub mod media;
pub mod time;
