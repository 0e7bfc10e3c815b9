//! CheckpointContainer and CRI restore, on runc: a container counting in memory (and in
//! its pod's /dev/shm, which no archive carries) is dumped into the archive the kubelet
//! asks for, whose members are those CRI-O and containerd write; removed; and created
//! again from the archive in a new pod, where it counts on from where it was, with its
//! root filesystem's changes (a file made, a file deleted) back; and again from an image
//! holding the archive. Restore is refused on the native runtime and where not configured.
//! The CRIU test is skipped, saying so, where `criu check` fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code fails loudly

use berth_proto::cri::v1 as cri;
use std::path::Path;
use std::process::Command;

mod cri_kit;
use cri_kit::*;

const COUNTER: &str = "rm /bin/wc; echo made > /root/made; i=0; \
    while :; do i=$((i+1)); echo $i > /dev/shm/count; echo $i; sleep 0.2; done";

/// The count in container `id`'s /dev/shm (0 before the first).
async fn count(k: &Kit, id: &str) -> u64 {
    let out = exec(k, id, &["cat", "/dev/shm/count"], 10).await.unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn criu_works() -> bool {
    match Command::new("criu").arg("check").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("SKIP: `criu check` fails or criu is absent: nothing can be checkpointed");
            false
        }
    }
}

/// Busybox pulled, a pod made, and container `name` running `script` in it: its id.
async fn first_container(k: &Kit, name: &str, script: &str) -> String {
    pull(k, &k.busybox).await.unwrap();
    let (pod, pod_config) = run_pod(k, &format!("{name}-pod")).await;
    run_container(k, &pod, &pod_config, k.container_config(name, script)).await
}

/// The archive's member names, without a leading "./".
fn members(archive: &Path) -> Vec<String> {
    let out = Command::new("tar").arg("tf").arg(archive).output().unwrap();
    assert!(out.status.success(), "tar tf {}", archive.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

/// Member `name` of the archive, whole.
fn member(archive: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("xOf")
        .arg(archive)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name} is not in the archive");
    out.stdout
}

/// CRIU's errors, from the log a failed checkpoint's message names.
fn criu_errors(e: &tonic::Status) {
    let m = e.message().to_string();
    if let Some(log) = m.split("log file: ").nth(1) {
        let path = log.split(['"', '\\']).next().unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error")).collect();
        eprintln!("CRIU's errors in {path}:\n{}", errors.join("\n"));
    }
}

/// An image of the archive as `buildah` makes one for the kubelet: one layer holding the
/// archive's members, its manifest annotated with checkpointctl's container name; pushed
/// to the kit's registry, its reference.
fn checkpoint_image(k: &Kit, archive: &Path) -> String {
    use berth_tests::oci;
    let dir = k.work.path().join("checkpoint-image");
    let layer = std::fs::read(archive).unwrap();
    let built = oci::layout_with(&dir, "v1", &[layer], serde_json::json!({}));
    let blobs = dir.join("blobs/sha256");
    let blob = |d: &str| blobs.join(d.trim_start_matches("sha256:"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&built.manifest_digest)).unwrap()).unwrap();
    manifest["annotations"] = serde_json::json!({"org.criu.checkpoint.container.name": "counter"});
    let bytes = manifest.to_string();
    let digest = oci::sha256(bytes.as_bytes());
    std::fs::write(blob(&digest), &bytes).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    k._registry.push(&dir, "v1", "counter-checkpoint").unwrap()
}

