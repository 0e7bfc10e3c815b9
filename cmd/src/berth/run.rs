//! berth run: an image's rootfs as a new snapshot, a container with the default spec and the
//! image's config, a task with stdio wired to this terminal; exits with the container's code.

use anyhow::{anyhow, bail, Context};
use berth_client::Client;
use berth_proto::berth::services::unpack::v1::UnpackRequest;
use berth_proto::berth::services::volumes::v1::{
    CreateVolumeRequest, GetVolumeRequest, RemoveVolumeRequest,
};
use berth_proto::containers::{
    container::Runtime, Container, CreateContainerRequest, DeleteContainerRequest,
};
use berth_proto::images::GetImageRequest;
use berth_proto::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use berth_proto::tasks::{
    CreateTaskRequest, DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
};
use berth_services::network::cni::PortMapping;
use berth_services::network::{DNS_LABEL, NETWORKS_LABEL, PORTS_LABEL};
use berth_services::seccomp;
use berth_services::spec::{self, resolve_user, Options, SPEC_TYPE_URL};
use berth_snapshotters::mount::TempMount;
use clap::Args;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct Run {
    /// Remove the container, its task and its snapshot when it exits
    #[arg(long)]
    rm: bool,
    /// Start it and return; do not wait or attach
    #[arg(long, short = 'd')]
    detach: bool,
    /// With -d: append the container's stdout and stderr to this file (`berth logs` and
    /// `berth tasks attach` read it) [default: /var/log/berth/NS/ID.log for the default
    /// daemon, beside its socket for another, or under $BERTH_LOG_DIR]
    #[arg(long, requires = "detach")]
    log: Option<PathBuf>,
    /// berthd's socket, to place the default log (set by main, not a flag)
    #[arg(skip)]
    pub address: PathBuf,
    /// Give the container a terminal wired to this one (an interactive shell)
    #[arg(long, short = 't')]
    tty: bool,
    /// Environment variables (KEY=VALUE)
    #[arg(long = "env", short = 'e')]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(long)]
    cwd: Option<String>,
    /// User: name, uid, or uid:gid (names are looked up in the image's /etc/passwd)
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Mounts: type=bind,src=/host,dst=/ctr[,options=rbind:ro] or
    /// type=volume,src=NAME,dst=/ctr[,options=ro] (a named volume, created on first use;
    /// without src, an anonymous one)
    #[arg(long = "mount")]
    mounts: Vec<String>,
    /// Volumes: /host/dir:/ctr[:ro] (bind) or NAME:/ctr[:ro] (named volume)
    #[arg(long = "volume", short = 'v')]
    volumes: Vec<String>,
    /// Memory limit (e.g. 256m)
    #[arg(long)]
    memory: Option<String>,
    /// CPU limit (e.g. 1.5)
    #[arg(long)]
    cpus: Option<f64>,
    /// Largest number of processes
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Network: bridge (the default network, made on first use), host, none (loopback
    /// only), or a network made with `berth network create`; several comma-separated
    #[arg(long = "network", alias = "net", default_value = "bridge")]
    network: String,
    /// Same as --network host
    #[arg(long, hide = true)]
    net_host: bool,
    /// Publish a port: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], ranges as 8000-8009:80-89
    #[arg(long = "publish", short = 'p')]
    publish: Vec<String>,
    /// Nameservers for the container's resolv.conf (default: the host's)
    #[arg(long)]
    dns: Vec<String>,
    /// Runtime (shim): berth's own by default; io.containerd.runc.v2 for containerd's
    #[arg(long, default_value = "io.containerd.berth.v2")]
    runtime: String,
    /// Low-level runtime under the shim (runc options' binary_name): `native` (berth's
    /// shim only), runc, or a runc-compatible binary's name or path; default: berthd's
    #[arg(long)]
    runc_binary: Option<String>,
    /// Security options: seccomp=unconfined (no seccomp filter) or seccomp=PROFILE.json (an
    /// OCI seccomp profile, or one in Docker's format) [default: berth's RuntimeDefault
    /// seccomp profile]
    #[arg(long = "security-opt")]
    security_opt: Vec<String>,
    /// The filter --security-opt chose (read from it before anything is made)
    #[arg(skip)]
    seccomp: seccomp::Profile,
    /// Snapshotter for the container's rootfs
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    snapshotter: String,
    image: String,
    id: String,
    /// Command and arguments (default: the image's)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl Run {
    fn host_network(&self) -> bool {
        self.net_host || self.network == "host"
    }

    /// The seccomp filter --security-opt asks for: RuntimeDefault unless told otherwise.
    fn seccomp_option(&self) -> anyhow::Result<seccomp::Profile> {
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

    /// The labels that ask berthd to join the container to its networks.
    fn network_labels(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let without = if self.host_network() {
            Some("host")
        } else {
            (self.network == "none").then_some("none")
        };
        if let Some(net) = without {
            if !self.publish.is_empty() {
                bail!("-p needs a network to publish from; --network {net} has none");
            }
            if !self.dns.is_empty() {
                bail!("--dns needs a network of berth's; --network {net} has none");
            }
            return Ok(vec![]);
        }
        let mut ports = vec![];
        for p in &self.publish {
            ports.extend(parse_publish(p)?);
        }
        let mut labels = vec![(NETWORKS_LABEL, self.network.clone())];
        if !ports.is_empty() {
            labels.push((PORTS_LABEL, serde_json::to_string(&ports)?));
        }
        if !self.dns.is_empty() {
            labels.push((DNS_LABEL, self.dns.join(",")));
        }
        Ok(labels)
    }
}

/// `-p [IP:]HOST:CONTAINER[/PROTO]` as CNI port mappings; `[::1]:80:80` for IPv6; equal-length
/// ranges map port by port.
fn parse_publish(s: &str) -> anyhow::Result<Vec<PortMapping>> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) => (a, p),
        None => (s, "tcp"),
    };
    if !["tcp", "udp", "sctp"].contains(&proto) {
        bail!("-p {s:?}: protocol {proto:?} is not tcp, udp or sctp");
    }
    let (ip, rest) = if let Some(r) = spec.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| anyhow!("-p {s:?}: use [IPv6]:HOST:CONTAINER"))?;
        (ip.to_string(), rest)
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            2 => (String::new(), spec),
            3 => (parts[0].to_string(), &spec[parts[0].len() + 1..]),
            _ => bail!("-p {s:?}: use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]"),
        }
    };
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        bail!("-p {s:?}: {ip:?} is not an IP address");
    }
    let (host, ctr) = rest
        .split_once(':')
        .ok_or_else(|| anyhow!("-p {s:?}: use [IP:]HOST_PORT:CONTAINER_PORT"))?;
    let range = |r: &str| -> anyhow::Result<(i32, i32)> {
        let port = |p: &str| -> anyhow::Result<i32> {
            match p.parse::<i32>() {
                Ok(n) if (1..=65535).contains(&n) => Ok(n),
                _ => bail!("-p {s:?}: {p:?} is not a port (1-65535)"),
            }
        };
        match r.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if b < a {
                    bail!("-p {s:?}: range {r:?} runs backwards");
                }
                Ok((a, b))
            }
            None => port(r).map(|p| (p, p)),
        }
    };
    let ((h0, h1), (c0, c1)) = (range(host)?, range(ctr)?);
    if h1 - h0 != c1 - c0 {
        bail!("-p {s:?}: the host and container ranges differ in length");
    }
    Ok((0..=h1 - h0)
        .map(|i| PortMapping {
            host_port: h0 + i,
            container_port: c0 + i,
            protocol: proto.to_string(),
            host_ip: ip.clone(),
        })
        .collect())
}

