//! The Kubernetes CRI (runtime.v1) through berthd's socket, with a CRI client generated from
//! berth's own proto: pods on a real CNI bridge, containers with logs in the kubelet's format,
//! ExecSync (and its timeout), stats, hostPort, a SIGKILLed daemon, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use std::time::{Duration, Instant};

mod cri_kit;
use cri_kit::*;

#[tokio::test]
async fn pod_lifecycle_logs_exec_stats_network() {
    let k = Kit::start();
    let mut img = k.img().await;
    // Images: pulled through the hosts.toml tree, found by tag, by id and by digest.
    let pulled = pull(&k, &k.busybox).await.unwrap();
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    for name in [k.busybox.clone(), pulled.clone(), pulled[7..19].to_string()] {
        let st = img
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: name.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap_or_else(|| panic!("image {name} not found"));
        assert_eq!(st.id, pulled);
        assert_eq!(st.repo_tags, vec![k.busybox.clone()]);
        assert_eq!(st.repo_digests.len(), 1);
        assert_eq!(st.uid.map(|u| u.value), Some(0));
    }
    let digest_ref = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: k.busybox.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .repo_digests[0]
        .clone();
    assert!(img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: digest_ref,
                ..Default::default()
            }),
            verbose: false
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .is_some());

    // A pod: ready, with an address on the test bridge, its DNS and hostname in place.
    // hostPort: a free port on this machine, mapped by CNI's portmap plugin.
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pod_config = k.pod_config("web");
    pod_config.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port: host_port as i32,
        host_ip: String::new(),
    }];
    let pod = k
        .rt()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ps = pod_status(&k, &pod).await;
    assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = ps.network.unwrap().ip;
    assert!(ip.starts_with(&k.subnet_prefix), "pod ip {ip}");
    // ctr sees the CRI's objects in namespace k8s.io.
    let listed = berth_tests::ok(&k.d.ctr(&["-n", "k8s.io", "containers", "ls", "-q"]));
    assert!(listed.contains(&pod), "{listed}");

    // A container whose output goes to the kubelet's log, serving HTTP on the pod's address.
    let script = "echo to-stdout; echo to-stderr >&2; hostname; cat /etc/resolv.conf; echo hello-pod > /tmp/index.html; exec /bin/busybox httpd -f -p 8080 -h /tmp";
    let mut cfg = k.container_config("server", script);
    cfg.envs = vec![cri::KeyValue {
        key: "GREETING".into(),
        value: "hi".into(),
    }];
    let c = run_container(&k, &pod, &pod_config, cfg).await;
    let log = k.logs().join("web").join("server.log");
    until("the container's log", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains("ndots:5"))
            .unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let first: Vec<&str> = lines[0].splitn(4, ' ').collect();
    assert!(first[0].contains('T') && first[0].ends_with('Z'), "{text}");
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F to-stdout")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F to-stderr")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F web-host")),
        "{text}"
    );
    assert!(
        text.contains("nameserver 10.0.0.10") && text.contains("search svc.cluster.local"),
        "{text}"
    );

    // The pod's address answers from the host.
    let addr = format!("{ip}:8080");
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(r) = http_get(&addr) {
            got = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got.contains("hello-pod"), "GET {addr}: {got:?}");
    // The same server through the hostPort on 127.0.0.1.
    let local = format!("127.0.0.1:{host_port}");
    let via_host = http_get(&local).unwrap_or_else(|e| format!("error: {e}"));
    assert!(via_host.contains("hello-pod"), "GET {local}: {via_host:?}");

    // ExecSync: output, exit code, environment; a timeout kills the command.
    let r = exec(
        &k,
        &c,
        &["/bin/sh", "-c", "echo $GREETING; echo oops >&2; exit 7"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"hi\n"[..], &b"oops\n"[..], 7)
    );
    let t0 = Instant::now();
    let err = exec(&k, &c, &["/bin/sleep", "30"], 1).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the timeout took {:?}",
        t0.elapsed()
    );
    let ps_out = exec(&k, &c, &["/bin/ps"], 10).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&ps_out.stdout).contains("sleep 30"),
        "the timed-out exec still runs"
    );

    // Stats of a running container and its pod.
    let stats = k
        .rt()
        .await
        .container_stats(cri::ContainerStatsRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let pstats = k
        .rt()
        .await
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pstats.len(), 1);
    assert_eq!(pstats[0].linux.as_ref().unwrap().containers.len(), 1);

    // Stop with a timeout: SIGTERM ends httpd; the exit is recorded.
    let mut rt = k.rt().await;
    rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let st = status(&k, &c).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert!(st.finished_at >= st.started_at && st.started_at > 0);
    assert_eq!(st.image_id, pulled);
    assert_eq!(st.log_path, log.display().to_string());

    // Stop and Remove are idempotent; unknown ids are fine for them.
    rt.stop_container(cri::StopContainerRequest {
        container_id: c.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        pod_status(&k, &pod).await.state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: "0123456789ab".into(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: "0123456789ab".into(),
    })
    .await
    .unwrap();
    assert!(rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    // The address went back to the pool and the namespace is gone.
    let ipam = k.work.path().join("ipam").join("berth-cri-test");
    let held: Vec<String> = std::fs::read_dir(&ipam)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(!held.contains(&ip), "IP {ip} still allocated: {held:?}");
    let netns_dir = k.d.state().join("io.berth.cri.v1/netns");
    let left: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|rd| rd.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "network namespaces left: {left:?}");

    // Removing the image removes every name of it.
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: pulled.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: pulled.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let left = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(left.iter().all(|i| i.id != pulled), "{left:?}");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let k = Kit::start();
    let mut rt = k.rt().await;
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(k.pod_config("h")),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("\"runc\""), "{e:?}");

    let (pod, pod_config) = run_pod(&k, "bad").await;
    // The same pod name twice is refused.
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    // An image that was never pulled.
    let mut cfg = k.container_config("c", "true");
    cfg.image = Some(cri::ImageSpec {
        image: "127.0.0.1:1/never/pulled:v1".into(),
        ..Default::default()
    });
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cfg),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // A Localhost seccomp profile that does not exist.
    pull(&k, &k.busybox).await.unwrap();
    let mut cfg = k.container_config("c", "true");
    cfg.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: "/nonexistent/profile.json".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(cfg),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("/nonexistent/profile.json"), "{e:?}");
    // A container in an unknown pod; an image that no registry has.
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "nope".into(),
            config: Some(k.container_config("x", "true")),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let host = k.pause.split('/').next().unwrap();
    let e = pull(&k, &format!("{host}/missing:v1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // After all that, the daemon still serves and the pod is still ready.
    assert_eq!(
        pod_status(&k, &pod).await.state,
        cri::PodSandboxState::SandboxReady as i32
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn pods_survive_a_sigkilled_berthd() {
    let mut k = Kit::start();
    pull(&k, &k.busybox).await.unwrap();
    let (pod, pod_config) = run_pod(&k, "keep").await;
    let ip = pod_status(&k, &pod).await.network.unwrap().ip;
    let long = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config("long", "echo before; sleep 1000"),
    )
    .await;
    let short = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config("short", "echo done; sleep 2; exit 3"),
    )
    .await;
    // A shell reading its stdin: berthd's death must not end its input.
    let sh = run_container(&k, &pod, &pod_config, k.shell(false)).await;
    let short_log = k.logs().join("keep").join("short.log");
    until("the short container's output", || async {
        std::fs::read_to_string(&short_log)
            .map(|t| t.contains(" stdout F done"))
            .unwrap_or(false)
    })
    .await;
    k.d.kill().unwrap();
    // The short container ends while berthd is down.
    std::thread::sleep(Duration::from_secs(3));
    k.d.restart().unwrap();
    let ps = pod_status(&k, &pod).await;
    assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(ps.network.unwrap().ip, ip, "the pod keeps its address");
    assert_eq!(
        status(&k, &long).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    let st = status(&k, &short).await;
    assert_eq!(
        (st.state, st.exit_code),
        (cri::ContainerState::ContainerExited as i32, 3),
        "{st:?}"
    );
    let out = exec(&k, &long, &["/bin/echo", "still-here"], 10)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"still-here\n");
    let log = std::fs::read_to_string(k.logs().join("keep").join("short.log")).unwrap();
    assert!(log.contains(" stdout F done"), "{log}");
    assert_eq!(
        status(&k, &sh).await.state,
        cri::ContainerState::ContainerRunning as i32,
        "the shell lost its stdin with berthd"
    );
    let out = attach_stdin(&k, &sh, b"echo alive; exit 0\n").await;
    assert_eq!(Some(out.as_slice()), Some(&b"alive\n"[..]));
    let mut rt = k.rt().await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    assert!(rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());
}

#[tokio::test]
async fn user_namespaced_pods_and_recursive_read_only_mounts() {
    user_namespaced_pods_on(Kit::start()).await;
}

/// The same pods on the native runtime: it resolves the pod's files (hostname, hosts,
/// resolv.conf) from inside the pod's user namespace, so their directory must be passable
/// by the pod's host uids.
#[tokio::test]
async fn user_namespaced_pods_on_the_native_runtime() {
    user_namespaced_pods_on(Kit::start_with("native")).await;
}

async fn user_namespaced_pods_on(k: Kit) {
    pull(&k, &k.busybox).await.unwrap();
    let mut rt = k.rt().await;
    let st = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(st
        .runtime_handlers
        .iter()
        .all(|h| h.features.unwrap().user_namespaces));

    // A pod in a user namespace: root inside is uid 200000 outside, the image's files are
    // root's inside, the rootfs is writable.
    let map = vec![cri::IdMapping {
        host_id: 200000,
        container_id: 0,
        length: 65536,
    }];
    let userns = cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: map.clone(),
            gids: map,
        }),
        ..Default::default()
    };
    let mut pod_config = k.pod_config("userns");
    pod_config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(userns.clone()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let ip = pod_status(&k, &pod).await.network.unwrap().ip;
    assert!(
        ip.starts_with(&k.subnet_prefix),
        "a user-namespaced pod has a network too: {ip}"
    );
    let mut c = k.container_config(
        "inside",
        "cat /proc/self/uid_map; echo uid=$(id -u); touch /new && echo rootfs-writable; ls -ln /bin/busybox",
    );
    c.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(userns),
            ..Default::default()
        }),
        ..Default::default()
    });
    run_container(&k, &pod, &pod_config, c).await;
    let log = k.logs().join("userns").join("inside.log");
    until("the user-namespaced container's output", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains("busybox"))
            .unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let mapped = text.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().skip(3).collect();
        f == ["0", "200000", "65536"]
    });
    assert!(mapped, "{text}");
    assert!(
        text.contains("uid=0") && text.contains("rootfs-writable"),
        "{text}"
    );
    assert!(
        text.contains(" 0        0 ") || text.contains(" 0 0 "),
        "image files are root's inside: {text}"
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();

    // Other user namespace modes are refused.
    let mut bad = k.pod_config("bad-userns");
    bad.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(cri::UserNamespace {
                    mode: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    // A recursive read-only hostPath: the mount below it is read-only too.
    let host = k.work.path().join("rro");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "rro-test",
            host.join("sub").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success());
    let (pod, pod_config) = run_pod(&k, "rro").await;
    let mut c = k.container_config(
        "reader",
        "touch /mnt/sub/x && echo sub-writable || echo sub-readonly; touch /mnt/y && echo top-writable || echo top-readonly",
    );
    c.mounts = vec![cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    run_container(&k, &pod, &pod_config, c).await;
    let log = k.logs().join("rro").join("reader.log");
    until("the rro container's output", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains("top-"))
            .unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(host.join("sub"))
        .status();
    assert!(
        text.contains("sub-readonly") && text.contains("top-readonly"),
        "{text}"
    );
    // rro without readonly is refused.
    let mut c = k.container_config("bad-rro", "true");
    c.mounts = vec![cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        recursive_read_only: true,
        ..Default::default()
    }];
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(c),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

// ---- streaming: a SPDY/3.1 client and a WebSocket client of the tests' own ----

/// Opens the streaming URL's connection and upgrades it; returns the socket after the 101.
async fn upgrade(url: &str, extra: &str) -> Result<tokio::net::TcpStream, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut c = tokio::net::TcpStream::connect(host).await.unwrap();
    let req =
        format!("POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n{extra}\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        Ok(c)
    } else {
        Err(head)
    }
}

struct Spdy {
    conn: tokio::net::TcpStream,
    z: flate2::Compress,
}

impl Spdy {
    async fn open(url: &str, protocol: &str) -> Result<Spdy, String> {
        let conn = upgrade(
            url,
            &format!("Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\n"),
        )
        .await?;
        Ok(Spdy {
            conn,
            z: flate2::Compress::new(flate2::Compression::fast(), true),
        })
    }

    /// SYN_STREAM with the given headers (compressed without SPDY's dictionary, which the
    /// format allows).
    async fn syn(&mut self, id: u32, headers: &[(&str, &str)]) {
        use tokio::io::AsyncWriteExt;
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut block = Vec::with_capacity(raw.len() + 128);
        self.z
            .compress_vec(&raw, &mut block, flate2::FlushCompress::Sync)
            .unwrap();
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(block);
        let mut f = vec![0x80, 3, 0, 1, 0];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        f.extend(body);
        self.conn.write_all(&f).await.unwrap();
    }

    async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        use tokio::io::AsyncWriteExt;
        let mut f = id.to_be_bytes().to_vec();
        f.push(u8::from(fin));
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.conn.write_all(&f).await.unwrap();
    }

    /// Data per stream until every stream in `until` has ended (or the connection has).
    async fn collect(&mut self, until: &[u32]) -> HashMap<u32, Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut out: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut ended = std::collections::HashSet::new();
        while until.iter().any(|u| !ended.contains(u)) {
            let mut h = [0u8; 8];
            if self.conn.read_exact(&mut h).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
            let mut body = vec![0u8; len];
            self.conn.read_exact(&mut body).await.unwrap();
            if h[0] & 0x80 == 0 {
                let id = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                out.entry(id).or_default().extend(body);
                if h[4] & 1 != 0 {
                    ended.insert(id);
                }
            }
        }
        out
    }

    /// Data of stream `id` until it contains `needle` (other streams' data is passed over).
    async fn read_until(&mut self, id: u32, needle: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(needle) {
            let mut h = [0u8; 8];
            self.conn.read_exact(&mut h).await.unwrap();
            let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
            let mut body = vec![0u8; len];
            self.conn.read_exact(&mut body).await.unwrap();
            if h[0] & 0x80 == 0 && u32::from_be_bytes([h[0], h[1], h[2], h[3]]) == id {
                got.extend(body);
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

use std::collections::HashMap;

async fn exec_url(k: &Kit, c: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
    k.rt()
        .await
        .exec(cri::ExecRequest {
            container_id: c.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin,
            stdout: true,
            stderr: !tty,
        })
        .await
        .unwrap()
        .into_inner()
        .url
}

/// Attaches over SPDY, writes `input` to the container's stdin and closes it; returns the
/// output until the container's output ends.
async fn attach_stdin(k: &Kit, id: &str, input: &[u8]) -> Vec<u8> {
    let url = k
        .rt()
        .await
        .attach(cri::AttachRequest {
            container_id: id.into(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut s = Spdy::open(&url, "v4.channel.k8s.io").await.unwrap();
    s.syn(1, &[("streamtype", "error")]).await;
    s.syn(3, &[("streamtype", "stdin")]).await;
    s.syn(5, &[("streamtype", "stdout")]).await;
    s.syn(7, &[("streamtype", "stderr")]).await;
    s.data(3, input, true).await;
    s.collect(&[5]).await.remove(&5).unwrap_or_default()
}

/// The streaming server's `host:port` in a URL it gave.
fn stream_host(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    rest.split('/').next().unwrap()
}

async fn ws_open(
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let conn = tokio::net::TcpStream::connect(stream_host(url))
        .await
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, conn).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], protocol);
    ws
}

/// (stdout, stderr, status JSON) of a v5 WebSocket exec, after sending `stdin` and closing it.
async fn ws_exec(url: &str, stdin: Option<&[u8]>) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = ws_open(url, "v5.channel.k8s.io").await;
    if let Some(input) = stdin {
        let mut m = vec![0u8];
        m.extend_from_slice(input);
        ws.send(Message::Binary(m.into())).await.unwrap();
        ws.send(Message::Binary(vec![255u8, 0].into()))
            .await
            .unwrap();
    }
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), serde_json::Value::Null);
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            match b.first() {
                Some(1) => out.extend_from_slice(&b[1..]),
                Some(2) => err.extend_from_slice(&b[1..]),
                Some(3) => status = serde_json::from_slice(&b[1..]).unwrap(),
                _ => {}
            }
        }
    }
    (out, err, status)
}

