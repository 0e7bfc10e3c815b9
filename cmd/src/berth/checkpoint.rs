//! berth checkpoint / berth restore: a running container dumped by CRIU into a checkpoint
//! image (an OCI index laid out as containerd's clients lay it out, so `ctr c restore` reads
//! berth's and berth reads ctr's: the container's image, the CRIU images' tar, the spec, the
//! checkpoint options, named by containerd's annotations), and a new container restored
//! from one, its processes going on where they were. The dump itself is berthd's Tasks
//! Checkpoint (runc and CRIU in the shim).

use berth_client::Client;
use berth_proto::berth::services::unpack::v1::UnpackRequest;
use berth_proto::containerd::runc::v1::CheckpointOptions;
use berth_proto::containers::{
    container::Runtime, Container, CreateContainerRequest, GetContainerRequest,
};
use berth_proto::images::{CreateImageRequest, GetImageRequest, Image};
use berth_proto::snapshots::PrepareSnapshotRequest;
use berth_proto::tasks::{CheckpointTaskRequest, CreateTaskRequest, StartRequest};
use berth_proto::types::Descriptor;
use berth_proto::vocab::labels::REF_NAME_ANNOTATION;
use berth_proto::vocab::media;
use clap::Args;
use prost::Message;
use serde_json::{json, Value};
use std::collections::HashMap;

/// containerd's annotations on a checkpoint index: the runtime and snapshotter the
/// container had (its image's name is under the OCI ref-name annotation).
const RUNTIME_ANNOTATION: &str = "io.containerd.checkpoint.runtime";
const SNAPSHOTTER_ANNOTATION: &str = "io.containerd.checkpoint.snapshotter";

#[derive(Args)]
pub struct Checkpoint {
    /// Container whose running task is checkpointed
    container: String,
    /// Name of the checkpoint image
    image: String,
    /// Stop the container once it is checkpointed (it keeps running otherwise)
    #[arg(long)]
    exit: bool,
}

#[derive(Args)]
pub struct Restore {
    /// Checkpoint image (from berth checkpoint or ctr c checkpoint --task --image)
    image: String,
    /// Id of the new container, restored from it and started
    container: String,
}

fn any(type_url: &str, m: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

/// Stores `bytes` as a blob; its descriptor, of `media_type`.
async fn store(
    client: &Client,
    reference: &str,
    media_type: &str,
    bytes: Vec<u8>,
    labels: HashMap<String, String>,
) -> anyhow::Result<Descriptor> {
    let digest = berth_client::sha256_digest(&bytes);
    let size = bytes.len() as i64;
    client
        .ingest(reference, bytes.as_slice(), size, Some(&digest), labels)
        .await?;
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest,
        size,
        annotations: HashMap::new(),
    })
}

fn index_entry(d: &Descriptor) -> Value {
    let (os, architecture) = crate::images::host_platform();
    json!({
        "mediaType": d.media_type,
        "digest": d.digest,
        "size": d.size,
        "platform": {"os": os, "architecture": architecture},
    })
}

pub async fn checkpoint(client: &Client, c: Checkpoint) -> anyhow::Result<()> {
    let (client, lease) = client.temporary_lease().await?;
    let done = checkpoint_leased(&client, c).await;
    client.release_lease(&lease).await?;
    done
}

async fn checkpoint_leased(client: &Client, c: Checkpoint) -> anyhow::Result<()> {
    let container = get_container(client, &c.container).await?;
    let image = image_target(client, &container.image).await?;
    let opts = CheckpointOptions {
        exit: c.exit,
        file_locks: true,
        ..Default::default()
    };
    let options = any("containerd.runc.v1.CheckpointOptions", &opts);
    let dumped = client
        .tasks()
        .checkpoint(CheckpointTaskRequest {
            container_id: c.container.clone(),
            parent_checkpoint: String::new(),
            options: Some(options.clone()),
        })
        .await?
        .into_inner()
        .descriptors;
    let opts_blob = store(
        client,
        &format!("{}-checkpoint-options", c.container),
        media::CHECKPOINT_OPTIONS,
        options.encode_to_vec(),
        HashMap::new(),
    )
    .await?;
    let mut parts = vec![image];
    parts.extend(dumped);
    parts.push(rw_layer(client, &container).await?);
    parts.push(opts_blob);
    let gc: HashMap<String, String> = parts
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let key = format!("{}.m.{i}", berth_proto::vocab::labels::GC_REF_CONTENT);
            (key, d.digest.clone())
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": parts.iter().map(index_entry).collect::<Vec<_>>(),
        "annotations": {
            REF_NAME_ANNOTATION: container.image,
            RUNTIME_ANNOTATION: container.runtime.as_ref().map(|r| r.name.clone()).unwrap_or_default(),
            SNAPSHOTTER_ANNOTATION: container.snapshotter,
        },
    });
    let index = store(
        client,
        &format!("{}index", c.container),
        media::OCI_INDEX,
        serde_json::to_vec(&index)?,
        gc,
    )
    .await?;
    client
        .images()
        .create(CreateImageRequest {
            image: Some(Image {
                name: c.image.clone(),
                target: Some(index),
                ..Default::default()
            }),
        })
        .await?;
    println!("{}", c.image);
    Ok(())
}

