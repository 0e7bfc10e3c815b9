//! `berthd check` (a stopped root) and `berth check` (a running daemon, read-only): an
//! audit of berthd's root. Every blob is hashed against its
//! name and sized against its records; records without bytes, bytes without records, images
//! whose target is gone, containers whose snapshot is gone, snapshots whose parent or
//! directory is gone, half-made or abandoned ingests, interrupted build work and mounts left
//! under the root or state are reported. `repair` removes what is safe to remove (leftovers,
//! records of bytes that are gone, corrupt bytes — a pull fetches them again); it never
//! guesses content back.

use crate::core::content::digest::Digest;
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use crate::core::gc::INGEST_EXPIRY;
use crate::core::metadata::MetadataStore;
use berth_snapshotters::Snapshotter;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Left over by a crash: harmless, and removed by `--repair` (or the daemon, in time).
    Leftover,
    /// Something is damaged or missing: images or containers that rely on it will fail.
    Corrupt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub what: String,
    /// Whether `--repair` dealt with it.
    pub repaired: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Blobs hashed, snapshots and records looked at.
    pub blobs: usize,
    pub snapshots: usize,
    pub records: usize,
}

impl Report {
    pub fn corrupt(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Corrupt)
    }

    fn add(&mut self, severity: Severity, what: String, repaired: bool) {
        self.findings.push(Finding {
            severity,
            what,
            repaired,
        });
    }
}

/// Where a root keeps what the check reads.
pub struct Layout {
    pub root: PathBuf,
    pub state: PathBuf,
}

impl Layout {
    fn content(&self) -> PathBuf {
        self.root.join("io.containerd.content.v1.content")
    }
    fn metadata(&self) -> PathBuf {
        self.root.join("io.containerd.metadata.v1.redb/meta.redb")
    }
}

/// Audits `layout`; with `repair`, removes what is safe to remove. The caller makes sure no
/// daemon uses the root (berthd holds `<root>/berthd.lock`).
pub fn check(layout: &Layout, repair: bool) -> Result<Report> {
    if !layout.metadata().exists() {
        return Ok(Report::default());
    }
    let store = MetadataStore::open(&layout.metadata())?;
    let mut snapshotters: Vec<(String, Box<dyn Snapshotter>)> = vec![];
    let mut report = Report::default();
    for name in [
        berth_snapshotters::overlay::NAME,
        berth_snapshotters::native::NAME,
        berth_snapshotters::erofs::NAME,
    ] {
        let dir = crate::core::snapshots::snapshotter_root(&layout.root, name);
        if !dir.exists() {
            continue;
        }
        match berth_snapshotters::open(name, &dir) {
            Ok(s) => snapshotters.push((name.to_string(), s)),
            Err(e) => report.add(Severity::Corrupt, format!("snapshotter {name}: {e}"), false),
        }
    }
    let snaps: Vec<(String, &dyn Snapshotter)> = snapshotters
        .iter()
        .map(|(n, s)| (n.clone(), s.as_ref()))
        .collect();
    audit(layout, &store, &snaps, Mode::Stopped { repair }, report)
}

