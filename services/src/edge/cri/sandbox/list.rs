//! ListPodSandbox: the pods a filter selects, newest first.

use super::*;

impl Cri {
    pub fn sandbox_list(&self, f: Option<&cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let mut out: Vec<cri::PodSandbox> = self
            .sandboxes
            .all()
            .iter()
            .filter(|s| !self.nri_hidden(&s.id))
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
                        && crate::edge::cri::labels_match(&p.labels, &f.label_selector)
                }
            })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.created_at));
        out
    }
}
