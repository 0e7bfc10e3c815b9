//! PodSandboxStatus: whether a pod is ready, and what the CRI reports of it.

use super::*;

impl Cri {
    pub fn sandbox_ready(&self, s: &Sandbox) -> bool {
        !s.meta.stopped && s.meta.pid != 0 && !self.nri_hidden(&s.id)
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
}
