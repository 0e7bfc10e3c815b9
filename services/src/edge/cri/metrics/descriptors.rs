//! The metrics berth serves, named as cAdvisor names them (the kubelet's dashboards and
//! alerts expect these names): each one's help, kind and label keys. Every sample the
//! collectors make is checked against this table, so a name or a label count cannot drift.

use berth_proto::cri::v1 as cri;

/// The labels every container sample carries: the pod, its namespace, the container's
/// name, its id and its image (pod-level samples leave container and image empty).
pub(super) const BASE: [&str; 5] = ["pod", "namespace", "container", "id", "image"];

/// The label keys a metric adds to [`BASE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Extra {
    None,
    Interface,
    Device,
    Blkio,
    Failure,
    PageSize,
    Ulimit,
}

impl Extra {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Extra::None => &[],
            Extra::Interface => &["interface"],
            Extra::Device => &["device"],
            Extra::Blkio => &["device", "major", "minor", "operation"],
            Extra::Failure => &["failure_type", "scope"],
            Extra::PageSize => &["pagesize"],
            Extra::Ulimit => &["ulimit"],
        }
    }

    /// How many label values a sample of this family carries.
    pub(super) fn arity(self) -> usize {
        BASE.len() + self.keys().len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
}

pub(super) struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub extra: Extra,
}

const fn counter(name: &'static str, help: &'static str, extra: Extra) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Counter,
        extra,
    }
}

const fn gauge(name: &'static str, help: &'static str, extra: Extra) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Gauge,
        extra,
    }
}

use Extra as E;

