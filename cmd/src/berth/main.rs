//! berth: the command line for berthd (and any containerd-compatible daemon).

mod build;
mod builder;
#[path = "../check_report.rs"]
mod check_report;
mod checkpoint;
#[path = "../cli_docs.rs"]
mod cli_docs;
mod commit;
mod containers;
mod content;
mod cp;
mod df;
mod docker;
mod events;
mod everyday;
mod images;
mod leases;
mod names;
mod namespaces;
mod networks;
mod output;
mod progress;
mod run;
mod snapshots;
mod verbs;
mod volumes;

use anyhow::Context;
use berth_client::Client;
use clap::{Parser, Subcommand};
use output::{ListFlags, Table};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "berth: run and manage containers through berthd"
)]
struct Cli {
    /// berthd's socket (before the command: `berth -a SOCK ps -a`)
    #[arg(long, short = 'a', env = "BERTH_ADDRESS", default_value = berth_client::DEFAULT_ADDRESS)]
    address: PathBuf,
    /// Namespace to work in
    #[arg(long, short = 'n', global = true, env = "BERTH_NAMESPACE", default_value = berth_client::DEFAULT_NAMESPACE)]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print client and server versions
    Version,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion { shell: clap_complete::Shell },
    /// Write man pages (berth.1 and one per subcommand) into DIR, or print berth(1)
    Man { dir: Option<PathBuf> },
    /// Run a command in a new container, as Docker does: run [OPTIONS] IMAGE [COMMAND
    /// [ARG...]] (exit code = the container's; 125 berth failed, 126 cannot run, 127 not
    /// found). The ctr-style form with an id of your choosing is `berth containers run`
    Run(Box<run::DockerRun>),
    /// List containers, Docker-style (running ones; -a for all)
    Ps(docker::PsArgs),
    /// Print a container's log (-f to follow)
    Logs(docker::LogsArgs),
    /// Run a command in a running container (-it for a shell)
    Exec(docker::ExecArgs),
    /// Stop containers: the stop signal, then SIGKILL after -t seconds
    Stop(docker::StopArgs),
    /// Start stopped containers again (output appended to their logs)
    Start(docker::StartArgs),
    /// Remove containers (-f: kill running ones first)
    Rm(docker::RmArgs),
    /// Stop containers, then start them again
    Restart(everyday::RestartArgs),
    /// Send a signal to containers (default KILL; -s NAME or NUMBER)
    Kill(everyday::KillArgs),
    /// Freeze every process of containers
    Pause(everyday::IdsArgs),
    /// Thaw paused containers
    Unpause(everyday::IdsArgs),
    /// Give a container another name
    Rename(everyday::RenameArgs),
    /// Wait until containers exit; print their exit codes
    Wait(everyday::IdsArgs),
    /// A container's published ports (`berth port NAME [PORT[/PROTO]]`)
    Port(everyday::PortArgs),
    /// The whole engine: `system df [-v]`, `system prune [-a] [--volumes]`
    #[command(subcommand)]
    System(everyday::System),
    /// The build cache: `builder prune [-a] [--keep-storage SIZE] [--filter until=DURATION]`
    #[command(subcommand)]
    Builder(builder::Cmd),
    /// Show containers or images as JSON
    Inspect(docker::InspectArgs),
    /// Live CPU, memory and process counts of running containers
    Stats(docker::StatsArgs),
    /// Processes of a container
    Top(docker::TopArgs),
    /// Copy files between a container and the host: cp CONTAINER:PATH HOSTPATH, or back
    Cp(cp::CpArgs),
    /// Remove images (= images rm)
    Rmi(images::RmArgs),
    /// Pull an image (= images pull)
    Pull(images::PullArgs),
    /// Push an image (= images push)
    Push(images::PushArgs),
    /// Give an image another name (= images tag)
    Tag(images::TagArgs),
    /// Make a new image from a container's changes (one new layer)
    Commit(commit::Commit),
    /// Checkpoint a running container with CRIU into a checkpoint image (on runc)
    Checkpoint(checkpoint::Checkpoint),
    /// Create and start a container restored from a checkpoint image
    Restore(checkpoint::Restore),
    /// Build an image from a Dockerfile (inside berthd)
    Build(build::Build),
    /// Daemon plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Manage namespaces
    #[command(subcommand, alias = "ns")]
    Namespaces(namespaces::Cmd),
    /// Manage blobs in the content store
    #[command(subcommand)]
    Content(content::Cmd),
    /// Manage images; alone, lists them as `docker images` does
    #[command(alias = "image", alias = "i", args_conflicts_with_subcommands = true)]
    Images(ImagesArgs),
    /// Manage containers
    #[command(subcommand, alias = "c", alias = "container")]
    Containers(containers::Containers),
    /// Manage running tasks
    #[command(subcommand, alias = "t")]
    Tasks(containers::Tasks),
    /// Manage snapshots
    #[command(alias = "snapshot")]
    Snapshots(snapshots::Snapshots),
    /// Manage leases
    #[command(subcommand)]
    Leases(leases::Cmd),
    /// Manage volumes (data that outlives containers)
    #[command(subcommand, alias = "volume")]
    Volumes(volumes::Cmd),
    /// Manage container networks (CNI bridges with subnets of their own)
    #[command(subcommand, alias = "networks")]
    Network(networks::Cmd),
    /// Audit the running daemon's root (read-only; `berthd check --repair` with the daemon
    /// stopped repairs). Exits 1 when something is corrupt
    Check,
    /// Print events as they happen
    Events {
        /// Docker's filters: type=container|image|namespace|snapshot|content,
        /// event=create|start|die|destroy|... (or a topic's last part), container=NAME|ID,
        /// image=NAME, namespace=NS; one key's values: any; different keys: all
        #[arg(long = "filter", short = 'f', value_name = "KEY=VALUE")]
        docker_filters: Vec<String>,
        /// containerd's filters, e.g. topic~=/images/ (any matches)
        filters: Vec<String>,
    },
}

