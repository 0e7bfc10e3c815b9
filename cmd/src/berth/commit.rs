//! berth commit: a container's changes (its snapshot against its parent) as a new layer on
//! top of its image, with a new config (diffID, history, --change) and manifest.

use berth_client::Client;
use berth_proto::containers::{Container, GetContainerRequest};
use berth_proto::content::InfoRequest;
use berth_proto::diff::DiffRequest;
use berth_proto::images::{CreateImageRequest, GetImageRequest, Image, UpdateImageRequest};
use berth_proto::snapshots::{
    MountsRequest, RemoveSnapshotRequest, StatSnapshotRequest, ViewSnapshotRequest,
};
use berth_proto::types::{Descriptor, Mount};
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;

use berth_proto::containerd::v1::types::Status;
use berth_proto::tasks::{GetRequest, PauseTaskRequest, ResumeTaskRequest};
use berth_proto::vocab::media::{OCI_CONFIG, OCI_LAYER_GZIP as LAYER_GZIP, OCI_MANIFEST};

#[derive(Args)]
pub struct Commit {
    /// Container whose changes become the new layer
    container: String,
    /// Name of the new image (a tag defaults to latest)
    image: String,
    /// Config changes: CMD=, ENTRYPOINT= (JSON array or a shell string), ENV=K=V,
    /// WORKDIR=, USER=, LABEL=k=v, EXPOSE=80/tcp, VOLUME=/p, STOPSIGNAL=
    #[arg(long, short = 'c')]
    change: Vec<String>,
    /// Comment recorded in the image history
    #[arg(long, short = 'm', default_value = "")]
    message: String,
    /// Pause the container's processes while its files are read (as Docker does), so the
    /// layer is one consistent moment and nothing swaps files under the reader; --pause=false
    /// to keep it running
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pause: bool,
}

fn now_rfc3339() -> String {
    berth_proto::vocab::time::rfc3339(std::time::SystemTime::now())
}

/// `["a","b"]` as JSON, anything else as `/bin/sh -c <it>`.
fn command(v: &str) -> anyhow::Result<Value> {
    if v.trim_start().starts_with('[') {
        let parsed: Vec<String> = serde_json::from_str(v)
            .map_err(|e| anyhow::anyhow!("{v:?} is not a JSON array of strings: {e}"))?;
        return Ok(json!(parsed));
    }
    Ok(json!(["/bin/sh", "-c", v]))
}

/// Applies one `--change` to the image config's `config` section.
pub fn apply_change(cfg: &mut Value, change: &str) -> anyhow::Result<()> {
    let (key, value) = change
        .split_once('=')
        .or_else(|| change.split_once(' '))
        .ok_or_else(|| anyhow::anyhow!("--change {change:?} is not INSTRUCTION=VALUE"))?;
    if !cfg.is_object() {
        *cfg = json!({});
    }
    match key.trim().to_ascii_uppercase().as_str() {
        "CMD" => cfg["Cmd"] = command(value)?,
        "ENTRYPOINT" => cfg["Entrypoint"] = command(value)?,
        "WORKDIR" => cfg["WorkingDir"] = json!(value),
        "USER" => cfg["User"] = json!(value),
        "STOPSIGNAL" => cfg["StopSignal"] = json!(value),
        "ENV" => {
            let (k, _) = value
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("ENV {value:?} is not K=V"))?;
            let mut env: Vec<Value> = cfg["Env"].as_array().cloned().unwrap_or_default();
            env.retain(|e| e.as_str().and_then(|s| s.split_once('=')).map(|(ek, _)| ek) != Some(k));
            env.push(json!(value));
            cfg["Env"] = json!(env);
        }
        "LABEL" => {
            let (k, v) = value
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("LABEL {value:?} is not k=v"))?;
            if !cfg["Labels"].is_object() {
                cfg["Labels"] = json!({});
            }
            cfg["Labels"][k] = json!(v);
        }
        "EXPOSE" => {
            if !cfg["ExposedPorts"].is_object() {
                cfg["ExposedPorts"] = json!({});
            }
            let port = if value.contains('/') {
                value.to_string()
            } else {
                format!("{value}/tcp")
            };
            cfg["ExposedPorts"][port] = json!({});
        }
        "VOLUME" => {
            if !value.starts_with('/') {
                anyhow::bail!("VOLUME {value:?} must be an absolute path");
            }
            if !cfg["Volumes"].is_object() {
                cfg["Volumes"] = json!({});
            }
            cfg["Volumes"][value] = json!({});
        }
        other => anyhow::bail!(
            "--change {other} is not supported; use CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, VOLUME or STOPSIGNAL"
        ),
    }
    Ok(())
}

