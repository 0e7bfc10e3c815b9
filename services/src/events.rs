//! The event exchange: every service publishes here; subscribers receive envelopes that
//! match their filters. Core events are typed; events forwarded from outside (shims, clients)
//! travel as raw `Any` payloads and are never decoded here.

use crate::context::Namespace;
use crate::error::{Error, Result};
use crate::filters::{Fields, Filter};
use crate::metadata::{now, Labels, Timestamp};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    NamespaceCreate {
        name: String,
        labels: Labels,
    },
    NamespaceUpdate {
        name: String,
        labels: Labels,
    },
    NamespaceDelete {
        name: String,
    },
    ImageCreate {
        name: String,
        labels: Labels,
    },
    ImageUpdate {
        name: String,
        labels: Labels,
    },
    ImageDelete {
        name: String,
    },
    ContentDelete {
        digest: String,
    },
    ContainerCreate {
        id: String,
        image: String,
        runtime: String,
        runtime_options: Option<crate::metadata::containers::AnyValue>,
    },
    ContainerUpdate {
        id: String,
        image: String,
        labels: Labels,
        snapshot_key: String,
    },
    ContainerDelete {
        id: String,
    },
    SnapshotPrepare {
        key: String,
        parent: String,
    },
    SnapshotCommit {
        key: String,
        name: String,
    },
    SnapshotRemove {
        key: String,
    },
    TaskExit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Timestamp,
    },
    /// An already-encoded event (type URL and protobuf bytes).
    Raw {
        type_url: String,
        value: Vec<u8>,
    },
}

impl Event {
    /// The topic containerd publishes this event under (None for raw events).
    pub fn topic(&self) -> Option<&'static str> {
        Some(match self {
            Event::NamespaceCreate { .. } => "/namespaces/create",
            Event::NamespaceUpdate { .. } => "/namespaces/update",
            Event::NamespaceDelete { .. } => "/namespaces/delete",
            Event::ImageCreate { .. } => "/images/create",
            Event::ImageUpdate { .. } => "/images/update",
            Event::ImageDelete { .. } => "/images/delete",
            Event::ContentDelete { .. } => "/content/delete",
            Event::ContainerCreate { .. } => "/containers/create",
            Event::ContainerUpdate { .. } => "/containers/update",
            Event::ContainerDelete { .. } => "/containers/delete",
            Event::SnapshotPrepare { .. } => "/snapshot/prepare",
            Event::SnapshotCommit { .. } => "/snapshot/commit",
            Event::SnapshotRemove { .. } => "/snapshot/remove",
            Event::TaskExit { .. } => "/tasks/exit",
            Event::Raw { .. } => return None,
        })
    }

    fn field(&self, name: &str) -> Option<String> {
        match (self, name) {
            (
                Event::NamespaceCreate { name: n, .. }
                | Event::NamespaceUpdate { name: n, .. }
                | Event::NamespaceDelete { name: n }
                | Event::ImageCreate { name: n, .. }
                | Event::ImageUpdate { name: n, .. }
                | Event::ImageDelete { name: n },
                "name",
            ) => Some(n.clone()),
            (Event::ContentDelete { digest }, "digest") => Some(digest.clone()),
            (
                Event::ContainerCreate { id, .. }
                | Event::ContainerUpdate { id, .. }
                | Event::ContainerDelete { id },
                "id",
            ) => Some(id.clone()),
            (Event::TaskExit { id, .. }, "id") => Some(id.clone()),
            (Event::TaskExit { container_id, .. }, "container_id") => Some(container_id.clone()),
            (
                Event::SnapshotPrepare { key, .. }
                | Event::SnapshotCommit { key, .. }
                | Event::SnapshotRemove { key },
                "key",
            ) => Some(key.clone()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub timestamp: Timestamp,
    pub namespace: String,
    pub topic: String,
    pub event: Event,
}

impl Fields for Envelope {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [f] if f == "topic" => Some(self.topic.clone()),
            [f] if f == "namespace" => Some(self.namespace.clone()),
            [f, name] if f == "event" => self.event.field(name),
            _ => None,
        }
    }
}

/// Topics are `/`-separated identifiers, starting with `/`.
pub fn validate_topic(topic: &str) -> Result<()> {
    let bad = || {
        Error::invalid(format!(
            "topic {topic:?} is invalid: expected /component[/component...] of letters, digits, '-', '_' or '.'"
        ))
    };
    let rest = topic.strip_prefix('/').ok_or_else(bad)?;
    if rest.is_empty() || topic.len() > 256 {
        return Err(bad());
    }
    for part in rest.split('/') {
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(bad());
        }
    }
    Ok(())
}

#[derive(Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Envelope>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Exchange { tx }
    }

    /// Publishes a core event under its own topic.
    pub fn publish(&self, ns: &Namespace, event: Event) {
        if let Some(topic) = event.topic() {
            self.send(Envelope {
                timestamp: now(),
                namespace: ns.to_string(),
                topic: topic.to_string(),
                event,
            });
        }
    }

    /// Publishes an envelope as given (Publish and Forward RPCs, shim events).
    pub fn forward(&self, envelope: Envelope) -> Result<()> {
        validate_topic(&envelope.topic)?;
        Namespace::parse(&envelope.namespace)?;
        self.send(envelope);
        Ok(())
    }

    fn send(&self, envelope: Envelope) {
        tracing::debug!(topic = %envelope.topic, namespace = %envelope.namespace, "event");
        // No subscribers is not an error.
        let _ = self.tx.send(envelope);
    }

    pub fn subscribe(&self, filter: Filter) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            filter,
        }
    }
}

pub struct Subscription {
    rx: broadcast::Receiver<Envelope>,
    filter: Filter,
}

impl Subscription {
    /// The next matching envelope; None once the exchange is gone.
    pub async fn next(&mut self) -> Option<Envelope> {
        loop {
            match self.rx.recv().await {
                Ok(env) if self.filter.matches(&env) => return Some(env),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "event subscriber too slow; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filters_by_topic_and_namespace() {
        let ex = Exchange::new();
        let mut sub = ex.subscribe(Filter::parse(r#"topic~="^/images/",namespace==b"#).unwrap());
        let a = Namespace::parse("a").unwrap();
        let b = Namespace::parse("b").unwrap();
        ex.publish(&a, Event::ImageDelete { name: "x".into() });
        ex.publish(&b, Event::NamespaceDelete { name: "b".into() });
        ex.publish(&b, Event::ImageDelete { name: "y".into() });
        let got = sub.next().await.unwrap();
        assert_eq!(got.namespace, "b");
        assert_eq!(got.event, Event::ImageDelete { name: "y".into() });
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/tasks/exit").is_ok());
        for bad in ["", "/", "tasks", "/a//b", "/a/", "/a b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }
}