/// `berth images SUBCOMMAND`, or `berth images [ls flags]` for the listing.
#[derive(clap::Args)]
struct ImagesArgs {
    #[command(subcommand)]
    cmd: Option<images::Cmd>,
    #[command(flatten)]
    ls: images::LsArgs,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List plugins
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        flags: ListFlags,
        /// Filters, e.g. type==io.containerd.grpc.v1
        filters: Vec<String>,
    },
}

async fn version(client: &Client) -> anyhow::Result<()> {
    println!("Client:");
    println!("  Version:  v{}", env!("CARGO_PKG_VERSION"));
    println!("  Revision: {}", env!("BERTH_REVISION"));
    let v = client.version().version(()).await?.into_inner();
    let uuid = client.introspection().server(()).await?.into_inner().uuid;
    println!();
    println!("Server:");
    println!("  Version:  {}", v.version);
    println!("  Revision: {}", v.revision);
    println!("  UUID: {uuid}");
    Ok(())
}

async fn plugins(client: &Client, flags: ListFlags, filters: Vec<String>) -> anyhow::Result<()> {
    use berth_proto::introspection::PluginsRequest;
    let resp = client
        .introspection()
        .plugins(PluginsRequest { filters })
        .await?
        .into_inner();
    let mut t = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
    for p in resp.plugins {
        let platforms: Vec<String> = p
            .platforms
            .iter()
            .map(|pl| format!("{}/{}", pl.os, pl.architecture))
            .collect();
        let status = match &p.init_err {
            Some(e) => format!("error: {}", e.message),
            None => "ok".into(),
        };
        let uri = format!("{}.{}", p.r#type, p.id);
        let json = serde_json::json!({
            "type": p.r#type, "id": p.id, "requires": p.requires,
            "platforms": platforms, "exports": p.exports, "status": status,
        });
        let cells = if flags.quiet {
            vec![uri]
        } else {
            vec![p.r#type, p.id, platforms.join(","), status]
        };
        t.row(cells, json);
    }
    t.print(flags)?;
    Ok(())
}

/// Completions and man pages come from the CLI definition itself; no daemon is needed.
fn generate(cmd: &Command) -> Option<anyhow::Result<()>> {
    use clap::CommandFactory;
    match cmd {
        Command::Completion { shell } => {
            cli_docs::completion(Cli::command(), *shell);
            Some(Ok(()))
        }
        Command::Man { dir } => Some(cli_docs::man(Cli::command(), dir.as_deref())),
        _ => None,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(done) = generate(&cli.command) {
        return done;
    }
    let client = Client::connect(&cli.address)
        .await?
        .with_namespace(&cli.namespace)
        .context("invalid namespace")?;
    match cli.command {
        Command::Version => version(&client).await,
        Command::Completion { .. } | Command::Man { .. } => Ok(()),
        Command::Run(r) => run_and_exit(&client, &cli.address, r.into_run()).await,
        Command::Containers(containers::Containers::Run(r)) => {
            run_and_exit(&client, &cli.address, r.into_run()).await
        }
        Command::Plugins(PluginsCommand::Ls { flags, filters }) => {
            plugins(&client, flags, filters).await
        }
        Command::Namespaces(cmd) => namespaces::run(&client, cmd).await,
        Command::Content(cmd) => content::run(&client, cmd).await,
        Command::Images(ImagesArgs { cmd, ls }) => {
            images::run(&client, cmd.unwrap_or(images::Cmd::Ls(ls))).await
        }
        Command::Ps(a) => docker::ps(&client, a).await,
        Command::Logs(a) => docker::logs(&client, a).await,
        Command::Exec(a) => docker::exec(&client, a).await,
        Command::Stop(a) => docker::stop(&client, a).await,
        Command::Start(a) => docker::start(&client, a).await,
        Command::Rm(a) => docker::rm(&client, a).await,
        Command::Inspect(a) => docker::inspect(&client, a).await,
        Command::Restart(a) => everyday::restart(&client, a).await,
        Command::Kill(a) => everyday::kill_verb(&client, a).await,
        Command::Pause(a) => everyday::pause(&client, a).await,
        Command::Unpause(a) => everyday::unpause(&client, a).await,
        Command::Rename(a) => everyday::rename(&client, a).await,
        Command::Wait(a) => everyday::wait(&client, a).await,
        Command::Port(a) => everyday::port(&client, a).await,
        Command::System(cmd) => everyday::system(&client, cmd).await,
        Command::Builder(cmd) => builder::run(&client, cmd).await,
        Command::Containers(containers::Containers::Prune(a)) => {
            everyday::container_prune(&client, a).await
        }
        Command::Stats(a) => docker::stats(&client, a).await,
        Command::Top(a) => docker::top(&client, a).await,
        Command::Cp(a) => cp::run(&client, a).await,
        Command::Rmi(a) => images::run(&client, images::Cmd::Rm(a)).await,
        Command::Pull(a) => images::run(&client, images::Cmd::Pull(a)).await,
        Command::Push(a) => images::run(&client, images::Cmd::Push(a)).await,
        Command::Tag(a) => images::run(&client, images::Cmd::Tag(a)).await,
        Command::Leases(cmd) => leases::run(&client, cmd).await,
        Command::Commit(c) => commit::run(&client, c).await,
        Command::Checkpoint(c) => checkpoint::checkpoint(&client, c).await,
        Command::Restore(r) => checkpoint::restore(&client, r).await,
        Command::Build(b) => build::run(&client, b).await,
        Command::Volumes(cmd) => volumes::run(&client, cmd).await,
        Command::Network(cmd) => networks::run(&client, cmd).await,
        Command::Snapshots(args) => snapshots::run(&client, args).await,
        Command::Containers(cmd) => containers::containers(&client, cmd).await,
        Command::Tasks(cmd) => containers::tasks(&client, cmd).await,
        Command::Events {
            filters,
            docker_filters,
        } => events::run(&client, filters, docker_filters).await,
        Command::Check => check(&client).await,
    }
}

/// `berth run` and `berth containers run`: exits with the container's code, or Docker's code
/// for what stopped it (see [`run::Failure`]).
async fn run_and_exit(
    client: &Client,
    address: &std::path::Path,
    mut r: run::Run,
) -> anyhow::Result<()> {
    r.address = address.to_path_buf();
    match run::run(client, r).await {
        // Exits here, its output flushed, whatever the code: the runtime's shutdown (its
        // threads joined, the connection and every allocation dropped one by one) would be
        // a millisecond of a short run's wall time, for nothing the kernel does not undo.
        Ok(code) => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(code)
        }
        Err(f) => {
            eprintln!("berth: {f}");
            std::process::exit(f.code);
        }
    }
}

async fn check(client: &Client) -> anyhow::Result<()> {
    let r = client
        .check()
        .run(berth_proto::berth::services::check::v1::RunCheckRequest {})
        .await
        .map_err(|e| anyhow::anyhow!("check: {}", e.message()))?
        .into_inner();
    let corrupt = check_report::print(
        r.findings.iter().map(|f| check_report::Line {
            corrupt: f.severity == "corrupt",
            what: &f.what,
            repaired: false,
        }),
        r.blobs,
        r.records,
        r.snapshots,
    );
    if corrupt {
        std::process::exit(1);
    }
    Ok(())
}

fn main() {
    // Output piped into `head` and the like ends quietly, as in other command-line tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("berth: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
