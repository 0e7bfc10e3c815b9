//! berthd: the berth daemon. Serves containerd's API on a unix socket.

#[path = "../check_report.rs"]
mod check_report;
mod cleanup;
#[path = "../cli_docs.rs"]
mod cli_docs;
mod config;
#[path = "../daemon_files.rs"]
mod daemon_files;

use anyhow::{bail, Context};
use berth_services::edge::daemon::{Daemon, VersionInfo};
use berth_services::edge::grpc::authority::AnyAuthority;
use clap::{Parser, Subcommand};
use config::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth daemon: containerd's API, in Rust"
)]
struct Args {
    /// TOML config file (`berthd config default` prints every key) [default:
    /// /etc/berth/config.toml when it exists]
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Persistent data directory [default: /var/lib/berth]
    #[arg(long)]
    root: Option<PathBuf>,
    /// Runtime state directory [default: /run/berth]
    #[arg(long)]
    state: Option<PathBuf>,
    /// gRPC unix socket [default: /run/berth/berth.sock]
    #[arg(long, short = 'a')]
    address: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace
    #[arg(long, short = 'l')]
    log_level: Option<String>,
    /// Also serve the Kubernetes CRI alone on this unix socket (it is always on --address)
    #[arg(long)]
    cri_address: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Audit the root while berthd is stopped: every blob hashed, records against files,
    /// snapshots, ingests, leftover mounts. Exits 1 when something is corrupt
    Check {
        /// Remove what is safe to remove (leftovers, corrupt bytes, records of lost bytes)
        #[arg(long)]
        repair: bool,
    },
    /// Remove from the host everything this root's daemon made, whether or not the root and
    /// state still exist: its shims and their containers, mounts under the root and state,
    /// its networks' bridges, veths and iptables rules. berthd must be stopped. The root's
    /// images and records stay
    Cleanup,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion { shell: clap_complete::Shell },
    /// Write man pages (berthd.1 and one per subcommand) into DIR, or print berthd(1)
    Man { dir: Option<PathBuf> },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the default configuration as TOML
    Default,
    /// Print the effective configuration (defaults, file, flags)
    Dump,
}

/// Read when no --config is given and it exists.
const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";

/// The config file in use, if any.
fn config_path(args: &Args) -> Option<PathBuf> {
    args.config.clone().or_else(|| {
        let p = PathBuf::from(DEFAULT_CONFIG);
        p.exists().then_some(p)
    })
}

fn effective(args: &Args) -> anyhow::Result<Config> {
    let mut c = match config_path(args) {
        Some(p) => Config::load(&p)?,
        None => Config::default(),
    };
    if let Some(v) = &args.root {
        c.root = v.clone();
    }
    if let Some(v) = &args.state {
        c.state = v.clone();
    }
    if let Some(v) = &args.address {
        c.address = v.clone();
    }
    if let Some(v) = &args.log_level {
        c.log_level = v.clone();
    }
    if let Some(v) = &args.cri_address {
        c.cri.address = v.clone();
    }
    Ok(c)
}

/// Creates `dir` if needed and makes it 0700: only root may look inside.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))
}

/// `<root>/berthd.lock`, held for the life of the daemon.
fn lock_root(root: &Path) -> anyhow::Result<daemon_files::RootLock> {
    daemon_files::lock_root(root, "berthd.lock", "berthd")
}

/// berthd's sockets: 0660, root's group.
fn bind_socket(address: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    let listener = daemon_files::bind_socket(address, 0o660)?;
    std::os::unix::fs::chown(address, Some(0), Some(0)).ok();
    Ok(listener)
}

/// Connections as they arrive. An accept that fails (out of descriptors above all) backs off
/// instead of spinning a core, and the daemon keeps serving the connections it has.
/// Every connection reads through [`AnyAuthority`]: any `:authority` a client sends over the
/// socket is accepted (grpcio's percent-encoded path too).
fn accept_loop(
    listener: tokio::net::UnixListener,
) -> impl futures::Stream<Item = std::io::Result<AnyAuthority<tokio::net::UnixStream>>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => return Some((Ok(AnyAuthority::new(conn)), listener)),
                Err(e) => {
                    let exhausted = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    tracing::warn!(error = %e, "cannot accept a connection; backing off");
                    let pause = if exhausted { 100 } else { 10 };
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
            }
        }
    })
}

/// Raises the soft limit on open files to the hard one: every Write session, shim
/// connection and blob holds descriptors, and 1024 is soon reached.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed; it lives across both.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

type LogReload =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// A bare level applies to berth's own crates; libraries stay at warn. A full directive
/// (containing '=' or ',') is used as given.
fn log_filter(level: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    let directive = if level.contains(['=', ',']) {
        level.to_string()
    } else {
        format!("warn,berthd={level},berth_services={level},berth_snapshotters={level}")
    };
    tracing_subscriber::EnvFilter::try_new(&directive)
        .with_context(|| format!("invalid log level {level:?}"))
}

