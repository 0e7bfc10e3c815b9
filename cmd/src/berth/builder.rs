//! `berth builder prune`: the build cache's records removed on demand, as Docker's
//! `docker builder prune` does (the bound berthd keeps by itself is `[build]` in its config).

use crate::output::size;
use berth_client::Client;
use berth_proto::berth::services::build::v1::PruneRequest;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Remove build cache records: without -a only those that can no longer hit (their
    /// layer or image is gone); never one a running build uses
    Prune(PruneArgs),
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Every record not in use, not only those that can no longer hit
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Keep this much cache (least recently used records go first): 512k, 64m, 2g
    #[arg(long, value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// until=DURATION: only records unused for at least DURATION (24h, 7days, 90m)
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Do not ask (berth never asks; accepted for Docker's scripts)
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub async fn run(client: &Client, cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Prune(a) => prune(client, a).await,
    }
}

/// What `a` asks the daemon for.
fn request(a: &PruneArgs) -> anyhow::Result<PruneRequest> {
    let keep_bytes = match &a.keep_storage {
        None => 0,
        Some(s) => berth_services::core::spec::parse_size(s)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| anyhow::anyhow!("--keep-storage {s:?}: give a size (512k, 64m, 2g)"))?,
    };
    let mut unused_for_seconds = 0;
    for f in &a.filter {
        let Some(("until", d)) = f.split_once('=') else {
            anyhow::bail!("--filter {f:?}: only until=DURATION is supported");
        };
        unused_for_seconds = humantime::parse_duration(d)
            .map_err(|e| anyhow::anyhow!("--filter {f:?}: {e} (write e.g. 24h, 7days)"))?
            .as_secs();
    }
    Ok(PruneRequest {
        all: a.all,
        keep_bytes,
        unused_for_seconds,
    })
}

/// Prints what went, as Docker does ("Total reclaimed space: ...").
pub async fn prune(client: &Client, a: PruneArgs) -> anyhow::Result<()> {
    let r = client
        .build()
        .prune(request(&a)?)
        .await
        .map_err(|e| anyhow::anyhow!("cannot prune the build cache: {}", crate::output::said(&e)))?
        .into_inner();
    println!("Deleted build cache records: {}", r.records);
    println!(
        "Total reclaimed space: {}",
        size(i64::try_from(r.bytes).unwrap_or(i64::MAX))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_the_request() {
        let a = PruneArgs {
            all: true,
            keep_storage: Some("2m".into()),
            filter: vec!["until=24h".into()],
            force: true,
        };
        let r = request(&a).unwrap();
        assert_eq!(
            (r.all, r.keep_bytes, r.unused_for_seconds),
            (true, 2 << 20, 86_400)
        );
        let bad = PruneArgs {
            filter: vec!["label=x".into()],
            ..a
        };
        assert!(request(&bad).is_err());
    }
}
