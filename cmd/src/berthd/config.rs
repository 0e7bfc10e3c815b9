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
    /// Drop-in files merged over this one, in order (a `*` in a file name matches many,
    /// taken in name order): `imports = ["/etc/berth/conf.d/*.toml"]`.
    pub imports: Vec<String>,
    /// error, warn, info, debug or trace (or a tracing filter directive). SIGHUP reloads it.
    pub log_level: String,
    /// `text` (for people) or `json` (one object per line, for log collectors).
    pub log_format: String,
    /// Registries: concurrent downloads, and per host mirrors, plain HTTP, TLS verification.
    pub registry: berth_services::core::registry::RegistryConfig,
    /// The Kubernetes CRI: sandbox image, CNI, streaming server, cgroup driver.
    pub cri: berth_services::edge::cri::config::CriConfig,
    /// Container networks: where berth keeps its CNI conflists, where the plugins are.
    pub network: berth_services::core::network::NetworkConfig,
    /// Prometheus metrics over HTTP.
    pub metrics: MetricsConfig,
    /// The low-level runtime berth's shim creates containers with.
    pub runtime: RuntimeConfig,
    /// NRI plugins beside the CRI: the socket they dial, timeouts, pre-started plugins.
    pub nri: berth_services::edge::nri::NriConfig,
    /// Bounds on what layers inflate to; off by default. SIGHUP reloads them.
    pub limits: LimitsConfig,
    /// `berth build`: how big and how old its cache of RUN steps and images may grow.
    /// SIGHUP reloads it.
    pub build: BuildConfig,
    /// Snapshotters served by other processes, as containerd configures them:
    /// `[proxy_plugins.NAME] type = "snapshot" address = "/run/NAME.sock"`.
    pub proxy_plugins: std::collections::BTreeMap<
        String,
        berth_services::edge::snapshotter_proxy::ProxyPluginConfig,
    >,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// `native`: the shim creates containers itself (youki's libcontainer, no runtime binary
    /// run per step); `runc`, or the name or path of another runc-compatible binary (crun,
    /// youki): the shim runs it. The environment variable BERTH_SHIM_RUNTIME, when berthd
    /// is started with it, overrides this.
    pub engine: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            engine: "native".into(),
        }
    }
}

pub use berth_services::core::runtime::shim::RUNTIME_ENV;

