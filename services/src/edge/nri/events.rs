//! The lifecycle relayed to plugins, in index order, under the gate's read hold. Where NRI
//! lets a plugin veto (RunPodSandbox, CreateContainer, StartContainer, UpdateContainer) its
//! error fails the operation; elsewhere it is logged. A plugin that is gone or does not
//! answer within the request timeout is dropped and the operation goes on without it.

use super::plugin::{CallError, Plugin};
use super::{lock, Inner};
use crate::core::error::{Error, Kind, Result};
use berth_proto::nri as api;
use prost::Message;
use std::sync::Arc;

/// The gate held for relaying events; what a create announces is made visible before it is
/// dropped.
pub struct Held<'a> {
    inner: &'a Arc<Inner>,
    _read: tokio::sync::RwLockReadGuard<'a, ()>,
}

/// What plugins asked for when a container was created.
#[derive(Default)]
pub struct Created {
    /// Each plugin's adjustment, in call order, with the plugin's name.
    pub adjustments: Vec<(String, api::ContainerAdjustment)>,
    pub updates: Vec<api::ContainerUpdate>,
}

/// The StateChange event plugins without `event`'s own method take in its place.
fn state_change(
    event: api::Event,
    pod: &api::PodSandbox,
    container: Option<&api::Container>,
) -> api::StateChangeEvent {
    api::StateChangeEvent {
        event: event as i32,
        pod: Some(pod.clone()),
        container: container.cloned(),
    }
}

/// Removes a pod from the hidden set when dropped.
pub struct Hidden<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Hidden<'_> {
    fn drop(&mut self) {
        lock(&self.inner.hidden).remove(&self.id);
    }
}

impl<'a> Held<'a> {
    pub(super) async fn new(inner: &'a Arc<Inner>) -> Self {
        Held {
            inner,
            _read: inner.gate.read().await,
        }
    }

    /// Calls `method` on every subscribed plugin in order. A veto stops the round when
    /// `vetoes`; `fallback` is the StateChange event older plugins take instead.
    async fn each<Req: Message, Resp: Message + Default>(
        &self,
        event: api::Event,
        method: &str,
        req: &Req,
        fallback: Option<&api::StateChangeEvent>,
        vetoes: bool,
    ) -> Result<Vec<(Arc<Plugin>, Resp)>> {
        let mut out = vec![];
        for p in self.inner.plugins() {
            if !p.wants(event) || p.is_closed() {
                continue;
            }
            let mut answer = p.call::<_, Resp>(method, req).await;
            if let (Err(CallError::Unimplemented), Some(ev)) = (&answer, fallback) {
                answer = p
                    .call::<_, api::Empty>("StateChange", ev)
                    .await
                    .map(|_| Resp::default());
            }
            match answer {
                Ok(r) => out.push((p, r)),
                Err(CallError::Lost(why)) => self.inner.drop_plugin(&p, &why),
                Err(CallError::Unimplemented) => {
                    tracing::debug!(plugin = p.name, method, "NRI plugin lacks the method")
                }
                Err(CallError::Refused(why)) if vetoes => {
                    return Err(Error::new(
                        Kind::FailedPrecondition,
                        format!("NRI plugin {} refused {method}: {why}", p.name),
                    ));
                }
                Err(CallError::Refused(why)) => {
                    tracing::warn!(
                        plugin = p.name,
                        method,
                        error = why,
                        "NRI plugin failed an event"
                    )
                }
            }
        }
        Ok(out)
    }

    /// Relays a notification no plugin can veto.
    async fn notify<Req: Message>(
        &self,
        event: api::Event,
        method: &str,
        req: &Req,
        pod: &api::PodSandbox,
        container: Option<&api::Container>,
    ) {
        let ev = state_change(event, pod, container);
        let _ = self
            .each::<_, api::Empty>(event, method, req, Some(&ev), false)
            .await;
    }

