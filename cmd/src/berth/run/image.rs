//! The image a container starts from: unpacked by berthd into snapshots, its config read, and
//! the container's rootfs prepared on top.

use anyhow::{anyhow, bail, Context};
use berth_client::Client;
use berth_proto::berth::services::unpack::v1::UnpackRequest;
use berth_proto::images::GetImageRequest;
use berth_proto::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};
use std::collections::HashMap;

/// An image made ready to run: the name berthd knows it by, its config, and its top snapshot.
pub(super) struct Unpacked {
    pub name: String,
    pub config: serde_json::Value,
    pub chain_id: String,
}

/// The daemon finds the image (by the name as given, or docker's whole form of it), unpacks
/// what is missing, and answers with the image's config.
pub(super) async fn unpack(
    client: &Client,
    image: &str,
    snapshotter: &str,
) -> anyhow::Result<Unpacked> {
    let unpacked = client
        .unpack()
        .unpack(UnpackRequest {
            name: image.to_string(),
            snapshotter: snapshotter.to_string(),
            platform: String::new(),
        })
        .await
        .map_err(|e| match e.code() {
            tonic::Code::NotFound => {
                anyhow!("image {image}: {}; pull or import it first", e.message())
            }
            _ => anyhow!("image {image}: {}", e.message()),
        })?
        .into_inner();
    let name = if unpacked.name.is_empty() {
        image.to_string()
    } else {
        unpacked.name
    };
    let config: serde_json::Value = if unpacked.config.is_empty() {
        // A config over 1 MiB, or a daemon from before the answer carried it.
        image_config(client, &name).await?
    } else {
        serde_json::from_slice(&unpacked.config)
            .with_context(|| format!("image {name}: its config is not JSON"))?
    };
    Ok(Unpacked {
        name,
        config,
        chain_id: unpacked.chain_id,
    })
}

/// The image's config, for the daemon's platform.
async fn image_config(client: &Client, name: &str) -> anyhow::Result<serde_json::Value> {
    let img = client
        .images()
        .get(GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|e| anyhow!("image {name}: {}; pull or import it first", e.message()))?
        .into_inner()
        .image
        .ok_or_else(|| anyhow!("daemon returned no image"))?;
    let mut desc = img
        .target
        .ok_or_else(|| anyhow!("image {name} has no target"))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    for _ in 0..4 {
        let doc: serde_json::Value =
            serde_json::from_slice(&client.read_blob(&desc.digest, 0, 0).await?)?;
        if let Some(ms) = doc["manifests"].as_array() {
            let m = ms
                .iter()
                .find(|m| m["platform"]["architecture"] == arch && m["platform"]["os"] == "linux")
                .or_else(|| ms.first())
                .ok_or_else(|| anyhow!("image {name} has an empty index"))?;
            desc.digest = m["digest"].as_str().unwrap_or_default().to_string();
            continue;
        }
        let cfg = doc["config"]["digest"]
            .as_str()
            .ok_or_else(|| anyhow!("manifest has no config"))?;
        return Ok(serde_json::from_slice(&client.read_blob(cfg, 0, 0).await?)?);
    }
    bail!("image {name}: indexes nest too deeply")
}

/// The container's rootfs: a new active snapshot `id` on the image's top one.
pub(super) async fn prepare_rootfs(
    client: &Client,
    snapshotter: &str,
    id: &str,
    parent: String,
) -> anyhow::Result<Vec<berth_proto::types::Mount>> {
    let prepared = client
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: id.to_string(),
            parent,
            labels: HashMap::new(),
        })
        .await
        .map_err(|e| anyhow!("container {id}: {}", e.message()))?;
    Ok(prepared.into_inner().mounts)
}

/// Removes the container's rootfs snapshot, best effort.
pub(super) async fn remove_rootfs(client: &Client, snapshotter: &str, id: &str) {
    let _ = client
        .snapshots()
        .remove(RemoveSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: id.to_string(),
        })
        .await;
}

/// A snapshot's mounts as the daemon sent them, to mount here.
pub fn local_mounts(mounts: &[berth_proto::types::Mount]) -> Vec<berth_snapshotters::Mount> {
    mounts
        .iter()
        .map(|m| berth_snapshotters::Mount {
            kind: m.r#type.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}
