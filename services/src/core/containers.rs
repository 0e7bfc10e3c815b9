//! Containers service core: validated container records and their events.

use crate::core::context::{validate_identifier, Namespace};
use crate::core::error::{blocking, Error, Result};
use crate::core::events::{Event, Exchange};
use crate::core::filters::{label_field, Fields, Filter};
use crate::core::gc::fence::GcHandle;
use crate::core::metadata::containers::ContainerRecord;
use crate::core::metadata::{apply_label_path, now, validate_labels, MetadataStore};

impl Fields for ContainerRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "id" => Some(self.id.clone()),
            [f] if f == "image" => Some(self.image.clone()),
            [f] if f == "snapshotter" => Some(self.snapshotter.clone()),
            [r, n] if r == "runtime" && n == "name" => Some(self.runtime.name.clone()),
            [f, ..] if f == "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

fn validate(c: &ContainerRecord) -> Result<()> {
    validate_identifier("container id", &c.id)?;
    if c.runtime.name.is_empty() {
        return Err(Error::invalid(format!(
            "container {}: runtime name must be set",
            c.id
        )));
    }
    if c.spec.is_none() {
        return Err(Error::invalid(format!(
            "container {}: spec must be set",
            c.id
        )));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::invalid(format!(
            "container {}: a snapshot key needs a snapshotter",
            c.id
        )));
    }
    if c.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid(format!(
            "container {}: extension keys must not be empty",
            c.id
        )));
    }
    validate_labels(&c.labels)
}

#[derive(Clone)]
pub struct Containers {
    store: MetadataStore,
    events: Exchange,
    /// A container is a root for its snapshot: writes wait for a collection in progress;
    /// deletions ask for one.
    gc: GcHandle,
}

impl Containers {
    pub fn new(store: MetadataStore, events: Exchange, gc: GcHandle) -> Self {
        Containers { store, events, gc }
    }

    pub async fn get(&self, ns: Namespace, id: String) -> Result<ContainerRecord> {
        let store = self.store.clone();
        blocking(move || store.container_get(&ns, &id)).await
    }

    pub async fn list(&self, ns: Namespace, filter: Filter) -> Result<Vec<ContainerRecord>> {
        let store = self.store.clone();
        let all = blocking(move || store.container_list(&ns)).await?;
        Ok(all.into_iter().filter(|c| filter.matches(c)).collect())
    }

    pub async fn create(&self, ns: Namespace, mut c: ContainerRecord) -> Result<ContainerRecord> {
        validate(&c)?;
        let _op = self.gc.operation().await;
        let t = now();
        c.created_at = t;
        c.updated_at = t;
        let store = self.store.clone();
        let (ns, c) = blocking(move || {
            store.container_create(&ns, &c)?;
            Ok((ns, c))
        })
        .await?;
        self.events.publish(
            &ns,
            Event::ContainerCreate {
                id: c.id.clone(),
                image: c.image.clone(),
                runtime: c.runtime.name.clone(),
                runtime_options: c.runtime.options.clone(),
            },
        );
        Ok(c)
    }

    /// Field paths: labels, labels.<k>, spec, extensions, extensions.<k>, image, snapshotkey.
    /// Runtime and snapshotter never change. An empty mask replaces every mutable field.
    pub async fn update(
        &self,
        ns: Namespace,
        update: ContainerRecord,
        paths: Vec<String>,
    ) -> Result<ContainerRecord> {
        if update.id.is_empty() {
            return Err(Error::invalid("container id must be set"));
        }
        validate_labels(&update.labels)?;
        let _op = self.gc.operation().await;
        let store = self.store.clone();
        let ns2 = ns.clone();
        let c = blocking(move || {
            store.container_update(&ns2, &update.id.clone(), |c| {
                if paths.is_empty() {
                    if !update.runtime.name.is_empty() && update.runtime.name != c.runtime.name {
                        return Err(Error::invalid(format!(
                            "container {}: runtime cannot change",
                            c.id
                        )));
                    }
                    if !update.snapshotter.is_empty() && update.snapshotter != c.snapshotter {
                        return Err(Error::invalid(format!(
                            "container {}: snapshotter cannot change",
                            c.id
                        )));
                    }
                    c.labels = update.labels.clone();
                    c.spec = update.spec.clone();
                    c.extensions = update.extensions.clone();
                    c.image = update.image.clone();
                    c.snapshot_key = update.snapshot_key.clone();
                }
                for p in &paths {
                    if apply_label_path(&mut c.labels, &update.labels, p)? {
                        continue;
                    }
                    if let Some(k) = p.strip_prefix("extensions.") {
                        match update.extensions.get(k) {
                            Some(v) => {
                                c.extensions.insert(k.to_string(), v.clone());
                            }
                            None => {
                                c.extensions.remove(k);
                            }
                        }
                        continue;
                    }
                    match p.as_str() {
                        "spec" => c.spec = update.spec.clone(),
                        "extensions" => c.extensions = update.extensions.clone(),
                        "image" => c.image = update.image.clone(),
                        "snapshotkey" => c.snapshot_key = update.snapshot_key.clone(),
                        other => {
                            return Err(Error::invalid(format!(
                                "cannot update field {other:?} of container {}",
                                c.id
                            )))
                        }
                    }
                }
                c.updated_at = now();
                validate(c)
            })
        })
        .await?;
        self.events.publish(
            &ns,
            Event::ContainerUpdate {
                id: c.id.clone(),
                image: c.image.clone(),
                labels: c.labels.clone(),
                snapshot_key: c.snapshot_key.clone(),
            },
        );
        Ok(c)
    }

    /// Deletes a container; what only it held (its snapshot) is collected soon.
    pub async fn delete(&self, ns: Namespace, id: String) -> Result<ContainerRecord> {
        let c = {
            let _op = self.gc.operation().await;
            let store = self.store.clone();
            let (ns2, id2) = (ns.clone(), id.clone());
            let c = blocking(move || store.container_delete(&ns2, &id2)).await?;
            self.events.publish(&ns, Event::ContainerDelete { id });
            c
        };
        self.gc.after_delete(false).await?;
        Ok(c)
    }
}