    /// Keeps `pod` out of lists and unusable until the returned guard is dropped.
    pub fn hide(&self, pod: &str) -> Hidden<'a> {
        lock(&self.inner.hidden).insert(pod.to_string());
        Hidden {
            inner: self.inner,
            id: pod.to_string(),
        }
    }

    /// True the first time pod or container `id` stops (a stop is relayed once).
    fn first_stop(&self, id: &str) -> bool {
        lock(&self.inner.stopped).insert(id.to_string())
    }

    fn forget(&self, id: &str) {
        lock(&self.inner.stopped).remove(id);
    }

    pub async fn run_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<()> {
        let req = api::RunPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let ev = state_change(api::Event::RunPodSandbox, pod, None);
        self.each::<_, api::RunPodSandboxResponse>(
            api::Event::RunPodSandbox,
            "RunPodSandbox",
            &req,
            Some(&ev),
            true,
        )
        .await
        .map(drop)
    }

    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) {
        if !self.first_stop(&pod.id) {
            return;
        }
        let req = api::StopPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        self.notify(
            api::Event::StopPodSandbox,
            "StopPodSandbox",
            &req,
            pod,
            None,
        )
        .await
    }

    pub async fn remove_pod_sandbox(&self, pod: &api::PodSandbox) {
        let req = api::RemovePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        self.notify(
            api::Event::RemovePodSandbox,
            "RemovePodSandbox",
            &req,
            pod,
            None,
        )
        .await;
        self.forget(&pod.id);
    }

    /// UpdatePodSandboxResources, before its limits are applied: a plugin's error fails it.
    pub async fn update_pod_sandbox(
        &self,
        pod: &api::PodSandbox,
        overhead: Option<api::LinuxResources>,
        resources: Option<api::LinuxResources>,
    ) -> Result<()> {
        let req = api::UpdatePodSandboxRequest {
            pod: Some(pod.clone()),
            overhead_linux_resources: overhead,
            linux_resources: resources,
        };
        self.each::<_, api::UpdatePodSandboxResponse>(
            api::Event::UpdatePodSandbox,
            "UpdatePodSandbox",
            &req,
            None,
            true,
        )
        .await
        .map(drop)
    }

    pub async fn post_update_pod_sandbox(&self, pod: &api::PodSandbox) {
        let req = api::PostUpdatePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        self.notify(
            api::Event::PostUpdatePodSandbox,
            "PostUpdatePodSandbox",
            &req,
            pod,
            None,
        )
        .await
    }

    /// Asks every plugin for its adjustment of a container about to be created.
    pub async fn create_container(
        &self,
        pod: &api::PodSandbox,
        container: &api::Container,
    ) -> Result<Created> {
        let req = api::CreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(container.clone()),
        };
        let answers = self
            .each::<_, api::CreateContainerResponse>(
                api::Event::CreateContainer,
                "CreateContainer",
                &req,
                None,
                true,
            )
            .await?;
        let mut created = Created::default();
        for (p, r) in answers {
            if let Some(a) = r.adjust {
                created.adjustments.push((p.name.clone(), a));
            }
            created.updates.extend(r.update);
        }
        Ok(created)
    }

    pub async fn post_create_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::PostCreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        self.notify(
            api::Event::PostCreateContainer,
            "PostCreateContainer",
            &req,
            pod,
            Some(c),
        )
        .await
    }

    pub async fn start_container(&self, pod: &api::PodSandbox, c: &api::Container) -> Result<()> {
        let req = api::StartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        let ev = state_change(api::Event::StartContainer, pod, Some(c));
        self.each::<_, api::StartContainerResponse>(
            api::Event::StartContainer,
            "StartContainer",
            &req,
            Some(&ev),
            true,
        )
        .await
        .map(drop)
    }

    pub async fn post_start_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::PostStartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        self.notify(
            api::Event::PostStartContainer,
            "PostStartContainer",
            &req,
            pod,
            Some(c),
        )
        .await
    }

    /// Asks plugins about new resources for a container; answers the updates they want.
    pub async fn update_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
        resources: &api::LinuxResources,
    ) -> Result<Vec<api::ContainerUpdate>> {
        let req = api::UpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
            linux_resources: Some(resources.clone()),
        };
        let answers = self
            .each::<_, api::UpdateContainerResponse>(
                api::Event::UpdateContainer,
                "UpdateContainer",
                &req,
                None,
                true,
            )
            .await?;
        Ok(answers.into_iter().flat_map(|(_, r)| r.update).collect())
    }

    pub async fn post_update_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::PostUpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        self.notify(
            api::Event::PostUpdateContainer,
            "PostUpdateContainer",
            &req,
            pod,
            Some(c),
        )
        .await
    }

    /// Tells plugins a container stopped (once); answers the updates they want for others.
    pub async fn stop_container(
        &self,
        pod: &api::PodSandbox,
        c: &api::Container,
    ) -> Vec<api::ContainerUpdate> {
        if !self.first_stop(&c.id) {
            return vec![];
        }
        let req = api::StopContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        self.each::<_, api::StopContainerResponse>(
            api::Event::StopContainer,
            "StopContainer",
            &req,
            None,
            false,
        )
        .await
        .map(|a| a.into_iter().flat_map(|(_, r)| r.update).collect())
        .unwrap_or_default()
    }

    pub async fn remove_container(&self, pod: &api::PodSandbox, c: &api::Container) {
        let req = api::RemoveContainerRequest {
            pod: Some(pod.clone()),
            container: Some(c.clone()),
        };
        self.notify(
            api::Event::RemoveContainer,
            "RemoveContainer",
            &req,
            pod,
            Some(c),
        )
        .await;
        self.forget(&c.id);
    }
}
