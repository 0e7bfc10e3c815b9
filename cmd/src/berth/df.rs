//! `berth system df`: what images, containers and volumes take on disk, as Docker's
//! `docker system df` prints it. Images count the content blobs they reach (each blob once,
//! however many images share it); containers their writable layer's snapshot usage;
//! volumes the bytes in their directories; the build cache its records (the layers they name
//! are counted with the images that hold them).

use crate::docker::is_up;
use crate::output::{size, ListFlags};
use berth_client::Client;
use berth_proto::berth::services::build::v1::DiskUsageRequest;
use berth_proto::berth::services::volumes::v1::ListVolumesRequest;
use berth_proto::containers::Container;
use berth_proto::content::InfoRequest;
use berth_proto::snapshots::UsageRequest;
use berth_proto::types::Descriptor;
use std::collections::{BTreeMap, HashSet};

#[derive(clap::Args)]
pub struct DfArgs {
    /// One row per image, container and volume besides the totals
    #[arg(long, short = 'v')]
    verbose: bool,
    #[command(flatten)]
    flags: ListFlags,
}

/// A kind of thing on disk: how many, how many in use, bytes, and bytes only the unused
/// ones hold (what a prune would free); each one for `-v`.
#[derive(Default)]
struct Row {
    kind: &'static str,
    total: usize,
    active: usize,
    size: i64,
    reclaimable: i64,
    items: Vec<Item>,
}

/// One image, container or volume.
struct Item {
    name: String,
    size: i64,
    active: bool,
}

pub async fn df(client: &Client, a: DfArgs) -> anyhow::Result<()> {
    let all = crate::names::list(client, vec![]).await?;
    let rows = vec![
        images(client, &all).await?,
        containers(client, all).await?,
        volumes(client).await?,
        build_cache(client).await?,
    ];
    let item_json =
        |i: &Item| serde_json::json!({"name": i.name, "size": i.size, "active": i.active});
    let header = ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"];
    let table = matches!(a.flags.format, crate::output::Format::Table);
    let mut t = crate::output::Table::new(&header);
    for r in &rows {
        let pct = if r.size > 0 {
            r.reclaimable * 100 / r.size
        } else {
            0
        };
        let cells = vec![
            r.kind.to_string(),
            r.total.to_string(),
            r.active.to_string(),
            size(r.size),
            format!("{} ({pct}%)", size(r.reclaimable)),
        ];
        let mut json = serde_json::json!({
            "type": r.kind, "total": r.total, "active": r.active,
            "size": r.size, "reclaimable": r.reclaimable,
        });
        if a.verbose {
            json["items"] = r.items.iter().map(item_json).collect();
        }
        t.row(cells, json);
    }
    t.print(a.flags.clone())?;
    if !(a.verbose && table) {
        return Ok(());
    }
    for r in rows {
        println!("\n{} space usage:\n", r.kind);
        let mut t = crate::output::Table::new(&["NAME", "SIZE", "ACTIVE"]);
        for i in r.items {
            let json = item_json(&i);
            t.row(vec![i.name, size(i.size), i.active.to_string()], json);
        }
        t.print(a.flags.clone())?;
    }
    Ok(())
}

/// Images: the blobs each reaches (index, manifests, configs, layers held locally).
async fn images(client: &Client, containers: &[Container]) -> anyhow::Result<Row> {
    let images = crate::everyday::all_images(client).await?;
    let used = crate::everyday::images_used(containers);
    let mut sizes = BTreeMap::new();
    let (mut all, mut active_blobs) = (HashSet::new(), HashSet::new());
    let mut row = Row {
        kind: "Images",
        total: images.len(),
        ..Default::default()
    };
    for img in images {
        let blobs = reached(client, img.target.clone(), &mut sizes).await;
        let active = used.contains(&img.name);
        row.active += usize::from(active);
        row.items.push(Item {
            name: img.name.clone(),
            size: blobs.iter().map(|d| sizes[d]).sum(),
            active,
        });
        if active {
            active_blobs.extend(blobs.iter().cloned());
        }
        all.extend(blobs);
    }
    row.size = all.iter().map(|d| sizes[d]).sum();
    row.reclaimable = all.difference(&active_blobs).map(|d| sizes[d]).sum();
    Ok(row)
}

