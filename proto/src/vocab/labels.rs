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

/// Remote snapshots (containerd's lazy-pull protocol). On Prepare during an unpack: the
/// snapshot a remote snapshotter commits in place of the layer, when it can serve the layer
/// itself (it then answers AlreadyExists).
pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// A layer descriptor's annotations under this prefix become labels of its snapshot.
pub const SNAPSHOT_INHERITED: &str = "containerd.io/snapshot/";
/// The layer's diffID and its parent's chain ID, on Prepare during an unpack.
pub const SNAPSHOT_DIFF_ID: &str = "containerd.io/snapshot/diff-id";
pub const SNAPSHOT_PARENT_CHAIN_ID: &str = "containerd.io/snapshot/parent-chain-id";
/// Where a remote snapshotter finds the layer: the image's name, its manifest, the layer, and
/// the layers from this one up (comma-separated, cut to fit a label). "cri" by history only:
/// every client that unpacks passes them.
pub const SNAPSHOT_IMAGE_REF: &str = "containerd.io/snapshot/cri.image-ref";
pub const SNAPSHOT_MANIFEST_DIGEST: &str = "containerd.io/snapshot/cri.manifest-digest";
pub const SNAPSHOT_LAYER_DIGEST: &str = "containerd.io/snapshot/cri.layer-digest";
pub const SNAPSHOT_IMAGE_LAYERS: &str = "containerd.io/snapshot/cri.image-layers";

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
