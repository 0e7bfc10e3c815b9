//! A shim's Stats answer (containerd's `io.containerd.cgroups.v1.Metrics` or `.v2.Metrics`)
//! as cAdvisor-named samples: CPU, memory, OOM kills, threads and block I/O. (Huge pages
//! come from berthd's own reading of the cgroup, which knows v2's as well.)

use super::sink::Sink;
use crate::core::metadata::containers::AnyValue;
use berth_proto::cgroups::{v1, v2};
use prost::Message;

const NS_PER_S: u64 = 1_000_000_000;
const US_PER_S: u64 = 1_000_000;

/// Adds the samples `any` carries; false when it is neither cgroup metrics type (or does
/// not decode). `device` names a block device by major and minor.
pub(super) fn emit(any: &AnyValue, s: &mut Sink, device: &dyn Fn(u64, u64) -> String) -> bool {
    if any.type_url.ends_with("io.containerd.cgroups.v1.Metrics") {
        let Ok(m) = v1::Metrics::decode(any.value.as_slice()) else {
            return false;
        };
        emit_v1(&m, s, device);
        return true;
    }
    if any.type_url.ends_with("io.containerd.cgroups.v2.Metrics") {
        let Ok(m) = v2::Metrics::decode(any.value.as_slice()) else {
            return false;
        };
        emit_v2(&m, s, device);
        return true;
    }
    false
}

/// Page faults by type, for the container alone and for its hierarchy.
fn faults(s: &mut Sink, own: (u64, u64), hierarchy: (u64, u64)) {
    let f = "container_memory_failures_total";
    s.put_with(f, &["pgfault", "container"], own.0);
    s.put_with(f, &["pgmajfault", "container"], own.1);
    s.put_with(f, &["pgfault", "hierarchy"], hierarchy.0);
    s.put_with(f, &["pgmajfault", "hierarchy"], hierarchy.1);
}

/// Bytes and operations by device and direction: the fs_* counters, and the byte counts
/// by operation again as blkio_device_usage.
struct Io<'a> {
    device: String,
    major: u64,
    minor: u64,
    op: &'a str,
    bytes: u64,
    ops: Option<u64>,
}

fn io(s: &mut Sink, e: Io<'_>) {
    let (major, minor) = (e.major.to_string(), e.minor.to_string());
    s.put_with(
        "container_blkio_device_usage_total",
        &[&e.device, &major, &minor, e.op],
        e.bytes,
    );
    let (bytes, ops) = match e.op.to_ascii_lowercase().as_str() {
        "read" => ("container_fs_reads_bytes_total", "container_fs_reads_total"),
        "write" => (
            "container_fs_writes_bytes_total",
            "container_fs_writes_total",
        ),
        _ => return,
    };
    s.put_with(bytes, &[&e.device], e.bytes);
    if let Some(n) = e.ops {
        s.put_with(ops, &[&e.device], n);
    }
}

