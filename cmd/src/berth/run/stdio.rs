//! A process's stdio as FIFOs, copied to and from this terminal by threads of ours.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The threads copying a process's output here, and our own write ends of its FIFOs, held
/// until the process has started (see [`Pumps::started`]).
#[derive(Default)]
pub struct Pumps {
    threads: Vec<std::thread::JoinHandle<()>>,
    hold: Vec<std::fs::File>,
    /// Told when this process's stdin ended (all of it copied): the shim keeps the
    /// container's stdin open until it is asked to close it.
    stdin_done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Pumps {
    /// Once the process runs, the shim holds the FIFOs' write ends; ours go, so the copies
    /// end when the process's do (even if it already exited).
    pub fn started(&mut self) {
        self.hold.clear();
    }

    /// The signal that this process's stdin has all been copied in (once; None without -i).
    pub fn stdin_done(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.stdin_done.take()
    }

    /// Waits for every copy to finish (all joined on one blocking thread: a thread each
    /// would start a second one while the first is still on its way back to the pool).
    pub async fn join(self) {
        let threads = self.threads;
        if threads.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Which of a process's streams come here: a terminal (one output stream) or not (stdout
/// and stderr apart), and whether this process's stdin goes to it.
#[derive(Clone, Copy, Debug)]
pub struct Streams {
    pub tty: bool,
    pub stdin: bool,
}

/// FIFOs for a process's stdio in `dir` and the threads that copy them to and from this
/// terminal: stdin when asked for, then stdout (the terminal's with a tty) and, without a
/// tty, stderr. Returns the paths (stdin, stdout, stderr; empty for none) and the output
/// pumps.
pub fn stdio(
    dir: &Path,
    name: &str,
    streams: Streams,
) -> anyhow::Result<(String, String, String, Pumps)> {
    let p = |n: &str| dir.join(format!("{name}-{n}"));
    let mut pumps = Pumps::default();
    let mut paths = [String::new(), String::new(), String::new()];
    if streams.stdin {
        mkfifo(&p("stdin"))?;
        pumps.stdin_done = Some(pump_in(p("stdin")));
        paths[0] = p("stdin").display().to_string();
    }
    mkfifo(&p("stdout"))?;
    pump_out(&p("stdout"), std::io::stdout(), &mut pumps)?;
    paths[1] = p("stdout").display().to_string();
    if !streams.tty {
        mkfifo(&p("stderr"))?;
        pump_out(&p("stderr"), std::io::stderr(), &mut pumps)?;
        paths[2] = p("stderr").display().to_string();
    }
    let [stdin, stdout, stderr] = paths;
    Ok((stdin, stdout, stderr, pumps))
}

/// Opens the FIFO's read end here and now (not in the thread: a process that ran and exited
/// before a late open would leave that open waiting for ever), plus a write end of our own
/// that keeps the reader from seeing end-of-file before the process has even started.
fn pump_out(
    path: &Path,
    mut to: impl std::io::Write + Send + 'static,
    pumps: &mut Pumps,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let hold = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    set_blocking(&reader)?;
    pumps.hold.push(hold);
    pumps.threads.push(std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut to);
        let _ = to.flush();
    }));
    Ok(())
}

fn set_blocking(f: &std::fs::File) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    let ok = unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !ok {
        bail!("fcntl: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies this process's stdin into the container's stdin FIFO (opening waits for the
/// shim to open its end); the receiver hears when it is all in.
fn pump_in(path: PathBuf) -> tokio::sync::oneshot::Receiver<()> {
    let (done, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = std::io::copy(&mut std::io::stdin(), &mut f);
        }
        let _ = done.send(());
    });
    rx
}

fn mkfifo(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mkfifo {}", p.display()));
    }
    Ok(())
}
