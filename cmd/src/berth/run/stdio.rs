//! A process's stdio as FIFOs, copied to and from this terminal by threads of ours.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The threads copying a process's output here, and our own write ends of its FIFOs, held
/// until the process has started (see [`Pumps::started`]).
#[derive(Default)]
pub struct Pumps {
    threads: Vec<std::thread::JoinHandle<()>>,
    hold: Vec<std::fs::File>,
}

impl Pumps {
    /// Once the process runs, the shim holds the FIFOs' write ends; ours go, so the copies
    /// end when the process's do (even if it already exited).
    pub fn started(&mut self) {
        self.hold.clear();
    }

    /// Waits for every copy to finish.
    pub async fn join(self) {
        for t in self.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// FIFOs for a process's stdio in `dir` and the threads that copy them to this terminal:
/// stdin and stdout with a terminal, stdout and stderr without. Returns the paths (stdin,
/// stdout, stderr; empty for none) and the output pumps.
pub fn stdio(dir: &Path, name: &str, tty: bool) -> anyhow::Result<(String, String, String, Pumps)> {
    let p = |n: &str| dir.join(format!("{name}-{n}"));
    if tty {
        for n in ["stdin", "stdout"] {
            mkfifo(&p(n))?;
        }
        pump_in(p("stdin"));
        let mut pumps = Pumps::default();
        pump_out(&p("stdout"), std::io::stdout(), &mut pumps)?;
        Ok((
            p("stdin").display().to_string(),
            p("stdout").display().to_string(),
            String::new(),
            pumps,
        ))
    } else {
        for n in ["stdout", "stderr"] {
            mkfifo(&p(n))?;
        }
        let mut pumps = Pumps::default();
        pump_out(&p("stdout"), std::io::stdout(), &mut pumps)?;
        pump_out(&p("stderr"), std::io::stderr(), &mut pumps)?;
        Ok((
            String::new(),
            p("stdout").display().to_string(),
            p("stderr").display().to_string(),
            pumps,
        ))
    }
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
/// shim to open its end).
fn pump_in(path: PathBuf) {
    std::thread::spawn(move || {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = std::io::copy(&mut std::io::stdin(), &mut f);
        }
    });
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
