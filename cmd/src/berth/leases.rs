//! berth leases ls|create|rm

use crate::output::{labels, parse_labels, rfc3339, ListFlags, Table};
use berth_client::Client;
use berth_proto::leases::{CreateRequest, DeleteRequest, ListRequest};
use clap::Subcommand;
use std::time::{Duration, SystemTime};

/// The label garbage collection reads to expire a lease.

#[derive(Subcommand)]
pub enum Cmd {
    /// List leases
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
        /// Filters, e.g. id==x or labels.k==v
        filters: Vec<String>,
    },
    /// Create a lease; prints its id
    Create {
        /// Lease id (default: generated)
        #[arg(long, short = 'i')]
        id: Option<String>,
        /// Expire after this long (e.g. 24h, 30m); 0 never expires
        #[arg(long, short = 'x', default_value = "24h")]
        expires: humantime::Duration,
        /// Labels (key=value)
        #[arg(long = "label", short = 'l')]
        labels: Vec<String>,
    },
    /// Remove leases
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
        /// Wait for garbage collection
        #[arg(long)]
        sync: bool,
    },
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    let mut svc = client.leases();
    match cmd {
        Cmd::Ls { flags, filters } => {
            let resp = svc.list(ListRequest { filters }).await?.into_inner();
            let mut t = Table::new(&["ID", "CREATED AT", "LABELS"]);
            for l in resp.leases {
                let created = rfc3339(l.created_at.as_ref());
                let json =
                    serde_json::json!({"id": l.id, "created_at": created, "labels": l.labels});
                t.row(vec![l.id, created, labels(&l.labels)], json);
            }
            t.print(flags)?;
        }
        Cmd::Create {
            id,
            expires,
            labels,
        } => {
            let mut labels = parse_labels(&labels)?;
            let d: Duration = expires.into();
            if !d.is_zero() {
                let at = SystemTime::now() + d;
                labels.insert(
                    berth_proto::vocab::labels::GC_EXPIRE.into(),
                    berth_proto::vocab::time::rfc3339(at),
                );
            }
            let lease = svc
                .create(CreateRequest {
                    id: id.unwrap_or_default(),
                    labels,
                })
                .await?
                .into_inner()
                .lease
                .ok_or_else(|| anyhow::anyhow!("daemon returned no lease"))?;
            println!("{}", lease.id);
        }
        Cmd::Rm { ids, sync } => {
            for id in ids {
                svc.delete(DeleteRequest {
                    id: id.clone(),
                    sync,
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot remove lease {id}: {}", e.message()))?;
                println!("{id}");
            }
        }
    }
    Ok(())
}