fn emit_v1(m: &v1::Metrics, s: &mut Sink, device: &dyn Fn(u64, u64) -> String) {
    if let Some(cpu) = &m.cpu {
        if let Some(u) = &cpu.usage {
            s.put("container_cpu_usage_seconds_total", u.total / NS_PER_S);
            s.put("container_cpu_user_seconds_total", u.user / NS_PER_S);
            s.put("container_cpu_system_seconds_total", u.kernel / NS_PER_S);
        }
        if let Some(t) = &cpu.throttling {
            s.put("container_cpu_cfs_periods_total", t.periods);
            s.put(
                "container_cpu_cfs_throttled_periods_total",
                t.throttled_periods,
            );
            s.put(
                "container_cpu_cfs_throttled_seconds_total",
                t.throttled_time / NS_PER_S,
            );
        }
    }
    if let Some(mem) = &m.memory {
        let usage = mem.usage.unwrap_or_default();
        s.put("container_memory_usage_bytes", usage.usage);
        s.put("container_memory_max_usage_bytes", usage.max);
        s.put("container_memory_failcnt", usage.failcnt);
        s.put(
            "container_memory_working_set_bytes",
            usage.usage.saturating_sub(mem.total_inactive_file),
        );
        s.put("container_memory_rss", mem.total_rss);
        s.put("container_memory_cache", mem.total_cache);
        s.put("container_memory_mapped_file", mem.total_mapped_file);
        // memsw counts memory and swap together; without swap accounting it reads 0.
        let memsw = mem.swap.as_ref().map(|e| e.usage).unwrap_or(0);
        s.put("container_memory_swap", memsw.saturating_sub(usage.usage));
        s.put(
            "container_memory_kernel_usage",
            mem.kernel.as_ref().map(|e| e.usage).unwrap_or(0),
        );
        s.put(
            "container_memory_total_active_file_bytes",
            mem.total_active_file,
        );
        s.put(
            "container_memory_total_inactive_file_bytes",
            mem.total_inactive_file,
        );
        faults(
            s,
            (mem.pg_fault, mem.pg_maj_fault),
            (mem.total_pg_fault, mem.total_pg_maj_fault),
        );
    }
    if let Some(oom) = &m.memory_oom_control {
        s.put("container_oom_events_total", oom.oom_kill);
    }
    if let Some(p) = &m.pids {
        s.put("container_threads", p.current);
        s.put("container_threads_max", p.limit);
    }
    if let Some(b) = &m.blkio {
        for e in &b.io_service_bytes_recursive {
            let ops = b
                .io_serviced_recursive
                .iter()
                .find(|o| o.major == e.major && o.minor == e.minor && o.op == e.op)
                .map(|o| o.value);
            let name = if e.device.is_empty() {
                device(e.major, e.minor)
            } else {
                e.device.clone()
            };
            io(
                s,
                Io {
                    device: name,
                    major: e.major,
                    minor: e.minor,
                    op: &e.op,
                    bytes: e.value,
                    ops,
                },
            );
        }
    }
}