/// A mount asked for on the command line, before volumes are resolved.
#[derive(Debug, Clone, PartialEq)]
enum Wanted {
    Bind {
        src: String,
        dst: String,
        opts: Vec<String>,
    },
    /// A named volume, or an anonymous one when `name` is None.
    Volume {
        name: Option<String>,
        dst: String,
        opts: Vec<String>,
    },
}

impl Wanted {
    fn dst(&self) -> &str {
        match self {
            Wanted::Bind { dst, .. } | Wanted::Volume { dst, .. } => dst,
        }
    }
}

fn parse_mount(s: &str) -> anyhow::Result<Wanted> {
    let mut kind = "bind";
    let (mut src, mut dst, mut opts) = (None, None, vec![]);
    for part in s.split(',') {
        let (k, v) = match part.split_once('=') {
            Some(kv) => kv,
            None if part == "ro" || part == "readonly" => ("options", "ro"),
            None => bail!("mount {s:?}: {part:?} is not key=value"),
        };
        match k {
            "type" => kind = v,
            "src" | "source" => src = Some(v.to_string()),
            "dst" | "destination" | "target" => dst = Some(v.to_string()),
            "options" => opts.extend(v.split(':').map(str::to_string)),
            other => bail!("mount {s:?}: unknown key {other:?}"),
        }
    }
    let dst = dst.ok_or_else(|| anyhow!("mount {s:?} needs dst="))?;
    if !dst.starts_with('/') {
        bail!("mount {s:?}: dst must be an absolute path");
    }
    match kind {
        "bind" => {
            let src = src.ok_or_else(|| anyhow!("mount {s:?} needs src="))?;
            if !Path::new(&src).is_absolute() {
                bail!("mount {s:?}: src must be an absolute path");
            }
            Ok(Wanted::Bind { src, dst, opts })
        }
        "volume" => Ok(Wanted::Volume {
            name: src.filter(|n| !n.is_empty()),
            dst,
            opts,
        }),
        other => bail!("mount {s:?}: type {other:?} is not bind or volume"),
    }
}

