//! Garbage collection, per namespace, mark and sweep. Roots: image targets, live leases
//! (expired ones are deleted first) and what they hold, containers' snapshots, content and
//! snapshots labelled `containerd.io/gc.root`, and every snapshot that is not committed (in
//! use by something running). From content it follows `containerd.io/gc.ref.content.*` and
//! `containerd.io/gc.ref.snapshot.<snapshotter>` labels, and also the documents themselves
//! (index -> manifests -> config and layers; a config's diffIDs name the snapshots unpacked
//! from it), so images imported by any client are kept whole. Snapshots keep their parents.
//! What is not marked goes: content records (and the bytes once no namespace uses them) and
//! committed snapshots, children before parents. Ingests no lease holds and nobody wrote to
//! for [`INGEST_EXPIRY`] are removed: an abandoned upload does not stay for ever.

use crate::core::content::Content;
use crate::core::context::Namespace;
use crate::core::error::{blocking, Result};
use crate::core::metadata::content::BlobRecord;
use crate::core::metadata::MetadataStore;
use crate::core::oci;
use crate::core::snapshots::{scoped, unscope, Snapshots};
use berth_snapshotters::Kind;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub mod fence;
pub use fence::{Collector, GcFence, GcHandle, Operation};

use berth_proto::vocab::labels::{
    GC_EXPIRE as EXPIRE_LABEL, GC_REF_CONTENT as CONTENT_REF, GC_REF_SNAPSHOT as SNAPSHOT_REF,
    GC_ROOT as ROOT_LABEL,
};