fn emit_v2(m: &v2::Metrics, s: &mut Sink, device: &dyn Fn(u64, u64) -> String) {
    if let Some(cpu) = &m.cpu {
        s.put(
            "container_cpu_usage_seconds_total",
            cpu.usage_usec / US_PER_S,
        );
        s.put("container_cpu_user_seconds_total", cpu.user_usec / US_PER_S);
        s.put(
            "container_cpu_system_seconds_total",
            cpu.system_usec / US_PER_S,
        );
        s.put("container_cpu_cfs_periods_total", cpu.nr_periods);
        s.put(
            "container_cpu_cfs_throttled_periods_total",
            cpu.nr_throttled,
        );
        s.put(
            "container_cpu_cfs_throttled_seconds_total",
            cpu.throttled_usec / US_PER_S,
        );
    }
    if let Some(mem) = &m.memory {
        s.put("container_memory_usage_bytes", mem.usage);
        s.put("container_memory_max_usage_bytes", mem.max_usage);
        s.put(
            "container_memory_working_set_bytes",
            mem.usage.saturating_sub(mem.inactive_file),
        );
        s.put("container_memory_rss", mem.anon);
        s.put("container_memory_cache", mem.file);
        s.put("container_memory_mapped_file", mem.file_mapped);
        s.put("container_memory_swap", mem.swap_usage);
        s.put("container_memory_kernel_usage", mem.kernel_stack + mem.slab);
        s.put("container_memory_total_active_file_bytes", mem.active_file);
        s.put(
            "container_memory_total_inactive_file_bytes",
            mem.inactive_file,
        );
        // v2's statistics are hierarchical already.
        let f = (mem.pgfault, mem.pgmajfault);
        faults(s, f, f);
    }
    if let Some(ev) = &m.memory_events {
        // v2 has no failcnt; "max" counts the times usage reached the limit.
        s.put("container_memory_failcnt", ev.max);
        s.put("container_oom_events_total", ev.oom_kill);
    }
    if let Some(p) = &m.pids {
        s.put("container_threads", p.current);
        s.put("container_threads_max", p.limit);
    }
    for e in m.io.iter().flat_map(|io| &io.usage) {
        let name = device(e.major, e.minor);
        for (op, bytes, ops) in [("Read", e.rbytes, e.rios), ("Write", e.wbytes, e.wios)] {
            io(
                s,
                Io {
                    device: name.clone(),
                    major: e.major,
                    minor: e.minor,
                    op,
                    bytes,
                    ops: Some(ops),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> AnyValue {
        AnyValue {
            type_url: type_url.into(),
            value,
        }
    }

    fn value(s: &Sink, name: &str) -> Option<u64> {
        s.out
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value.as_ref())
            .map(|v| v.value)
    }

    #[test]
    fn v1_metrics_become_cadvisor_samples() {
        let m = v1::Metrics {
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage {
                    total: 3 * NS_PER_S + 5,
                    user: 2 * NS_PER_S,
                    kernel: NS_PER_S,
                    per_cpu: vec![],
                }),
                throttling: Some(v1::Throttle {
                    periods: 10,
                    throttled_periods: 4,
                    throttled_time: 7 * NS_PER_S,
                }),
            }),
            memory: Some(v1::MemoryStat {
                total_inactive_file: 100,
                total_rss: 300,
                usage: Some(v1::MemoryEntry {
                    usage: 1000,
                    failcnt: 2,
                    ..Default::default()
                }),
                swap: Some(v1::MemoryEntry {
                    usage: 1500,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pids: Some(v1::PidsStat {
                current: 7,
                limit: 0,
            }),
            blkio: Some(v1::BlkIoStat {
                io_service_bytes_recursive: vec![v1::BlkIoEntry {
                    op: "Read".into(),
                    device: String::new(),
                    major: 254,
                    minor: 0,
                    value: 4096,
                }],
                io_serviced_recursive: vec![v1::BlkIoEntry {
                    op: "Read".into(),
                    device: String::new(),
                    major: 254,
                    minor: 0,
                    value: 3,
                }],
            }),
            ..Default::default()
        };
        let mut s = Sink::for_test();
        let named = |ma: u64, mi: u64| format!("dev{ma}.{mi}");
        assert!(emit(
            &any("io.containerd.cgroups.v1.Metrics", m.encode_to_vec()),
            &mut s,
            &named
        ));
        assert_eq!(value(&s, "container_cpu_usage_seconds_total"), Some(3));
        assert_eq!(
            value(&s, "container_cpu_cfs_throttled_seconds_total"),
            Some(7)
        );
        assert_eq!(value(&s, "container_memory_working_set_bytes"), Some(900));
        assert_eq!(value(&s, "container_memory_swap"), Some(500));
        assert_eq!(value(&s, "container_memory_failcnt"), Some(2));
        assert_eq!(value(&s, "container_threads"), Some(7));
        assert_eq!(value(&s, "container_fs_reads_total"), Some(3));
        let r = s
            .out
            .iter()
            .find(|m| m.name == "container_fs_reads_bytes_total")
            .unwrap();
        assert_eq!(r.label_values.last().map(String::as_str), Some("dev254.0"));
        assert_eq!(
            s.out
                .iter()
                .filter(|m| m.name == "container_memory_failures_total")
                .count(),
            4
        );
    }

    #[test]
    fn v2_metrics_become_cadvisor_samples_and_other_types_none() {
        let m = v2::Metrics {
            cpu: Some(v2::CpuStat {
                usage_usec: 4 * US_PER_S,
                ..Default::default()
            }),
            memory: Some(v2::MemoryStat {
                usage: 800,
                inactive_file: 300,
                anon: 200,
                ..Default::default()
            }),
            memory_events: Some(v2::MemoryEvents {
                oom_kill: 1,
                max: 5,
                ..Default::default()
            }),
            io: Some(v2::IoStat {
                usage: vec![v2::IoEntry {
                    major: 8,
                    minor: 0,
                    rbytes: 10,
                    wbytes: 20,
                    rios: 1,
                    wios: 2,
                }],
            }),
            ..Default::default()
        };
        let mut s = Sink::for_test();
        let named = |ma: u64, mi: u64| format!("{ma}:{mi}");
        assert!(emit(
            &any("io.containerd.cgroups.v2.Metrics", m.encode_to_vec()),
            &mut s,
            &named
        ));
        assert_eq!(value(&s, "container_cpu_usage_seconds_total"), Some(4));
        assert_eq!(value(&s, "container_memory_working_set_bytes"), Some(500));
        assert_eq!(value(&s, "container_oom_events_total"), Some(1));
        assert_eq!(value(&s, "container_memory_failcnt"), Some(5));
        assert_eq!(value(&s, "container_fs_writes_bytes_total"), Some(20));
        assert_eq!(value(&s, "container_fs_writes_total"), Some(2));
        let mut none = Sink::for_test();
        assert!(!emit(
            &any("google.protobuf.Empty", vec![]),
            &mut none,
            &named
        ));
        assert!(!emit(
            &any("io.containerd.cgroups.v2.Metrics", vec![0xff]),
            &mut none,
            &named
        ));
        assert!(none.out.is_empty());
    }
}
