//! ImageFsInfo: what each snapshotter's directory holds, measured at most every few
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
    /// (directory, bytes, inodes) of each snapshotter the CRI unpacks into: `[cri]
    /// snapshotter`'s first (the kubelet reads the first), then the other handlers' in name
    /// order, as containerd's CRI lists every snapshotter.
    pub async fn image_fs_usage(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut names = vec![self.cfg.snapshotter.clone()];
        for handler in self.cfg.handler_names() {
            if let Some(h) = self.cfg.handler(&handler) {
                if !names.contains(&h.snapshotter) {
                    names.push(h.snapshotter);
                }
            }
        }
        names[1..].sort();
        let mut out = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            match self.snapshotter_usage(name).await {
                Ok(usage) => out.push(usage),
                // A handler's snapshotter that is not available costs only its own row.
                Err(e) if i > 0 => {
                    tracing::debug!(snapshotter = name, error = %e, "no ImageFsInfo row")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Bytes and inodes snapshotter `name` holds: its directory's, or for a plugin, what
    /// its Usage says.
    async fn snapshotter_usage(&self, name: &str) -> Result<(String, u64, u64)> {
        let dir = self.snapshotter_root(name);
        // The kubelet asks every few seconds; a walk of a big store is not free.
        if let Some((at, bytes, inodes)) = self.fs_usage.get(name) {
            if at.elapsed() < std::time::Duration::from_secs(10) {
                return Ok((dir, bytes, inodes));
            }
        }
        let snapshotter = self.snapshots.get(name)?;
        let (bytes, inodes) = if snapshotter.changes().is_some() {
            self.plugin_usage(name).await?
        } else {
            let d2 = std::path::PathBuf::from(&dir);
            blocking(move || Ok(du(&d2))).await?
        };
        self.fs_usage.set(name, bytes, inodes);
        Ok((dir, bytes, inodes))
    }

    /// The sum of a plugin's Usage of each snapshot in the CRI's namespace (a snapshot
    /// removed meanwhile counts nothing).
    async fn plugin_usage(&self, name: &str) -> Result<(u64, u64)> {
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