impl RuntimeConfig {
    /// The engine in effect: the environment's, else the configured one.
    pub fn effective(&self) -> String {
        std::env::var(RUNTIME_ENV)
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| self.engine.clone())
    }

    /// Why `engine` cannot run containers, if it names a binary found neither as a path nor
    /// on PATH (berthd still serves everything else; task creation reports the same).
    pub fn missing(engine: &str) -> Option<String> {
        if engine == "native" {
            return None;
        }
        let found = berth_services::core::runtime::shim::locate(engine, None).is_some();
        (!found).then(|| {
            format!(
                "runtime.engine {engine:?}: no such binary, containers cannot start; install it (apt-get install runc) or use engine = \"native\""
            )
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Bytes one layer may inflate to wherever it is applied (pull, import, unpack, build,
    /// Diff); 0: no limit, as in containerd.
    pub max_layer_uncompressed_bytes: u64,
    /// Bytes the layers one pull unpacks may inflate to together; 0: no limit.
    pub max_pull_uncompressed_bytes: u64,
}

impl LimitsConfig {
    /// Puts these bounds in force for the layers applied from now on.
    pub fn enforce(&self) {
        berth_snapshotters::layer::limits::set(berth_snapshotters::layer::limits::Limits {
            max_layer: self.max_layer_uncompressed_bytes,
            max_pull: self.max_pull_uncompressed_bytes,
        });
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// Bytes the build cache (`<root>/io.berth.build.v1`, as `du` counts it) may take; past
    /// it the least recently used records go, at start and after every build. Records are
    /// ~4 KiB each and name layers images hold, so the default (16 MiB) keeps ~4000.
    pub cache_max_bytes: u64,
    /// Records unused for longer go too ("7days", "48h"); empty: no age limit.
    pub cache_max_age: String,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            cache_max_bytes: berth_services::core::build::DEFAULT_MAX_BYTES,
            cache_max_age: String::new(),
        }
    }
}

impl BuildConfig {
    /// The policy these settings describe; an age that does not parse is an error.
    pub fn policy(&self) -> anyhow::Result<berth_services::core::build::CachePolicy> {
        let max_age = match self.cache_max_age.trim() {
            "" => None,
            age => Some(humantime::parse_duration(age).map_err(|e| {
                anyhow::anyhow!(
                    "[build] cache_max_age {age:?}: {e} (write e.g. \"7days\" or \"48h\")"
                )
            })?),
        };
        Ok(berth_services::core::build::CachePolicy {
            max_bytes: self.cache_max_bytes,
            max_age,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// host:port to serve `/metrics` on; empty: no endpoint.
    pub address: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/berth"),
            state: PathBuf::from("/run/berth"),
            address: PathBuf::from("/run/berth/berth.sock"),
            imports: vec![],
            log_level: "info".to_string(),
            log_format: "text".to_string(),
            registry: Default::default(),
            cri: Default::default(),
            network: Default::default(),
            metrics: Default::default(),
            runtime: Default::default(),
            nri: Default::default(),
            limits: Default::default(),
            build: Default::default(),
            proxy_plugins: Default::default(),
        }
    }
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {} is invalid: {e}", path.display()))
}

/// `over`'s keys replace `base`'s; tables merge key by key.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The files an import names: itself, or with a `*` in its file name, the matches in name
/// order (none is fine, as for a conf.d directory still empty).
fn expand(pattern: &str, relative_to: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let p = Path::new(pattern);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        relative_to.join(p)
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return Ok(vec![p]);
    }
    let (prefix, suffix) = name.split_once('*').unwrap_or((&name, ""));
    if suffix.contains('*') {
        anyhow::bail!("import {pattern:?}: one * per file name");
    }
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                let n = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.len() >= prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => anyhow::bail!("import {pattern:?}: cannot read {}: {e}", dir.display()),
    };
    out.sort();
    Ok(out)
}

impl Config {
    /// The file, then each of its imports merged over it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut table = read_table(path)?;
        let imports: Vec<String> = match table.get("imports") {
            Some(v) => v.clone().try_into().map_err(|e| {
                anyhow::anyhow!(
                    "config {}: imports must be a list of paths: {e}",
                    path.display()
                )
            })?,
            None => vec![],
        };
        let dir = path.parent().unwrap_or(Path::new("/"));
        for pattern in &imports {
            for f in expand(pattern, dir)? {
                let mut over = read_table(&f)?;
                if over.remove("imports").is_some() {
                    anyhow::bail!(
                        "config {}: an imported file cannot import more",
                        f.display()
                    );
                }
                merge(&mut table, over);
            }
        }
        toml::Value::Table(table).try_into().map_err(|e| {
            anyhow::anyhow!(
                "config {} (with its imports) is invalid: {e}",
                path.display()
            )
        })
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_merge_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("config.toml"),
            "imports = [\"conf.d/*.toml\", \"/nonexistent/*.toml\"]\nlog_level = \"warn\"\nroot = \"/r\"\n[registry]\nmax_concurrent_downloads = 2\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/10-a.toml"),
            "log_level = \"debug\"\n[metrics]\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("conf.d/20-b.toml"),
            "[metrics]\naddress = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/ignored.conf"), "nonsense").unwrap();
        let c = Config::load(&d.join("config.toml")).unwrap();
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.metrics.address, "127.0.0.1:2");
        assert_eq!(c.root, PathBuf::from("/r"));
        assert_eq!(c.registry.max_concurrent_downloads, 2);
        std::fs::write(d.join("conf.d/30-bad.toml"), "roots = 1\n").unwrap();
        let e = Config::load(&d.join("config.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("roots"), "{e}");
        std::fs::write(d.join("conf.d/30-bad.toml"), "imports = []\n").unwrap();
        assert!(Config::load(&d.join("config.toml")).is_err());
    }

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
        let proxy: Config = toml::from_str(
            "[proxy_plugins.berth]\ntype = \"snapshot\"\naddress = \"/run/b.sock\"\n",
        )
        .unwrap();
        assert_eq!(proxy.proxy_plugins["berth"].address, "/run/b.sock");
        assert_eq!(
            toml::from_str::<Config>(&proxy.to_toml().unwrap()).unwrap(),
            proxy
        );
        for key in [
            "sandbox_image",
            "cni_bin_dir",
            "cni_conf_dir",
            "stream_server_address",
            "stream_server_port",
            "restrict_oom_score_adj",
            "cgroup_driver",
            "plugin_request_timeout",
        ] {
            assert!(text.contains(key), "{key} missing from the defaults");
        }
    }

    #[test]
    fn cri_runtime_handlers_parse_and_round_trip() {
        let c: Config = toml::from_str(
            "[cri]\nsnapshotter = \"overlayfs\"\n[cri.runtimes.native-fs]\nruntime = \"native\"\nsnapshotter = \"native\"\n[cri.runtimes.lazy]\nsnapshotter = \"stargz\"\nruntime_type = \"io.containerd.runc.v2\"\n",
        )
        .unwrap();
        let h = c.cri.handler("native-fs").unwrap();
        assert_eq!(
            (h.runtime_binary.as_str(), h.snapshotter.as_str()),
            ("native", "native")
        );
        let lazy = c.cri.handler("lazy").unwrap();
        assert_eq!(lazy.runtime_type, "io.containerd.runc.v2");
        assert_eq!(lazy.runtime_binary, "");
        assert_eq!(c.cri.handler("").unwrap().snapshotter, "overlayfs");
        assert_eq!(toml::from_str::<Config>(&c.to_toml().unwrap()).unwrap(), c);
        // Existing configs (no table) keep the default's names.
        assert!(Config::default().cri.handler("runc").is_some());
        let e = toml::from_str::<Config>("[cri.runtimes.x]\nsnapshoter = \"native\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("snapshoter"), "{e}");
    }

    #[test]
    fn the_build_section_is_the_cache_policy() {
        let d = Config::default().build.policy().unwrap();
        assert_eq!((d.max_bytes, d.max_age), (16 << 20, None));
        let c: Config =
            toml::from_str("[build]\ncache_max_bytes = 2097152\ncache_max_age = \"48h\"\n")
                .unwrap();
        let p = c.build.policy().unwrap();
        assert_eq!(p.max_bytes, 2 << 20);
        assert_eq!(p.max_age, Some(std::time::Duration::from_secs(48 * 3600)));
        let bad: Config = toml::from_str("[build]\ncache_max_age = \"soon\"\n").unwrap();
        let e = bad.build.policy().unwrap_err().to_string();
        assert!(e.contains("cache_max_age"), "{e}");
    }
}