#[rustfmt::skip]
pub(super) const ALL: &[Desc] = &[
    // CPU
    counter("container_cpu_usage_seconds_total", "CPU time the container has used, in seconds.", E::None),
    counter("container_cpu_user_seconds_total", "CPU time the container has used in user mode, in seconds.", E::None),
    counter("container_cpu_system_seconds_total", "CPU time the container has used in the kernel, in seconds.", E::None),
    counter("container_cpu_cfs_periods_total", "CFS enforcement periods that have elapsed.", E::None),
    counter("container_cpu_cfs_throttled_periods_total", "CFS enforcement periods in which the container was throttled.", E::None),
    counter("container_cpu_cfs_throttled_seconds_total", "Time the container spent throttled, in seconds.", E::None),
    // Memory
    gauge("container_memory_usage_bytes", "Memory the container's cgroup charges, cache included, in bytes.", E::None),
    gauge("container_memory_max_usage_bytes", "The highest memory usage recorded for the container, in bytes.", E::None),
    gauge("container_memory_working_set_bytes", "Memory usage less inactive file pages: what the kubelet evicts on, in bytes.", E::None),
    gauge("container_memory_rss", "Anonymous and swap cache memory, in bytes.", E::None),
    gauge("container_memory_cache", "Page cache memory, in bytes.", E::None),
    gauge("container_memory_swap", "Swap the container uses, in bytes.", E::None),
    gauge("container_memory_mapped_file", "Memory-mapped file pages, in bytes.", E::None),
    gauge("container_memory_kernel_usage", "Kernel memory charged to the container (stacks, slab, ...), in bytes.", E::None),
    counter("container_memory_failcnt", "Times the container's memory usage hit its limit.", E::None),
    counter("container_memory_failures_total", "Page faults, by type and by scope (the container's own or its whole hierarchy).", E::Failure),
    gauge("container_memory_total_active_file_bytes", "Active page cache backed by files, in bytes.", E::None),
    gauge("container_memory_total_inactive_file_bytes", "Inactive page cache backed by files, in bytes.", E::None),
    counter("container_oom_events_total", "Processes of the container the kernel killed for want of memory.", E::None),
    // Huge pages
    gauge("container_hugetlb_usage_bytes", "Huge pages in use, in bytes, by page size.", E::PageSize),
    gauge("container_hugetlb_max_usage_bytes", "The highest huge page usage recorded, in bytes, by page size.", E::PageSize),
    // Pressure stall information
    counter("container_pressure_cpu_waiting_seconds_total", "Time some tasks of the container waited for a CPU, in seconds.", E::None),
    counter("container_pressure_cpu_stalled_seconds_total", "Time all tasks of the container waited for a CPU, in seconds.", E::None),
    counter("container_pressure_memory_waiting_seconds_total", "Time some tasks of the container waited for memory, in seconds.", E::None),
    counter("container_pressure_memory_stalled_seconds_total", "Time all tasks of the container waited for memory, in seconds.", E::None),
    counter("container_pressure_io_waiting_seconds_total", "Time some tasks of the container waited for I/O, in seconds.", E::None),
    counter("container_pressure_io_stalled_seconds_total", "Time all tasks of the container waited for I/O, in seconds.", E::None),
    // Filesystem: the writable layer and the disk under it
    gauge("container_fs_usage_bytes", "Bytes the container's writable layer takes.", E::Device),
    gauge("container_fs_limit_bytes", "Bytes the filesystem holding the writable layer can hold.", E::Device),
    gauge("container_fs_inodes_total", "Inodes of the filesystem holding the writable layer.", E::Device),
    gauge("container_fs_inodes_free", "Free inodes on the filesystem holding the writable layer.", E::Device),
    // Block I/O
    counter("container_fs_reads_bytes_total", "Bytes read from a block device.", E::Device),
    counter("container_fs_reads_total", "Reads completed on a block device.", E::Device),
    counter("container_fs_writes_bytes_total", "Bytes written to a block device.", E::Device),
    counter("container_fs_writes_total", "Writes completed on a block device.", E::Device),
    counter("container_blkio_device_usage_total", "Bytes moved to or from a block device, by operation.", E::Blkio),
    // Network: the pod's namespace
    counter("container_network_receive_bytes_total", "Bytes received on an interface of the pod.", E::Interface),
    counter("container_network_receive_packets_total", "Packets received on an interface of the pod.", E::Interface),
    counter("container_network_receive_packets_dropped_total", "Packets dropped while receiving on an interface of the pod.", E::Interface),
    counter("container_network_receive_errors_total", "Errors while receiving on an interface of the pod.", E::Interface),
    counter("container_network_transmit_bytes_total", "Bytes sent on an interface of the pod.", E::Interface),
    counter("container_network_transmit_packets_total", "Packets sent on an interface of the pod.", E::Interface),
    counter("container_network_transmit_packets_dropped_total", "Packets dropped while sending on an interface of the pod.", E::Interface),
    counter("container_network_transmit_errors_total", "Errors while sending on an interface of the pod.", E::Interface),
    // Processes
    gauge("container_processes", "Processes in the container.", E::None),
    gauge("container_threads", "Threads in the container.", E::None),
    gauge("container_threads_max", "Most threads the container may have; zero when unlimited.", E::None),
    gauge("container_file_descriptors", "File descriptors the container's processes hold open.", E::None),
    gauge("container_sockets", "Sockets the container's processes hold open.", E::None),
    gauge("container_ulimits_soft", "Soft resource limits of the container's first process (finite ones only).", E::Ulimit),
    // Lifetime
    gauge("container_last_seen", "When the container was last seen running, in seconds since the epoch.", E::None),
    gauge("container_start_time_seconds", "When the container started, in seconds since the epoch.", E::None),
    // What the container was given
    gauge("container_spec_cpu_period", "The container's CFS period, in microseconds.", E::None),
    gauge("container_spec_cpu_quota", "The container's CFS quota per period, in microseconds (absent when unlimited).", E::None),
    gauge("container_spec_cpu_shares", "The container's CPU shares.", E::None),
    gauge("container_spec_memory_limit_bytes", "The container's memory limit in bytes; zero when unlimited.", E::None),
    gauge("container_spec_memory_reservation_limit_bytes", "The container's memory reservation (soft limit) in bytes; zero when unset.", E::None),
    gauge("container_spec_memory_swap_limit_bytes", "The container's memory and swap limit in bytes; zero when unlimited.", E::None),
];

/// The table entry for `name`.
pub(super) fn find(name: &str) -> Option<&'static Desc> {
    ALL.iter().find(|d| d.name == name)
}

/// Every descriptor, as ListMetricDescriptors answers.
pub fn list() -> Vec<cri::MetricDescriptor> {
    ALL.iter()
        .map(|d| cri::MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE
                .iter()
                .chain(d.extra.keys())
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_descriptor_has_help_and_labels() {
        let mut names: Vec<_> = ALL.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for d in list() {
            assert!(
                !d.help.is_empty() && d.label_keys.len() >= BASE.len(),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn counters_end_in_total_or_failcnt() {
        for d in ALL.iter().filter(|d| d.kind == Kind::Counter) {
            assert!(
                d.name.ends_with("_total") || d.name.ends_with("_failcnt"),
                "{}",
                d.name
            );
        }
    }
}
