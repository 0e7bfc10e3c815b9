//! The flags of `berth run`, and what they decide before anything is made: the network mode
//! and the seccomp filter.

use anyhow::bail;
use berth_services::seccomp;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Run {
    /// Remove the container, its task and its snapshot when it exits
    #[arg(long)]
    pub(super) rm: bool,
    /// Start it and return; do not wait or attach
    #[arg(long, short = 'd')]
    pub(super) detach: bool,
    /// With -d: append the container's stdout and stderr to this file (`berth logs` and
    /// `berth tasks attach` read it) [default: /var/log/berth/NS/ID.log for the default
    /// daemon, beside its socket for another, or under $BERTH_LOG_DIR]
    #[arg(long, requires = "detach")]
    pub(super) log: Option<PathBuf>,
    /// berthd's socket, to place the default log (set by main, not a flag)
    #[arg(skip)]
    pub address: PathBuf,
    /// Give the container a terminal wired to this one (an interactive shell)
    #[arg(long, short = 't')]
    pub(super) tty: bool,
    /// Environment variables (KEY=VALUE)
    #[arg(long = "env", short = 'e')]
    pub(super) env: Vec<String>,
    /// Working directory inside the container
    #[arg(long)]
    pub(super) cwd: Option<String>,
    /// User: name, uid, or uid:gid (names are looked up in the image's /etc/passwd)
    #[arg(long, short = 'u')]
    pub(super) user: Option<String>,
    /// Mounts: type=bind,src=/host,dst=/ctr[,options=rbind:ro] or
    /// type=volume,src=NAME,dst=/ctr[,options=ro] (a named volume, created on first use;
    /// without src, an anonymous one)
    #[arg(long = "mount")]
    pub(super) mounts: Vec<String>,
    /// Volumes: /host/dir:/ctr[:ro] (bind) or NAME:/ctr[:ro] (named volume)
    #[arg(long = "volume", short = 'v')]
    pub(super) volumes: Vec<String>,
    /// Memory limit (e.g. 256m)
    #[arg(long)]
    pub(super) memory: Option<String>,
    /// CPU limit (e.g. 1.5)
    #[arg(long)]
    pub(super) cpus: Option<f64>,
    /// Largest number of processes
    #[arg(long)]
    pub(super) pids_limit: Option<i64>,
    /// Network: bridge (the default network, made on first use), host, none (loopback
    /// only), or a network made with `berth network create`; several comma-separated
    #[arg(long = "network", alias = "net", default_value = "bridge")]
    pub(super) network: String,
    /// Same as --network host
    #[arg(long, hide = true)]
    pub(super) net_host: bool,
    /// Publish a port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], ranges as 8000-8009:80-89
    #[arg(long = "publish", short = 'p')]
    pub(super) publish: Vec<String>,
    /// Nameservers for the container's resolv.conf (default: the host's)
    #[arg(long)]
    pub(super) dns: Vec<String>,
    /// Runtime (shim): berth's own by default; io.containerd.runc.v2 for containerd's
    #[arg(long, default_value = "io.containerd.berth.v2")]
    pub(super) runtime: String,
    /// Low-level runtime under the shim (runc options' binary_name): `native` (berth's
    /// shim only), runc, or a runc-compatible binary's name or path; default: berthd's
    #[arg(long)]
    pub(super) runc_binary: Option<String>,
    /// Security options: seccomp=unconfined (no seccomp filter) or seccomp=PROFILE.json (an
    /// OCI seccomp profile, or one in Docker's format) [default: berth's RuntimeDefault
    /// seccomp profile]
    #[arg(long = "security-opt")]
    pub(super) security_opt: Vec<String>,
    /// The filter --security-opt chose (read from it before anything is made)
    #[arg(skip)]
    pub(super) seccomp: seccomp::Profile,
    /// Snapshotter for the container's rootfs
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub(super) snapshotter: String,
    pub(super) image: String,
    pub(super) id: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(super) args: Vec<String>,
}

impl Run {
    pub(super) fn host_network(&self) -> bool {
        self.net_host || self.network == "host"
    }

    /// The seccomp filter --security-opt asks for: RuntimeDefault unless told otherwise.
    pub(super) fn seccomp_option(&self) -> anyhow::Result<seccomp::Profile> {
        let mut profile = seccomp::Profile::RuntimeDefault;
        for opt in &self.security_opt {
            // Docker also takes the older `seccomp:VALUE`.
            profile = match opt.split_once(['=', ':']) {
                Some(("seccomp", "unconfined")) => seccomp::Profile::Unconfined,
                Some(("seccomp", path)) if !path.is_empty() => {
                    seccomp::Profile::Custom(seccomp::load(Path::new(path))?)
                }
                _ => bail!(
                    "--security-opt {opt:?}: berth takes seccomp=unconfined or seccomp=PROFILE.json"
                ),
            };
        }
        Ok(profile)
    }
}
