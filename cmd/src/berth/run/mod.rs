//! berth run: an image's rootfs as a new snapshot, a container with the default spec and the
//! image's config, a task with stdio wired to this terminal; exits with the container's code.
//!
//! [`run`] is the flow, one step per module: the flags ([`options`]) and the networks they
//! ask for ([`network`]), the image unpacked and the rootfs prepared ([`image`]), volumes
//! resolved into binds ([`volumes`]), the container created ([`container`]) and its task run
//! ([`task`]) with stdio wired here ([`stdio`], [`attach`], [`terminal`]) or to a log
//! ([`log`]). `berth exec`, `logs` and `tasks attach` reuse the attaching half.

mod attach;
mod container;
mod image;
mod log;
mod network;
mod options;
mod stdio;
mod task;
mod terminal;
mod volumes;

pub use attach::start_and_wait;
pub use container::STOP_SIGNAL_LABEL;
pub use image::local_mounts;
pub use log::{follow, LOG_LABEL};
pub use options::Run;
pub use stdio::{stdio, Pumps};

use berth_client::Client;

pub async fn run(client: &Client, mut r: Run) -> anyhow::Result<i32> {
    let networks = network::labels(&r)?;
    r.seccomp = r.seccomp_option()?;
    r.log = log::place(&r, client.namespace())?;
    let unpacked = image::unpack(client, &r.image, &r.snapshotter).await?;
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
        container::create(client, &r, &config, &mounts, binds, networks).await?;
        task::run(client, &r, &mounts).await
    }
    .await;
    if result.is_err() || r.rm {
        remove(client, &r, anonymous).await;
    }
    result
}

/// Removes what the run made: the container, its rootfs and its anonymous volumes (named
/// ones never go with a container).
async fn remove(client: &Client, r: &Run, anonymous: Vec<String>) {
    let _ = client
        .containers()
        .delete(berth_proto::containers::DeleteContainerRequest { id: r.id.clone() })
        .await;
    image::remove_rootfs(client, &r.snapshotter, &r.id).await;
    volumes::remove_volumes(client, anonymous, false).await;
}
