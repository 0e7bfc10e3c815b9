//! berth snapshots ls|info|tree|mounts|prepare|view|commit|rm|usage|label|diff

use crate::output::{parse_labels, rfc3339, size, ListFlags};
use crate::verbs;
use berth_client::Client;
use berth_proto::diff::DiffRequest;
use berth_proto::snapshots::{
    CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest, UsageRequest,
    ViewSnapshotRequest,
};
use berth_proto::types::Mount;
use clap::{Args, Subcommand};
use std::collections::{BTreeMap, HashMap};

#[derive(Args)]
pub struct Snapshots {
    /// Snapshotter to use
    #[arg(
        long,
        short = 's',
        global = true,
        env = "BERTH_SNAPSHOTTER",
        default_value = "overlayfs"
    )]
    snapshotter: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List snapshots
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show one snapshot as JSON
    Info(InfoArgs),
    /// Show snapshots as a tree of parents and children
    Tree,
    /// Print the mount commands for a snapshot at TARGET
    Mounts(MountsArgs),
    /// Make a writable snapshot on PARENT; prints its mounts at --target
    Prepare(PrepareArgs),
    /// Make a read-only snapshot of PARENT; prints its mounts at --target
    View(ViewArgs),
    /// Commit the active snapshot KEY as NAME (unreferenced committed snapshots are garbage:
    /// give `--label containerd.io/gc.root=<anything>` to keep one, or commit under a lease)
    Commit(CommitArgs),
    /// Remove snapshots
    #[command(alias = "remove", alias = "delete")]
    Rm(RmArgs),
    /// Disk usage of snapshots
    Usage(UsageArgs),
    /// Set (key=value) or remove (key=) labels
    Label(LabelArgs),
    /// Write the changes of snapshot KEY against its parent as a layer; prints its digest
    Diff(DiffArgs),
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub flags: ListFlags,
    /// Filters, e.g. kind==committed or labels.k==v
    pub filters: Vec<String>,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    pub key: String,
}

#[derive(clap::Args)]
pub struct MountsArgs {
    pub target: String,
    pub key: String,
}

#[derive(clap::Args)]
pub struct PrepareArgs {
    pub key: String,
    pub parent: Option<String>,
    #[arg(long, default_value = "/mnt")]
    pub target: String,
}

#[derive(clap::Args)]
pub struct ViewArgs {
    pub key: String,
    pub parent: String,
    #[arg(long, default_value = "/mnt")]
    pub target: String,
}

#[derive(clap::Args)]
pub struct CommitArgs {
    pub name: String,
    pub key: String,
    /// key=value labels for the committed snapshot
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub keys: Vec<String>,
}

#[derive(clap::Args)]
pub struct UsageArgs {
    pub keys: Vec<String>,
}

