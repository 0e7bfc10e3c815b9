//! berth network create|ls|inspect|rm

use crate::output::{each_id, labels, parse_labels, rfc3339, ListFlags};
use crate::verbs;
use anyhow::anyhow;
use berth_client::Client;
use berth_proto::berth::services::networks::v1::{
    CreateNetworkRequest, GetNetworkRequest, ListNetworksRequest, Network, RemoveNetworkRequest,
};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Cmd {
    /// Create a bridge network with a subnet of its own; prints its name
    Create {
        name: String,
        /// IPv4 subnet (default: the first free 10.213.N.0/24)
        #[arg(long)]
        subnet: Option<String>,
        /// Gateway address (default: the subnet's first)
        #[arg(long)]
        gateway: Option<String>,
        /// No masquerade and no default route: containers reach each other and the host only
        #[arg(long)]
        internal: bool,
        /// Labels (key=value)
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
    },
    /// Show networks as JSON: subnet, gateway, bridge, containers and their addresses
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while a container is on one)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn json(n: &Network) -> serde_json::Value {
    let containers: Vec<serde_json::Value> = n
        .endpoints
        .iter()
        .map(|e| {
            let ports: Vec<serde_json::Value> = e
                .ports
                .iter()
                .map(|p| serde_json::json!({"host_ip": p.host_ip, "host_port": p.host_port, "container_port": p.container_port, "protocol": p.protocol}))
                .collect();
            serde_json::json!({"namespace": e.namespace, "id": e.container_id, "interface": e.ifname, "ips": e.ips, "ports": ports})
        })
        .collect();
    serde_json::json!({
        "name": n.name, "subnet": n.subnet, "gateway": n.gateway, "bridge": n.bridge,
        "internal": n.internal, "labels": n.labels, "managed": n.managed, "file": n.file,
        "created_at": n.created_at.as_ref().map(|t| rfc3339(Some(t))),
        "containers": containers,
    })
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create {
            name,
            subnet,
            gateway,
            internal,
            labels,
        } => {
            let req = CreateNetworkRequest {
                name,
                subnet: subnet.unwrap_or_default(),
                gateway: gateway.unwrap_or_default(),
                internal,
                labels: parse_labels(&labels)?,
            };
            create(client, req).await
        }
        Cmd::Ls { flags } => ls(client, flags).await,
        Cmd::Inspect { names } => inspect(client, names).await,
        Cmd::Rm { names } => rm(client, names).await,
    }
}

async fn create(client: &Client, req: CreateNetworkRequest) -> anyhow::Result<()> {
    let name = req.name.clone();
    let n = client
        .networks()
        .create(req)
        .await
        .map_err(|e| anyhow!("cannot create network {name}: {}", e.message()))?
        .into_inner()
        .network
        .unwrap_or_default();
    println!("{}", n.name);
    Ok(())
}

async fn ls(client: &Client, flags: ListFlags) -> anyhow::Result<()> {
    let all = client
        .networks()
        .list(ListNetworksRequest {})
        .await
        .map_err(|e| anyhow!("cannot list networks: {}", e.message()))?
        .into_inner()
        .networks;
    let header = [
        "NAME",
        "SUBNET",
        "GATEWAY",
        "BRIDGE",
        "CONTAINERS",
        "LABELS",
    ];
    let quiet = flags.quiet;
    verbs::list(&header, &all, flags, |n| {
        let cells = if quiet {
            vec![n.name.clone()]
        } else {
            vec![
                n.name.clone(),
                n.subnet.clone(),
                n.gateway.clone(),
                n.bridge.clone(),
                n.endpoints.len().to_string(),
                labels(&n.labels),
            ]
        };
        (cells, json(n))
    })
}

async fn inspect(client: &Client, names: Vec<String>) -> anyhow::Result<()> {
    verbs::inspect(names, |name| async move {
        let n = client
            .networks()
            .get(GetNetworkRequest { name: name.clone() })
            .await
            .map_err(|e| anyhow!("network {name}: {}", e.message()))?
            .into_inner()
            .network
            .unwrap_or_default();
        Ok(json(&n))
    })
    .await
}

async fn rm(client: &Client, names: Vec<String>) -> anyhow::Result<()> {
    each_id(&names, |name| {
        let mut svc = client.networks();
        async move {
            svc.remove(RemoveNetworkRequest { name: name.clone() })
                .await
                .map_err(|e| anyhow!("cannot remove network {name}: {}", e.message()))?;
            Ok(())
        }
    })
    .await
}
