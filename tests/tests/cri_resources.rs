//! Resources through the CRI, read back from the host's cgroup files: pod-level resources
//! (UpdatePodSandboxResources, KEP-5419) land in the pod's cgroup (its cgroup_parent),
//! UpdateContainerResources changes a running container's every cgroup field in place, and
//! GetContainerEvents carries the pod's status and all its containers' (KEP-3386).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cri_kit;
use cri_kit::*;

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A cgroup file of `rel`, under v1's `ctrl` hierarchy or v2's one.
fn cg(ctrl: &str, rel: &str, file: &str) -> PathBuf {
    let rel = rel.trim_start_matches('/');
    if v2() {
        Path::new("/sys/fs/cgroup").join(rel).join(file)
    } else {
        Path::new("/sys/fs/cgroup").join(ctrl).join(rel).join(file)
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

async fn resources_on(k: Kit) {
    pull(&k, &k.busybox).await.unwrap();
    let mut events = k
        .rt()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    // One parent per kit: the tests of this file share a process and run at once.
    let parent = format!(
        "/berth-test-pod-{}",
        k.work
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches('.')
    );
    let mut pod_config = k.pod_config("res");
    pod_config.linux.as_mut().unwrap().cgroup_parent = parent.clone();
    let pod = run_pod_configured(&k, &pod_config).await;
    let c = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config("sleeper", "sleep 600"),
    )
    .await;

    // Pod-level resources: the containers' sum plus the overhead, in the pod's cgroup.
    let resources = cri::LinuxContainerResources {
        memory_limit_in_bytes: 200 << 20,
        cpu_shares: 512,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        ..Default::default()
    };
    let overhead = cri::LinuxContainerResources {
        memory_limit_in_bytes: 10 << 20,
        ..Default::default()
    };
    update_pod(&k, &pod, Some(overhead), Some(resources))
        .await
        .unwrap();
    if v2() {
        assert_eq!(
            read(&cg("memory", &parent, "memory.max")),
            (210u64 << 20).to_string()
        );
        assert_eq!(read(&cg("cpu", &parent, "cpu.max")), "50000 100000");
    } else {
        assert_eq!(
            read(&cg("memory", &parent, "memory.limit_in_bytes")),
            (210u64 << 20).to_string()
        );
        assert_eq!(read(&cg("cpu", &parent, "cpu.shares")), "512");
        assert_eq!(read(&cg("cpu", &parent, "cpu.cfs_quota_us")), "50000");
    }
    // A resize down: the pod's cgroup follows.
    let smaller = cri::LinuxContainerResources {
        memory_limit_in_bytes: 150 << 20,
        ..Default::default()
    };
    update_pod(&k, &pod, None, Some(smaller)).await.unwrap();
    let mem_file = if v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(
        read(&cg("memory", &parent, mem_file)),
        (150u64 << 20).to_string()
    );
    // An unknown pod is NotFound, not OK.
    let err = update_pod(&k, "no-such-pod", None, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // UpdateContainerResources: every cgroup field, in place, in the container's cgroup.
    let update = cri::LinuxContainerResources {
        cpu_period: 50_000,
        cpu_quota: 20_000,
        cpu_shares: 300,
        cpuset_cpus: "0".into(),
        cpuset_mems: "0".into(),
        memory_limit_in_bytes: 96 << 20,
        oom_score_adj: 500,
        ..Default::default()
    };
    k.rt()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: c.clone(),
            linux: Some(update),
            ..Default::default()
        })
        .await
        .unwrap();
    let rel = format!("{parent}/{c}");
    if v2() {
        assert_eq!(read(&cg("cpu", &rel, "cpu.max")), "20000 50000");
        assert_eq!(
            read(&cg("memory", &rel, "memory.max")),
            (96u64 << 20).to_string()
        );
    } else {
        assert_eq!(read(&cg("cpu", &rel, "cpu.cfs_period_us")), "50000");
        assert_eq!(read(&cg("cpu", &rel, "cpu.cfs_quota_us")), "20000");
        assert_eq!(read(&cg("cpu", &rel, "cpu.shares")), "300");
        assert_eq!(
            read(&cg("memory", &rel, "memory.limit_in_bytes")),
            (96u64 << 20).to_string()
        );
    }
    assert_eq!(read(&cg("cpuset", &rel, "cpuset.cpus")), "0");
    assert_eq!(read(&cg("cpuset", &rel, "cpuset.mems")), "0");
    let pid = status_pid(&k, &c).await;
    assert_eq!(
        read(Path::new(&format!("/proc/{pid}/oom_score_adj"))),
        "500"
    );
    let st = status(&k, &c).await;
    let got = st.resources.unwrap().linux.unwrap();
    assert_eq!(got.cpu_quota, 20_000);
    assert_eq!(got.cpuset_cpus, "0");

    // Events: the pod's own (created, started) and the container's, each with the pod's
    // status and the status of every container in the pod.
    let mut pod_kinds = vec![];
    let mut container_created = None;
    while pod_kinds.len() < 2 || container_created.is_none() {
        let ev = next_event(&mut events).await;
        if ev.container_id == pod {
            pod_kinds.push(ev.container_event_type);
        } else if ev.container_id == c
            && ev.container_event_type == cri::ContainerEventType::ContainerCreatedEvent as i32
        {
            container_created = Some(ev);
        }
    }
    use cri::ContainerEventType as E;
    assert_eq!(
        pod_kinds,
        [
            E::ContainerCreatedEvent as i32,
            E::ContainerStartedEvent as i32
        ]
    );
    let ev = container_created.unwrap();
    let ps = ev
        .pod_sandbox_status
        .expect("the pod's status in the event");
    assert_eq!(ps.id, pod);
    assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
    let ids: Vec<_> = ev
        .containers_statuses
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&c));

    // A second container: its events list both.
    let c2 = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config("second", "sleep 600"),
    )
    .await;
    let ev = loop {
        let ev = next_event(&mut events).await;
        if ev.container_id == c2 && ev.container_event_type == E::ContainerStartedEvent as i32 {
            break ev;
        }
    };
    let mut ids: Vec<_> = ev
        .containers_statuses
        .iter()
        .map(|s| s.id.clone())
        .collect();
    ids.sort();
    let mut want = vec![c.clone(), c2.clone()];
    want.sort();
    assert_eq!(ids, want);

    // RemovePodSandbox stops the pod first: the pod's stopped, then deleted.
    let gone = cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    };
    k.rt().await.remove_pod_sandbox(gone).await.unwrap();
    let mut last = vec![];
    while !last.contains(&(E::ContainerDeletedEvent as i32)) {
        let ev = next_event(&mut events).await;
        if ev.container_id == pod {
            last.push(ev.container_event_type);
        }
    }
    assert!(
        last.contains(&(E::ContainerStoppedEvent as i32)),
        "{last:?}"
    );
    for ctrl in ["cpu", "memory", "cpuset", "cpuacct", "pids"] {
        let _ = std::fs::remove_dir(cg(ctrl, &parent, ""));
    }
}

async fn update_pod(
    k: &Kit,
    pod: &str,
    overhead: Option<cri::LinuxContainerResources>,
    resources: Option<cri::LinuxContainerResources>,
) -> Result<(), tonic::Status> {
    k.rt()
        .await
        .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.into(),
            overhead,
            resources,
        })
        .await
        .map(drop)
}

async fn next_event(
    events: &mut tonic::Streaming<cri::ContainerEventResponse>,
) -> cri::ContainerEventResponse {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .unwrap()
}

/// The container's init pid, from the verbose status's info.
async fn status_pid(k: &Kit, id: &str) -> u32 {
    let r = k
        .rt()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    info["pid"].as_u64().unwrap() as u32
}

#[tokio::test]
async fn pod_and_container_resources_on_the_native_runtime() {
    resources_on(Kit::start()).await;
}

#[tokio::test]
async fn pod_and_container_resources_on_runc() {
    if which("runc").is_none() {
        eprintln!("skipping: runc is not on PATH");
        return;
    }
    resources_on(Kit::start_with("runc")).await;
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}