/// The image's manifest for this machine, and its config.
async fn manifest_and_config(client: &Client, image: &str) -> anyhow::Result<(Value, Value)> {
    let img = client
        .images()
        .get(GetImageRequest {
            name: image.to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("image {image}: {}", e.message()))?
        .into_inner()
        .image
        .unwrap_or_default();
    let mut digest = img.target.unwrap_or_default().digest;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for _ in 0..4 {
        let doc: Value = serde_json::from_slice(&client.read_blob(&digest, 0, 0).await?)?;
        if let Some(list) = doc["manifests"].as_array() {
            digest = list
                .iter()
                .find(|m| m["platform"]["architecture"] == arch)
                .or_else(|| list.first())
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| anyhow::anyhow!("image {image} has no manifest for {arch}"))?
                .to_string();
            continue;
        }
        let cfg_digest = doc["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let config: Value = serde_json::from_slice(&client.read_blob(&cfg_digest, 0, 0).await?)?;
        return Ok((doc, config));
    }
    anyhow::bail!("image {image}: indexes nest too deeply")
}

/// The name the image is stored under, normalized as pulls and builds store theirs
/// (`app` -> `docker.io/library/app:latest`).
fn image_name(name: &str) -> anyhow::Result<String> {
    use berth_services::registry::{image_name, parse_reference};
    Ok(image_name(&parse_reference(name)?))
}

pub async fn run(client: &Client, c: Commit) -> anyhow::Result<()> {
    image_name(&c.image)?;
    for ch in &c.change {
        apply_change(&mut json!({}), ch)?;
    }
    // The new layer, config and manifest land before the image: a lease keeps them.
    let (leased, lease) = client.temporary_lease().await?;
    let r = commit(&leased, c).await;
    let _ = client.release_lease(&lease).await;
    r
}

/// Pauses the container's task if it runs; whether it did.
async fn pause_if_running(client: &Client, id: &str) -> anyhow::Result<bool> {
    let task = client
        .tasks()
        .get(GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        })
        .await;
    let running = match task {
        Ok(t) => t
            .into_inner()
            .process
            .is_some_and(|p| p.status == Status::Running as i32),
        Err(e) if e.code() == tonic::Code::NotFound => false,
        Err(e) => anyhow::bail!("task of {id}: {}", e.message()),
    };
    if running {
        client
            .tasks()
            .pause(PauseTaskRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot pause {id} to commit it: {}", e.message()))?;
    }
    Ok(running)
}

async fn commit(client: &Client, c: Commit) -> anyhow::Result<()> {
    let container = committable(client, &c.container).await?;
    let (layer, diff_id) = new_layer(client, &c, &container).await?;
    let (base_manifest, mut config) = manifest_and_config(client, &container.image).await?;
    extend_config(&mut config, &diff_id, &c)?;
    let config = store_json(client, "commit-config", &config, HashMap::new()).await?;
    let mut layers = base_manifest["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    layers.push(json!({"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": layers,
    });
    let manifest = store_json(
        client,
        "commit-manifest",
        &manifest,
        gc_labels(&config, &layers),
    )
    .await?;
    let name = image_name(&c.image)?;
    set_image(client, &name, &manifest).await?;
    println!(
        "{name} {} (new layer {}, {} bytes)",
        manifest.digest, layer.digest, layer.size
    );
    Ok(())
}