/// The container's changes to its image (its snapshot against the snapshot's parent) as an
/// uncompressed tar in the content store, typed as containerd's read-write layer: a restore
/// applies it before CRIU reopens the files the processes had open in it.
async fn rw_layer(client: &Client, container: &Container) -> anyhow::Result<Descriptor> {
    let reference = format!("checkpoint-rw-{}", container.id);
    let mut layer =
        crate::commit::container_layer(client, container, media::OCI_LAYER, &reference, false)
            .await?;
    layer.media_type = media::CHECKPOINT_RW.into();
    Ok(layer)
}

/// What image `name` points at.
async fn image_target(client: &Client, name: &str) -> anyhow::Result<Descriptor> {
    client
        .images()
        .get(GetImageRequest {
            name: name.to_string(),
        })
        .await?
        .into_inner()
        .image
        .and_then(|i| i.target)
        .ok_or_else(|| anyhow::anyhow!("image {name} has no target"))
}

async fn get_container(client: &Client, id: &str) -> anyhow::Result<Container> {
    client
        .containers()
        .get(GetContainerRequest { id: id.to_string() })
        .await?
        .into_inner()
        .container
        .ok_or_else(|| anyhow::anyhow!("no container {id}"))
}

/// The checkpoint index's entry of `media_type`.
fn entry<'a>(index: &'a Value, media_type: &str) -> anyhow::Result<&'a Value> {
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mediaType"] == media_type)
        .ok_or_else(|| anyhow::anyhow!("the checkpoint has no {media_type}"))
}

fn descriptor(v: &Value) -> Descriptor {
    Descriptor {
        media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
        digest: v["digest"].as_str().unwrap_or_default().to_string(),
        size: v["size"].as_i64().unwrap_or_default(),
        annotations: HashMap::new(),
    }
}

pub async fn restore(client: &Client, r: Restore) -> anyhow::Result<()> {
    let target = image_target(client, &r.image).await?;
    let index: Value =
        serde_json::from_slice(&client.read_blob(&target.digest, 0, target.size).await?)?;
    let annotation = |k: &str| {
        index["annotations"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (image, snapshotter) = (
        annotation(REF_NAME_ANNOTATION),
        annotation(SNAPSHOTTER_ANNOTATION),
    );
    let spec_entry = descriptor(entry(&index, media::CHECKPOINT_CONFIG)?);
    let spec_blob = client
        .read_blob(&spec_entry.digest, 0, spec_entry.size)
        .await?;
    let spec = prost_types::Any::decode(spec_blob.as_slice())?;
    let unpacked = client
        .unpack()
        .unpack(UnpackRequest {
            name: image.clone(),
            snapshotter: snapshotter.clone(),
            platform: String::new(),
        })
        .await?
        .into_inner();
    let mounts = client
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: snapshotter.clone(),
            key: r.container.clone(),
            parent: unpacked.chain_id,
            labels: HashMap::new(),
        })
        .await?
        .into_inner()
        .mounts;
    // The read-write layer (a checkpoint of ctr's without --rw, or of an older berth, has
    // none): the files the processes had open are where CRIU looks for them.
    if let Ok(rw) = entry(&index, media::CHECKPOINT_RW) {
        client
            .diff()
            .apply(berth_proto::diff::ApplyRequest {
                diff: Some(descriptor(rw)),
                mounts,
                payloads: HashMap::new(),
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!("apply the checkpoint's read-write layer: {}", e.message())
            })?;
    }
    client
        .containers()
        .create(CreateContainerRequest {
            container: Some(Container {
                id: r.container.clone(),
                image,
                runtime: Some(Runtime {
                    name: annotation(RUNTIME_ANNOTATION),
                    options: None,
                }),
                spec: Some(spec),
                snapshotter,
                snapshot_key: r.container.clone(),
                ..Default::default()
            }),
        })
        .await?;
    let criu = descriptor(entry(&index, media::CHECKPOINT_CRIU_TAR)?);
    client
        .tasks()
        .create(CreateTaskRequest {
            container_id: r.container.clone(),
            checkpoint: Some(criu),
            ..Default::default()
        })
        .await?;
    client
        .tasks()
        .start(StartRequest {
            container_id: r.container.clone(),
            exec_id: String::new(),
        })
        .await?;
    println!("{}", r.container);
    Ok(())
}