/// Creates and starts a container from `image` (a checkpoint) in a new pod `pod_name`;
/// checks it counts on from after `before` and has the checkpoint's rootfs changes.
async fn restore_and_count_on(k: &Kit, pod_name: &str, image: String, before: u64) {
    let (pod, pod_config) = run_pod(k, pod_name).await;
    let mut from_checkpoint = k.container_config("counter", "exit 3");
    from_checkpoint.image = Some(cri::ImageSpec {
        image,
        ..Default::default()
    });
    let r = run_container(k, &pod, &pod_config, from_checkpoint).await;
    let st = status(k, &r).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    assert_eq!(
        st.annotations.get("restored").map(String::as_str),
        Some("true")
    );
    // Its memory came back: the first count it writes to the new pod's empty /dev/shm
    // follows the checkpointed one's.
    let mut first = 0;
    for _ in 0..100 {
        first = count(k, &r).await;
        if first != 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!(
        "{pod_name}: counted to {before} before the checkpoint; restored, it wrote {first} first"
    );
    assert!(
        first > before,
        "the restored counter began at {first}, not after {before}"
    );
    until("the restored container to count on", || async {
        count(k, &r).await > first
    })
    .await;
    let made = exec(k, &r, &["cat", "/root/made"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&made.stdout).trim(), "made");
    let wc = exec(k, &r, &["ls", "/bin/wc"], 10).await.unwrap();
    assert_ne!(
        wc.exit_code, 0,
        "/bin/wc, deleted before the checkpoint, is back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpointed_container_is_restored_in_a_new_pod_and_counts_on() {
    if !criu_works() {
        return;
    }
    let k = Kit::start_configured(
        "runtime_binary = \"runc\"\nenable_experimental_restore_via_create = true\n",
    );
    let c = first_container(&k, "counter", COUNTER).await;
    // Far enough that a fresh start (counting from 1) cannot be taken for a restore.
    let mut before = 0;
    for _ in 0..300 {
        before = count(&k, &c).await;
        if before > 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(before > 20, "the counter did not count: {before}");
    let archive = k.work.path().join("counter.tar");
    let mut rt = k.rt().await;
    rt.checkpoint_container(cri::CheckpointContainerRequest {
        container_id: c.clone(),
        location: archive.display().to_string(),
        timeout: 60,
    })
    .await
    .inspect_err(criu_errors)
    .unwrap();
    let names = members(&archive);
    for name in [
        "config.dump",
        "spec.dump",
        "status.dump",
        "status",
        "rootfs-diff.tar",
        "deleted.files",
        "checkpoint/inventory.img",
    ] {
        assert!(names.iter().any(|l| l == name), "{name} missing: {names:?}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&member(&archive, "config.dump")).unwrap();
    assert_eq!(config["id"], c.as_str(), "{config}");
    assert!(
        config["rootfsImageRef"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{config}"
    );
    let spec: serde_json::Value = serde_json::from_slice(&member(&archive, "spec.dump")).unwrap();
    assert!(spec["process"]["args"].is_array(), "{spec}");
    // checkpointctl names the pod and its namespace from these, as containerd writes them.
    let ann = &spec["annotations"];
    assert_eq!(
        ann["io.kubernetes.cri.sandbox-namespace"], "default",
        "{ann}"
    );
    assert!(
        ann["io.kubernetes.cri.sandbox-uid"]
            .as_str()
            .is_some_and(|u| u.starts_with("uid-")),
        "{ann}"
    );
    assert!(
        ann["io.kubernetes.cri.image-name"]
            .as_str()
            .is_some_and(|i| i.contains("busybox")),
        "{ann}"
    );
    let deleted: Vec<String> = serde_json::from_slice(&member(&archive, "deleted.files")).unwrap();
    assert_eq!(deleted, ["/bin/wc"]);
    let diff = k.work.path().join("rootfs-diff.tar");
    std::fs::write(&diff, member(&archive, "rootfs-diff.tar")).unwrap();
    assert!(
        members(&diff).iter().any(|m| m == "root/made"),
        "{:?}",
        members(&diff)
    );
    // The checkpointed container ran on; now it goes.
    until("the checkpointed container to count on", || async {
        count(&k, &c).await > before
    })
    .await;
    // RemoveContainer stops a running container first, as the CRI says.
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();

    // From the archive on this host, as the kubelet passes it; then from an image of it.
    restore_and_count_on(&k, "from-archive", archive.display().to_string(), before).await;
    let image = checkpoint_image(&k, &archive);
    pull(&k, &image).await.unwrap();
    restore_and_count_on(&k, "from-image", image, before).await;
}

/// CreateContainer from a checkpoint archive (any file will do: it is refused before it is
/// read) in a pod of a kit configured with `extra`: the error.
async fn restore_refused(extra: &str) -> tonic::Status {
    let k = Kit::start_configured(extra);
    pull(&k, &k.busybox).await.unwrap();
    let (pod, pod_config) = run_pod(&k, "refused").await;
    let archive = k.work.path().join("some-checkpoint.tar");
    std::fs::write(&archive, b"").unwrap();
    let mut config = k.container_config("restored", "true");
    config.image = Some(cri::ImageSpec {
        image: archive.display().to_string(),
        ..Default::default()
    });
    k.rt()
        .await
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(config),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap_err()
}

/// Restoring needs runc: a pod on the native runtime is refused before anything is made,
/// and the error says what to do.
#[tokio::test]
async fn restoring_into_a_pod_on_the_native_runtime_is_refused_naming_runc() {
    let err = restore_refused(
        "runtime_binary = \"native\"\nenable_experimental_restore_via_create = true\n",
    )
    .await;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("runc"), "{err}");
}

/// Restore through CreateContainer is off unless configured (containerd 2.3's default),
/// and the error names the key.
#[tokio::test]
async fn restoring_is_refused_unless_configured_naming_the_key() {
    let err = restore_refused("runtime_binary = \"runc\"\n").await;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(
        err.message()
            .contains("enable_experimental_restore_via_create"),
        "{err}"
    );
}

/// Runs everywhere (no CRIU needed): the archive goes only where the request names an
/// absolute path, and nothing is written for a container that does not exist.
#[tokio::test]
async fn a_relative_location_or_an_unknown_container_is_refused() {
    let k = Kit::start();
    let dir = tempfile::tempdir().unwrap();
    let mut rt = k.rt().await;
    let ask = |id: &str, location: String| cri::CheckpointContainerRequest {
        container_id: id.into(),
        location,
        timeout: 10,
    };
    let err = rt
        .checkpoint_container(ask("whatever", "relative/cp.tar".into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let archive = dir.path().join("cp.tar");
    let err = rt
        .checkpoint_container(ask("no-such-container", archive.display().to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(!archive.exists(), "an archive was written for nothing");
}

/// The native runtime has no CRIU driver: CheckpointContainer on it is refused, naming
/// runc, and writes no archive.
#[tokio::test(flavor = "multi_thread")]
async fn checkpointing_on_the_native_runtime_is_refused_naming_runc() {
    let k = Kit::start_with("native");
    let c = first_container(&k, "sleeper", "sleep 600").await;
    let archive = k.work.path().join("native.tar");
    let err = k
        .rt()
        .await
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: c,
            location: archive.display().to_string(),
            timeout: 30,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("runc"), "{err}");
    assert!(
        !archive.exists(),
        "an archive was written for a refused checkpoint"
    );
}
