//! The build cache's records on disk, under `<root>/io.berth.build.v1` (`cache/` for RUN
//! steps, `images/` for whole images): written, kept bounded, and sized as `du` sizes them
//! (allocated blocks, directories included). The layers a record names are not the cache's
//! own: images hold them, and a record whose layer was collected is only a cache miss — so
//! records are dropped least recently used first once a directory holds more than
//! [`MAX_RECORDS`] (a soak's builds added two a build, for ever).

use super::Builder;
use crate::core::error::{blocking, Error, Result};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Records kept per directory; past it (and an eighth more, so a trim is rare) the least
/// recently used go.
pub const MAX_RECORDS: usize = 1024;

/// Writes `record` to `file` whole (best effort: a lost record is only a cache miss), then
/// trims its directory to [`MAX_RECORDS`].
pub(super) fn keep_record(file: &Path, record: &serde_json::Value) {
    let Some(dir) = file.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    let tmp = file.with_extension("tmp");
    if std::fs::write(&tmp, record.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
    trim(dir, MAX_RECORDS);
}

/// Marks a record used now: trimming drops the least recently used first.
pub(super) fn touch(file: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(file) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the oldest (by modification time) records in `dir` once it holds more than
/// `keep` and an eighth, down to `keep`.
fn trim(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut records: Vec<(std::time::SystemTime, std::path::PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if records.len() <= keep + keep / 8 {
        return;
    }
    records.sort();
    let excess = records.len() - keep;
    for (_, path) in records.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
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
fn usage_of(root: &Path) -> Result<CacheUsage> {
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
        } else if path.extension().is_some_and(|x| x == "json") {
            usage.records += 1;
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_records_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        for i in 0..20u64 {
            let f = dir.path().join(format!("{i}.json"));
            keep_record(&f, &serde_json::json!({"i": i}));
            let file = std::fs::File::options().append(true).open(&f).unwrap();
            file.set_modified(epoch + day * (i as u32 + 1)).unwrap();
        }
        touch(&dir.path().join("0.json")); // used just now: kept
        trim(dir.path(), 8);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 8, "{left:?}");
        for kept in ["0.json", "19.json", "13.json"] {
            assert!(left.contains(&kept.to_string()), "{kept} gone: {left:?}");
        }
        assert!(!left.contains(&"1.json".to_string()), "{left:?}");
        trim(dir.path(), 8); // within the bound: nothing more goes
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 8);
    }

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
