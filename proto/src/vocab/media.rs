//! OCI and Docker media types for image documents and layers.

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An index (OCI) or manifest list (Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// A single-platform manifest (OCI or Docker schema 2).
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// A layer its publisher forbids redistributing (OCI non-distributable, Docker foreign): an
/// export may leave it out, and an archive may lack it.
pub fn is_non_distributable(media_type: &str) -> bool {
    media_type.contains(".nondistributable.") || media_type.contains(".foreign.")
}

/// containerd's checkpoint media types: the CRIU image directory as a tar, the container's
/// spec (a protobuf `Any`), the checkpoint and runtime options (protobuf `Any`s).
pub const CHECKPOINT_CRIU_TAR: &str =
    "application/vnd.containerd.container.criu.checkpoint.criu.tar";
pub const CHECKPOINT_CONFIG: &str =
    "application/vnd.containerd.container.checkpoint.config.v1+proto";
pub const CHECKPOINT_OPTIONS: &str =
    "application/vnd.containerd.container.checkpoint.options.v1+proto";
/// The container's read-write layer (its changes to the image), an uncompressed tar.
pub const CHECKPOINT_RW: &str = "application/vnd.containerd.container.rw.tar";
pub const CHECKPOINT_RUNTIME_OPTIONS: &str =
    "application/vnd.containerd.container.checkpoint.runtime.options+proto";
