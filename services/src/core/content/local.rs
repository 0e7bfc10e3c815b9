//! Blobs and ingests on disk, shared by every namespace:
//! ```text
//! <content root>/blobs/sha256/<hex>         committed, immutable, verified blobs
//! <content root>/ingest/<key>/data          bytes received so far
//! <content root>/ingest/<key>/meta.json     {namespace, ref, total, expected, started_at}
//! ```
//! `<key>` is the sha256 of `namespace NUL ref`, so a ref never becomes a path. A commit is
//! fsync, verify size and digest, then an atomic rename into `blobs/`: a blob is either whole
//! and verified or absent.

use super::digest::Digest;
use crate::core::context::Namespace;
use crate::core::error::{Error, Kind, Result};
use crate::core::metadata::{now, Timestamp};
use berth_snapshotters::hash::Sha256;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IngestMeta {
    pub namespace: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub total: i64,
    pub expected: String,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngestStatus {
    pub meta: IngestMeta,
    pub offset: i64,
    pub updated_at: Timestamp,
}

/// Where a content store rooted at `root` keeps the bytes of `digest`.
pub fn blob_path_in(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(digest.hex())
}

pub struct LocalStore {
    root: PathBuf,
    locks: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Holds an ingest ref for one writer; released on drop.
pub struct RefLock {
    key: PathBuf,
    locks: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Drop for RefLock {
    fn drop(&mut self) {
        if let Ok(mut set) = self.locks.lock() {
            set.remove(&self.key);
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |e| Error::io(context, e)
}

/// Dates the ingest's data file `at` (nanoseconds), to the nanosecond: the file's own
/// mtime comes from the kernel's coarse clock, which can read earlier than the moment a
/// client saw before its write, and the mtime is what a status read later reports.
fn date_data(file: &File, at: Timestamp) -> Result<()> {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(at).unwrap_or_default());
    file.set_modified(t).map_err(io("date ingest data"))
}

fn modified(file: &File) -> Option<Timestamp> {
    file.metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .map(berth_proto::vocab::time::nanos)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("fsync {}", dir.display())))
}

impl LocalStore {
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["blobs/sha256", "ingest"] {
            fs::create_dir_all(root.join(sub))
                .map_err(io(format!("create {}", root.join(sub).display())))?;
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
            locks: Arc::default(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob_path_in(&self.root, digest)
    }

    /// Size of a committed blob, or None when it is not on disk.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<i64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len() as i64)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("stat blob {digest}"), e)),
        }
    }

    pub fn delete_blob(&self, digest: &Digest) -> Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove blob {digest}"), e)),
        }
    }

    fn ingest_dir(&self, ns: &Namespace, reference: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(ns.as_str().as_bytes());
        h.update(&[0u8]);
        h.update(reference.as_bytes());
        self.root.join("ingest").join(h.hex())
    }

    fn read_status(dir: &Path) -> Result<IngestStatus> {
        let raw = fs::read(dir.join("meta.json")).map_err(io("read ingest metadata"))?;
        let meta: IngestMeta = serde_json::from_slice(&raw)?;
        let data = fs::metadata(dir.join("data")).map_err(io("stat ingest data"))?;
        let updated_at = data
            .modified()
            .ok()
            .map(berth_proto::vocab::time::nanos)
            .unwrap_or(meta.started_at);
        Ok(IngestStatus {
            meta,
            offset: data.len() as i64,
            updated_at,
        })
    }

    pub fn status(&self, ns: &Namespace, reference: &str) -> Result<IngestStatus> {
        let dir = self.ingest_dir(ns, reference);
        match Self::read_status(&dir) {
            Err(e) if e.kind() == Kind::NotFound => {
                Err(Error::not_found(format!("ingest ref {reference:?}")))
            }
            other => other,
        }
    }

    /// Every ingest of a namespace; half-made ingest directories are skipped.
    pub fn statuses(&self, ns: &Namespace) -> Result<Vec<IngestStatus>> {
        let mut out = vec![];
        let entries = fs::read_dir(self.root.join("ingest")).map_err(io("list ingests"))?;
        for entry in entries {
            let entry = entry.map_err(io("list ingests"))?;
            if let Ok(status) = Self::read_status(&entry.path()) {
                if status.meta.namespace == ns.as_str() {
                    out.push(status);
                }
            }
        }
        out.sort_by(|a, b| a.meta.reference.cmp(&b.meta.reference));
        Ok(out)
    }

    pub fn abort(&self, ns: &Namespace, reference: &str) -> Result<()> {
        let dir = self.ingest_dir(ns, reference);
        let _lock = self.lock(&dir, reference)?;
        if !dir.join("meta.json").exists() {
            return Err(Error::not_found(format!("ingest ref {reference:?}")));
        }
        fs::remove_dir_all(&dir).map_err(io(format!("abort ingest {reference:?}")))
    }

    fn lock(&self, dir: &Path, reference: &str) -> Result<RefLock> {
        let mut set = self
            .locks
            .lock()
            .map_err(|_| Error::new(Kind::Internal, "ingest lock table poisoned"))?;
        if !set.insert(dir.to_path_buf()) {
            return Err(Error::new(
                Kind::Unavailable,
                format!("ref {reference:?} is locked by another writer; retry later"),
            ));
        }
        Ok(RefLock {
            key: dir.to_path_buf(),
            locks: self.locks.clone(),
        })
    }

    /// Opens (or resumes) the ingest for `reference`, locking it for this writer.
    pub fn writer(
        &self,
        ns: &Namespace,
        reference: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Writer> {
        let dir = self.ingest_dir(ns, reference);
        let lock = self.lock(&dir, reference)?;
        let meta_path = dir.join("meta.json");
        let mut meta = match fs::read(&meta_path) {
            Ok(raw) => serde_json::from_slice::<IngestMeta>(&raw)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(io("create ingest"))?;
                IngestMeta {
                    namespace: ns.to_string(),
                    reference: reference.to_string(),
                    total: 0,
                    expected: String::new(),
                    started_at: now(),
                }
            }
            Err(e) => return Err(Error::io("read ingest metadata", e)),
        };
        let expected_str = expected.as_ref().map(Digest::to_string).unwrap_or_default();
        let fresh = !meta_path.exists();
        let mut changed = fresh;
        if total > 0 && total != meta.total {
            meta.total = total;
            changed = true;
        }
        if !expected_str.is_empty() && expected_str != meta.expected {
            meta.expected = expected_str;
            changed = true;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("data"))
            .map_err(io("open ingest data"))?;
        let updated_at = if fresh {
            date_data(&file, meta.started_at)?;
            meta.started_at
        } else {
            modified(&file).unwrap_or(meta.started_at)
        };
        if changed {
            // Written after the data file exists, so a listed ingest is always complete.
            let tmp = dir.join("meta.json.tmp");
            fs::write(&tmp, serde_json::to_vec(&meta)?).map_err(io("write ingest metadata"))?;
            fs::rename(&tmp, &meta_path).map_err(io("write ingest metadata"))?;
        }
        // Resume: the digest so far is rebuilt from the bytes already received.
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io("read ingest data"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        Ok(Writer {
            dir,
            file,
            offset,
            hasher,
            meta,
            updated_at,
            blobs: self.root.join("blobs/sha256"),
            _lock: lock,
        })
    }
}