fn init_logging(cfg: &Config) -> anyhow::Result<LogReload> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(&cfg.log_level)?);
    let base = tracing_subscriber::registry().with(filter);
    match cfg.log_format.as_str() {
        "text" | "" => base
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
        "json" => base
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .init(),
        other => bail!("log_format {other:?}: use text or json"),
    }
    Ok(handle)
}

/// On SIGHUP: the config file is read again and what can change while running does — the
/// log level, the registry settings, the limits and the build cache's bound; anything else waits for a restart (and
/// says so).
async fn reload_on_hangup(
    args: Args,
    running: Config,
    logs: LogReload,
    registry: berth_services::core::registry::SharedConfig,
    build_cache: berth_services::core::build::CacheState,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    let mut current = running;
    while hup.recv().await.is_some() {
        let next = match effective(&args) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "SIGHUP: the config cannot be read; keeping the current one");
                continue;
            }
        };
        if next.log_level != current.log_level {
            match log_filter(&next.log_level).map(|f| logs.reload(f)) {
                Ok(Ok(())) => tracing::info!(level = next.log_level, "SIGHUP: log level changed"),
                Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: cannot change the log level"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: keeping the log level")
                }
            }
        }
        if next.registry != current.registry {
            registry.set(next.registry.clone());
            tracing::info!("SIGHUP: registry settings reloaded");
        }
        if next.limits != current.limits {
            next.limits.enforce();
            tracing::info!(limits = ?next.limits, "SIGHUP: limits reloaded");
        }
        if next.build != current.build {
            match next.build.policy() {
                Ok(p) => {
                    build_cache.set_policy(p);
                    tracing::info!(policy = ?p, "SIGHUP: build cache bound reloaded (applied after the next build)");
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "SIGHUP: keeping the build cache bound")
                }
            }
        }
        let mut rest = next.clone();
        rest.log_level = current.log_level.clone();
        rest.registry = current.registry.clone();
        rest.limits = current.limits;
        rest.build = current.build.clone();
        if rest != current {
            tracing::warn!("SIGHUP: other settings changed; they apply at the next start");
        }
        current = next;
    }
}

/// Opens every store under the configured root (blocking work, off the async workers).
async fn open_daemon(cfg: &Config) -> anyhow::Result<Daemon> {
    let version = VersionInfo {
        version: format!("v{}", env!("CARGO_PKG_VERSION")),
        revision: env!("BERTH_REVISION").to_string(),
    };
    let runtime = berth_services::core::runtime::RuntimeConfig {
        root: cfg.root.clone(),
        state: cfg.state.clone(),
        address: cfg.address.clone(),
    };
    let registry = cfg.registry.clone();
    let cri = cfg.cri.clone();
    let network = cfg.network.clone();
    let proxies = berth_services::edge::snapshotter_proxy::check_all(&cfg.proxy_plugins)?;
    Ok(tokio::task::spawn_blocking(move || {
        Daemon::open(runtime, registry, cri, network, version, &proxies)
    })
    .await??)
}

/// Takes back what a previous berthd left: its tasks' shims, the networks of containers
/// that stopped meanwhile and then the containers whose restart policy runs them at
/// berthd's start (in the background), the CRI's pods and its streaming server.
async fn recover(daemon: &Daemon) -> anyhow::Result<()> {
    daemon.tasks.recover().await;
    daemon.networks.watch_exits(&daemon.events);
    let (tasks, networks) = (daemon.tasks.clone(), daemon.networks.clone());
    let store = daemon.store.clone();
    tokio::spawn(async move {
        networks
            .recover(|ns, id| {
                let tasks = tasks.clone();
                async move { tasks.is_running(&ns, &id).await }
            })
            .await;
        // Networks settled first: a container started here joins them afresh.
        berth_services::core::restart::start_at_daemon_start(&store, &tasks).await;
    });
    if let Some(cri) = &daemon.cri {
        cri.recover()
            .await
            .context("recover the CRI's pods and containers")?;
        cri.start_streaming().await.context(
            "start the CRI streaming server (stream_server_address, stream_server_port)",
        )?;
    }
    Ok(())
}

/// The metrics endpoint, when `[metrics] address` names one.
async fn serve_metrics(
    cfg: &Config,
    daemon: &Daemon,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if cfg.metrics.address.is_empty() {
        return Ok(None);
    }
    let sources = berth_services::edge::metrics_endpoint::Sources {
        store: daemon.store.clone(),
        tasks: daemon.tasks.clone(),
    };
    let served = berth_services::edge::metrics_endpoint::serve(&cfg.metrics.address, sources)
        .await
        .with_context(|| {
            format!(
                "serve metrics on {} ([metrics] address)",
                cfg.metrics.address
            )
        })?;
    Ok(Some(served))
}

