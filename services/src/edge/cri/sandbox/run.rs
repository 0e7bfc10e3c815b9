//! RunPodSandbox: the pause container, the pod's files, /dev/shm and network namespace,
//! wired by CNI; undone when any step fails.

use super::*;
use crate::edge::cri::config::Handler;
use crate::edge::cri::create::NewRecord;
use crate::edge::cri::image::ImageInfo;

impl Cri {
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
        let handler = self.runtime_handler(&handler)?;
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
        let name_ref = name.as_str();
        self.create_reserved(
            "pod sandbox",
            &name,
            true,
            async move |id: &str| self.run_sandbox_inner(id, name_ref, config, handler).await,
            async |id: &str, e: &Error| {
                tracing::warn!(sandbox = id, error = %e, "pod sandbox failed to start; cleaning up");
                self.teardown_sandbox(id, true).await;
                self.sandboxes.remove(id);
            },
        )
        .await
        .inspect(|id| {
            if let Ok(sb) = self.sandbox(id) {
                self.sandbox_event(&sb, cri::ContainerEventType::ContainerCreatedEvent);
                self.sandbox_event(&sb, cri::ContainerEventType::ContainerStartedEvent);
            }
        })
    }

    /// RunPodSandbox's steps, on a reserved name and id.
    async fn run_sandbox_inner(
        &self,
        id: &str,
        name: &str,
        config: cri::PodSandboxConfig,
        handler: Handler,
    ) -> Result<()> {
        let image = self
            .image_ensure(&self.cfg.sandbox_image, &handler.snapshotter)
            .await?;
        let host_net = Self::host_network(&config);
        let userns_pod = spec::pod_userns(&config);
        // A user-namespaced pod's network namespace must belong to its user namespace (or
        // sysfs cannot be mounted in it): its pause container makes it, pinned and wired
        // between create and start. Other pods get theirs with their files.
        let early_net = !host_net && !userns_pod;
        let mut sb = Sandbox {
            id: id.to_string(),
            config,
            meta: SandboxMeta {
                name: name.to_string(),
                created_at: crate::core::metadata::now(),
                runtime_handler: handler.name.clone(),
                snapshotter: handler.snapshotter.clone(),
                netns: if host_net {
                    String::new()
                } else {
                    self.netns_path(id).display().to_string()
                },
                ..Default::default()
            },
        };
        self.create_sandbox_record(&sb, &image, &handler).await?;
        self.write_pod_files(&sb, host_net, early_net).await?;
        if early_net {
            // Recorded before anything is wired, so a crash leaves what cleanup needs.
            self.persist_sandbox(&sb).await?;
        }
        let netns = early_net.then(|| self.netns_path(id));
        self.write_sandbox_spec(&sb, &image, netns.as_deref())
            .await?;
        self.start_pause(&mut sb, early_net, !host_net && userns_pod)
            .await?;
        self.nri_run_pod(&sb).await
    }

    /// The record first (with a placeholder spec until the real one, which needs the netns,
    /// is written): whatever follows can be found and undone after a crash.
    async fn create_sandbox_record(
        &self,
        sb: &Sandbox,
        image: &ImageInfo,
        handler: &Handler,
    ) -> Result<()> {
        let snapshotter = &handler.snapshotter;
        let parent = self.image_unpack(image, snapshotter).await?;
        let mut record = self.new_record(
            &sb.id,
            NewRecord {
                kind: "sandbox",
                labels: sb.config.labels.clone().into_iter().collect(),
                image,
                handler,
                meta: &sb.meta,
                config: &sb.config,
            },
        )?;
        // Writable underneath (runc makes its mount points); the spec makes the root read-only.
        self.snapshots
            .prepare(
                self.ctx(),
                snapshotter,
                sb.id.clone(),
                parent,
                Labels::new(),
            )
            .await?;
        record.spec = Some(AnyValue {
            type_url: crate::core::spec::SPEC_TYPE_URL.into(),
            value: b"{}".to_vec(),
        });
        if let Err(e) = self.records.create(self.ns.clone(), record).await {
            // Not listed yet, so the teardown that follows would not know its snapshotter.
            let _ = self
                .snapshots
                .remove(self.ns.clone(), snapshotter, sb.id.clone())
                .await;
            return Err(e);
        }
        self.sandboxes.insert(&sb.id, sb.clone());
        Ok(())
    }

    /// The pod's files, its /dev/shm and (with `early_net`) its network namespace:
    /// filesystem and mount work, off the async workers.
    async fn write_pod_files(&self, sb: &Sandbox, host_net: bool, early_net: bool) -> Result<()> {
        let files = self.sandbox_files(sb);
        let (dir, netns) = (self.sandbox_state_dir(&sb.id), self.netns_path(&sb.id));
        let (hostname, dns) = (sb.config.hostname.clone(), sb.config.dns_config.clone());
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
            if early_net {
                netns::create_netns(&netns)?;
            }
            Ok(())
        })
        .await
    }

    /// The pause container's OCI spec, in its record.
    async fn write_sandbox_spec(
        &self,
        sb: &Sandbox,
        image: &ImageInfo,
        netns: Option<&Path>,
    ) -> Result<()> {
        let cgroup = spec::cgroup_path(
            sb.config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.as_str())
                .unwrap_or(""),
            &sb.id,
            self.cfg.systemd_cgroup(),
        );
        let oci = spec::sandbox(&spec::SandboxSpec {
            id: &sb.id,
            config: &sb.config,
            image_config: &image.config,
            netns,
            cgroup,
            restrict_oom_score_adj: self.cfg.restrict_oom_score_adj,
        })?;
        tracing::debug!(sandbox = sb.id, spec = %oci, "pause container spec");
        let mut rec = ContainerRecord {
            id: sb.id.clone(),
            spec: Some(AnyValue {
                type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&oci)?,
            }),
            ..Default::default()
        };
        rec.runtime.name = self.pod_handler(sb).runtime_type;
        self.records
            .update(self.ns.clone(), rec, vec!["spec".into()])
            .await?;
        Ok(())
    }

    /// The pause task created and started, the network wired: alongside the create when
    /// the namespace is already pinned (`early_net`), into the pause container's own when it
    /// makes one (`late_net`, a user-namespaced pod).
    async fn start_pause(&self, sb: &mut Sandbox, early_net: bool, late_net: bool) -> Result<()> {
        let id = sb.id.clone();
        let create = self.tasks.create(
            self.ns.clone(),
            CreateTask {
                container_id: id.clone(),
                options: self.runtime_options(sb),
                ..Default::default()
            },
        );
        let (pid, wired) = if early_net {
            let (pid, wired) = tokio::join!(create, self.network_up(sb));
            (pid, wired)
        } else {
            (create.await, Ok(()))
        };
        let pid = pid?;
        wired?;
        if late_net {
            let (ns, at) = (format!("/proc/{pid}/ns/net"), self.netns_path(&id));
            blocking(move || netns::pin_netns(&ns, &at)).await?;
            self.network_up(sb).await?;
        }
        self.tasks.start(self.ns.clone(), init_ref(&id)).await?;
        sb.meta.pid = pid;
        self.persist_sandbox(sb).await?;
        self.watch_sandbox(&id);
        Ok(())
    }

    /// CNI ADD into the sandbox's pinned network namespace; the result is recorded first
    /// and after, so a crash in between leaves what DEL needs.
    pub(in crate::edge::cri) async fn network_up(&self, sb: &mut Sandbox) -> Result<()> {
        self.persist_sandbox(sb).await?;
        let net = cni::load(&self.cfg.cni_conf_dir)?;
        let result = net.add(&self.cfg.cni_bin_dir, &self.attachment(sb)).await?;
        sb.meta.ips = cni::ips_on(&result, cni::IFNAME);
        sb.meta.cni_result = Some(result);
        sb.meta.network_ready = true;
        self.persist_sandbox(sb).await
    }
}
