//! Pod sandboxes: the pause container that holds a pod's namespaces, its network (a pinned
//! network namespace wired by CNI), and the files its containers share (hostname, hosts,
//! resolv.conf, /dev/shm).

use super::spec::{self, SandboxFiles};
use super::{
    ext_json, ext_proto, init_ref, Cri, Sandbox, SandboxMeta, CONFIG_EXT, KIND_LABEL, META_EXT,
};
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::metadata::containers::{AnyValue, ContainerRecord, Runtime};
use crate::core::metadata::Labels;
use crate::core::network::cni::{self, Attachment, PortMapping};
use crate::core::network::netns;
use crate::core::runtime::CreateTask;
use berth_proto::cri::v1 as cri;
use std::path::{Path, PathBuf};

const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n";

fn sandbox_name(m: &cri::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

fn resolv_conf(dns: Option<&cri::DnsConfig>) -> Result<String> {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for ns in &d.servers {
                s.push_str(&format!("nameserver {ns}\n"));
            }
            if !d.options.is_empty() {
                s.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            Ok(s)
        }
        _ => Ok(std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()),
    }
}

fn mount_shm(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid("NUL in path"))?;
    let (src, fs, data) = (c"shm", c"tmpfs", c"mode=1777,size=65536k");
    // SAFETY: mount with NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr() as *const libc::c_void,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            format!("mount the pod's shm at {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: umount2 on a NUL-terminated path; failure (not mounted) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Cri {
    fn host_network(config: &cri::PodSandboxConfig) -> bool {
        config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.network == cri::NamespaceMode::Node as i32)
    }

    fn host_ipc(config: &cri::PodSandboxConfig) -> bool {
        config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .is_some_and(|n| n.ipc == cri::NamespaceMode::Node as i32)
    }

    /// The pod's files live in its state directory, which others may pass through (0711
    /// down from berthd's state): a user-namespaced container's root is another host uid,
    /// and the native runtime resolves bind-mount sources from inside the container's user
    /// namespace. A pod made before they moved there keeps them under berthd's root.
    pub(super) fn sandbox_files(&self, s: &Sandbox) -> SandboxFiles {
        let old = self.sandbox_dir(&s.id);
        let dir = if old.join("hostname").exists() {
            old
        } else {
            self.sandbox_state_dir(&s.id)
        };
        SandboxFiles {
            hostname: dir.join("hostname"),
            hosts: dir.join("hosts"),
            resolv: dir.join("resolv.conf"),
            shm: (!Self::host_ipc(&s.config)).then(|| self.sandbox_state_dir(&s.id).join("shm")),
        }
    }

    fn attachment(&self, s: &Sandbox) -> Attachment {
        let m = s.config.metadata.clone().unwrap_or_default();
        Attachment {
            id: s.id.clone(),
            netns: PathBuf::from(&s.meta.netns),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                m.namespace, m.name, s.id, m.uid
            ),
            ipam_data_dir: None,
            ifname: cni::IFNAME.into(),
            port_mappings: s
                .config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| {
                    let proto =
                        match cri::Protocol::try_from(p.protocol).unwrap_or(cri::Protocol::Tcp) {
                            cri::Protocol::Tcp => "tcp",
                            cri::Protocol::Udp => "udp",
                            cri::Protocol::Sctp => "sctp",
                        };
                    PortMapping {
                        host_port: p.host_port,
                        container_port: p.container_port,
                        protocol: proto.to_string(),
                        host_ip: p.host_ip.clone(),
                    }
                })
                .collect(),
        }
    }

    pub async fn run_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        handler: String,
    ) -> Result<String> {
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("the pod sandbox config has no metadata"))?;
        if md.name.is_empty() || md.namespace.is_empty() || md.uid.is_empty() {
            return Err(Error::invalid(
                "pod sandbox metadata needs a name, a namespace and a uid",
            ));
        }
        if !handler.is_empty() && handler != "runc" && handler != "berth" {
            return Err(Error::not_found(format!(
                "runtime handler {handler:?}: this runtime has \"runc\" (the default)"
            )));
        }
        if let Some(u) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .and_then(|n| n.userns_options.as_ref())
        {
            spec::check_userns(u)?;
        }
        let name = sandbox_name(&md);
        let id = self.names.reserve("pod sandbox", &name)?;
        let lock = self.lock_for(&id);
        let _held = lock.lock().await;
        let made = self.run_sandbox_inner(&id, &name, config, handler).await;
        if let Err(e) = &made {
            tracing::warn!(sandbox = id, error = %e, "pod sandbox failed to start; cleaning up");
            self.teardown_sandbox(&id, true).await;
            self.names.release(&name);
            self.sandboxes.remove(&id);
        }
        made.map(|()| id)
    }

    async fn run_sandbox_inner(
        &self,
        id: &str,
        name: &str,
        config: cri::PodSandboxConfig,
        handler: String,
    ) -> Result<()> {
        let image = self.image_ensure(&self.cfg.sandbox_image).await?;
        let parent = self.image_unpack(&image).await?;
        let host_net = Self::host_network(&config);
        let mut sb = Sandbox {
            id: id.to_string(),
            config: config.clone(),
            meta: SandboxMeta {
                name: name.to_string(),
                created_at: crate::core::metadata::now(),
                runtime_handler: handler,
                netns: if host_net {
                    String::new()
                } else {
                    self.netns_path(id).display().to_string()
                },
                ..Default::default()
            },
        };
        // The record first: whatever follows can be found and undone after a crash.
        let mut labels: Labels = config.labels.clone().into_iter().collect();
        labels.insert(KIND_LABEL.into(), "sandbox".into());
        let mut record = ContainerRecord {
            id: id.to_string(),
            labels,
            image: image.names.first().cloned().unwrap_or_default(),
            runtime: Runtime {
                name: self.cfg.runtime.clone(),
                options: None,
            },
            snapshotter: self.cfg.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        record
            .extensions
            .insert(META_EXT.into(), ext_json(&sb.meta)?);
        record
            .extensions
            .insert(CONFIG_EXT.into(), ext_proto(&config));
        // Writable underneath (runc makes its mount points); the spec makes the root read-only.
        self.snapshots
            .prepare(
                self.ctx(),
                &self.cfg.snapshotter,
                id.to_string(),
                parent,
                Labels::new(),
            )
            .await?;
        // A placeholder spec until the real one (which needs the netns) is written below.
        record.spec = Some(AnyValue {
            type_url: crate::core::spec::SPEC_TYPE_URL.into(),
            value: b"{}".to_vec(),
        });
        self.records.create(self.ns.clone(), record).await?;
        self.sandboxes.insert(id, sb.clone());

        // The pod's files, its /dev/shm and (most pods) its network namespace: filesystem and
        // mount work, off the async workers.
        let userns_pod = spec::pod_userns(&config);
        let early_net = !host_net && !userns_pod;
        let files = self.sandbox_files(&sb);
        let (dir, netns) = (self.sandbox_state_dir(id), self.netns_path(id));
        let (hostname, dns) = (config.hostname.clone(), config.dns_config.clone());
        blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            // Passable from the CRI's state directory down (`<state>/io.berth.cri.v1/
            // sandboxes/<id>`; a umask may have made the levels above 0700).
            for d in dir.ancestors().take(3) {
                crate::core::runtime::bundle::passable_dir(d)?;
            }
            let hostname = if host_net {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            } else {
                hostname
            };
            // Readable by the pod's users, whichever host uids they are.
            let write = |p: &Path, text: &str| {
                std::fs::write(p, text)
                    .and_then(|()| {
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644))
                    })
                    .map_err(|e| Error::io(format!("write {}", p.display()), e))
            };
            write(&files.hostname, &format!("{hostname}\n"))?;
            let hosts = if host_net {
                std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| DEFAULT_HOSTS.into())
            } else {
                DEFAULT_HOSTS.to_string()
            };
            write(&files.hosts, &hosts)?;
            write(&files.resolv, &resolv_conf(dns.as_ref())?)?;
            if let Some(shm) = &files.shm {
                mount_shm(shm)?;
            }
            // A user-namespaced pod's network namespace must belong to its user namespace
            // (or sysfs cannot be mounted in it): its pause container makes it, pinned and
            // wired between create and start. Other pods get theirs now.
            if early_net {
                netns::create_netns(&netns)?;
            }
            Ok(())
        })
        .await?;
        if early_net {
            // Recorded before anything is wired, so a crash leaves what cleanup needs.
            self.persist_sandbox(&sb).await?;
        }

        let cgroup = spec::cgroup_path(
            config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.as_str())
                .unwrap_or(""),
            id,
            self.cfg.systemd_cgroup(),
        );
        let netns = (!host_net && !userns_pod).then(|| self.netns_path(id));
        let oci = spec::sandbox(&spec::SandboxSpec {
            id,
            config: &config,
            image_config: &image.config,
            netns: netns.as_deref(),
            cgroup,
            restrict_oom_score_adj: self.cfg.restrict_oom_score_adj,
        })?;
        tracing::debug!(sandbox = id, spec = %oci, "pause container spec");
        let mut rec = ContainerRecord {
            id: id.to_string(),
            spec: Some(AnyValue {
                type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&oci)?,
            }),
            ..Default::default()
        };
        rec.runtime.name = self.cfg.runtime.clone();
        self.records
            .update(self.ns.clone(), rec, vec!["spec".into()])
            .await?;
        // The pause container is created while CNI wires its (already pinned) namespace:
        // neither waits for the other.
        let create = self.tasks.create(
            self.ns.clone(),
            CreateTask {
                container_id: id.to_string(),
                options: self.runtime_options(),
                ..Default::default()
            },
        );
        let (pid, wired) = if early_net {
            let (pid, wired) = tokio::join!(create, self.network_up(&mut sb));
            (pid, wired)
        } else {
            (create.await, Ok(()))
        };
        let pid = pid?;
        wired?;
        if !host_net && userns_pod {
            let (ns, at) = (format!("/proc/{pid}/ns/net"), self.netns_path(id));
            blocking(move || netns::pin_netns(&ns, &at)).await?;
            self.network_up(&mut sb).await?;
        }
        self.tasks.start(self.ns.clone(), init_ref(id)).await?;
        sb.meta.pid = pid;
        self.persist_sandbox(&sb).await?;
        self.watch_sandbox(id);
        Ok(())
    }

    /// CNI ADD into the sandbox's pinned network namespace; the result is recorded first
    /// and after, so a crash in between leaves what DEL needs.
    async fn network_up(&self, sb: &mut Sandbox) -> Result<()> {
        self.persist_sandbox(sb).await?;
        let net = cni::load(&self.cfg.cni_conf_dir)?;
        let result = net.add(&self.cfg.cni_bin_dir, &self.attachment(sb)).await?;
        sb.meta.ips = cni::ips_on(&result, cni::IFNAME);
        sb.meta.cni_result = Some(result);
        sb.meta.network_ready = true;
        self.persist_sandbox(sb).await
    }

    /// runc options for every CRI task: the low-level runtime, and the systemd cgroup
    /// driver when configured.
    pub(super) fn runtime_options(&self) -> Option<AnyValue> {
        if !self.cfg.systemd_cgroup() && self.cfg.runtime_binary.is_empty() {
            return None;
        }
        use prost::Message;
        let o = berth_proto::containerd::runc::v1::Options {
            systemd_cgroup: self.cfg.systemd_cgroup(),
            binary_name: self.cfg.runtime_binary.clone(),
            ..Default::default()
        };
        Some(AnyValue {
            type_url: "containerd.runc.v1.Options".into(),
            value: o.encode_to_vec(),
        })
    }

    /// Waits for the pause process to end, then marks the sandbox not ready.
    pub(super) fn watch_sandbox(&self, id: &str) {
        let this = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if this
                .tasks
                .wait(this.ns.clone(), init_ref(&id))
                .await
                .is_ok()
            {
                let lock = this.lock_for(&id);
                let _held = lock.lock().await;
                this.sandbox_exited(&id).await;
            }
        });
    }

    /// The pause process is gone: its task is deleted (the shim goes) and the pod is not
    /// ready; its network stays until StopPodSandbox.
    pub(super) async fn sandbox_exited(&self, id: &str) {
        match self.tasks.delete(self.ns.clone(), id.to_string()).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => tracing::warn!(sandbox = id, error = %e, "cannot delete the pause task"),
        }
        let Ok(mut sb) = self.sandbox(id) else { return };
        if sb.meta.pid != 0 {
            sb.meta.pid = 0;
            if let Err(e) = self.persist_sandbox(&sb).await {
                tracing::warn!(sandbox = id, error = %e, "cannot record the sandbox's exit");
            }
        }
    }

    pub fn sandbox_ready(&self, s: &Sandbox) -> bool {
        !s.meta.stopped && s.meta.pid != 0
    }

    /// Stops every container of the pod, the pause process, and the network. Unknown ids
    /// are not errors.
    pub async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.sandbox(id) {
            Ok(s) => s,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for c in self.members(&sb.id) {
            self.stop_container(&c.id, 0).await?;
        }
        let lock = self.lock_for(&sb.id);
        let _held = lock.lock().await;
        let before = self.sandbox(&sb.id)?;
        // The pause process goes while CNI unwires its namespace.
        let kill = async {
            if before.meta.pid != 0 {
                match self
                    .tasks
                    .kill(
                        self.ns.clone(),
                        init_ref(&before.id),
                        libc::SIGKILL as u32,
                        true,
                    )
                    .await
                {
                    Ok(()) => {
                        let _ = self.tasks.wait(self.ns.clone(), init_ref(&before.id)).await;
                    }
                    Err(e) if e.kind() == Kind::NotFound => {}
                    Err(e) => tracing::debug!(sandbox = before.id, error = %e, "kill pause"),
                }
            }
            self.sandbox_exited(&before.id).await;
        };
        // DEL also when ADD may have been cut short (berthd died mid-ADD): CNI's DEL is
        // idempotent, and an address half-allocated is released.
        let half_wired = !before.meta.netns.is_empty() && !before.meta.stopped;
        let unwire = async {
            if before.meta.network_ready || half_wired {
                self.network_down(&before).await
            } else {
                Ok(())
            }
        };
        let ((), unwired) = tokio::join!(kill, unwire);
        unwired?;
        let mut sb = self.sandbox(&before.id)?;
        sb.meta.network_ready = false;
        let (netns, shm) = (sb.meta.netns.clone(), self.sandbox_files(&sb).shm);
        blocking(move || {
            if !netns.is_empty() {
                netns::remove_netns(Path::new(&netns))?;
            }
            if let Some(shm) = shm {
                unmount(&shm);
            }
            Ok(())
        })
        .await?;
        sb.meta.stopped = true;
        self.persist_sandbox(&sb).await?;
        Ok(())
    }

    async fn network_down(&self, sb: &Sandbox) -> Result<()> {
        let net = match cni::load(&self.cfg.cni_conf_dir) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(sandbox = sb.id, error = %e, "no CNI configuration to tear the pod's network down with");
                return Ok(());
            }
        };
        net.del(
            &self.cfg.cni_bin_dir,
            &self.attachment(sb),
            sb.meta.cni_result.as_ref(),
        )
        .await
    }

    /// Stops the sandbox if needed, removes its containers and everything it owns.
    pub async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let sb = match self.sandbox(id) {
            Ok(s) => s,
            Err(e) if e.kind() == Kind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_sandbox(&sb.id).await?;
        for c in self.members(&sb.id) {
            self.remove_container(&c.id).await?;
        }
        let lock = self.lock_for(&sb.id);
        let _held = lock.lock().await;
        self.teardown_sandbox(&sb.id, false).await;
        self.sandboxes.remove(&sb.id);
        self.names.release(&sb.meta.name);
        Ok(())
    }

    /// Removes whatever of a sandbox exists: task, network, netns, shm, files, snapshot,
    /// record. Used by Remove and to undo a failed Run.
    async fn teardown_sandbox(&self, id: &str, undo_network: bool) {
        let _ = self
            .tasks
            .kill(self.ns.clone(), init_ref(id), libc::SIGKILL as u32, true)
            .await;
        let _ = self.tasks.delete(self.ns.clone(), id.to_string()).await;
        if undo_network {
            if let Ok(sb) = self.sandbox(id) {
                if sb.meta.network_ready || !sb.meta.netns.is_empty() {
                    let _ = self.network_down(&sb).await;
                }
            }
        }
        let (netns, state, dir) = (
            self.netns_path(id),
            self.sandbox_state_dir(id),
            self.sandbox_dir(id),
        );
        let _ = blocking(move || {
            let _ = netns::remove_netns(&netns);
            unmount(&state.join("shm"));
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_dir_all(&dir);
            Ok(())
        })
        .await;
        match self
            .snapshots
            .remove(self.ns.clone(), &self.cfg.snapshotter, id.to_string())
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => {
                tracing::warn!(sandbox = id, error = %e, "cannot remove the sandbox snapshot")
            }
        }
        match self.records.delete(self.ns.clone(), id.to_string()).await {
            Ok(_) => {}
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => tracing::warn!(sandbox = id, error = %e, "cannot remove the sandbox record"),
        }
        self.gc.schedule();
    }

    pub fn sandbox_status(&self, s: &Sandbox) -> cri::PodSandboxStatus {
        let ns_opts = s
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|sc| sc.namespace_options.clone());
        let mut ips = s.meta.ips.iter();
        cri::PodSandboxStatus {
            id: s.id.clone(),
            metadata: s.config.metadata.clone(),
            state: if self.sandbox_ready(s) {
                cri::PodSandboxState::SandboxReady as i32
            } else {
                cri::PodSandboxState::SandboxNotready as i32
            },
            created_at: s.meta.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace { options: ns_opts }),
            }),
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
            runtime_handler: s.meta.runtime_handler.clone(),
        }
    }

    pub fn sandbox_list(&self, f: Option<&cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let mut out: Vec<cri::PodSandbox> = self
            .sandboxes
            .filter(|_| true)
            .iter()
            .filter(|s| {
                s.meta.pid != 0
                    || s.meta.stopped
                    || !s.meta.netns.is_empty()
                    || s.meta.created_at > 0
            })
            .map(|s| {
                let status = self.sandbox_status(s);
                cri::PodSandbox {
                    id: s.id.clone(),
                    metadata: s.config.metadata.clone(),
                    state: status.state,
                    created_at: s.meta.created_at,
                    labels: s.config.labels.clone(),
                    annotations: s.config.annotations.clone(),
                    runtime_handler: s.meta.runtime_handler.clone(),
                }
            })
            .filter(|p| match f {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || p.id.starts_with(&f.id))
                        && f.state.as_ref().is_none_or(|s| s.state == p.state)
                        && super::labels_match(&p.labels, &f.label_selector)
                }
            })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.created_at));
        out
    }
}
