//! The stdio a client names for a process (FIFOs, or `file://` logs) and the relay between
//! it and the process: a process without a terminal gets pipes the shim made, and a thread
//! per stream copies between each pipe and the client's end. The process never holds the
//! client's FIFOs, so CRIU can dump it (a FIFO outside the container's mounts cannot be), and
//! its output can be written as the kubelet's log format when the log URI asks for it.

use crate::error::{Error, Result};
use crate::runc::Stdio3;
use berth_proto::vocab::crilog;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Bytes a copy thread reads at a time (the shim stays small: a few threads, small buffers).
const CHUNK: usize = 4096;
/// Stack of a copy thread: it calls little beyond read and write.
const COPY_STACK: usize = 64 << 10;

/// Opens a stdio FIFO (or file) the client named; empty means none.
pub fn open_io(path: &str, write: bool) -> Result<Option<OwnedFd>> {
    Ok(open_client(path, write)?.map(|(fd, _)| fd))
}

/// Opens the client's end; with it, whether a `file://` log asked for the kubelet's format.
fn open_client(path: &str, write: bool) -> Result<Option<(OwnedFd, bool)>> {
    if path.is_empty() {
        return Ok(None);
    }
    // `file:///abs/path[?query]`: output appended to a log file, created if needed.
    if let Some(uri) = path.strip_prefix("file://") {
        let (file, query) = uri.split_once('?').unwrap_or((uri, ""));
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
        let cri = query.split('&').any(|q| q == crilog::LOG_URI_QUERY);
        return Ok(Some((OwnedFd::from(f), cri)));
    }
    let c = CString::new(path).map_err(|_| Error::invalid("stdio path has a NUL byte"))?;
    // Neither end may wait for the client: writers open read-write, the reader opens
    // non-blocking (the client may open its end only after Create returns) and then
    // switches to blocking reads.
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
    Ok(Some((unsafe { OwnedFd::from_raw_fd(fd) }, false)))
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

/// A process's output copies still running; drained when each has reached the end of its
/// pipe (every writer, the process and its children, closed it) and written all it read.
#[derive(Default)]
pub struct Relay {
    open: Mutex<usize>,
    ended: Condvar,
    /// Chunks copied so far: a copy that moves no data for a while is not draining.
    moved: AtomicU64,
}

impl Relay {
    /// Waits until drained, or until the copies have moved nothing for `idle` (a child of
    /// the process may hold the pipe open and be silent); whether it is drained. A slow
    /// reader of the client's FIFO delays the answer as it delayed the process, which once
    /// wrote to that FIFO itself.
    pub fn wait_drained(&self, idle: Duration) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return true;
        };
        loop {
            let before = self.moved.load(Ordering::Relaxed);
            open = match self.ended.wait_timeout_while(open, idle, |n| *n > 0) {
                Ok((open, _)) => open,
                Err(_) => return true,
            };
            if *open == 0 {
                return true;
            }
            if self.moved.load(Ordering::Relaxed) == before {
                return false;
            }
        }
    }

    pub fn drained(&self) -> bool {
        self.open.lock().map(|n| *n == 0).unwrap_or(true)
    }

    fn begin(&self) {
        if let Ok(mut n) = self.open.lock() {
            *n += 1;
        }
    }

    fn end(&self) {
        if let Ok(mut n) = self.open.lock() {
            *n = n.saturating_sub(1);
        }
        self.ended.notify_all();
    }
}

/// A process's stdio as the relay made it: the pipe ends the process gets, the copies'
/// drain, and the write end of the stdin FIFO held until CloseIO.
pub struct Piped {
    pub stdio: Stdio3,
    pub relay: Arc<Relay>,
    pub stdin_hold: Option<OwnedFd>,
}

