//! ContainerStatus: a container's state and what the CRI reports of it.

use super::*;

impl Cri {
    pub fn container_state(c: &Container) -> cri::ContainerState {
        if c.meta.finished_at != 0 {
            cri::ContainerState::ContainerExited
        } else if c.meta.started_at != 0 {
            cri::ContainerState::ContainerRunning
        } else {
            cri::ContainerState::ContainerCreated
        }
    }

    pub fn container_status(&self, c: &Container) -> cri::ContainerStatus {
        let image = cri::ImageSpec {
            image: c.meta.image_ref.clone(),
            annotations: c
                .config
                .image
                .as_ref()
                .map(|i| i.annotations.clone())
                .unwrap_or_default(),
            user_specified_image: c
                .config
                .image
                .as_ref()
                .map(|i| i.user_specified_image.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        let res = c.config.linux.as_ref().and_then(|l| l.resources.clone());
        cri::ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: Self::container_state(c) as i32,
            created_at: c.meta.created_at,
            started_at: c.meta.started_at,
            finished_at: c.meta.finished_at,
            exit_code: c.meta.exit_code,
            image: Some(image),
            image_ref: c.meta.image_id.clone(),
            reason: c.meta.reason.clone(),
            message: c.meta.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path: c.meta.log_path.clone(),
            resources: res.map(|r| cri::ContainerResources {
                linux: Some(r),
                windows: None,
            }),
            image_id: c.meta.image_id.clone(),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: c.meta.uid,
                    gid: c.meta.gid,
                    supplemental_groups: c.meta.groups.clone(),
                }),
            }),
            stop_signal: effective_stop_signal(c),
        }
    }
}
