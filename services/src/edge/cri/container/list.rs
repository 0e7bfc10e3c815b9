//! ListContainers: the containers a filter selects, newest first.

use super::*;

impl Cri {
    pub fn container_list(&self, f: Option<&cri::ContainerFilter>) -> Vec<cri::Container> {
        let mut out: Vec<cri::Container> = self
            .containers
            .all()
            .iter()
            .map(|c| cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.meta.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: c.meta.image_ref.clone(),
                    ..Default::default()
                }),
                image_ref: c.meta.image_id.clone(),
                state: Self::container_state(c) as i32,
                created_at: c.meta.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.meta.image_id.clone(),
            })
            .filter(|c| match f {
                None => true,
                Some(f) => {
                    (f.id.is_empty() || c.id.starts_with(&f.id))
                        && (f.pod_sandbox_id.is_empty()
                            || c.pod_sandbox_id.starts_with(&f.pod_sandbox_id))
                        && f.state.as_ref().is_none_or(|s| s.state == c.state)
                        && crate::edge::cri::labels_match(&c.labels, &f.label_selector)
                }
            })
            .collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        out
    }
}
