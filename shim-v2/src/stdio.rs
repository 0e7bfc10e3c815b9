//! The stdio a client names for a process: FIFOs opened so that neither end waits for the
//! other, or `file://` logs.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};

/// Opens a stdio FIFO (or file) the client named; empty means none.
pub fn open_io(path: &str, write: bool) -> Result<Option<OwnedFd>> {
    if path.is_empty() {
        return Ok(None);
    }
    // `file:///abs/path`: output appended to a log file, created if needed.
    if let Some(file) = path.strip_prefix("file://") {
        if !write || !file.starts_with('/') {
            return Err(Error::invalid(format!(
                "{path}: file:// takes an absolute path, for stdout and stderr only"
            )));
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(|e| Error::invalid(format!("open {file}: {e}")))?;
        return Ok(Some(OwnedFd::from(f)));
    }
    let c = CString::new(path).map_err(|_| Error::invalid("stdio path has a NUL byte"))?;
    // Neither end may wait for the client: writers open read-write, the reader opens
    // non-blocking (the client may open its end only after Create returns) and then
    // switches to blocking reads for the container.
    let flags = if write {
        libc::O_RDWR
    } else {
        libc::O_RDONLY | libc::O_NONBLOCK
    } | libc::O_CLOEXEC;
    // SAFETY: open with a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::invalid(format!(
            "open {path}: {}",
            std::io::Error::last_os_error()
        )));
    }
    if !write {
        // SAFETY: fcntl on the descriptor just opened.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    // SAFETY: a fresh descriptor from open.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A write end of a stdin FIFO whose reader is open, held so the reader does not see the
/// end of input until it is dropped. None for no stdin, a file, or no reader.
pub fn hold_stdin(path: &str) -> Option<OwnedFd> {
    if path.is_empty() || path.contains("://") {
        return None;
    }
    let c = CString::new(path).ok()?;
    // SAFETY: open with a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a fresh descriptor from open.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}
