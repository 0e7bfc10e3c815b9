//! What creating a sandbox and creating a container share: the name reserved and freed
//! again when creation fails, and the record written before anything else.

use super::image::ImageInfo;
use super::{ext_json, ext_proto, Cri, CONFIG_EXT, KIND_LABEL, META_EXT};
use crate::core::error::{Error, Result};
use crate::core::metadata::containers::{ContainerRecord, Runtime};
use crate::core::metadata::Labels;
use serde::Serialize;

/// What a new record carries beyond its id: the kind and labels, the image, the runtime
/// handler (its shim and snapshotter), and what the CRI keeps in its extensions (`meta` and
/// the CRI config).
pub(super) struct NewRecord<'a, M, C> {
    pub kind: &'static str,
    pub labels: Labels,
    pub image: &'a ImageInfo,
    pub handler: &'a super::config::Handler,
    pub meta: &'a M,
    pub config: &'a C,
}

impl Cri {
    /// Makes a sandbox or container (`what`) under `name`, reserved for it: `make` runs
    /// with the new id; when it fails, `undo` removes whatever it left and the name is free
    /// again. With `serialize`, the id's lock is held throughout, so no other operation on
    /// the object sees it half made or half undone.
    pub(super) async fn create_reserved(
        &self,
        what: &str,
        name: &str,
        serialize: bool,
        make: impl AsyncFnOnce(&str) -> Result<()>,
        undo: impl AsyncFnOnce(&str, &Error),
    ) -> Result<String> {
        let id = self.names.reserve(what, name)?;
        let lock = serialize.then(|| self.lock_for(&id));
        let _held = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let made = make(&id).await;
        if let Err(e) = &made {
            undo(&id, e).await;
            self.names.release(name);
        }
        made.map(|()| id)
    }

    /// The record of a new sandbox or container, with its handler's runtime and snapshotter.
    pub(super) fn new_record<M, C>(
        &self,
        id: &str,
        r: NewRecord<'_, M, C>,
    ) -> Result<ContainerRecord>
    where
        M: Serialize,
        C: prost::Message + prost::Name,
    {
        let mut labels = r.labels;
        labels.insert(KIND_LABEL.into(), r.kind.into());
        let mut record = ContainerRecord {
            id: id.to_string(),
            labels,
            image: r.image.names.first().cloned().unwrap_or_default(),
            runtime: Runtime {
                name: r.handler.runtime_type.clone(),
                options: None,
            },
            snapshotter: r.handler.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        record.extensions.insert(META_EXT.into(), ext_json(r.meta)?);
        record
            .extensions
            .insert(CONFIG_EXT.into(), ext_proto(r.config));
        Ok(record)
    }
}
