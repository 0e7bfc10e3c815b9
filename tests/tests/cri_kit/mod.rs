//! What the CRI black-box suites share: a berthd with the CRI configured over a loopback
//! registry and a CNI bridge of its own, and small CRI call helpers.

#![allow(dead_code)] // each suite uses its own share of the helpers

use berth_proto::cri::v1 as cri;
use berth_tests::{oci, require_root, Daemon};
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// A berthd with the CRI configured: a loopback registry holding a pause image and busybox
/// (reached through a hosts.toml tree), and a CNI bridge network of its own.
pub struct Kit {
    pub d: Daemon,
    pub _registry: oci::Registry,
    pub work: tempfile::TempDir,
    pub pause: String,
    pub busybox: String,
    pub subnet_prefix: String,
    pub bridge: String,
}

impl Drop for Kit {
    /// The daemon first (no more ADDs), then the test's bridge.
    fn drop(&mut self) {
        let _ = self.d.kill();
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
    }
}

pub fn cni_usable() -> bool {
    Path::new("/usr/lib/cni/bridge").exists() && Path::new("/usr/lib/cni/host-local").exists()
}

impl Kit {
    pub fn start() -> Kit {
        Self::start_with("")
    }

    /// A kit whose pods run under `runtime` (`cri.runtime_binary`; empty: the default).
    pub fn start_with(runtime: &str) -> Kit {
        let extra = if runtime.is_empty() {
            String::new()
        } else {
            format!("runtime_binary = \"{runtime}\"\n")
        };
        Self::start_configured(&extra)
    }

    /// A kit whose berthd.toml ends with `extra`: more `[cri]` keys, then tables of its own.
    pub fn start_configured(extra: &str) -> Kit {
        require_root();
        assert!(
            cni_usable(),
            "the CNI plugins are missing: apt-get install containernetworking-plugins"
        );
        let work = tempfile::tempdir().unwrap();
        let (registry, pause, busybox) = registry(work.path());
        // A bridge and subnet of this test's own (the pid keeps parallel runs apart).
        // Each kit its own bridge and /24: tests of one run share a pid, so a counter
        // tells them apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = 20 + (std::process::id() % 38 * 6 + k) % 230;
        let subnet_prefix = format!("10.215.{n}.");
        // A bridge of this name left by an earlier, killed run would carry its old address.
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &format!("bt{n}")])
            .output();
        let net = work.path().join("net.d");
        std::fs::create_dir_all(&net).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "berth-cri-test",
            "plugins": [
                {"type": "bridge", "bridge": format!("bt{n}"), "isGateway": true, "ipMasq": false, "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": work.path().join("ipam"), "ranges": [[{"subnet": format!("10.215.{n}.0/24")}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "loopback"}
            ]
        });
        std::fs::write(net.join("10-test.conflist"), conflist.to_string()).unwrap();
        let d = cri_daemon(work.path(), &pause, &net, extra);
        Kit {
            d,
            _registry: registry,
            work,
            pause,
            busybox,
            subnet_prefix,
            bridge: format!("bt{n}"),
        }
    }

    pub async fn channel(&self) -> Channel {
        self.d.client().await.unwrap().channel()
    }

    pub async fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn img(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub fn logs(&self) -> PathBuf {
        self.work.path().join("pod-logs")
    }

    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: format!("{name}-host"),
            log_directory: self.logs().join(name).display().to_string(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            labels: [("app".to_string(), name.to_string())].into(),
            linux: Some(cri::LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    /// A shell reading its stdin (`stdin_once`: it ends with the first attach's input).
    pub fn shell(&self, stdin_once: bool) -> cri::ContainerConfig {
        let mut c = self.container_config("shell", "");
        c.command = vec!["/bin/sh".into()];
        c.stdin = true;
        c.stdin_once = stdin_once;
        c
    }

    pub fn container_config(&self, name: &str, script: &str) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.busybox.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }
}

/// A loopback registry holding a pause image and busybox, reached through a hosts.toml tree
/// under `work` (plain HTTP): (the registry, pause's reference, busybox's).
pub fn registry(work: &Path) -> (oci::Registry, String, String) {
    let registry = oci::Registry::start().unwrap();
    let layer = oci::busybox_layer();
    let pause_layout = work.join("pause");
    oci::layout_with(
        &pause_layout,
        "v1",
        std::slice::from_ref(&layer),
        serde_json::json!({"Cmd": ["/bin/sleep", "1000000"]}),
    );
    let pause = registry.push(&pause_layout, "v1", "pause").unwrap();
    let bb_layout = work.join("busybox");
    oci::layout_with(
        &bb_layout,
        "v1",
        &[layer],
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "User": "0"}),
    );
    let busybox = registry.push(&bb_layout, "v1", "busybox").unwrap();
    let host = pause.split('/').next().unwrap().to_string();
    let certs = work.join("certs.d").join(&host);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(
        certs.join("hosts.toml"),
        format!("server = \"http://{host}\"\n[host.\"http://{host}\"]\ncapabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    (registry, pause, busybox)
}

/// A berthd whose CRI pulls through [`registry`]'s hosts.toml tree under `work`, with
/// `pause` as the sandbox image and the CNI configs in `net`; `extra` adds to `[cri]`.
pub fn cri_daemon(work: &Path, pause: &str, net: &Path, extra: &str) -> Daemon {
    let config = work.join("berthd.toml");
    std::fs::write(
        &config,
        format!(
            "[registry]\nconfig_path = \"{}\"\n[cri]\nsandbox_image = \"{pause}\"\ncni_conf_dir = \"{}\"\nrestrict_oom_score_adj = true\n{extra}",
            work.join("certs.d").display(),
            net.display(),
        ),
    )
    .unwrap();
    Daemon::start_with(move |cmd| {
        cmd.arg("--config").arg(&config);
    })
    .unwrap()
}

/// PullImage; the image id on success.
pub async fn pull(k: &Kit, image: &str) -> Result<String, tonic::Status> {
    k.img()
        .await
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

pub async fn run_pod(k: &Kit, name: &str) -> (String, cri::PodSandboxConfig) {
    let config = k.pod_config(name);
    (run_pod_configured(k, &config).await, config)
}

/// RunPodSandbox with a config of the test's own; the pod's id.
pub async fn run_pod_configured(k: &Kit, config: &cri::PodSandboxConfig) -> String {
    k.rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

pub async fn run_container(
    k: &Kit,
    pod: &str,
    pod_config: &cri::PodSandboxConfig,
    c: cri::ContainerConfig,
) -> String {
    let mut rt = k.rt().await;
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(c),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    id
}

pub async fn status(k: &Kit, id: &str) -> cri::ContainerStatus {
    k.rt()
        .await
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

pub async fn pod_status(k: &Kit, id: &str) -> cri::PodSandboxStatus {
    k.rt()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

pub async fn exec(
    k: &Kit,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    k.rt()
        .await
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        })
        .await
        .map(|r| r.into_inner())
}

/// Polls until `f` holds (10 s at most).
pub async fn until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    what: &str,
    mut f: F,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
