//! berth events: print every event as it happens.

use berth_client::Client;
use berth_proto::containerd::events as ev;
use berth_proto::events::SubscribeRequest;
use berth_proto::images as img;
use prost::Message;
use tokio_stream::StreamExt;

/// Decodes the events berth knows into a readable form; others show their type.
fn describe(any: &prost_types::Any) -> String {
    macro_rules! try_types {
        ($($t:ty),*) => {$(
            if any.type_url == <$t as prost::Name>::full_name() {
                return match <$t>::decode(any.value.as_slice()) {
                    Ok(m) => format!("{m:?}"),
                    Err(e) => format!("{} (undecodable: {e})", any.type_url),
                };
            }
        )*};
    }
    try_types!(
        ev::NamespaceCreate,
        ev::NamespaceUpdate,
        ev::NamespaceDelete,
        ev::ContentDelete,
        img::ImageCreate,
        img::ImageUpdate,
        img::ImageDelete,
        ev::ContainerCreate,
        ev::ContainerUpdate,
        ev::ContainerDelete,
        ev::SnapshotPrepare,
        ev::SnapshotCommit,
        ev::SnapshotRemove,
        ev::TaskCreate,
        ev::TaskStart,
        ev::TaskDelete,
        ev::TaskExit,
        ev::TaskOom,
        ev::TaskExecAdded,
        ev::TaskExecStarted,
        ev::TaskPaused,
        ev::TaskResumed,
        ev::TaskCheckpointed
    );
    format!("{} ({} bytes)", any.type_url, any.value.len())
}

pub async fn run(client: &Client, filters: Vec<String>) -> anyhow::Result<()> {
    let mut stream = client
        .events()
        .subscribe(SubscribeRequest { filters })
        .await?
        .into_inner();
    while let Some(env) = stream.next().await {
        let env = env?;
        let when = crate::output::rfc3339(env.timestamp.as_ref());
        let what = env.event.as_ref().map(describe).unwrap_or_default();
        println!("{when} {} {} {what}", env.namespace, env.topic);
    }
    Ok(())
}
