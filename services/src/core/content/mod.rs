//! Content service core: namespaced access to the shared blob store. A blob is visible in a
//! namespace once that namespace has a metadata record for it; the bytes are stored once.

pub mod digest;
mod ingest;
pub mod local;

use crate::core::context::Namespace;
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::events::{Event, Exchange};
use crate::core::filters::{label_field, Fields, Filter};
use crate::core::gc::fence::GcFence;
use crate::core::metadata::content::BlobRecord;
use crate::core::metadata::{apply_label_path, now, validate_labels, Labels, MetadataStore};
use digest::Digest;
use local::LocalStore;
use std::path::Path;
use std::sync::Arc;

pub use ingest::NamespacedWriter;

impl Fields for BlobRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("digest") => Some(self.digest.clone()),
            Some("size") => Some(self.size.to_string()),
            Some("labels") => label_field(&self.labels, path),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Content {
    local: Arc<LocalStore>,
    store: MetadataStore,
    events: Exchange,
    /// A commit writes a blob no image holds yet: not in the middle of a collection.
    fence: GcFence,
}

/// A range of a blob to send: already read, or an open file to read from `offset` to `end`.
pub enum BlobRange {
    Read {
        offset: i64,
        data: Vec<u8>,
    },
    File {
        file: std::fs::File,
        offset: i64,
        end: i64,
    },
}

impl Content {
    pub fn open(root: &Path, store: MetadataStore, events: Exchange) -> Result<Self> {
        Ok(Self::new(LocalStore::open(root)?, store, events))
    }

    /// Namespaced access, recorded in `store`, to the blobs of an opened `local` store.
    pub fn new(local: LocalStore, store: MetadataStore, events: Exchange) -> Self {
        Content {
            local: Arc::new(local),
            store,
            events,
            fence: GcFence::default(),
        }
    }

    /// The same store, fenced by the daemon's collector (the one [`crate::core::gc::Gc`] is
    /// built with) rather than a fence of its own.
    pub fn with_gc_fence(mut self, fence: GcFence) -> Self {
        self.fence = fence;
        self
    }

    /// One record read: a redb point lookup, done in place (a hop to the blocking pool and
    /// back would cost more than the read; `ctr images ls` makes thousands of these).
    pub async fn info(&self, ns: Namespace, digest: String) -> Result<BlobRecord> {
        let d = Digest::parse(&digest)?;
        self.store
            .blob_get(&ns, &d.to_string())?
            .ok_or_else(|| Error::not_found(format!("content {digest}")))
    }

    pub async fn list(&self, ns: Namespace, filter: Filter) -> Result<Vec<BlobRecord>> {
        let store = self.store.clone();
        let all = blocking(move || store.blob_list(&ns)).await?;
        Ok(all.into_iter().filter(|b| filter.matches(b)).collect())
    }

