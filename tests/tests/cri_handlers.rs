//! Runtime handlers with snapshotters of their own (`[cri.runtimes.NAME]`), as a
//! RuntimeClass picks them: a pod on a handler whose snapshotter is `native` has its rootfs
//! and its containers' in the native snapshotter while pods of the default handler stay on
//! overlayfs; a handler's runtime binary runs its pods and no others; PullImage for the
//! handler unpacks there; images are one list whichever snapshotters hold them; Status lists
//! the handlers and an unknown one is refused, naming them; a handler may name a proxy plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

mod cri_kit;

use berth_proto::cri::v1 as cri;
use berth_tests::{bin, ok};
use cri_kit::Kit;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NATIVE_FS: &str =
    "[cri.runtimes.native-fs]\nruntime = \"native\"\nsnapshotter = \"native\"\n";

/// A runc-compatible binary that notes each call's arguments in `log`, then runs runc.
fn traced_runc(dir: &Path, log: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let runc = berth_tests::require_tool("runc");
    let path = dir.join("traced-runc");
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        runc.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The snapshot keys `ctr -n k8s.io snapshots --snapshotter SNAPSHOTTER ls` lists.
fn snapshot_keys(k: &Kit, snapshotter: &str) -> Vec<String> {
    let args = [
        "-n",
        "k8s.io",
        "snapshots",
        "--snapshotter",
        snapshotter,
        "ls",
    ];
    ok(&k.d.ctr(&args))
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Each of `ids` is a snapshot of `home`'s and none of `elsewhere`'s.
fn only_in(k: &Kit, ids: &[&String], home: &str, elsewhere: &str) {
    let (here, there) = (snapshot_keys(k, home), snapshot_keys(k, elsewhere));
    for id in ids {
        assert!(here.contains(id), "{id} is not in {home}: {here:?}");
        assert!(!there.contains(id), "{id} is in {elsewhere} too: {there:?}");
    }
}

/// PullImage of busybox for runtime handler `handler`.
async fn pull_for(k: &Kit, handler: &str) -> Result<String, tonic::Status> {
    let image = cri::ImageSpec {
        image: k.busybox.clone(),
        runtime_handler: handler.into(),
        ..Default::default()
    };
    let req = cri::PullImageRequest {
        image: Some(image),
        ..Default::default()
    };
    let reply = k.img().await.pull_image(req).await?;
    Ok(reply.into_inner().image_ref)
}

/// The chain ID ImageStatus (verbose) gives busybox.
async fn busybox_chain(k: &Kit) -> String {
    let req = cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: k.busybox.clone(),
            ..Default::default()
        }),
        verbose: true,
    };
    let st = k.img().await.image_status(req).await.unwrap().into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    info["chainID"].as_str().unwrap().to_string()
}

/// RunPodSandbox of a pod named `name` on `handler`.
async fn pod_on(
    k: &Kit,
    name: &str,
    handler: &str,
) -> Result<(String, cri::PodSandboxConfig), tonic::Status> {
    let config = k.pod_config(name);
    let req = cri::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: handler.into(),
    };
    let reply = k.rt().await.run_pod_sandbox(req).await?;
    Ok((reply.into_inner().pod_sandbox_id, config))
}

/// A container in the pod that prints `text`, once its log has it; the container's id.
async fn prints(k: &Kit, pod: &(String, cri::PodSandboxConfig), text: &str) -> String {
    let c = k.container_config("hello", &format!("echo {text}"));
    prints_from(k, pod, text, c).await
}

/// As [`prints`], the container configured as `c` (its script prints `text`).
async fn prints_from(
    k: &Kit,
    pod: &(String, cri::PodSandboxConfig),
    text: &str,
    c: cri::ContainerConfig,
) -> String {
    let pod_name = pod.1.metadata.as_ref().unwrap().name.clone();
    let log = k.logs().join(pod_name).join(&c.log_path);
    let id = cri_kit::run_container(k, &pod.0, &pod.1, c).await;
    cri_kit::until("the container's output in its log", || async {
        std::fs::read_to_string(&log)
            .map(|t| t.contains(text))
            .unwrap_or(false)
    })
    .await;
    id
}