#[derive(clap::Args)]
pub struct LabelArgs {
    pub key: String,
    #[arg(required = true)]
    pub labels: Vec<String>,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    pub key: String,
    /// Layer media type
    #[arg(long, default_value = berth_proto::vocab::media::OCI_LAYER_GZIP)]
    pub media_type: String,
    /// Content ingest ref
    #[arg(long, default_value = "")]
    r#ref: String,
    /// key=value labels for the layer blob (unlabelled and unleased, a blob is garbage the
    /// next collection takes: `--label containerd.io/gc.root=keep` keeps it)
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

fn kind(k: i32) -> &'static str {
    match Kind::try_from(k) {
        Ok(Kind::View) => "View",
        Ok(Kind::Active) => "Active",
        Ok(Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

/// A mount as the command that performs it.
fn mount_command(m: &Mount, target: &str) -> String {
    let mut cmd = format!("mount -t {} {} {}", m.r#type, m.source, target);
    if !m.options.is_empty() {
        cmd.push_str(&format!(" -o {}", m.options.join(",")));
    }
    cmd
}

fn print_mounts(mounts: &[Mount], target: &str) {
    for m in mounts {
        println!("{}", mount_command(m, target));
    }
}

async fn list(
    client: &Client,
    snapshotter: &str,
    filters: Vec<String>,
) -> anyhow::Result<Vec<Info>> {
    let stream = client
        .snapshots()
        .list(ListSnapshotsRequest {
            snapshotter: snapshotter.into(),
            filters,
        })
        .await?
        .into_inner();
    verbs::collect(stream, |batch| batch.info).await
}

fn info_json(i: &Info) -> serde_json::Value {
    serde_json::json!({
        "Kind": kind(i.kind), "Name": i.name, "Parent": i.parent, "Labels": i.labels,
        "Created": rfc3339(i.created_at.as_ref()), "Updated": rfc3339(i.updated_at.as_ref()),
    })
}

pub async fn run(client: &Client, args: Snapshots) -> anyhow::Result<()> {
    let sn = args.snapshotter;
    match args.cmd {
        Cmd::Ls(a) => ls(client, sn.clone(), a).await?,
        Cmd::Info(a) => info(client, sn.clone(), a).await?,
        Cmd::Tree => tree(client, &sn).await?,
        Cmd::Mounts(a) => mounts(client, sn.clone(), a).await?,
        Cmd::Prepare(a) => prepare(client, sn.clone(), a).await?,
        Cmd::View(a) => view(client, sn.clone(), a).await?,
        Cmd::Commit(a) => commit(client, sn.clone(), a).await?,
        Cmd::Rm(a) => rm(client, sn.clone(), a).await?,
        Cmd::Usage(a) => usage(client, sn.clone(), a).await?,
        Cmd::Label(a) => label(client, sn.clone(), a).await?,
        Cmd::Diff(a) => diff(client, sn.clone(), a).await?,
    }
    Ok(())
}

async fn ls(client: &Client, sn: String, args: LsArgs) -> anyhow::Result<()> {
    let LsArgs { flags, filters } = args;
    let all = list(client, &sn, filters).await?;
    verbs::list(&["KEY", "PARENT", "KIND"], all, flags, |i| {
        let json = info_json(&i);
        (vec![i.name, i.parent, kind(i.kind).into()], json)
    })
}

async fn info(client: &Client, sn: String, args: InfoArgs) -> anyhow::Result<()> {
    let InfoArgs { key } = args;
    let i = client
        .snapshots()
        .stat(StatSnapshotRequest {
            snapshotter: sn,
            key,
        })
        .await?
        .into_inner()
        .info
        .unwrap_or_default();
    verbs::print_json(&info_json(&i))
}

async fn mounts(client: &Client, sn: String, args: MountsArgs) -> anyhow::Result<()> {
    let MountsArgs { target, key } = args;
    let mut svc = client.snapshots();
    let m = svc
        .mounts(MountsRequest {
            snapshotter: sn,
            key,
        })
        .await?
        .into_inner()
        .mounts;
    print_mounts(&m, &target);
    Ok(())
}

async fn prepare(client: &Client, sn: String, args: PrepareArgs) -> anyhow::Result<()> {
    let PrepareArgs {
        key,
        parent,
        target,
    } = args;
    let mut svc = client.snapshots();
    let m = svc
        .prepare(PrepareSnapshotRequest {
            snapshotter: sn,
            key,
            parent: parent.unwrap_or_default(),
            labels: HashMap::new(),
        })
        .await?
        .into_inner()
        .mounts;
    print_mounts(&m, &target);
    Ok(())
}

async fn view(client: &Client, sn: String, args: ViewArgs) -> anyhow::Result<()> {
    let ViewArgs {
        key,
        parent,
        target,
    } = args;
    let mut svc = client.snapshots();
    let m = svc
        .view(ViewSnapshotRequest {
            snapshotter: sn,
            key,
            parent,
            labels: HashMap::new(),
        })
        .await?
        .into_inner()
        .mounts;
    print_mounts(&m, &target);
    Ok(())
}

async fn commit(client: &Client, sn: String, args: CommitArgs) -> anyhow::Result<()> {
    let CommitArgs { name, key, labels } = args;
    let mut svc = client.snapshots();
    svc.commit(CommitSnapshotRequest {
        snapshotter: sn,
        name,
        key,
        labels: parse_labels(&labels)?,
    })
    .await?;
    Ok(())
}

async fn rm(client: &Client, sn: String, args: RmArgs) -> anyhow::Result<()> {
    verbs::remove(args.keys, |key| {
        let snapshotter = sn.clone();
        async move {
            client
                .snapshots()
                .remove(RemoveSnapshotRequest {
                    snapshotter,
                    key: key.clone(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot remove snapshot {key}: {}", e.message()))?;
            Ok(())
        }
    })
    .await
}

async fn usage(client: &Client, sn: String, args: UsageArgs) -> anyhow::Result<()> {
    let UsageArgs { keys } = args;
    let mut svc = client.snapshots();
    let keys = if keys.is_empty() {
        list(client, &sn, vec![])
            .await?
            .into_iter()
            .map(|i| i.name)
            .collect()
    } else {
        keys
    };
    let mut usages = vec![];
    for key in keys {
        let u = svc
            .usage(UsageRequest {
                snapshotter: sn.clone(),
                key: key.clone(),
            })
            .await?
            .into_inner();
        usages.push((key, u));
    }
    let flags = ListFlags {
        quiet: false,
        format: Default::default(),
    };
    verbs::list(&["KEY", "SIZE", "INODES"], usages, flags, |(key, u)| {
        let json = serde_json::json!({"key": key, "size": u.size, "inodes": u.inodes});
        (vec![key, size(u.size), u.inodes.to_string()], json)
    })
}

async fn label(client: &Client, sn: String, args: LabelArgs) -> anyhow::Result<()> {
    let LabelArgs { key, labels } = args;
    verbs::label(&labels, |labels, mask| async move {
        let info = client
            .snapshots()
            .update(UpdateSnapshotRequest {
                snapshotter: sn,
                info: Some(Info {
                    name: key,
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(mask),
            })
            .await?
            .into_inner()
            .info
            .unwrap_or_default();
        Ok(info.labels)
    })
    .await
}

async fn diff(client: &Client, sn: String, args: DiffArgs) -> anyhow::Result<()> {
    let DiffArgs {
        key,
        media_type,
        r#ref,
        labels,
    } = args;
    let labels = parse_labels(&labels)?;
    let mut svc = client.snapshots();
    let info = svc
        .stat(StatSnapshotRequest {
            snapshotter: sn.clone(),
            key: key.clone(),
        })
        .await?
        .into_inner()
        .info
        .unwrap_or_default();
    let right = svc
        .mounts(MountsRequest {
            snapshotter: sn.clone(),
            key: key.clone(),
        })
        .await?
        .into_inner()
        .mounts;
    // The parent, seen through a temporary view.
    let view_key = format!("{key}-diff-view-{}", std::process::id());
    let left = if info.parent.is_empty() {
        vec![]
    } else {
        svc.view(ViewSnapshotRequest {
            snapshotter: sn.clone(),
            key: view_key.clone(),
            parent: info.parent.clone(),
            labels: HashMap::new(),
        })
        .await?
        .into_inner()
        .mounts
    };
    let result = client
        .diff()
        .diff(DiffRequest {
            left,
            right,
            media_type,
            r#ref,
            labels,
        })
        .await;
    if !info.parent.is_empty() {
        let _ = svc
            .remove(RemoveSnapshotRequest {
                snapshotter: sn,
                key: view_key,
            })
            .await;
    }
    let d = result?.into_inner().diff.unwrap_or_default();
    println!("{}", d.digest);
    Ok(())
}

/// The snapshots as a tree, each under its parent.
async fn tree(client: &Client, sn: &str) -> anyhow::Result<()> {
    let all = list(client, sn, vec![]).await?;
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in &all {
        children
            .entry(i.parent.clone())
            .or_default()
            .push(i.name.clone());
    }
    fn walk(children: &BTreeMap<String, Vec<String>>, node: &str, depth: usize) {
        for c in children.get(node).into_iter().flatten() {
            let lead = if depth == 0 {
                String::new()
            } else {
                format!("{}\\_ ", "  ".repeat(depth))
            };
            println!("{lead}{c}");
            walk(children, c, depth + 1);
        }
    }
    walk(&children, "", 0);
    Ok(())
}
