//! How far a layer may inflate. A gzip of zeros 10 MB long decodes to 10 GiB, and neither the
//! OCI specs nor containerd bound it, so berth offers two bounds, both off by default: one
//! per layer (every writer that applies a layer: pull, import, unpack, build, Diff's Apply)
//! and one per pull (the layers one pull unpacks, together). The applier counts the
//! uncompressed stream as it reads it and stops as soon as a bound is passed, having written
//! at most one read (256 KiB) beyond it; it also stops when the filesystem it writes to falls
//! under the free-space floor a pull's downloads keep ([`floor`]).
//!
//! The bounds are the daemon's policy: set from its configuration at start and on SIGHUP
//! ([`set`]) and read by every applier, so no writer can forget to pass them on.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The configuration keys, as error messages name them.
pub const LAYER_KEY: &str = "limits.max_layer_uncompressed_bytes";
pub const PULL_KEY: &str = "limits.max_pull_uncompressed_bytes";

/// How many bytes an applier writes between two looks at the free space.
pub const CHECK_EVERY: u64 = 4 << 20;

/// Bytes; 0 is no bound.
static MAX_LAYER: AtomicU64 = AtomicU64::new(0);
static MAX_PULL: AtomicU64 = AtomicU64::new(0);

/// The uncompressed bounds in force (bytes; 0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_layer: u64,
    pub max_pull: u64,
}

/// Puts `limits` in force for every layer applied from now on.
pub fn set(limits: Limits) {
    MAX_LAYER.store(limits.max_layer, Ordering::SeqCst);
    MAX_PULL.store(limits.max_pull, Ordering::SeqCst);
}

pub fn current() -> Limits {
    Limits {
        max_layer: MAX_LAYER.load(Ordering::SeqCst),
        max_pull: MAX_PULL.load(Ordering::SeqCst),
    }
}

/// The free-space floor on a filesystem of `total` bytes: 1% of it, at most 256 MiB. Under
/// it, pulls, imports and unpacks stop rather than fill the disk to its last block (where
/// every other writer — the metadata store, containers, their logs — would fail too).
pub fn floor(total: u64) -> u64 {
    (total / 100).min(256 << 20)
}

/// Bytes free (to unprivileged writers) and in all on the filesystem holding `fd`; None
/// when it cannot be asked.
pub fn free_and_total(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    // SAFETY: statvfs is plain old data, valid all zeroes.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs fills the struct we pass, from a descriptor borrowed for the call.
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize))
}

/// Fails (StorageFull) when the filesystem holding `fd` (`shown` in the message) has fewer
/// bytes free than its [`floor`].
pub fn check_floor(fd: BorrowedFd<'_>, shown: &Path) -> io::Result<()> {
    let Some((free, total)) = free_and_total(fd) else {
        return Ok(()); // not knowing is no reason to stop
    };
    let floor = floor(total);
    if free < floor {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the disk is nearly full: {free} bytes left on the filesystem of {}, under the floor of {floor}; free space and try again",
                shown.display()
            ),
        ));
    }
    Ok(())
}

/// The uncompressed bytes one pull's layers may still inflate to, shared by all of them
/// (they are applied at once).
#[derive(Debug, Clone)]
pub struct PullBudget {
    used: Arc<AtomicU64>,
    max: u64,
}

impl PullBudget {
    /// A budget under the per-pull bound now in force.
    pub fn new() -> Self {
        Self::with_max(current().max_pull)
    }

    fn with_max(max: u64) -> Self {
        PullBudget {
            used: Arc::default(),
            max,
        }
    }
}

impl Default for PullBudget {
    fn default() -> Self {
        Self::new()
    }
}

fn exceeded(what: &str, max: u64, key: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::QuotaExceeded,
        format!(
            "{what} inflates past the limit of {max} uncompressed bytes; raise {key} in berthd's config (0: no limit), then SIGHUP berthd"
        ),
    )
}

/// A layer's uncompressed stream that fails once it passes a bound, or once the filesystem
/// under `target` falls under its floor.
pub(crate) struct Bounded<R> {
    inner: R,
    read: u64,
    max_layer: u64,
    pull: Option<PullBudget>,
    /// The directory written to, for the free space under it (None: it could not be opened).
    target: Option<std::fs::File>,
    shown: PathBuf,
    unchecked: u64,
}

impl<R> Bounded<R> {
    pub(crate) fn new(inner: R, target: &Path, pull: Option<&PullBudget>) -> Self {
        Bounded {
            inner,
            read: 0,
            max_layer: current().max_layer,
            pull: pull.cloned(),
            target: std::fs::File::open(target).ok(),
            shown: target.to_path_buf(),
            unchecked: CHECK_EVERY,
        }
    }

    fn check(&mut self, n: u64) -> io::Result<()> {
        self.read += n;
        if self.max_layer > 0 && self.read > self.max_layer {
            return Err(exceeded("the layer", self.max_layer, LAYER_KEY));
        }
        if let Some(p) = self.pull.as_ref().filter(|p| p.max > 0) {
            if p.used.fetch_add(n, Ordering::SeqCst) + n > p.max {
                return Err(exceeded("the pull's layers", p.max, PULL_KEY));
            }
        }
        self.unchecked += n;
        if self.unchecked >= CHECK_EVERY {
            self.unchecked = 0;
            self.check_floor()?;
        }
        Ok(())
    }

    fn check_floor(&self) -> io::Result<()> {
        match &self.target {
            Some(dir) => check_floor(dir.as_fd(), &self.shown),
            None => Ok(()),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.check(n as u64)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(r: &mut impl Read) -> io::Result<u64> {
        io::copy(r, &mut io::sink())
    }

    #[test]
    fn a_layer_past_its_bound_stops_there() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = io::repeat(0).take(10 << 20);
        let mut b = Bounded::new(zeros, dir.path(), None);
        b.max_layer = 1 << 20;
        let e = drain(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::QuotaExceeded);
        assert!(e.to_string().contains(LAYER_KEY), "{e}");
        assert!(b.read <= (1 << 20) + (64 << 10), "read {} bytes", b.read);
    }

    #[test]
    fn a_pull_budget_is_shared_by_its_layers() {
        let dir = tempfile::tempdir().unwrap();
        let budget = PullBudget::with_max(3 << 20);
        let mut first = Bounded::new(io::repeat(0).take(2 << 20), dir.path(), Some(&budget));
        first.max_layer = 0;
        assert_eq!(drain(&mut first).unwrap(), 2 << 20);
        let mut second = Bounded::new(io::repeat(0).take(2 << 20), dir.path(), Some(&budget));
        second.max_layer = 0;
        let e = drain(&mut second).unwrap_err();
        assert!(e.to_string().contains(PULL_KEY), "{e}");
    }

    #[test]
    fn within_bounds_everything_passes() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Bounded::new(io::repeat(0).take(5 << 20), dir.path(), None);
        b.max_layer = 5 << 20;
        assert_eq!(drain(&mut b).unwrap(), 5 << 20);
    }

    #[test]
    fn the_floor_is_a_percent_of_the_disk_up_to_256_mib() {
        assert_eq!(floor(128 << 20), (128 << 20) / 100);
        assert_eq!(floor(1 << 40), 256 << 20);
    }
}
