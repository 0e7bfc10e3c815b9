//! berth run: an image's rootfs as a new snapshot, a container with the default spec and the
//! image's config, a task with stdio wired to this terminal; exits with the container's code.
//!
//! [`run`] is the flow, one step per module: the flags ([`options`]) and the networks they
//! ask for ([`network`]), the image unpacked and the rootfs prepared ([`image`]), volumes
//! resolved into binds ([`volumes`]), the container created ([`container`], with Docker's
//! flags applied to its spec by [`adjust`]) and its task run ([`task`]) with stdio wired here
//! ([`stdio`], [`attach`], [`terminal`]) or to a log ([`log`]). `berth exec`, `logs` and
//! `tasks attach` reuse the attaching half.

mod adjust;
mod attach;
mod container;
mod image;
mod log;
mod logread;
mod network;
mod options;
mod stdio;
mod task;
mod terminal;
mod volumes;

pub use attach::start_and_wait;
pub use container::STOP_SIGNAL_LABEL;
pub use image::local_mounts;
pub use log::{follow, follow_view, LOG_LABEL};
pub use logread::{parse_time_flag, print_log, View};
pub use options::{CtrRun, DockerRun, Run};
pub use stdio::{stdio, Pumps, Streams};

use crate::names;
use berth_client::Client;

/// Why a run ended without the container's own exit code, with the code Docker gives it:
/// 125 when berth failed, 126 when the command could not be run, 127 when it was not found.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Failure {}

/// Docker's exit code for a task that could not start: 127 when its command was not found,
/// 126 when it was found but cannot be run (as the shim words them), else 125.
fn failure(error: anyhow::Error) -> Failure {
    let text = format!("{error:#}");
    let about_the_command = text.starts_with("executable \"");
    let code = if about_the_command && text.contains("\" not found in ") {
        127
    } else if about_the_command && text.contains("\" cannot be run: ") {
        126
    } else {
        125
    };
    Failure { code, error }
}

/// Runs the container; Ok with its exit code, or the [`Failure`] that stopped it.
pub async fn run(client: &Client, r: Run) -> Result<i32, Failure> {
    run_container(client, r)
        .await
        .map_err(|e| match e.downcast::<Failure>() {
            Ok(f) => f,
            Err(error) => Failure { code: 125, error },
        })
}

async fn run_container(client: &Client, mut r: Run) -> anyhow::Result<i32> {
    let docker_form = r.id.is_empty();
    if docker_form {
        r.id = names::new_id()?;
    }
    let name = match r.name.clone() {
        Some(n) => n,
        None if docker_form => names::generate(client).await?,
        None => r.id.clone(),
    };
    names::check_name(&name)?;
    // The name is checked while the flags are and the image is unpacked: a taken name still
    // fails the run first, and unpacking an image is harmless if it does.
    let prepared = async {
        if r.rm && r.restart != berth_services::core::restart::Policy::No {
            anyhow::bail!(
                "--rm and --restart {} cannot go together: a container that restarts is never removed",
                r.restart
            );
        }
        task::check_hosts(&r.add_host)?;
        if r.host_network() && !r.add_host.is_empty() {
            anyhow::bail!("--add-host needs a network of berth's: on --network host the container shares the host's /etc/hosts");
        }
        let networks = network::labels(&r)?;
        let security = r.security()?;
        let log = log::place(&r, client.namespace())?;
        let unpacked = image::unpack(client, &r.image, &r.snapshotter).await?;
        anyhow::Ok((networks, security, log, unpacked))
    };
    let (free, prepared) = tokio::join!(names::ensure_free(client, &name), prepared);
    free?;
    let (networks, security, log, unpacked) = prepared?;
    r.name = Some(name);
    r.seccomp = security.seccomp.clone();
    r.log = log;
    r.image = unpacked.name;
    let config = unpacked.config;
    let mounts = image::prepare_rootfs(client, &r.snapshotter, &r.id, unpacked.chain_id).await?;
    let (binds, anonymous) = match volumes::binds(client, &r, &config, &mounts).await {
        Ok(v) => v,
        Err(e) => {
            image::remove_rootfs(client, &r.snapshotter, &r.id).await;
            return Err(e);
        }
    };
    let result = async {
        container::create(client, &r, &config, &mounts, binds, networks, &security).await?;
        // Only the task's own failures can mean its command was missing or not runnable.
        task::run(client, &r, &mounts)
            .await
            .map_err(|e| anyhow::Error::new(failure(e)))
    }
    .await;
    // A detached --rm container is removed by berthd when it exits (see its restart module).
    if result.is_err() || (r.rm && !r.detach) {
        // An attached --rm run that succeeded has deleted its task already (task::run).
        remove(client, &r, anonymous, result.is_err()).await;
    }
    result
}

/// Removes what the run made: the task (when `task_left`), the container, its rootfs and
/// its anonymous volumes (named ones never go with a container). The container record and
/// its rootfs snapshot go side by side: neither removal waits on the other.
async fn remove(client: &Client, r: &Run, anonymous: Vec<String>, task_left: bool) {
    if task_left {
        let _ = client
            .tasks()
            .delete(berth_proto::tasks::DeleteTaskRequest {
                container_id: r.id.clone(),
            })
            .await;
    }
    let container = async {
        let _ = client
            .containers()
            .delete(berth_proto::containers::DeleteContainerRequest { id: r.id.clone() })
            .await;
    };
    tokio::join!(
        container,
        image::remove_rootfs(client, &r.snapshotter, &r.id)
    );
    volumes::remove_volumes(client, anonymous, false).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_dockers() {
        let code = |m: &str| failure(anyhow::anyhow!("{m}")).code;
        assert_eq!(
            code("executable \"hi\" not found in the image's PATH (/bin)"),
            127
        );
        assert_eq!(
            code("executable \"/etc\" cannot be run: it is a directory"),
            126
        );
        // Only the shim's words for the command count: berth's own failures are 125.
        assert_eq!(code("connect to shim: No such file or directory"), 125);
        assert_eq!(code("exec /etc/passwd: permission denied"), 125);
        assert_eq!(
            code("image nosuch: not found; pull or import it first"),
            125
        );
    }
}
