//! UpdateContainerResources: new limits for the task and the record.

use super::*;
use crate::edge::cri::nri::Happened;

impl Cri {
    /// NRI plugins have their say first (and hear of the result after).
    pub async fn update_container_resources(
        &self,
        id: &str,
        r: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let c = self.container(id)?;
        let r = self.nri_update(&c, r).await?;
        self.update_container_resources_as_asked(&c.id, &r).await?;
        if let Ok(c) = self.container(&c.id) {
            self.nri_container_event(&c, Happened::Updated).await;
        }
        Ok(())
    }

    /// Applies `r` as given (also plugins' own updates, which NRI does not relay back).
    pub(in crate::edge::cri) async fn update_container_resources_as_asked(
        &self,
        id: &str,
        r: &cri::LinuxContainerResources,
    ) -> Result<()> {
        let c = self.container(id)?;
        let lock = self.lock_for(&c.id);
        let _held = lock.lock().await;
        let mut c = self.container(&c.id)?;
        let resources = spec::update_resources(r);
        // oom_score_adj is the process's, not the cgroup's: 0 is "not given" here (the
        // kubelet never asks for 0), as berthd may not go below its own when restricted.
        let oom = (r.oom_score_adj != 0).then(|| {
            let own = self
                .cfg
                .restrict_oom_score_adj
                .then(spec::own_oom_score_adj);
            r.oom_score_adj.max(own.unwrap_or(i64::MIN))
        });
        // The stored spec and config change too, so a restart keeps the new limits.
        let rec = self.records.get(self.ns.clone(), c.id.clone()).await?;
        if let Some(s) = &rec.spec {
            let mut v: serde_json::Value = serde_json::from_slice(&s.value)?;
            let devices = v["linux"]["resources"]["devices"].clone();
            v["linux"]["resources"] = resources.clone();
            v["linux"]["resources"]["devices"] = devices;
            if let Some(oom) = oom {
                v["process"]["oomScoreAdj"] = serde_json::json!(oom);
            }
            let update = ContainerRecord {
                id: c.id.clone(),
                spec: Some(AnyValue {
                    type_url: crate::core::spec::SPEC_TYPE_URL.into(),
                    value: serde_json::to_vec(&v)?,
                }),
                ..Default::default()
            };
            self.records
                .update(self.ns.clone(), update, vec!["spec".into()])
                .await?;
        }
        if c.meta.started_at != 0 && c.meta.finished_at == 0 {
            self.tasks
                .update(
                    self.ns.clone(),
                    crate::core::runtime::UpdateTask {
                        container_id: c.id.clone(),
                        resources: Some(AnyValue {
                            type_url:
                                "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                                    .into(),
                            value: serde_json::to_vec(&resources)?,
                        }),
                        annotations: Labels::new(),
                    },
                )
                .await?;
            if let (Some(oom), pid @ 1..) = (oom, c.meta.pid) {
                let path = format!("/proc/{pid}/oom_score_adj");
                blocking(move || {
                    std::fs::write(&path, oom.to_string())
                        .map_err(|e| Error::io(format!("write {oom} to {path}"), e))
                })
                .await?;
            }
        }
        if let Some(l) = c.config.linux.as_mut() {
            l.resources = Some(r.clone());
        } else {
            c.config.linux = Some(cri::LinuxContainerConfig {
                resources: Some(r.clone()),
                security_context: None,
            });
        }
        let mut update = ContainerRecord {
            id: c.id.clone(),
            ..Default::default()
        };
        update
            .extensions
            .insert(CONFIG_EXT.into(), ext_proto(&c.config));
        self.records
            .update(
                self.ns.clone(),
                update,
                vec![format!("extensions.{CONFIG_EXT}")],
            )
            .await?;
        self.containers.insert(&c.id.clone(), c);
        Ok(())
    }
}
