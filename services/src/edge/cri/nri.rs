//! The CRI's side of NRI: its pods and containers told in NRI's terms, the lifecycle
//! relayed from the verbs (each a no-op while `[nri]` is off), plugins' resource updates
//! applied through UpdateContainerResources, and the [`Host`] a joining plugin is
//! synchronized from.

use super::{Container, Cri, Sandbox};
use crate::core::error::Result;
use crate::core::spec::strings;
use crate::edge::nri::{Host, Nri, NriConfig};
use berth_proto::cri::v1 as cri;
use berth_proto::nri as api;
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

/// A lifecycle step NRI is told of once it has happened.
#[derive(Clone, Copy)]
pub(super) enum Happened {
    Created,
    Started,
    Updated,
    Stopped,
    Removed,
}

impl Cri {
    /// Starts hosting NRI plugins (called once, at berthd's start, when `[nri] enable`).
    pub fn start_nri(&self, cfg: NriConfig) -> Result<()> {
        let host: Arc<dyn Host> = Arc::new(self.clone());
        let nri = Nri::start(cfg, self.version.clone(), host)?;
        let _ = self.nri.set(nri);
        Ok(())
    }

    pub(super) fn nri(&self) -> Option<&Nri> {
        self.nri.get()
    }

    /// Whether pod `id` is still being announced to plugins: not listed, not ready.
    pub(super) fn nri_hidden(&self, id: &str) -> bool {
        self.nri().is_some_and(|n| n.hidden(id))
    }

    pub(super) fn nri_pod(&self, s: &Sandbox) -> api::PodSandbox {
        let md = s.config.metadata.clone().unwrap_or_default();
        let linux = s.config.linux.as_ref();
        let cgroup_parent = linux.map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        api::PodSandbox {
            id: s.id.clone(),
            name: md.name,
            uid: md.uid,
            namespace: md.namespace,
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
            runtime_handler: s.meta.runtime_handler.clone(),
            linux: Some(api::LinuxPodSandbox {
                cgroups_path: super::spec::cgroup_path(
                    &cgroup_parent,
                    &s.id,
                    self.cfg.systemd_cgroup(),
                ),
                cgroup_parent,
                pod_overhead: linux.and_then(|l| l.overhead.as_ref()).map(nri_resources),
                pod_resources: linux.and_then(|l| l.resources.as_ref()).map(nri_resources),
                ..Default::default()
            }),
            pid: s.meta.pid,
            ips: s.meta.ips.clone(),
        }
    }

