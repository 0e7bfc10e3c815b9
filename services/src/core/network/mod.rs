//! Container networks: CNI networks berth writes and names (`bridge`, made on first use, and
//! any `berth network create` makes), joined by a container whose record carries
//! [`NETWORKS_LABEL`] when its task is created, and left when its init exits, its task is
//! deleted, or — after a crash — when berthd finds at start that it is no longer running.
//! The CRI shares [`cni`] and [`netns`] and keeps its own pod networks.
//!
//! berth's own networks (those it defines: `bridge` and `berth network create`'s) are
//! joined in-process ([`bridge`]: netlink, host-local's leases, netfilter rules once per
//! network); a conflist berth did not write goes through its CNI plugins.
//!
//! State under `<state>/io.berth.network.v1/`: `attachments/<ns>/<id>.json` (written before
//! the first ADD, so DEL always knows what to undo), `netns/<ns>/<id>` (the pinned
//! namespace), `files/<ns>/<id>/` (hosts, resolv.conf, hostname) and `ipam/` (host-local's
//! leases: gone on reboot along with every veth and rule they described).

mod attach;
mod bridge;
pub mod cni;
mod cni_native;
pub mod define;
pub(crate) mod files;
pub mod host;
mod hostlock;
mod ipam;
mod nat;
mod netlink;
pub mod netns;

pub use define::{Definition, Subnet, DEFAULT_NETWORK};

use crate::core::error::{blocking, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Comma-separated networks a container joins (its first gets published ports).
pub const NETWORKS_LABEL: &str = "berth.networks";
/// JSON list of CNI port mappings to publish.
pub const PORTS_LABEL: &str = "berth.ports";
/// Comma-separated nameservers for the container's resolv.conf.
pub const DNS_LABEL: &str = "berth.dns";

/// `[network]` in berthd's config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Where berth's conflists live; empty: `<root>/io.berth.network.v1/net.d`.
    pub conf_dir: PathBuf,
    /// The CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// Join berth's own bridge networks in-process (netlink, netfilter) rather than
    /// through the bridge, portmap and firewall plugins; false goes back to the plugins.
    pub in_process_bridge: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: PathBuf::new(),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
            in_process_bridge: true,
        }
    }
}

/// What `berth network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

/// A network as listed: berth's definition (None for a conflist berth did not write), its
/// file, and the containers on it.
#[derive(Debug, Clone)]
pub struct NetworkInfo {
    pub name: String,
    pub definition: Option<Definition>,
    pub file: PathBuf,
    pub endpoints: Vec<Endpoint>,
}

/// A container on a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub namespace: String,
    pub container_id: String,
    pub ifname: String,
    pub ips: Vec<String>,
    pub ports: Vec<cni::PortMapping>,
}

#[derive(Clone)]
pub struct Networks {
    inner: Arc<Inner>,
}

struct Inner {
    conf_dir: PathBuf,
    bin_dir: PathBuf,
    dir: PathBuf,
    /// Part of every CNI container id: this daemon's, so that two berthds on one host with a
    /// container of the same namespace and name never share the plugins' per-container
    /// chains and leases.
    tag: String,
    /// Serialises changes to the set of networks (create, remove, the default's first use).
    defs: tokio::sync::Mutex<()>,
    /// One lock per attached container, so attach and detach of one never interleave.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Containers leaving berth's own networks in the background (see `Networks::detach`):
    /// true once their published ports are free.
    leaving: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// Whether berth's own networks are joined in-process.
    in_process: bool,
    /// berth's own networks whose bridge and netfilter rules this run has put in place;
    /// held while one is prepared, so two first containers do not both add its rules.
    prepared: tokio::sync::Mutex<HashSet<String>>,
}

impl NetworkConfig {
    /// Where the conflists of the daemon on `root` live.
    pub fn conf_dir_for(&self, root: &Path) -> PathBuf {
        if self.conf_dir.as_os_str().is_empty() {
            root.join(host::NETWORK_DIR).join("net.d")
        } else {
            self.conf_dir.clone()
        }
    }
}

