//! containerd's own Rust bindings (`containerd-client`, from containerd/rust-extensions) drive
//! berthd unchanged: image, snapshot, container with an OCI spec, task start and wait, the
//! task's events, and deletion — as a program written for containerd would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_tests::oci::{self, busybox_layer};
use berth_tests::{ok, Daemon};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetImageRequest, StartRequest, SubscribeRequest, WaitRequest,
};
use containerd_client::{with_namespace, Client};
use prost::Message;
use std::collections::HashMap;
use tonic::Request;

const NS: &str = "rust-client";

/// A minimal OCI runtime spec: the busybox rootfs, the usual namespaces and mounts.
fn spec(args: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "args": args, "cwd": "/", "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
        },
        "root": {"path": "rootfs"},
        "hostname": "rust-client",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn containerd_rust_client_runs_a_container_on_berthd() {
    let d = Daemon::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let built = oci::layout(&work.path().join("layout"), "latest", &[busybox_layer()]);
    let archive = work.path().join("busybox.tar");
    oci::archive(&work.path().join("layout"), &archive);
    ok(&d.berth(
        &[
            "--namespace",
            NS,
            "images",
            "import",
            "--base-name",
            "test.local/rc",
            archive.to_str().unwrap(),
        ],
        None,
    ));

    let client = Client::from_path(d.socket()).await.unwrap();
    let image = client
        .images()
        .get(with_namespace!(
            GetImageRequest {
                name: "test.local/rc:latest".into()
            },
            NS
        ))
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(image.target.unwrap().digest, built.manifest_digest);

    let mut events = client
        .events()
        .subscribe(SubscribeRequest {
            filters: vec![format!("namespace=={NS},topic~=|^/tasks/|")],
        })
        .await
        .unwrap()
        .into_inner();

    let id = "rc1";
    let mounts = client
        .snapshots()
        .prepare(with_namespace!(
            PrepareSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: id.into(),
                parent: built.chain_ids.last().unwrap().clone(),
                labels: HashMap::new(),
            },
            NS
        ))
        .await
        .unwrap()
        .into_inner()
        .mounts;
    let container = Container {
        id: id.into(),
        image: "test.local/rc:latest".into(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: spec(&["/bin/sh", "-c", "exit 3"]),
        }),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.into(),
        ..Default::default()
    };
    client
        .containers()
        .create(with_namespace!(
            CreateContainerRequest {
                container: Some(container)
            },
            NS
        ))
        .await
        .unwrap();
    let created = client
        .tasks()
        .create(with_namespace!(
            CreateTaskRequest {
                container_id: id.into(),
                rootfs: mounts,
                ..Default::default()
            },
            NS
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.pid > 0);
    client
        .tasks()
        .start(with_namespace!(
            StartRequest {
                container_id: id.into(),
                ..Default::default()
            },
            NS
        ))
        .await
        .unwrap();
    let waited = client
        .tasks()
        .wait(with_namespace!(
            WaitRequest {
                container_id: id.into(),
                ..Default::default()
            },
            NS
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waited.exit_status, 3);

    let mut topics = vec![];
    while !topics.contains(&"/tasks/exit".to_string()) {
        let env = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
            .await
            .expect("no /tasks/exit event")
            .unwrap()
            .unwrap();
        assert_eq!(env.namespace, NS);
        if env.topic == "/tasks/exit" {
            let exit =
                containerd_client::events::TaskExit::decode(env.event.unwrap().value.as_slice())
                    .unwrap();
            assert_eq!((exit.container_id.as_str(), exit.exit_status), (id, 3));
        }
        topics.push(env.topic);
    }
    assert_eq!(topics[..2], ["/tasks/create", "/tasks/start"], "{topics:?}");

    let deleted = client
        .tasks()
        .delete(with_namespace!(
            DeleteTaskRequest {
                container_id: id.into()
            },
            NS
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.exit_status, 3);
    client
        .containers()
        .delete(with_namespace!(
            DeleteContainerRequest { id: id.into() },
            NS
        ))
        .await
        .unwrap();
    client
        .snapshots()
        .remove(with_namespace!(
            RemoveSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: id.into()
            },
            NS
        ))
        .await
        .unwrap();
    // Exactly one exit was published for the task.
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), events.message()).await;
    if let Ok(Ok(Some(env))) = more {
        assert_ne!(env.topic, "/tasks/exit", "a second /tasks/exit");
    }
}
