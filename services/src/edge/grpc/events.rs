//! containerd.services.events.v1.Events

use super::{from_timestamp, labels_out, namespace, status, timestamp};
use crate::core::events::{Envelope, Event, Exchange};
use berth_proto::containerd::events as pbe;
use berth_proto::events::{
    events_server::Events as EventsApi, Envelope as PbEnvelope, ForwardRequest, PublishRequest,
    SubscribeRequest,
};
use berth_proto::images as pbi;
use berth_proto::to_any;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct EventsService {
    pub exchange: Exchange,
}

pub mod convert {
    use super::*;

    pub fn event_any(e: &Event) -> prost_types::Any {
        match e {
            Event::NamespaceCreate { name, labels } => to_any(&pbe::NamespaceCreate {
                name: name.clone(),
                labels: labels_out(labels),
            }),
            Event::NamespaceUpdate { name, labels } => to_any(&pbe::NamespaceUpdate {
                name: name.clone(),
                labels: labels_out(labels),
            }),
            Event::NamespaceDelete { name } => to_any(&pbe::NamespaceDelete { name: name.clone() }),
            Event::ImageCreate { name, labels } => to_any(&pbi::ImageCreate {
                name: name.clone(),
                labels: labels_out(labels),
            }),
            Event::ImageUpdate { name, labels } => to_any(&pbi::ImageUpdate {
                name: name.clone(),
                labels: labels_out(labels),
            }),
            Event::ImageDelete { name } => to_any(&pbi::ImageDelete { name: name.clone() }),
            Event::ContentDelete { digest } => to_any(&pbe::ContentDelete {
                digest: digest.clone(),
            }),
            Event::ContainerCreate {
                id,
                image,
                runtime,
                runtime_options,
            } => to_any(&pbe::ContainerCreate {
                id: id.clone(),
                image: image.clone(),
                runtime: Some(pbe::container_create::Runtime {
                    name: runtime.clone(),
                    options: runtime_options.as_ref().map(|a| prost_types::Any {
                        type_url: a.type_url.clone(),
                        value: a.value.clone(),
                    }),
                }),
            }),
            Event::ContainerUpdate {
                id,
                image,
                labels,
                snapshot_key,
            } => to_any(&pbe::ContainerUpdate {
                id: id.clone(),
                image: image.clone(),
                labels: labels_out(labels),
                snapshot_key: snapshot_key.clone(),
            }),
            Event::ContainerDelete { id } => to_any(&pbe::ContainerDelete { id: id.clone() }),
            Event::SnapshotPrepare { key, parent } => to_any(&pbe::SnapshotPrepare {
                key: key.clone(),
                parent: parent.clone(),
            }),
            Event::SnapshotCommit { key, name } => to_any(&pbe::SnapshotCommit {
                key: key.clone(),
                name: name.clone(),
            }),
            Event::SnapshotRemove { key } => to_any(&pbe::SnapshotRemove { key: key.clone() }),
            Event::TaskExit {
                container_id,
                id,
                pid,
                exit_status,
                exited_at,
            } => to_any(&pbe::TaskExit {
                container_id: container_id.clone(),
                id: id.clone(),
                pid: *pid,
                exit_status: *exit_status,
                exited_at: timestamp(*exited_at),
            }),
            Event::Raw { type_url, value } => prost_types::Any {
                type_url: type_url.clone(),
                value: value.clone(),
            },
        }
    }

    pub fn envelope_out(e: &Envelope) -> PbEnvelope {
        PbEnvelope {
            timestamp: timestamp(e.timestamp),
            namespace: e.namespace.clone(),
            topic: e.topic.clone(),
            event: Some(event_any(&e.event)),
        }
    }

    pub fn raw(any: Option<prost_types::Any>) -> Result<Event, Status> {
        let any = any.ok_or_else(|| Status::invalid_argument("event must be set"))?;
        Ok(event_in(any))
    }

    /// A published or forwarded event as the core knows it: a task exit typed (the core
    /// acts on it: networks are left, exits recorded), anything else as it came.
    pub fn event_in(any: prost_types::Any) -> Event {
        use prost::Message;
        if any.type_url.ends_with("containerd.events.TaskExit") {
            if let Ok(e) = pbe::TaskExit::decode(any.value.as_slice()) {
                return Event::TaskExit {
                    container_id: e.container_id,
                    id: e.id,
                    pid: e.pid,
                    exit_status: e.exit_status,
                    exited_at: from_timestamp(e.exited_at.as_ref()),
                };
            }
        }
        Event::Raw {
            type_url: any.type_url,
            value: any.value,
        }
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<PbEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl EventsApi for EventsService {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let env = Envelope {
            timestamp: crate::core::metadata::now(),
            namespace: ns.to_string(),
            topic: req.topic,
            event: convert::raw(req.event)?,
        };
        self.exchange.forward(env).map_err(status)?;
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        let ts = from_timestamp(env.timestamp.as_ref());
        let env = Envelope {
            timestamp: if ts == 0 {
                crate::core::metadata::now()
            } else {
                ts
            },
            namespace: env.namespace,
            topic: env.topic,
            event: convert::raw(env.event)?,
        };
        self.exchange.forward(env).map_err(status)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = super::filter(&req.into_inner().filters)?;
        let mut sub = self.exchange.subscribe(filter);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let env = tokio::select! {
                    env = sub.next() => env,
                    // The client went away: stop forwarding.
                    _ = tx.closed() => break,
                };
                let Some(env) = env else {
                    if let Err(e) = sub.ended() {
                        let _ = tx.send(Err(status(e))).await;
                    }
                    break;
                };
                if tx.send(Ok(convert::envelope_out(&env))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
