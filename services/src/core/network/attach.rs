//! A container joining its networks when its task is created and leaving them when it ends.
//! The record is written before the first ADD and updated after each, with the conflist as
//! it was joined, so DEL undoes exactly what ADD did — after a crash too. berth's own
//! networks are joined in-process ([`bridge`]); the record says which path joined, so a
//! container joined by the plugins (an older berth) leaves through them.

use super::cni::{self, PortMapping};
use super::define::Definition;
use super::{
    bridge, files, nat, netns, Endpoint, Networks, DNS_LABEL, NETWORKS_LABEL, PORTS_LABEL,
};
use crate::core::context::Namespace;
use crate::core::error::{blocking, Error, Result};
use crate::core::metadata::containers::ContainerRecord;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    namespace: String,
    id: String,
    /// When the attachment began (ns since the epoch): an exit older than this belongs to an
    /// earlier task of the same container and must not undo this one.
    created: i64,
    netns: PathBuf,
    hostname: String,
    ports: Vec<PortMapping>,
    joined: Vec<Joined>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Joined {
    network: String,
    ifname: String,
    /// The conflist as joined.
    conf: Value,
    /// ADD's result; None while (or if) ADD has not answered.
    result: Option<Value>,
    /// Joined in-process rather than through the CNI plugins.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    in_process: bool,
}

impl Joined {
    /// The container's addresses on this network, from ADD's result.
    fn ips(&self) -> Vec<String> {
        self.result
            .as_ref()
            .map(|r| cni::ips_on(r, &self.ifname))
            .unwrap_or_default()
    }
}

/// What a container asks of the network, from its labels.
struct Wanted {
    networks: Vec<String>,
    ports: Vec<PortMapping>,
    dns: Vec<String>,
}

fn wanted(c: &ContainerRecord) -> Result<Option<Wanted>> {
    let Some(names) = c.labels.get(NETWORKS_LABEL) else {
        return Ok(None);
    };
    let mut networks: Vec<String> = vec![];
    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        super::define::validate_name(n)?;
        if !networks.iter().any(|x| x == n) {
            networks.push(n.to_string());
        }
    }
    if networks.is_empty() {
        return Err(Error::invalid(format!(
            "label {NETWORKS_LABEL} names no network"
        )));
    }
    let ports: Vec<PortMapping> = match c.labels.get(PORTS_LABEL) {
        Some(p) => serde_json::from_str(p).map_err(|e| {
            Error::invalid(format!(
                "label {PORTS_LABEL} is not a list of port mappings: {e}"
            ))
        })?,
        None => vec![],
    };
    for p in &ports {
        if !(1..=65535).contains(&p.host_port) || !(1..=65535).contains(&p.container_port) {
            return Err(Error::invalid(format!(
                "port mapping {}:{}: ports are 1-65535",
                p.host_port, p.container_port
            )));
        }
        if !["tcp", "udp", "sctp"].contains(&p.protocol.as_str()) {
            return Err(Error::invalid(format!(
                "port mapping protocol {:?}: use tcp, udp or sctp",
                p.protocol
            )));
        }
        if !p.host_ip.is_empty() && p.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid(format!(
                "port mapping host address {:?} is not an IP address",
                p.host_ip
            )));
        }
    }
    let mut dns = vec![];
    for d in c
        .labels
        .get(DNS_LABEL)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::invalid(format!(
                "nameserver {d:?} is not an IP address"
            )));
        }
        dns.push(d.to_string());
    }
    Ok(Some(Wanted {
        networks,
        ports,
        dns,
    }))
}

impl Networks {
    pub(super) fn key(ns: &str, id: &str) -> String {
        format!("{ns}/{id}")
    }

    fn record_path(&self, ns: &str, id: &str) -> PathBuf {
        self.inner
            .dir
            .join("attachments")
            .join(ns)
            .join(format!("{id}.json"))
    }

    fn files_dir(&self, ns: &str, id: &str) -> PathBuf {
        self.inner.dir.join("files").join(ns).join(id)
    }

    /// host-local's leases, which the in-process bridge keeps in the same layout.
    fn ipam_dir(&self) -> PathBuf {
        self.inner.dir.join("ipam")
    }

