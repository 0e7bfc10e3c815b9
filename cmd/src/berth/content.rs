//! berth content ls|get|ingest|rm|label|active

use crate::output::{age, labels, parse_labels, size, ListFlags};
use crate::verbs;
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
    Ls(LsArgs),
    /// Write a blob to stdout
    Get(GetArgs),
    /// Ingest stdin as a blob under REF; resumes an interrupted ingest of the same ref
    Ingest(IngestArgs),
    /// Remove blobs
    #[command(alias = "remove", alias = "delete")]
    Rm(RmArgs),
    /// Set (key=value) or remove (key=) labels of a blob
    Label(LabelArgs),
    /// List ingests in progress
    Active(ActiveArgs),
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub flags: ListFlags,
    /// Filters, e.g. labels."containerd.io/uncompressed"
    pub filters: Vec<String>,
}

#[derive(clap::Args)]
pub struct GetArgs {
    pub digest: String,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    pub reference: String,
    /// Expected size in bytes
    #[arg(long)]
    pub expected_size: Option<i64>,
    /// Expected digest (sha256:...)
    #[arg(long)]
    pub expected_digest: Option<String>,
    /// Labels to set on commit (key=value)
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub digests: Vec<String>,
}

#[derive(clap::Args)]
pub struct LabelArgs {
    pub digest: String,
    #[arg(required = true)]
    pub labels: Vec<String>,
}

#[derive(clap::Args)]
pub struct ActiveArgs {
    #[command(flatten)]
    pub flags: ListFlags,
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Ls(a) => ls(client, a).await?,
        Cmd::Get(a) => get(client, a).await?,
        Cmd::Ingest(a) => ingest(client, a).await?,
        Cmd::Rm(a) => rm(client, a).await?,
        Cmd::Label(a) => label(client, a).await?,
        Cmd::Active(a) => active(client, a).await?,
    }
    Ok(())
}

async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let LsArgs { flags, filters } = args;
    let stream = client
        .content()
        .list(ListContentRequest { filters })
        .await?
        .into_inner();
    let infos = verbs::collect(stream, |batch| batch.info).await?;
    let header = ["DIGEST", "SIZE", "AGE", "LABELS"];
    verbs::list(&header, infos, flags, |i| {
        let json = serde_json::json!({
            "digest": i.digest, "size": i.size, "labels": i.labels,
        });
        let cells = vec![
            i.digest,
            size(i.size),
            age(i.created_at.as_ref()),
            labels(&i.labels),
        ];
        (cells, json)
    })
}

async fn get(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let GetArgs { digest } = args;
    let mut svc = client.content();
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
    Ok(())
}

async fn ingest(client: &Client, args: IngestArgs) -> anyhow::Result<()> {
    let IngestArgs {
        reference,
        expected_size,
        expected_digest,
        labels,
    } = args;
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
    Ok(())
}

async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<()> {
    verbs::remove(args.digests, |digest| async move {
        client
            .content()
            .delete(DeleteContentRequest {
                digest: digest.clone(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("cannot remove {digest}: {}", e.message()))?;
        Ok(())
    })
    .await
}

async fn label(client: &Client, args: LabelArgs) -> anyhow::Result<()> {
    let LabelArgs { digest, labels } = args;
    verbs::label(&labels, |labels, mask| async move {
        let info = client
            .content()
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
        Ok(info.labels)
    })
    .await
}

async fn active(client: &Client, args: ActiveArgs) -> anyhow::Result<()> {
    let ActiveArgs { flags } = args;
    let resp = client
        .content()
        .list_statuses(ListStatusesRequest {
            filters: vec![String::new()],
        })
        .await?
        .into_inner();
    let header = ["REF", "SIZE", "TOTAL", "AGE"];
    verbs::list(&header, resp.statuses, flags, |s| {
        let json = serde_json::json!({
            "ref": s.r#ref, "offset": s.offset, "total": s.total, "expected": s.expected,
        });
        let cells = vec![
            s.r#ref,
            size(s.offset),
            size(s.total),
            age(s.started_at.as_ref()),
        ];
        (cells, json)
    })
}
