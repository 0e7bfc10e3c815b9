//! Container records: what a container is (spec, runtime, snapshot), not what runs.

use super::{ensure_namespace, Labels, MetadataStore, Timestamp, CONTAINERS};
use crate::core::context::Namespace;
use crate::core::error::{Error, Result};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A protobuf `Any`, kept opaque: type URL and encoded bytes (hex in the JSON record).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AnyValue {
    pub type_url: String,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Specs are most of a container record and every List decodes them all: borrowed from
    /// the record's bytes where possible, decoded through a table (the `hex` crate's
    /// iterator-based decode was half of a 1000-container List's time in `perf`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        decode(s.as_bytes()).ok_or_else(|| serde::de::Error::custom("invalid hex in a record"))
    }

    const BAD: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut t = [BAD; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };

    pub fn decode(s: &[u8]) -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() / 2);
        for pair in s.chunks_exact(2) {
            let (hi, lo) = (TABLE[pair[0] as usize], TABLE[pair[1] as usize]);
            if hi == BAD || lo == BAD {
                return None;
            }
            out.push(hi << 4 | lo);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn decodes_as_the_hex_crate_does() {
            let bytes: Vec<u8> = (0..=255u8).collect();
            let text = hex::encode(&bytes);
            assert_eq!(super::decode(text.as_bytes()).unwrap(), bytes);
            assert_eq!(
                super::decode(text.to_uppercase().as_bytes()).unwrap(),
                bytes
            );
            for bad in ["0", "zz", "0g", "\u{e9}"] {
                assert!(super::decode(bad.as_bytes()).is_none(), "{bad}");
            }
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Runtime {
    pub name: String,
    pub options: Option<AnyValue>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    pub labels: Labels,
    pub image: String,
    pub runtime: Runtime,
    pub spec: Option<AnyValue>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub extensions: BTreeMap<String, AnyValue>,
}

impl MetadataStore {
    pub fn container_get(&self, ns: &Namespace, id: &str) -> Result<ContainerRecord> {
        self.ns_get(CONTAINERS, ns, id)?
            .ok_or_else(|| Error::not_found(format!("container {id:?}")))
    }

    pub fn container_list(&self, ns: &Namespace) -> Result<Vec<ContainerRecord>> {
        self.ns_list(CONTAINERS, ns)
    }

    pub fn container_create(&self, ns: &Namespace, c: &ContainerRecord) -> Result<()> {
        self.write(|txn| {
            ensure_namespace(txn, ns)?;
            let mut table = txn.open_table(CONTAINERS)?;
            if table.get((ns.as_str(), c.id.as_str()))?.is_some() {
                return Err(Error::already_exists(format!("container {:?}", c.id)));
            }
            table.insert(
                (ns.as_str(), c.id.as_str()),
                serde_json::to_vec(c)?.as_slice(),
            )?;
            Ok(())
        })
    }

    pub fn container_update(
        &self,
        ns: &Namespace,
        id: &str,
        edit: impl FnOnce(&mut ContainerRecord) -> Result<()>,
    ) -> Result<ContainerRecord> {
        self.write(|txn| {
            let mut table = txn.open_table(CONTAINERS)?;
            let mut c: ContainerRecord = match table.get((ns.as_str(), id))? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => return Err(Error::not_found(format!("container {id:?}"))),
            };
            edit(&mut c)?;
            table.insert((ns.as_str(), id), serde_json::to_vec(&c)?.as_slice())?;
            Ok(c)
        })
    }

    pub fn container_delete(&self, ns: &Namespace, id: &str) -> Result<ContainerRecord> {
        self.write(|txn| {
            let mut table = txn.open_table(CONTAINERS)?;
            let removed = table.remove((ns.as_str(), id))?;
            match removed {
                Some(v) => Ok(serde_json::from_slice(v.value())?),
                None => Err(Error::not_found(format!("container {id:?}"))),
            }
        })
    }
}
