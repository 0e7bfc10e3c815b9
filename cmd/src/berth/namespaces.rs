//! berth namespaces ls|create|rm|label

use crate::output::{labels, parse_labels, ListFlags, Table};
use berth_client::Client;
use berth_proto::namespaces::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
    UpdateNamespaceRequest,
};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum Cmd {
    /// List namespaces
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
    },
    /// Create a namespace with optional labels (key=value)
    Create { name: String, labels: Vec<String> },
    /// Remove empty namespaces
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set (key=value) or remove (key=) labels
    Label {
        name: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    let mut svc = client.namespaces();
    match cmd {
        Cmd::Ls { flags } => {
            let resp = svc
                .list(ListNamespacesRequest::default())
                .await?
                .into_inner();
            let mut t = Table::new(&["NAME", "LABELS"]);
            for n in resp.namespaces {
                let json = serde_json::json!({"name": n.name, "labels": n.labels});
                t.row(vec![n.name, labels(&n.labels)], json);
            }
            t.print(flags)?;
        }
        Cmd::Create { name, labels } => {
            let labels = parse_labels(&labels)?;
            svc.create(CreateNamespaceRequest {
                namespace: Some(Namespace { name, labels }),
            })
            .await?;
        }
        Cmd::Rm { names } => {
            let mut failed = false;
            for name in names {
                match svc
                    .delete(DeleteNamespaceRequest { name: name.clone() })
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("berth: cannot remove namespace {name}: {}", e.message());
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some namespaces were not removed");
            }
        }
        Cmd::Label { name, labels } => {
            let labels = parse_labels(&labels)?;
            let mask = crate::output::label_mask(&labels);
            svc.update(UpdateNamespaceRequest {
                namespace: Some(Namespace { name, labels }),
                update_mask: Some(mask),
            })
            .await?;
        }
    }
    Ok(())
}
