//! berth volumes create|ls|inspect|rm|prune

use crate::output::{labels, parse_labels, rfc3339, size, ListFlags};
use crate::verbs;
use berth_client::Client;
use berth_proto::berth::services::volumes::v1::{
    CreateVolumeRequest, GetVolumeRequest, ListVolumesRequest, PruneVolumesRequest,
    RemoveVolumeRequest, Volume,
};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a named volume (an anonymous one without a name); prints its name
    Create {
        name: Option<String>,
        /// Labels (key=value)
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
        /// Also compute each volume's size (walks every volume)
        #[arg(long, short = 's')]
        size: bool,
        /// Filters, e.g. name~=data, anonymous==true, labels.k==v
        filters: Vec<String>,
    },
    /// Show volumes as JSON: mountpoint, labels, users, size
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one, unless --force)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Remove volumes no container uses: anonymous ones, every one with --all
    Prune {
        #[arg(long)]
        all: bool,
    },
}

fn json(v: &Volume) -> serde_json::Value {
    serde_json::json!({
        "name": v.name, "mountpoint": v.mountpoint, "labels": v.labels,
        "anonymous": v.anonymous, "used_by": v.used_by,
        "created_at": rfc3339(v.created_at.as_ref()),
        "size": (v.usage >= 0).then_some(v.usage),
    })
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create { name, labels } => create(client, name, labels).await,
        Cmd::Ls {
            flags,
            size: with_size,
            filters,
        } => ls(client, flags, with_size, filters).await,
        Cmd::Inspect { names } => inspect(client, names).await,
        Cmd::Rm { names, force } => rm(client, names, force).await,
        Cmd::Prune { all } => prune(client, all).await,
    }
}

async fn create(client: &Client, name: Option<String>, labels: Vec<String>) -> anyhow::Result<()> {
    let v = client
        .volumes()
        .create(CreateVolumeRequest {
            name: name.unwrap_or_default(),
            labels: parse_labels(&labels)?.into_iter().collect(),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create volume: {}", e.message()))?
        .into_inner()
        .volume
        .unwrap_or_default();
    println!("{}", v.name);
    Ok(())
}

async fn ls(
    client: &Client,
    flags: ListFlags,
    with_size: bool,
    filters: Vec<String>,
) -> anyhow::Result<()> {
    let volumes = client
        .volumes()
        .list(ListVolumesRequest {
            filters,
            usage: with_size,
        })
        .await?
        .into_inner()
        .volumes;
    let header = ["NAME", "SIZE", "USED BY", "LABELS"];
    verbs::list(&header, volumes, flags, |v| {
        let used = if v.usage >= 0 {
            size(v.usage)
        } else {
            "-".into()
        };
        let cells = vec![v.name.clone(), used, v.used_by.join(","), labels(&v.labels)];
        (cells, json(&v))
    })
}

async fn inspect(client: &Client, names: Vec<String>) -> anyhow::Result<()> {
    verbs::inspect(names, |name| async move {
        let v = client
            .volumes()
            .get(GetVolumeRequest {
                name: name.clone(),
                usage: true,
            })
            .await
            .map_err(|e| anyhow::anyhow!("volume {name}: {}", e.message()))?
            .into_inner()
            .volume
            .unwrap_or_default();
        Ok(json(&v))
    })
    .await
}

async fn rm(client: &Client, names: Vec<String>, force: bool) -> anyhow::Result<()> {
    verbs::remove(names, |name| async move {
        client
            .volumes()
            .remove(RemoveVolumeRequest {
                name: name.clone(),
                force,
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot remove volume {name}: {}", e.message()))?;
        Ok(())
    })
    .await
}

async fn prune(client: &Client, all: bool) -> anyhow::Result<()> {
    let r = client
        .volumes()
        .prune(PruneVolumesRequest { all })
        .await?
        .into_inner();
    for n in &r.removed {
        println!("{n}");
    }
    println!("reclaimed {}", size(r.reclaimed));
    Ok(())
}