/// Pipes for the process, and threads copying between them and the client's stdin, stdout
/// and stderr (a stream the client did not name is /dev/null for the process).
pub fn relay(stdin: &str, stdout: &str, stderr: &str) -> Result<Piped> {
    let relay = Arc::new(Relay::default());
    let mut stdio = Stdio3::default();
    let mut stdin_hold = None;
    if let Some((fifo, _)) = open_client(stdin, false)? {
        // Held before the copy starts: a FIFO without a writer reads as ended.
        stdin_hold = hold_stdin(stdin);
        let (r, w) = pipe()?;
        stdio.stdin = Some(r);
        spawn("stdin", move || copy_raw(fifo, w, || {}))?;
    }
    for (uri, name) in [(stdout, "stdout"), (stderr, "stderr")] {
        let Some((to, cri)) = open_client(uri, true)? else {
            continue;
        };
        let (r, w) = pipe()?;
        if name == "stdout" {
            stdio.stdout = Some(w);
        } else {
            stdio.stderr = Some(w);
        }
        relay.begin();
        let rl = relay.clone();
        let started = spawn(name, move || {
            let moved = || {
                rl.moved.fetch_add(1, Ordering::Relaxed);
            };
            if cri {
                copy_records(r, to, name, moved);
            } else {
                copy_raw(r, to, moved);
            }
            rl.end();
        });
        if let Err(e) = started {
            relay.end();
            return Err(e);
        }
    }
    Ok(Piped {
        stdio,
        relay,
        stdin_hold,
    })
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::internal(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(format!("stdio-{name}"))
        .stack_size(COPY_STACK)
        .spawn(f)
        .map(drop)
        .map_err(|e| Error::internal(format!("start the {name} copy: {e}")))
}

/// Copies `from` to `to` until `from` ends or `to` fails; `to` is closed then (for stdin,
/// the process reads the end of its input).
fn copy_raw(from: OwnedFd, to: OwnedFd, moved: impl Fn()) {
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
                moved();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Copies the output in `from` to `to` as log records of stream `name`. A write that fails
/// (a full disk) loses those records, not the rest: the pipe is read to its end, so the
/// process never blocks on it.
fn copy_records(from: OwnedFd, to: OwnedFd, name: &str, moved: impl Fn()) {
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + 128);
    let mut lines = crilog::Splitter::default();
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => lines.push(&buf[..n], name, &mut out),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        if !out.is_empty() {
            let _ = to.write_all(&out);
            out.clear();
            out.shrink_to(CHUNK + 128);
        }
        moved();
    }
    lines.finish(name, &mut out);
    let _ = to.write_all(&out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_copied_to_its_end_and_recorded_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let cri = dir.path().join("cri");
        let raw_uri = format!("file://{}", raw.display());
        let cri_uri = crilog::log_uri(&cri.display().to_string());
        let p = relay("", &raw_uri, &cri_uri).unwrap();
        assert!(p.stdio.stdin.is_none());
        let mut out = std::fs::File::from(p.stdio.stdout.unwrap());
        let mut err = std::fs::File::from(p.stdio.stderr.unwrap());
        for i in 0..2000 {
            writeln!(out, "line {i}").unwrap();
            write!(err, "e{i}").unwrap();
        }
        drop((out, err));
        assert!(p.relay.wait_drained(Duration::from_secs(30)));
        let raw = std::fs::read_to_string(raw).unwrap();
        assert!(raw.starts_with("line 0\n") && raw.ends_with("line 1999\n"));
        let cri = std::fs::read(cri).unwrap();
        let recs: Vec<_> = cri
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| crilog::parse(l).unwrap())
            .collect();
        assert!(recs.iter().all(|r| r.stderr));
        let text: Vec<u8> = recs.iter().flat_map(|r| r.text.to_vec()).collect();
        assert!(text.starts_with(b"e0e1") && text.ends_with(b"e1999"));
        assert!(!recs.last().unwrap().partial);
    }

    #[test]
    fn a_file_is_refused_for_stdin() {
        assert!(relay("file:///tmp/x", "", "").is_err());
    }
}
