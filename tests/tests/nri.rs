//! NRI through berthd's plugin socket, with plugins of the test's own written on berth's NRI
//! types: one adjusts a container (an environment variable, an annotation, a memory limit)
//! and must hear every lifecycle event once, in order; one hangs in RunPodSandbox and must be
//! dropped after the request timeout without failing the pod.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use berth_proto::nri as api;
use berth_proto::ttrpc::{Request, Response};
use berth_proto::ttrpc_wire::{self as wire, FrameType, Header, HEADER_LEN};
use prost::Message;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

mod cri_kit;
use cri_kit::*;

const PLUGIN_CHANNEL: u32 = 1;
const RUNTIME_CHANNEL: u32 = 2;

/// What a test plugin does besides recording what it hears.
#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// Adjusts every container it is asked about.
    Adjust,
    /// Never answers RunPodSandbox.
    HangInRunPod,
}

/// An NRI plugin speaking the wire itself: NRI's connection multiplexer, ttrpc frames and
/// NRI's messages, with blocking sockets and one reader thread.
struct TestPlugin {
    heard: Arc<Mutex<Vec<String>>>,
    /// Its connection closed (its reader thread ended).
    ended: mpsc::Receiver<()>,
    conn: UnixStream,
}

impl Drop for TestPlugin {
    fn drop(&mut self) {
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
    }
}

fn send_mux(w: &Mutex<UnixStream>, channel: u32, frame: &[u8]) {
    let mut out = channel.to_be_bytes().to_vec();
    out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    out.extend_from_slice(frame);
    let _ = w.lock().unwrap().write_all(&out);
}

fn ttrpc_frame(stream_id: u32, kind: FrameType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![];
    wire::write_frame(&mut f, stream_id, kind, payload).unwrap();
    f
}

impl TestPlugin {
    /// Connects as `idx`-`name` and returns once berthd synchronized it.
    fn start(socket: &Path, name: &str, idx: &str, behaviour: Behaviour) -> TestPlugin {
        // berthd listens for plugins once its CRI has recovered, just after its socket.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match UnixStream::connect(socket) {
                Ok(c) => break c,
                Err(e) if std::time::Instant::now() > deadline => panic!("NRI socket: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Self::over(conn, name, idx, behaviour)
    }

    /// Speaks NRI on an established connection (a dialled one, or the one berthd hands a
    /// plugin it starts).
    fn over(conn: UnixStream, name: &str, idx: &str, behaviour: Behaviour) -> TestPlugin {
        let writer = Arc::new(Mutex::new(conn.try_clone().unwrap()));
        let heard = Arc::new(Mutex::new(vec![]));
        let (registered_tx, registered) = mpsc::channel();
        let (synced_tx, synced) = mpsc::channel();
        let mut reader = conn.try_clone().unwrap();
        let (h, w) = (heard.clone(), writer.clone());
        let (ended_tx, ended) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            // Dropped when the thread ends: `ended` then reports a disconnect.
            let _ended_tx = ended_tx;
            let mut pending: HashMap<u32, Vec<u8>> = HashMap::new();
            loop {
                let mut head = [0u8; 8];
                if reader.read_exact(&mut head).is_err() {
                    return;
                }
                let channel = u32::from_be_bytes(head[0..4].try_into().unwrap());
                let len = u32::from_be_bytes(head[4..8].try_into().unwrap()) as usize;
                let mut data = vec![0u8; len];
                if reader.read_exact(&mut data).is_err() {
                    return;
                }
                let buf = pending.entry(channel).or_default();
                buf.extend_from_slice(&data);
                // Every whole ttrpc frame buffered so far.
                while buf.len() >= HEADER_LEN {
                    let hdr = Header::decode(buf[..HEADER_LEN].try_into().unwrap()).unwrap();
                    let end = HEADER_LEN + hdr.length as usize;
                    if buf.len() < end {
                        break;
                    }
                    let payload: Vec<u8> = buf[HEADER_LEN..end].to_vec();
                    buf.drain(..end);
                    if channel == RUNTIME_CHANNEL {
                        let _ = registered_tx.send(Response::decode(payload.as_slice()).unwrap());
                        continue;
                    }
                    let req = Request::decode(payload.as_slice()).unwrap();
                    let answer = answer(&req, behaviour, &h);
                    if req.method == "Synchronize" {
                        let _ = synced_tx.send(());
                    }
                    if let Some(body) = answer {
                        let resp = Response {
                            status: None,
                            payload: body,
                        };
                        let frame =
                            ttrpc_frame(hdr.stream_id, FrameType::Response, &resp.encode_to_vec());
                        send_mux(&w, PLUGIN_CHANNEL, &frame);
                    }
                }
            }
        });
        let register = Request {
            service: "nri.pkg.api.v1alpha1.Runtime".into(),
            method: "RegisterPlugin".into(),
            payload: api::RegisterPluginRequest {
                plugin_name: name.into(),
                plugin_idx: idx.into(),
                nri_version: "v0.12.1".into(),
            }
            .encode_to_vec(),
            timeout_nano: 0,
            metadata: vec![],
        };
        send_mux(
            &writer,
            RUNTIME_CHANNEL,
            &ttrpc_frame(1, FrameType::Request, &register.encode_to_vec()),
        );
        let reply = registered.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            reply.status.as_ref().is_none_or(|s| s.code == 0),
            "{reply:?}"
        );
        synced.recv_timeout(Duration::from_secs(10)).unwrap();
        TestPlugin { heard, ended, conn }
    }

    fn heard(&self) -> Vec<String> {
        self.heard.lock().unwrap().clone()
    }
}

