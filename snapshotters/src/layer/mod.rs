//! Changeset layers: applying OCI layers onto snapshots and producing them from snapshots.

pub mod apply;
pub mod diff;
pub mod inflate;
pub mod limits;
pub mod root;

pub use apply::{apply, apply_in_pull, Applied};
pub use diff::{write_changes, Changes};
pub use limits::PullBudget;
// Callers name it `layer::Whiteouts`, as `apply`'s argument; it lives in `crate::whiteout`.
pub use crate::whiteout::Whiteouts;

use crate::mount::{apply_target, bind_source, overlay_upper, TempMount};
use crate::{Mount, Result};
use std::io::{Read, Write};

/// Applies a layer to what `mounts` describe: straight into an overlay upper or bind source,
/// or through a temporary mount for any other shape.
pub fn apply_to_mounts(layer: impl Read, mounts: &[Mount]) -> Result<Applied> {
    if let Some((dir, whiteouts)) = apply_target(mounts) {
        return apply(layer, &dir, whiteouts);
    }
    let m = TempMount::new(mounts)?;
    apply(layer, m.path(), Whiteouts::Delete)
}

/// Writes the change from `lower` to `upper` as an uncompressed tar stream.
pub fn diff_mounts<W: Write>(lower: &[Mount], upper: &[Mount], out: W) -> Result<W> {
    if let Some(u) = overlay_upper(upper) {
        return write_changes(Changes::OverlayUpper(&u), out);
    }
    let (_upper_mount, upper_dir) = match bind_source(upper) {
        Some(d) => (None, d),
        None => {
            let m = TempMount::new(upper)?;
            let d = m.path().to_path_buf();
            (Some(m), d)
        }
    };
    let (_lower_mount, lower_dir) = match (lower, bind_source(lower)) {
        ([], _) => (None, None),
        (_, Some(d)) => (None, Some(d)),
        _ => {
            let m = TempMount::new(lower)?;
            let d = m.path().to_path_buf();
            (Some(m), Some(d))
        }
    };
    write_changes(
        Changes::Trees {
            lower: lower_dir.as_deref(),
            upper: &upper_dir,
        },
        out,
    )
}

#[cfg(test)]
mod tests;
