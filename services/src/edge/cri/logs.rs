//! Container output into the kubelet's log format ([`crilog`] says it), copied by berthd from
//! the container's FIFOs; the file can be reopened after the kubelet rotates it.

use berth_proto::vocab::crilog;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// The log file a container's copiers write to; reopened in place on rotation.
#[derive(Clone)]
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<Option<std::fs::File>>>,
    /// Attached clients: each gets the raw output with its stream's name.
    taps: Arc<Mutex<Vec<Tap>>>,
    /// Copiers still reading into this log: attached clients end with the last one, not with
    /// the first (stderr's end can come before stdout's last bytes).
    copiers: Arc<std::sync::atomic::AtomicUsize>,
}

/// An attached client's share of the output; dropped when it falls behind.
pub type Tap = tokio::sync::mpsc::Sender<(&'static str, Vec<u8>)>;

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl LogFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(Some(open_append(path)?))),
            taps: Arc::default(),
            copiers: Arc::default(),
        })
    }

    /// A log that keeps nothing (a container without a log path).
    pub fn discard() -> Self {
        LogFile {
            path: PathBuf::new(),
            file: Arc::new(Mutex::new(None)),
            taps: Arc::default(),
            copiers: Arc::default(),
        }
    }

    /// Output from now on also goes to the returned receiver (an attach); the receiver ends
    /// with the container's output, or when it falls 256 chunks behind.
    pub fn tap(&self) -> tokio::sync::mpsc::Receiver<(&'static str, Vec<u8>)> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        self.taps.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }

    fn to_taps(&self, stream: &'static str, data: &[u8]) {
        let mut taps = self.taps.lock().unwrap_or_else(|e| e.into_inner());
        if !taps.is_empty() {
            taps.retain(|t| t.try_send((stream, data.to_vec())).is_ok());
        }
    }

    /// One copier reached the end of its stream; with the last, every attached client's
    /// share ends (the output is over).
    fn copier_done(&self) {
        use std::sync::atomic::Ordering;
        if self.copiers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.taps.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Opens the path anew (after the kubelet renamed the old file away).
    pub fn reopen(&self) -> std::io::Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let f = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        Ok(())
    }

    /// Appends whole records (one write for all of them).
    fn write_records(&self, records: &[u8]) {
        if records.is_empty() {
            return;
        }
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = g.as_mut() {
            if let Err(e) = f.write_all(records) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the container log");
            }
        }
    }
}

/// Makes a FIFO (one already there is fine).
pub fn mkfifo(p: &Path) -> crate::core::error::Result<()> {
    use crate::core::error::Error;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("NUL in path"))?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Error::io(format!("mkfifo {}", p.display()), e));
        }
    }
    Ok(())
}

/// Waits a bounded time for a copier to reach the end of its FIFO; one that does not is
/// stopped (a process it was reading for may still hold the FIFO open).
pub async fn finish<T>(h: tokio::task::JoinHandle<T>) -> Option<T> {
    let abort = h.abort_handle();
    match tokio::time::timeout(std::time::Duration::from_secs(5), h).await {
        Ok(Ok(v)) => Some(v),
        _ => {
            abort.abort();
            None
        }
    }
}

/// Opens a FIFO's read end, and a write end held until the process has its own: a reader
/// that opened before any writer would otherwise see the end of the output at once.
pub fn open_fifo(
    fifo: &Path,
) -> std::io::Result<(
    tokio::net::unix::pipe::Receiver,
    tokio::net::unix::pipe::Sender,
)> {
    let rx = tokio::net::unix::pipe::OpenOptions::new().open_receiver(fifo)?;
    let tx = tokio::net::unix::pipe::OpenOptions::new().open_sender(fifo)?;
    Ok((rx, tx))
}

/// Copies one FIFO into the log until every writer has closed it. The copier counts from
/// the call, before the returned future first runs, so no sibling can end the taps early.
pub fn copy(
    rx: tokio::net::unix::pipe::Receiver,
    stream: &'static str,
    log: LogFile,
) -> impl std::future::Future<Output = ()> {
    log.copiers
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    copy_counted(rx, stream, log)
}

async fn copy_counted(
    mut rx: tokio::net::unix::pipe::Receiver,
    stream: &'static str,
    log: LogFile,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut split = crilog::Splitter::default();
    let mut out = Vec::new();
    loop {
        match rx.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                log.to_taps(stream, &buf[..n]);
                split.push(&buf[..n], stream, &mut out);
                log.write_records(&out);
                out.clear();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(path = %log.path.display(), error = %e, "reading the container's output failed");
                break;
            }
        }
    }
    split.finish(stream, &mut out);
    log.write_records(&out);
    log.copier_done();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// stderr's end arriving before stdout's last bytes (a shell that prints and exits) once
    /// cut an attach short: the client saw the end and never the output.
    #[tokio::test]
    async fn an_attach_ends_with_the_last_stream_not_the_first() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(&dir.path().join("c.log")).unwrap();
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        mkfifo(&out).unwrap();
        mkfifo(&err).unwrap();
        let (orx, mut otx) = open_fifo(&out).unwrap();
        let (erx, etx) = open_fifo(&err).unwrap();
        let mut tap = log.tap();
        let o = tokio::spawn(copy(orx, "stdout", log.clone()));
        let e = tokio::spawn(copy(erx, "stderr", log.clone()));
        drop(etx);
        e.await.unwrap();
        otx.write_all(b"alive\n").await.unwrap();
        drop(otx);
        o.await.unwrap();
        assert_eq!(tap.recv().await, Some(("stdout", b"alive\n".to_vec())));
        assert_eq!(tap.recv().await, None, "the tap ends with the last stream");
    }

    #[test]
    fn records_have_the_kubelet_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let log = LogFile::open(&p).unwrap();
        let now = std::time::SystemTime::now();
        let mut rec = vec![];
        crilog::record(&mut rec, now, "stdout", false, b"hello");
        log.write_records(&rec);
        std::fs::rename(&p, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        rec.clear();
        crilog::record(&mut rec, now, "stderr", true, b"again");
        log.write_records(&rec);
        let old = std::fs::read_to_string(dir.path().join("c.log.1")).unwrap();
        let parts: Vec<&str> = old.trim_end().splitn(4, ' ').collect();
        assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{old}");
        assert_eq!(&parts[1..], &["stdout", "F", "hello"]);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .ends_with(" stderr P again\n"));
    }
}
