//! Images stored before berth labelled what it wrote: berth's imports once stored documents
//! with no `containerd.io/gc.ref.content.*` labels, and the collector then read the documents
//! for their parts. It reads only labels now, so at the first collection after a start, a
//! document an image reaches that carries no content reference at all is labelled with its
//! parts, as its writer would label it today. A document with any content reference was
//! labelled by its writer (a client that dropped its layer references after unpacking keeps
//! the one to the config) and is left as it is.

use crate::core::content::Content;
use crate::core::context::Namespace;
use crate::core::diff::UNCOMPRESSED_LABEL;
use crate::core::error::Result;
use crate::core::metadata::content::BlobRecord;
use crate::core::metadata::Labels;
use crate::core::oci::MAX_DOCUMENT;
use berth_proto::vocab::labels::{gc_ref_config, gc_ref_layer, gc_ref_manifest, GC_REF_CONTENT};
use std::collections::{HashMap, HashSet};

/// Labels the unlabelled documents `targets` reach; returns how many it labelled.
pub(super) fn label_unlabelled(
    content: &Content,
    ns: &Namespace,
    blobs: &[BlobRecord],
    targets: Vec<String>,
) -> Result<usize> {
    let records: HashMap<&str, &BlobRecord> =
        blobs.iter().map(|b| (b.digest.as_str(), b)).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut stack = targets;
    let mut labelled = 0;
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Some(rec) = records.get(d.as_str()) else {
            continue;
        };
        let referring = rec.labels.keys().any(|k| k.starts_with(GC_REF_CONTENT));
        let layer = rec.labels.contains_key(UNCOMPRESSED_LABEL);
        if referring || layer || rec.size <= 0 || rec.size > MAX_DOCUMENT {
            continue;
        }
        let Ok(bytes) = content.read_document_sync(ns, &d, rec.size, MAX_DOCUMENT) else {
            continue;
        };
        let present = |digest: &str| records.contains_key(digest);
        let labels = parts(&bytes, &present);
        if labels.is_empty() {
            continue;
        }
        let manifest_ref = format!("{GC_REF_CONTENT}.m.");
        stack.extend(
            labels
                .iter()
                .filter(|(k, _)| k.starts_with(&manifest_ref))
                .map(|(_, v)| v.clone()),
        );
        content.label_sync(ns, &d, labels)?;
        labelled += 1;
    }
    Ok(labelled)
}

/// The references an index or manifest would carry: its manifests, or its config and
/// layers, those present in the namespace.
fn parts(bytes: &[u8], present: &dyn Fn(&str) -> bool) -> Labels {
    let mut labels = Labels::new();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return labels;
    };
    fn digest_of<'a>(d: &'a serde_json::Value, present: &dyn Fn(&str) -> bool) -> Option<&'a str> {
        d["digest"].as_str().filter(|d| present(d))
    }
    for (i, m) in v["manifests"].as_array().into_iter().flatten().enumerate() {
        if let Some(d) = digest_of(m, present) {
            labels.insert(gc_ref_manifest(i), d.to_string());
        }
    }
    if let Some(d) = digest_of(&v["config"], present) {
        labels.insert(gc_ref_config(), d.to_string());
    }
    for (i, l) in v["layers"].as_array().into_iter().flatten().enumerate() {
        if let Some(d) = digest_of(l, present) {
            labels.insert(gc_ref_layer(i), d.to_string());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_labelled_with_the_parts_present() {
        let present = |d: &str| d != "sha256:gone";
        let m = parts(
            br#"{"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l0"},{"digest":"sha256:gone"}]}"#,
            &present,
        );
        assert_eq!(
            m,
            Labels::from([
                (gc_ref_config(), "sha256:c".to_string()),
                (gc_ref_layer(0), "sha256:l0".to_string()),
            ])
        );
        let i = parts(br#"{"manifests":[{"digest":"sha256:m"}]}"#, &present);
        assert_eq!(
            i,
            Labels::from([(gc_ref_manifest(0), "sha256:m".to_string())])
        );
        assert!(parts(b"not json", &present).is_empty());
    }
}
