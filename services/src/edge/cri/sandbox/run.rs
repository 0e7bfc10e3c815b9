//! RunPodSandbox: the pause container, the pod's files, /dev/shm and network namespace,
//! wired by CNI; undone when any step fails.

use super::*;

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

    pub(in crate::edge::cri) async fn run_sandbox_inner(
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
