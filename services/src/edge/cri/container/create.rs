//! CreateContainer: the container's snapshot, user, OCI spec, FIFOs and record, undone
//! when any step fails.

use super::*;
use crate::edge::cri::create::NewRecord;
use crate::edge::cri::image::ImageInfo;
use crate::edge::cri::nri::Happened;
use crate::edge::cri::Sandbox;

/// The container's state directory and its output FIFOs (and stdin's, with `stdin`).
async fn make_fifos(dir: PathBuf, stdin: bool) -> Result<()> {
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
    .await
}

impl Cri {
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        mut config: cri::ContainerConfig,
    ) -> Result<String> {
        let sb = self.sandbox(sandbox_id)?;
        // A stopped pod is never reused; one still announced to NRI plugins is not ready.
        if sb.meta.stopped || self.nri_hidden(&sb.id) {
            return Err(Error::precondition(format!(
                "pod sandbox {} is not ready",
                sb.id
            )));
        }
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
        // A checkpoint to restore: the container is made of its base image.
        let (restore, image_ref, found) =
            self.checkpoint_named(&sb, &mut config, image_ref).await?;
        let image = found.ok_or_else(|| {
            Error::not_found(format!("image {image_ref:?} is not present: pull it first"))
        })?;
        let pm = sb.config.metadata.clone().unwrap_or_default();
        let name = format!(
            "{}_{}_{}_{}_{}",
            md.name, pm.name, pm.namespace, pm.uid, md.attempt
        );
        let name_ref = name.as_str();
        let mounts = config.mounts.clone();
        let snapshotter = self.pod_snapshotter(&sb);
        self.create_reserved(
            "container",
            &name,
            false,
            async move |id: &str| {
                self.create_container_inner(id, name_ref, &sb, config, image, image_ref)
                    .await?;
                match restore {
                    Some(checkpoint) => self.prepare_restore(id, &sb, checkpoint).await,
                    None => Ok(()),
                }
            },
            async |id: &str, _: &Error| {
                let _ = self.unmount_image_volumes(id, &mounts, &snapshotter).await;
                let _ = self
                    .snapshots
                    .remove(self.ns.clone(), &snapshotter, id.to_string())
                    .await;
                let _ = self.records.delete(self.ns.clone(), id.to_string()).await;
                let _ = std::fs::remove_dir_all(self.container_state_dir(id));
                self.containers.remove(id);
            },
        )
        .await
    }

    /// CreateContainer's steps, on a reserved name and id.
    async fn create_container_inner(
        &self,
        id: &str,
        name: &str,
        sb: &Sandbox,
        mut config: cri::ContainerConfig,
        image: ImageInfo,
        image_ref: String,
    ) -> Result<()> {
        let handler = self.pod_handler(sb);
        let parent = self.image_unpack(&image, &handler.snapshotter).await?;
        let mounts = self
            .snapshots
            .prepare(
                self.ctx(),
                &handler.snapshotter,
                id.to_string(),
                parent,
                Labels::new(),
            )
            .await?;
        let user = self.resolve_user(&config, &image, &mounts).await?;
        let image_volumes = self.mount_image_volumes(id, sb, &mut config).await?;
        let mut oci =
            self.container_oci_spec(id, sb, &config, &image, user.clone(), &image_volumes)?;
        // Plugins adjust the spec; the gate stays held until the container is listed, so a
        // plugin joining meanwhile sees it in Synchronize or not at all (and hears of it).
        let nri_hold = match self.nri() {
            Some(n) => Some(n.hold().await),
            None => None,
        };
        let mut nri_updates = vec![];
        if let Some(held) = &nri_hold {
            let ctr = self.nri_container_from_spec(id, &sb.id, &config, &oci);
            let created = held.create_container(&self.nri_pod(sb), &ctr).await?;
            crate::edge::nri::adjust::apply_all(&mut oci, &created.adjustments)?;
            nri_updates = created.updates;
        }
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
        make_fifos(self.container_state_dir(id), config.stdin).await?;
        let mut labels: Labels = config.labels.clone().into_iter().collect();
        labels.insert("io.kubernetes.sandbox.id".into(), sb.id.clone());
        let mut record = self.new_record(
            id,
            NewRecord {
                kind: "container",
                labels,
                image: &image,
                handler: &handler,
                meta: &meta,
                config: &config,
            },
        )?;
        record.spec = Some(AnyValue {
            type_url: crate::core::spec::SPEC_TYPE_URL.into(),
            value: serde_json::to_vec(&oci)?,
        });
        self.records.create(self.ns.clone(), record).await?;
        let c = Container {
            id: id.to_string(),
            config,
            meta,
        };
        self.containers.insert(id, c.clone());
        self.event(&c, cri::ContainerEventType::ContainerCreatedEvent);
        if nri_hold.is_some() {
            drop(nri_hold);
            self.nri_container_event(&c, Happened::Created).await;
            self.nri_apply_updates(nri_updates).await;
        }
        Ok(())
    }

    /// The container's OCI spec: in its pod's namespaces (or a target container's PID
    /// namespace), with the pod's files, as `user`.
    fn container_oci_spec(
        &self,
        id: &str,
        sb: &Sandbox,
        config: &cri::ContainerConfig,
        image: &ImageInfo,
        user: (i64, i64, Vec<i64>),
        image_volumes: &crate::edge::cri::image_volume::Sources,
    ) -> Result<serde_json::Value> {
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
        spec::container(&spec::ContainerSpec {
            id,
            sandbox_id: &sb.id,
            config,
            sandbox: &sb.config,
            image_config: &image.config,
            sandbox_pid: sb.meta.pid,
            netns: netns.as_deref(),
            target_pid,
            files: &files,
            user,
            cgroup: spec::cgroup_path(parent_cg, id, self.cfg.systemd_cgroup()),
            restrict_oom_score_adj: self.cfg.restrict_oom_score_adj,
            image_volumes,
        })
    }

    /// (uid, gid, supplementary groups) from run_as_user/run_as_group/run_as_username or the
    /// image's User, resolved in the container's rootfs; groups per the policy.
    pub(in crate::edge::cri) async fn resolve_user(
        &self,
        config: &cri::ContainerConfig,
        image: &ImageInfo,
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
        let (uid, gid, mut groups) =
            blocking(move || crate::core::spec::resolve_user_in_mounts(&m, &spec_user)).await?;
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
