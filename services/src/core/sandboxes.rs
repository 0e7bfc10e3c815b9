//! containerd 2.x's sandbox store: namespaced sandbox records (runtime, spec, labels,
//! extensions, sandboxer) in the metadata database's own `sandboxes` table, keyed
//! (namespace, sandbox id), each a JSON document.

use crate::core::context::{validate_identifier, Namespace};
use crate::core::error::{Error, Result};
use crate::core::filters::{key_label_field, Fields, Filter};
use crate::core::metadata::containers::AnyValue;
use crate::core::metadata::{
    apply_label_path, ensure_namespace, now, validate_labels, Labels, MetadataStore, NsTable,
    Timestamp,
};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// containerd's name for the CRI's own sandbox controller.
pub const PODSANDBOX: &str = "podsandbox";

/// Keyed (namespace, sandbox id).
pub(crate) const SANDBOXES: NsTable = TableDefinition::new("sandboxes");

/// The fields an Update without a field list replaces.
const DEFAULT_FIELDS: [&str; 4] = ["labels", "extensions", "spec", "runtime"];

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub runtime_name: String,
    pub runtime_options: Option<AnyValue>,
    pub spec: Option<AnyValue>,
    pub labels: Labels,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub extensions: BTreeMap<String, AnyValue>,
    pub sandboxer: String,
}

impl Fields for SandboxRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        key_label_field("id", &self.id, &self.labels, path)
    }
}

/// What a sandbox controller reports of one sandbox.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SandboxStatus {
    pub id: String,
    pub pid: u32,
    /// containerd's words: `SANDBOX_READY` or `SANDBOX_NOTREADY`.
    pub state: &'static str,
    pub created_at: Timestamp,
    /// Details for a verbose status.
    pub info: BTreeMap<String, String>,
}

/// The sandbox records of every namespace.
#[derive(Clone)]
pub struct SandboxStore {
    store: MetadataStore,
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("sandbox {id:?}"))
}

impl SandboxStore {
    pub fn new(store: MetadataStore) -> Self {
        Self { store }
    }