/// `-v SRC:DST[:ro|rw]`: an absolute SRC is a host directory, anything else a volume name.
fn parse_volume(s: &str) -> anyhow::Result<Wanted> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [dst] => ("", *dst, None),
        [src, dst] => (*src, *dst, None),
        [src, dst, mode] => (*src, *dst, Some(*mode)),
        _ => bail!("-v {s:?}: use SRC:DST[:ro]"),
    };
    if !dst.starts_with('/') {
        bail!("-v {s:?}: the container path must be absolute");
    }
    let opts = match mode {
        None | Some("rw") => vec![],
        Some("ro") => vec!["ro".to_string()],
        Some(m) => bail!("-v {s:?}: mode {m:?} is not ro or rw"),
    };
    Ok(if src.starts_with('/') {
        Wanted::Bind {
            src: src.into(),
            dst: dst.into(),
            opts,
        }
    } else {
        Wanted::Volume {
            name: (!src.is_empty()).then(|| src.to_string()),
            dst: dst.into(),
            opts,
        }
    })
}

/// The image's config, for the daemon's platform.
async fn image_config(client: &Client, name: &str) -> anyhow::Result<serde_json::Value> {
    let img = client
        .images()
        .get(GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|e| anyhow!("image {name}: {}; pull or import it first", e.message()))?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("daemon returned no image"))?;
    let mut desc = img
        .target
        .ok_or_else(|| anyhow!("image {name} has no target"))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    for _ in 0..4 {
        let doc: serde_json::Value =
            serde_json::from_slice(&client.read_blob(&desc.digest, 0, 0).await?)?;
        if let Some(ms) = doc["manifests"].as_array() {
            let m = ms
                .iter()
                .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
                .or_else(|| ms.first())
                .ok_or_else(|| anyhow!("image {name} has an empty index"))?;
            desc.digest = m["digest"].as_str().unwrap_or_default().to_string();
            continue;
        }
        let cfg = doc["config"]["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("manifest has no config"))?;
        return Ok(serde_json::from_slice(&client.read_blob(cfg, 0, 0).await?)?);
    }
    bail!("image {name}: indexes nest too deeply")
}

/// The threads copying a process's output here, and our own write ends of its FIFOs, held
/// until the process has started (see [`Pumps::started`]).
#[derive(Default)]
pub struct Pumps {
    threads: Vec<std::thread::JoinHandle<()>>,
    hold: Vec<std::fs::File>,
}

impl Pumps {
    /// Once the process runs, the shim holds the FIFOs' write ends; ours go, so the copies
    /// end when the process's do (even if it already exited).
    pub fn started(&mut self) {
        self.hold.clear();
    }

