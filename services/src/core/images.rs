//! Images service core: named references to a root descriptor.

use crate::core::content::digest::Digest;
use crate::core::context::Namespace;
use crate::core::error::{blocking, Error, Result};
use crate::core::events::{Event, Exchange};
use crate::core::filters::{label_field, Fields, Filter};
use crate::core::gc::fence::GcHandle;
use crate::core::metadata::images::ImageRecord;
use crate::core::metadata::{apply_label_path, now, validate_labels, MetadataStore};

pub use crate::core::metadata::images::Descriptor;

impl Fields for ImageRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "name" => Some(self.name.clone()),
            [f, ..] if f == "labels" => label_field(&self.labels, path),
            [t, f] if t == "target" => match f.as_str() {
                "digest" => Some(self.target.digest.clone()),
                "mediatype" | "media_type" => Some(self.target.media_type.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}

fn validate(image: &ImageRecord) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::invalid("image name must not be empty"));
    }
    if image.name.len() > 4096 || image.name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "image name {:?} is invalid",
            image.name.chars().take(64).collect::<String>()
        )));
    }
    if image.target.media_type.is_empty() {
        return Err(Error::invalid(format!(
            "image {}: target media type must be set",
            image.name
        )));
    }
    if image.target.size < 0 {
        return Err(Error::invalid(format!(
            "image {}: target size must not be negative",
            image.name
        )));
    }
    Digest::parse(&image.target.digest)
        .map_err(|e| Error::invalid(format!("image {}: target: {e}", image.name)))?;
    validate_labels(&image.labels)
}

#[derive(Clone)]
pub struct Images {
    store: MetadataStore,
    events: Exchange,
    /// Writes are new roots for content a collection may be deciding about: they wait for
    /// it; deletions ask for one.
    gc: GcHandle,
}

impl Images {
    pub fn new(store: MetadataStore, events: Exchange, gc: GcHandle) -> Self {
        Images { store, events, gc }
    }

    pub async fn get(&self, ns: Namespace, name: String) -> Result<ImageRecord> {
        let store = self.store.clone();
        blocking(move || store.image_get(&ns, &name)).await
    }

    pub async fn list(&self, ns: Namespace, filter: Filter) -> Result<Vec<ImageRecord>> {
        let store = self.store.clone();
        let all = blocking(move || store.image_list(&ns)).await?;
        Ok(all.into_iter().filter(|i| filter.matches(i)).collect())
    }

    pub async fn create(&self, ns: Namespace, mut image: ImageRecord) -> Result<ImageRecord> {
        validate(&image)?;
        let _op = self.gc.operation().await;
        let t = now();
        image.created_at = t;
        image.updated_at = t;
        let store = self.store.clone();
        let (ns, image) = blocking(move || {
            store.image_create(&ns, &image)?;
            Ok((ns, image))
        })
        .await?;
        self.events.publish(
            &ns,
            Event::ImageCreate {
                name: image.name.clone(),
                labels: image.labels.clone(),
            },
        );
        Ok(image)
    }

    /// Updates the named fields (`labels`, `labels.<k>`, `target`, `annotations`); an empty
    /// mask replaces labels and target.
    pub async fn update(
        &self,
        ns: Namespace,
        update: ImageRecord,
        paths: Vec<String>,
    ) -> Result<ImageRecord> {
        if update.name.is_empty() {
            return Err(Error::invalid("image name must not be empty"));
        }
        validate_labels(&update.labels)?;
        let _op = self.gc.operation().await;
        let store = self.store.clone();
        let ns2 = ns.clone();
        let image = blocking(move || {
            store.image_update(&ns2, &update.name.clone(), |img| {
                if paths.is_empty() {
                    img.labels = update.labels.clone();
                    img.target = update.target.clone();
                }
                for p in &paths {
                    if apply_label_path(&mut img.labels, &update.labels, p)? {
                        continue;
                    }
                    match p.as_str() {
                        "target" => img.target = update.target.clone(),
                        "annotations" => img.target.annotations = update.target.annotations.clone(),
                        "name" => {}
                        other => {
                            return Err(Error::invalid(format!(
                                "cannot update field {other:?} of image {}",
                                img.name
                            )))
                        }
                    }
                }
                img.updated_at = now();
                validate(img)
            })
        })
        .await?;
        self.events.publish(
            &ns,
            Event::ImageUpdate {
                name: image.name.clone(),
                labels: image.labels.clone(),
            },
        );
        Ok(image)
    }

    /// Creates the image, or points an existing one of that name at the new target (and
    /// labels): what a pull, an import or a build does with its result.
    pub async fn put(&self, ns: Namespace, image: ImageRecord) -> Result<ImageRecord> {
        match self.create(ns.clone(), image.clone()).await {
            Err(e) if e.kind() == crate::core::error::Kind::AlreadyExists => {
                self.update(ns, image, vec!["target".into(), "labels".into()])
                    .await
            }
            other => other,
        }
    }

    /// Deletes an image; what only it held is collected soon.
    pub async fn delete(&self, ns: Namespace, name: String) -> Result<()> {
        self.delete_then_collect(ns, name, false).await
    }

    /// Deletes an image; what only it held is collected before this returns when `now`
    /// (so never call it inside an operation: the collection would wait for it), soon
    /// otherwise.
    pub async fn delete_then_collect(&self, ns: Namespace, name: String, now: bool) -> Result<()> {
        {
            let _op = self.gc.operation().await;
            let store = self.store.clone();
            let ns2 = ns.clone();
            let name2 = name.clone();
            blocking(move || store.image_delete(&ns2, &name2)).await?;
            self.events.publish(&ns, Event::ImageDelete { name });
        }
        self.gc.after_delete(now).await
    }
}
