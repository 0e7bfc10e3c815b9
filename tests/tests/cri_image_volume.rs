//! CRI image volumes (KEP-4639, KEP-5365) through berthd's socket: a container of one image
//! with a second image mounted read-only (whole, and one directory of it), its digest in
//! ContainerStatus, bad mounts refused with nothing left behind, and nothing left after
//! removal; a user-namespaced pod sees the image's files as its root's. Pods' networks are a
//! loopback device only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use berth_tests::oci::{self, Entry};
use berth_tests::{mount_points_under, ok, Daemon};

mod cri_kit;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use std::path::PathBuf;
use tonic::transport::Channel;

/// A berthd whose CRI pulls from a loopback registry holding a pause image, busybox and a
/// data image (files under /data, nothing else).
struct Node {
    d: Daemon,
    _registry: oci::Registry,
    _work: tempfile::TempDir,
    busybox: String,
    data: String,
}

const HELLO: &[u8] = b"hello from the volume image\n";
const INNER: &[u8] = b"inner file\n";

impl Node {
    fn start() -> Node {
        let work = tempfile::tempdir().unwrap();
        let (registry, pause, busybox) = cri_kit::registry(work.path());
        let data_layer = oci::layer(&[
            Entry::Dir("data", 0o755),
            Entry::File("data/hello.txt", HELLO, 0o644),
            Entry::Dir("data/sub", 0o755),
            Entry::File("data/sub/inner.txt", INNER, 0o644),
            // The image's own link: it leads to /data/sub of the image, not of the node.
            Entry::Symlink("data/link", "/data/sub"),
        ]);
        let data_dir = work.path().join("data");
        oci::layout_with(&data_dir, "v1", &[data_layer], serde_json::json!({}));
        let data = registry.push(&data_dir, "v1", "data").unwrap();
        // Pods get a network namespace with a loopback device only: no bridge, no address.
        let net = work.path().join("net.d");
        std::fs::create_dir_all(&net).unwrap();
        let conflist =
            r#"{"cniVersion": "1.0.0", "name": "lo", "plugins": [{"type": "loopback"}]}"#;
        std::fs::write(net.join("10-lo.conflist"), conflist).unwrap();
        let d = cri_kit::cri_daemon(work.path(), &pause, &net, "");
        Node {
            d,
            _registry: registry,
            _work: work,
            busybox,
            data,
        }
    }

    async fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.d.client().await.unwrap().channel())
    }

    /// PullImage; the image's id.
    async fn pull(&self, image: &str) -> String {
        let channel = self.d.client().await.unwrap().channel();
        let spec = cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        };
        let req = cri::PullImageRequest {
            image: Some(spec),
            ..Default::default()
        };
        let reply = ImageServiceClient::new(channel).pull_image(req).await;
        reply.unwrap().into_inner().image_ref
    }

    /// A pod (in a user namespace of its own with `userns`).
    async fn pod(&self, userns: Option<cri::UserNamespace>) -> (String, cri::PodSandboxConfig) {
        let namespaces = cri::NamespaceOption {
            userns_options: userns,
            ..Default::default()
        };
        let sc = cri::LinuxSandboxSecurityContext {
            namespace_options: Some(namespaces),
            ..Default::default()
        };
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "volumes".into(),
                uid: "uid-volumes".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self.rt().await.run_pod_sandbox(req).await.unwrap();
        (id.into_inner().pod_sandbox_id, config)
    }

    /// CreateContainer of a busybox that sleeps, with `mounts`.
    async fn create(
        &self,
        pod: &(String, cri::PodSandboxConfig),
        name: &str,
        mounts: Vec<cri::Mount>,
    ) -> Result<String, tonic::Status> {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.busybox.clone(),
                ..Default::default()
            }),
            command: vec!["/bin/sleep".into(), "1000000".into()],
            mounts,
            ..Default::default()
        };
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.0.clone(),
            config: Some(config),
            sandbox_config: Some(pod.1.clone()),
        };
        let reply = self.rt().await.create_container(req).await?;
        Ok(reply.into_inner().container_id)
    }

    /// ExecSync: (exit code, stdout and stderr together).
    async fn exec(&self, id: &str, cmd: &[&str]) -> (i32, String) {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        };
        let r = self.rt().await.exec_sync(req).await.unwrap().into_inner();
        let out = [r.stdout, r.stderr].concat();
        (r.exit_code, String::from_utf8_lossy(&out).into_owned())
    }

    /// StopPodSandbox and RemovePodSandbox (its containers go with it).
    async fn remove_pod(&self, pod: &str) {
        let mut rt = self.rt().await;
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        rt.stop_pod_sandbox(stop).await.unwrap();
        let remove = cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        };
        rt.remove_pod_sandbox(remove).await.unwrap();
    }

    /// Where the CRI keeps container `id`'s state (its image volumes' mount points).
    fn container_dir(&self, id: &str) -> PathBuf {
        self.d.state().join("io.berth.cri.v1/containers").join(id)
    }

    /// The keys of the CRI namespace's image volume views.
    fn views(&self) -> Vec<String> {
        let out = ok(&self
            .d
            .berth(&["-n", "k8s.io", "snapshots", "ls", "-q"], None));
        out.lines()
            .filter(|k| k.contains("image-volume"))
            .map(str::to_string)
            .collect()
    }
}

