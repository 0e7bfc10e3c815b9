//! berthd's configuration: defaults, then the TOML file, then flags.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: metadata, content, snapshots.
    pub root: PathBuf,
    /// Runtime state: sockets, bundles; cleared on reboot.
    pub state: PathBuf,
    /// The gRPC unix socket.
    pub address: PathBuf,
    /// error, warn, info, debug or trace (or a tracing filter directive).
    pub log_level: String,
    /// Registries: concurrent downloads, and per host mirrors, plain HTTP, TLS verification.
    pub registry: berth_services::registry::RegistryConfig,
    /// The Kubernetes CRI: sandbox image, CNI, streaming server, cgroup driver.
    pub cri: berth_services::cri::config::CriConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            address: PathBuf::from("/run/berth/berth.sock"),
            log_level: "info".to_string(),
            registry: Default::default(),
            cri: Default::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config {} is invalid: {e}", path.display()))
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_and_unknown_keys_fail() {
        let c = Config::default();
        let text = c.to_toml().unwrap();
        assert_eq!(toml::from_str::<Config>(&text).unwrap(), c);
        assert!(toml::from_str::<Config>("roots = \"/x\"").is_err());
        let partial: Config = toml::from_str("root = \"/x\"").unwrap();
        assert_eq!(partial.root, PathBuf::from("/x"));
        assert_eq!(partial.state, c.state);
        let hosts: Config = toml::from_str(
            "[registry]\nmax_concurrent_downloads = 5\n[registry.hosts.\"127.0.0.1:5000\"]\nplain_http = true\nmirrors = [\"127.0.0.1:5001\"]\n",
        )
        .unwrap();
        assert_eq!(hosts.registry.max_concurrent_downloads, 5);
        assert!(hosts.registry.hosts["127.0.0.1:5000"].plain_http);
        assert!(toml::from_str::<Config>("[registry.hosts.x]\nplaintext = true\n").is_err());
        let cri: Config = toml::from_str(
            "[cri]\nsandbox_image = \"127.0.0.1:5000/pause:3.9\"\ncni_conf_dir = \"/x\"\n",
        )
        .unwrap();
        assert_eq!(cri.cri.sandbox_image, "127.0.0.1:5000/pause:3.9");
        assert_eq!(cri.cri.cni_bin_dir, c.cri.cni_bin_dir);
        assert!(toml::from_str::<Config>("[cri]\nsandbox = \"x\"\n").is_err());
        for key in [
            "sandbox_image",
            "cni_bin_dir",
            "cni_conf_dir",
            "stream_server_address",
            "stream_server_port",
            "restrict_oom_score_adj",
            "cgroup_driver",
        ] {
            assert!(text.contains(key), "{key} missing from the defaults");
        }
    }
}
