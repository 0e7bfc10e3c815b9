//! berth-snapshotter: one of berth's snapshotters served as a containerd proxy plugin
//! (`containerd.services.snapshots.v1.Snapshots` on a unix socket), for containerd or another
//! berthd to name in `[proxy_plugins.NAME]`.

use anyhow::{bail, Context};
use berth_services::edge::snapshotter_proxy::server::PluginService;
use clap::Parser;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
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
    let _lock = lock_root(&args.root)?;
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
    let listener = listen(&args.address)?;
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
            stop_requested(),
        )
        .await;
    let _ = std::fs::remove_file(&args.address);
    served.context("gRPC server failed")?;
    tracing::info!("berth-snapshotter stopped");
    Ok(())
}

/// One server per root: two would share one metadata file and one set of directories.
fn lock_root(root: &Path) -> anyhow::Result<std::fs::File> {
    let path = root.join("berth-snapshotter.pid");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; the lock lives as long as the file.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another berth-snapshotter serves root {}; stop it or pass a different --root",
            root.display()
        );
    }
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// The socket, owner-only (the daemon that uses it runs as root), replacing a stale one: the
/// root lock is held, so a socket left at the address is no live server's of this root.
fn listen(address: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(dir) = address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::remove_file(address) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove stale {}", address.display()))
        }
        _ => {}
    }
    // Created owner-only (no window in which a looser socket accepts a connection); nothing
    // else makes files while the server starts, so the process-wide umask is briefly ours.
    // SAFETY: umask only swaps the process's file mode mask; the second call restores it.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(address);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("listen on {}", address.display()))?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", address.display()))?;
    Ok(listener)
}

/// SIGTERM or SIGINT (^C): stop taking calls, finish those in flight.
async fn stop_requested() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => s.recv().await,
            // Without the handler, SIGTERM's default action stops the process instead.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
    }
}
