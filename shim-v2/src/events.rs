//! Task events to the daemon: ttrpc `Events/Forward` on the socket in TTRPC_ADDRESS.

use crate::wire::{self, FrameType};
use berth_proto::containerd::services::events::ttrpc::v1::{Envelope, ForwardRequest};
use berth_proto::ttrpc::Request;
use prost::{Message, Name};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

pub struct Publisher {
    address: String,
    namespace: String,
    /// The connection and the next stream id on it (odd, increasing).
    conn: Mutex<(Option<UnixStream>, u32)>,
}

impl Publisher {
    pub fn new(address: String, namespace: String) -> Self {
        Publisher {
            address,
            namespace,
            conn: Mutex::new((None, 1)),
        }
    }

    /// Sends one event; a daemon that is away misses it (it asks for state on return).
    pub fn publish<M: Message + Name>(&self, topic: &str, event: &M) {
        let env = Envelope {
            timestamp: Some(crate::now()),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: Some(berth_proto::to_any(event)),
        };
        let req = Request {
            service: "containerd.services.events.ttrpc.v1.Events".into(),
            method: "Forward".into(),
            payload: ForwardRequest {
                envelope: Some(env),
            }
            .encode_to_vec(),
            timeout_nano: 0,
            metadata: vec![],
        };
        let Ok(mut guard) = self.conn.lock() else {
            return;
        };
        let (conn, next) = &mut *guard;
        for _ in 0..2 {
            if conn.is_none() {
                *conn = UnixStream::connect(&self.address).ok();
                *next = 1;
                if let Some(s) = conn.as_ref() {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                }
            }
            let Some(s) = conn.as_mut() else { return };
            let id = *next;
            *next += 2;
            let sent = wire::write_frame(s, id, FrameType::Request, &req.encode_to_vec())
                .and_then(|()| wire::read_frame(s).map(|_| ()));
            if sent.is_ok() {
                return;
            }
            *conn = None;
        }
    }
}