#[tokio::test]
async fn streaming_exec_attach_and_port_forward() {
    let k = Kit::start();
    pull(&k, &k.busybox).await.unwrap();
    let (pod, pod_config) = run_pod(&k, "stream").await;
    let c = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config(
            "srv",
            "echo hello-pf > /tmp/index.html; exec /bin/busybox httpd -f -p 8080 -h /tmp",
        ),
    )
    .await;

    // SPDY exec: stdout, stderr and the exit code as a Kubernetes Status.
    let url = exec_url(
        &k,
        &c,
        &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
        false,
        false,
    )
    .await;
    let mut s = Spdy::open(&url, "v4.channel.k8s.io").await.unwrap();
    s.syn(1, &[("streamtype", "error")]).await;
    s.syn(3, &[("streamtype", "stdout")]).await;
    s.syn(5, &[("streamtype", "stderr")]).await;
    let got = s.collect(&[1, 3, 5]).await;
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"out\n"[..]));
    assert_eq!(got.get(&5).map(Vec::as_slice), Some(&b"err\n"[..]));
    let exit: serde_json::Value = serde_json::from_slice(&got[&1]).unwrap();
    assert_eq!(exit["reason"], "NonZeroExitCode", "{exit}");
    assert_eq!(exit["details"]["causes"][0]["message"], "3");

    // A URL works once; unknown tokens are refused.
    let err = Spdy::open(&url, "v4.channel.k8s.io").await.err().unwrap();
    assert!(err.starts_with("HTTP/1.1 404"), "{err}");
    let bogus = format!(
        "{}/exec/0123456789abcdef",
        url.rsplitn(3, '/').nth(2).unwrap()
    );
    assert!(Spdy::open(&bogus, "v4.channel.k8s.io")
        .await
        .err()
        .unwrap()
        .starts_with("HTTP/1.1 404"));

    // SPDY exec with stdin: the client's FIN closes it.
    let url = exec_url(&k, &c, &["/bin/cat"], true, false).await;
    let mut s = Spdy::open(&url, "v4.channel.k8s.io").await.unwrap();
    s.syn(1, &[("streamtype", "error")]).await;
    s.syn(3, &[("streamtype", "stdin")]).await;
    s.syn(5, &[("streamtype", "stdout")]).await;
    s.syn(7, &[("streamtype", "stderr")]).await;
    s.data(3, b"through stdin\n", true).await;
    let got = s.collect(&[1, 5]).await;
    assert_eq!(
        got.get(&5).map(Vec::as_slice),
        Some(&b"through stdin\n"[..])
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got[&1]).unwrap()["status"],
        "Success"
    );

    // WebSocket v5 exec with stdin and its close signal.
    let url = exec_url(&k, &c, &["/bin/cat"], true, false).await;
    let (out, err, st) = ws_exec(&url, Some(b"over websocket")).await;
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"over websocket"[..], &b""[..])
    );
    assert_eq!(st["status"], "Success", "{st}");

    // 50 execs at once.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = exec_url(&k, &c, &["/bin/echo", &format!("n{i}")], false, false).await;
        tasks.push(tokio::spawn(async move { ws_exec(&url, None).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (out, _, st) = t.await.unwrap();
        assert_eq!(out, format!("n{i}\n").into_bytes());
        assert_eq!(st["status"], "Success");
    }

    // Port-forward over SPDY into the pod's network namespace.
    let url = k
        .rt()
        .await
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut s = Spdy::open(&url, "portforward.k8s.io").await.unwrap();
    s.syn(
        1,
        &[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ],
    )
    .await;
    s.syn(
        3,
        &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
    )
    .await;
    s.data(3, b"GET /index.html HTTP/1.0\r\n\r\n", false).await;
    let got = s.collect(&[3]).await;
    let page =
        String::from_utf8_lossy(got.get(&3).map(Vec::as_slice).unwrap_or_default()).into_owned();
    assert!(page.contains("hello-pf"), "{page:?}");

    // Attach to a shell container's stdin and output.
    let sh = run_container(&k, &pod, &pod_config, k.shell(true)).await;
    let out = attach_stdin(&k, &sh, b"echo attached\n").await;
    assert_eq!(Some(out.as_slice()), Some(&b"attached\n"[..]));
    until("the shell to end with its stdin", || async {
        status(&k, &sh).await.state == cri::ContainerState::ContainerExited as i32
    })
    .await;
    remove_pod(&k, pod).await;
}

/// A daemon's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The status JSON an exec's error stream ended with.
fn status_of(error_stream: &[u8]) -> serde_json::Value {
    serde_json::from_slice(error_stream).unwrap()
}

async fn remove_pod(k: &Kit, pod: String) {
    k.rt()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// A pod with one idle container for the streaming tests below: (kit, pod, container).
async fn streaming_pod(name: &str) -> (Kit, String, String) {
    let k = Kit::start();
    pull(&k, &k.busybox).await.unwrap();
    let (pod, pod_config) = run_pod(&k, name).await;
    let c = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config("idle", "exec /bin/sleep 1000000"),
    )
    .await;
    (k, pod, c)
}

#[tokio::test]
async fn a_resize_flood_keeps_berthd_small_and_the_session_working() {
    let (k, pod, c) = streaming_pod("resize-flood").await;
    let url = exec_url(&k, &c, &["/bin/sh"], true, true).await;
    let mut s = Spdy::open(&url, "v4.channel.k8s.io").await.unwrap();
    s.syn(1, &[("streamtype", "error")]).await;
    s.syn(3, &[("streamtype", "stdin")]).await;
    s.syn(5, &[("streamtype", "stdout")]).await;
    s.syn(7, &[("streamtype", "resize")]).await;
    s.data(7, b"{\"Width\":100,\"Height\":40}\n", false).await;
    let pid = k.d.pid().unwrap();
    let before = rss_kib(pid);
    // A resize message that never ends: 64 MiB of its insides, 1 MiB a frame.
    let started = Instant::now();
    s.data(7, b"{\"Width\":", false).await;
    let inside = vec![b' '; 1 << 20];
    for _ in 0..64 {
        s.data(7, &inside, false).await;
    }
    let mut peak = rss_kib(pid);
    // The session still answers; stdin's data follows the flood on the same connection.
    s.data(3, b"/bin/busybox stty size\n", false).await;
    let out = s.read_until(5, "40 100").await;
    let flood_secs = started.elapsed().as_secs_f64();
    peak = peak.max(rss_kib(pid));
    eprintln!("resize flood: RSS {before} KiB before, {peak} KiB at most after; {flood_secs:.1} s");
    assert!(out.contains("40 100"), "{out:?}");
    assert!(
        peak < before + 30 * 1024,
        "64 MiB on a resize stream grew berthd from {before} KiB to {peak} KiB"
    );
    s.data(3, b"exit\n", true).await;
    let got = s.collect(&[1]).await;
    let st = &got[&1];
    assert_eq!(
        status_of(st)["status"],
        "Success",
        "{}",
        String::from_utf8_lossy(st)
    );
    remove_pod(&k, pod).await;
}

#[tokio::test]
async fn idle_connections_to_the_streaming_server_leave_room_for_an_exec() {
    let (k, pod, c) = streaming_pod("idle-conns").await;
    let first = exec_url(&k, &c, &["/bin/true"], false, false).await;
    let host = stream_host(&first).to_string();
    // 300 connections that never send a request, held open through the exec below.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&host).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = exec_url(&k, &c, &["/bin/echo", "through"], false, false).await;
    let mut s = Spdy::open(&url, "v4.channel.k8s.io").await.unwrap();
    s.syn(1, &[("streamtype", "error")]).await;
    s.syn(3, &[("streamtype", "stdout")]).await;
    s.syn(5, &[("streamtype", "stderr")]).await;
    let got = s.collect(&[1, 3]).await;
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"through\n"[..]));
    let st = &got[&1];
    assert_eq!(
        status_of(st)["status"],
        "Success",
        "{}",
        String::from_utf8_lossy(st)
    );
    // A connection that never sends its request is closed within seconds.
    let mut lone = tokio::net::TcpStream::connect(&host).await.unwrap();
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(
        Duration::from_secs(8),
        tokio::io::AsyncReadExt::read(&mut lone, &mut b),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection was still open after 8 s: {closed:?}"
    );
    drop(idle);
    remove_pod(&k, pod).await;
}

