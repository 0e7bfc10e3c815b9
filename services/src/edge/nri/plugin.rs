//! One connected NRI plugin: its connection split into the two ttrpc channels, berthd's
//! Runtime service answered on one (RegisterPlugin, UpdateContainers), the plugin's Plugin
//! service called on the other, every call bounded by the request timeout.

use super::mux::{self, SharedWriter};
use super::Inner;
use crate::core::error::{Error, Kind, Result};
use crate::edge::shim::ttrpc::{read_frame, write_frame, Client};
use berth_proto::google::rpc::Status;
use berth_proto::nri as api;
use berth_proto::ttrpc::{Request, Response};
use berth_proto::ttrpc_wire::FrameType;
use prost::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::DuplexStream;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
const UNIMPLEMENTED: i32 = 12;
const DEADLINE_EXCEEDED: i32 = 4;

/// How a call to a plugin ended when it did not answer with success.
#[derive(Debug)]
pub enum CallError {
    /// Gone or too slow: the plugin is dropped and the operation goes on without it.
    Lost(String),
    /// It does not have this method (an older plugin; StateChange may stand in).
    Unimplemented,
    /// It answered with an error: the operation fails where NRI lets plugins veto it.
    Refused(String),
}

pub struct Plugin {
    /// "NN-name", as NRI names plugins; the order plugins are called in.
    pub name: String,
    events: i32,
    client: Client,
    timeout: Duration,
    closed: AtomicBool,
    /// Wakes [`Plugin::gone`] when berthd drops the plugin itself.
    kick: tokio::sync::Notify,
    _pumps: mux::PumpGuard,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Plugin {
    /// Whether the plugin subscribed to `event` in Configure.
    pub fn wants(&self, event: api::Event) -> bool {
        let bit = event as i32 - 1;
        bit >= 0 && self.events & (1 << bit) != 0
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stops relaying to the plugin; its connection closes once the last user lets go.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.kick.notify_one();
    }

    /// Resolves when the plugin's connection is gone or berthd dropped it.
    pub async fn gone(&self) {
        tokio::select! {
            _ = self.client.closed() => {}
            _ = self.kick.notified() => {}
        }
    }

    /// Calls `method` of the plugin's Plugin service.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
    ) -> std::result::Result<Resp, CallError> {
        call(&self.client, method, req, self.timeout).await
    }

    /// Calls `method` with a time allowance of its own (Synchronize).
    pub async fn call_within<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> std::result::Result<Resp, CallError> {
        call(&self.client, method, req, timeout).await
    }
}

async fn call<Req: Message, Resp: Message + Default>(
    client: &Client,
    method: &str,
    req: &Req,
    timeout: Duration,
) -> std::result::Result<Resp, CallError> {
    let resp = client
        .exchange(PLUGIN_SERVICE, method, req, Some(timeout))
        .await
        .map_err(|e| CallError::Lost(e.to_string()))?;
    match resp.status.filter(|s| s.code != 0) {
        Some(s) if s.code == UNIMPLEMENTED => Err(CallError::Unimplemented),
        Some(s) if s.code == DEADLINE_EXCEEDED => Err(CallError::Lost(s.message)),
        Some(s) => Err(CallError::Refused(s.message)),
        None => Resp::decode(resp.payload.as_slice())
            .map_err(|e| CallError::Lost(format!("{method} answer does not decode: {e}"))),
    }
}

/// What a connecting plugin says of itself.
struct Registration {
    name: String,
    idx: String,
}

/// Takes a plugin from its connection to configured: it must register within the
/// registration timeout and answer Configure within the request timeout. Synchronize is the
/// caller's, under the gate.
pub(super) async fn handshake(conn: UnixStream, inner: &Arc<Inner>) -> Result<Plugin> {
    let channels = mux::multiplex(conn);
    let client = Client::over(channels.plugin);
    let (reg_tx, reg_rx) = oneshot::channel();
    let server = tokio::spawn(serve_runtime(
        channels.runtime,
        Arc::new(Mutex::new(Some(reg_tx))),
        Arc::downgrade(inner),
    ));
    let guard = channels.guard;
    let reg = match tokio::time::timeout(inner.cfg.registration_timeout(), reg_rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            server.abort();
            return Err(Error::new(
                Kind::Unavailable,
                "plugin left before registering",
            ));
        }
        Err(_) => {
            server.abort();
            return Err(Error::new(
                Kind::DeadlineExceeded,
                "plugin did not register in time",
            ));
        }
    };
    let name = format!("{}-{}", reg.idx, reg.name);
    let timeout = inner.cfg.request_timeout();
    let configure = api::ConfigureRequest {
        config: inner.plugin_config(&reg.idx, &reg.name),
        runtime_name: "berth".into(),
        runtime_version: inner.runtime_version.clone(),
        registration_timeout: inner.cfg.registration_timeout().as_millis() as i64,
        request_timeout: timeout.as_millis() as i64,
        nri_version: super::NRI_VERSION.into(),
    };
    let configured: std::result::Result<api::ConfigureResponse, _> =
        call(&client, "Configure", &configure, timeout).await;
    let events = match configured {
        Ok(r) if r.events == 0 => super::ALL_EVENTS,
        Ok(r) if r.events & !super::ALL_EVENTS != 0 => {
            server.abort();
            return Err(Error::invalid(format!(
                "plugin {name} subscribed to unknown events {:#x}",
                r.events
            )));
        }
        Ok(r) => r.events,
        Err(e) => {
            server.abort();
            return Err(Error::new(
                Kind::Unavailable,
                format!("plugin {name} failed Configure: {e:?}"),
            ));
        }
    };
    Ok(Plugin {
        name,
        events,
        client,
        timeout,
        closed: AtomicBool::new(false),
        kick: tokio::sync::Notify::new(),
        _pumps: guard,
        server,
    })
}