async fn remove_pod(k: &Kit, id: &str) {
    let mut rt = k.rt().await;
    let stop = cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    };
    rt.stop_pod_sandbox(stop).await.unwrap();
    let remove = cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    };
    rt.remove_pod_sandbox(remove).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_runs_its_pods_from_its_own_snapshotter() {
    let scratch = tempfile::tempdir().unwrap();
    let trace = scratch.path().join("runc-calls");
    let runc = traced_runc(scratch.path(), &trace);
    let k = Kit::start_configured(&format!(
        "{NATIVE_FS}[cri.runtimes.traced]\nruntime = \"{}\"\n[cri.runtimes.nowhere]\nsnapshotter = \"nosuch\"\nruntime = \"/nonexistent/runc\"\n",
        runc.display()
    ));
    let mut rt = k.rt().await;
    let handlers: Vec<String> = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(
        handlers,
        ["", "berth", "native-fs", "nowhere", "runc", "traced"]
    );

    // Pulled for the handler: unpacked into its snapshotter, not the default's.
    let image_id = pull_for(&k, "native-fs").await.unwrap();
    let chain = busybox_chain(&k).await;
    assert!(snapshot_keys(&k, "native").contains(&chain));
    assert!(!snapshot_keys(&k, "overlayfs").contains(&chain));

    let native_pod = pod_on(&k, "on-native", "native-fs").await.unwrap();
    // With busybox mounted as an image volume too: a view in the pod's snapshotter.
    let text = "from-a-native-rootfs";
    let mut c = k.container_config("hello", &format!("test -x /vol/bin/sh && echo {text}"));
    c.mounts.push(cri::Mount {
        container_path: "/vol".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: k.busybox.clone(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let native_ctr = prints_from(&k, &native_pod, text, c).await;
    let volume = format!("{native_ctr}-image-volume-0");
    let default_pod = pod_on(&k, "on-default", "").await.unwrap();
    let default_ctr = prints(&k, &default_pod, "from-an-overlay-rootfs").await;
    only_in(
        &k,
        &[&native_pod.0, &native_ctr, &volume],
        "native",
        "overlayfs",
    );
    only_in(&k, &[&default_pod.0, &default_ctr], "overlayfs", "native");
    // The default handler's pod unpacked the image into overlayfs on its own.
    assert!(snapshot_keys(&k, "overlayfs").contains(&chain));
    let st = cri_kit::pod_status(&k, &native_pod.0).await;
    assert_eq!(st.runtime_handler, "native-fs");
    // Verbose statuses name the snapshotter, as containerd's do (`crictl inspect`).
    let req = cri::ContainerStatusRequest {
        container_id: native_ctr.clone(),
        verbose: true,
    };
    let st = rt.container_status(req).await.unwrap().into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(info["snapshotter"], "native", "{info}");

    // A handler's runtime runs its pod and containers, and only those.
    let traced_pod = pod_on(&k, "traced", "traced").await.unwrap();
    let traced_ctr = prints(&k, &traced_pod, "from-the-traced-runtime").await;
    let calls = std::fs::read_to_string(&trace).unwrap();
    assert!(
        calls.contains(&traced_pod.0) && calls.contains(&traced_ctr),
        "{calls}"
    );
    for other in [&native_pod.0, &native_ctr, &default_pod.0, &default_ctr] {
        assert!(!calls.contains(other.as_str()), "{other}: {calls}");
    }
    only_in(&k, &[&traced_pod.0, &traced_ctr], "overlayfs", "native");

    // ImageFsInfo: the default snapshotter's row first, then the handlers' others.
    let mut img = k.img().await;
    let fs = img.image_fs_info(cri::ImageFsInfoRequest {}).await;
    let rows: Vec<(String, u64)> = fs
        .unwrap()
        .into_inner()
        .image_filesystems
        .into_iter()
        .map(|u| (u.fs_id.unwrap().mountpoint, u.used_bytes.unwrap().value))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].0.ends_with(".overlayfs"), "{rows:?}");
    assert!(rows[1].0.ends_with(".native") && rows[1].1 > 0, "{rows:?}");

    // One image, whichever snapshotters hold it.
    let listed = img.list_images(cri::ListImagesRequest::default()).await;
    let images = listed.unwrap().into_inner().images;
    assert_eq!(images.iter().filter(|i| i.id == image_id).count(), 1);

    // Unknown handlers are refused, the configured ones named.
    let e = pod_on(&k, "nowhere", "kata").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("\"native-fs\""), "{e:?}");
    let e = pull_for(&k, "kata").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // A handler whose snapshotter and runtime are not here: berthd said so at start, and
    // its pods fail saying so, leaving nothing.
    let log = k.d.log_text();
    for said in [
        "snapshotter is not available here",
        "\"nosuch\"",
        "runtime binary is neither",
        "\"/nonexistent/runc\"",
    ] {
        assert!(log.contains(said), "{said}: {log}");
    }
    let e = pod_on(&k, "no-snapshotter", "nowhere").await.unwrap_err();
    assert!(e.message().contains("\"nosuch\" is not available"), "{e:?}");
    let mut rt = k.rt().await;
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await;
    assert_eq!(pods.unwrap().into_inner().items.len(), 3);

    // Removal finds the snapshots where they are.
    remove_pod(&k, &native_pod.0).await;
    let native = snapshot_keys(&k, "native");
    for gone in [&native_pod.0, &native_ctr, &volume] {
        assert!(!native.contains(gone), "{gone}: {native:?}");
    }
    remove_pod(&k, &default_pod.0).await;
    let overlay = snapshot_keys(&k, "overlayfs");
    assert!(!overlay.contains(&default_pod.0) && !overlay.contains(&default_ctr));
}