/// The container, if it has a snapshot and an image to commit.
async fn committable(client: &Client, id: &str) -> anyhow::Result<Container> {
    let container = client
        .containers()
        .get(GetContainerRequest { id: id.to_string() })
        .await
        .map_err(|e| anyhow::anyhow!("container {id}: {}", e.message()))?
        .into_inner()
        .container
        .unwrap_or_default();
    if container.snapshot_key.is_empty() || container.image.is_empty() {
        anyhow::bail!("container {id} has no snapshot or image to commit");
    }
    Ok(container)
}

/// The mounts to diff: a temporary view of the snapshot's parent (removed by the caller,
/// under `view_key`) and the container's snapshot itself.
async fn diff_mounts(
    client: &Client,
    container: &Container,
    view_key: &str,
) -> anyhow::Result<(Vec<Mount>, Vec<Mount>)> {
    let snapshotter = container.snapshotter.clone();
    let info = client
        .snapshots()
        .stat(StatSnapshotRequest {
            snapshotter: snapshotter.clone(),
            key: container.snapshot_key.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("snapshot of {}: {}", container.id, e.message()))?
        .into_inner()
        .info
        .unwrap_or_default();
    let upper = client
        .snapshots()
        .mounts(MountsRequest {
            snapshotter: snapshotter.clone(),
            key: container.snapshot_key.clone(),
        })
        .await?
        .into_inner()
        .mounts;
    let lower = client
        .snapshots()
        .view(ViewSnapshotRequest {
            snapshotter,
            key: view_key.to_string(),
            parent: info.parent,
            labels: HashMap::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("view of the parent: {}", e.message()))?
        .into_inner()
        .mounts;
    Ok((lower, upper))
}

/// The container's changes as a gzipped layer in the content store (the container paused
/// meanwhile when --pause), and the layer's uncompressed digest (its diffID).
async fn new_layer(
    client: &Client,
    c: &Commit,
    container: &Container,
) -> anyhow::Result<(Descriptor, String)> {
    let reference = format!("commit-{}", c.container);
    let layer = container_layer(client, container, LAYER_GZIP, &reference, c.pause).await?;
    let diff_id = client
        .content()
        .info(InfoRequest {
            digest: layer.digest.clone(),
        })
        .await?
        .into_inner()
        .info
        .and_then(|i| {
            i.labels
                .get(berth_proto::vocab::labels::UNCOMPRESSED)
                .cloned()
        })
        .ok_or_else(|| {
            anyhow::anyhow!("layer {} has no uncompressed digest label", layer.digest)
        })?;
    Ok((layer, diff_id))
}

/// The container's changes to its snapshot's parent as a layer of `media_type` in the
/// content store, written under `reference`; the container is paused meanwhile when `pause`
/// (and running).
pub(crate) async fn container_layer(
    client: &Client,
    container: &Container,
    media_type: &str,
    reference: &str,
    pause: bool,
) -> anyhow::Result<Descriptor> {
    let view_key = format!("{reference}-{}", std::process::id());
    let (lower, upper) = diff_mounts(client, container, &view_key).await?;
    let paused = pause && pause_if_running(client, &container.id).await?;
    let diffed = client
        .diff()
        .diff(DiffRequest {
            left: lower,
            right: upper,
            media_type: media_type.into(),
            r#ref: reference.into(),
            labels: HashMap::new(),
        })
        .await;
    if paused {
        resume(client, &container.id).await?;
    }
    let _ = client
        .snapshots()
        .remove(RemoveSnapshotRequest {
            snapshotter: container.snapshotter.clone(),
            key: view_key,
        })
        .await;
    diffed
        .map_err(|e| anyhow::anyhow!("diff of {}: {}", container.id, e.message()))?
        .into_inner()
        .diff
        .ok_or_else(|| anyhow::anyhow!("the daemon returned no layer"))
}

async fn resume(client: &Client, id: &str) -> anyhow::Result<()> {
    client
        .tasks()
        .resume(ResumeTaskRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "committed, but cannot resume {id}: {}; run berth tasks resume {id}",
                e.message()
            )
        })?;
    Ok(())
}