fn image_mount(path: &str, image: &str, sub_path: &str, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        readonly,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_image_volume_from_a_second_image() {
    let n = Node::start();
    n.pull(&n.busybox).await;
    let data_id = n.pull(&n.data).await;
    let pod = n.pod(None).await;
    // The whole image by its tag, one directory of it by its id (as the kubelet names it),
    // and a directory reached through the image's own absolute link.
    let mounts = vec![
        image_mount("/vol", &n.data, "", true),
        image_mount("/sub", &data_id, "data/sub", true),
        image_mount("/linked", &data_id, "data/link", true),
    ];
    let id = n.create(&pod, "reader", mounts).await.unwrap();
    let req = cri::StartContainerRequest {
        container_id: id.clone(),
    };
    n.rt().await.start_container(req).await.unwrap();

    let (code, out) = n.exec(&id, &["cat", "/vol/data/hello.txt"]).await;
    assert_eq!((code, out.as_bytes()), (0, HELLO));
    let (code, out) = n
        .exec(&id, &["cat", "/sub/inner.txt", "/linked/inner.txt"])
        .await;
    assert_eq!(
        (code, out.as_bytes()),
        (0, [INNER, INNER].concat().as_slice())
    );
    let (code, _) = n.exec(&id, &["ls", "/sub/hello.txt"]).await;
    assert_ne!(code, 0, "the sub path is mounted, not the image's root");
    let (code, out) = n.exec(&id, &["touch", "/vol/data/new"]).await;
    assert_ne!(code, 0, "an image volume is read-only: {out}");
    assert!(out.contains("Read-only"), "{out}");
    for path in ["/vol", "/sub"] {
        let (_, mountinfo) = n.exec(&id, &["cat", "/proc/self/mountinfo"]).await;
        let line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(path))
            .unwrap_or_else(|| panic!("{path} is not a mount point: {mountinfo}"));
        let opts: Vec<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
        for want in ["ro", "nosuid", "nodev"] {
            assert!(opts.contains(&want), "{path}: {want} missing in {line}");
        }
    }

    // ContainerStatus names each volume's image by its id (KEP-5365).
    let req = cri::ContainerStatusRequest {
        container_id: id.clone(),
        verbose: false,
    };
    let status = n.rt().await.container_status(req).await.unwrap();
    let status = status.into_inner().status.unwrap();
    assert_eq!(status.mounts.len(), 3);
    for m in &status.mounts {
        let spec = m.image.as_ref().unwrap();
        assert_eq!(spec.image_ref, data_id, "{}", m.container_path);
    }
    assert_eq!(status.mounts[0].image.as_ref().unwrap().image, n.data);

    // Three views mounted under the container's state; none once it is removed.
    let dir = n.container_dir(&id);
    assert_eq!(mount_points_under(&dir).len(), 3, "{}", dir.display());
    assert_eq!(n.views().len(), 3, "{:?}", n.views());
    let req = cri::RemoveContainerRequest {
        container_id: id.clone(),
    };
    n.rt().await.remove_container(req).await.unwrap();
    assert_eq!(mount_points_under(&dir), Vec::<PathBuf>::new());
    assert!(!dir.exists());
    assert_eq!(n.views(), Vec::<String>::new());
    n.remove_pod(&pod.0).await;
}