/// The plugin's answer to one call from berthd (None: it never answers), recording what it
/// heard as "Method name" with the pod's or container's name.
fn answer(req: &Request, behaviour: Behaviour, heard: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let name = match req.method.as_str() {
        "RunPodSandbox" | "StopPodSandbox" | "RemovePodSandbox" => {
            api::RunPodSandboxRequest::decode(req.payload.as_slice())
                .ok()
                .and_then(|r| r.pod)
                .map(|p| p.name)
        }
        "Configure" | "Synchronize" => None,
        // Every container event carries the pod as field 1 and the container as field 2.
        _ => api::PostStartContainerRequest::decode(req.payload.as_slice())
            .ok()
            .and_then(|r| r.container)
            .map(|c| c.name),
    };
    heard
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method, name.unwrap_or_default()));
    match req.method.as_str() {
        "Configure" => Some(api::ConfigureResponse { events: 0 }.encode_to_vec()),
        "RunPodSandbox" if behaviour == Behaviour::HangInRunPod => None,
        "CreateContainer" if behaviour == Behaviour::Adjust => Some(
            api::CreateContainerResponse {
                adjust: Some(api::ContainerAdjustment {
                    annotations: [("nri.test/adjusted".to_string(), "yes".to_string())].into(),
                    env: vec![api::KeyValue {
                        key: "NRI_ADJUSTED".into(),
                        value: "by-the-test-plugin".into(),
                    }],
                    linux: Some(api::LinuxContainerAdjustment {
                        resources: Some(api::LinuxResources {
                            memory: Some(api::LinuxMemory {
                                limit: Some(api::OptionalInt64 { value: 96 << 20 }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        // Every other answer is an empty message.
        _ => Some(vec![]),
    }
}

fn nri_config(socket: &Path, timeout: &str) -> String {
    format!(
        "\n[nri]\nenable = true\nsocket_path = \"{}\"\nplugin_request_timeout = \"{timeout}\"\n",
        socket.display()
    )
}

/// The container's OCI spec as berthd handed it to the shim (its bundle's config.json).
fn bundle_spec(state: &Path, id: &str) -> serde_json::Value {
    let found = std::process::Command::new("find")
        .arg(state)
        .args(["-path", &format!("*/{id}/config.json")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout)
        .lines()
        .next()
        .map(String::from)
        .unwrap_or_else(|| panic!("no bundle for {id} under {}", state.display()));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_plugin_adjusts_a_container_and_hears_its_lifecycle_once_in_order() {
    let sock_dir = tempfile::tempdir().unwrap();
    let socket = sock_dir.path().join("nri.sock");
    let k = Kit::start_configured(&nri_config(&socket, "5s"));
    pull(&k, &k.busybox).await.unwrap();
    let plugin = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || TestPlugin::start(&socket, "adjuster", "10", Behaviour::Adjust)
    })
    .await
    .unwrap();

    let (pod, pod_config) = run_pod(&k, "nri-pod").await;
    let c = k.container_config("adjusted", "sleep 1000");
    let id = run_container(&k, &pod, &pod_config, c).await;
    let env = exec(&k, &id, &["/bin/sh", "-c", "echo $NRI_ADJUSTED"], 10)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&env.stdout).trim(),
        "by-the-test-plugin"
    );
    let spec = bundle_spec(&k.d.state(), &id);
    assert_eq!(spec["annotations"]["nri.test/adjusted"], "yes");
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 96 << 20);
    // ... and the container's cgroup has the plugin's limit (cgroup v1 or v2).
    let cgroup = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max";
    let seen = exec(
        &k,
        &id,
        &["/bin/sh", "-c", &format!("{cgroup} 2>/dev/null")],
        10,
    )
    .await
    .unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout).to_string();
    assert!(seen.contains(&(96u64 << 20).to_string()), "{seen:?}");
    // A resize: plugins hear UpdateContainer, then PostUpdateContainer.
    let limits = cri::LinuxContainerResources {
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    };
    let mut rt = k.rt().await;
    let resize = cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(limits),
        ..Default::default()
    };
    rt.update_container_resources(resize).await.unwrap();

    // The pod's stop stops its container first; a second stop is no second event; the
    // pod's removal removes the container first.
    let stop = cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    };
    for _ in 0..2 {
        rt.stop_pod_sandbox(stop.clone()).await.unwrap();
    }
    let remove = cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    };
    rt.remove_pod_sandbox(remove).await.unwrap();

    let heard: Vec<String> = plugin
        .heard()
        .into_iter()
        .filter(|e| e.ends_with(" adjusted") || e.ends_with(" nri-pod"))
        .collect();
    assert_eq!(
        heard,
        [
            "RunPodSandbox nri-pod",
            "CreateContainer adjusted",
            "PostCreateContainer adjusted",
            "StartContainer adjusted",
            "PostStartContainer adjusted",
            "UpdateContainer adjusted",
            "PostUpdateContainer adjusted",
            "StopContainer adjusted",
            "StopPodSandbox nri-pod",
            "RemoveContainer adjusted",
            "RemovePodSandbox nri-pod",
        ]
    );
}

#[tokio::test]
async fn a_hung_plugin_is_dropped_and_the_pod_runs() {
    let sock_dir = tempfile::tempdir().unwrap();
    let socket = sock_dir.path().join("nri.sock");
    let k = Kit::start_configured(&nri_config(&socket, "1s"));
    let hung = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || TestPlugin::start(&socket, "hangs", "05", Behaviour::HangInRunPod)
    })
    .await
    .unwrap();
    let (pod, _) = run_pod(&k, "survives").await;
    assert_eq!(
        pod_status(&k, &pod).await.state,
        cri::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(hung.heard().last().unwrap(), "RunPodSandbox survives");
    // Dropped: it hears nothing of the next pod.
    let (second, _) = run_pod(&k, "second").await;
    assert_eq!(
        pod_status(&k, &second).await.state,
        cri::PodSandboxState::SandboxReady as i32
    );
    assert!(
        !hung.heard().iter().any(|e| e.ends_with(" second")),
        "{:?}",
        hung.heard()
    );
}

/// Not a test of its own: berthd runs this binary (through a script in `plugin_path`) as a
/// plugin it starts, handing it its end of the plugin socket as fd 3 (NRI_PLUGIN_SOCKET).
/// Run any other way, it does nothing: so it is ignored, not counted as a passing test.
#[test]
#[ignore = "berthd runs it as a plugin"]
fn launched_plugin() {
    let (Ok(fd), Ok(name), Ok(idx)) = (
        std::env::var("NRI_PLUGIN_SOCKET"),
        std::env::var("NRI_PLUGIN_NAME"),
        std::env::var("NRI_PLUGIN_IDX"),
    ) else {
        return;
    };
    // SAFETY: berthd gave this process the descriptor for its plugin socket; nothing else
    // in it owns that descriptor.
    let conn = unsafe { UnixStream::from_raw_fd(fd.parse().unwrap()) };
    let plugin = TestPlugin::over(conn, &name, &idx, Behaviour::Adjust);
    // Served until berthd lets go (bounded, should berthd be killed and the socket linger).
    let _ = plugin.ended.recv_timeout(Duration::from_secs(120));
}

#[tokio::test]
async fn a_plugin_berthd_starts_joins_and_adjusts_like_a_dialled_one() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let script = plugins.join("10-launched");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} --exact launched_plugin --ignored --nocapture >/dev/null 2>&1\n",
            exe.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "{}plugin_path = \"{}\"\n",
        nri_config(&dir.path().join("nri.sock"), "5s"),
        plugins.display()
    );
    let k = Kit::start_configured(&config);
    pull(&k, &k.busybox).await.unwrap();
    // The plugin joins as berthd starts; a pod made before it has synchronized would not be
    // adjusted, so ask until one is.
    let (pod, pod_config) = run_pod(&k, "launched-pod").await;
    let mut seen = String::new();
    for attempt in 0..50 {
        let c = k.container_config(&format!("try{attempt}"), "sleep 1000");
        let id = run_container(&k, &pod, &pod_config, c).await;
        let env = exec(&k, &id, &["/bin/sh", "-c", "echo $NRI_ADJUSTED"], 10)
            .await
            .unwrap();
        seen = String::from_utf8_lossy(&env.stdout).trim().to_string();
        if !seen.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, "by-the-test-plugin");
}