/// A pod keeps the snapshotter it was made with across a SIGKILLed berthd, even when the
/// configuration it comes back with no longer has the pod's handler: a new container of the
/// pod is prepared there, and removal finds every snapshot there.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_keeps_its_snapshotter_across_restarts() {
    let mut k = Kit::start_configured(NATIVE_FS);
    pull_for(&k, "native-fs").await.unwrap();
    let pod = pod_on(&k, "kept", "native-fs").await.unwrap();
    let before = prints(&k, &pod, "before-the-restart").await;
    k.d.kill().unwrap();
    let config = k.work.path().join("berthd.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(NATIVE_FS));
    std::fs::write(&config, text.replace(NATIVE_FS, "")).unwrap();
    k.d.restart().unwrap();
    let c = k.container_config("after", "echo after-the-restart");
    let after = prints_from(&k, &pod, "after-the-restart", c).await;
    only_in(&k, &[&pod.0, &before, &after], "native", "overlayfs");
    remove_pod(&k, &pod.0).await;
    let native = snapshot_keys(&k, "native");
    for gone in [&pod.0, &before, &after] {
        assert!(!native.contains(gone), "{gone}: {native:?}");
    }
}

/// A berth-snapshotter serving `native` on `socket`.
struct Plugin(Child);

impl Plugin {
    fn start(root: &Path, socket: &Path) -> Plugin {
        let child = Command::new(bin("berth-snapshotter"))
            .args(["--snapshotter", "native", "--root"])
            .arg(root)
            .arg("--address")
            .arg(socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("start berth-snapshotter");
        let plugin = Plugin(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no plugin socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        plugin
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A handler naming a proxy plugin: its pods' snapshots are the plugin's.
#[tokio::test(flavor = "multi_thread")]
async fn a_handler_may_name_a_proxy_snapshotter() {
    let work = tempfile::tempdir().unwrap();
    let socket = work.path().join("plugin.sock");
    let _plugin = Plugin::start(&work.path().join("plugin-root"), &socket);
    let k = Kit::start_configured(&format!(
        "[cri.runtimes.proxied]\nsnapshotter = \"outside\"\n[proxy_plugins.outside]\ntype = \"snapshot\"\naddress = \"{}\"\n",
        socket.display()
    ));
    pull_for(&k, "proxied").await.unwrap();
    let pod = pod_on(&k, "proxied", "proxied").await.unwrap();
    let ctr = prints(&k, &pod, "from-a-plugin-rootfs").await;
    only_in(&k, &[&pod.0, &ctr], "outside", "overlayfs");
    remove_pod(&k, &pod.0).await;
    assert!(!snapshot_keys(&k, "outside").contains(&pod.0));
}
