//! What the build cache takes on disk: its records under `<root>/io.berth.build.v1` (`cache/`
//! for RUN steps, `images/` for whole images), counted as `du` counts them (allocated
//! blocks, directories included). The layers a record names are not the cache's own: images
//! hold them, and a record whose layer was collected is only a cache miss.

use super::Builder;
use crate::core::error::{blocking, Error, Result};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

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