/// How long an ingest nobody writes to and no lease holds is kept (containerd's clients hold
/// theirs with leases; a client that went away leaves its upload behind).
pub const INGEST_EXPIRY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Keys unpacks (berth's and containerd's clients') give the snapshots they extract into.
const INTERRUPTED_UNPACK_PREFIX: &str = "extract-";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Collected {
    pub content: usize,
    /// Bytes of content deleted from disk (blobs no namespace held any more).
    pub reclaimed: u64,
    pub snapshots: usize,
    pub leases: usize,
    pub ingests: usize,
}

#[derive(Clone)]
pub struct Gc {
    store: MetadataStore,
    content: Content,
    snapshots: Snapshots,
    fence: GcFence,
    /// One collection at a time.
    running: Arc<tokio::sync::Mutex<()>>,
}

impl Gc {
    /// `fence` is the one `content` and `snapshots` were opened with.
    pub fn new(
        fence: GcFence,
        store: MetadataStore,
        content: Content,
        snapshots: Snapshots,
    ) -> Self {
        Gc {
            store,
            content,
            snapshots,
            fence,
            running: Arc::default(),
        }
    }

    /// Starts an operation that relies on what it finds (a pull, a build) across several
    /// store calls; see [`GcFence::operation`].
    pub async fn operation(&self) -> Operation {
        self.fence.operation().await
    }

    /// The handle the stores take: this collector's fence, and this collector.
    pub fn handle(&self) -> GcHandle {
        GcHandle::new(self.fence.clone(), Arc::new(self.clone()))
    }

    /// Asks for a collection soon (deletions call this); collections run in the background
    /// task started by [`Gc::run`].
    pub fn schedule(&self) {
        self.fence.schedule();
    }

    /// The background collector: first what a previous run left, then after each wake-up
    /// (waiting briefly, so a burst of deletions is collected once).
    pub fn run(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let started = crate::core::metadata::now();
        tokio::spawn(async move {
            log(this.collect_older_than(Some(started)).await);
            loop {
                this.fence.woken().await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                log(this.collect().await);
            }
        })
    }

    /// Collects now, in every namespace.
    pub async fn collect(&self) -> Result<Collected> {
        self.collect_older_than(None).await
    }

    /// Collects what a previous run of the daemon left: only records older than `cutoff`
    /// (nanoseconds), so a client busy since this start is not raced.
    pub async fn collect_older_than(&self, cutoff: Option<i64>) -> Result<Collected> {
        let _one = self.running.lock().await;
        self.fence.begin_collecting().await;
        let this = self.clone();
        let result = blocking(move || {
            let mut total = Collected::default();
            for (name, _) in this.store.namespace_list()? {
                let Ok(ns) = Namespace::parse(&name) else {
                    continue;
                };
                let c = this.collect_namespace(&ns, cutoff)?;
                total.content += c.content;
                total.reclaimed += c.reclaimed;
                total.snapshots += c.snapshots;
                total.leases += c.leases;
                total.ingests += c.ingests;
            }
            Ok(total)
        })
        .await;
        self.fence.end_collecting();
        if let Ok(c) = &result {
            crate::core::metrics::registry().gc_done(c.content, c.snapshots, c.reclaimed);
        }
        result
    }

    /// One namespace. `after_restart` (the run at start, over what a previous daemon left)
    /// also takes the active `extract-*` snapshots of unpacks that daemon was killed in:
    /// nothing can still be writing them, and unless a lease holds them nothing ever will.
    fn collect_namespace(&self, ns: &Namespace, after_restart: Option<i64>) -> Result<Collected> {
        let cutoff = after_restart.unwrap_or(i64::MAX);
        let mut out = Collected::default();
        let mut roots = Roots::default();
        self.lease_roots(ns, &mut roots, &mut out)?;
        for image in self.store.image_list(ns)? {
            roots.content.push(image.target.digest);
        }
        let blobs = self.store.blob_list(ns)?;
        for b in &blobs {
            if b.labels.contains_key(ROOT_LABEL) {
                roots.content.push(b.digest.clone());
            }
        }
        for c in self.store.container_list(ns)? {
            if !c.snapshot_key.is_empty() {
                roots.snapshots.push((c.snapshotter, c.snapshot_key));
            }
        }
        let (marked, chains) = self.mark_content(ns, &blobs, &mut roots);
        let sweep = SnapshotSweep {
            ns,
            roots: &roots.snapshots,
            chains: &chains,
            after_restart,
            cutoff,
        };
        for name in self.snapshots.names() {
            let Ok(snap) = self.snapshots.get(&name) else {
                continue;
            };
            out.snapshots += sweep.sweep(&name, snap.as_ref())?;
        }
        self.sweep_content(ns, blobs, &marked, cutoff, &mut out)?;
        let stale = crate::core::metadata::now().saturating_sub(INGEST_EXPIRY.as_nanos() as i64);
        out.ingests +=
            self.content
                .expire_ingests_sync(ns, stale.min(cutoff), &roots.held_ingests)?;
        Ok(out)
    }

    /// Deletes the expired leases (counting them in `out`) and adds what the live ones hold
    /// to `roots`.
    fn lease_roots(&self, ns: &Namespace, roots: &mut Roots, out: &mut Collected) -> Result<()> {
        let now = crate::core::metadata::now() / 1_000_000_000;
        for lease in self.store.lease_list(ns)? {
            let expired = lease
                .labels
                .get(EXPIRE_LABEL)
                .and_then(|t| berth_proto::vocab::time::parse_rfc3339(t))
                .is_some_and(|t| t <= now);
            // A lease its client deletes meanwhile is simply gone: it holds nothing.
            if expired {
                match self.store.lease_delete(ns, &lease.id) {
                    Ok(()) => out.leases += 1,
                    Err(e) if e.kind() == crate::core::error::Kind::NotFound => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let resources = match self.store.lease_resources(ns, &lease.id) {
                Ok(r) => r,
                Err(e) if e.kind() == crate::core::error::Kind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for r in resources {
                if r.kind == "content" {
                    roots.content.push(r.id);
                } else if r.kind == "ingests" {
                    roots.held_ingests.insert(r.id);
                } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                    roots.snapshots.push((sn.to_string(), r.id));
                }
            }
        }
        Ok(())
    }

    /// Marks content from `roots.content`, adding the snapshots it names to `roots.snapshots`;
    /// returns the marked digests and the chain IDs the marked configs name.
    fn mark_content(
        &self,
        ns: &Namespace,
        blobs: &[BlobRecord],
        roots: &mut Roots,
    ) -> (HashSet<String>, Vec<String>) {
        let records: HashMap<&str, &BlobRecord> =
            blobs.iter().map(|b| (b.digest.as_str(), b)).collect();
        let mut marked: HashSet<String> = HashSet::new();
        let mut chains: Vec<String> = vec![];
        while let Some(d) = roots.content.pop() {
            if !marked.insert(d.clone()) {
                continue;
            }
            let Some(rec) = records.get(d.as_str()) else {
                continue;
            };
            for (k, v) in rec.labels.iter() {
                if k.starts_with(CONTENT_REF) {
                    roots.content.push(v.clone());
                } else if let Some(sn) = k.strip_prefix(SNAPSHOT_REF) {
                    roots.snapshots.push((sn.to_string(), v.clone()));
                }
            }
            // Layers (labelled with their diffID) are not documents: never read them.
            let layer = rec
                .labels
                .contains_key(crate::core::diff::UNCOMPRESSED_LABEL);
            if !layer && rec.size > 0 && rec.size <= oci::MAX_DOCUMENT {
                if let Ok(bytes) =
                    self.content
                        .read_document_sync(ns, &d, rec.size, oci::MAX_DOCUMENT)
                {
                    follow_document(&bytes, &mut roots.content, &mut chains);
                }
            }
        }
        (marked, chains)
    }

    /// Removes the content records nothing marked (older than `cutoff`), and their bytes once
    /// no namespace uses them.
    fn sweep_content(
        &self,
        ns: &Namespace,
        blobs: Vec<BlobRecord>,
        marked: &HashSet<String>,
        cutoff: i64,
        out: &mut Collected,
    ) -> Result<()> {
        for b in blobs {
            if !marked.contains(&b.digest) && b.created_at < cutoff {
                if !self.store.blob_remove(ns, &b.digest)? {
                    if let Ok(d) = crate::core::content::digest::Digest::parse(&b.digest) {
                        self.content.delete_bytes_sync(&d)?;
                        out.reclaimed += b.size.max(0) as u64;
                    }
                }
                out.content += 1;
            }
        }
        Ok(())
    }
}

/// What a namespace's collection starts marking from.
#[derive(Default)]
struct Roots {
    content: Vec<String>,
    /// (snapshotter, key) pairs.
    snapshots: Vec<(String, String)>,
    /// Ingests live leases hold.
    held_ingests: HashSet<String>,
}

/// Marks and sweeps one namespace's snapshots, snapshotter by snapshotter.
struct SnapshotSweep<'a> {
    ns: &'a Namespace,
    roots: &'a [(String, String)],
    /// Chain IDs the marked image configs name (in every snapshotter).
    chains: &'a [String],
    after_restart: Option<i64>,
    cutoff: i64,
}

impl SnapshotSweep<'_> {
    /// Marks the snapshots `name` must keep and removes its committed ones nobody needs;
    /// returns how many went.
    fn sweep(&self, name: &str, snap: &dyn berth_snapshotters::Snapshotter) -> Result<usize> {
        let ns = self.ns;
        let mut infos: BTreeMap<String, berth_snapshotters::Info> = BTreeMap::new();
        snap.walk(&mut |i| {
            if unscope(ns, &i.name).is_some() {
                infos.insert(i.name.clone(), i.clone());
            }
            true
        })?;
        let keep = self.mark(name, &infos);
        Ok(self.remove_unkept(snap, &infos, &keep))
    }

    /// The snapshots kept: the roots in this snapshotter, the chains, what is not committed
    /// (unless an interrupted unpack's) or labelled a root, and the parents of all of those.
    fn mark(
        &self,
        name: &str,
        infos: &BTreeMap<String, berth_snapshotters::Info>,
    ) -> HashSet<String> {
        let ns = self.ns;
        let mut keep: HashSet<String> = HashSet::new();
        let mut stack: Vec<String> = self
            .roots
            .iter()
            .filter(|(sn, _)| sn == name)
            .map(|(_, k)| scoped(ns, k))
            .chain(self.chains.iter().map(|c| scoped(ns, c)))
            .chain(
                infos
                    .values()
                    .filter(|i| {
                        let interrupted_unpack = self.after_restart.is_some()
                            && i.created_at < self.cutoff
                            && unscope(ns, &i.name)
                                .is_some_and(|k| k.starts_with(INTERRUPTED_UNPACK_PREFIX));
                        (i.kind != Kind::Committed && !interrupted_unpack)
                            || i.labels.contains_key(ROOT_LABEL)
                    })
                    .map(|i| i.name.clone()),
            )
            .collect();
        while let Some(k) = stack.pop() {
            if !keep.insert(k.clone()) {
                continue;
            }
            if let Some(p) = infos.get(&k).and_then(|i| i.parent.clone()) {
                stack.push(p);
            }
        }
        keep
    }

    /// Removes what is not kept (and older than the cutoff), children first: a snapshot goes
    /// once nothing left depends on it. Returns how many went.
    fn remove_unkept(
        &self,
        snap: &dyn berth_snapshotters::Snapshotter,
        infos: &BTreeMap<String, berth_snapshotters::Info>,
        keep: &HashSet<String>,
    ) -> usize {
        let mut removed = 0;
        let mut doomed: Vec<String> = infos
            .values()
            .filter(|i| !keep.contains(&i.name) && i.created_at < self.cutoff)
            .map(|i| i.name.clone())
            .collect();
        while !doomed.is_empty() {
            let parents: HashSet<String> = doomed
                .iter()
                .filter_map(|k| infos.get(k).and_then(|i| i.parent.clone()))
                .collect();
            let (now_, later): (Vec<String>, Vec<String>) =
                doomed.into_iter().partition(|k| !parents.contains(k));
            if now_.is_empty() {
                break;
            }
            for k in now_ {
                match snap.remove(&k) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(snapshot = k, error = %e, "cannot collect snapshot")
                    }
                }
            }
            doomed = later;
        }
        removed
    }
}

