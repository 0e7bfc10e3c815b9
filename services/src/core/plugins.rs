//! The plugin set: what berthd runs, keyed by type and id, each started after the
//! plugins whose types it requires. Introspection reports it, including init errors.

use crate::core::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};

pub mod runtime_info;

pub const METADATA: &str = "io.containerd.metadata.v1";
pub const CONTENT: &str = "io.containerd.content.v1";
pub const EVENT: &str = "io.containerd.event.v1";
pub const LEASE: &str = "io.containerd.lease.v1";
pub const SERVICE: &str = "io.containerd.service.v1";
pub const GRPC: &str = "io.containerd.grpc.v1";
pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
pub const DIFF: &str = "io.containerd.differ.v1";
pub const RUNTIME: &str = "io.containerd.runtime.v2";
pub const MOUNT_MANAGER: &str = "io.containerd.mount-manager.v1";

#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub kind: String,
    pub id: String,
    pub requires: Vec<String>,
    pub exports: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    /// Set when the plugin failed to initialize; the daemon runs without it.
    pub init_err: Option<String>,
}

impl Plugin {
    pub fn new(kind: &str, id: &str, requires: &[&str]) -> Self {
        Plugin {
            kind: kind.to_string(),
            id: id.to_string(),
            requires: requires.iter().map(|s| s.to_string()).collect(),
            exports: BTreeMap::new(),
            capabilities: vec![],
            init_err: None,
        }
    }

    pub fn export(mut self, key: &str, value: impl Into<String>) -> Self {
        self.exports.insert(key.to_string(), value.into());
        self
    }

    pub fn uri(&self) -> String {
        format!("{}.{}", self.kind, self.id)
    }

    /// Whether asking this plugin for more (PluginInfo with options) runs a shim's `-info`:
    /// the task runtime's, as in containerd.
    pub fn describes_runtimes(&self) -> bool {
        self.kind == RUNTIME && self.id == "task"
    }
}

#[derive(Debug, Default, Clone)]
pub struct PluginSet {
    plugins: Vec<Plugin>,
}

impl PluginSet {
    pub fn register(&mut self, plugin: Plugin) -> Result<()> {
        if self
            .plugins
            .iter()
            .any(|p| p.kind == plugin.kind && p.id == plugin.id)
        {
            return Err(Error::already_exists(format!("plugin {}", plugin.uri())));
        }
        self.plugins.push(plugin);
        Ok(())
    }

    /// Plugins in start order: each after every plugin of a type it requires ("*" = all
    /// other types). A cycle or a missing type is an error naming the plugin.
    pub fn ordered(&self) -> Result<Vec<Plugin>> {
        let types: HashSet<&str> = self.plugins.iter().map(|p| p.kind.as_str()).collect();
        for p in &self.plugins {
            for r in &p.requires {
                if r != "*" && !types.contains(r.as_str()) {
                    return Err(Error::precondition(format!(
                        "plugin {} requires {r}, which is not registered",
                        p.uri()
                    )));
                }
            }
        }
        let mut done: Vec<Plugin> = vec![];
        let mut pending: Vec<&Plugin> = self.plugins.iter().collect();
        while !pending.is_empty() {
            let blocked_by = |i: usize, kind: &str| {
                pending
                    .iter()
                    .enumerate()
                    .any(|(j, q)| j != i && q.kind == kind)
            };
            let ready = pending.iter().enumerate().position(|(i, p)| {
                p.requires.iter().all(|r| {
                    if r == "*" {
                        // "*" waits for everything except other "*" plugins.
                        pending
                            .iter()
                            .enumerate()
                            .all(|(j, q)| j == i || q.requires.iter().any(|x| x == "*"))
                    } else {
                        !blocked_by(i, r)
                    }
                })
            });
            match ready {
                Some(i) => done.push(pending.remove(i).clone()),
                None => {
                    return Err(Error::precondition(format!(
                        "plugin dependency cycle among {}",
                        pending
                            .iter()
                            .map(|p| p.uri())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        Ok(done)
    }

    pub fn all(&self) -> &[Plugin] {
        &self.plugins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_requirements() {
        let mut r = PluginSet::default();
        r.register(Plugin::new(GRPC, "content", &[SERVICE]))
            .unwrap();
        r.register(Plugin::new(SERVICE, "content-service", &[METADATA]))
            .unwrap();
        r.register(Plugin::new(METADATA, "redb", &[CONTENT]))
            .unwrap();
        r.register(Plugin::new(CONTENT, "content", &[])).unwrap();
        let ids: Vec<_> = r.ordered().unwrap().into_iter().map(|p| p.kind).collect();
        assert_eq!(ids, [CONTENT, METADATA, SERVICE, GRPC]);
        assert!(r.register(Plugin::new(CONTENT, "content", &[])).is_err());
    }

    #[test]
    fn reports_missing_and_cycles() {
        let mut r = PluginSet::default();
        r.register(Plugin::new("a", "1", &["b"])).unwrap();
        assert!(r.ordered().unwrap_err().to_string().contains("requires b"));
        r.register(Plugin::new("b", "1", &["a"])).unwrap();
        assert!(r.ordered().unwrap_err().to_string().contains("cycle"));
    }
}