    /// Only labels change; an empty mask replaces them all.
    pub async fn update(
        &self,
        ns: Namespace,
        digest: String,
        labels: Labels,
        paths: Vec<String>,
    ) -> Result<BlobRecord> {
        let d = Digest::parse(&digest)?;
        validate_labels(&labels)?;
        for p in &paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(Error::invalid(format!(
                    "cannot update {p:?} of content {digest}: only labels can change"
                )));
            }
        }
        let store = self.store.clone();
        blocking(move || {
            store.blob_update(&ns, &d.to_string(), |rec| {
                if paths.is_empty() {
                    rec.labels = labels.clone();
                }
                for p in &paths {
                    apply_label_path(&mut rec.labels, &labels, p)?;
                }
                rec.updated_at = now();
                Ok(())
            })
        })
        .await
    }

    /// Removes the blob from the namespace, and its bytes once no namespace uses it.
    pub async fn delete(&self, ns: Namespace, digest: String) -> Result<()> {
        let d = Digest::parse(&digest)?;
        let store = self.store.clone();
        let local = self.local.clone();
        let ns2 = ns.clone();
        let d2 = d.clone();
        blocking(move || {
            if !store.blob_remove(&ns2, &d2.to_string())? {
                local.delete_blob(&d2)?;
            }
            Ok(())
        })
        .await?;
        self.events.publish(
            &ns,
            Event::ContentDelete {
                digest: d.to_string(),
            },
        );
        Ok(())
    }

    /// Reads up to this size are served without a blocking thread.
    pub const SMALL_READ: i64 = 64 << 10;

    /// Opens a blob for reading; checks the namespace can see it and the range is sane. A
    /// range of at most `inline` bytes comes back read: where the request runs up to
    /// [`Self::SMALL_READ`], in one trip to the blocking pool above it.
    pub async fn open_reader(
        &self,
        ns: Namespace,
        digest: String,
        offset: i64,
        size: i64,
        inline: usize,
    ) -> Result<BlobRange> {
        let rec = self.info(ns, digest.clone()).await?;
        if offset < 0 || size < 0 {
            return Err(Error::invalid("read offset and size must not be negative"));
        }
        if offset > rec.size {
            return Err(Error::new(
                Kind::OutOfRange,
                format!(
                    "offset {offset} is past the end of {digest} ({} bytes)",
                    rec.size
                ),
            ));
        }
        let d = Digest::parse(&digest)?;
        let path = self.local.blob_path(&d);
        let end = if size == 0 {
            rec.size
        } else {
            (offset + size).min(rec.size)
        };
        let open = move || {
            use std::os::unix::fs::FileExt;
            let file =
                std::fs::File::open(&path).map_err(|e| Error::io(format!("open blob {d}"), e))?;
            let len = (end - offset) as usize;
            if len > inline {
                return Ok(BlobRange::File { file, offset, end });
            }
            let mut data = vec![0u8; len];
            file.read_exact_at(&mut data, offset as u64)
                .map_err(|e| Error::io(format!("read blob {d}"), e))?;
            Ok(BlobRange::Read { offset, data })
        };
        // A document (an index, a manifest, a config) is read where the request runs: a
        // hand-off to a blocking thread and back cost more than the read, one client
        // (`ctr images ls`) reading thousands of them one after another.
        if end - offset <= Self::SMALL_READ {
            open()
        } else {
            blocking(open).await
        }
    }

    /// Opens a blob the namespace can see, for blocking readers (apply, unpack).
    pub fn open_blob_sync(
        &self,
        ns: &Namespace,
        digest: &str,
    ) -> Result<(std::fs::File, BlobRecord)> {
        let d = Digest::parse(digest)?;
        let rec = self
            .store
            .blob_get(ns, &d.to_string())?
            .ok_or_else(|| Error::not_found(format!("content {digest}")))?;
        let file = std::fs::File::open(self.local.blob_path(&d))
            .map_err(|e| Error::io(format!("open blob {d}"), e))?;
        Ok((file, rec))
    }

    /// Reads a small document (manifest, index, config) whole, refusing anything larger than
    /// `max` and anything whose bytes do not match `digest` and `size`.
    pub fn read_document_sync(
        &self,
        ns: &Namespace,
        digest: &str,
        size: i64,
        max: i64,
    ) -> Result<Vec<u8>> {
        if size > max {
            return Err(Error::invalid(format!(
                "{digest} is {size} bytes; documents larger than {max} bytes are refused"
            )));
        }
        let (file, rec) = self.open_blob_sync(ns, digest)?;
        if rec.size > max {
            return Err(Error::invalid(format!(
                "{digest} is larger than {max} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(rec.size as usize);
        use std::io::Read;
        file.take(max as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("read {digest}"), e))?;
        let got = Digest::of(&bytes);
        if got.to_string() != digest || (size > 0 && bytes.len() as i64 != size) {
            return Err(Error::precondition(format!(
                "{digest} is corrupted in the content store (read {got}, {} bytes); remove it and pull again",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Re-reads a blob and checks its bytes still match its digest and size.
    pub fn verify_blob_sync(&self, ns: &Namespace, digest: &str) -> Result<()> {
        use std::io::Read;
        let (mut file, rec) = self.open_blob_sync(ns, digest)?;
        let mut h = berth_snapshotters::hash::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0i64;
        loop {
            let k = file
                .read(&mut buf)
                .map_err(|e| Error::io(format!("read {digest}"), e))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as i64;
        }
        let got = h.digest();
        if got != digest || n != rec.size {
            return Err(Error::precondition(format!(
                "blob {digest} is corrupted in the content store (read {got}, {n} bytes); remove it and pull the image again"
            )));
        }
        Ok(())
    }

    /// Adds `labels` to a blob's, for blocking callers. Labels it carries already, with the
    /// same values, are not written again: every unpack of an unpacked image (each `run`)
    /// labels its layers, and a write transaction waits for its sync to disk.
    pub fn label_sync(&self, ns: &Namespace, digest: &str, labels: Labels) -> Result<BlobRecord> {
        validate_labels(&labels)?;
        if let Some(rec) = self.store.blob_get(ns, digest)? {
            if labels.iter().all(|(k, v)| rec.labels.get(k) == Some(v)) {
                return Ok(rec);
            }
        }
        self.store.blob_update(ns, digest, |rec| {
            rec.labels.extend(labels);
            rec.updated_at = now();
            Ok(())
        })
    }

    /// Drops a blob whose bytes no longer match its digest, so it can be fetched again:
    /// the file goes (it is wrong for everyone) and so does this namespace's record. A blob
    /// that verifies is left alone and reported as such.
    pub fn discard_corrupt_sync(&self, ns: &Namespace, digest: &str) -> Result<()> {
        if self.verify_blob_sync(ns, digest).is_ok() {
            return Err(Error::precondition(format!(
                "blob {digest} verifies; it is not discarded"
            )));
        }
        let d = Digest::parse(digest)?;
        self.local.delete_blob(&d)?;
        self.store.blob_remove(ns, &d.to_string())?;
        Ok(())
    }

    /// Deletes a blob's bytes (garbage collection, once no namespace records it).
    pub fn delete_bytes_sync(&self, digest: &Digest) -> Result<()> {
        self.local.delete_blob(digest)
    }

    /// Whether the namespace can see `digest`.
    pub fn has_blob_sync(&self, ns: &Namespace, digest: &str) -> Result<bool> {
        Ok(self.store.blob_get(ns, digest)?.is_some())
    }

    /// Whether any namespace still holds `digest`'s bytes (garbage collection removes them
    /// once none does).
    pub fn bytes_present_sync(&self, digest: &str) -> Result<bool> {
        Ok(self.local.blob_size(&Digest::parse(digest)?)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::context::Ctx;
    use crate::core::metadata::leases::LeaseRecord;

    struct Fixture {
        _dir: tempfile::TempDir,
        content: Content,
        store: MetadataStore,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        let content =
            Content::open(&dir.path().join("content"), store.clone(), Exchange::new()).unwrap();
        Fixture {
            _dir: dir,
            content,
            store,
        }
    }

    fn ctx(ns: &str, lease: Option<&str>) -> Ctx {
        Ctx {
            ns: Namespace::parse(ns).unwrap(),
            lease: lease.map(str::to_string),
        }
    }

    async fn put(c: &Content, ctx: Ctx, data: &[u8], expected: &str) -> Result<BlobRecord> {
        let w = c
            .writer(ctx, "ref-1".into(), data.len() as i64, expected.into())
            .await?;
        let w = c.write(w, 0, data.to_vec()).await?;
        c.commit(w, data.len() as i64, expected.into(), Labels::new())
            .await
    }

    #[tokio::test]
    async fn blobs_are_per_namespace_and_adopted_without_a_second_write() {
        let f = fixture();
        let data = b"one blob";
        let d = Digest::of(data).to_string();
        put(&f.content, ctx("a", None), data, &d).await.unwrap();
        let b = Namespace::parse("b").unwrap();
        let missing = f.content.info(b.clone(), d.clone()).await.unwrap_err();
        assert_eq!(missing.kind(), Kind::NotFound);
        // Another namespace asking to write the same digest gets it recorded, not rewritten.
        let again = put(&f.content, ctx("b", None), data, &d).await.unwrap_err();
        assert_eq!(again.kind(), Kind::AlreadyExists);
        assert_eq!(f.content.info(b, d).await.unwrap().size, data.len() as i64);
    }

    #[tokio::test]
    async fn known_bytes_written_without_a_digest_are_recorded_in_the_writing_namespace() {
        let f = fixture();
        let data = b"a docker archive layer";
        let d = Digest::of(data).to_string();
        put(&f.content, ctx("a", None), data, "").await.unwrap();
        let rec = put(&f.content, ctx("b", None), data, "").await.unwrap();
        assert_eq!(rec.digest, d);
        let b = Namespace::parse("b").unwrap();
        assert!(f.content.info(b, d).await.is_ok());
    }

    #[tokio::test]
    async fn a_commit_of_bytes_the_namespace_has_is_already_exists_and_drops_the_ingest() {
        let f = fixture();
        let data = b"stored once";
        let d = Digest::of(data).to_string();
        put(&f.content, ctx("a", None), data, "").await.unwrap();
        let ns = Namespace::parse("a").unwrap();
        for expected in [d.as_str(), ""] {
            // Opened without a digest, so the open itself does not refuse.
            let w = f
                .content
                .writer(ctx("a", None), "again".into(), 0, String::new())
                .await
                .unwrap();
            let w = f.content.write(w, 0, data.to_vec()).await.unwrap();
            let e = f
                .content
                .commit(w, data.len() as i64, expected.into(), Labels::new())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), Kind::AlreadyExists, "expected {expected:?}: {e}");
            let gone = f.content.status(ns.clone(), "again".into()).await;
            assert_eq!(gone.unwrap_err().kind(), Kind::NotFound);
        }
        // A pull's commit only needs the blob there: it is recorded again, not refused.
        let w = f
            .content
            .writer(ctx("a", None), "pull".into(), 0, String::new())
            .await
            .unwrap();
        let w = f.content.write(w, 0, data.to_vec()).await.unwrap();
        let rec = f.content.commit_sync(w, 0, "", Labels::new()).unwrap();
        assert_eq!(rec.digest, d);
    }

    #[tokio::test]
    async fn an_ingest_is_dated_by_its_last_write() {
        let f = fixture();
        let ns = Namespace::parse("a").unwrap();
        let before_open = now();
        let w = f
            .content
            .writer(ctx("a", None), "dated".into(), 0, String::new())
            .await
            .unwrap();
        let opened = now();
        let started = w.inner.meta().started_at;
        assert!((before_open..=opened).contains(&started));
        assert_eq!(w.inner.updated_at(), started);
        let before_write = now();
        let w = f.content.write(w, 0, b"abc".to_vec()).await.unwrap();
        let written = now();
        let updated = w.inner.updated_at();
        assert!((before_write..=written).contains(&updated), "{updated}");
        drop(w);
        // Read back from disk (a status, a resume): the same instants.
        let st = f.content.status(ns, "dated".into()).await.unwrap();
        assert_eq!((st.meta.started_at, st.updated_at), (started, updated));
        let w = f
            .content
            .writer(ctx("a", None), "dated".into(), 0, String::new())
            .await
            .unwrap();
        assert_eq!(w.inner.updated_at(), updated);
    }

    #[tokio::test]
    async fn existing_content_written_under_a_lease_joins_the_lease() {
        let f = fixture();
        let data = b"shared layer";
        let d = Digest::of(data).to_string();
        put(&f.content, ctx("a", None), data, &d).await.unwrap();
        let ns = Namespace::parse("a").unwrap();
        f.store
            .lease_create(
                &ns,
                &LeaseRecord {
                    id: "l1".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let again = put(&f.content, ctx("a", Some("l1")), data, &d)
            .await
            .unwrap_err();
        assert_eq!(again.kind(), Kind::AlreadyExists);
        let held = f.store.lease_resources(&ns, "l1").unwrap();
        assert!(
            held.iter().any(|r| r.kind == "content" && r.id == d),
            "{held:?}"
        );
    }

    #[tokio::test]
    async fn abandoned_ingests_expire_unless_held_or_in_use() {
        let f = fixture();
        let ns = Namespace::parse("a").unwrap();
        for r in ["old", "held", "fresh"] {
            let w = f
                .content
                .writer(ctx("a", None), r.into(), 10, String::new())
                .await
                .unwrap();
            f.content.write(w, 0, b"12345".to_vec()).await.unwrap();
        }
        let in_use = f
            .content
            .writer(ctx("a", None), "in-use".into(), 10, String::new())
            .await
            .unwrap();
        // "Now" is later than every write: all but the exceptions are stale.
        let later = now() + 1;
        let held = std::collections::HashSet::from(["held".to_string()]);
        let removed = f.content.expire_ingests_sync(&ns, later, &held).unwrap();
        assert_eq!(removed, 2, "old and fresh (both older than `later`)");
        let left: Vec<String> = f
            .content
            .list_statuses(ns.clone(), Filter::parse_all::<&str>(&[]).unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.meta.reference)
            .collect();
        assert_eq!(left, ["held", "in-use"]);
        drop(in_use);
        // Nothing is older than the epoch: nothing goes.
        assert_eq!(f.content.expire_ingests_sync(&ns, 0, &held).unwrap(), 0);
    }

    #[tokio::test]
    async fn label_updates_past_the_record_bound_are_refused_and_not_committed() {
        let f = fixture();
        let data = b"labelled";
        let d = Digest::of(data).to_string();
        put(&f.content, ctx("a", None), data, &d).await.unwrap();
        let ns = Namespace::parse("a").unwrap();
        let value = "v".repeat(4000);
        let mut refused = None;
        for i in 0..100 {
            let key = format!("k{i}");
            let r = f
                .content
                .update(
                    ns.clone(),
                    d.clone(),
                    Labels::from([(key.clone(), value.clone())]),
                    vec![format!("labels.{key}")],
                )
                .await;
            if let Err(e) = r {
                refused = Some((i, e));
                break;
            }
        }
        let (i, e) = refused.expect("the record grew without bound");
        assert_eq!(e.kind(), Kind::InvalidArgument);
        let rec = f.content.info(ns, d).await.unwrap();
        assert_eq!(rec.labels.len(), i, "the refused update was committed");
        let total: usize = rec.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(total <= crate::core::metadata::MAX_LABELS_TOTAL);
    }

    #[tokio::test]
    async fn labels_it_already_has_are_not_written_again() {
        let f = fixture();
        let data = b"a layer";
        let d = Digest::of(data).to_string();
        put(&f.content, ctx("a", None), data, &d).await.unwrap();
        let ns = Namespace::parse("a").unwrap();
        let label = |v: &str| Labels::from([("k".to_string(), v.to_string())]);
        let first = f.content.label_sync(&ns, &d, label("1")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let same = f.content.label_sync(&ns, &d, label("1")).unwrap();
        assert_eq!(
            same.updated_at, first.updated_at,
            "an unchanged label was written"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        let changed = f.content.label_sync(&ns, &d, label("2")).unwrap();
        assert!(changed.updated_at > first.updated_at);
        let stored = f.content.info(ns.clone(), d.clone()).await.unwrap();
        assert_eq!(stored.labels.get("k").map(String::as_str), Some("2"));
        let missing = f
            .content
            .label_sync(&ns, "sha256:00", label("1"))
            .unwrap_err();
        assert_eq!(missing.kind(), Kind::NotFound);
    }

    #[tokio::test]
    async fn a_wrong_digest_stores_nothing() {
        let f = fixture();
        let wrong = Digest::of(b"something else").to_string();
        let e = put(&f.content, ctx("a", None), b"bytes", &wrong)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        let ns = Namespace::parse("a").unwrap();
        assert!(f.content.info(ns.clone(), wrong).await.is_err());
        let blobs = f
            .content
            .list(ns, Filter::parse_all::<&str>(&[]).unwrap())
            .await
            .unwrap();
        assert!(blobs.is_empty());
    }
}