fn valid_registration(r: &api::RegisterPluginRequest) -> std::result::Result<(), String> {
    let idx_ok = r.plugin_idx.len() == 2 && r.plugin_idx.bytes().all(|b| b.is_ascii_digit());
    if !idx_ok {
        return Err(format!("plugin index {:?} is not two digits", r.plugin_idx));
    }
    let name_ok = !r.plugin_name.is_empty()
        && r.plugin_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
    if !name_ok {
        return Err(format!("plugin name {:?} is not valid", r.plugin_name));
    }
    Ok(())
}

type RegisterSlot = Arc<Mutex<Option<oneshot::Sender<Registration>>>>;

/// Answers the plugin's calls to berthd's Runtime service, each in its own task (an
/// UpdateContainers may take a while; RegisterPlugin must not wait behind it).
async fn serve_runtime(stream: DuplexStream, register: RegisterSlot, inner: Weak<Inner>) {
    let (mut r, w) = tokio::io::split(stream);
    let w: SharedWriter = Arc::new(tokio::sync::Mutex::new(w));
    while let Ok((h, payload)) = read_frame(&mut r).await {
        if h.kind != FrameType::Request {
            continue;
        }
        let (w, register, inner) = (w.clone(), register.clone(), inner.clone());
        tokio::spawn(async move {
            let answer = match Request::decode(payload.as_slice()) {
                Ok(req) => runtime_call(req, &register, &inner).await,
                Err(e) => Err((3, format!("bad request: {e}"))),
            };
            let resp = match answer {
                Ok(payload) => Response {
                    status: None,
                    payload,
                },
                Err((code, message)) => Response {
                    status: Some(Status {
                        code,
                        message,
                        details: vec![],
                    }),
                    payload: vec![],
                },
            };
            let mut w = w.lock().await;
            let _ = write_frame(
                &mut *w,
                h.stream_id,
                FrameType::Response,
                &resp.encode_to_vec(),
            )
            .await;
        });
    }
}

async fn runtime_call(
    req: Request,
    register: &RegisterSlot,
    inner: &Weak<Inner>,
) -> std::result::Result<Vec<u8>, (i32, String)> {
    let bad = |e: prost::DecodeError| (3, format!("bad {} request: {e}", req.method));
    match (req.service.as_str(), req.method.as_str()) {
        (RUNTIME_SERVICE, "RegisterPlugin") => {
            let r = api::RegisterPluginRequest::decode(req.payload.as_slice()).map_err(bad)?;
            valid_registration(&r).map_err(|e| (3, e))?;
            let slot = register.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(tx) = slot else {
                return Err((9, "the plugin is registered already".into()));
            };
            let _ = tx.send(Registration {
                name: r.plugin_name,
                idx: r.plugin_idx,
            });
            Ok(api::Empty {}.encode_to_vec())
        }
        (RUNTIME_SERVICE, "UpdateContainers") => {
            let r = api::UpdateContainersRequest::decode(req.payload.as_slice()).map_err(bad)?;
            let Some(inner) = inner.upgrade() else {
                return Err((14, "NRI is shutting down".into()));
            };
            for e in &r.evict {
                tracing::warn!(
                    container = e.container_id,
                    reason = e.reason,
                    "an NRI plugin asked for an eviction; berth does not evict"
                );
            }
            let failed = inner.host.update(r.update).await;
            Ok(api::UpdateContainersResponse { failed }.encode_to_vec())
        }
        (s, m) => Err((UNIMPLEMENTED, format!("{s}/{m} is not served here"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_must_name_a_two_digit_index_and_a_plain_name() {
        let reg = |idx: &str, name: &str| api::RegisterPluginRequest {
            plugin_name: name.into(),
            plugin_idx: idx.into(),
            ..Default::default()
        };
        assert!(valid_registration(&reg("10", "cpu-pinner_v1.2+x")).is_ok());
        // Names reach the configuration directory's file names and the plugin order.
        for (idx, name) in [
            ("1", "p"),
            ("100", "p"),
            ("1a", "p"),
            ("10", ""),
            ("10", "../../etc/shadow"),
            ("10", "a/b"),
            ("10", "a b"),
            ("10", "é"),
        ] {
            assert!(
                valid_registration(&reg(idx, name)).is_err(),
                "{idx}-{name} was taken"
            );
        }
    }
}