    /// Waits for every copy to finish.
    pub async fn join(self) {
        for t in self.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// FIFOs for a process's stdio in `dir` and the threads that copy them to this terminal:
/// stdin and stdout with a terminal, stdout and stderr without. Returns the paths (stdin,
/// stdout, stderr; empty for none) and the output pumps.
pub fn stdio(dir: &Path, name: &str, tty: bool) -> anyhow::Result<(String, String, String, Pumps)> {
    let p = |n: &str| dir.join(format!("{name}-{n}"));
    if tty {
        for n in ["stdin", "stdout"] {
            mkfifo(&p(n))?;
        }
        pump_in(p("stdin"));
        let mut pumps = Pumps::default();
        pump_out(&p("stdout"), std::io::stdout(), &mut pumps)?;
        Ok((
            p("stdin").display().to_string(),
            p("stdout").display().to_string(),
            String::new(),
            pumps,
        ))
    } else {
        for n in ["stdout", "stderr"] {
            mkfifo(&p(n))?;
        }
        let mut pumps = Pumps::default();
        pump_out(&p("stdout"), std::io::stdout(), &mut pumps)?;
        pump_out(&p("stderr"), std::io::stderr(), &mut pumps)?;
        Ok((
            String::new(),
            p("stdout").display().to_string(),
            p("stderr").display().to_string(),
            pumps,
        ))
    }
}

/// Opens the FIFO's read end here and now (not in the thread: a process that ran and exited
/// before a late open would leave that open waiting for ever), plus a write end of our own
/// that keeps the reader from seeing end-of-file before the process has even started.
fn pump_out(
    path: &Path,
    mut to: impl std::io::Write + Send + 'static,
    pumps: &mut Pumps,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let hold = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    set_blocking(&reader)?;
    pumps.hold.push(hold);
    pumps.threads.push(std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut to);
        let _ = to.flush();
    }));
    Ok(())
}

fn set_blocking(f: &std::fs::File) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own.
    let ok = unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !ok {
        bail!("fcntl: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies this process's stdin into the container's stdin FIFO (opening waits for the
/// shim to open its end).
fn pump_in(path: PathBuf) {
    std::thread::spawn(move || {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&path) {
            let _ = std::io::copy(&mut std::io::stdin(), &mut f);
        }
    });
}

/// This terminal's size (columns, rows), when stdin is one.
fn window_size() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl on stdin with a pointer to our struct.
    let ok = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some((ws.ws_col as u32, ws.ws_row as u32))
}

/// This terminal in raw mode until dropped.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<Self> {
        // SAFETY: isatty/tcgetattr/tcsetattr on stdin with termios structs we own.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(RawMode(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the saved attributes on stdin.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

fn mkfifo(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: mkfifo with a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mkfifo {}", p.display()));
    }
    Ok(())
}

/// A snapshot's mounts as the daemon sent them, to mount here.
pub fn local_mounts(mounts: &[berth_proto::types::Mount]) -> Vec<berth_snapshotters::Mount> {
    mounts
        .iter()
        .map(|m| berth_snapshotters::Mount {
            kind: m.r#type.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}

pub async fn run(client: &Client, mut r: Run) -> anyhow::Result<i32> {
    let networks = r.network_labels()?;
    r.seccomp = r.seccomp_option()?;
    // The log as the shim and the container's label name it: absolute.
    r.log = match r.log.take() {
        Some(log) if log.is_relative() => Some(std::env::current_dir()?.join(log)),
        Some(log) => Some(log),
        None if r.detach => {
            let log = default_log(&r.address, client.namespace(), &r.id);
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create the log directory {}", dir.display()))?;
            }
            Some(log)
        }
        None => None,
    };
    // The daemon finds the image (by the name as given, or docker's whole form of it),
    // unpacks what is missing, and answers with the image's config.
    let unpacked = client
        .unpack()
        .unpack(UnpackRequest {
            name: r.image.clone(),
            snapshotter: r.snapshotter.clone(),
            platform: String::new(),
        })
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => {
                anyhow!(
                    "image {}: {}; pull or import it first",
                    r.image,
                    e.message()
                )
            }
            _ => anyhow!("image {}: {}", r.image, e.message()),
        })?
        .into_inner();
    if !unpacked.name.is_empty() {
        r.image = unpacked.name;
    }
    let config: serde_json::Value = if unpacked.config.is_empty() {
        // A config over 1 MiB, or a daemon from before the answer carried it.
        image_config(client, &r.image).await?
    } else {
        serde_json::from_slice(&unpacked.config)
            .with_context(|| format!("image {}: its config is not JSON", r.image))?
    };
    let mounts = client
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: r.snapshotter.clone(),
            key: r.id.clone(),
            parent: unpacked.chain_id,
            labels: HashMap::new(),
        })
        .await
        .map_err(|e| anyhow!("container {}: {}", r.id, e.message()))?
        .into_inner()
        .mounts;
    let remove_snapshot = || async {
        let _ = client
            .snapshots()
            .remove(RemoveSnapshotRequest {
                snapshotter: r.snapshotter.clone(),
                key: r.id.clone(),
            })
            .await;
    };
    let (binds, anonymous) = match volume_binds(client, &r, &config, &mounts).await {
        Ok(v) => v,
        Err(e) => {
            remove_snapshot().await;
            return Err(e);
        }
    };
    let result = create_and_run(client, &r, &config, &mounts, binds, networks).await;
    if result.is_err() || r.rm {
        let _ = client
            .containers()
            .delete(DeleteContainerRequest { id: r.id.clone() })
            .await;
        remove_snapshot().await;
        // Anonymous volumes go with the container; named ones never do.
        for name in anonymous {
            let _ = client
                .volumes()
                .remove(RemoveVolumeRequest { name, force: false })
                .await;
        }
    }
    result
}