    fn cni_attachment(&self, r: &Record, j: &Joined, first: bool) -> cni::Attachment {
        cni::Attachment {
            id: format!("{}-{}-{}", r.namespace, r.id, self.inner.tag),
            netns: r.netns.clone(),
            args: "IgnoreUnknown=1".into(),
            port_mappings: if first { r.ports.clone() } else { vec![] },
            ifname: j.ifname.clone(),
            ipam_data_dir: Some(self.ipam_dir()),
        }
    }

    /// Joins one of berth's own networks in-process (after making sure of its bridge and
    /// rules); the answer is shaped as the bridge plugin's.
    async fn join_in_process(&self, r: &Record, j: &Joined, a: cni::Attachment) -> Result<Value> {
        let join = self.in_process_join(r, j, a)?;
        self.prepare(&join.def).await?;
        blocking(move || bridge::add(&join)).await
    }

    async fn leave_in_process(&self, r: &Record, j: &Joined, a: cni::Attachment) -> Result<()> {
        let join = self.in_process_join(r, j, a)?;
        let ip = j.ips().first().and_then(|ip| ip.parse().ok());
        blocking(move || bridge::del(&join, ip)).await
    }

    fn in_process_join(&self, r: &Record, j: &Joined, a: cni::Attachment) -> Result<bridge::Join> {
        Ok(bridge::Join {
            def: definition_of(j)?,
            id: a.id,
            netns: a.netns,
            ifname: a.ifname,
            ipam_dir: self.ipam_dir(),
            comment: nat::container_comment(&self.inner.tag, &Self::key(&r.namespace, &r.id)),
            ports: a.port_mappings,
        })
    }

