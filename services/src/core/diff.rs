//! Diff service core: apply a layer from the content store onto mounts, and write the change
//! between two mount sets into the content store as a new layer.

use crate::core::content::Content;
use crate::core::context::Ctx;
use crate::core::context::Namespace;
use crate::core::error::{blocking, Error, Result};
use crate::core::metadata::images::Descriptor;
use crate::core::metadata::Labels;
use berth_snapshotters::hash::Sha256;
use berth_snapshotters::{layer, Mount};
use std::io::{Read, Write};

pub use berth_proto::vocab::labels::UNCOMPRESSED as UNCOMPRESSED_LABEL;
pub use berth_proto::vocab::media::{
    DOCKER_LAYER_GZIP as MEDIA_DOCKER_GZIP, OCI_LAYER as MEDIA_TAR,
    OCI_LAYER_GZIP as MEDIA_TAR_GZIP, OCI_LAYER_ZSTD as MEDIA_TAR_ZSTD,
};

/// Hashes and counts what passes through, either way.
pub struct Hashing<T> {
    pub inner: T,
    pub hasher: Sha256,
    pub count: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    pub fn digest(&self) -> String {
        self.hasher.digest()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Clone)]
pub struct Differ {
    content: Content,
}

/// Applies the blob `desc` (read from `content` in `ns`) onto `mounts`, verifying the blob's
/// digest and size as it streams. Returns the uncompressed (diffID) descriptor.
pub fn apply_blob(
    content: &Content,
    ns: &Namespace,
    desc: &Descriptor,
    mounts: &[Mount],
) -> Result<Descriptor> {
    apply_blob_with(content, ns, desc, |r| layer::apply_to_mounts(r, mounts))
}

/// Counts what is read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Streams the blob `desc` through `apply`. The bytes were verified when they entered the
/// content store, and the diffID the caller checks covers their content, so the compressed
/// digest is computed again only when something fails: then a blob corrupted at rest is
/// reported as exactly that.
pub fn apply_blob_with(
    content: &Content,
    ns: &Namespace,
    desc: &Descriptor,
    apply: impl FnOnce(&mut dyn Read) -> berth_snapshotters::Result<layer::Applied>,
) -> Result<Descriptor> {
    let (file, rec) = content.open_blob_sync(ns, &desc.digest)?;
    let mut reader = Counting {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        count: 0,
    };
    let applied = apply(&mut reader);
    let drained = std::io::copy(&mut reader, &mut std::io::sink());
    if applied.is_err() || drained.is_err() || reader.count as i64 != rec.size {
        content.verify_blob_sync(ns, &desc.digest)?;
    }
    let applied = applied?;
    Ok(Descriptor {
        media_type: MEDIA_TAR.into(),
        digest: applied.diff_id,
        size: applied.size as i64,
        annotations: Labels::new(),
    })
}

impl Differ {
    pub fn new(content: Content) -> Self {
        Differ { content }
    }

    pub async fn apply(
        &self,
        ns: Namespace,
        desc: Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<Descriptor> {
        if mounts.is_empty() {
            return Err(Error::invalid(
                "apply needs the mounts of the snapshot to apply onto",
            ));
        }
        let content = self.content.clone();
        blocking(move || apply_blob(&content, &ns, &desc, &mounts)).await
    }

    pub async fn diff(
        &self,
        ctx: Ctx,
        lower: Vec<Mount>,
        upper: Vec<Mount>,
        media_type: String,
        reference: String,
        mut labels: Labels,
    ) -> Result<Descriptor> {
        if upper.is_empty() {
            return Err(Error::invalid(
                "diff needs the mounts of the changed snapshot (right)",
            ));
        }
        let media_type = if media_type.is_empty() {
            MEDIA_TAR_GZIP.to_string()
        } else {
            media_type
        };
        let compression = match media_type.as_str() {
            MEDIA_TAR => 0,
            MEDIA_TAR_GZIP | MEDIA_DOCKER_GZIP => 1,
            MEDIA_TAR_ZSTD => 2,
            other => {
                return Err(Error::invalid(format!(
                    "unsupported layer media type {other:?}; use {MEDIA_TAR_GZIP}, {MEDIA_TAR_ZSTD} or {MEDIA_TAR}"
                )))
            }
        };
        let reference = if reference.is_empty() {
            format!("diff-{}", uuid::Uuid::new_v4().simple())
        } else {
            reference
        };
        let content = self.content.clone();
        blocking(move || {
            let mut diff_id = String::new();
            // The label needs the diffID, known only once the layer is written; write it
            // first, then label the committed blob.
            let rec = content.ingest_sync(&ctx, &reference, Labels::new(), |sink| {
                let hashed = match compression {
                    0 => {
                        let h = layer::diff_mounts(&lower, &upper, Hashing::new(sink))?;
                        h.digest()
                    }
                    1 => {
                        let gz = flate2::write::GzEncoder::new(sink, flate2::Compression::fast());
                        let h = layer::diff_mounts(&lower, &upper, Hashing::new(gz))?;
                        let d = h.digest();
                        h.inner
                            .finish()
                            .map_err(|e| Error::io("compress layer", e))?;
                        d
                    }
                    _ => {
                        let z = zstd::stream::write::Encoder::new(sink, 3)
                            .map_err(|e| Error::io("zstd", e))?;
                        let h = layer::diff_mounts(&lower, &upper, Hashing::new(z))?;
                        let d = h.digest();
                        h.inner
                            .finish()
                            .map_err(|e| Error::io("compress layer", e))?;
                        d
                    }
                };
                diff_id = hashed;
                Ok(())
            })?;
            labels.insert(UNCOMPRESSED_LABEL.into(), diff_id);
            let rec = content.label_sync(&ctx.ns, &rec.digest, labels)?;
            Ok(Descriptor {
                media_type,
                digest: rec.digest,
                size: rec.size,
                annotations: Labels::new(),
            })
        })
        .await
    }
}
