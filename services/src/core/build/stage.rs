//! The image a build is making: its config, layers and history as the steps change them.

use super::dockerfile::Instruction;
use crate::core::images::Descriptor;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The image being built.
pub(super) struct Stage {
    pub config: Value,
    pub layers: Vec<Value>,
    pub diff_ids: Vec<String>,
    /// Top snapshot (chain ID); empty for scratch.
    pub chain: String,
    pub history: Vec<Value>,
    pub args: BTreeMap<String, String>,
    /// ARGs declared before FROM: defaults for the same ARG redeclared after it.
    pub globals: BTreeMap<String, String>,
}

impl Stage {
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut vars = self.args.clone();
        for e in self.config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let Some((k, v)) = e.as_str().and_then(|s| s.split_once('=')) {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        vars
    }

    pub fn history(&mut self, ins: &Instruction, empty: bool) {
        let mut h = json!({"created": now_rfc3339(), "created_by": ins.text()});
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }

    pub fn push_layer(&mut self, desc: &Descriptor, diff_id: &str, chain: String) {
        self.layers
            .push(json!({"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}));
        self.diff_ids.push(diff_id.to_string());
        self.chain = chain;
    }
}

pub(super) fn now_rfc3339() -> String {
    berth_proto::vocab::time::rfc3339(std::time::SystemTime::now())
}

pub(super) fn sha256_hex(data: &[u8]) -> String {
    crate::core::content::digest::Digest::of(data)
        .hex()
        .to_string()
}

impl Stage {
    /// Refuses a config larger than a registry or any client would take (4 MiB, the
    /// document cap every pull applies).
    pub fn check_size(&self) -> crate::core::error::Result<()> {
        let size = serde_json::to_vec(&self.config)
            .map(|v| v.len())
            .unwrap_or(0)
            + self
                .history
                .iter()
                .map(|h| h.to_string().len())
                .sum::<usize>();
        if size as i64 > crate::core::oci::MAX_DOCUMENT {
            return Err(crate::core::error::Error::invalid(format!(
                "the image config would be {size} bytes; at most {} are allowed",
                crate::core::oci::MAX_DOCUMENT
            )));
        }
        Ok(())
    }

    /// The empty stage a build starts with.
    pub fn new() -> Self {
        Stage {
            config: json!({}),
            layers: vec![],
            diff_ids: vec![],
            chain: String::new(),
            history: vec![],
            args: BTreeMap::new(),
            globals: BTreeMap::new(),
        }
    }
}
