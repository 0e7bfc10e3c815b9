//! ListMetricDescriptors and ListPodSandboxMetrics (KEP-2371, the kubelet's CRI-only stats):
//! cAdvisor-named samples for every ready pod — the interfaces of its network namespace —
//! and for each of its running containers: its shim's cgroup statistics, what berthd reads
//! itself of the container's cgroup and processes, and its writable layer. Also the network
//! and process figures PodSandboxStats carries, from the same readings.

mod descriptors;
mod host;
mod shim_stats;
mod sink;

pub use descriptors::list as descriptors;

use crate::core::error::blocking;
use crate::edge::cri::{Container, Cri, Sandbox};
use berth_proto::cri::v1 as cri;
use host::{Figures, Filesystem, Interface};
use sink::Sink;

const NS_PER_S: i64 = 1_000_000_000;
const US_PER_S: u64 = 1_000_000;

fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

/// An interface's counters as pod-level samples.
fn network(s: &mut Sink, i: &Interface) {
    let at = [i.name.as_str()];
    for (name, v) in [
        ("container_network_receive_bytes_total", i.rx_bytes),
        ("container_network_receive_packets_total", i.rx_packets),
        ("container_network_receive_errors_total", i.rx_errors),
        (
            "container_network_receive_packets_dropped_total",
            i.rx_dropped,
        ),
        ("container_network_transmit_bytes_total", i.tx_bytes),
        ("container_network_transmit_packets_total", i.tx_packets),
        ("container_network_transmit_errors_total", i.tx_errors),
        (
            "container_network_transmit_packets_dropped_total",
            i.tx_dropped,
        ),
    ] {
        s.put_with(name, &at, v);
    }
}

/// What berthd read itself of a container's cgroup and processes, as samples.
fn host_samples(s: &mut Sink, f: &Figures) {
    s.put("container_processes", f.processes);
    s.put("container_file_descriptors", f.fds);
    s.put("container_sockets", f.sockets);
    for (name, soft) in &f.soft_limits {
        s.put_with("container_ulimits_soft", &[name], *soft);
    }
    for (size, usage, max) in &f.hugetlb {
        s.put_with("container_hugetlb_usage_bytes", &[size], *usage);
        s.put_with("container_hugetlb_max_usage_bytes", &[size], *max);
    }
    for (resource, some, full) in &f.pressure {
        let (waiting, stalled) = match *resource {
            "cpu" => (
                "container_pressure_cpu_waiting_seconds_total",
                "container_pressure_cpu_stalled_seconds_total",
            ),
            "memory" => (
                "container_pressure_memory_waiting_seconds_total",
                "container_pressure_memory_stalled_seconds_total",
            ),
            _ => (
                "container_pressure_io_waiting_seconds_total",
                "container_pressure_io_stalled_seconds_total",
            ),
        };
        s.put(waiting, some / US_PER_S);
        s.put(stalled, full / US_PER_S);
    }
    let l = &f.limits;
    s.put("container_spec_cpu_period", l.cpu_period);
    if let Some(q) = l.cpu_quota {
        s.put("container_spec_cpu_quota", q);
    }
    s.put("container_spec_cpu_shares", l.cpu_shares);
    s.put("container_spec_memory_limit_bytes", l.memory);
    s.put(
        "container_spec_memory_reservation_limit_bytes",
        l.memory_reservation,
    );
    s.put("container_spec_memory_swap_limit_bytes", l.memory_and_swap);
}

/// The writable layer (`used` bytes) on the filesystem under the snapshotter.
fn fs_samples(s: &mut Sink, fs: &Filesystem, used: u64) {
    let dev = [fs.device.as_str()];
    s.put_with("container_fs_usage_bytes", &dev, used);
    s.put_with("container_fs_limit_bytes", &dev, fs.bytes);
    s.put_with("container_fs_inodes_total", &dev, fs.inodes);
    s.put_with("container_fs_inodes_free", &dev, fs.inodes_free);
}