/// Audits a running daemon's root through its own open stores; read-only. What is in flight
/// (ingests, builds, containers' mounts) is not looked at.
pub fn check_running(
    layout: &Layout,
    store: &MetadataStore,
    snapshotters: &[(String, &dyn Snapshotter)],
) -> Result<Report> {
    audit(
        layout,
        store,
        snapshotters,
        Mode::Running,
        Report::default(),
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Stopped { repair: bool },
    Running,
}

/// Every image of `ns` points at a blob the namespace records.
fn check_images(
    layout: &Layout,
    store: &MetadataStore,
    ns: &Namespace,
    recorded: &BTreeSet<String>,
    mode: Mode,
    report: &mut Report,
) -> Result<()> {
    for img in store.image_list(ns)? {
        report.records += 1;
        // (Re-read: a running daemon may have recorded it since the list was taken.)
        let since = mode == Mode::Running
            && store.blob_get(ns, &img.target.digest)?.is_some()
            && blob_path(layout, &img.target.digest).exists();
        if !recorded.contains(&img.target.digest) && !since {
            report.add(
                Severity::Corrupt,
                format!(
                    "{ns}: image {} points at {}, which is not in the content store; pull it again",
                    img.name, img.target.digest
                ),
                false,
            );
        }
    }
    Ok(())
}

fn audit(
    layout: &Layout,
    store: &MetadataStore,
    snapshotters: &[(String, &dyn Snapshotter)],
    mode: Mode,
    mut report: Report,
) -> Result<Report> {
    let repair = mode == Mode::Stopped { repair: true };
    let namespaces: Vec<Namespace> = store
        .namespace_list()?
        .into_iter()
        .filter_map(|(n, _)| Namespace::parse(&n).ok())
        .collect();
    let bytes = check_blobs(layout, repair, &mut report)?;
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for ns in &namespaces {
        let mut recorded: BTreeSet<String> = BTreeSet::new();
        for rec in store.blob_list(ns)? {
            report.records += 1;
            match bytes.get(&rec.digest) {
                Some(size) if *size == rec.size => {
                    referenced.insert(rec.digest.clone());
                    recorded.insert(rec.digest);
                }
                // Committed while the blobs were being hashed (a running daemon).
                None if mode == Mode::Running && blob_path(layout, &rec.digest).exists() => {
                    referenced.insert(rec.digest.clone());
                    recorded.insert(rec.digest);
                }
                found => {
                    let what = match found {
                        Some(size) => format!(
                            "{ns}: content {} is recorded as {} bytes, the file has {size}",
                            rec.digest, rec.size
                        ),
                        None => format!(
                            "{ns}: content {} is recorded, its bytes are gone",
                            rec.digest
                        ),
                    };
                    // (blob_remove answers whether other namespaces still use it.)
                    let repaired = repair && store.blob_remove(ns, &rec.digest).is_ok();
                    report.add(Severity::Corrupt, what, repaired);
                }
            }
        }
        check_images(layout, store, ns, &recorded, mode, &mut report)?;
        check_containers(store, ns, snapshotters, &mut report)?;
    }
    for (digest, _) in bytes.iter().filter(|(d, _)| !referenced.contains(*d)) {
        let path = blob_path(layout, digest);
        let repaired = repair && std::fs::remove_file(&path).is_ok();
        report.add(
            Severity::Leftover,
            format!("content {digest}: bytes no namespace records"),
            repaired,
        );
    }
    check_snapshots(snapshotters, repair, &mut report)?;
    if mode != Mode::Running {
        // A running daemon has ingests, builds and mounts in flight.
        check_ingests(layout, repair, &mut report)?;
        check_build_work(layout, repair, &mut report);
        check_mounts(layout, repair, &mut report);
    }
    Ok(report)
}

/// The content store's own layout (digests here come from records and file names, both
/// checked, so an unparsable one has no path).
fn blob_path(layout: &Layout, digest: &str) -> PathBuf {
    match Digest::parse(digest) {
        Ok(d) => crate::core::content::local::blob_path_in(&layout.content(), &d),
        Err(_) => layout.content().join("blobs/sha256/invalid"),
    }
}

/// Hashes every blob; returns the good ones' digests and sizes.
fn check_blobs(
    layout: &Layout,
    repair: bool,
    report: &mut Report,
) -> Result<BTreeMap<String, i64>> {
    let mut good = BTreeMap::new();
    let dir = layout.content().join("blobs/sha256");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(good);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        report.blobs += 1;
        let named = Digest::parse(&format!("sha256:{name}")).ok();
        let hashed = hash_file(&path);
        match (named, hashed) {
            (Some(want), Ok((got, size))) if got == want.to_string() => {
                good.insert(got, size);
            }
            (_, hashed) => {
                let what = match hashed {
                    Ok((got, _)) => format!(
                        "content sha256:{name}: its bytes hash to {got}; pull the image again"
                    ),
                    Err(e) => format!("content {name}: cannot be read: {e}"),
                };
                let repaired = repair && std::fs::remove_file(&path).is_ok();
                report.add(Severity::Corrupt, what, repaired);
            }
        }
    }
    Ok(good)
}

