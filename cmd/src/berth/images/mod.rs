//! berth images pull|push|import|export|inspect|check|ls|rm|label|tag|unpack: the verbs on
//! image records here, moving images in and out in [`transfer`], checking them in [`check`].

mod check;
mod transfer;

pub use check::CheckArgs;
pub use transfer::{ExportArgs, ImportArgs, PullArgs, PushArgs};

use crate::output::{labels, size, ListFlags};
use crate::verbs;
use berth_client::Client;
use berth_proto::images::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
    UpdateImageRequest,
};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Cmd {
    /// Pull an image from a registry (berthd downloads and unpacks it)
    Pull(PullArgs),
    /// Import images from an OCI layout archive or a `docker save` tarball
    Import(ImportArgs),
    /// Export images into one archive (OCI layout with docker's manifest.json)
    Export(ExportArgs),
    /// Show an image: its record, the manifest for this platform, and the config
    Inspect(InspectArgs),
    /// Check that images' content is complete and whether they are unpacked
    Check(CheckArgs),
    /// Push an image to a registry (to REFERENCE, or under its own name)
    Push(PushArgs),
    /// List images
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Remove images no container uses (-a; berth keeps no untagged images)
    Prune(crate::everyday::ImagePruneArgs),
    /// Remove images
    #[command(alias = "remove", alias = "delete")]
    Rm(RmArgs),
    /// Set (key=value) or remove (key=) labels
    Label(LabelArgs),
    /// Unpack an image's layers into snapshots (in parallel where the snapshotter allows)
    Unpack(UnpackArgs),
    /// Give an image another name
    Tag(TagArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    pub name: String,
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub flags: ListFlags,
    /// Filters, e.g. name~=busybox
    pub filters: Vec<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Wait for garbage collection
    #[arg(long)]
    pub sync: bool,
}

#[derive(clap::Args)]
pub struct LabelArgs {
    pub name: String,
    #[arg(required = true)]
    pub labels: Vec<String>,
}

#[derive(clap::Args)]
pub struct UnpackArgs {
    pub name: String,
    /// Snapshotter to unpack into
    #[arg(long, env = "BERTH_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,
    /// Platform (os/arch[/variant]) to pick from a multi-platform image
    #[arg(long, default_value = "")]
    pub platform: String,
}

#[derive(clap::Args)]
pub struct TagArgs {
    pub source: String,
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Replace a target that already exists
    #[arg(long)]
    pub force: bool,
}

pub(super) fn host_platform() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    (std::env::consts::OS.to_string(), arch.to_string())
}

/// Total size of an image: its manifest plus config and layers, when the manifest is local.
async fn image_size(client: &Client, img: &Image) -> i64 {
    let Some(t) = &img.target else { return 0 };
    let is_manifest =
        t.media_type.ends_with("manifest.v1+json") || t.media_type.ends_with("manifest.v2+json");
    if !is_manifest {
        return t.size;
    }
    let Ok(raw) = client.read_blob(&t.digest, 0, 0).await else {
        return t.size;
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return t.size;
    };
    let sz = |v: &serde_json::Value| v.get("size").and_then(|s| s.as_i64()).unwrap_or(0);
    let layers: i64 = doc
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|a| a.iter().map(sz).sum())
        .unwrap_or(0);
    t.size + doc.get("config").map(sz).unwrap_or(0) + layers
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Pull(a) => transfer::pull(client, a).await?,
        Cmd::Import(a) => transfer::import(client, a).await?,
        Cmd::Export(a) => transfer::export(client, a).await?,
        Cmd::Inspect(a) => inspect(client, a).await?,
        Cmd::Check(a) => check::check(client, a).await?,
        Cmd::Push(a) => transfer::push(client, a).await?,
        Cmd::Ls(a) => ls(client, a).await?,
        Cmd::Rm(a) => rm(client, a).await?,
        Cmd::Prune(a) => crate::everyday::image_prune(client, a).await?,
        Cmd::Label(a) => label(client, a).await?,
        Cmd::Unpack(a) => unpack(client, a).await?,
        Cmd::Tag(a) => tag(client, a).await?,
    }
    Ok(())
}

async fn inspect(client: &Client, args: InspectArgs) -> anyhow::Result<()> {
    verbs::print_json(&inspect_json(client, &args.name).await?)
}