#[tokio::test]
async fn events_log_rotation_and_resource_updates() {
    use futures::StreamExt;
    let k = Kit::start();
    pull(&k, &k.busybox).await.unwrap();
    let mut events = k
        .rt()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (pod, pod_config) = run_pod(&k, "ev").await;
    let c = run_container(
        &k,
        &pod,
        &pod_config,
        k.container_config(
            "ticker",
            "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done",
        ),
    )
    .await;

    // The kubelet rotates: rename, then ReopenContainerLog; new lines go to the new file.
    let log = k.logs().join("ev").join("ticker.log");
    until("the first ticks", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains("tick-1"))
            .unwrap_or(false)
    })
    .await;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    k.rt()
        .await
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
    until("ticks in the reopened log", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains("tick-"))
            .unwrap_or(false)
    })
    .await;
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&log).unwrap();
    let first_new = new
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(
        !old.contains(&format!(" {first_new}\n")),
        "a line in both files: {first_new}"
    );

    // UpdateContainerResources reaches the running container's cgroup.
    k.rt()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: c.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let limit = exec(
        &k,
        &c,
        &["/bin/cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"],
        10,
    )
    .await
    .unwrap();
    let limit_v2 = exec(&k, &c, &["/bin/cat", "/sys/fs/cgroup/memory.max"], 10)
        .await
        .unwrap();
    let seen = format!(
        "{}{}",
        String::from_utf8_lossy(&limit.stdout),
        String::from_utf8_lossy(&limit_v2.stdout)
    );
    assert!(
        seen.contains(&(64u64 << 20).to_string()),
        "cgroup says {seen:?}"
    );
    let st = status(&k, &c).await;
    assert_eq!(
        st.resources.unwrap().linux.unwrap().memory_limit_in_bytes,
        64 << 20
    );

    // The event stream saw the container created, started; then stopped and deleted.
    k.rt()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: c.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    k.rt()
        .await
        .remove_container(cri::RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if ev.container_id == c {
            seen.push(ev.container_event_type);
        }
    }
    use cri::ContainerEventType as E;
    assert_eq!(
        seen,
        vec![
            E::ContainerCreatedEvent as i32,
            E::ContainerStartedEvent as i32,
            E::ContainerStoppedEvent as i32,
            E::ContainerDeletedEvent as i32
        ]
    );
    remove_pod(&k, pod).await;
}