/// The local blobs `target` reaches; their sizes go into `sizes`.
async fn reached(
    client: &Client,
    target: Option<Descriptor>,
    sizes: &mut BTreeMap<String, i64>,
) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut todo: Vec<Descriptor> = target.into_iter().collect();
    while let Some(d) = todo.pop() {
        if found.contains(&d.digest) {
            continue;
        }
        let Ok(info) = client
            .content()
            .info(InfoRequest {
                digest: d.digest.clone(),
            })
            .await
        else {
            continue; // not held here (another platform's manifest, a layer not pulled)
        };
        let size = info.into_inner().info.map(|i| i.size).unwrap_or(d.size);
        sizes.insert(d.digest.clone(), size);
        found.insert(d.digest.clone());
        let parent = d.media_type.ends_with("manifest.v1+json")
            || d.media_type.ends_with("manifest.v2+json")
            || d.media_type.ends_with("manifest.list.v2+json")
            || d.media_type.ends_with("image.index.v1+json");
        if !parent {
            continue;
        }
        let Ok(raw) = client.read_blob(&d.digest, 0, 0).await else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            continue;
        };
        let children = ["manifests", "layers"]
            .iter()
            .filter_map(|k| doc.get(*k).and_then(|v| v.as_array()))
            .flatten()
            .chain(doc.get("config"));
        for c in children {
            let (Some(digest), Some(media_type)) = (
                c.get("digest").and_then(|v| v.as_str()),
                c.get("mediaType").and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            todo.push(Descriptor {
                digest: digest.to_string(),
                media_type: media_type.to_string(),
                size: c.get("size").and_then(|v| v.as_i64()).unwrap_or(0),
                ..Default::default()
            });
        }
    }
    found
}

/// Containers: their writable layer (the rootfs snapshot's own usage); running ones active.
async fn containers(client: &Client, all: Vec<Container>) -> anyhow::Result<Row> {
    let mut row = Row {
        kind: "Containers",
        total: all.len(),
        ..Default::default()
    };
    for c in all {
        let up = is_up(client, &c.id).await;
        let used = if c.snapshot_key.is_empty() {
            0
        } else {
            client
                .snapshots()
                .usage(UsageRequest {
                    snapshotter: c.snapshotter.clone(),
                    key: c.snapshot_key.clone(),
                })
                .await
                .map(|u| u.into_inner().size)
                .unwrap_or(0)
        };
        row.active += usize::from(up);
        row.size += used;
        if !up {
            row.reclaimable += used;
        }
        row.items.push(Item {
            name: crate::names::name_of(&c).to_string(),
            size: used,
            active: up,
        });
    }
    Ok(row)
}

/// Volumes: the bytes in each; those a container uses are active.
async fn volumes(client: &Client) -> anyhow::Result<Row> {
    let volumes = client
        .volumes()
        .list(ListVolumesRequest {
            filters: vec![],
            usage: true,
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot list volumes: {}", crate::output::said(&e)))?
        .into_inner()
        .volumes;
    let mut row = Row {
        kind: "Local Volumes",
        total: volumes.len(),
        ..Default::default()
    };
    for v in volumes {
        let used = v.usage.max(0);
        let active = !v.used_by.is_empty();
        row.active += usize::from(active);
        row.size += used;
        if !active {
            row.reclaimable += used;
        }
        row.items.push(Item {
            name: v.name,
            size: used,
            active,
        });
    }
    Ok(row)
}

/// The build cache: its records (RUN steps, whole images) and what they take as du counts
/// it. None is in use between builds, so all of it is reclaimable.
async fn build_cache(client: &Client) -> anyhow::Result<Row> {
    let usage = client
        .build()
        .disk_usage(DiskUsageRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("cannot size the build cache: {}", crate::output::said(&e)))?
        .into_inner();
    let bytes = i64::try_from(usage.bytes).unwrap_or(i64::MAX);
    Ok(Row {
        kind: "Build Cache",
        total: usize::try_from(usage.records).unwrap_or(usize::MAX),
        active: 0,
        size: bytes,
        reclaimable: bytes,
        items: vec![],
    })
}
