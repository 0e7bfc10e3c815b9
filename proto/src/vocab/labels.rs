//! Label and annotation keys containerd's clients read and write.

/// Content or snapshots with this label are roots for garbage collection.
pub const GC_ROOT: &str = "containerd.io/gc.root";
/// A lease's expiry (RFC 3339); expired leases are deleted by garbage collection.
pub const GC_EXPIRE: &str = "containerd.io/gc.expire";
/// Prefix of content references (`containerd.io/gc.ref.content[.<name>]`).
pub const GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Prefix of snapshot references (`containerd.io/gc.ref.snapshot.<snapshotter>`).
pub const GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
/// Back references: the object so labelled is kept while the container, content, image or
/// (`…snapshot.<snapshotter>`) snapshot the label's value names is.
pub const GC_BREF_CONTAINER: &str = "containerd.io/gc.bref.container";
pub const GC_BREF_CONTENT: &str = "containerd.io/gc.bref.content";
pub const GC_BREF_IMAGE: &str = "containerd.io/gc.bref.image";
pub const GC_BREF_SNAPSHOT: &str = "containerd.io/gc.bref.snapshot.";
/// A compressed layer's uncompressed digest (its diffID).
pub const UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Where a blob was pulled from (`containerd.io/distribution.source.<registry>`).
pub const DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source.";
/// An image's name, on a manifest inside an OCI layout's index.
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI's annotation for an image layout entry's reference (a tag, or a whole name).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The image's STOPSIGNAL, kept on the container.
pub const STOP_SIGNAL: &str = "io.containerd.image.config.stop-signal";

/// A manifest's reference to its config.
pub fn gc_ref_config() -> String {
    format!("{GC_REF_CONTENT}.config")
}

/// A manifest's reference to its `i`th layer.
pub fn gc_ref_layer(i: usize) -> String {
    format!("{GC_REF_CONTENT}.l.{i}")
}

/// An index's reference to its `i`th manifest.
pub fn gc_ref_manifest(i: usize) -> String {
    format!("{GC_REF_CONTENT}.m.{i}")
}

/// A reference to a snapshot in `snapshotter`.
pub fn gc_ref_snapshot(snapshotter: &str) -> String {
    format!("{GC_REF_SNAPSHOT}{snapshotter}")
}
