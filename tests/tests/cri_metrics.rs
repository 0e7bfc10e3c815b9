//! The CRI's own metrics (KEP-2371: ListMetricDescriptors, ListPodSandboxMetrics) and the
//! pod-level figures of PodSandboxStats, through berthd's socket on real pods: cAdvisor's
//! names and labels, values that follow what the container was given and what it does, and
//! only running containers of ready pods.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use std::collections::HashMap;
use std::time::Duration;

mod cri_kit;
use cri_kit::*;

/// The names critest (cri-tools main) expects, less the huge page and pressure ones a
/// host may lack the controllers for.
const EXPECTED: &[&str] = &[
    "container_blkio_device_usage_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_file_descriptors",
    "container_fs_inodes_free",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_usage_bytes",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_last_seen",
    "container_memory_cache",
    "container_memory_failcnt",
    "container_memory_failures_total",
    "container_memory_kernel_usage",
    "container_memory_mapped_file",
    "container_memory_max_usage_bytes",
    "container_memory_rss",
    "container_memory_swap",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total",
    "container_oom_events_total",
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_quota",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
    "container_ulimits_soft",
];

/// Those whose samples depend on block device accounting the host may not do.
const OPTIONAL: &[&str] = &[
    "container_blkio_device_usage_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
];

async fn descriptors(k: &Kit) -> HashMap<String, cri::MetricDescriptor> {
    k.rt()
        .await
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect()
}

async fn pod_metrics(k: &Kit) -> Vec<cri::PodSandboxMetrics> {
    k.rt()
        .await
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics
}

/// The value of the first sample named `name` (whose extra labels end with `tail`).
fn value(ms: &[cri::Metric], name: &str, tail: &[&str]) -> Option<u64> {
    ms.iter()
        .find(|m| {
            m.name == name
                && m.label_values
                    .ends_with(&tail.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        })
        .and_then(|m| m.value.as_ref())
        .map(|v| v.value)
}

async fn pod_stats(k: &Kit, pod: &str) -> cri::LinuxPodSandboxStats {
    k.rt()
        .await
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .linux
        .unwrap()
}

#[tokio::test]
async fn pod_and_container_metrics_in_cadvisor_names() {
    let k = Kit::start();
    pull(&k, &k.busybox).await.unwrap();

    // Descriptors: every name critest expects, each with help and label keys.
    let descs = descriptors(&k).await;
    for name in EXPECTED {
        let d = descs
            .get(*name)
            .unwrap_or_else(|| panic!("no descriptor {name}"));
        assert!(!d.help.is_empty(), "{name}");
        assert_eq!(
            d.label_keys[..5],
            ["pod", "namespace", "container", "id", "image"],
            "{name}"
        );
    }

    let (pod, pod_config) = run_pod(&k, "metrics").await;
    let mut c = k.container_config("worker", "while true; do echo x >> /tmp/x; sleep 1; done");
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 20_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_container(&k, &pod, &pod_config, c).await;
    let started = status(&k, &id).await.started_at;
    // Four MiB in the writable layer, and a packet into the pod's namespace from the host.
    let r = exec(
        &k,
        &id,
        &["dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=4"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    let ip = pod_status(&k, &pod).await.network.unwrap().ip;
    let _ = std::net::TcpStream::connect_timeout(
        &format!("{ip}:9").parse().unwrap(),
        Duration::from_secs(2),
    );

    let all = pod_metrics(&k).await;
    let pm = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .expect("the pod's metrics");
    // Pod level: the pod's namespace's eth0, labelled with the pod and no container.
    let pod_labels = ["metrics", "default", "", pod.as_str(), "", "eth0"];
    let rx = pm
        .metrics
        .iter()
        .find(|m| m.name == "container_network_receive_packets_total")
        .expect("pod network samples");
    assert_eq!(rx.label_values, pod_labels);
    assert!(rx.value.as_ref().unwrap().value >= 1);
    assert!(
        value(
            &pm.metrics,
            "container_network_receive_bytes_total",
            &["eth0"]
        )
        .unwrap()
            > 0
    );

    // Container level.
    assert_eq!(pm.container_metrics.len(), 1);
    let cm = &pm.container_metrics[0];
    assert_eq!(cm.container_id, id);
    let ms = &cm.metrics;
    let base = [
        "metrics",
        "default",
        "worker",
        id.as_str(),
        k.busybox.as_str(),
    ];
    for m in ms {
        let d = descs
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
        assert_eq!(m.label_values[..5], base, "{}", m.name);
    }
    for name in EXPECTED.iter().filter(|n| !OPTIONAL.contains(n)) {
        let here = ms.iter().chain(&pm.metrics).any(|m| m.name == *name);
        assert!(here, "no sample of {name}");
    }
    let v = |name: &str| value(ms, name, &[]).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(v("container_spec_cpu_period"), 100_000);
    assert_eq!(v("container_spec_cpu_quota"), 20_000);
    assert_eq!(v("container_spec_cpu_shares"), 512);
    assert_eq!(v("container_spec_memory_limit_bytes"), 64 << 20);
    assert_eq!(
        v("container_start_time_seconds"),
        (started / 1_000_000_000) as u64
    );
    assert!(v("container_last_seen") >= v("container_start_time_seconds"));
    assert!(v("container_processes") >= 2, "sh and its sleep");
    assert!(v("container_threads") >= v("container_processes"));
    assert!(v("container_file_descriptors") >= 3);
    assert!(v("container_memory_usage_bytes") > 0);
    let fs = ms
        .iter()
        .find(|m| m.name == "container_fs_usage_bytes")
        .unwrap();
    assert!(fs.value.as_ref().unwrap().value >= 4 << 20, "{fs:?}");
    assert!(value(ms, "container_ulimits_soft", &["max_open_files"]).unwrap() > 0);

    // PodSandboxStats: the pod's network and every process in it (pause, sh, sleep).
    let stats = pod_stats(&k, &pod).await;
    let net = stats.network.expect("pod network stats");
    let eth0 = net.default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.unwrap().value > 0);
    assert!(stats.process.unwrap().process_count.unwrap().value >= 3);

    // A stopped container leaves the metrics; a stopped pod too.
    let mut rt = k.rt().await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let all = pod_metrics(&k).await;
    let pm = all.iter().find(|p| p.pod_sandbox_id == pod).unwrap();
    assert!(pm.container_metrics.is_empty());
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert!(pod_metrics(&k)
        .await
        .iter()
        .all(|p| p.pod_sandbox_id != pod));
}