#[tokio::test]
async fn bad_image_volumes_are_refused_and_leave_nothing() {
    let n = Node::start();
    n.pull(&n.busybox).await;
    let data_id = n.pull(&n.data).await;
    let pod = n.pod(None).await;
    let refused = [
        (
            image_mount("/v", &data_id, "", false),
            tonic::Code::InvalidArgument,
            "read-only",
        ),
        (
            image_mount("/v", &data_id, "../etc", true),
            tonic::Code::InvalidArgument,
            "inside the image",
        ),
        (
            image_mount("/v", &data_id, "/data", true),
            tonic::Code::InvalidArgument,
            "inside the image",
        ),
        (
            image_mount("/v", &data_id, "not-existing", true),
            tonic::Code::NotFound,
            "does not exist",
        ),
        (
            image_mount("/v", &data_id, "data/hello.txt", true),
            tonic::Code::InvalidArgument,
            "not a directory",
        ),
        (
            image_mount("/v", "docker.io/library/absent:1", "", true),
            tonic::Code::NotFound,
            "pull it first",
        ),
    ];
    for (i, (m, code, says)) in refused.into_iter().enumerate() {
        let what = format!("{m:?}");
        // A good volume first: the bad one's failure must undo it too.
        let good = image_mount("/good", &data_id, "", true);
        let e = n
            .create(&pod, &format!("bad{i}"), vec![good, m])
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e:?}");
        assert!(e.message().contains(says), "{what}: {}", e.message());
    }
    let containers = n.d.state().join("io.berth.cri.v1/containers");
    assert_eq!(mount_points_under(&containers), Vec::<PathBuf>::new());
    assert_eq!(n.views(), Vec::<String>::new());
    // The names are free again: a good container takes one.
    let good = image_mount("/good", &data_id, "", true);
    let id = n.create(&pod, "bad0", vec![good]).await.unwrap();
    // Removing the pod removes its containers, and their image volumes with them.
    assert_eq!(mount_points_under(&n.container_dir(&id)).len(), 1);
    n.remove_pod(&pod.0).await;
    assert_eq!(mount_points_under(&containers), Vec::<PathBuf>::new());
    assert_eq!(n.views(), Vec::<String>::new());
}

#[tokio::test]
async fn a_user_namespaced_pod_sees_the_image_as_its_root_s() {
    let n = Node::start();
    n.pull(&n.busybox).await;
    let data_id = n.pull(&n.data).await;
    let map = vec![cri::IdMapping {
        host_id: 300000,
        container_id: 0,
        length: 65536,
    }];
    let userns = cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: map.clone(),
        gids: map,
    };
    let pod = n.pod(Some(userns)).await;
    let mounts = vec![image_mount("/vol", &data_id, "data", true)];
    let id = n.create(&pod, "mapped", mounts).await.unwrap();
    let req = cri::StartContainerRequest {
        container_id: id.clone(),
    };
    n.rt().await.start_container(req).await.unwrap();
    // The image's files belong to host uid 0: through the pod's mappings they are root's
    // inside (as the rootfs's are), not the overflow id's.
    let (code, out) = n
        .exec(&id, &["ls", "-ln", "/vol/hello.txt", "/bin/sh"])
        .await;
    assert_eq!(code, 0, "{out}");
    for line in out.lines() {
        let owner: Vec<&str> = line.split_whitespace().skip(2).take(2).collect();
        assert_eq!(owner, ["0", "0"], "{out}");
    }
    let (code, out) = n.exec(&id, &["cat", "/vol/hello.txt"]).await;
    assert_eq!((code, out.as_bytes()), (0, HELLO));
    n.remove_pod(&pod.0).await;
    assert_eq!(n.views(), Vec::<String>::new());
}
