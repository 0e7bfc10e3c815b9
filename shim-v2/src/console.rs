//! Terminals: runc creates the pty inside the container and sends its master to a unix
//! socket we listen on (`--console-socket`); the shim then copies between the master and
//! the client's stdin/stdout FIFOs, and resizes it on ResizePty.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    /// The private directory made for the socket when the bundle's path is too long.
    private: Option<PathBuf>,
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.private {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Longest socket path that fits `sockaddr_un` with room to spare.
const MAX_SOCKET_PATH: usize = 100;

impl ConsoleSocket {
    /// Listens in `dir` (the bundle, which only root can enter), or, when that path would not
    /// fit a socket address, in a fresh directory of mode 0700 with an unpredictable name
    /// (mkdtemp): nobody else can squat or hijack the socket either way.
    pub fn bind(dir: &Path, name: &str) -> std::io::Result<Self> {
        let mut path = dir.join(format!("{name}.console.sock"));
        let mut private = None;
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            let d = private_dir(&std::env::temp_dir())?;
            path = d.join("console.sock");
            private = Some(d);
        }
        let _ = std::fs::remove_file(&path);
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                if let Some(d) = &private {
                    let _ = std::fs::remove_dir(d);
                }
                return Err(e);
            }
        };
        Ok(ConsoleSocket {
            listener,
            path,
            private,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master runc sent. Called once runc has returned, so the connection and its
    /// message are already queued; nothing queued means runc made no terminal.
    pub fn receive(&self) -> std::io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let (conn, _) = self.listener.accept().map_err(|e| {
            std::io::Error::other(format!(
                "runc sent no terminal (is process.terminal set in the spec?): {e}"
            ))
        })?;
        conn.set_nonblocking(false)?;
        recv_fd(conn.as_raw_fd())
    }
}

/// A new directory of mode 0700 under `parent`, its name chosen and created atomically by
/// mkdtemp(3).
fn private_dir(parent: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let template = parent.join("berth-console-XXXXXX");
    let mut raw = template.as_os_str().as_bytes().to_vec();
    raw.push(0);
    // SAFETY: mkdtemp rewrites the XXXXXX of the NUL-terminated buffer in place; the
    // buffer lives across the call.
    let made = unsafe { libc::mkdtemp(raw.as_mut_ptr().cast()) };
    if made.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    raw.pop();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&raw)))
}

/// Receives one descriptor passed with SCM_RIGHTS.
fn recv_fd(sock: i32) -> std::io::Result<OwnedFd> {
    let mut data = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // Room for one control message carrying one int (CMSG_SPACE(4) is 24 on 64-bit).
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: recvmsg writes only into the buffers msg points at.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: walking the control buffer recvmsg filled, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                return Ok(OwnedFd::from_raw_fd(fd));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Err(std::io::Error::other(
        "runc's console message carried no descriptor",
    ))
}

/// Copies the client's input into the terminal and the terminal's output to the client,
/// each on its own thread, until either side ends.
pub fn copy(
    master: &OwnedFd,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
) -> std::io::Result<()> {
    if let Some(out) = stdout {
        let mut from = std::fs::File::from(master.try_clone()?);
        let mut to = std::fs::File::from(out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                // EIO once every process holding the terminal has gone.
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    if let Some(inp) = stdin {
        let mut to = std::fs::File::from(master.try_clone()?);
        let mut from = std::fs::File::from(inp);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        });
    }
    Ok(())
}

/// Sets the terminal's size.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own from a live descriptor.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn long_bundle_paths_get_a_private_directory_not_a_predictable_name() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("b".repeat(120));
        std::fs::create_dir_all(&long).unwrap();
        let a = ConsoleSocket::bind(&long, "exec-1").unwrap();
        let b = ConsoleSocket::bind(&long, "exec-1").unwrap();
        assert_ne!(a.path(), b.path());
        let parent = a.path().parent().unwrap().to_path_buf();
        assert!(!parent.starts_with(&long));
        let mode = std::fs::metadata(&parent).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(a);
        assert!(!parent.exists());

        let short = ConsoleSocket::bind(dir.path(), "init").unwrap();
        assert_eq!(short.path(), dir.path().join("init.console.sock"));
    }
}
