//! ImageFsInfo: what the snapshotter's directory holds, measured at most every few
//! seconds. A snapshotter in another process (a proxy plugin) keeps nothing in berthd's
//! directory: for it, as containerd's CRI reports every snapshotter, the sum of what its
//! Usage says of each of the CRI namespace's snapshots.

use super::*;

/// Disk usage of a tree: (bytes in allocated blocks, inodes), hard links counted once.
fn du(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if seen.insert((m.dev(), m.ino())) {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

impl Cri {
    /// Bytes and inodes the snapshotter's directory holds.
    pub async fn image_fs_usage(&self) -> Result<(String, u64, u64)> {
        let dir = self.snapshotter_root();
        // The kubelet asks every few seconds; a walk of a big store is not free.
        if let Some((at, bytes, inodes)) = self.fs_usage.get() {
            if at.elapsed() < std::time::Duration::from_secs(10) {
                return Ok((dir, bytes, inodes));
            }
        }
        let snapshotter = self.snapshots.get(&self.cfg.snapshotter)?;
        let (bytes, inodes) = if snapshotter.changes().is_some() {
            self.plugin_usage().await?
        } else {
            let d2 = std::path::PathBuf::from(&dir);
            blocking(move || Ok(du(&d2))).await?
        };
        self.fs_usage.set(bytes, inodes);
        Ok((dir, bytes, inodes))
    }

    /// The sum of a plugin's Usage of each snapshot in the CRI's namespace (a snapshot
    /// removed meanwhile counts nothing).
    async fn plugin_usage(&self) -> Result<(u64, u64)> {
        let name = &self.cfg.snapshotter;
        let infos = self
            .snapshots
            .list(self.ns.clone(), name, Default::default())
            .await?;
        let (mut bytes, mut inodes) = (0u64, 0u64);
        for info in infos {
            match self.snapshots.usage(self.ns.clone(), name, info.name).await {
                Ok(u) => {
                    bytes += u.size.max(0) as u64;
                    inodes += u.inodes.max(0) as u64;
                }
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok((bytes, inodes))
    }
}
