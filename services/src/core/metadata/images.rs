//! Image records: a name pointing at a root descriptor.

use super::{ensure_namespace, Labels, MetadataStore, Timestamp, IMAGES};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: Labels,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub name: String,
    pub labels: Labels,
    pub target: Descriptor,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl MetadataStore {
    pub fn image_get(&self, ns: &Namespace, name: &str) -> Result<ImageRecord> {
        self.ns_get(IMAGES, ns, name)?
            .ok_or_else(|| Error::not_found(format!("image {name:?}")))
    }

    pub fn image_list(&self, ns: &Namespace) -> Result<Vec<ImageRecord>> {
        self.ns_list(IMAGES, ns)
    }

    /// Stores a new image; returns whether the namespace was created by this write.
    pub fn image_create(&self, ns: &Namespace, image: &ImageRecord) -> Result<bool> {
        self.write(|txn| {
            let created_ns = ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(IMAGES)?;
            if table.get((ns.as_str(), image.name.as_str()))?.is_some() {
                return Err(Error::already_exists(format!("image {:?}", image.name)));
            }
            table.insert(
                (ns.as_str(), image.name.as_str()),
                serde_json::to_vec(image)?.as_slice(),
            )?;
            Ok(created_ns)
        })
    }

    pub fn image_update(
        &self,
        ns: &Namespace,
        name: &str,
        edit: impl FnOnce(&mut ImageRecord) -> Result<()>,
    ) -> Result<ImageRecord> {
        self.write(|txn| {
            let mut table = txn.open_table(IMAGES)?;
            let mut image: ImageRecord = match table.get((ns.as_str(), name))? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(Error::not_found(format!("image {name:?}"))),
            };
            edit(&mut image)?;
            table.insert((ns.as_str(), name), serde_json::to_vec(&image)?.as_slice())?;
            Ok(image)
        })
    }

    pub fn image_delete(&self, ns: &Namespace, name: &str) -> Result<()> {
        self.write(|txn| {
            let mut table = txn.open_table(IMAGES)?;
            if table.remove((ns.as_str(), name))?.is_none() {
                return Err(Error::not_found(format!("image {name:?}")));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ImageRecord {
        ImageRecord {
            name: name.to_string(),
            target: Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: format!("sha256:{}", "ab".repeat(32)),
                size: 405,
                annotations: Labels::new(),
            },
            ..Default::default()
        }
    }

    fn entries(store: &MetadataStore) -> u64 {
        store
            .read(|txn| Ok(redb::ReadableTableMetadata::len(&txn.open_table(IMAGES)?)?))
            .unwrap()
    }

    /// Tags made and removed (issue #30's soak) leave the table as they found it, and the
    /// file stops growing: each delete frees its record's pages for the next write.
    #[test]
    fn churned_tags_leave_no_records_and_no_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let store = MetadataStore::open(&path).unwrap();
        let ns = Namespace::parse("default").unwrap();
        for i in 0..50 {
            store
                .image_create(&ns, &record(&format!("kept:{i}")))
                .unwrap();
        }
        let baseline = entries(&store);
        let size = || std::fs::metadata(&path).unwrap().len();
        let churn = |from: u64, to: u64| {
            for i in from..to {
                let name = format!("test.local/t0:{i}");
                store.image_create(&ns, &record(&name)).unwrap();
                store.image_delete(&ns, &name).unwrap();
            }
        };
        churn(0, 100);
        assert_eq!(entries(&store), baseline);
        let warm = size();
        churn(100, 1000);
        assert_eq!(entries(&store), baseline);
        assert_eq!(
            size(),
            warm,
            "the file grew from {warm} bytes under churn alone"
        );
    }
}