    /// Joins the container's networks if its labels ask for any; returns its spec with the
    /// network namespace and the hosts, resolv.conf and hostname files in place, or None
    /// for a container that asks for none.
    pub async fn attach(
        &self,
        ns: &Namespace,
        c: &ContainerRecord,
        spec: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        let Some(w) = wanted(c)? else {
            return Ok(None);
        };
        let mut spec: Value = serde_json::from_slice(spec)
            .map_err(|e| Error::invalid(format!("container {}: spec: {e}", c.id)))?;
        let at = own_netns_entry(&spec, &c.id)?;
        let key = Self::key(ns.as_str(), &c.id);
        let lock = self.lock_for(&key);
        let _g = lock.lock().await;
        // What an earlier task of this container left (its exit was never seen).
        self.detach_locked(ns.as_str(), &c.id, None).await?;
        let mut joined = vec![];
        for (i, name) in w.networks.iter().enumerate() {
            let net = self.settle(self.ensure(name).await?).await?;
            let in_process =
                self.inner.in_process && Definition::from_conflist(&net.conf).is_some();
            joined.push(Joined {
                network: net.name,
                ifname: format!("eth{i}"),
                conf: net.conf,
                result: None,
                in_process,
            });
        }
        let hostname = match spec["hostname"].as_str() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => files::hostname(&c.id),
        };
        let mut rec = Record {
            namespace: ns.to_string(),
            id: c.id.clone(),
            created: crate::core::metadata::now(),
            netns: self.inner.dir.join("netns").join(ns.as_str()).join(&c.id),
            hostname,
            ports: w.ports,
            joined,
        };
        let started = std::time::Instant::now();
        if let Err(e) = self.bring_up(&mut rec, &w.dns).await {
            tracing::warn!(namespace = %ns, id = c.id, error = %e, "joining the networks failed; undoing");
            if let Err(e2) = self.tear_down(&rec, false).await {
                tracing::warn!(namespace = %ns, id = c.id, error = %e2, "undoing a failed join");
            }
            return Err(e);
        }
        tracing::debug!(
            namespace = %ns,
            id = c.id,
            in_process = rec.joined.iter().all(|j| j.in_process),
            elapsed_us = started.elapsed().as_micros() as u64,
            "joined its networks"
        );
        let dir = self.files_dir(ns.as_str(), &c.id);
        joined_spec(&mut spec, at, &rec, &dir);
        Ok(Some(serde_json::to_vec(&spec)?))
    }

    async fn save(&self, r: &Record) -> Result<()> {
        let path = self.record_path(&r.namespace, &r.id);
        let bytes = serde_json::to_vec(r)?;
        blocking(move || {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)
                    .map_err(|e| Error::io(format!("create {}", d.display()), e))?;
            }
            super::write_atomic(&path, &bytes)
        })
        .await
    }

    async fn bring_up(&self, r: &mut Record, dns: &[String]) -> Result<()> {
        self.save(r).await?;
        let path = r.netns.clone();
        blocking(move || netns::create_netns(&path)).await?;
        for i in 0..r.joined.len() {
            let j = &r.joined[i];
            let a = self.cni_attachment(r, j, i == 0);
            let result = if j.in_process {
                self.join_in_process(r, j, a).await
            } else {
                let net = cni::Network::parse(j.conf.clone(), Path::new(&j.network))?;
                net.add(&self.inner.bin_dir, &a).await
            };
            let result = result.map_err(|e| {
                Error::new(e.kind(), format!("network {}: {e}", r.joined[i].network))
            })?;
            r.joined[i].result = Some(result);
            self.save(r).await?;
        }
        let ips: Vec<String> = r.joined.iter().flat_map(Joined::ips).collect();
        let dir = self.files_dir(&r.namespace, &r.id);
        let hosts = files::hosts(&r.hostname, &ips);
        let hostname = format!("{}\n", r.hostname);
        let dns = dns.to_vec();
        blocking(move || {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").ok();
            let servers = files::Dns {
                servers: &dns,
                ..Default::default()
            };
            let resolv =
                files::resolv_conf_for(&host, upstream.as_deref(), servers, files::Loopback::Drop);
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            for (f, text) in [
                ("hosts", hosts),
                ("resolv.conf", resolv),
                ("hostname", hostname),
            ] {
                let p = dir.join(f);
                std::fs::write(&p, text)
                    .map_err(|e| Error::io(format!("write {}", p.display()), e))?;
            }
            Ok(())
        })
        .await
    }

    /// DEL from every network joined (last first), then the namespace, files and record.
    /// A DEL that fails keeps the record, so the next detach (or start) tries again. With
    /// `ports_freed`, the published ports' rules went already ([`Self::free_ports`]).
    async fn tear_down(&self, r: &Record, ports_freed: bool) -> Result<()> {
        let mut failed = None;
        for (i, j) in r.joined.iter().enumerate().rev() {
            let mut a = self.cni_attachment(r, j, i == 0);
            let left = if j.in_process {
                if ports_freed {
                    a.port_mappings.clear();
                }
                self.leave_in_process(r, j, a).await
            } else {
                match cni::Network::parse(j.conf.clone(), Path::new(&j.network)) {
                    Ok(net) => net.del(&self.inner.bin_dir, &a, j.result.as_ref()).await,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = left {
                failed.get_or_insert(e);
            }
        }
        let (netns_path, dir) = (r.netns.clone(), self.files_dir(&r.namespace, &r.id));
        let record = self.record_path(&r.namespace, &r.id);
        let keep = failed.is_some();
        blocking(move || {
            netns::remove_netns(&netns_path)?;
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", dir.display()), e)),
            }
            if !keep {
                match std::fs::remove_file(&record) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("remove {}", record.display()), e)),
                }
            }
            Ok(())
        })
        .await?;
        failed.map_or(Ok(()), Err)
    }

    /// The record of `id` in `ns`. The id is checked first: ids reach here from exit events
    /// any client can forward, and one like `../../x` must not lead out of the records.
    async fn load(&self, ns: &str, id: &str) -> Result<Option<Record>> {
        crate::core::context::validate_identifier("container id", id)?;
        Namespace::parse(ns)?;
        let path = self.record_path(ns, id);
        blocking(move || match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        })
        .await
    }

    /// Leaves every network the container joined; nothing to do if it joined none. With
    /// `exited_at`, an attachment made after that exit (a newer task's) is left alone.
    ///
    /// A container on berth's own networks only is left in two steps: its published ports'
    /// rules go before this returns (another container may publish them at once); its veth
    /// (whose deletion waits for an RCU grace period, 12–30 ms), its address lease, its
    /// namespace and its record go after, in the background, under the container's lock.
    /// So a new attachment of the same container waits for them (its veth has the same
    /// name), the address is not handed out while the old veth holds it, and a daemon that
    /// stops meanwhile leaves the record for its next start to finish. A detach that finds
    /// the container leaving waits only until its ports are free.
    pub async fn detach(&self, ns: &str, id: &str, exited_at: Option<i64>) -> Result<()> {
        let key = Self::key(ns, id);
        let leaving = self.leaving(&key);
        if let Some(mut freed) = leaving {
            // Err: the leave failed before the ports went; it is done again below.
            if freed.wait_for(|f| *f).await.is_ok() {
                return Ok(());
            }
        }
        let lock = self.lock_for(&key);
        let guard = lock.clone().lock_owned().await;
        drop(lock);
        let Some(r) = self.load(ns, id).await? else {
            drop(guard);
            self.forget_lock(&key);
            return Ok(());
        };
        let at_once = exited_at.is_some_and(|t| t > 0 && t < r.created)
            || r.joined.is_empty()
            || !r.joined.iter().all(|j| j.in_process);
        if !at_once {
            return self.leave_in_background(ns, id, &key, r, guard).await;
        }
        let result = self.detach_record(ns, id, r, exited_at).await;
        drop(guard);
        self.forget_lock(&key);
        result
    }

    /// The two-step leave of [`Self::detach`]: the ports now, the rest in the background
    /// with `guard` (the container's lock) held until it is done.
    async fn leave_in_background(
        &self,
        ns: &str,
        id: &str,
        key: &str,
        r: Record,
        guard: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<()> {
        let key = key.to_string();
        let started = std::time::Instant::now();
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.set_leaving(&key, Some(rx));
        if let Err(e) = self.free_ports(&r).await {
            // Left at once instead, which tries the ports again and keeps the record if
            // that fails.
            self.set_leaving(&key, None);
            drop(tx);
            tracing::debug!(namespace = ns, id, error = %e, "freeing the ports failed; leaving at once");
            let result = self.tear_down(&r, false).await;
            drop(guard);
            self.forget_lock(&key);
            return result;
        }
        let _ = tx.send(true);
        let this = self.clone();
        let (ns, id) = (ns.to_string(), id.to_string());
        tokio::spawn(async move {
            if let Err(e) = this.tear_down(&r, true).await {
                tracing::warn!(namespace = ns, id, error = %e, "cannot leave the networks");
            } else {
                tracing::info!(
                    namespace = ns,
                    id,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "left its networks"
                );
            }
            this.set_leaving(&key, None);
            drop(guard);
            this.forget_lock(&key);
        });
        Ok(())
    }

    /// Leaves the networks on record at once (with the container's lock held).
    async fn detach_record(
        &self,
        ns: &str,
        id: &str,
        r: Record,
        exited_at: Option<i64>,
    ) -> Result<()> {
        if exited_at.is_some_and(|t| t > 0 && t < r.created) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.tear_down(&r, false).await?;
        tracing::info!(
            namespace = ns,
            id,
            elapsed_us = started.elapsed().as_micros() as u64,
            "left its networks"
        );
        Ok(())
    }

    async fn detach_locked(&self, ns: &str, id: &str, exited_at: Option<i64>) -> Result<()> {
        match self.load(ns, id).await? {
            Some(r) => self.detach_record(ns, id, r, exited_at).await,
            None => Ok(()),
        }
    }

    /// Takes away the rules of the ports the container published on berth's own networks.
    async fn free_ports(&self, r: &Record) -> Result<()> {
        if r.ports.is_empty() {
            return Ok(());
        }
        for (i, j) in r.joined.iter().enumerate() {
            let a = self.cni_attachment(r, j, i == 0);
            if a.port_mappings.is_empty() {
                continue;
            }
            let join = self.in_process_join(r, j, a)?;
            let Some(ip) = j.ips().first().and_then(|ip| ip.parse().ok()) else {
                continue;
            };
            blocking(move || nat::unpublish(&join.comment, &join.def, ip, &join.ports)).await?;
        }
        Ok(())
    }

    /// The containers leaving in the background now.
    pub(super) fn leaving_keys(&self) -> HashSet<String> {
        let leaving = self.inner.leaving.lock().unwrap_or_else(|e| e.into_inner());
        leaving.keys().cloned().collect()
    }

    /// Waits until the containers leaving in the background now have left.
    pub(super) async fn wait_left(&self) {
        for key in self.leaving_keys() {
            let lock = self.lock_for(&key);
            drop(lock.lock().await);
            drop(lock);
            self.forget_lock(&key);
        }
    }

    fn leaving(&self, key: &str) -> Option<tokio::sync::watch::Receiver<bool>> {
        let leaving = self.inner.leaving.lock().unwrap_or_else(|e| e.into_inner());
        leaving.get(key).cloned()
    }

    fn set_leaving(&self, key: &str, freed: Option<tokio::sync::watch::Receiver<bool>>) {
        let mut leaving = self.inner.leaving.lock().unwrap_or_else(|e| e.into_inner());
        match freed {
            Some(rx) => leaving.insert(key.to_string(), rx),
            None => leaving.remove(key),
        };
    }

    /// Every attachment on record, as (namespace, id).
    pub async fn attached(&self) -> Vec<(String, String)> {
        let dir = self.inner.dir.clone();
        blocking(move || {
            Ok(records(&dir)
                .into_iter()
                .map(|r| (r.namespace, r.id))
                .collect())
        })
        .await
        .unwrap_or_default()
    }

    /// The container's addresses on its networks, by network (none when it is on none).
    pub async fn addresses(&self, ns: &str, id: &str) -> Result<Vec<(String, Vec<String>)>> {
        Ok(self
            .load(ns, id)
            .await?
            .map(|r| {
                r.joined
                    .iter()
                    .map(|j| (j.network.clone(), j.ips()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Leaves the networks of each container on record whose task is no longer running:
    /// what a berthd that died before seeing an exit left behind.
    /// `running` says whether a container's task still runs (the runtime's answer).
    pub async fn recover<F, Fut>(&self, running: F)
    where
        F: Fn(Namespace, String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let running = &running;
        let stale = futures::future::join_all(self.attached().await.into_iter().map(
            |(ns, id)| async move {
                let alive = match Namespace::parse(&ns) {
                    Ok(n) => running(n, id.clone()).await,
                    Err(_) => false,
                };
                (!alive).then_some((ns, id))
            },
        ))
        .await;
        futures::future::join_all(stale.into_iter().flatten().map(|(ns, id)| async move {
            tracing::info!(
                namespace = ns,
                id,
                "container stopped while berthd was away; leaving its networks"
            );
            if let Err(e) = self.detach(&ns, &id, None).await {
                tracing::warn!(namespace = ns, id, error = %e, "cannot leave the networks");
            }
        }))
        .await;
    }

    /// Leaves a container's networks when its init process exits. A subscription the
    /// exchange drops (a burst left it too far behind) is made again: the exits missed
    /// meanwhile are caught by task delete or the next start.
    pub fn watch_exits(&self, events: &crate::core::events::Exchange) {
        let Ok(filter) = crate::core::filters::Filter::parse_all(&["topic==\"/tasks/exit\""])
        else {
            return;
        };
        let (this, events) = (self.clone(), events.clone());
        tokio::spawn(async move {
            loop {
                let mut sub = events.subscribe(filter.clone());
                while let Some(env) = sub.next().await {
                    this.on_exit(env);
                }
                tracing::warn!("exit subscription ended; subscribing again");
            }
        });
    }

    fn on_exit(&self, env: crate::core::events::Envelope) {
        let Some((container, process, exited_at)) = env.event.task_exit() else {
            return;
        };
        if container != process {
            return; // an exec'd process
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this
                .detach(&env.namespace, &container, Some(exited_at))
                .await
            {
                tracing::warn!(namespace = env.namespace, id = container, error = %e, "cannot leave the networks after exit");
            }
        });
    }
}

fn records(dir: &Path) -> Vec<Record> {
    let mut out = vec![];
    let Ok(namespaces) = std::fs::read_dir(dir.join("attachments")) else {
        return out;
    };
    for ns in namespaces.flatten() {
        let Ok(files) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.path().extension().is_some_and(|x| x == "json") {
                if let Ok(r) = std::fs::read(f.path())
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|_| ()))
                {
                    out.push(r);
                }
            }
        }
    }
    out
}

/// berth's description of a network joined in-process, from the conflist as joined.
fn definition_of(j: &Joined) -> Result<Definition> {
    Definition::from_conflist(&j.conf).ok_or_else(|| {
        Error::invalid(format!(
            "network {}: the record says berth joined it but its conflist has no berth definition",
            j.network
        ))
    })
}

/// (network name, endpoint) for every container on record.
pub(super) fn endpoints(dir: &Path) -> Vec<(String, Endpoint)> {
    records(dir)
        .into_iter()
        .flat_map(|r| {
            r.joined
                .iter()
                .enumerate()
                .map(|(i, j)| {
                    (
                        j.network.clone(),
                        Endpoint {
                            namespace: r.namespace.clone(),
                            container_id: r.id.clone(),
                            ifname: j.ifname.clone(),
                            ips: j.ips(),
                            ports: if i == 0 { r.ports.clone() } else { vec![] },
                        },
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The index of the spec's own new network namespace entry; a container that asks for
/// networks but shares the host's, or joins another, is refused.
fn own_netns_entry(spec: &Value, id: &str) -> Result<usize> {
    let entry = spec["linux"]["namespaces"]
        .as_array()
        .and_then(|a| a.iter().position(|n| n["type"] == "network"));
    let Some(at) = entry else {
        return Err(Error::invalid(format!(
            "container {id} asks for networks ({NETWORKS_LABEL}) but shares the host's network namespace"
        )));
    };
    if spec["linux"]["namespaces"][at]["path"]
        .as_str()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(Error::invalid(format!(
            "container {id} asks for networks ({NETWORKS_LABEL}) but joins another network namespace"
        )));
    }
    Ok(at)
}

/// The spec pointed at the joined network namespace, with its hostname (unless the spec
/// names one) and the hosts, resolv.conf and hostname files in `dir` (unless it mounts its
/// own).
fn joined_spec(spec: &mut Value, at: usize, rec: &Record, dir: &std::path::Path) {
    spec["linux"]["namespaces"][at]["path"] = json!(rec.netns);
    if spec["hostname"].as_str().is_none_or(str::is_empty) {
        spec["hostname"] = json!(rec.hostname);
    }
    let mut mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
    for f in ["hosts", "resolv.conf", "hostname"] {
        let dst = format!("/etc/{f}");
        if !mounts.iter().any(|m| m["destination"] == dst.as_str()) {
            mounts.push(json!({
                "destination": dst,
                "type": "bind",
                "source": dir.join(f),
                "options": ["rbind", "rprivate"],
            }));
        }
    }
    spec["mounts"] = Value::Array(mounts);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(labels: &[(&str, &str)]) -> ContainerRecord {
        ContainerRecord {
            id: "c1".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn ids_from_events_cannot_lead_out_of_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let n = Networks::open(
            &super::super::NetworkConfig::default(),
            &dir.path().join("root"),
            &dir.path().join("state"),
        )
        .unwrap();
        // A file shaped like a record, outside the records.
        let outside = dir.path().join("state/io.berth.network.v1/victim");
        std::fs::create_dir_all(&outside).unwrap();
        for id in ["../../victim", "..", "a/b", ""] {
            let e = n.detach("default", id, None).await.unwrap_err();
            assert_eq!(
                e.kind(),
                crate::core::error::Kind::InvalidArgument,
                "{id:?}"
            );
            assert!(n.addresses("default", id).await.is_err(), "{id:?}");
        }
        assert!(n.detach("../x", "c1", None).await.is_err());
        assert!(outside.exists());
        assert!(n.addresses("default", "c1").await.unwrap().is_empty());
    }

    #[test]
    fn labels_are_checked() {
        assert!(wanted(&container(&[])).unwrap().is_none());
        let w = wanted(&container(&[
            (NETWORKS_LABEL, "bridge, n2,bridge"),
            (
                PORTS_LABEL,
                r#"[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]"#,
            ),
            (DNS_LABEL, "1.1.1.1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(w.networks, ["bridge", "n2"]);
        assert_eq!(w.ports[0].host_ip, "127.0.0.1");
        assert_eq!(w.dns, ["1.1.1.1"]);
        for bad in [
            vec![(NETWORKS_LABEL, " , ")],
            vec![(NETWORKS_LABEL, "../x")],
            vec![(NETWORKS_LABEL, "b"), (PORTS_LABEL, "80:80")],
            vec![
                (NETWORKS_LABEL, "b"),
                (
                    PORTS_LABEL,
                    r#"[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]"#,
                ),
            ],
            vec![
                (NETWORKS_LABEL, "b"),
                (
                    PORTS_LABEL,
                    r#"[{"hostPort":1,"containerPort":80,"protocol":"icmp"}]"#,
                ),
            ],
            vec![(NETWORKS_LABEL, "b"), (DNS_LABEL, "dns.example")],
            // The host address goes into an iptables-restore batch: no rule text rides in.
            vec![
                (NETWORKS_LABEL, "b"),
                (
                    PORTS_LABEL,
                    r#"[{"hostPort":1,"containerPort":80,"protocol":"tcp","hostIP":"10.0.0.1/32 -j ACCEPT\n-A INPUT"}]"#,
                ),
            ],
        ] {
            let e = wanted(&container(&bad)).err().expect("refused");
            assert_eq!(
                e.kind(),
                crate::core::error::Kind::InvalidArgument,
                "{bad:?}"
            );
        }
    }
}
