//! berthd's `[cri]` settings, named as containerd's CRI plugin names them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The containerd namespace every CRI object lives in.
pub const NAMESPACE: &str = "k8s.io";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    /// Serve `runtime.v1` on berthd's socket (and on `address` when set).
    pub enable: bool,
    /// A second socket that serves only the CRI (`--cri-address`); empty: none.
    pub address: PathBuf,
    /// The image every pod's sandbox (pause) container runs; pulled when missing.
    pub sandbox_image: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin_dir: PathBuf,
    /// Where the CNI network configuration is; the first `.conflist`/`.conf`/`.json` by name
    /// is the pod network.
    pub cni_conf_dir: PathBuf,
    /// The streaming server's address (exec, attach, port-forward URLs point here).
    pub stream_server_address: String,
    /// Its port; "0" picks a free one.
    pub stream_server_port: String,
    /// Clamp every container's OOM score adjustment to be no lower than berthd's own (for
    /// berthd running without CAP_SYS_RESOURCE).
    pub restrict_oom_score_adj: bool,
    /// "cgroupfs" (paths under the pod's cgroup parent) or "systemd" (slices, runc's
    /// systemd driver).
    pub cgroup_driver: String,
    /// The snapshotter images are unpacked into and container rootfs prepared with.
    pub snapshotter: String,
    /// The shim containers run under.
    pub runtime: String,
    /// The low-level runtime berth's shim uses for pods and their containers (runc
    /// options' `binary_name`): `native` (libcontainer in the shim), `runc`, or another
    /// runc-compatible binary. Empty (the default): berthd's `runtime.engine`, so pods run
    /// where plain containers run. Whatever is named, the shim hands runc the specs the
    /// native runtime cannot isolate as runc does (a user namespace, seccomp notification).
    pub runtime_binary: String,
    /// Runtime handlers beyond the default, by the name a RuntimeClass's `handler` gives:
    /// `[cri.runtimes.NAME]`. "runc" and "berth" are the default's other names unless
    /// configured here.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// CreateContainer from a checkpoint (an archive's path, or an image holding one)
    /// restores it, with runc and CRIU. Off by default, as in containerd 2.3: restoring
    /// replays process state from whoever wrote the checkpoint.
    pub enable_experimental_restore_via_create: bool,
}

/// One runtime handler: what a pod whose RunPodSandbox names it runs under. Every key
/// left empty is the `[cri]` setting of the same meaning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandler {
    /// The shim (as `[cri] runtime`).
    pub runtime_type: String,
    /// The low-level runtime (as `[cri] runtime_binary`): `native`, `runc`, or the name or
    /// path of another runc-compatible binary.
    pub runtime: String,
    /// The snapshotter the pod's images are unpacked into and its containers' root
    /// filesystems prepared with: a built-in one or a `[proxy_plugins]` one.
    pub snapshotter: String,
}

/// A runtime handler with every setting filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    pub name: String,
    pub runtime_type: String,
    /// Empty: berthd's `runtime.engine`.
    pub runtime_binary: String,
    pub snapshotter: String,
}

/// The names the default handler also answers to, when not configured themselves.
const DEFAULT_ALIASES: [&str; 2] = ["runc", "berth"];

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            enable: true,
            address: PathBuf::new(),
            sandbox_image: "registry.k8s.io/pause:3.6".into(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            stream_server_address: "127.0.0.1".into(),
            stream_server_port: "0".into(),
            restrict_oom_score_adj: false,
            cgroup_driver: "cgroupfs".into(),
            snapshotter: berth_snapshotters::overlay::NAME.into(),
            runtime: "io.containerd.berth.v2".into(),
            runtime_binary: String::new(),
            runtimes: BTreeMap::new(),
            enable_experimental_restore_via_create: false,
        }
    }
}

impl CriConfig {
    pub fn systemd_cgroup(&self) -> bool {
        self.cgroup_driver == "systemd"
    }

    /// The handler `name` names (empty: the default), settings filled in from `[cri]`;
    /// None when no such handler is configured.
    pub fn handler(&self, name: &str) -> Option<Handler> {
        match self.runtimes.get(name) {
            Some(h) => Some(self.filled(name, h.clone())),
            None if name.is_empty() || DEFAULT_ALIASES.contains(&name) => {
                Some(self.filled(name, RuntimeHandler::default()))
            }
            None => None,
        }
    }

    /// The default handler (`[cri.runtimes.""]` if configured, else `[cri]`'s settings).
    pub fn default_handler(&self) -> Handler {
        let own = self.runtimes.get("").cloned().unwrap_or_default();
        self.filled("", own)
    }

    fn filled(&self, name: &str, h: RuntimeHandler) -> Handler {
        let or = |own: String, shared: &str| {
            if own.is_empty() {
                shared.to_string()
            } else {
                own
            }
        };
        Handler {
            name: name.to_string(),
            runtime_type: or(h.runtime_type, &self.runtime),
            runtime_binary: or(h.runtime, &self.runtime_binary),
            snapshotter: or(h.snapshotter, &self.snapshotter),
        }
    }

    /// Every handler's name, the default's ("") first, then in name order.
    pub fn handler_names(&self) -> Vec<String> {
        let mut names: Vec<String> = DEFAULT_ALIASES
            .iter()
            .map(|n| n.to_string())
            .chain(self.runtimes.keys().cloned())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        names.insert(0, String::new());
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_fill_in_from_cri_and_the_default_keeps_its_names() {
        let mut cfg = CriConfig {
            runtime_binary: "runc".into(),
            ..Default::default()
        };
        cfg.runtimes.insert(
            "native-fs".into(),
            RuntimeHandler {
                runtime: "native".into(),
                snapshotter: "native".into(),
                ..Default::default()
            },
        );
        let default = cfg.handler("").unwrap();
        assert_eq!(default, cfg.default_handler());
        assert_eq!(default.snapshotter, "overlayfs");
        assert_eq!(default.runtime_binary, "runc");
        assert_eq!(default.runtime_type, "io.containerd.berth.v2");
        assert_eq!(cfg.handler("runc").unwrap().snapshotter, "overlayfs");
        assert_eq!(cfg.handler("berth").unwrap().runtime_binary, "runc");
        let own = cfg.handler("native-fs").unwrap();
        assert_eq!(
            (own.snapshotter.as_str(), own.runtime_binary.as_str()),
            ("native", "native")
        );
        assert_eq!(own.runtime_type, default.runtime_type);
        assert!(cfg.handler("kata").is_none());
        assert_eq!(cfg.handler_names(), ["", "berth", "native-fs", "runc"]);
        // A configured "runc" replaces the alias.
        cfg.runtimes.insert(
            "runc".into(),
            RuntimeHandler {
                snapshotter: "native".into(),
                ..Default::default()
            },
        );
        assert_eq!(cfg.handler("runc").unwrap().snapshotter, "native");
        assert_eq!(cfg.handler_names(), ["", "berth", "native-fs", "runc"]);
    }
}