impl Networks {
    pub fn open(cfg: &NetworkConfig, root: &Path, state: &Path) -> Result<Self> {
        let conf_dir = cfg.conf_dir_for(root);
        std::fs::create_dir_all(&conf_dir)
            .map_err(|e| Error::io(format!("create {}", conf_dir.display()), e))?;
        let dir = state.join(host::NETWORK_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let tag = host::tag_of_dir(&dir);
        Ok(Networks {
            inner: Arc::new(Inner {
                conf_dir,
                bin_dir: cfg.cni_bin_dir.clone(),
                dir,
                tag,
                defs: Default::default(),
                locks: Default::default(),
                leaving: Default::default(),
                in_process: cfg.in_process_bridge,
                prepared: Default::default(),
            }),
        })
    }

    pub fn conf_dir(&self) -> &Path {
        &self.inner.conf_dir
    }

    fn file(&self, name: &str) -> PathBuf {
        self.inner.conf_dir.join(format!("{name}.conflist"))
    }

    /// Every network in the conf dir, by name, with the containers on each (not those
    /// leaving in the background: their tasks are deleted).
    pub async fn list(&self) -> Result<Vec<NetworkInfo>> {
        let conf_dir = self.inner.conf_dir.clone();
        let dir = self.inner.dir.clone();
        let leaving = self.leaving_keys();
        blocking(move || {
            let mut endpoints = attach::endpoints(&dir);
            endpoints.retain(|(_, e)| !leaving.contains(&Self::key(&e.namespace, &e.container_id)));
            Ok(conflists(&conf_dir)?
                .into_iter()
                .map(|net| info(net, &endpoints))
                .collect())
        })
        .await
    }

    pub async fn get(&self, name: &str) -> Result<NetworkInfo> {
        self.list()
            .await?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| not_found(name))
    }

    pub async fn create(&self, req: CreateNetwork) -> Result<NetworkInfo> {
        define::validate_name(&req.name)?;
        crate::core::metadata::validate_labels(&req.labels)?;
        let _g = self.inner.defs.lock().await;
        self.create_locked(req).await
    }

    async fn create_locked(&self, req: CreateNetwork) -> Result<NetworkInfo> {
        // Subnets and bridges are the host's: every berthd on it takes this lock to choose.
        let _host = blocking(hostlock::take).await?;
        let conf_dir = self.inner.conf_dir.clone();
        let existing: Vec<(String, Definition)> = blocking(move || conflists(&conf_dir))
            .await?
            .into_iter()
            .map(|n| (n.name.clone(), Definition::from_conflist(&n.conf)))
            .filter_map(|(name, d)| {
                if name == req.name {
                    return Some(Err(Error::already_exists(format!(
                        "network {name:?} exists; remove it first or pick another name"
                    ))));
                }
                d.map(|d| Ok((name, d)))
            })
            .collect::<Result<_>>()?;
        let taken: Vec<Subnet> = existing.iter().map(|(_, d)| d.subnet).collect();
        let subnet = match &req.subnet {
            Some(s) => {
                let s = Subnet::parse(s)?;
                if let Some((name, _)) = existing.iter().find(|(_, d)| d.subnet.overlaps(&s)) {
                    return Err(Error::already_exists(format!(
                        "subnet {s} overlaps network {name:?}'s"
                    )));
                }
                s
            }
            None => define::free_subnet(&taken, &define::host_routes())?,
        };
        let gateway = match &req.gateway {
            Some(g) => {
                let ip: std::net::Ipv4Addr = g
                    .parse()
                    .map_err(|_| Error::invalid(format!("gateway {g:?} is not an IPv4 address")))?;
                if !subnet.contains(ip) || ip == subnet.addr {
                    return Err(Error::invalid(format!(
                        "gateway {ip} is not a host address of {subnet}"
                    )));
                }
                ip
            }
            None => subnet.first_host(),
        };
        let used: Vec<String> = existing.iter().map(|(_, d)| d.bridge.clone()).collect();
        let path = self.file(&req.name);
        let def = Definition {
            bridge: String::new(),
            name: req.name,
            subnet,
            gateway,
            internal: req.internal,
            labels: req.labels,
            created: crate::core::metadata::now() / 1_000_000_000,
        };
        let def = self.claim_and_write(def, &used, &path).await?;
        tracing::info!(network = def.name, subnet = %def.subnet, "network created");
        Ok(NetworkInfo {
            name: def.name.clone(),
            definition: Some(def),
            file: path,
            endpoints: vec![],
        })
    }