/// An image as JSON: its record, the index (if any), this platform's manifest and config.
pub async fn inspect_json(client: &Client, name: &str) -> anyhow::Result<serde_json::Value> {
    let mut svc = client.images();

    let img = svc
        .get(GetImageRequest {
            name: name.to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("image {name}: {}", e.message()))?
        .into_inner()
        .image
        .unwrap_or_default();
    let target = img.target.clone().unwrap_or_default();
    let mut doc = serde_json::json!({
        "name": img.name,
        "labels": img.labels,
        "target": {"mediaType": target.media_type, "digest": target.digest, "size": target.size},
    });
    let mut desc = (target.media_type.clone(), target.digest.clone());
    for _ in 0..4 {
        let raw = client.read_blob(&desc.1, 0, 0).await?;
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
        if let Some(list) = v["manifests"].as_array() {
            doc["index"] = v.clone();
            let (os, arch) = host_platform();
            let pick = list
                .iter()
                .find(|m| {
                    m["platform"]["os"] == os.as_str()
                        && m["platform"]["architecture"] == arch.as_str()
                })
                .or_else(|| list.first())
                .ok_or_else(|| anyhow::anyhow!("index {} lists no manifests", desc.1))?;
            desc = (
                pick["mediaType"].as_str().unwrap_or_default().to_string(),
                pick["digest"].as_str().unwrap_or_default().to_string(),
            );
            continue;
        }
        let cfg_digest = v["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        doc["manifest"] = v;
        if let Ok(raw) = client.read_blob(&cfg_digest, 0, 0).await {
            doc["config"] = serde_json::from_slice(&raw).unwrap_or_default();
        }
        break;
    }
    Ok(doc)
}

/// The images the filters select.
async fn list(client: &Client, filters: Vec<String>) -> anyhow::Result<Vec<Image>> {
    let listed = client.images().list(ListImagesRequest { filters }).await?;
    Ok(listed.into_inner().images)
}

async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let LsArgs { flags, filters } = args;
    let mut sized = vec![];
    for img in list(client, filters).await? {
        let total = image_size(client, &img).await;
        sized.push((img, total));
    }
    let header = ["REF", "TYPE", "DIGEST", "SIZE", "LABELS"];
    verbs::list(&header, sized, flags, |(img, total)| {
        let target = img.target.unwrap_or_default();
        let json = serde_json::json!({
            "name": img.name, "media_type": target.media_type,
            "digest": target.digest, "size": total, "labels": img.labels,
        });
        let cells = vec![
            img.name,
            target.media_type,
            target.digest,
            size(total),
            labels(&img.labels),
        ];
        (cells, json)
    })
}

async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<()> {
    let RmArgs { names, sync } = args;
    verbs::remove(names, |name| async move {
        client
            .images()
            .delete(DeleteImageRequest {
                name: name.clone(),
                sync,
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot remove image {name}: {}", e.message()))?;
        Ok(())
    })
    .await
}

async fn label(client: &Client, args: LabelArgs) -> anyhow::Result<()> {
    let LabelArgs { name, labels } = args;
    verbs::label(&labels, |labels, mask| async move {
        let img = client
            .images()
            .update(UpdateImageRequest {
                image: Some(Image {
                    name,
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(mask),
            })
            .await?
            .into_inner()
            .image
            .unwrap_or_default();
        Ok(img.labels)
    })
    .await
}

async fn unpack(client: &Client, args: UnpackArgs) -> anyhow::Result<()> {
    let UnpackArgs {
        name,
        snapshotter,
        platform,
    } = args;

    let started = std::time::Instant::now();
    let r = client
        .unpack()
        .unpack(berth_proto::berth::services::unpack::v1::UnpackRequest {
            name: name.clone(),
            snapshotter,
            platform,
        })
        .await?
        .into_inner();
    println!(
        "unpacked {name}: {} of {} layers extracted in {:.2?} (top snapshot {})",
        r.extracted,
        r.layers,
        started.elapsed(),
        r.chain_id
    );
    Ok(())
}

async fn tag(client: &Client, args: TagArgs) -> anyhow::Result<()> {
    let TagArgs {
        source,
        targets,
        force,
    } = args;
    let mut svc = client.images();

    let src = svc
        .get(GetImageRequest { name: source })
        .await?
        .into_inner()
        .image
        .ok_or_else(|| anyhow::anyhow!("daemon returned no image"))?;
    for target in targets {
        let img = Image {
            name: target.clone(),
            labels: src.labels.clone(),
            target: src.target.clone(),
            created_at: None,
            updated_at: None,
        };
        let created = svc
            .create(CreateImageRequest {
                image: Some(img.clone()),
            })
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == tonic::Code::AlreadyExists && force => {
                svc.update(UpdateImageRequest {
                    image: Some(img),
                    update_mask: None,
                })
                .await?;
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                anyhow::bail!("image {target} already exists; pass --force to replace it")
            }
            Err(e) => return Err(e.into()),
        }
        println!("{target}");
    }
    Ok(())
}
