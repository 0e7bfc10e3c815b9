//! berth events: print every event as it happens, or those Docker-style `--filter`s keep
//! (`type=`, `event=`, `container=`, `image=`, `namespace=`: one key's values any of them,
//! every key given must match).

use berth_client::Client;
use berth_proto::containerd::events as ev;
use berth_proto::events::SubscribeRequest;
use berth_proto::images as img;
use prost::Message;
use tokio_stream::StreamExt;

/// `$m!(every task event type)`.
macro_rules! task_events {
    ($m:ident) => {
        $m!(
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
        )
    };
}

/// Returns `$body` for `$any` decoded as the first of the types it is (`$m` the message).
macro_rules! on_type {
    ($any:expr, |$m:ident| $body:expr, $($t:ty),*) => {$(
        if $any.type_url == <$t as prost::Name>::full_name() {
            let $m = <$t>::decode($any.value.as_slice()).unwrap_or_default();
            return $body;
        }
    )*};
}

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
        ev::SnapshotRemove
    );
    task_events!(try_types);
    format!("{} ({} bytes)", any.type_url, any.value.len())
}

/// The events `--filter KEY=VALUE` keeps, as Docker's: per key a list of values.
#[derive(Debug, Default)]
pub struct DockerFilters {
    types: Vec<String>,
    events: Vec<String>,
    containers: Vec<String>,
    images: Vec<String>,
    namespaces: Vec<String>,
}

impl DockerFilters {
    pub fn parse(filters: &[String]) -> anyhow::Result<Self> {
        let mut f = DockerFilters::default();
        for kv in filters {
            let Some((k, v)) = kv.split_once('=').filter(|(_, v)| !v.is_empty()) else {
                anyhow::bail!("filter {kv:?}: expected KEY=VALUE (type, event, container, image or namespace)");
            };
            let list = match k {
                "type" => &mut f.types,
                "event" => &mut f.events,
                "container" => &mut f.containers,
                "image" => &mut f.images,
                "namespace" => &mut f.namespaces,
                _ => anyhow::bail!(
                    "filter {kv:?}: berth filters events by type, event, container, image or namespace"
                ),
            };
            list.push(v.to_string());
        }
        Ok(f)
    }

    /// Whether an event passes: each key given has a value that matches.
    fn keeps(&self, namespace: &str, topic: &str, fields: &Fields) -> bool {
        let any = |values: &[String], hit: &dyn Fn(&str) -> bool| {
            values.is_empty() || values.iter().any(|v| hit(v))
        };
        let kind = topic.split('/').nth(1).unwrap_or_default();
        let action = topic.rsplit('/').next().unwrap_or_default();
        any(&self.types, &|t| type_topics(t).contains(&kind))
            && any(&self.events, &|e| {
                docker_action(kind, action) == e || action == e
            })
            && any(&self.containers, &|c| {
                fields.container.as_deref() == Some(c) || fields.name.as_deref() == Some(c)
            })
            && any(&self.images, &|i| fields.image.as_deref() == Some(i))
            && any(&self.namespaces, &|n| n == namespace)
    }
}

/// The topics' first parts a Docker event type covers.
fn type_topics(t: &str) -> &'static [&'static str] {
    match t {
        "container" => &["containers", "tasks"],
        "image" => &["images"],
        "namespace" => &["namespaces"],
        "snapshot" => &["snapshot"],
        "content" => &["content"],
        _ => &[],
    }
}

/// Docker's name for a berth topic's action (`die` for a task's exit, `destroy` for a
/// container's delete, ...); others keep the topic's last part.
fn docker_action<'a>(kind: &str, action: &'a str) -> &'a str {
    match (kind, action) {
        ("tasks", "exit") => "die",
        ("tasks", "paused") => "pause",
        ("tasks", "resumed") => "unpause",
        ("tasks", "exec-added") => "exec_create",
        ("tasks", "exec-started") => "exec_start",
        ("containers", "delete") => "destroy",
        (_, a) => a,
    }
}

/// What an event says about a container (its id, and its name when filters ask for it)
/// or an image.
#[derive(Default)]
struct Fields {
    container: Option<String>,
    name: Option<String>,
    image: Option<String>,
}

fn fields(any: &prost_types::Any) -> Fields {
    macro_rules! tasks {
        ($($t:ty),*) => {
            on_type!(any, |m| Fields { container: Some(m.container_id), ..Default::default() }, $($t),*)
        };
    }
    task_events!(tasks);
    on_type!(
        any,
        |m| Fields {
            image: Some(m.name),
            ..Default::default()
        },
        img::ImageCreate,
        img::ImageUpdate,
        img::ImageDelete
    );
    let container = |id: String, image: String| Fields {
        container: Some(id),
        image: Some(image).filter(|i| !i.is_empty()),
        name: None,
    };
    on_type!(
        any,
        |m| container(m.id, m.image),
        ev::ContainerCreate,
        ev::ContainerUpdate
    );
    on_type!(any, |m| container(m.id, String::new()), ev::ContainerDelete);
    Fields::default()
}

pub async fn run(client: &Client, filters: Vec<String>, docker: Vec<String>) -> anyhow::Result<()> {
    let keep = DockerFilters::parse(&docker)?;
    // Container names by id, looked up when first seen (a removed container keeps its).
    let mut names: std::collections::HashMap<String, String> = Default::default();
    let mut stream = client
        .events()
        .subscribe(SubscribeRequest { filters })
        .await?
        .into_inner();
    while let Some(env) = stream.next().await {
        let env = env?;
        let mut about = env.event.as_ref().map(fields).unwrap_or_default();
        if let (false, Some(id)) = (keep.containers.is_empty(), &about.container) {
            if !names.contains_key(id) {
                let name = crate::names::list(client, vec![format!("id=={id}")])
                    .await
                    .ok()
                    .and_then(|c| c.first().map(|c| crate::names::name_of(c).to_string()));
                if let Some(n) = name {
                    names.insert(id.clone(), n);
                }
            }
            about.name = names.get(id).cloned();
        }
        if !keep.keeps(&env.namespace, &env.topic, &about) {
            continue;
        }
        let when = crate::output::rfc3339(env.timestamp.as_ref());
        let what = env.event.as_ref().map(describe).unwrap_or_default();
        println!("{when} {} {} {what}", env.namespace, env.topic);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeps(filters: &[&str], topic: &str, container: &str) -> bool {
        let f: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let fields = Fields {
            container: Some(container.to_string()),
            ..Default::default()
        };
        DockerFilters::parse(&f)
            .unwrap()
            .keeps("default", topic, &fields)
    }

    #[test]
    fn docker_filters_map_to_topics() {
        assert!(keeps(&[], "/tasks/exit", "a"));
        assert!(keeps(&["type=container", "event=die"], "/tasks/exit", "a"));
        assert!(!keeps(&["type=image"], "/tasks/exit", "a"));
        assert!(keeps(&["event=start", "event=die"], "/tasks/start", "a"));
        assert!(keeps(&["event=destroy"], "/containers/delete", "a"));
        assert!(!keeps(&["container=b"], "/tasks/exit", "a"));
        assert!(!keeps(&["namespace=other"], "/tasks/exit", "a"));
        assert!(DockerFilters::parse(&["colour=red".into()]).is_err());
        assert!(DockerFilters::parse(&["type".into()]).is_err());
    }
}