/// The base image's config with the new layer's diffID, the --change edits and a history
/// entry.
fn extend_config(config: &mut Value, diff_id: &str, c: &Commit) -> anyhow::Result<()> {
    let mut diffs = config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    diffs.push(json!(diff_id));
    config["rootfs"] = json!({"type": "layers", "diff_ids": diffs});
    for ch in &c.change {
        apply_change(&mut config["config"], ch)?;
    }
    let created = now_rfc3339();
    let mut history = config["history"].as_array().cloned().unwrap_or_default();
    history.push(json!({
        "created": created,
        "created_by": format!("berth commit {}", c.container),
        "comment": c.message,
    }));
    config["history"] = json!(history);
    config["created"] = json!(created);
    Ok(())
}

/// A blob written to the content store.
struct Stored {
    digest: String,
    size: usize,
}

/// Writes `doc` as a JSON blob under the ingest ref `PREFIX-DIGEST`, with `labels`.
async fn store_json(
    client: &Client,
    prefix: &str,
    doc: &Value,
    labels: HashMap<String, String>,
) -> anyhow::Result<Stored> {
    let bytes = serde_json::to_vec(doc)?;
    let digest = berth_client::sha256_digest(&bytes);
    client
        .ingest(
            &format!("{prefix}-{digest}"),
            bytes.as_slice(),
            bytes.len() as i64,
            Some(&digest),
            labels,
        )
        .await?;
    Ok(Stored {
        digest,
        size: bytes.len(),
    })
}

/// The manifest's references to its config and layers, which keep them from the collector.
fn gc_labels(config: &Stored, layers: &[Value]) -> HashMap<String, String> {
    let mut gc = HashMap::from([(
        berth_proto::vocab::labels::gc_ref_config(),
        config.digest.clone(),
    )]);
    for (i, l) in layers.iter().enumerate() {
        gc.insert(
            berth_proto::vocab::labels::gc_ref_layer(i),
            l["digest"].as_str().unwrap_or_default().to_string(),
        );
    }
    gc
}

/// Names the manifest `name`: a new image, or the image of that name moved to it.
async fn set_image(client: &Client, name: &str, manifest: &Stored) -> anyhow::Result<()> {
    let image = Image {
        name: name.to_string(),
        target: Some(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: manifest.digest.clone(),
            size: manifest.size as i64,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    };
    match client
        .images()
        .create(CreateImageRequest {
            image: Some(image.clone()),
        })
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == tonic::Code::AlreadyExists => {
            client
                .images()
                .update(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["target".into()],
                    }),
                })
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_edit_the_config() {
        let mut cfg = json!({"Env": ["PATH=/bin", "A=1"]});
        apply_change(&mut cfg, r#"CMD=["echo","hi"]"#).unwrap();
        apply_change(&mut cfg, "ENTRYPOINT=/bin/app --flag").unwrap();
        apply_change(&mut cfg, "ENV=A=2").unwrap();
        apply_change(&mut cfg, "WORKDIR /srv").unwrap();
        apply_change(&mut cfg, "EXPOSE=8080").unwrap();
        apply_change(&mut cfg, "LABEL=team=core").unwrap();
        assert_eq!(cfg["Cmd"], json!(["echo", "hi"]));
        assert_eq!(
            cfg["Entrypoint"],
            json!(["/bin/sh", "-c", "/bin/app --flag"])
        );
        assert_eq!(cfg["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(cfg["WorkingDir"], "/srv");
        assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
        assert_eq!(cfg["Labels"]["team"], "core");
        assert!(apply_change(&mut cfg, "RUN=rm -rf /").is_err());
        assert!(apply_change(&mut cfg, "VOLUME=relative").is_err());
        assert!(apply_change(&mut cfg, "CMD=[not json").is_err());
    }
}
