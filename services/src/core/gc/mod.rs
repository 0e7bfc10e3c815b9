//! Garbage collection, per namespace, mark and sweep, with containerd's semantics: what is
//! kept is what the roots reach through the references labels declare ([`graph`]). Roots:
//! images (unless expired by `containerd.io/gc.expire`), live leases (expired ones are
//! deleted first) and what they hold, containers, and content and snapshots labelled
//! `containerd.io/gc.root`. Image documents are never read for their parts: a client that
//! drops a manifest's layer labels after unpacking (containerd's discard of unpacked layers)
//! gets those layers collected, and berth's own writers (pull, import, build, unpack) label
//! what they write as containerd's do. One thing berth keeps beyond containerd: a snapshot
//! that is not committed (mounted or being written) is never collected; and at the first
//! collection after a start, image documents stored with no references at all (berth's
//! imports before it labelled them) get the labels their writer would give them now.
//! What is not marked goes: content records (and the bytes once no namespace uses them),
//! snapshots (children before parents) and expired images. Ingests no lease holds and
//! nobody wrote to for [`INGEST_EXPIRY`] are removed: an abandoned upload does not stay for
//! ever. Snapshotters in other processes are listed before writers are stopped, and one that
//! cannot be listed is left out of that collection with all its snapshots kept ([`survey`]).

use crate::core::content::Content;
use crate::core::context::Namespace;
use crate::core::error::{blocking, Result};
use crate::core::metadata::content::BlobRecord;
use crate::core::metadata::MetadataStore;
use crate::core::snapshots::{scoped, unscope, Snapshots};
use berth_snapshotters::Kind;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub mod fence;
mod graph;
mod legacy;
mod survey;
pub use fence::{Collector, GcFence, GcHandle, Operation};
use graph::Node;
use survey::{Remembered, Source, Survey};

use berth_proto::vocab::labels::GC_EXPIRE as EXPIRE_LABEL;

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
    /// Expired images (`containerd.io/gc.expire`) nothing referred to.
    pub images: usize,
    /// Snapshotters left out (a plugin that could not be listed): all their snapshots kept.
    pub left_out: usize,
}

