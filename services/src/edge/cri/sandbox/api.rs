//! The CRI's pods as containerd 2.x's Sandbox API sees them (sandboxer "podsandbox"): what
//! its Store lists and what its Controller asks of them.

use super::*;
use crate::core::context::Namespace;
use crate::core::runtime::Exited;
use crate::core::sandboxes::{SandboxRecord, SandboxStatus, PODSANDBOX};

impl Cri {
    /// The namespace the CRI keeps its pods in.
    pub fn pods_namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The pod with exactly this id (the Sandbox API takes no prefixes).
    fn pod(&self, id: &str) -> Option<Sandbox> {
        self.sandboxes.all().into_iter().find(|s| s.id == id)
    }

    fn pod_record(&self, s: &Sandbox) -> SandboxRecord {
        let mut extensions = std::collections::BTreeMap::new();
        let linux = s.config.linux.as_ref();
        if let Some(l) = linux.filter(|l| l.overhead.is_some() || l.resources.is_some()) {
            let updated = cri::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: s.id.clone(),
                overhead: l.overhead.clone(),
                resources: l.resources.clone(),
            };
            extensions.insert(
                super::update::UPDATED_RESOURCES_EXT.to_string(),
                crate::edge::cri::ext_proto(&updated),
            );
        }
        SandboxRecord {
            extensions,
            id: s.id.clone(),
            runtime_name: self.pod_handler(s).runtime_type,
            labels: s.config.labels.clone().into_iter().collect(),
            created_at: s.meta.created_at,
            updated_at: s.meta.created_at,
            sandboxer: PODSANDBOX.into(),
            ..Default::default()
        }
    }

    /// Every pod RunPodSandbox made and RemovePodSandbox has not removed, as sandbox
    /// records, in id order.
    pub fn pod_records(&self) -> Vec<SandboxRecord> {
        let mut out: Vec<_> = self
            .sandboxes
            .all()
            .iter()
            .map(|s| self.pod_record(s))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn pod_sandbox_record(&self, id: &str) -> Option<SandboxRecord> {
        self.pod(id).map(|s| self.pod_record(&s))
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Option<SandboxStatus> {
        let s = self.pod(id)?;
        let ready = self.sandbox_ready(&s);
        let info = [
            ("name", s.meta.name.clone()),
            ("netns", s.meta.netns.clone()),
            ("runtime_handler", s.meta.runtime_handler.clone()),
            ("ips", s.meta.ips.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Some(SandboxStatus {
            id: s.id.clone(),
            pid: s.meta.pid,
            state: if ready {
                "SANDBOX_READY"
            } else {
                "SANDBOX_NOTREADY"
            },
            created_at: s.meta.created_at,
            info,
        })
    }

    /// Waits for the pod's pause process to end. Once it has, berth keeps no exit status,
    /// and says so.
    pub async fn pod_wait(&self, id: &str) -> Result<Exited> {
        match self.tasks.wait(self.ns.clone(), init_ref(id)).await {
            Err(e) if e.kind() == Kind::NotFound => Err(Error::precondition(format!(
                "pod sandbox {id:?} is not running: its pause process has exited"
            ))),
            other => other,
        }
    }
}