    /// Gives `def` a bridge, the first of its network's names that no name in `used` is and
    /// no one on the host has, made with its subnet and gateway (under the host lock, which
    /// the caller holds), and writes `def` to `path`; the bridge goes again if the file
    /// cannot be written.
    async fn claim_and_write(
        &self,
        mut def: Definition,
        used: &[String],
        path: &Path,
    ) -> Result<Definition> {
        def.bridge = claim_bridge(
            define::bridge_names(&def.name, &self.inner.conf_dir)
                .into_iter()
                .filter(|b| !used.contains(b)),
            def.subnet,
            def.gateway,
            &host::bridge_alias(&self.inner.tag),
        )
        .await?;
        let text = serde_json::to_vec_pretty(&def.conflist())?;
        let p = path.to_path_buf();
        if let Err(e) = blocking(move || write_atomic(&p, &text)).await {
            delete_link(&def.bridge).await;
            return Err(e);
        }
        Ok(def)
    }

    /// Removes a network no container is on, the default one too, and its bridge (when the
    /// bridge is still this daemon's).
    pub async fn remove(&self, name: &str) -> Result<()> {
        let _g = self.inner.defs.lock().await;
        // A container still leaving in the background has its veth on the bridge.
        self.wait_left().await;
        let net = self.get(name).await?;
        if let Some(e) = net.endpoints.first() {
            return Err(Error::precondition(format!(
                "network {name:?} is in use by container {} (namespace {}); remove it first",
                e.container_id, e.namespace
            )));
        }
        let file = net.file.clone();
        blocking(move || {
            std::fs::remove_file(&file)
                .map_err(|e| Error::io(format!("remove {}", file.display()), e))
        })
        .await?;
        if let Some(d) = net.definition {
            self.forget_prepared(&d.name).await;
            let (tag, name) = (self.inner.tag.clone(), d.name.clone());
            if let Err(e) = blocking(move || nat::remove_network(&tag, &name)).await {
                tracing::warn!(network = d.name, error = %e, "cannot remove the network's rules");
            }
            // Ours unless another daemon claimed the name after ours went (a reboot).
            let dir = self.inner.dir.clone();
            let ours = blocking(move || Ok(host::owns_bridge(&dir, &d).then_some(d.bridge)));
            if let Some(bridge) = ours.await? {
                delete_link(&bridge).await;
            }
        }
        tracing::info!(network = name, "network removed");
        Ok(())
    }

    /// The network to join: made first if it is the default one and missing.
    async fn ensure(&self, name: &str) -> Result<cni::Network> {
        if let Some(net) = self.find(name).await? {
            return Ok(net);
        }
        if name != DEFAULT_NETWORK {
            return Err(not_found(name));
        }
        let _g = self.inner.defs.lock().await;
        // Another container may have made it while this one waited.
        if let Some(net) = self.find(name).await? {
            return Ok(net);
        }
        self.create_locked(CreateNetwork {
            name: name.to_string(),
            ..Default::default()
        })
        .await?;
        self.find(name).await?.ok_or_else(|| not_found(name))
    }

    /// The network called `name`: its own `<name>.conflist`, else a conflist berth did not
    /// write that names it inside.
    async fn find(&self, name: &str) -> Result<Option<cni::Network>> {
        let (path, conf_dir, name) = (
            self.file(name),
            self.inner.conf_dir.clone(),
            name.to_string(),
        );
        blocking(move || {
            if path.exists() {
                return cni::load_file(&path).map(Some);
            }
            Ok(conflists(&conf_dir)?.into_iter().find(|n| n.name == name))
        })
        .await
    }