    /// A container as NRI sees it, from what the CRI keeps of it.
    pub(super) fn nri_container(&self, c: &Container) -> api::Container {
        let state = match Self::container_state(c) {
            cri::ContainerState::ContainerCreated => api::ContainerState::ContainerCreated,
            cri::ContainerState::ContainerRunning => api::ContainerState::ContainerRunning,
            cri::ContainerState::ContainerExited => api::ContainerState::ContainerStopped,
            _ => api::ContainerState::ContainerUnknown,
        };
        let mut args = c.config.command.clone();
        args.extend(c.config.args.iter().cloned());
        api::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.meta.sandbox_id.clone(),
            name: c
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            state: state as i32,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            args,
            env: c
                .config
                .envs
                .iter()
                .map(|e| format!("{}={}", e.key, e.value))
                .collect(),
            pid: c.meta.pid,
            created_at: c.meta.created_at,
            started_at: c.meta.started_at,
            finished_at: c.meta.finished_at,
            exit_code: c.meta.exit_code,
            status_reason: c.meta.reason.clone(),
            status_message: c.meta.message.clone(),
            user: Some(api::User {
                uid: c.meta.uid as u32,
                gid: c.meta.gid as u32,
                additional_gids: c.meta.groups.iter().map(|g| *g as u32).collect(),
            }),
            ..Default::default()
        }
    }

    /// A container about to be created, as NRI sees it: from its OCI spec.
    pub(super) fn nri_container_from_spec(
        &self,
        id: &str,
        sandbox_id: &str,
        config: &cri::ContainerConfig,
        spec: &Value,
    ) -> api::Container {
        let process = &spec["process"];
        let mounts = spec["mounts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| api::Mount {
                        destination: m["destination"].as_str().unwrap_or("").into(),
                        r#type: m["type"].as_str().unwrap_or("").into(),
                        source: m["source"].as_str().unwrap_or("").into(),
                        options: strings(&m["options"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let namespaces = spec["linux"]["namespaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| api::LinuxNamespace {
                        r#type: n["type"].as_str().unwrap_or("").into(),
                        path: n["path"].as_str().unwrap_or("").into(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let rlimits = process["rlimits"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| api::PosixRlimit {
                        r#type: r["type"].as_str().unwrap_or("").into(),
                        hard: r["hard"].as_u64().unwrap_or(0),
                        soft: r["soft"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let annotations = spec["annotations"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        api::Container {
            id: id.to_string(),
            pod_sandbox_id: sandbox_id.to_string(),
            name: config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            state: api::ContainerState::ContainerUnknown as i32,
            labels: config.labels.clone(),
            annotations,
            args: strings(&process["args"]),
            env: strings(&process["env"]),
            mounts,
            rlimits,
            linux: Some(api::LinuxContainer {
                namespaces,
                oom_score_adj: process["oomScoreAdj"]
                    .as_i64()
                    .map(|v| api::OptionalInt { value: v }),
                cgroups_path: spec["linux"]["cgroupsPath"].as_str().unwrap_or("").into(),
                ..Default::default()
            }),
            user: Some(api::User {
                uid: process["user"]["uid"].as_u64().unwrap_or(0) as u32,
                gid: process["user"]["gid"].as_u64().unwrap_or(0) as u32,
                additional_gids: process["user"]["additionalGids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_u64())
                            .map(|g| g as u32)
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            ..Default::default()
        }
    }

    /// Relays RunPodSandbox, the pod hidden meanwhile; a plugin's error fails the run.
    pub(super) async fn nri_run_pod(&self, s: &Sandbox) -> Result<()> {
        let Some(nri) = self.nri() else {
            return Ok(());
        };
        let held = nri.hold().await;
        let _hidden = held.hide(&s.id);
        held.run_pod_sandbox(&self.nri_pod(s)).await
    }

    /// Relays StartContainer before the task starts; a plugin's error fails the start.
    pub(super) async fn nri_start(&self, c: &Container) -> Result<()> {
        let Some(nri) = self.nri() else {
            return Ok(());
        };
        let sb = self.sandbox(&c.meta.sandbox_id)?;
        let held = nri.hold().await;
        held.start_container(&self.nri_pod(&sb), &self.nri_container(c))
            .await
    }

    /// Tells plugins that `c` was created, started, updated, stopped or removed; a stop's
    /// updates to other containers are applied.
    pub(super) async fn nri_container_event(&self, c: &Container, what: Happened) {
        let Some(nri) = self.nri() else { return };
        let Ok(sb) = self.sandbox(&c.meta.sandbox_id) else {
            return;
        };
        let (pod, ctr) = (self.nri_pod(&sb), self.nri_container(c));
        let held = nri.hold().await;
        let updates = match what {
            Happened::Created => {
                held.post_create_container(&pod, &ctr).await;
                vec![]
            }
            Happened::Started => {
                held.post_start_container(&pod, &ctr).await;
                vec![]
            }
            Happened::Updated => {
                held.post_update_container(&pod, &ctr).await;
                vec![]
            }
            Happened::Stopped => held.stop_container(&pod, &ctr).await,
            Happened::Removed => {
                held.remove_container(&pod, &ctr).await;
                vec![]
            }
        };
        drop(held);
        if !updates.is_empty() {
            // A stop is relayed under the container's lock; the updates take other
            // containers' locks (or this one's), so they run apart from it.
            let this = self.clone();
            tokio::spawn(async move {
                this.nri_apply_updates(updates).await;
            });
        }
    }

    /// Tells plugins that a pod stopped (once) or was removed.
    pub(super) async fn nri_pod_event(&self, s: &Sandbox, removed: bool) {
        let Some(nri) = self.nri() else { return };
        let pod = self.nri_pod(s);
        let held = nri.hold().await;
        if removed {
            held.remove_pod_sandbox(&pod).await
        } else {
            held.stop_pod_sandbox(&pod).await
        }
    }

    /// UpdatePodSandboxResources: plugins' error fails it before anything changes.
    pub(super) async fn nri_update_pod(
        &self,
        s: &Sandbox,
        overhead: Option<&cri::LinuxContainerResources>,
        resources: Option<&cri::LinuxContainerResources>,
    ) -> Result<()> {
        let Some(nri) = self.nri() else {
            return Ok(());
        };
        let held = nri.hold().await;
        held.update_pod_sandbox(
            &self.nri_pod(s),
            overhead.map(nri_resources),
            resources.map(nri_resources),
        )
        .await
    }

    pub(super) async fn nri_post_update_pod(&self, s: &Sandbox) {
        let Some(nri) = self.nri() else { return };
        let held = nri.hold().await;
        held.post_update_pod_sandbox(&self.nri_pod(s)).await
    }

    /// Plugins' say on a container's new resources: their error fails the update; an
    /// update they ask for this very container replaces the requested resources.
    pub(super) async fn nri_update(
        &self,
        c: &Container,
        r: &cri::LinuxContainerResources,
    ) -> Result<cri::LinuxContainerResources> {
        let Some(nri) = self.nri() else {
            return Ok(r.clone());
        };
        let sb = self.sandbox(&c.meta.sandbox_id)?;
        let held = nri.hold().await;
        let mut updates = held
            .update_container(
                &self.nri_pod(&sb),
                &self.nri_container(c),
                &nri_resources(r),
            )
            .await?;
        drop(held);
        let mut out = r.clone();
        updates.retain(|u| {
            if u.container_id != c.id {
                return true;
            }
            if let Some(res) = u.linux.as_ref().and_then(|l| l.resources.as_ref()) {
                merge_into_cri(&mut out, res);
            }
            false
        });
        self.nri_apply_updates(updates).await;
        Ok(out)
    }

    /// Applies plugins' updates to other containers; answers those that failed.
    pub(super) async fn nri_apply_updates(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> Vec<api::ContainerUpdate> {
        let mut failed = vec![];
        for u in updates {
            let Some(res) = u.linux.as_ref().and_then(|l| l.resources.as_ref()) else {
                continue;
            };
            let applied = match self.container(&u.container_id) {
                Ok(c) => {
                    let mut r = c
                        .config
                        .linux
                        .as_ref()
                        .and_then(|l| l.resources.clone())
                        .unwrap_or_default();
                    merge_into_cri(&mut r, res);
                    self.update_container_resources_as_asked(&c.id, &r).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = applied {
                if !u.ignore_failure {
                    tracing::warn!(container = u.container_id, error = %e, "NRI update failed");
                    failed.push(u);
                }
            }
        }
        failed
    }
}

impl Host for Cri {
    fn snapshot(&self) -> BoxFuture<'_, (Vec<api::PodSandbox>, Vec<api::Container>)> {
        Box::pin(async move {
            let pods = self
                .sandboxes
                .all()
                .iter()
                // A pod still being made is announced by its RunPodSandbox instead.
                .filter(|s| (s.meta.pid != 0 || s.meta.stopped) && !self.nri_hidden(&s.id))
                .map(|s| self.nri_pod(s))
                .collect();
            let containers = self
                .containers
                .all()
                .iter()
                .map(|c| self.nri_container(c))
                .collect();
            (pods, containers)
        })
    }

    fn update(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> BoxFuture<'_, Vec<api::ContainerUpdate>> {
        Box::pin(self.nri_apply_updates(updates))
    }
}

/// The CRI's resources in NRI's terms (what UpdateContainer shows plugins).
fn nri_resources(r: &cri::LinuxContainerResources) -> api::LinuxResources {
    let i64v = |v: i64| (v != 0).then_some(api::OptionalInt64 { value: v });
    let u64v = |v: i64| (v != 0).then_some(api::OptionalUInt64 { value: v as u64 });
    api::LinuxResources {
        memory: Some(api::LinuxMemory {
            limit: i64v(r.memory_limit_in_bytes),
            swap: i64v(r.memory_swap_limit_in_bytes),
            ..Default::default()
        }),
        cpu: Some(api::LinuxCpu {
            shares: u64v(r.cpu_shares),
            quota: i64v(r.cpu_quota),
            period: u64v(r.cpu_period),
            cpus: r.cpuset_cpus.clone(),
            mems: r.cpuset_mems.clone(),
            ..Default::default()
        }),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| api::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r.unified.clone(),
        ..Default::default()
    }
}

/// What an NRI update sets, over the CRI's resources.
fn merge_into_cri(out: &mut cri::LinuxContainerResources, r: &api::LinuxResources) {
    if let Some(m) = &r.memory {
        if let Some(v) = &m.limit {
            out.memory_limit_in_bytes = v.value;
        }
        if let Some(v) = &m.swap {
            out.memory_swap_limit_in_bytes = v.value;
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(v) = &c.shares {
            out.cpu_shares = v.value as i64;
        }
        if let Some(v) = &c.quota {
            out.cpu_quota = v.value;
        }
        if let Some(v) = &c.period {
            out.cpu_period = v.value as i64;
        }
        if !c.cpus.is_empty() {
            out.cpuset_cpus = c.cpus.clone();
        }
        if !c.mems.is_empty() {
            out.cpuset_mems = c.mems.clone();
        }
    }
    if !r.hugepage_limits.is_empty() {
        out.hugepage_limits = r
            .hugepage_limits
            .iter()
            .map(|h| cri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect();
    }
    out.unified.extend(r.unified.clone());
}
