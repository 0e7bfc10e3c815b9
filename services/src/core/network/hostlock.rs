//! The host-wide lock under which a berthd chooses a new network's subnet and bridge: they
//! belong to the host, not to one daemon's root.

use crate::core::error::{Error, Result};

/// Where every berthd on the host serialises choosing a subnet and a bridge.
const HOST_LOCK: &str = "/run/berth-networks.lock";

/// Takes the host-wide network lock (waiting for another daemon that holds it); released
/// when the file is dropped.
pub fn take() -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HOST_LOCK)
        .map_err(|e| Error::io(format!("open {HOST_LOCK}"), e))?;
    // SAFETY: flock on a descriptor we own; blocks this (pool) thread until it is ours.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(
            format!("lock {HOST_LOCK}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(f)
}