/// How soon a collection that left a snapshotter out is followed by another.
const LEFT_OUT_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Clone)]
pub struct Gc {
    store: MetadataStore,
    content: Content,
    snapshots: Snapshots,
    fence: GcFence,
    /// One collection at a time.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Each plugin's snapshots when it was last listed.
    remembered: Remembered,
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
            remembered: Arc::default(),
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
            let retry_pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut result = this.collect_older_than(Some(started)).await;
            loop {
                this.retry_if_left_out(&result, &retry_pending);
                log(result);
                this.fence.woken().await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                result = this.collect().await;
            }
        })
    }

    /// After a collection that left a snapshotter out, another one a little later (one
    /// pending at a time): a plugin that comes back gets collected without a deletion.
    fn retry_if_left_out(
        &self,
        result: &Result<Collected>,
        pending: &Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering;
        let left_out = matches!(result, Ok(c) if c.left_out > 0);
        if !left_out || pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let (fence, pending) = (self.fence.clone(), pending.clone());
        tokio::spawn(async move {
            tokio::time::sleep(LEFT_OUT_RETRY).await;
            pending.store(false, Ordering::SeqCst);
            fence.schedule();
        });
    }

    /// Collects now, in every namespace.
    pub async fn collect(&self) -> Result<Collected> {
        self.collect_older_than(None).await
    }

    /// Collects what a previous run of the daemon left: only records older than `cutoff`
    /// (nanoseconds), so a client busy since this start is not raced.
    pub async fn collect_older_than(&self, cutoff: Option<i64>) -> Result<Collected> {
        let _one = self.running.lock().await;
        // Before the fence: a stuck plugin holds up this collection, not the writers.
        let (snapshots, remembered) = (self.snapshots.clone(), self.remembered.clone());
        let survey = blocking(move || Ok(Survey::take(&snapshots, &remembered))).await?;
        self.fence.begin_collecting().await;
        let this = self.clone();
        let result = blocking(move || {
            let survey = survey.settle(&this.snapshots, &this.remembered);
            let mut total = Collected::default();
            for (name, why) in survey.left_out() {
                tracing::warn!(
                    snapshotter = name,
                    reason = why,
                    "garbage collection left this snapshotter out and kept all its snapshots"
                );
                total.left_out += 1;
            }
            for (name, _) in this.store.namespace_list()? {
                let Ok(ns) = Namespace::parse(&name) else {
                    continue;
                };
                let c = this.collect_namespace(&ns, cutoff, &survey)?;
                total.content += c.content;
                total.reclaimed += c.reclaimed;
                total.snapshots += c.snapshots;
                total.leases += c.leases;
                total.ingests += c.ingests;
                total.images += c.images;
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
    fn collect_namespace(
        &self,
        ns: &Namespace,
        after_restart: Option<i64>,
        survey: &Survey,
    ) -> Result<Collected> {
        let cutoff = after_restart.unwrap_or(i64::MAX);
        let mut out = Collected::default();
        let mut roots = Roots::default();
        if after_restart.is_some() {
            self.label_unlabelled(ns)?;
        }
        self.lease_roots(ns, &mut roots, &mut out)?;
        let now = crate::core::metadata::now() / 1_000_000_000;
        let images = self.store.image_list(ns)?;
        let blobs = self.store.blob_list(ns)?;
        let containers = self.store.container_list(ns)?;
        let snapshots = self.snapshot_infos(ns, survey)?;
        let mut objects = graph::Objects {
            now,
            ..Default::default()
        };
        for i in &images {
            objects.images.insert(&i.name, i);
            if !graph::expired(&i.labels, now) {
                roots.nodes.push(Node::image(&i.name, false));
            }
        }
        for b in &blobs {
            objects.content.insert(&b.digest, &b.labels);
            if graph::is_root(&b.labels) {
                roots.nodes.push(Node::content(&b.digest, false));
            }
        }
        for c in &containers {
            objects
                .containers
                .insert(&c.id, (&c.snapshotter, &c.snapshot_key, &c.labels));
            roots.nodes.push(Node::Container(c.id.clone()));
        }
        let keeper = SnapshotKeeper {
            ns,
            after_restart,
            cutoff,
        };
        for (sn, (infos, kept)) in &snapshots {
            for (key, i) in infos {
                objects.snapshots.insert(
                    (sn, key),
                    graph::SnapshotNode {
                        parent: i.parent.as_deref().and_then(|p| unscope(ns, p)),
                        labels: &i.labels,
                    },
                );
                if *kept || graph::is_root(&i.labels) || keeper.in_use(key, i) {
                    roots.nodes.push(Node::snapshot(sn, key, false));
                }
            }
        }
        let marked = graph::mark(&objects, std::mem::take(&mut roots.nodes));
        for (sn, (infos, kept)) in &snapshots {
            let Ok(snap) = self.snapshots.get(sn) else {
                continue;
            };
            if *kept {
                continue;
            }
            out.snapshots += keeper.remove_unkept(snap.as_ref(), sn, infos, &marked);
        }
        for i in &images {
            if !marked.images.contains(&i.name) && i.created_at < cutoff {
                match self.store.image_delete(ns, &i.name) {
                    Ok(()) => out.images += 1,
                    Err(e) if e.kind() == crate::core::error::Kind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.sweep_content(ns, blobs, &marked.content, cutoff, &mut out)?;
        let stale = crate::core::metadata::now().saturating_sub(INGEST_EXPIRY.as_nanos() as i64);
        out.ingests +=
            self.content
                .expire_ingests_sync(ns, stale.min(cutoff), &roots.held_ingests)?;
        Ok(out)
    }

    /// Labels the parts of image documents stored before berth labelled what it wrote
    /// (see [`legacy`]).
    fn label_unlabelled(&self, ns: &Namespace) -> Result<()> {
        let blobs = self.store.blob_list(ns)?;
        let targets = self
            .store
            .image_list(ns)?
            .into_iter()
            .map(|i| i.target.digest)
            .collect();
        let labelled = legacy::label_unlabelled(&self.content, ns, &blobs, targets)?;
        if labelled > 0 {
            tracing::info!(
                namespace = %ns,
                documents = labelled,
                "labelled the parts of image documents stored without references"
            );
        }
        Ok(())
    }

    /// The namespace's snapshots, by snapshotter and key (without the namespace), and
    /// whether the snapshotter is left out (all of it kept; its snapshots as last listed).
    fn snapshot_infos(&self, ns: &Namespace, survey: &Survey) -> Result<SnapshotsByName> {
        let mut all = BTreeMap::new();
        for name in self.snapshots.names() {
            let Ok(snap) = self.snapshots.get(&name) else {
                continue;
            };
            let mut infos = BTreeMap::new();
            let mut visit = |i: &berth_snapshotters::Info| {
                if let Some(key) = unscope(ns, &i.name) {
                    infos.insert(key.to_string(), i.clone());
                }
                true
            };
            let source = survey.source(&name);
            match source {
                Source::Local => snap.walk(&mut visit)?,
                Source::Listed(infos) | Source::Kept(infos) => infos.iter().for_each(|i| {
                    visit(i);
                }),
            }
            let kept = matches!(source, Source::Kept(_));
            all.insert(name, (infos, kept));
        }
        Ok(all)
    }

    /// Deletes the expired leases (counting them in `out`) and adds what the live ones hold
    /// to `roots`; a flat lease (`containerd.io/gc.flat`) holds its objects, not what they
    /// refer to.
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
            let flat = lease.labels.contains_key(graph::FLAT);
            let resources = match self.store.lease_resources(ns, &lease.id) {
                Ok(r) => r,
                Err(e) if e.kind() == crate::core::error::Kind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for r in resources {
                match r.kind.as_str() {
                    "content" => roots.nodes.push(Node::content(&r.id, flat)),
                    "images" => roots.nodes.push(Node::image(&r.id, flat)),
                    "ingests" => {
                        roots.held_ingests.insert(r.id);
                    }
                    kind => {
                        if let Some(sn) = kind.strip_prefix("snapshots/") {
                            roots.nodes.push(Node::snapshot(sn, &r.id, flat));
                        }
                    }
                }
            }
        }
        Ok(())
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
                // A record a client removed meanwhile is simply gone: nothing to sweep, and
                // the rest of the collection goes on.
                let shared = match self.store.blob_remove(ns, &b.digest) {
                    Ok(shared) => shared,
                    Err(e) if e.kind() == crate::core::error::Kind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if !shared {
                    if let Ok(d) = crate::core::content::digest::Digest::parse(&b.digest) {
                        match self.content.delete_bytes_sync(&d) {
                            Ok(()) => out.reclaimed += b.size.max(0) as u64,
                            Err(e) if e.kind() == crate::core::error::Kind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                out.content += 1;
            }
        }
        Ok(())
    }
}

/// A namespace's snapshots by snapshotter, then key; and whether the snapshotter is left out.
type SnapshotsByName = BTreeMap<String, (BTreeMap<String, berth_snapshotters::Info>, bool)>;

/// What a namespace's collection starts marking from.
#[derive(Default)]
struct Roots {
    nodes: Vec<Node>,
    /// Ingests live leases hold.
    held_ingests: HashSet<String>,
}

/// Which snapshots berth keeps beyond the references, and the removal of the rest.
struct SnapshotKeeper<'a> {
    ns: &'a Namespace,
    after_restart: Option<i64>,
    cutoff: i64,
}

impl SnapshotKeeper<'_> {
    /// A snapshot that is not committed is in use (mounted, or being written) and kept
    /// whether or not anything refers to it; but not an interrupted unpack's, after a restart.
    fn in_use(&self, key: &str, i: &berth_snapshotters::Info) -> bool {
        let interrupted_unpack = self.after_restart.is_some()
            && i.created_at < self.cutoff
            && key.starts_with(INTERRUPTED_UNPACK_PREFIX);
        i.kind != Kind::Committed && !interrupted_unpack
    }

    /// Removes what is not marked (and older than the cutoff), children first: a snapshot
    /// goes once nothing left depends on it. Returns how many went.
    fn remove_unkept(
        &self,
        snap: &dyn berth_snapshotters::Snapshotter,
        snapshotter: &str,
        infos: &BTreeMap<String, berth_snapshotters::Info>,
        marked: &graph::Marked,
    ) -> usize {
        let mut removed = 0;
        let parent_of = |k: &str| {
            infos
                .get(k)
                .and_then(|i| i.parent.as_deref())
                .and_then(|p| unscope(self.ns, p))
                .map(str::to_string)
        };
        let mut doomed: Vec<String> = infos
            .iter()
            .filter(|(k, i)| {
                !marked
                    .snapshots
                    .contains(&(snapshotter.to_string(), k.to_string()))
                    && i.created_at < self.cutoff
            })
            .map(|(k, _)| k.clone())
            .collect();
        while !doomed.is_empty() {
            let parents: HashSet<String> = doomed.iter().filter_map(|k| parent_of(k)).collect();
            let (now_, later): (Vec<String>, Vec<String>) =
                doomed.into_iter().partition(|k| !parents.contains(k));
            if now_.is_empty() {
                break;
            }
            for k in now_ {
                match snap.remove(&scoped(self.ns, &k)) {
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
        // Left-out snapshotters are warned of as they are found; nothing else: no line.
        Ok(c) if (Collected { left_out: 0, ..c }) != Collected::default() => {
            tracing::info!(
                content = c.content,
                snapshots = c.snapshots,
                leases = c.leases,
                ingests = c.ingests,
                images = c.images,
                "garbage collected"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
    }
}