    /// The network as this daemon can use it now. One of berth's own networks keeps its
    /// bridge and subnet while the bridge is this daemon's, or is gone with its subnet
    /// routed nowhere (it is made again here). Otherwise another daemon on the host took the
    /// name or the subnet while this one was down (a reboot, a `berthd cleanup`): no
    /// container of ours can be on that bridge, so the network moves to a bridge and subnet
    /// that are free, as creating it would have chosen, and its file says so from then on.
    async fn settle(&self, net: cni::Network) -> Result<cni::Network> {
        let Some(def) = Definition::from_conflist(&net.conf) else {
            return Ok(net);
        };
        // The common case, one read: the bridge carries this daemon's alias.
        let alias = host::bridge_alias(&self.inner.tag);
        if !def.bridge.contains('/')
            && std::fs::read_to_string(format!("/sys/class/net/{}/ifalias", def.bridge))
                .is_ok_and(|a| a.trim() == alias)
        {
            return Ok(net);
        }
        let _g = self.inner.defs.lock().await;
        let host_lock = blocking(hostlock::take).await?;
        // Under both locks: what the file says now (a container of ours may have moved it).
        let net = self
            .find(&net.name)
            .await?
            .ok_or_else(|| not_found(&net.name))?;
        let Some(def) = Definition::from_conflist(&net.conf) else {
            return Ok(net);
        };
        let (dir, d) = (self.inner.dir.clone(), def.clone());
        let (ours, exists, routes) = blocking(move || {
            Ok((
                host::owns_bridge(&dir, &d),
                netlink::link_exists(&d.bridge),
                define::host_routes(),
            ))
        })
        .await?;
        if ours {
            return Ok(net);
        }
        let routed = routes.iter().any(|r| r.overlaps(&def.subnet));
        if !exists && !routed {
            claim_bridge(
                std::iter::once(def.bridge.clone()),
                def.subnet,
                def.gateway,
                &alias,
            )
            .await?;
            drop(host_lock);
            // Its rules are put in place again with the bridge, as the bridge plugin would.
            self.forget_prepared(&def.name).await;
            return Ok(net);
        }
        // Moved: what the daemon's other networks hold stays theirs.
        let conf_dir = self.inner.conf_dir.clone();
        let others: Vec<Definition> = blocking(move || conflists(&conf_dir))
            .await?
            .iter()
            .filter(|n| n.name != def.name)
            .filter_map(|n| Definition::from_conflist(&n.conf))
            .collect();
        let taken: Vec<Subnet> = others.iter().map(|d| d.subnet).collect();
        let (subnet, gateway) = if routed || taken.iter().any(|t| t.overlaps(&def.subnet)) {
            let s = define::free_subnet(&taken, &routes)?;
            (s, s.first_host())
        } else {
            (def.subnet, def.gateway)
        };
        // Not the name it had: that one is another's now.
        let used: Vec<String> = others
            .iter()
            .map(|d| d.bridge.clone())
            .chain([def.bridge.clone()])
            .collect();
        let moved = Definition {
            subnet,
            gateway,
            ..def.clone()
        };
        let moved = self.claim_and_write(moved, &used, &net.file).await?;
        drop(host_lock);
        // Its rules were for the old bridge and subnet: the next container adds the new.
        let (tag, name) = (self.inner.tag.clone(), def.name.clone());
        if let Err(e) = blocking(move || nat::remove_network(&tag, &name)).await {
            tracing::warn!(network = def.name, error = %e, "cannot remove the network's old rules");
        }
        self.forget_prepared(&def.name).await;
        tracing::warn!(
            network = def.name,
            from = %format!("{} {}", def.bridge, def.subnet),
            to = %format!("{} {}", moved.bridge, moved.subnet),
            "the network's bridge or subnet is another's on this host now; moved it"
        );
        self.find(&def.name)
            .await?
            .ok_or_else(|| not_found(&def.name))
    }

