//! The whiteout vocabulary: how a layer says "deleted" and "replaced" (OCI's `.wh.` names),
//! how overlayfs says the same in an upper directory, and which of the two a target wants.
//! Layers (apply, diff) and mounts (where a layer is applied) both speak it; it depends on
//! nothing else in the crate.

use std::ffi::CStr;

/// A layer entry named `.wh.<name>` deletes `<name>` from the layers below.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// A layer entry with this name hides everything lower layers put in its directory.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr (value `y`) that makes an overlay upper directory hide its lower directories.
/// An overlay deletion is a 0/0 character device of the deleted name.
pub const OVERLAY_OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// What a layer's whiteouts become in the directory it is applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The target is an overlay upper directory: record whiteouts for the kernel.
    Overlay,
    /// The target is a whole tree: whiteouts delete.
    Delete,
}
