//! Namespaces service core: records, labels, and the emptiness rule for deletion.

use crate::core::context::Namespace;
use crate::core::error::{blocking, Result};
use crate::core::events::{Event, Exchange};
use crate::core::filters::{key_label_field, Fields, Filter};
use crate::core::metadata::namespaces::NamespaceRecord;
use crate::core::metadata::{apply_label_path, validate_labels, Labels, MetadataStore};

#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
}

impl Fields for NamespaceInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        key_label_field("name", &self.name, &self.labels, path)
    }
}

#[derive(Clone)]
pub struct Namespaces {
    store: MetadataStore,
    events: Exchange,
}

impl Namespaces {
    pub fn new(store: MetadataStore, events: Exchange) -> Self {
        Namespaces { store, events }
    }

    /// An unknown namespace answers with empty labels, as containerd does.
    pub async fn get(&self, ns: Namespace) -> Result<NamespaceInfo> {
        let store = self.store.clone();
        let rec = blocking(move || store.namespace_get(&ns).map(|r| (ns, r))).await?;
        Ok(NamespaceInfo {
            name: rec.0.to_string(),
            labels: rec.1.unwrap_or_default().labels,
        })
    }

    pub async fn list(&self, filter: Filter) -> Result<Vec<NamespaceInfo>> {
        let store = self.store.clone();
        let all = blocking(move || store.namespace_list()).await?;
        Ok(all
            .into_iter()
            .map(|(name, r)| NamespaceInfo {
                name,
                labels: r.labels,
            })
            .filter(|n| filter.matches(n))
            .collect())
    }

    pub async fn create(&self, ns: Namespace, labels: Labels) -> Result<NamespaceInfo> {
        validate_labels(&labels)?;
        let store = self.store.clone();
        let record = NamespaceRecord { labels };
        let (ns, record) = blocking(move || {
            store.namespace_create(&ns, &record)?;
            Ok((ns, record))
        })
        .await?;
        self.events.publish(
            &ns,
            Event::NamespaceCreate {
                name: ns.to_string(),
                labels: record.labels.clone(),
            },
        );
        Ok(NamespaceInfo {
            name: ns.to_string(),
            labels: record.labels,
        })
    }

    /// Updates labels; an empty mask replaces all labels.
    pub async fn update(
        &self,
        ns: Namespace,
        labels: Labels,
        paths: Vec<String>,
    ) -> Result<NamespaceInfo> {
        validate_labels(&labels)?;
        for p in &paths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(crate::core::error::Error::invalid(format!(
                    "cannot update {p:?} on namespace {ns}: only labels can change"
                )));
            }
        }
        let store = self.store.clone();
        let ns2 = ns.clone();
        let record = blocking(move || {
            store.namespace_update(&ns2, |rec| {
                if paths.is_empty() {
                    rec.labels = labels.clone();
                }
                for p in &paths {
                    apply_label_path(&mut rec.labels, &labels, p)?;
                }
                Ok(())
            })
        })
        .await?;
        self.events.publish(
            &ns,
            Event::NamespaceUpdate {
                name: ns.to_string(),
                labels: record.labels.clone(),
            },
        );
        Ok(NamespaceInfo {
            name: ns.to_string(),
            labels: record.labels,
        })
    }

    pub async fn delete(&self, ns: Namespace) -> Result<()> {
        let store = self.store.clone();
        let ns2 = ns.clone();
        blocking(move || store.namespace_delete(&ns2)).await?;
        self.events.publish(
            &ns,
            Event::NamespaceDelete {
                name: ns.to_string(),
            },
        );
        Ok(())
    }
}