fn hash_file(path: &Path) -> Result<(String, i64)> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut h = berth_snapshotters::hash::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0i64;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if k == 0 {
            return Ok((h.digest(), n));
        }
        h.update(&buf[..k]);
        n += k as i64;
    }
}

fn check_containers(
    store: &MetadataStore,
    ns: &Namespace,
    snapshotters: &[(String, &dyn Snapshotter)],
    report: &mut Report,
) -> Result<()> {
    for c in store.container_list(ns)? {
        report.records += 1;
        if c.snapshot_key.is_empty() {
            continue;
        }
        let name = if c.snapshotter.is_empty() {
            "overlayfs"
        } else {
            c.snapshotter.as_str()
        };
        let key = crate::core::snapshots::scoped(ns, &c.snapshot_key);
        let present = snapshotters
            .iter()
            .any(|(n, s)| n == name && s.stat(&key).is_ok());
        if !present {
            report.add(
                Severity::Corrupt,
                format!(
                    "{ns}: container {} uses snapshot {} ({name}), which is gone",
                    c.id, c.snapshot_key
                ),
                false,
            );
        }
    }
    Ok(())
}

/// Ingest directories that never got their metadata (a crash while starting one), and
/// ingests nobody wrote to for [`INGEST_EXPIRY`].
fn check_ingests(layout: &Layout, repair: bool, report: &mut Report) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(layout.content().join("ingest")) else {
        return Ok(());
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        let dir = e.path();
        let stale = std::fs::metadata(dir.join("data"))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > INGEST_EXPIRY);
        let what = if !dir.join("meta.json").exists() {
            "a half-made ingest"
        } else if stale {
            "an ingest nobody wrote to for a day"
        } else {
            continue;
        };
        let repaired = repair && std::fs::remove_dir_all(&dir).is_ok();
        report.add(
            Severity::Leftover,
            format!("{what}: {}", dir.display()),
            repaired,
        );
    }
    Ok(())
}

/// Every snapshot's parent exists and its directory is there; with `repair`, directories no
/// record owns go (the snapshotter's own cleanup).
fn check_snapshots(
    snapshotters: &[(String, &dyn Snapshotter)],
    repair: bool,
    report: &mut Report,
) -> Result<()> {
    for (name, snap) in snapshotters {
        let mut infos = vec![];
        snap.walk(&mut |i| {
            infos.push(i.clone());
            true
        })?;
        let keys: BTreeSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        for i in &infos {
            report.snapshots += 1;
            // A running daemon may remove a snapshot (GC) while it is looked at: what is
            // gone by the time it would be reported was removed, not lost.
            let still_there = |key: &str| snap.stat(key).is_ok();
            if let Some(p) = &i.parent {
                if !keys.contains(p.as_str()) && !still_there(p) && still_there(&i.name) {
                    report.add(
                        Severity::Corrupt,
                        format!("snapshot {} ({name}): its parent {p} is gone", i.name),
                        false,
                    );
                }
            }
            if let Err(e) = snap.usage(&i.name).or_else(|e| {
                if still_there(&i.name) {
                    Err(e)
                } else {
                    Ok(Default::default())
                }
            }) {
                report.add(
                    Severity::Corrupt,
                    format!(
                        "snapshot {} ({name}): its directory cannot be read: {e}",
                        i.name
                    ),
                    false,
                );
            }
        }
        if repair {
            snap.cleanup()?;
        }
    }
    Ok(())
}