/// An open ingest. Dropping it keeps the bytes for a later resume.
pub struct Writer {
    dir: PathBuf,
    file: File,
    offset: u64,
    hasher: Sha256,
    meta: IngestMeta,
    /// When bytes last arrived (or the ingest started): moves on every write, as
    /// containerd's ingests do.
    updated_at: Timestamp,
    blobs: PathBuf,
    _lock: RefLock,
}

impl Writer {
    pub fn offset(&self) -> i64 {
        self.offset as i64
    }
    pub fn meta(&self) -> &IngestMeta {
        &self.meta
    }
    /// The bytes received so far, read from the start (to replay them on a resume).
    pub fn received(&self) -> Result<std::io::Take<File>> {
        let f = File::open(self.dir.join("data")).map_err(io("open ingest data"))?;
        Ok(f.take(self.offset))
    }
    pub fn digest_so_far(&self) -> Digest {
        Digest::from_hasher(&self.hasher)
    }
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }

    /// Appends `data` at `offset`, which must be the current offset; offset 0 restarts.
    pub fn write_at(&mut self, offset: i64, data: &[u8]) -> Result<()> {
        if offset < 0 {
            return Err(Error::invalid(format!("negative write offset {offset}")));
        }
        let restart = offset as u64 != self.offset;
        if restart {
            if offset != 0 {
                return Err(Error::new(
                    Kind::OutOfRange,
                    format!(
                        "write at offset {offset} but the ingest is at {}; resume from {}",
                        self.offset, self.offset
                    ),
                ));
            }
            self.file.set_len(0).map_err(io("truncate ingest"))?;
            self.file
                .seek(SeekFrom::Start(0))
                .map_err(io("truncate ingest"))?;
            self.offset = 0;
            self.hasher = Sha256::new();
        }
        if self.meta.total > 0 && self.offset + data.len() as u64 > self.meta.total as u64 {
            return Err(Error::invalid(format!(
                "write of {} bytes at offset {} exceeds the expected total {}",
                data.len(),
                self.offset,
                self.meta.total
            )));
        }
        self.file
            .seek(SeekFrom::Start(self.offset))
            .map_err(io("write ingest"))?;
        self.file.write_all(data).map_err(io("write ingest"))?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        if restart || !data.is_empty() {
            let at = now();
            date_data(&self.file, at)?;
            self.updated_at = at;
        }
        Ok(())
    }

    /// Verifies and moves the bytes into `blobs/`. `size` 0 and `expected` None skip
    /// those checks. On a mismatch the ingest is kept so the client can fix or abort it.
    pub fn commit(self, size: i64, expected: Option<&Digest>) -> Result<(Digest, i64)> {
        let size = if size > 0 { size } else { self.meta.total };
        if size > 0 && size as u64 != self.offset {
            return Err(Error::precondition(format!(
                "unexpected commit size {}, expected {size}",
                self.offset
            )));
        }
        let digest = Digest::from_hasher(&self.hasher);
        let expected = match expected {
            Some(d) => Some(d.clone()),
            None if !self.meta.expected.is_empty() => Some(Digest::parse(&self.meta.expected)?),
            None => None,
        };
        if let Some(want) = &expected {
            if want != &digest {
                return Err(Error::precondition(format!(
                    "unexpected commit digest {digest}, expected {want}"
                )));
            }
        }
        self.file.sync_all().map_err(io("fsync ingest"))?;
        let target = self.blobs.join(digest.hex());
        if target.exists() {
            // Same bytes already committed by someone else.
            fs::remove_dir_all(&self.dir).map_err(io("remove ingest"))?;
            return Err(Error::already_exists(format!("content {digest}")));
        }
        fs::rename(self.dir.join("data"), &target).map_err(io("commit blob"))?;
        fsync_dir(&self.blobs)?;
        fs::remove_dir_all(&self.dir).map_err(io("remove ingest"))?;
        Ok((digest, self.offset as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespace {
        Namespace::parse("default").unwrap()
    }

    #[test]
    fn write_commit_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let data = b"hello berth";
        let d = Digest::of(data);
        {
            let mut w = store
                .writer(&ns(), "r1", data.len() as i64, Some(d.clone()))
                .unwrap();
            w.write_at(0, &data[..5]).unwrap();
            // A second writer on the same ref is refused while the first holds it.
            assert_eq!(
                store.writer(&ns(), "r1", 0, None).err().unwrap().kind(),
                Kind::Unavailable
            );
        }
        let st = store.status(&ns(), "r1").unwrap();
        assert_eq!(st.offset, 5);
        assert_eq!(st.meta.expected, d.to_string());
        let mut w = store.writer(&ns(), "r1", 0, None).unwrap();
        assert_eq!(w.offset(), 5);
        assert_eq!(w.write_at(3, b"x").unwrap_err().kind(), Kind::OutOfRange);
        w.write_at(5, &data[5..]).unwrap();
        let (got, size) = w.commit(0, None).unwrap();
        assert_eq!(got, d);
        assert_eq!(size, data.len() as i64);
        assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), data);
        assert!(store.statuses(&ns()).unwrap().is_empty());
    }

    #[test]
    fn wrong_digest_is_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let claimed = Digest::of(b"the real thing");
        let mut w = store
            .writer(&ns(), "bad", 0, Some(claimed.clone()))
            .unwrap();
        w.write_at(0, b"something else").unwrap();
        let err = w.commit(0, None).unwrap_err();
        assert_eq!(err.kind(), Kind::FailedPrecondition);
        assert!(store.blob_size(&claimed).unwrap().is_none());
        assert!(store
            .blob_size(&Digest::of(b"something else"))
            .unwrap()
            .is_none());
        store.abort(&ns(), "bad").unwrap();
        assert!(store.statuses(&ns()).unwrap().is_empty());
    }

    #[test]
    fn writes_past_total_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let mut w = store.writer(&ns(), "t", 3, None).unwrap();
        assert_eq!(
            w.write_at(0, b"four").unwrap_err().kind(),
            Kind::InvalidArgument
        );
    }
}
