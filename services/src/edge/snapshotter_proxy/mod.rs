//! Snapshotters in another process, both ways, as containerd's proxy plugins: [`client`] is a
//! [`berth_snapshotters::Snapshotter`] that berthd names like a built-in one and that calls a
//! process serving `containerd.services.snapshots.v1.Snapshots` on a unix socket (configured
//! as `[proxy_plugins.NAME] type = "snapshot"`); [`server`] serves any snapshotter that way
//! (`berth-snapshotter`, so containerd can use berth's).
//!
//! Namespaces travel as containerd sends them: the keys the daemon hands a snapshotter already
//! carry the namespace (berthd's `<ns>/<key>`, containerd's `<ns>/<id>/<key>`), and calls about
//! one key also carry it in the `containerd-namespace` header; a walk or a cleanup is the whole
//! store's and carries none (containerd's collector walks without one too). So the store a
//! plugin keeps is one, keyed by the daemon's keys, and the header is for the plugin's logs.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long a call to a proxy plugin may take (a List: until its last message) unless its
/// `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// `[proxy_plugins.NAME]`: containerd's shape, plus berth's `timeout`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyPluginConfig {
    /// `snapshot` (or `io.containerd.snapshotter.v1`); the only type berth proxies.
    #[serde(rename = "type")]
    pub kind: String,
    /// The plugin's unix socket (`unix://` optional).
    pub address: String,
    /// Reported by Introspection beside `address`.
    pub exports: BTreeMap<String, String>,
    /// Reported by Introspection.
    pub capabilities: Vec<String>,
    /// Reported by Introspection; berth runs plugins of its own platform only.
    pub platform: String,
    /// The deadline of each call (`"30s"`, `"500ms"`); empty: [`DEFAULT_TIMEOUT`].
    pub timeout: String,
}

/// A proxy plugin's settings, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyPlugin {
    pub name: String,
    pub address: PathBuf,
    pub timeout: Duration,
    pub exports: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("proxy_plugins.{name}: type {kind:?} is not proxied by berth (only \"snapshot\")")]
    Type { name: String, kind: String },
    #[error("proxy_plugins.{name}: address must name the plugin's unix socket")]
    Address { name: String },
    #[error("proxy_plugins.{name}: timeout {value:?}: {reason}")]
    Timeout {
        name: String,
        value: String,
        reason: String,
    },
    #[error("proxy_plugins.{name}: the name is taken by a built-in snapshotter")]
    Builtin { name: String },
}

const SNAPSHOT_TYPES: &[&str] = &["snapshot", crate::core::plugins::SNAPSHOTTER];

impl ProxyPluginConfig {
    /// The plugin named `name`, or what is wrong with its settings.
    pub fn check(&self, name: &str) -> Result<ProxyPlugin, ConfigError> {
        if !SNAPSHOT_TYPES.contains(&self.kind.as_str()) {
            return Err(ConfigError::Type {
                name: name.into(),
                kind: self.kind.clone(),
            });
        }
        if [
            berth_snapshotters::overlay::NAME,
            berth_snapshotters::native::NAME,
        ]
        .contains(&name)
        {
            return Err(ConfigError::Builtin { name: name.into() });
        }
        let address = self
            .address
            .strip_prefix("unix://")
            .unwrap_or(&self.address);
        if address.is_empty() {
            return Err(ConfigError::Address { name: name.into() });
        }
        let timeout = match self.timeout.as_str() {
            "" => DEFAULT_TIMEOUT,
            t => humantime::parse_duration(t)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    (!d.is_zero())
                        .then_some(d)
                        .ok_or_else(|| "must be more than zero".to_string())
                })
                .map_err(|reason| ConfigError::Timeout {
                    name: name.into(),
                    value: t.into(),
                    reason,
                })?,
        };
        Ok(ProxyPlugin {
            name: name.into(),
            address: PathBuf::from(address),
            timeout,
            exports: self.exports.clone(),
            capabilities: self.capabilities.clone(),
        })
    }
}

/// Every configured plugin, checked (in name order).
pub fn check_all(
    plugins: &BTreeMap<String, ProxyPluginConfig>,
) -> Result<Vec<ProxyPlugin>, ConfigError> {
    plugins.iter().map(|(name, c)| c.check(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: &str, address: &str, timeout: &str) -> ProxyPluginConfig {
        ProxyPluginConfig {
            kind: kind.into(),
            address: address.into(),
            timeout: timeout.into(),
            ..Default::default()
        }
    }

    #[test]
    fn settings_are_checked() {
        let p = config("snapshot", "unix:///run/x.sock", "")
            .check("x")
            .unwrap();
        assert_eq!(p.address, PathBuf::from("/run/x.sock"));
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
        let p = config(crate::core::plugins::SNAPSHOTTER, "/s", "1500ms")
            .check("x")
            .unwrap();
        assert_eq!(p.timeout, Duration::from_millis(1500));
        let refused = [
            (config("content", "/s", ""), "x", "type"),
            (config("snapshot", "", ""), "x", "address"),
            (config("snapshot", "/s", "soon"), "x", "timeout"),
            (config("snapshot", "/s", "0s"), "x", "more than zero"),
            (config("snapshot", "/s", ""), "overlayfs", "built-in"),
        ];
        for (c, name, says) in refused {
            let e = c.check(name).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn containerds_toml_shape_reads() {
        let t: BTreeMap<String, ProxyPluginConfig> = toml::from_str(
            "[stargz]\ntype = \"snapshot\"\naddress = \"/run/stargz.sock\"\n[stargz.exports]\nroot = \"/var/lib/stargz\"\n",
        )
        .unwrap();
        let p = check_all(&t).unwrap();
        assert_eq!(p[0].name, "stargz");
        assert_eq!(p[0].exports["root"], "/var/lib/stargz");
    }
}