    /// Puts in place the masquerade and forwarding rules every container of one of berth's
    /// own networks relies on (its bridge is [`Networks::settle`]'s): once per network per
    /// run, or again once its bridge was made again.
    async fn prepare(&self, def: &Definition) -> Result<()> {
        let mut prepared = self.inner.prepared.lock().await;
        if prepared.contains(&def.name) {
            return Ok(());
        }
        let (tag, d) = (self.inner.tag.clone(), def.clone());
        blocking(move || nat::ensure_network(&tag, &d)).await?;
        prepared.insert(def.name.clone());
        Ok(())
    }

    async fn forget_prepared(&self, name: &str) {
        self.inner.prepared.lock().await.remove(name);
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(key.to_string()).or_default().clone()
    }

    fn forget_lock(&self, key: &str) {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }
}

/// The networks in `conf_dir` (`.conflist` and `.conf` files), by name; a file that does not
/// parse is skipped and logged.
fn conflists(conf_dir: &Path) -> Result<Vec<cni::Network>> {
    let entries = std::fs::read_dir(conf_dir)
        .map_err(|e| Error::io(format!("read {}", conf_dir.display()), e))?;
    let mut out = vec![];
    for e in entries.flatten() {
        let p = e.path();
        if !p
            .extension()
            .is_some_and(|x| x == "conflist" || x == "conf")
        {
            continue;
        }
        match cni::load_file(&p) {
            Ok(net) => out.push(net),
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "skipping a CNI config"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!(
        "network {name:?} does not exist; create it with `berth network create {name}`"
    ))
}

fn info(net: cni::Network, endpoints: &[(String, Endpoint)]) -> NetworkInfo {
    NetworkInfo {
        definition: Definition::from_conflist(&net.conf),
        endpoints: endpoints
            .iter()
            .filter(|(n, _)| *n == net.name)
            .map(|(_, e)| e.clone())
            .collect(),
        name: net.name,
        file: net.file,
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename: a reader sees the
/// old file or the whole new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("rename to {}", path.display()), e))
}

/// Makes the network's bridge (the first of `names` no one has), with the gateway address
/// and up: creating it claims both on the host, so a second daemon picks another bridge and,
/// seeing the route, another subnet. The bridge plugin finds it made.
async fn claim_bridge(
    names: impl Iterator<Item = String>,
    subnet: Subnet,
    gateway: std::net::Ipv4Addr,
    alias: &str,
) -> Result<String> {
    let mut last = String::new();
    for name in names {
        let out = ip(&["link", "add", &name, "type", "bridge"]).await?;
        if !out.status.success() {
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if last.contains("File exists") {
                continue;
            }
            break;
        }
        let addr = format!("{gateway}/{}", subnet.len);
        // The alias first: it is what says whose the bridge is once the root is gone.
        for args in [
            &["link", "set", &name, "alias", alias][..],
            &["addr", "add", addr.as_str(), "dev", &name][..],
            &["link", "set", &name, "up"][..],
        ] {
            let out = ip(args).await?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                delete_link(&name).await;
                return Err(Error::new(
                    crate::core::error::Kind::Internal,
                    format!("bridge {name}: ip {}: {err}", args.join(" ")),
                ));
            }
        }
        return Ok(name);
    }
    Err(Error::precondition(format!(
        "no bridge name left for the network ({last}); remove unused networks"
    )))
}

async fn ip(args: &[&str]) -> Result<std::process::Output> {
    tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::io("run ip (install iproute2)", e))
}

/// Deletes a network interface (a bridge left by the bridge plugin); absent is fine.
async fn delete_link(name: &str) {
    match ip(&["link", "delete", name]).await {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            if !err.contains("Cannot find device") {
                tracing::warn!(link = name, error = %err.trim(), "cannot delete the bridge");
            }
        }
        Err(e) => tracing::warn!(link = name, error = %e, "cannot delete the bridge"),
    }
}