fn check_build_work(layout: &Layout, repair: bool, report: &mut Report) {
    let Ok(entries) = std::fs::read_dir(layout.state.join("io.berth.build.v1")) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("build-") {
            let repaired = repair && std::fs::remove_dir_all(e.path()).is_ok();
            report.add(
                Severity::Leftover,
                format!("an interrupted build's work: {}", e.path().display()),
                repaired,
            );
        }
    }
}

/// Mounts under the root or state with no daemon to own them (a crash mid-diff or mid-unpack).
/// Running containers' rootfs mounts live in their shims' mount namespaces, not here.
fn check_mounts(layout: &Layout, repair: bool, report: &mut Report) {
    let points =
        crate::core::network::host::mounts_under(&[layout.root.clone(), layout.state.clone()]);
    for p in points {
        let repaired = repair && {
            berth_snapshotters::mount::unmount(&p);
            true
        };
        report.add(
            Severity::Leftover,
            format!("a mount left at {}", p.display()),
            repaired,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metadata::content::BlobRecord;
    use crate::core::metadata::images::ImageRecord;

    #[test]
    fn finds_corruption_and_leftovers_and_repairs_what_is_safe() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
        };
        std::fs::create_dir_all(layout.metadata().parent().unwrap()).unwrap();
        let blobs = layout.content().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let store = MetadataStore::open(&layout.metadata()).unwrap();
        let ns = Namespace::parse("default").unwrap();
        let put = |data: &[u8]| {
            let d = Digest::of(data);
            std::fs::write(blobs.join(d.hex()), data).unwrap();
            d.to_string()
        };
        let good = put(b"good blob");
        let rotten = put(b"will rot");
        std::fs::write(blob_path(&layout, &rotten), b"rotted!!").unwrap();
        let orphan = put(b"nobody records me");
        let gone = Digest::of(b"never written").to_string();
        for d in [&good, &rotten, &gone] {
            store
                .blob_add(
                    &ns,
                    &BlobRecord {
                        digest: d.clone(),
                        size: 9,
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        store
            .image_create(
                &ns,
                &ImageRecord {
                    name: "broken:latest".into(),
                    target: crate::core::images::Descriptor {
                        media_type: "x".into(),
                        digest: gone.clone(),
                        size: 1,
                        annotations: Default::default(),
                    },
                    ..Default::default()
                },
            )
            .unwrap();
        std::fs::create_dir_all(layout.content().join("ingest/half")).unwrap();
        std::fs::create_dir_all(layout.state.join("io.berth.build.v1/build-123")).unwrap();
        drop(store);

        let report = check(&layout, false).unwrap();
        assert!(report.corrupt());
        let text: Vec<&str> = report.findings.iter().map(|f| f.what.as_str()).collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(
            has(&format!("content {}: its bytes hash", rotten)),
            "{text:?}"
        );
        assert!(
            has(&format!("content {gone} is recorded, its bytes are gone")),
            "{text:?}"
        );
        assert!(has("image broken:latest points at"), "{text:?}");
        assert!(
            has(&format!("content {orphan}: bytes no namespace records")),
            "{text:?}"
        );
        assert!(has("a half-made ingest"), "{text:?}");
        assert!(has("an interrupted build's work"), "{text:?}");
        assert!(!has(&format!("content {good}")), "{text:?}");
        assert!(report.findings.iter().all(|f| !f.repaired));

        let repaired = check(&layout, true).unwrap();
        assert!(repaired
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Leftover)
            .all(|f| f.repaired));
        assert!(repaired
            .findings
            .iter()
            .filter(|f| f.what.contains("its bytes are gone") || f.what.contains("its bytes hash"))
            .all(|f| f.repaired));
        // What repair removed is gone for good; what it cannot fix is still reported.
        let after = check(&layout, false).unwrap();
        let left: Vec<&str> = after.findings.iter().map(|f| f.what.as_str()).collect();
        assert!(
            left.iter().all(|t| t.contains("image broken:latest")),
            "{left:?}"
        );
        assert!(blob_path(&layout, &good).exists());
        assert!(!blob_path(&layout, &orphan).exists());
    }
}