/// Resolves --mount, -v and the image's VOLUME entries into bind mounts. Volumes are made
/// on first use and seeded with what the image holds at their path; returns the binds and
/// the anonymous volumes made for this container.
async fn volume_binds(
    client: &Client,
    r: &Run,
    config: &serde_json::Value,
    rootfs: &[berth_proto::types::Mount],
) -> anyhow::Result<(Vec<(String, String, Vec<String>)>, Vec<String>)> {
    let mut wanted = r
        .mounts
        .iter()
        .map(|m| parse_mount(m))
        .chain(r.volumes.iter().map(|v| parse_volume(v)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(vols) = config["config"]["Volumes"].as_object() {
        for path in vols.keys() {
            if path.starts_with('/') && !wanted.iter().any(|w| w.dst() == path) {
                wanted.push(Wanted::Volume {
                    name: None,
                    dst: path.clone(),
                    opts: vec![],
                });
            }
        }
    }
    let mut binds = vec![];
    let mut anonymous = vec![];
    for w in wanted {
        match w {
            Wanted::Bind { src, dst, opts } => binds.push((src, dst, opts)),
            Wanted::Volume { name, dst, opts } => {
                let mut labels = HashMap::new();
                if name.is_none() {
                    labels.insert("berth.container".to_string(), r.id.clone());
                }
                let created = client
                    .volumes()
                    .create(CreateVolumeRequest {
                        name: name.clone().unwrap_or_default(),
                        labels,
                        seed_mounts: rootfs.to_vec(),
                        seed_path: dst.clone(),
                    })
                    .await;
                let volume = match created {
                    Ok(v) => v.into_inner().volume,
                    Err(e) if e.code() == tonic::Code::AlreadyExists => {
                        client
                            .volumes()
                            .get(GetVolumeRequest {
                                name: name.clone().unwrap_or_default(),
                                usage: false,
                            })
                            .await
                            .map_err(|e| {
                                anyhow!(
                                    "volume {}: {}",
                                    name.clone().unwrap_or_default(),
                                    e.message()
                                )
                            })?
                            .into_inner()
                            .volume
                    }
                    Err(e) => {
                        for n in anonymous {
                            let _ = client
                                .volumes()
                                .remove(RemoveVolumeRequest {
                                    name: n,
                                    force: true,
                                })
                                .await;
                        }
                        bail!("volume for {dst}: {}", e.message())
                    }
                }
                .ok_or_else(|| anyhow!("daemon returned no volume"))?;
                if name.is_none() {
                    anonymous.push(volume.name.clone());
                }
                binds.push((volume.mountpoint, dst, opts));
            }
        }
    }
    Ok((binds, anonymous))
}

async fn create_and_run(
    client: &Client,
    r: &Run,
    config: &serde_json::Value,
    mounts: &[berth_proto::types::Mount],
    binds: Vec<(String, String, Vec<String>)>,
    networks: Vec<(&'static str, String)>,
) -> anyhow::Result<i32> {
    let user = r.user.clone().or_else(|| {
        config["config"]["User"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    let (uid, gid, extra) = match &user {
        Some(u) => {
            let mounted = TempMount::new(&local_mounts(mounts))
                .context("mount the rootfs to resolve the user")?;
            resolve_user(mounted.path(), u)?
        }
        None => (0, 0, vec![0]),
    };
    let opts = Options {
        id: r.id.clone(),
        namespace: client.namespace().to_string(),
        args: r.args.clone(),
        env: r.env.clone(),
        cwd: r.cwd.clone(),
        uid,
        gid,
        additional_gids: extra,
        terminal: r.tty,
        memory: match &r.memory {
            Some(m) => Some(
                spec::parse_size(m)
                    .ok_or_else(|| anyhow!("--memory {m:?} is not a size like 256m"))?,
            ),
            None => None,
        },
        cpus: r.cpus,
        pids: r.pids_limit,
        host_network: r.host_network(),
        binds,
        seccomp: r.seccomp.clone(),
    };
    if spec::args(config, &r.args).is_empty() {
        bail!("no command: the image has none and none was given");
    }
    let spec = spec::build(config, &opts);
    client
        .containers()
        .create(CreateContainerRequest {
            container: Some(Container {
                id: r.id.clone(),
                image: r.image.clone(),
                runtime: Some(Runtime {
                    name: r.runtime.clone(),
                    options: r.runc_binary.as_ref().map(|b| {
                        berth_proto::to_any(&berth_proto::containerd::runc::v1::Options {
                            binary_name: b.clone(),
                            ..Default::default()
                        })
                    }),
                }),
                spec: Some(prost_types::Any {
                    type_url: SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&spec)?,
                }),
                snapshotter: r.snapshotter.clone(),
                snapshot_key: r.id.clone(),
                labels: container_labels(r, config, networks),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| anyhow!("container {}: {}", r.id, e.message()))?;

    // The FIFOs of an attached run's stdio live in a directory removed when the run ends.
    let (stdin, stdout, stderr, pumps, _fifo_dir) = if let Some(log) = &r.log {
        let uri = format!("file://{}", log.display());
        (String::new(), uri.clone(), uri, Pumps::default(), None)
    } else if r.detach {
        (
            String::new(),
            String::new(),
            String::new(),
            Pumps::default(),
            None,
        )
    } else {
        let dir = tempfile::Builder::new()
            .prefix("berth-io-")
            .tempdir_in(std::env::temp_dir())?;
        let (i, o, e, p) = stdio(dir.path(), &r.id, r.tty)?;
        (i, o, e, p, Some(dir))
    };
    let mut tasks = client.tasks();
    tasks
        .create(CreateTaskRequest {
            container_id: r.id.clone(),
            rootfs: mounts.to_vec(),
            stdin,
            stdout,
            stderr,
            terminal: r.tty,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("task {}: {}", r.id, e.message()))?;
    if r.detach {
        tasks
            .start(StartRequest {
                container_id: r.id.clone(),
                exec_id: String::new(),
            })
            .await
            .map_err(|e| anyhow!("start {}: {}", r.id, e.message()))?;
        println!("{}", r.id);
        return Ok(0);
    }
    let status = start_and_wait(client, &r.id, "", r.tty, pumps).await?;
    if r.rm {
        tasks
            .delete(DeleteTaskRequest {
                container_id: r.id.clone(),
            })
            .await
            .map_err(|e| anyhow!("delete task {}: {}", r.id, e.message()))?;
    }
    Ok(status as i32)
}

/// Starts the task's process (`exec_id` empty: its init) and waits for it, with a terminal
/// in raw mode and its size followed when `tty`, Ctrl-C and SIGTERM forwarded, and the
/// output pumps drained. Returns the exit status.
pub async fn start_and_wait(
    client: &Client,
    id: &str,
    exec_id: &str,
    tty: bool,
    mut pumps: Pumps,
) -> anyhow::Result<u32> {
    let mut tasks = client.tasks();
    let waiter = {
        let mut t = client.tasks();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            t.wait(WaitRequest {
                container_id: id,
                exec_id,
            })
            .await
        })
    };
    tasks
        .start(StartRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        })
        .await
        .map_err(|e| anyhow!("start {id}: {}", e.message()))?;
    pumps.started();
    // With a terminal: this one goes raw (restored on return) and its size follows along.
    let _raw = if tty { RawMode::enter() } else { None };
    let resizer = tty.then(|| {
        let mut t = client.tasks();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut winch = signal(SignalKind::window_change()).ok();
            loop {
                if let Some((width, height)) = window_size() {
                    let _ = t
                        .resize_pty(berth_proto::tasks::ResizePtyRequest {
                            container_id: id.clone(),
                            exec_id: exec_id.clone(),
                            width,
                            height,
                        })
                        .await;
                }
                match winch.as_mut() {
                    Some(w) => {
                        w.recv().await;
                    }
                    None => return,
                }
            }
        })
    });
    let forward = forward_signals(client, id, exec_id);
    let status = waiter
        .await?
        .map_err(|e| anyhow!("wait {id}: {}", e.message()))?
        .into_inner();
    forward.abort();
    if let Some(r) = resizer {
        r.abort();
    }
    pumps.join().await;
    Ok(status.exit_status)
}

/// Forwards Ctrl-C and SIGTERM to the process until aborted.
fn forward_signals(client: &Client, id: &str, exec_id: &str) -> tokio::task::JoinHandle<()> {
    let mut t = client.tasks();
    let (id, exec_id) = (id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let sig =
                tokio::select! { _ = int.recv() => libc::SIGINT, _ = term.recv() => libc::SIGTERM };
            let _ = t
                .kill(KillRequest {
                    container_id: id.clone(),
                    exec_id: exec_id.clone(),
                    signal: sig as u32,
                    all: false,
                })
                .await;
        }
    })
}

/// Label carrying the image's STOPSIGNAL, as containerd names it; `berth tasks kill`
/// sends it by default.
pub use berth_proto::vocab::labels::STOP_SIGNAL as STOP_SIGNAL_LABEL;

fn container_labels(
    r: &Run,
    config: &serde_json::Value,
    networks: Vec<(&'static str, String)>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = networks
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if let Some(sig) = config["config"]["StopSignal"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        labels.insert(STOP_SIGNAL_LABEL.to_string(), sig.to_string());
    }
    if let Some(log) = &r.log {
        labels.insert(LOG_LABEL.to_string(), log.display().to_string());
    }
    labels
}

/// Where `run -d` keeps a container's output when no --log is given: under $BERTH_LOG_DIR;
/// else /var/log/berth for the default daemon, or a `logs` directory beside another
/// daemon's socket (so two daemons' containers of one name never share a log).
pub fn default_log(address: &Path, ns: &str, id: &str) -> PathBuf {
    let dir = match std::env::var_os("BERTH_LOG_DIR") {
        Some(d) => PathBuf::from(d),
        None if address == Path::new(berth_client::DEFAULT_ADDRESS) => {
            PathBuf::from("/var/log/berth")
        }
        None => address.parent().unwrap_or(Path::new("/")).join("logs"),
    };
    dir.join(ns).join(format!("{id}.log"))
}

/// Label naming the log file of a task started with `--log`.
pub const LOG_LABEL: &str = "berth.log";

/// Prints the log so far and what the task appends to it until the task exits (signals
/// forwarded); returns its exit status.
pub async fn follow(client: &Client, id: &str, log: &Path) -> anyhow::Result<u32> {
    use std::io::Write;
    let mut waiter = {
        let mut t = client.tasks();
        let id = id.to_string();
        tokio::spawn(async move {
            t.wait(WaitRequest {
                container_id: id,
                exec_id: String::new(),
            })
            .await
        })
    };
    let forward = forward_signals(client, id, "");
    let mut f = tokio::fs::File::open(log)
        .await
        .with_context(|| format!("open the log {}", log.display()))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut out = std::io::stdout();
    let status = loop {
        let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            out.flush()?;
            continue;
        }
        tokio::select! {
            done = &mut waiter => break done?,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    };
    // What the task wrote last.
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut f, &mut buf).await?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.flush()?;
    forward.abort();
    Ok(status
        .map_err(|e| anyhow!("wait {id}: {}", e.message()))?
        .into_inner()
        .exit_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        let one = parse_publish("127.0.0.1:18080:80").unwrap();
        assert_eq!(
            serde_json::to_value(&one).unwrap(),
            serde_json::json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
        let udp = parse_publish("53:5353/udp").unwrap();
        assert_eq!(udp[0].protocol, "udp");
        assert_eq!(udp[0].host_ip, "");
        let v6 = parse_publish("[::1]:8080:80").unwrap();
        assert_eq!(v6[0].host_ip, "::1");
        let range = parse_publish("8000-8002:80-82").unwrap();
        assert_eq!(range.len(), 3);
        assert_eq!(range[2].host_port, 8002);
        assert_eq!(range[2].container_port, 82);
        for bad in [
            "80",
            "0:80",
            "80:70000",
            "x:80",
            "1.2.3:80:80",
            "80:80/icmp",
            "8000-8001:80",
            "9-8:9-8",
            "a:b:c:d",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
