//! Container and pod statistics from the shims' cgroup metrics (v1 or v2), and the writable
//! layer's usage from the snapshotter.

use super::{Container, Cri};
use crate::core::error::Result;
use berth_proto::cri::v1 as cri;

fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

impl Cri {
    pub async fn container_stats(&self, c: &Container) -> Result<cri::ContainerStats> {
        let now = crate::core::metadata::now();
        let mut out = cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            ..Default::default()
        };
        let running = Self::container_state(c) == cri::ContainerState::ContainerRunning;
        if running {
            if let Ok(Some(any)) = self.tasks.stats(self.ns.clone(), c.id.clone()).await {
                if let Some(f) = crate::edge::shim::cgroup_figures(&any) {
                    let cpu = f.cpu_ns;
                    let nano_cores = {
                        let prev = self.cpu_samples.replace(&c.id, now, cpu);
                        match prev {
                            Some((t, v)) if now > t && cpu >= v => {
                                ((cpu - v) as f64 / (now - t) as f64 * 1e9) as u64
                            }
                            _ => 0,
                        }
                    };
                    out.cpu = Some(cri::CpuUsage {
                        timestamp: now,
                        usage_core_nano_seconds: u64v(cpu),
                        usage_nano_cores: u64v(nano_cores),
                        psi: None,
                    });
                    out.memory = Some(cri::MemoryUsage {
                        timestamp: now,
                        working_set_bytes: u64v(f.memory_working_set),
                        available_bytes: None,
                        usage_bytes: u64v(f.memory_usage),
                        rss_bytes: u64v(f.memory_rss),
                        page_faults: u64v(f.page_faults),
                        major_page_faults: u64v(f.major_page_faults),
                        psi: None,
                    });
                }
            }
        }
        if out.cpu.is_none() {
            out.cpu = Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: u64v(0),
                usage_nano_cores: u64v(0),
                psi: None,
            });
            out.memory = Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: u64v(0),
                ..Default::default()
            });
        }
        let usage = self
            .snapshots
            .usage(
                self.ns.clone(),
                &self.container_snapshotter(c),
                c.id.clone(),
            )
            .await
            .ok();
        let root = self.snapshotter_root(&self.container_snapshotter(c));
        out.writable_layer = Some(cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: root }),
            used_bytes: u64v(usage.as_ref().map(|u| u.size.max(0) as u64).unwrap_or(0)),
            inodes_used: u64v(usage.as_ref().map(|u| u.inodes.max(0) as u64).unwrap_or(0)),
        });
        Ok(out)
    }

    pub async fn sandbox_stats(&self, s: &super::Sandbox) -> Result<cri::PodSandboxStats> {
        let now = crate::core::metadata::now();
        let members = self.members(&s.id);
        let mut containers = Vec::new();
        for c in &members {
            containers.push(self.container_stats(c).await?);
        }
        let (mut cpu, mut nano, mut ws, mut usage) = (0u64, 0u64, 0u64, 0u64);
        for c in &containers {
            if let Some(x) = &c.cpu {
                cpu += x
                    .usage_core_nano_seconds
                    .as_ref()
                    .map(|v| v.value)
                    .unwrap_or(0);
                nano += x.usage_nano_cores.as_ref().map(|v| v.value).unwrap_or(0);
            }
            if let Some(m) = &c.memory {
                ws += m.working_set_bytes.as_ref().map(|v| v.value).unwrap_or(0);
                usage += m.usage_bytes.as_ref().map(|v| v.value).unwrap_or(0);
            }
        }
        let procs = if s.meta.pid != 0 {
            self.tasks
                .pids(self.ns.clone(), s.id.clone())
                .await
                .map(|p| p.len() as u64)
                .unwrap_or(0)
                + members.iter().filter(|c| c.meta.pid != 0).count() as u64
        } else {
            0
        };
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: u64v(cpu),
                    usage_nano_cores: u64v(nano),
                    psi: None,
                }),
                memory: Some(cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: u64v(ws),
                    usage_bytes: u64v(usage),
                    ..Default::default()
                }),
                network: None,
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: u64v(procs),
                }),
                containers,
                io: None,
            }),
            windows: None,
        })
    }

    /// Where snapshotter `name` keeps its layers and writable layers.
    pub(super) fn snapshotter_root(&self, name: &str) -> String {
        crate::core::snapshots::snapshotter_root(self.root.parent().unwrap_or(&self.root), name)
            .display()
            .to_string()
    }
}
