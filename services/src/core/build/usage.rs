//! The build cache's records on disk, under `<root>/io.berth.build.v1` (`cache/` for RUN
//! steps, `images/` for whole images): written whole, marked used, and sized as `du` sizes
//! them (allocated blocks, directories included). What bounds them is in `prune.rs`.

use super::Builder;
use crate::core::error::{blocking, Error, Result};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The directories under the cache root that hold records.
pub(super) const RECORD_DIRS: [&str; 2] = ["cache", "images"];

/// Writes `record` to `file` whole (best effort: a lost record is only a cache miss).
pub(super) fn keep_record(file: &Path, record: &serde_json::Value) {
    let Some(dir) = file.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    let tmp = file.with_extension("tmp");
    if std::fs::write(&tmp, record.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
}

/// Marks a record used now: the policy drops the least recently used first.
pub(super) fn touch(file: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(file) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub records: u64,
    pub bytes: u64,
}

impl Builder {
    pub async fn cache_usage(&self) -> Result<CacheUsage> {
        let root = self.root.clone();
        blocking(move || usage_of(&root)).await
    }
}

/// The records under `root` and the bytes everything there takes; a record removed while
/// the tree is walked is left out, not an error.
pub(super) fn usage_of(root: &Path) -> Result<CacheUsage> {
    walk(root, |_, _| {})
}

/// [`usage_of`], handing each file (not directory) met to `each_file` with its metadata.
pub(super) fn walk(
    root: &Path,
    mut each_file: impl FnMut(PathBuf, &std::fs::Metadata),
) -> Result<CacheUsage> {
    let mut usage = CacheUsage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("build cache {}", path.display()), e)),
        };
        usage.bytes += meta.blocks() * 512;
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("build cache {}", path.display()), e)),
            };
            stack.extend(entries.flatten().map(|e| e.path()));
        } else {
            if path.extension().is_some_and(|x| x == "json") {
                usage.records += 1;
            }
            each_file(path, &meta);
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_and_sized_as_du_sizes_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("io.berth.build.v1");
        assert_eq!(usage_of(&root).unwrap(), CacheUsage::default());
        for (sub, name, len) in [
            ("cache", "a.json", 100),
            ("cache", "b.json", 9000),
            ("images", "c.json", 10),
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
            std::fs::write(root.join(sub).join(name), vec![b'x'; len]).unwrap();
        }
        let usage = usage_of(&root).unwrap();
        assert_eq!(usage.records, 3);
        let du = std::process::Command::new("du")
            .args(["-s", "-B1"])
            .arg(&root)
            .output()
            .unwrap();
        let du: u64 = String::from_utf8_lossy(&du.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(usage.bytes, du);
    }
}
