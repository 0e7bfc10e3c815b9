//! Free space while writing what a pull or an import brings: they stop, with a clear error,
//! when the filesystem they write to has less than a floor left, rather than filling it to
//! its last block (where every other writer — the metadata store, containers, their logs —
//! would fail too). A layer may inflate to far more than its download, so the floor is looked
//! at as the bytes arrive, not once at the start, by the ingest here and by the layer's
//! applier (the floor and its check live with the layer limits,
//! `berth_snapshotters::layer::limits`).

use crate::core::error::{Error, Result};
use berth_snapshotters::layer::limits;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

/// How many bytes a writer takes between two looks at the free space.
pub(crate) const CHECK_EVERY: u64 = limits::CHECK_EVERY;

/// The file's path, as the kernel knows it (for errors).
fn path_of(file: &std::fs::File) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default()
}

/// Fails with ResourceExhausted when the filesystem holding `file` has fewer bytes free than
/// its floor; `what` says what was being written.
pub(crate) fn check(file: &std::fs::File, what: &str) -> Result<()> {
    limits::check_floor(file.as_fd(), &path_of(file)).map_err(|e| Error::io(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_with_room_passes() {
        let f = tempfile::tempfile().unwrap();
        check(&f, "a test").unwrap();
    }
}
