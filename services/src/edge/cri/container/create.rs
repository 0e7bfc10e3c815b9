//! CreateContainer: the container's snapshot, user, OCI spec, FIFOs and record, undone
//! when any step fails.

use super::*;

impl Cri {
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        let sb = self.sandbox(sandbox_id)?;
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid("the container config has no metadata"))?;
        if md.name.is_empty() {
            return Err(Error::invalid("the container config needs a name"));
        }
        let image_ref = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::invalid("the container config names no image"))?;
        let image = self.image_find(&image_ref).await?.ok_or_else(|| {
            Error::not_found(format!("image {image_ref:?} is not present: pull it first"))
        })?;
        let pm = sb.config.metadata.clone().unwrap_or_default();
        let name = format!(
            "{}_{}_{}_{}_{}",
            md.name, pm.name, pm.namespace, pm.uid, md.attempt
        );
        let id = self.names.reserve("container", &name)?;
        let made = self
            .create_container_inner(&id, &name, &sb, config, image, image_ref)
            .await;
        if made.is_err() {
            let _ = self
                .snapshots
                .remove(self.ns.clone(), &self.cfg.snapshotter, id.clone())
                .await;
            let _ = self.records.delete(self.ns.clone(), id.clone()).await;
            let _ = std::fs::remove_dir_all(self.container_state_dir(&id));
            self.names.release(&name);
            self.containers.remove(&id);
        }
        made.map(|()| id)
    }

    pub(in crate::edge::cri) async fn create_container_inner(
        &self,
        id: &str,
        name: &str,
        sb: &crate::edge::cri::Sandbox,
        config: cri::ContainerConfig,
        image: crate::edge::cri::image::ImageInfo,
        image_ref: String,
    ) -> Result<()> {
        let parent = self.image_unpack(&image).await?;
        let mounts = self
            .snapshots
            .prepare(
                self.ctx(),
                &self.cfg.snapshotter,
                id.to_string(),
                parent,
                Labels::new(),
            )
            .await?;
        let user = self.resolve_user(&config, &image, &mounts).await?;
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        let target_pid = match sc.namespace_options.as_ref() {
            Some(n) if n.pid == cri::NamespaceMode::Target as i32 => {
                let t = self.container(&n.target_id)?;
                (t.meta.pid != 0).then_some(t.meta.pid)
            }
            _ => None,
        };
        let files = self.sandbox_files(sb);
        let parent_cg = sb
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.as_str())
            .unwrap_or("");
        let netns = (!sb.meta.netns.is_empty()).then(|| PathBuf::from(&sb.meta.netns));
        let oci = spec::container(&spec::ContainerSpec {
            id,
            sandbox_id: &sb.id,
            config: &config,
            sandbox: &sb.config,
            image_config: &image.config,
            sandbox_pid: sb.meta.pid,
            netns: netns.as_deref(),
            target_pid,
            files: &files,
            user: user.clone(),
            cgroup: spec::cgroup_path(parent_cg, id, self.cfg.systemd_cgroup()),
            restrict_oom_score_adj: self.cfg.restrict_oom_score_adj,
        })?;
        let log_path = match (&sb.config.log_directory, &config.log_path) {
            (d, p) if !d.is_empty() && !p.is_empty() => Path::new(d).join(p).display().to_string(),
            _ => String::new(),
        };
        let meta = ContainerMeta {
            name: name.to_string(),
            sandbox_id: sb.id.clone(),
            image_ref,
            image_id: image.id.clone(),
            log_path,
            created_at: crate::core::metadata::now(),
            uid: user.0,
            gid: user.1,
            groups: user.2,
            stop_signal: image.config["config"]["StopSignal"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            ..Default::default()
        };
        let (dir, stdin) = (self.container_state_dir(id), config.stdin);
        blocking(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            for f in ["stdout", "stderr"] {
                mkfifo(&dir.join(f))?;
            }
            if stdin {
                mkfifo(&dir.join("stdin"))?;
            }
            Ok(())
        })
        .await?;
        let mut labels: Labels = config.labels.clone().into_iter().collect();
        labels.insert(KIND_LABEL.into(), "container".into());
        labels.insert("io.kubernetes.sandbox.id".into(), sb.id.clone());
        let mut record = ContainerRecord {
            id: id.to_string(),
            labels,
            image: image.names.first().cloned().unwrap_or_default(),
            runtime: Runtime {
                name: self.cfg.runtime.clone(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                value: serde_json::to_vec(&oci)?,
            }),
            snapshotter: self.cfg.snapshotter.clone(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        record.extensions.insert(META_EXT.into(), ext_json(&meta)?);
        record
            .extensions
            .insert(CONFIG_EXT.into(), ext_proto(&config));
        self.records.create(self.ns.clone(), record).await?;
        let c = Container {
            id: id.to_string(),
            config,
            meta,
        };
        self.containers.insert(id, c.clone());
        self.event(&c, cri::ContainerEventType::ContainerCreatedEvent);
        Ok(())
    }

    /// (uid, gid, supplementary groups) from run_as_user/run_as_group/run_as_username or the
    /// image's User, resolved in the container's rootfs; groups per the policy.
    pub(in crate::edge::cri) async fn resolve_user(
        &self,
        config: &cri::ContainerConfig,
        image: &crate::edge::cri::image::ImageInfo,
        mounts: &[berth_snapshotters::Mount],
    ) -> Result<(i64, i64, Vec<i64>)> {
        let sc = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(Error::invalid(
                "run_as_group needs run_as_user or run_as_username",
            ));
        }
        let image_user = image.config["config"]["User"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let user = if let Some(u) = &sc.run_as_user {
            u.value.to_string()
        } else if !sc.run_as_username.is_empty() {
            sc.run_as_username.clone()
        } else {
            image_user.split(':').next().unwrap_or("").to_string()
        };
        let group = match &sc.run_as_group {
            Some(g) => Some(g.value.to_string()),
            None if sc.run_as_user.is_none() && sc.run_as_username.is_empty() => {
                image_user.split_once(':').map(|(_, g)| g.to_string())
            }
            None => None,
        };
        let spec_user = match (&group, user.is_empty()) {
            (Some(g), true) => format!("0:{g}"),
            (Some(g), false) => format!("{user}:{g}"),
            (None, true) => "0".to_string(),
            (None, false) => user.clone(),
        };
        let m = mounts.to_vec();
        let (uid, gid, mut groups) = blocking(move || {
            let mounted = berth_snapshotters::mount::TempMount::new(&m)?;
            crate::core::spec::resolve_user(mounted.path(), &spec_user)
        })
        .await?;
        let strict = sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
        if strict {
            groups = vec![gid];
        }
        let mut out: Vec<i64> = groups.into_iter().map(i64::from).collect();
        for g in &sc.supplemental_groups {
            if !out.contains(g) {
                out.push(*g);
            }
        }
        Ok((uid as i64, gid as i64, out))
    }
}
