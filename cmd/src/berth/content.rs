//! berth content ls|get|ingest|rm|label|active

use crate::output::{age, labels, parse_labels, size, ListFlags, Table};
use berth_client::Client;
use berth_proto::content::{
    DeleteContentRequest, Info, ListContentRequest, ListStatusesRequest, ReadContentRequest,
    UpdateRequest,
};
use clap::Subcommand;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

#[derive(Subcommand)]
pub enum Cmd {
    /// List blobs
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
        /// Filters, e.g. labels."containerd.io/uncompressed"
        filters: Vec<String>,
    },
    /// Write a blob to stdout
    Get { digest: String },
    /// Ingest stdin as a blob under REF; resumes an interrupted ingest of the same ref
    Ingest {
        reference: String,
        /// Expected size in bytes
        #[arg(long)]
        expected_size: Option<i64>,
        /// Expected digest (sha256:...)
        #[arg(long)]
        expected_digest: Option<String>,
        /// Labels to set on commit (key=value)
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Remove blobs
    #[command(alias = "remove", alias = "delete")]
    Rm {
        #[arg(required = true)]
        digests: Vec<String>,
    },
    /// Set (key=value) or remove (key=) labels of a blob
    Label {
        digest: String,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// List ingests in progress
    Active {
        #[command(flatten)]
        flags: ListFlags,
    },
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    let mut svc = client.content();
    match cmd {
        Cmd::Ls { flags, filters } => {
            let mut stream = svc.list(ListContentRequest { filters }).await?.into_inner();
            let mut t = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
            while let Some(batch) = stream.next().await {
                for i in batch?.info {
                    let json = serde_json::json!({
                        "digest": i.digest, "size": i.size, "labels": i.labels,
                    });
                    t.row(
                        vec![
                            i.digest.clone(),
                            size(i.size),
                            age(i.created_at.as_ref()),
                            labels(&i.labels),
                        ],
                        json,
                    );
                }
            }
            t.print(flags)?;
        }
        Cmd::Get { digest } => {
            let mut stream = svc
                .read(ReadContentRequest {
                    digest,
                    offset: 0,
                    size: 0,
                })
                .await?
                .into_inner();
            let mut out = tokio::io::stdout();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?.data).await?;
            }
            out.flush().await?;
        }
        Cmd::Ingest {
            reference,
            expected_size,
            expected_digest,
            labels,
        } => {
            let labels = parse_labels(&labels)?;
            let digest = client
                .ingest(
                    &reference,
                    tokio::io::stdin(),
                    expected_size.unwrap_or(0),
                    expected_digest.as_deref(),
                    labels,
                )
                .await?;
            println!("{digest}");
        }
        Cmd::Rm { digests } => {
            for digest in digests {
                svc.delete(DeleteContentRequest {
                    digest: digest.clone(),
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot remove {digest}: {}", e.message()))?;
                println!("{digest}");
            }
        }
        Cmd::Label { digest, labels } => {
            let labels = parse_labels(&labels)?;
            let mask = crate::output::label_mask(&labels);
            let info = svc
                .update(UpdateRequest {
                    info: Some(Info {
                        digest,
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(mask),
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", crate::output::labels(&info.labels));
        }
        Cmd::Active { flags } => {
            let resp = svc
                .list_statuses(ListStatusesRequest {
                    filters: vec![String::new()],
                })
                .await?
                .into_inner();
            let mut t = Table::new(&["REF", "SIZE", "TOTAL", "AGE"]);
            for s in resp.statuses {
                let json = serde_json::json!({
                    "ref": s.r#ref, "offset": s.offset, "total": s.total, "expected": s.expected,
                });
                t.row(
                    vec![
                        s.r#ref.clone(),
                        size(s.offset),
                        size(s.total),
                        age(s.started_at.as_ref()),
                    ],
                    json,
                );
            }
            t.print(flags)?;
        }
    }
    Ok(())
}