impl Collector for Gc {
    fn collect_now(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move { self.collect().await.map(|_| ()) })
    }
}

fn log(result: Result<Collected>) {
    match result {
        Ok(c) if c != Collected::default() => tracing::info!(
            content = c.content,
            snapshots = c.snapshots,
            leases = c.leases,
            ingests = c.ingests,
            "garbage collected"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
    }
}

/// The content and snapshots an image document refers to.
fn follow_document(bytes: &[u8], content: &mut Vec<String>, chains: &mut Vec<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let digest_of = |d: &serde_json::Value| d["digest"].as_str().map(str::to_string);
    for m in v["manifests"].as_array().into_iter().flatten() {
        content.extend(digest_of(m));
    }
    if v["config"].is_object() {
        content.extend(digest_of(&v["config"]));
    }
    if let Some(layers) = v["layers"].as_array() {
        content.extend(layers.iter().filter_map(digest_of));
    }
    if let Some(diffs) = v["rootfs"]["diff_ids"].as_array() {
        let diffs: Vec<String> = diffs
            .iter()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        if let Some(top) = oci::chain_ids(&diffs).pop() {
            chains.push(top);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_their_parts() {
        let (mut c, mut s) = (vec![], vec![]);
        follow_document(
            br#"{"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l1"}]}"#,
            &mut c,
            &mut s,
        );
        assert_eq!(c, vec!["sha256:c", "sha256:l1"]);
        follow_document(br#"{"rootfs":{"diff_ids":["sha256:a"]}}"#, &mut c, &mut s);
        assert_eq!(s, vec!["sha256:a"]);
    }
}