async fn serve(cfg: Config, args: Args, logs: LogReload) -> anyhow::Result<()> {
    private_dir(&cfg.root)?;
    private_dir(&cfg.state)?;
    // Passable (not listable) by others: a user-namespaced container's root is another host
    // uid and must reach its bundle's rootfs, as with containerd's /run/containerd.
    std::fs::set_permissions(&cfg.state, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("chmod 0711 {}", cfg.state.display()))?;
    let _lock = lock_root(&cfg.root)?;
    cfg.limits.enforce();
    let build_cache = cfg.build.policy()?;
    let daemon = open_daemon(&cfg).await?;
    daemon.start_build_cache(build_cache).await;
    let router = daemon.router()?;
    let listener = bind_socket(&cfg.address)?;
    let cri_listener = match (&daemon.cri, cfg.cri.address.as_os_str().is_empty()) {
        (Some(_), false) => Some(bind_socket(&cfg.cri.address)?),
        _ => None,
    };
    // Shims forward their task events here.
    let _events = berth_services::edge::shim::ttrpc::serve_events(
        &daemon.runtime.ttrpc_address(),
        daemon.events.clone(),
    )?;
    recover(&daemon).await?;
    if let (true, Some(cri)) = (cfg.nri.enable, &daemon.cri) {
        cri.start_nri(cfg.nri.clone())
            .with_context(|| format!("host NRI on {} ([nri])", cfg.nri.socket_path.display()))?;
    }
    let _cri_server = match (cri_listener, daemon.cri_router()) {
        (Some(l), Some(r)) => Some(tokio::spawn(async move {
            if let Err(e) = r.serve_with_incoming(accept_loop(l)).await {
                tracing::error!(error = %e, "the CRI socket failed");
            }
        })),
        _ => None,
    };
    // Collect what a previous run left unreferenced, then whenever deletions ask for it.
    let _gc = daemon.gc.run();
    let _metrics = serve_metrics(&cfg, &daemon).await?;
    let _reload = tokio::spawn(reload_on_hangup(
        args,
        cfg.clone(),
        logs,
        daemon.registry.clone(),
        daemon.build_cache(),
    ));
    let engine = std::env::var(config::RUNTIME_ENV).unwrap_or_default();
    tracing::info!(address = %cfg.address.display(), root = %cfg.root.display(), state = %cfg.state.display(), runtime = %engine, "berthd serving");
    let incoming = accept_loop(listener);
    let result = router
        .serve_with_incoming_shutdown(incoming, daemon_files::stop_requested())
        .await;
    let _ = std::fs::remove_file(&cfg.address);
    if !cfg.cri.address.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&cfg.cri.address);
    }
    let _ = std::fs::remove_file(daemon.runtime.ttrpc_address());
    result.context("gRPC server failed")?;
    tracing::info!("berthd stopped");
    Ok(())
}

/// `berthd check`: holds the root lock (no daemon may run meanwhile), prints each finding;
/// returns whether anything was corrupt.
fn check(cfg: &Config, repair: bool) -> anyhow::Result<bool> {
    use berth_services::core::check::{self, Layout, Severity};
    let _lock = lock_root(&cfg.root).context(
        "berthd check audits a root no daemon is using: stop berthd first, or run `berth check` for a read-only audit of the running one",
    )?;
    let report = check::check(
        &Layout {
            root: cfg.root.clone(),
            state: cfg.state.clone(),
        },
        repair,
    )?;
    let corrupt = check_report::print(
        report.findings.iter().map(|f| check_report::Line {
            corrupt: f.severity == Severity::Corrupt,
            what: &f.what,
            repaired: f.repaired,
        }),
        report.blobs as u64,
        report.records as u64,
        report.snapshots as u64,
    );
    Ok(corrupt)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = effective(&args)?;
    match &args.command {
        Some(Command::Config { command }) => {
            let text = match command {
                ConfigCommand::Default => Config::default().to_toml()?,
                ConfigCommand::Dump => cfg.to_toml()?,
            };
            print!("{text}");
            return Ok(());
        }
        Some(Command::Completion { shell }) => {
            use clap::CommandFactory;
            cli_docs::completion(Args::command(), *shell);
            return Ok(());
        }
        Some(Command::Man { dir }) => {
            use clap::CommandFactory;
            return cli_docs::man(Args::command(), dir.as_deref());
        }
        Some(Command::Cleanup) => {
            let clean = cleanup::run(&cleanup::Target {
                conf_dir: cfg.network.conf_dir_for(&cfg.root),
                root: cfg.root,
                state: cfg.state,
                address: cfg.address,
            })?;
            std::process::exit(if clean { 0 } else { 1 });
        }
        Some(Command::Check { repair }) => {
            let corrupt = check(&cfg, *repair)?;
            std::process::exit(if corrupt { 1 } else { 0 });
        }
        None => {}
    }
    // The shims berthd starts inherit its environment: the runtime goes to them there. Set
    // before any thread exists.
    let engine = cfg.runtime.effective();
    std::env::set_var(config::RUNTIME_ENV, &engine);
    let logs = init_logging(&cfg)?;
    if let Some(why) = config::RuntimeConfig::missing(&engine) {
        tracing::warn!("{why}");
    }
    raise_nofile_limit();
    berth_services::core::memory::limit_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg, args, logs))
}