    /// Stores a new record; its times are set here.
    pub fn create(&self, ns: &Namespace, mut rec: SandboxRecord) -> Result<SandboxRecord> {
        validate_identifier("sandbox id", &rec.id)?;
        validate_labels(&rec.labels)?;
        rec.created_at = now();
        rec.updated_at = rec.created_at;
        self.store.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(SANDBOXES)?;
            if table.get((ns.as_str(), rec.id.as_str()))?.is_some() {
                return Err(Error::already_exists(format!(
                    "sandbox {:?} already exists",
                    rec.id
                )));
            }
            table.insert(
                (ns.as_str(), rec.id.as_str()),
                serde_json::to_vec(&rec)?.as_slice(),
            )?;
            Ok(rec)
        })
    }

    /// Replaces the named fields (`labels`, `labels.<k>`, `extensions`, `extensions.<k>`,
    /// `spec`, `runtime`) of a stored record; with none, all four, and the runtime's name
    /// must then stay as it is.
    pub fn update(
        &self,
        ns: &Namespace,
        new: SandboxRecord,
        fields: &[String],
    ) -> Result<SandboxRecord> {
        if new.id.is_empty() {
            return Err(Error::invalid("sandbox id must not be empty"));
        }
        self.store.write(|txn| {
            let mut table = txn.open_table(SANDBOXES)?;
            let mut cur: SandboxRecord = match table.get((ns.as_str(), new.id.as_str()))? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(missing(&new.id)),
            };
            let defaults: Vec<String>;
            let fields = if fields.is_empty() {
                if cur.runtime_name != new.runtime_name {
                    return Err(Error::invalid(format!(
                        "sandbox {:?}: the runtime's name cannot change",
                        new.id
                    )));
                }
                defaults = DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect();
                &defaults[..]
            } else {
                fields
            };
            for path in fields {
                if apply_label_path(&mut cur.labels, &new.labels, path)? {
                    continue;
                }
                if let Some(key) = path.strip_prefix("extensions.") {
                    match new.extensions.get(key) {
                        Some(v) => cur.extensions.insert(key.to_string(), v.clone()),
                        None => cur.extensions.remove(key),
                    };
                    continue;
                }
                match path.as_str() {
                    "extensions" => cur.extensions = new.extensions.clone(),
                    "spec" => cur.spec = new.spec.clone(),
                    "runtime" => {
                        cur.runtime_name = new.runtime_name.clone();
                        cur.runtime_options = new.runtime_options.clone();
                    }
                    other => {
                        return Err(Error::invalid(format!(
                            "cannot update {other:?} of sandbox {:?}",
                            new.id
                        )))
                    }
                }
            }
            cur.updated_at = now();
            table.insert(
                (ns.as_str(), cur.id.as_str()),
                serde_json::to_vec(&cur)?.as_slice(),
            )?;
            Ok(cur)
        })
    }

    pub fn get(&self, ns: &Namespace, id: &str) -> Result<SandboxRecord> {
        if id.is_empty() {
            return Err(Error::invalid("sandbox id must not be empty"));
        }
        self.store
            .ns_get(SANDBOXES, ns, id)?
            .ok_or_else(|| missing(id))
    }

    /// The namespace's records that `filter` selects, in id order.
    pub fn list(&self, ns: &Namespace, filter: &Filter) -> Result<Vec<SandboxRecord>> {
        let all: Vec<SandboxRecord> = self.store.ns_list(SANDBOXES, ns)?;
        Ok(all.into_iter().filter(|r| filter.matches(r)).collect())
    }

    pub fn delete(&self, ns: &Namespace, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(Error::invalid("sandbox id must not be empty"));
        }
        self.store.write(|txn| {
            let mut table = txn.open_table(SANDBOXES)?;
            let removed = table.remove((ns.as_str(), id))?.is_some();
            if removed {
                Ok(())
            } else {
                Err(missing(id))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::error::Kind;

    fn store() -> (tempfile::TempDir, SandboxStore, Namespace) {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        (
            dir,
            SandboxStore::new(meta),
            Namespace::parse("ns").unwrap(),
        )
    }

    fn rec(id: &str, labels: &[(&str, &str)]) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            runtime_name: "io.containerd.runc.v2".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sandboxer: "shim".into(),
            ..Default::default()
        }
    }

    #[test]
    fn crud_and_errors() {
        let (_d, s, ns) = store();
        assert_eq!(s.list(&ns, &Filter::default()).unwrap(), vec![]);
        let made = s.create(&ns, rec("a", &[("x", "1")])).unwrap();
        assert!(made.created_at > 0 && made.updated_at == made.created_at);
        let again = s.create(&ns, rec("a", &[])).unwrap_err();
        assert_eq!(again.kind(), Kind::AlreadyExists);
        assert_eq!(
            s.create(&ns, rec("", &[])).unwrap_err().kind(),
            Kind::InvalidArgument
        );
        s.create(&ns, rec("b", &[("x", "2")])).unwrap();
        let f = Filter::parse("labels.x==2").unwrap();
        let ids: Vec<_> = s.list(&ns, &f).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, ["b"]);
        let other = Namespace::parse("other").unwrap();
        assert_eq!(s.get(&other, "a").unwrap_err().kind(), Kind::NotFound);
        let mut upd = rec("a", &[("y", "3")]);
        upd.runtime_name = "other".into();
        assert_eq!(
            s.update(&ns, upd.clone(), &[]).unwrap_err().kind(),
            Kind::InvalidArgument
        );
        let got = s.update(&ns, upd.clone(), &["labels.y".into()]).unwrap();
        assert_eq!(got.labels.get("y").map(String::as_str), Some("3"));
        assert_eq!(got.labels.get("x").map(String::as_str), Some("1"));
        assert_eq!(got.runtime_name, "io.containerd.runc.v2");
        let bad = s.update(&ns, upd, &["sandboxer".into()]).unwrap_err();
        assert_eq!(bad.kind(), Kind::InvalidArgument);
        s.delete(&ns, "a").unwrap();
        assert_eq!(s.delete(&ns, "a").unwrap_err().kind(), Kind::NotFound);
        assert_eq!(s.get(&ns, "a").unwrap_err().kind(), Kind::NotFound);
    }

    /// Hostile records are refused, stored ones left as they were.
    #[test]
    fn oversized_ids_and_labels_are_refused() {
        let (_d, s, ns) = store();
        let invalid =
            |r: Result<SandboxRecord>| assert_eq!(r.unwrap_err().kind(), Kind::InvalidArgument);
        let long_id = "a".repeat(crate::core::context::MAX_LEN + 1);
        invalid(s.create(&ns, rec(&long_id, &[])));
        invalid(s.create(&ns, rec("../escape", &[])));
        let big = "v".repeat(crate::core::metadata::MAX_LABEL_SIZE);
        invalid(s.create(&ns, rec("a", &[("k", &big)])));
        invalid(s.create(&ns, rec("a", &[("", "v")])));
        assert_eq!(s.list(&ns, &Filter::default()).unwrap(), vec![]);

        s.create(&ns, rec("a", &[("x", "1")])).unwrap();
        invalid(s.update(&ns, rec("a", &[("k", &big)]), &["labels.k".into()]));
        invalid(s.update(&ns, rec("a", &[("k", &big)]), &[]));
        assert_eq!(
            s.get(&ns, "a").unwrap().labels,
            rec("a", &[("x", "1")]).labels
        );
        let missing = s.update(&ns, rec("b", &[]), &["labels".into()]);
        assert_eq!(missing.unwrap_err().kind(), Kind::NotFound);
    }
}
