//! The rest of Docker's everyday verbs over berth's API: restart, kill, pause, unpause,
//! rename, wait, port, and the prunes (container, image, system); ps, logs, exec, stop,
//! start and rm are in docker.rs.

use crate::containers::parse_signal;
use crate::docker::{is_up, kill, ports_of, rm_one, start_one, stop_one, task_of};
use crate::names;
use crate::output::each_id;
use anyhow::{anyhow, bail};
use berth_client::Client;
use berth_proto::containers::{Container, UpdateContainerRequest};
use berth_proto::tasks::{PauseTaskRequest, ResumeTaskRequest, WaitRequest};
use std::time::Duration;

#[derive(clap::Args)]
pub struct RestartArgs {
    /// Seconds to wait after the stop signal before killing
    #[arg(long, short = 't', default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// Signal: a name (KILL, TERM, HUP, …, with or without SIG) or a number
    #[arg(long, short = 's', default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct IdsArgs {
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(clap::Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

#[derive(clap::Args)]
pub struct PortArgs {
    container: String,
    /// Only this container port (PORT[/PROTO])
    port: Option<String>,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Do not ask (berth never asks; accepted for Docker's scripts)
    #[arg(long, short = 'f')]
    force: bool,
}

pub async fn restart(client: &Client, a: RestartArgs) -> anyhow::Result<()> {
    let grace = Duration::from_secs(a.time);
    each_id(&a.ids, |id| async move {
        let id = names::resolve(client, &id).await?;
        stop_one(client, &id, grace).await?;
        start_one(client, &id).await
    })
    .await
}

pub async fn kill_verb(client: &Client, a: KillArgs) -> anyhow::Result<()> {
    let signal = parse_signal(&a.signal)?;
    each_id(&a.ids, |id| async move {
        let id = names::resolve(client, &id).await?;
        running(client, &id).await?;
        kill(client, &id, signal, false).await
    })
    .await
}

/// Fails unless the container's task runs (Docker's words for it).
async fn running(client: &Client, id: &str) -> anyhow::Result<()> {
    if !is_up(client, id).await {
        bail!("container {} is not running", names::short_id(id));
    }
    Ok(())
}

pub async fn pause(client: &Client, a: IdsArgs) -> anyhow::Result<()> {
    freeze(client, a, true).await
}

pub async fn unpause(client: &Client, a: IdsArgs) -> anyhow::Result<()> {
    freeze(client, a, false).await
}

/// Pauses (`freeze`) or resumes each container's processes.
async fn freeze(client: &Client, a: IdsArgs, freeze: bool) -> anyhow::Result<()> {
    each_id(&a.ids, |id| async move {
        let id = names::resolve(client, &id).await?;
        let mut tasks = client.tasks();
        let done = if freeze {
            running(client, &id).await?;
            tasks
                .pause(PauseTaskRequest {
                    container_id: id.clone(),
                })
                .await
                .map(drop)
        } else {
            tasks
                .resume(ResumeTaskRequest {
                    container_id: id.clone(),
                })
                .await
                .map(drop)
        };
        done.map_err(|e| anyhow!("{}: {}", names::short_id(&id), crate::output::said(&e)))
    })
    .await
}

/// Prints each container's exit code once it has exited (at once for one already stopped).
pub async fn wait(client: &Client, a: IdsArgs) -> anyhow::Result<()> {
    for what in &a.ids {
        let id = names::resolve(client, what).await?;
        if task_of(client, &id).await.is_none() {
            bail!("container {what} has not been started");
        }
        let status = client
            .tasks()
            .wait(WaitRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            })
            .await
            .map_err(|e| anyhow!("wait {what}: {}", crate::output::said(&e)))?
            .into_inner()
            .exit_status;
        println!("{status}");
    }
    Ok(())
}

pub async fn rename(client: &Client, a: RenameArgs) -> anyhow::Result<()> {
    let c = names::find(client, &a.container).await?;
    names::check_name(&a.new_name)?;
    names::ensure_free(client, &a.new_name).await?;
    let mut labels = std::collections::HashMap::new();
    labels.insert(names::NAME_LABEL.to_string(), a.new_name.clone());
    client
        .containers()
        .update(UpdateContainerRequest {
            container: Some(Container {
                id: c.id.clone(),
                labels: labels.clone(),
                ..Default::default()
            }),
            update_mask: Some(crate::output::label_mask(&labels)),
        })
        .await
        .map_err(|e| anyhow!("rename {}: {}", a.container, crate::output::said(&e)))?;
    Ok(())
}

/// The container's published ports as Docker prints them: `80/tcp -> 0.0.0.0:8080`.
pub async fn port(client: &Client, a: PortArgs) -> anyhow::Result<()> {
    let c = names::find(client, &a.container).await?;
    let want = a.port.as_deref().map(|p| match p.split_once('/') {
        Some(_) => p.to_string(),
        None => format!("{p}/tcp"),
    });
    let mut found = false;
    for mapping in ports_of(&c).split(", ").filter(|m| !m.is_empty()) {
        // ports_of says HOST_IP:HOST_PORT->CTR_PORT/PROTO.
        let Some((host, ctr)) = mapping.split_once("->") else {
            continue;
        };
        if want.as_deref().is_some_and(|w| w != ctr) {
            continue;
        }
        found = true;
        match want {
            Some(_) => println!("{host}"),
            None => println!("{ctr} -> {host}"),
        }
    }
    if !found && want.is_some() {
        bail!(
            "no public port {} published for {}",
            a.port.unwrap_or_default(),
            a.container
        );
    }
    Ok(())
}

/// Removes every container that is not running; prints their ids.
pub async fn container_prune(client: &Client, _a: PruneArgs) -> anyhow::Result<()> {
    println!("Deleted Containers:");
    for c in names::list(client, vec![]).await? {
        if !is_up(client, &c.id).await {
            rm_one(client, &c.id, false).await?;
            println!("{}", c.id);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct ImagePruneArgs {
    /// Every image no container uses (without -a: untagged ones, which berth never keeps)
    #[arg(long, short = 'a')]
    all: bool,
    /// Do not ask (berth never asks; accepted for Docker's scripts)
    #[arg(long, short = 'f')]
    force: bool,
}

#[derive(clap::Subcommand)]
pub enum System {
    /// What images, containers and volumes take on disk, and what a prune would free
    Df(crate::df::DfArgs),
    /// Remove stopped containers, then (with -a) images no container uses, then (with
    /// --volumes) volumes no container uses, then build cache records that can no longer
    /// hit (with -a: every one no running build uses)
    Prune {
        /// Images no container uses, and all the build cache, too
        #[arg(long, short = 'a')]
        all: bool,
        /// Volumes no container uses, too
        #[arg(long)]
        volumes: bool,
        /// Do not ask (berth never asks)
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// Every image berthd holds.
pub(crate) async fn all_images(client: &Client) -> anyhow::Result<Vec<berth_proto::images::Image>> {
    use berth_proto::images::ListImagesRequest;
    Ok(client
        .images()
        .list(ListImagesRequest { filters: vec![] })
        .await
        .map_err(|e| anyhow!("cannot list images: {}", crate::output::said(&e)))?
        .into_inner()
        .images)
}

/// The names of the images `containers` use.
pub(crate) fn images_used(containers: &[Container]) -> std::collections::HashSet<String> {
    containers.iter().map(|c| c.image.clone()).collect()
}

/// Removes the images no container uses (with -a); berth's images all have names, so
/// nothing is "dangling" without it.
pub async fn image_prune(client: &Client, a: ImagePruneArgs) -> anyhow::Result<()> {
    use berth_proto::images::DeleteImageRequest;
    println!("Deleted Images:");
    if !a.all {
        return Ok(());
    }
    let used = images_used(&names::list(client, vec![]).await?);
    let images = all_images(client).await?;
    for img in images.into_iter().filter(|i| !used.contains(&i.name)) {
        client
            .images()
            .delete(DeleteImageRequest {
                name: img.name.clone(),
                sync: false,
            })
            .await
            .map_err(|e| anyhow!("remove image {}: {}", img.name, crate::output::said(&e)))?;
        println!("untagged: {}", img.name);
    }
    Ok(())
}

pub async fn system(client: &Client, cmd: System) -> anyhow::Result<()> {
    match cmd {
        System::Df(a) => crate::df::df(client, a).await,
        System::Prune {
            all,
            volumes,
            force,
        } => {
            container_prune(client, PruneArgs { force }).await?;
            image_prune(client, ImagePruneArgs { all, force }).await?;
            if volumes {
                println!("Deleted Volumes:");
                crate::volumes::run(client, crate::volumes::Cmd::Prune { all: false }).await?;
            }
            // After the images: their layers gone, more records can no longer hit.
            crate::builder::prune(
                client,
                crate::builder::PruneArgs {
                    all,
                    keep_storage: None,
                    filter: vec![],
                    force,
                },
            )
            .await
        }
    }
}