impl Cri {
    /// ListPodSandboxMetrics: every ready pod, with its running containers.
    pub async fn pod_sandbox_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        let root = std::path::PathBuf::from(self.snapshotter_root(&self.cfg.snapshotter));
        let fs = blocking(move || Ok(host::filesystem(&root)))
            .await
            .ok()
            .flatten();
        let mut out = Vec::new();
        for s in self.sandboxes.all() {
            if self.sandbox_ready(&s) {
                out.push(self.one_pod_metrics(&s, fs.as_ref()).await);
            }
        }
        out
    }

    async fn one_pod_metrics(
        &self,
        s: &Sandbox,
        fs: Option<&Filesystem>,
    ) -> cri::PodSandboxMetrics {
        let at = crate::core::metadata::now();
        let md = s.config.metadata.clone().unwrap_or_default();
        let labels = |container: &str, id: &str, image: &str| {
            [&md.name, &md.namespace, container, id, image].map(String::from)
        };
        let mut pod = Sink::new(labels("", &s.id, ""), at);
        for i in self.pod_interfaces(s).await {
            network(&mut pod, &i);
        }
        let mut containers = Vec::new();
        for c in self.running_members(&s.id) {
            let name = c
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default();
            let sink = Sink::new(labels(name, &c.id, &c.meta.image_ref), at);
            containers.push(cri::ContainerMetrics {
                container_id: c.id.clone(),
                metrics: self.container_metrics(&c, sink, fs).await,
            });
        }
        cri::PodSandboxMetrics {
            pod_sandbox_id: s.id.clone(),
            metrics: pod.out,
            container_metrics: containers,
        }
    }

    fn running_members(&self, sandbox_id: &str) -> Vec<Container> {
        self.members(sandbox_id)
            .into_iter()
            .filter(|c| {
                c.meta.pid != 0 && Self::container_state(c) == cri::ContainerState::ContainerRunning
            })
            .collect()
    }

    /// The interfaces of the pod's own network namespace (none for a host-network pod).
    async fn pod_interfaces(&self, s: &Sandbox) -> Vec<Interface> {
        let pid = s.meta.pid;
        if s.meta.netns.is_empty() || pid == 0 {
            return Vec::new();
        }
        blocking(move || Ok(host::interfaces(pid)))
            .await
            .unwrap_or_default()
    }

    async fn container_metrics(
        &self,
        c: &Container,
        mut s: Sink,
        fs: Option<&Filesystem>,
    ) -> Vec<cri::Metric> {
        let now = crate::core::metadata::now();
        s.put("container_last_seen", (now / NS_PER_S).max(0) as u64);
        s.put(
            "container_start_time_seconds",
            (c.meta.started_at / NS_PER_S).max(0) as u64,
        );
        match self.tasks.stats(self.ns.clone(), c.id.clone()).await {
            Ok(Some(any)) => {
                if !shim_stats::emit(&any, &mut s, &host::device_name) {
                    tracing::debug!(id = c.id, type_url = any.type_url, "unknown task metrics");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(id = c.id, error = %e, "task metrics"),
        }
        let pid = c.meta.pid;
        if let Ok(Some(f)) = blocking(move || Ok(Figures::read(pid))).await {
            host_samples(&mut s, &f);
        }
        if let Some(fs) = fs {
            let used = self
                .snapshots
                .usage(
                    self.ns.clone(),
                    &self.container_snapshotter(c),
                    c.id.clone(),
                )
                .await
                .map(|u| u.size.max(0) as u64)
                .unwrap_or(0);
            fs_samples(&mut s, fs, used);
        }
        s.out
    }

    /// Fills in what PodSandboxStats takes from the pod as a whole: its network namespace's
    /// interfaces, and a count of every process in the pod (each of its cgroups read).
    pub async fn complete_pod_stats(&self, s: &Sandbox, stats: &mut cri::PodSandboxStats) {
        let Some(linux) = stats.linux.as_mut() else {
            return;
        };
        let at = crate::core::metadata::now();
        let ifs = self.pod_interfaces(s).await;
        let usage = |i: &Interface| cri::NetworkInterfaceUsage {
            name: i.name.clone(),
            rx_bytes: u64v(i.rx_bytes),
            rx_errors: u64v(i.rx_errors),
            tx_bytes: u64v(i.tx_bytes),
            tx_errors: u64v(i.tx_errors),
        };
        if !ifs.is_empty() {
            let default = ifs.iter().find(|i| i.name == "eth0").or(ifs.first());
            linux.network = Some(cri::NetworkUsage {
                timestamp: at,
                default_interface: default.map(usage),
                interfaces: ifs.iter().map(usage).collect(),
            });
        }
        if s.meta.pid == 0 {
            return;
        }
        let pids: Vec<u32> = std::iter::once(s.meta.pid)
            .chain(self.running_members(&s.id).iter().map(|c| c.meta.pid))
            .collect();
        let count = blocking(move || {
            let all: std::collections::HashSet<u32> = pids
                .iter()
                .filter_map(|p| host::Cgroups::of_pid(*p))
                .flat_map(|cg| cg.procs())
                .collect();
            Ok(all.len() as u64)
        })
        .await;
        if let Ok(n) = count {
            linux.process = Some(cri::ProcessUsage {
                timestamp: at,
                process_count: u64v(n),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every descriptor gets samples from some collector, and every sample matches its
    /// descriptor's labels (the sink drops those that do not, so a count tells).
    #[test]
    fn the_collectors_cover_the_descriptor_table() {
        let mut s = Sink::for_test();
        network(&mut s, &Interface::default());
        let f = Figures {
            limits: host::Limits {
                cpu_quota: Some(1),
                ..Default::default()
            },
            hugetlb: vec![("2MB".into(), 0, 0)],
            pressure: vec![("cpu", 0, 0), ("memory", 0, 0), ("io", 0, 0)],
            soft_limits: vec![("max_open_files".into(), 1024)],
            ..Default::default()
        };
        host_samples(&mut s, &f);
        fs_samples(&mut s, &Filesystem::default(), 0);
        s.put("container_last_seen", 0);
        s.put("container_start_time_seconds", 0);
        let v1 = berth_proto::cgroups::v1::Metrics {
            cpu: Some(berth_proto::cgroups::v1::CpuStat {
                usage: Some(Default::default()),
                throttling: Some(Default::default()),
            }),
            memory: Some(Default::default()),
            memory_oom_control: Some(Default::default()),
            pids: Some(Default::default()),
            blkio: Some(berth_proto::cgroups::v1::BlkIoStat {
                io_service_bytes_recursive: ["Read", "Write"]
                    .map(|op| berth_proto::cgroups::v1::BlkIoEntry {
                        op: op.into(),
                        ..Default::default()
                    })
                    .to_vec(),
                io_serviced_recursive: ["Read", "Write"]
                    .map(|op| berth_proto::cgroups::v1::BlkIoEntry {
                        op: op.into(),
                        ..Default::default()
                    })
                    .to_vec(),
            }),
            ..Default::default()
        };
        let any = crate::core::metadata::containers::AnyValue {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: prost::Message::encode_to_vec(&v1),
        };
        assert!(shim_stats::emit(&any, &mut s, &|a, b| format!("{a}:{b}")));
        for d in descriptors() {
            let n = d.label_keys.len();
            let ours: Vec<_> = s.out.iter().filter(|m| m.name == d.name).collect();
            assert!(!ours.is_empty(), "no sample of {}", d.name);
            assert!(ours.iter().all(|m| m.label_values.len() == n), "{}", d.name);
        }
    }
}
