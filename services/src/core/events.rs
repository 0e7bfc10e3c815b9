//! The event exchange: every service publishes here; subscribers receive envelopes that
//! match their filters. Core events are typed; events forwarded from outside (shims, clients)
//! travel as raw `Any` payloads and are never decoded here.

use crate::core::context::Namespace;
use crate::core::error::{Error, Kind, Result};
use crate::core::filters::{Fields, Filter};
use crate::core::metadata::{now, Labels, Timestamp};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

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
        runtime_options: Option<crate::core::metadata::containers::AnyValue>,
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
    /// The (container id, process id, exited at) of a task exit.
    pub fn task_exit(&self) -> Option<(String, String, i64)> {
        match self {
            Event::TaskExit {
                container_id,
                id,
                exited_at,
                ..
            } => Some((container_id.clone(), id.clone(), *exited_at)),
            _ => None,
        }
    }

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

/// The largest event payload berthd takes (Publish, Forward, shims): containerd's events
/// are a few hundred bytes; a 16 MB "event" is an attack on every subscriber's memory.
pub const MAX_EVENT_SIZE: usize = 1 << 20;

/// What one subscriber may leave unread before it is dropped.
pub const MAX_UNREAD_BYTES: usize = 16 << 20;

impl Envelope {
    /// Roughly what the envelope holds in memory.
    fn size(&self) -> usize {
        let payload = match &self.event {
            Event::Raw { type_url, value } => type_url.len() + value.len(),
            _ => 256,
        };
        self.topic.len() + self.namespace.len() + payload
    }
}

/// One subscriber: its filter, its queue, and how many bytes wait in that queue.
struct Subscriber {
    filter: Filter,
    tx: mpsc::UnboundedSender<Arc<Envelope>>,
    unread: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

/// Delivers every event to the subscribers whose filters match. Each subscriber has its own
/// queue, bounded by bytes: one that stops reading is dropped (and told so) once
/// [`MAX_UNREAD_BYTES`] wait for it, instead of making berthd hold everything for it.
#[derive(Clone, Default)]
pub struct Exchange {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

impl Exchange {
    pub fn new() -> Self {
        Self::default()
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
        if let Event::Raw { value, .. } = &envelope.event {
            if value.len() > MAX_EVENT_SIZE {
                return Err(Error::new(
                    Kind::ResourceExhausted,
                    format!(
                        "event of {} bytes on {}: events are at most {MAX_EVENT_SIZE} bytes",
                        value.len(),
                        envelope.topic
                    ),
                ));
            }
        }
        self.send(envelope);
        Ok(())
    }

    fn send(&self, envelope: Envelope) {
        tracing::debug!(topic = %envelope.topic, namespace = %envelope.namespace, "event");
        let size = envelope.size();
        let envelope = Arc::new(envelope);
        let Ok(mut subs) = self.subscribers.lock() else {
            return;
        };
        subs.retain(|s| {
            if !s.filter.matches(envelope.as_ref()) {
                return !s.tx.is_closed();
            }
            let unread = s.unread.load(Ordering::SeqCst);
            if unread + size > MAX_UNREAD_BYTES {
                tracing::warn!(unread, "event subscriber too slow; dropping it");
                s.dropped.store(true, Ordering::SeqCst);
                return false; // its queue closes: the subscription ends with an error
            }
            s.unread.fetch_add(size, Ordering::SeqCst);
            s.tx.send(envelope.clone()).is_ok()
        });
    }

    pub fn subscribe(&self, filter: Filter) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let unread = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(Subscriber {
                filter,
                tx,
                unread: unread.clone(),
                dropped: dropped.clone(),
            });
        }
        Subscription {
            rx,
            unread,
            dropped,
        }
    }
}

pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Arc<Envelope>>,
    unread: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl Subscription {
    /// The next matching envelope; None once the subscription ended (see [`Self::ended`]).
    pub async fn next(&mut self) -> Option<Envelope> {
        let env = self.rx.recv().await?;
        self.unread.fetch_sub(env.size(), Ordering::SeqCst);
        Some(Arc::unwrap_or_clone(env))
    }

    /// Why the subscription ended: Err when it was dropped for falling behind.
    pub fn ended(&self) -> Result<()> {
        if self.dropped.load(Ordering::SeqCst) {
            return Err(Error::new(
                Kind::ResourceExhausted,
                format!(
                    "event subscriber dropped: more than {MAX_UNREAD_BYTES} bytes of events were left unread; read faster or filter more"
                ),
            ));
        }
        Ok(())
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

    #[tokio::test]
    async fn a_subscriber_that_never_reads_is_dropped_by_bytes_not_kept() {
        let ex = Exchange::new();
        let all = || Filter::parse_all::<&str>(&[]).unwrap();
        let mut slow = ex.subscribe(all());
        let mut fast = ex.subscribe(all());
        let big = vec![0u8; MAX_EVENT_SIZE];
        let raw = |n: usize| Envelope {
            timestamp: 1,
            namespace: "a".into(),
            topic: format!("/test/{n}"),
            event: Event::Raw {
                type_url: "x".into(),
                value: big.clone(),
            },
        };
        for n in 0..40 {
            ex.forward(raw(n)).unwrap();
            // The fast subscriber keeps up.
            assert_eq!(fast.next().await.unwrap().topic, format!("/test/{n}"));
        }
        // The slow one got what fit, then its queue ended with a clear error.
        let mut got = 0;
        while slow.next().await.is_some() {
            got += 1;
        }
        assert!(got > 0 && got < 40, "{got}");
        let e = slow.ended().unwrap_err();
        assert_eq!(e.kind(), Kind::ResourceExhausted);
        assert!(fast.ended().is_ok());
        // Oversized events are refused.
        let mut huge = raw(99);
        huge.event = Event::Raw {
            type_url: "x".into(),
            value: vec![0; MAX_EVENT_SIZE + 1],
        };
        assert_eq!(
            ex.forward(huge).unwrap_err().kind(),
            Kind::ResourceExhausted
        );
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/tasks/exit").is_ok());
        for bad in ["", "/", "tasks", "/a//b", "/a/", "/a b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }
}
