//! Free space while writing what a pull or an import brings: they stop, with a clear error,
//! when the filesystem they write to has less than a floor left, rather than filling it to
//! its last block (where every other writer — the metadata store, containers, their logs —
//! would fail too). A layer may inflate to far more than its download, so the floor is looked
//! at as the bytes arrive, not once at the start.

use crate::core::error::{Error, Kind, Result};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// How many bytes a writer takes between two looks at the free space.
pub(crate) const CHECK_EVERY: u64 = 4 << 20;

/// The floor on a filesystem of `total` bytes: 1% of it, at most 256 MiB.
pub(crate) fn floor(total: u64) -> u64 {
    (total / 100).min(256 << 20)
}

/// The file's path, as the kernel knows it (for errors).
fn path_of(file: &std::fs::File) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default()
}

/// Fails with ResourceExhausted when the filesystem holding `file` has fewer bytes free than
/// its floor; `what` says what was being written.
pub(crate) fn check(file: &std::fs::File, what: &str) -> Result<()> {
    // SAFETY: statvfs is plain old data, valid all zeroes.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs fills the struct we pass, from a descriptor we hold.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Ok(()); // not knowing is no reason to stop
    }
    let (free, total) = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize);
    let floor = floor(total);
    if free < floor {
        return Err(Error::new(
            Kind::ResourceExhausted,
            format!(
                "{what}: the disk is nearly full: {free} bytes left on the filesystem of {}, under the floor of {floor}; free space and try again",
                path_of(file).display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_a_percent_of_the_disk_up_to_256_mib() {
        assert_eq!(floor(128 << 20), (128 << 20) / 100);
        assert_eq!(floor(1 << 40), 256 << 20);
    }

    #[test]
    fn a_filesystem_with_room_passes() {
        let f = tempfile::tempfile().unwrap();
        check(&f, "a test").unwrap();
    }
}
