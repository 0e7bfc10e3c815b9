//! berth snapshots ls|info|tree|mounts|prepare|view|commit|rm|usage|label|diff

use crate::output::{labels, parse_labels, rfc3339, size, ListFlags, Table};
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
use tokio_stream::StreamExt;

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
    Ls {
        #[command(flatten)]
        flags: ListFlags,
        /// Filters, e.g. kind==committed or labels.k==v
        filters: Vec<String>,
    },
    /// Show one snapshot as JSON
    Info { key: String },
    /// Show snapshots as a tree of parents and children
    Tree,
    /// Print the mount commands for a snapshot at TARGET
    Mounts { target: String, key: String },
    /// Make a writable snapshot on PARENT; prints its mounts at --target
    Prepare {
        key: String,
        parent: Option<String>,
        #[arg(long, default_value = "/mnt")]
        target: String,
    },
    /// Make a read-only snapshot of PARENT; prints its mounts at --target
    View {
        key: String,
        parent: String,
        #[arg(long, default_value = "/mnt")]
        target: String,
    },
    /// Commit the active snapshot KEY as NAME (unreferenced committed snapshots are garbage:
    /// give `--label containerd.io/gc.root=<anything>` to keep one, or commit under a lease)
    Commit {
        name: String,
        key: String,
        /// key=value labels for the committed snapshot
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove snapshots
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Disk usage of snapshots
    Usage { keys: Vec<String> },
    /// Set (key=value) or remove (key=) labels
    Label {
        key: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Write the changes of snapshot KEY against its parent as a layer; prints its digest
    Diff {
        key: String,
        /// Layer media type
        #[arg(long, default_value = "application/vnd.oci.image.layer.v1.tar+gzip")]
        media_type: String,
        /// Content ingest ref
        #[arg(long, default_value = "")]
        r#ref: String,
    },
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
    let mut stream = client
        .snapshots()
        .list(ListSnapshotsRequest {
            snapshotter: snapshotter.into(),
            filters,
        })
        .await?
        .into_inner();
    let mut out = vec![];
    while let Some(batch) = stream.next().await {
        out.extend(batch?.info);
    }
    Ok(out)
}

fn info_json(i: &Info) -> serde_json::Value {
    serde_json::json!({
        "Kind": kind(i.kind), "Name": i.name, "Parent": i.parent, "Labels": i.labels,
        "Created": rfc3339(i.created_at.as_ref()), "Updated": rfc3339(i.updated_at.as_ref()),
    })
}

pub async fn run(client: &Client, args: Snapshots) -> anyhow::Result<()> {
    let sn = args.snapshotter;
    let mut svc = client.snapshots();
    match args.cmd {
        Cmd::Ls { flags, filters } => {
            let mut t = Table::new(&["KEY", "PARENT", "KIND"]);
            for i in list(client, &sn, filters).await? {
                let json = info_json(&i);
                t.row(vec![i.name, i.parent, kind(i.kind).into()], json);
            }
            t.print(flags)?;
        }
        Cmd::Info { key } => {
            let i = svc
                .stat(StatSnapshotRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", serde_json::to_string_pretty(&info_json(&i))?);
        }
        Cmd::Tree => {
            let all = list(client, &sn, vec![]).await?;
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
        }
        Cmd::Mounts { target, key } => {
            let m = svc
                .mounts(MountsRequest {
                    snapshotter: sn,
                    key,
                })
                .await?
                .into_inner()
                .mounts;
            print_mounts(&m, &target);
        }
        Cmd::Prepare {
            key,
            parent,
            target,
        } => {
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
        }
        Cmd::View {
            key,
            parent,
            target,
        } => {
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
        }
        Cmd::Commit { name, key, labels } => {
            svc.commit(CommitSnapshotRequest {
                snapshotter: sn,
                name,
                key,
                labels: parse_labels(&labels)?,
            })
            .await?;
        }
        Cmd::Rm { keys } => {
            for key in keys {
                svc.remove(RemoveSnapshotRequest {
                    snapshotter: sn.clone(),
                    key: key.clone(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot remove snapshot {key}: {}", e.message()))?;
                println!("{key}");
            }
        }
        Cmd::Usage { keys } => {
            let keys = if keys.is_empty() {
                list(client, &sn, vec![])
                    .await?
                    .into_iter()
                    .map(|i| i.name)
                    .collect()
            } else {
                keys
            };
            let mut t = Table::new(&["KEY", "SIZE", "INODES"]);
            for key in keys {
                let u = svc
                    .usage(UsageRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    })
                    .await?
                    .into_inner();
                let json = serde_json::json!({"key": key, "size": u.size, "inodes": u.inodes});
                t.row(vec![key, size(u.size), u.inodes.to_string()], json);
            }
            t.print(ListFlags {
                quiet: false,
                format: Default::default(),
            })?;
        }
        Cmd::Label { key, labels: l } => {
            let l = parse_labels(&l)?;
            let mask = crate::output::label_mask(&l);
            let info = svc
                .update(UpdateSnapshotRequest {
                    snapshotter: sn,
                    info: Some(Info {
                        name: key,
                        labels: l,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", labels(&info.labels));
        }
        Cmd::Diff {
            key,
            media_type,
            r#ref,
        } => {
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
                    labels: HashMap::new(),
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
        }
    }
    Ok(())
}
