//! berthd's `[cri]` settings, named as containerd's CRI plugin names them.

use serde::{Deserialize, Serialize};
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
}

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
        }
    }
}

impl CriConfig {
    pub fn systemd_cgroup(&self) -> bool {
        self.cgroup_driver == "systemd"
    }
}
