//! berth-snapshotter: one of berth's snapshotters served as a containerd proxy plugin
//! (`containerd.services.snapshots.v1.Snapshots` on a unix socket), for containerd or another
//! berthd to name in `[proxy_plugins.NAME]`.

#[path = "../daemon_files.rs"]
mod daemon_files;

use anyhow::Context;
use berth_services::edge::snapshotter_proxy::server::PluginService;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "berth-snapshotter",
    version,
    about = "berth's snapshotters as a containerd proxy plugin (type snapshot)"
)]
struct Args {
    /// The snapshotter to serve: overlayfs, native or erofs
    #[arg(long, default_value = berth_snapshotters::overlay::NAME)]
    snapshotter: String,
    /// Where the snapshots and their metadata live (the snapshotter's own directory)
    #[arg(long)]
    root: PathBuf,
    /// The unix socket to serve on (what the daemon's `address` names)
    #[arg(long, short = 'a')]
    address: PathBuf,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, short = 'l', default_value = "info")]
    log_level: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.root)
        .with_context(|| format!("create {}", args.root.display()))?;
    let _lock = daemon_files::lock_root(&args.root, "berth-snapshotter.pid", "berth-snapshotter")?;
    let (name, root) = (args.snapshotter.clone(), args.root.clone());
    let snapshotter = tokio::task::spawn_blocking(move || {
        let s = berth_snapshotters::open(&name, &root)?;
        // Directories a crash left mid-create or mid-remove.
        s.cleanup()?;
        Ok::<_, berth_snapshotters::Error>(s)
    })
    .await?
    .with_context(|| {
        format!(
            "open snapshotter {} at {}",
            args.snapshotter,
            args.root.display()
        )
    })?;
    let listener = daemon_files::bind_socket(&args.address, 0o600)?;
    tracing::info!(
        snapshotter = %args.snapshotter,
        root = %args.root.display(),
        address = %args.address.display(),
        "berth-snapshotter serving"
    );
    let served = tonic::transport::Server::builder()
        .add_service(PluginService::new(Arc::from(snapshotter)).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            daemon_files::stop_requested(),
        )
        .await;
    let _ = std::fs::remove_file(&args.address);
    served.context("gRPC server failed")?;
    tracing::info!("berth-snapshotter stopped");
    Ok(())
}
