//! The ingest protocol: writers bound to a namespace and lease, resumed by ref, committed
//! into the shared blob store and adopted by the writing namespace; abandoned ingests expire.

use super::digest::Digest;
use super::local::{IngestStatus, Writer};
use super::Content;
use crate::core::context::{Ctx, Namespace};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::filters::{Fields, Filter};
use crate::core::metadata::content::BlobRecord;
use crate::core::metadata::leases::LeaseResource;
use crate::core::metadata::{now, validate_labels, Labels, MetadataStore};

impl Fields for IngestStatus {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("ref") => Some(self.meta.reference.clone()),
            Some("expected") => Some(self.meta.expected.clone()),
            _ => None,
        }
    }
}

/// Largest ingest ref accepted; refs are names, not payloads.
const MAX_REF_LEN: usize = 4096;

fn validate_ref(reference: &str) -> Result<()> {
    if reference.is_empty() {
        return Err(Error::invalid("ref must not be empty"));
    }
    if reference.len() > MAX_REF_LEN {
        return Err(Error::invalid(format!(
            "ref is {} bytes; at most {MAX_REF_LEN} allowed",
            reference.len()
        )));
    }
    Ok(())
}

/// A writer bound to its namespace and lease.
pub struct NamespacedWriter {
    pub inner: Writer,
    ctx: Ctx,
}

impl NamespacedWriter {
    pub fn reference(&self) -> &str {
        &self.inner.meta().reference
    }
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }
}

