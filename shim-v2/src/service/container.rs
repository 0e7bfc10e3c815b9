//! Verbs on the container as a whole rather than on one of its processes: Pause and Resume,
//! Update (its resources), Pids and Stats (from its cgroup).

use super::{Service, R};
use crate::error::Error;
use crate::runc::Stdio3;
use berth_proto::containerd::events as ev;
use berth_proto::containerd::task::v2 as api;
use berth_proto::containerd::v1::types::{ProcessInfo, Status};

impl Service {
    pub(super) fn pids(&self) -> R<api::PidsResponse> {
        let out = self.runc(&["ps", "--format", "json", &self.id], Stdio3::default())?;
        let pids: Vec<u32> = serde_json::from_slice(&out).unwrap_or_default();
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo { pid, info: None })
                .collect(),
        })
    }

    pub(super) fn pause(&self, pause: bool) -> R<()> {
        self.runc(
            &[if pause { "pause" } else { "resume" }, &self.id],
            Stdio3::default(),
        )?;
        let status = if pause {
            Status::Paused
        } else {
            Status::Running
        } as i32;
        self.update("", |p| p.status = status);
        if pause {
            self.events.publish(
                "/tasks/paused",
                &ev::TaskPaused {
                    container_id: self.id.clone(),
                },
            );
        } else {
            self.events.publish(
                "/tasks/resumed",
                &ev::TaskResumed {
                    container_id: self.id.clone(),
                },
            );
        }
        Ok(())
    }

    pub(super) fn update_resources(&self, r: api::UpdateTaskRequest) -> R<()> {
        let res = r
            .resources
            .ok_or_else(|| Error::invalid("resources must be set"))?;
        let f = self.bundle.join("update.json");
        std::fs::write(&f, &res.value).map_err(|e| Error::internal(e.to_string()))?;
        let fs = f.display().to_string();
        self.runc(&["update", "--resources", &fs, &self.id], Stdio3::default())?;
        Ok(())
    }

    pub(super) fn stats(&self) -> R<api::StatsResponse> {
        let cg = self
            .lock_state()?
            .cgroup
            .clone()
            .ok_or_else(|| Error::not_found(format!("task {} has no cgroup", self.id)))?;
        Ok(api::StatsResponse {
            stats: Some(cg.metrics()),
        })
    }
}