impl Content {
    /// Ingests what `produce` writes as one blob, for blocking producers (diff). The blob
    /// is verified and recorded like any other commit.
    pub fn ingest_sync(
        &self,
        ctx: &Ctx,
        reference: &str,
        labels: Labels,
        produce: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<BlobRecord> {
        self.ingest_expected_sync(ctx, reference, None, labels, produce)
    }

    /// [`Content::ingest_sync`] for bytes that must hash to `expected`: anything else is
    /// discarded, never committed.
    pub fn ingest_expected_sync(
        &self,
        ctx: &Ctx,
        reference: &str,
        expected: Option<Digest>,
        labels: Labels,
        produce: impl FnOnce(&mut dyn std::io::Write) -> Result<()>,
    ) -> Result<BlobRecord> {
        validate_ref(reference)?;
        validate_labels(&labels)?;
        let mut w = self.local.writer(&ctx.ns, reference, 0, expected)?;
        if w.offset() > 0 {
            w.write_at(0, &[])?;
        }
        let produced = {
            let mut sink = IngestSink { w: &mut w };
            produce(&mut sink)
        };
        if let Err(e) = produced {
            drop(w);
            let _ = self.local.abort(&ctx.ns, reference);
            return Err(e);
        }
        let digest = w.digest_so_far();
        let (digest, size) = match w.commit(0, None) {
            Ok(done) => done,
            Err(e) if e.kind() == Kind::AlreadyExists => {
                let size = self.local.blob_size(&digest)?.unwrap_or_default();
                (digest, size)
            }
            Err(e) => {
                let _ = self.local.abort(&ctx.ns, reference);
                return Err(e);
            }
        };
        adopt(&self.store, ctx, &digest, size, labels)
    }

    pub async fn status(&self, ns: Namespace, reference: String) -> Result<IngestStatus> {
        validate_ref(&reference)?;
        let local = self.local.clone();
        blocking(move || local.status(&ns, &reference)).await
    }

    pub async fn list_statuses(&self, ns: Namespace, filter: Filter) -> Result<Vec<IngestStatus>> {
        let local = self.local.clone();
        let all = blocking(move || local.statuses(&ns)).await?;
        Ok(all.into_iter().filter(|s| filter.matches(s)).collect())
    }

    pub async fn abort(&self, ctx: Ctx, reference: String) -> Result<()> {
        validate_ref(&reference)?;
        let local = self.local.clone();
        let store = self.store.clone();
        blocking(move || {
            local.abort(&ctx.ns, &reference)?;
            release_ingest(&store, &ctx, reference);
            Ok(())
        })
        .await
    }

    /// Opens or resumes an ingest. AlreadyExists when `expected` is already visible in the
    /// namespace; a blob another namespace committed is adopted without a write.
    pub async fn writer(
        &self,
        ctx: Ctx,
        reference: String,
        total: i64,
        expected: String,
    ) -> Result<NamespacedWriter> {
        validate_ref(&reference)?;
        if total < 0 {
            return Err(Error::invalid(format!(
                "total {total} must not be negative"
            )));
        }
        let expected = if expected.is_empty() {
            None
        } else {
            Some(Digest::parse(&expected)?)
        };
        let local = self.local.clone();
        let store = self.store.clone();
        // Adopting another namespace's blob writes a reference: fenced, so a collection
        // never decides the bytes are unused and deletes them just after the adoption.
        let _op = self.fence.operation().await;
        blocking(move || {
            if let Some(lease) = &ctx.lease {
                if store.lease_get(&ctx.ns, lease)?.is_none() {
                    return Err(Error::not_found(format!("lease {lease:?} does not exist")));
                }
            }
            if let Some(d) = &expected {
                if store.blob_get(&ctx.ns, &d.to_string())?.is_some() {
                    // The caller is about to reference it: its lease holds it from now on,
                    // so a collection cannot take it first (containerd does the same).
                    hold_in_lease(&store, &ctx, "content", d.to_string())?;
                    return Err(Error::already_exists(format!("content {d}")));
                }
                if let Some(size) = local.blob_size(d)? {
                    adopt(&store, &ctx, d, size, Labels::new())?;
                    return Err(Error::already_exists(format!("content {d}")));
                }
            }
            let inner = local.writer(&ctx.ns, &reference, total, expected)?;
            hold_in_lease(&store, &ctx, "ingests", reference.clone())?;
            Ok(NamespacedWriter { inner, ctx })
        })
        .await
    }

    /// Appends bytes off the async runtime and hands the writer back. On error the writer
    /// is dropped: its lock is released and the bytes so far stay for a resume.
    pub async fn write(
        &self,
        mut w: NamespacedWriter,
        offset: i64,
        data: Vec<u8>,
    ) -> Result<NamespacedWriter> {
        blocking(move || {
            w.inner.write_at(offset, &data)?;
            Ok(w)
        })
        .await
    }

    /// Verifies and commits; the blob becomes visible in the writer's namespace. As
    /// containerd answers a client: AlreadyExists when the namespace has the blob already
    /// (its labels untouched), and the ingest is gone either way.
    pub async fn commit(
        &self,
        w: NamespacedWriter,
        size: i64,
        expected: String,
        labels: Labels,
    ) -> Result<BlobRecord> {
        let _op = self.fence.operation().await;
        let this = self.clone();
        blocking(move || this.finish(w, size, &expected, labels, Present::Refused)).await
    }

    /// [`Content::commit`] for blocking callers (pulls), which only need the blob present:
    /// one the namespace has already is recorded again (labels merged), not refused.
    /// `expected` may be empty.
    pub fn commit_sync(
        &self,
        w: NamespacedWriter,
        size: i64,
        expected: &str,
        labels: Labels,
    ) -> Result<BlobRecord> {
        self.finish(w, size, expected, labels, Present::Adopted)
    }

    fn finish(
        &self,
        w: NamespacedWriter,
        size: i64,
        expected: &str,
        labels: Labels,
        present: Present,
    ) -> Result<BlobRecord> {
        validate_labels(&labels)?;
        let expected = if expected.is_empty() {
            None
        } else {
            Some(Digest::parse(expected)?)
        };
        let ctx = w.ctx.clone();
        let reference = w.reference().to_string();
        if present == Present::Refused {
            if let Some(d) = &expected {
                if self.store.blob_get(&ctx.ns, &d.to_string())?.is_some() {
                    // The namespace has it: the ingest is dropped unverified, as containerd
                    // does for a commit naming a digest it already holds.
                    drop(w);
                    match self.local.abort(&ctx.ns, &reference) {
                        Err(e) if e.kind() != Kind::NotFound => return Err(e),
                        _ => {}
                    }
                    return self.refuse_present(&ctx, &reference, d);
                }
            }
        }
        // What the bytes hash to; when they are committed already (by another namespace,
        // or meanwhile), that is the blob this namespace gets.
        let written = w.inner.digest_so_far();
        let (digest, size) = match w.inner.commit(size, expected.as_ref()) {
            Ok(done) => done,
            Err(e) if e.kind() == Kind::AlreadyExists => {
                // Identical bytes are stored already (the ingest is gone).
                let d = written;
                let size = self
                    .local
                    .blob_size(&d)?
                    .ok_or_else(|| Error::not_found(format!("content {d}")))?;
                (d, size)
            }
            Err(e) => return Err(e),
        };
        if present == Present::Refused
            && self.store.blob_get(&ctx.ns, &digest.to_string())?.is_some()
        {
            return self.refuse_present(&ctx, &reference, &digest);
        }
        let rec = adopt(&self.store, &ctx, &digest, size, labels)?;
        release_ingest(&self.store, &ctx, reference);
        Ok(rec)
    }

    /// The end of a commit whose blob the namespace has: the writer's lease now holds the
    /// blob instead of the ingest, and the client hears AlreadyExists.
    fn refuse_present(&self, ctx: &Ctx, reference: &str, digest: &Digest) -> Result<BlobRecord> {
        hold_in_lease(&self.store, ctx, "content", digest.to_string())?;
        release_ingest(&self.store, ctx, reference.to_string());
        Err(Error::already_exists(format!("content {digest}")))
    }

    /// Removes the namespace's ingests nobody wrote to since `before` (nanoseconds) and no
    /// lease holds (`held` refs): abandoned uploads would otherwise stay for ever. One in use
    /// right now (its ref locked) is left alone. Returns how many went.
    pub fn expire_ingests_sync(
        &self,
        ns: &Namespace,
        before: crate::core::metadata::Timestamp,
        held: &std::collections::HashSet<String>,
    ) -> Result<usize> {
        let mut removed = 0;
        for st in self.local.statuses(ns)? {
            if st.updated_at >= before || held.contains(&st.meta.reference) {
                continue;
            }
            match self.local.abort(ns, &st.meta.reference) {
                Ok(()) => {
                    tracing::info!(namespace = %ns, reference = %st.meta.reference, "expired an abandoned ingest");
                    removed += 1;
                }
                Err(e) if e.kind() == Kind::Unavailable || e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Drops an ingest and its bytes, for blocking callers.
    pub fn abort_sync(&self, ns: &Namespace, reference: &str) -> Result<()> {
        self.local.abort(ns, reference)
    }
}

/// `std::io::Write` over an ingest writer.
struct IngestSink<'a> {
    w: &'a mut Writer,
}

impl std::io::Write for IngestSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = self.w.offset();
        self.w
            .write_at(at, buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Adds the resource `kind`/`id` to the lease of `ctx`, if it has one.
fn hold_in_lease(store: &MetadataStore, ctx: &Ctx, kind: &str, id: String) -> Result<()> {
    if let Some(lease) = &ctx.lease {
        store.lease_add_resource(
            &ctx.ns,
            lease,
            &LeaseResource {
                kind: kind.into(),
                id,
            },
        )?;
    }
    Ok(())
}

/// Takes a finished ingest out of the lease of `ctx`, if it has one; a lease gone meanwhile
/// held nothing to release.
fn release_ingest(store: &MetadataStore, ctx: &Ctx, reference: String) {
    if let Some(lease) = &ctx.lease {
        let _ = store.lease_delete_resource(
            &ctx.ns,
            lease,
            &LeaseResource {
                kind: "ingests".into(),
                id: reference,
            },
        );
    }
}

/// What a commit does when the writer's namespace has the blob already.
#[derive(Clone, Copy, PartialEq)]
enum Present {
    /// AlreadyExists, as containerd's API answers.
    Refused,
    /// Recorded again, labels merged: for callers that only need the blob there.
    Adopted,
}

/// Records a committed blob in the namespace (and lease) of `ctx`.
fn adopt(
    store: &MetadataStore,
    ctx: &Ctx,
    digest: &Digest,
    size: i64,
    labels: Labels,
) -> Result<BlobRecord> {
    let t = now();
    let rec = BlobRecord {
        digest: digest.to_string(),
        size,
        created_at: t,
        updated_at: t,
        labels,
    };
    store.blob_add(&ctx.ns, &rec)?;
    hold_in_lease(store, ctx, "content", digest.to_string())?;
    store
        .blob_get(&ctx.ns, &digest.to_string())?
        .ok_or_else(|| Error::not_found(format!("content {digest}")))
}
