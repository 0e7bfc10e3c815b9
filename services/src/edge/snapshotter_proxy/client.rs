//! A proxy plugin as a [`Snapshotter`]: each call goes over gRPC to the plugin's socket.
//!
//! The plugin is another process that may hang or die, so nothing here waits on it without a
//! bound: the calls run on a runtime of the plugin's own (a stuck plugin ties up no thread of
//! berthd's), each under the plugin's deadline (a List until its last message), and the
//! connection is made at the first call and made again after the plugin went away. What it
//! cannot reach is [`Error::Unavailable`], naming the plugin and its socket.

use super::ProxyPlugin;
use crate::edge::grpc::snapshots::convert::{info_in, info_out};
use crate::edge::grpc::{labels_out, NAMESPACE_HEADER};
use berth_proto::snapshots::snapshots_client::SnapshotsClient;
use berth_proto::snapshots::{
    CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest,
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest,
    UsageRequest, ViewSnapshotRequest,
};
use berth_snapshotters::{Error, Info, Labels, Mount, Result, Snapshotter, Usage};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Status};

/// A snapshotter served by a proxy plugin.
pub struct ProxySnapshotter {
    name: String,
    address: PathBuf,
    timeout: Duration,
    channel: Channel,
    runtime: OwnRuntime,
    /// When a call last went unanswered until its deadline: for one more deadline after it,
    /// calls fail at once instead of each waiting out the stuck plugin (a collection walking
    /// it keeps every store's writers waiting meanwhile).
    missed: std::sync::Mutex<Option<Instant>>,
    /// Moves at the start and end of each call that may change snapshots
    /// ([`Snapshotter::changes`]).
    changes: AtomicU64,
}

/// The plugin's own runtime; shut down without waiting, so dropping the snapshotter never
/// blocks (nor panics on an async thread).
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl ProxySnapshotter {
    /// A client of `plugin`; nothing is dialled until the first call.
    pub fn new(plugin: &ProxyPlugin) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("proxy-{}", plugin.name))
            .enable_all()
            .build()
            .map_err(|e| Error::io(format!("snapshotter plugin {}: runtime", plugin.name), e))?;
        let socket = plugin.address.clone();
        // The URI is ignored; every connection goes to the socket.
        // The calls' deadline is [`Self::call`]'s, which covers a List's stream too.
        let endpoint =
            Endpoint::from_static("http://berth.invalid").connect_timeout(plugin.timeout);
        let channel = {
            let _in_runtime = runtime.enter();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
        };
        Ok(ProxySnapshotter {
            name: plugin.name.clone(),
            address: plugin.address.clone(),
            timeout: plugin.timeout,
            channel,
            runtime: OwnRuntime(Some(runtime)),
            missed: std::sync::Mutex::new(None),
            changes: AtomicU64::new(0),
        })
    }

    /// Runs `call` on the plugin's runtime under its deadline and waits for the answer.
    fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: FnOnce(SnapshotsClient<Channel>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let client = SnapshotsClient::new(self.channel.clone())
            .max_decoding_message_size(crate::edge::daemon::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::edge::daemon::MAX_MESSAGE_SIZE);
        let deadline = self.timeout;
        if let Some(ago) = self.missed_lately() {
            return Err(self.unavailable(
                what,
                &format!(
                    "it missed its {} deadline {} ago; not asked again for {}",
                    humantime::format_duration(deadline),
                    humantime::format_duration(seconds(ago)),
                    humantime::format_duration(seconds(deadline.saturating_sub(ago))),
                ),
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let Some(rt) = &self.runtime.0 else {
            return Err(self.unavailable(what, "its client is shut down"));
        };
        rt.spawn(async move {
            let answer = tokio::time::timeout(deadline, call(client)).await;
            let _ = tx.send(answer);
        });
        let answer = rx.recv();
        self.note_missed(matches!(answer, Ok(Err(_))));
        match answer {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(status))) => Err(self.error(what, status)),
            Ok(Err(_elapsed)) => Err(self.unavailable(
                what,
                &format!("no answer within {}", humantime::format_duration(deadline)),
            )),
            Err(_) => Err(self.unavailable(what, "the call was dropped")),
        }
    }

    /// Runs a call that may change snapshots, counted as it starts and as it ends.
    fn changing<T>(&self, run: impl FnOnce() -> Result<T>) -> Result<T> {
        self.changes.fetch_add(1, Ordering::SeqCst);
        let out = run();
        self.changes.fetch_add(1, Ordering::SeqCst);
        out
    }

    /// How long ago a call missed its deadline, if that was less than a deadline ago.
    fn missed_lately(&self) -> Option<Duration> {
        let at = (*self.missed.lock().ok()?)?;
        Some(at.elapsed()).filter(|ago| *ago < self.timeout)
    }

    fn note_missed(&self, missed: bool) {
        if let Ok(mut m) = self.missed.lock() {
            *m = missed.then(Instant::now);
        }
    }

    /// [`Self::call`] with a request about `key` (so carrying its namespace).
    fn keyed<M, T, F, Fut>(&self, what: &str, key: &str, message: M, rpc: F) -> Result<T>
    where
        M: Send + 'static,
        F: FnOnce(SnapshotsClient<Channel>, Request<M>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let req = request(message, key);
        self.call(what, move |c| rpc(c, req))
    }

    fn unavailable(&self, what: &str, why: &str) -> Error {
        Error::Unavailable(format!(
            "snapshotter plugin {:?} at {}: {what}: {why}",
            self.name,
            self.address.display()
        ))
    }

    /// The plugin's answer in the snapshotter's error kinds; a transport failure (no socket,
    /// the connection gone mid-call) is Unavailable.
    fn error(&self, what: &str, status: Status) -> Error {
        let message = status.message().to_string();
        match status.code() {
            Code::NotFound => Error::NotFound(snapshot_named(&message, "not found")),
            Code::AlreadyExists => Error::AlreadyExists(snapshot_named(&message, "already exists")),
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                self.unavailable(what, &transport_message(&status))
            }
            // Set by the client side (hyper, h2), not sent by the plugin.
            _ if std::error::Error::source(&status).is_some() => {
                self.unavailable(what, &transport_message(&status))
            }
            code => Error::io(
                format!(
                    "snapshotter plugin {:?} at {}: {what}",
                    self.name,
                    self.address.display()
                ),
                std::io::Error::other(format!("{message} ({code:?})")),
            ),
        }
    }
}

/// Whole seconds (for words, not arithmetic).
fn seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// A status's words with what caused it (hyper's "connection refused" lies in its source).
fn transport_message(status: &Status) -> String {
    let mut out = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out = format!("{out}: {s_text}");
        }
        source = s.source();
    }
    out
}

/// The snapshot a "snapshot \"KEY\" not found" message names (berth's own words); any
/// other plugin's message is kept whole.
fn snapshot_named(message: &str, tail: &str) -> String {
    message
        .strip_prefix("snapshot \"")
        .and_then(|m| m.strip_suffix(&format!("\" {tail}")))
        .map(str::to_string)
        .unwrap_or_else(|| message.to_string())
}

/// A request about `key`, carrying its namespace as containerd's daemon sends it.
fn request<M>(message: M, key: &str) -> Request<M> {
    let mut req = Request::new(message);
    if let Some(ns) = crate::core::snapshots::key_namespace(key) {
        if let Ok(v) = ns.as_str().parse() {
            req.metadata_mut().insert(NAMESPACE_HEADER, v);
        }
    }
    req
}

fn mounts_in(m: Vec<berth_proto::types::Mount>) -> Vec<Mount> {
    m.into_iter().map(Into::into).collect()
}

impl Snapshotter for ProxySnapshotter {
    fn stat(&self, key: &str) -> Result<Info> {
        let msg = StatSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        self.keyed("stat", key, msg, |mut c, r| async move {
            info_answer(c.stat(r).await?.into_inner().info)
        })
    }

    fn update(&self, info: Info, paths: &[String]) -> Result<Info> {
        let key = info.name.clone();
        let msg = UpdateSnapshotRequest {
            snapshotter: self.name.clone(),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.to_vec(),
            }),
            info: Some(info_out(info)),
        };
        self.changing(|| {
            self.keyed("update", &key, msg, |mut c, r| async move {
                info_answer(c.update(r).await?.into_inner().info)
            })
        })
    }

    fn usage(&self, key: &str) -> Result<Usage> {
        let msg = UsageRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        let (size, inodes) = self.keyed("usage", key, msg, |mut c, r| async move {
            let u = c.usage(r).await?.into_inner();
            Ok((u.size, u.inodes))
        })?;
        Ok(Usage { size, inodes })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let msg = MountsRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        self.keyed("mounts", key, msg, |mut c, r| async move {
            Ok(mounts_in(c.mounts(r).await?.into_inner().mounts))
        })
    }

    fn prepare(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        let msg = PrepareSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
            parent: parent.unwrap_or_default().into(),
            labels: labels_out(&labels),
        };
        self.changing(|| {
            self.keyed("prepare", key, msg, |mut c, r| async move {
                Ok(mounts_in(c.prepare(r).await?.into_inner().mounts))
            })
        })
    }

    fn view(&self, key: &str, parent: Option<&str>, labels: Labels) -> Result<Vec<Mount>> {
        let msg = ViewSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
            parent: parent.unwrap_or_default().into(),
            labels: labels_out(&labels),
        };
        self.changing(|| {
            self.keyed("view", key, msg, |mut c, r| async move {
                Ok(mounts_in(c.view(r).await?.into_inner().mounts))
            })
        })
    }

    fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let msg = CommitSnapshotRequest {
            snapshotter: self.name.clone(),
            name: name.into(),
            key: key.into(),
            labels: labels_out(&labels),
        };
        self.changing(|| {
            self.keyed("commit", key, msg, |mut c, r| async move {
                c.commit(r).await.map(drop)
            })
        })
    }

    fn remove(&self, key: &str) -> Result<()> {
        let msg = RemoveSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.into(),
        };
        self.changing(|| {
            self.keyed("remove", key, msg, |mut c, r| async move {
                c.remove(r).await.map(drop)
            })
        })
    }

    fn walk(&self, visit: &mut dyn FnMut(&Info) -> bool) -> Result<()> {
        let req = Request::new(ListSnapshotsRequest {
            snapshotter: self.name.clone(),
            filters: vec![],
        });
        // The whole list is read under the deadline, then visited here: `visit` may take
        // its time without holding the plugin's stream open.
        let infos = self.call("list", |mut c| async move {
            let mut stream = c.list(req).await?.into_inner();
            let mut infos = vec![];
            while let Some(batch) = stream.message().await? {
                infos.extend(batch.info.into_iter().map(info_in));
            }
            Ok(infos)
        })?;
        for info in &infos {
            if !visit(info) {
                break;
            }
        }
        Ok(())
    }

    fn changes(&self) -> Option<u64> {
        Some(self.changes.load(Ordering::SeqCst))
    }

    fn cleanup(&self) -> Result<()> {
        let req = Request::new(CleanupRequest {
            snapshotter: self.name.clone(),
        });
        self.call("cleanup", |mut c| async move {
            match c.cleanup(req).await {
                // A plugin with nothing to clean up need not implement it (containerd's rule).
                Err(s) if s.code() == Code::Unimplemented => Ok(()),
                r => r.map(drop),
            }
        })
    }
}

fn info_answer(info: Option<berth_proto::snapshots::Info>) -> Result<Info, Status> {
    info.map(info_in)
        .ok_or_else(|| Status::internal("the plugin answered without the snapshot's info"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_come_out_of_berths_words() {
        assert_eq!(
            snapshot_named("snapshot \"default/a b\" not found", "not found"),
            "default/a b"
        );
        assert_eq!(
            snapshot_named("no such thing: not found", "not found"),
            "no such thing: not found"
        );
    }

    #[test]
    fn requests_carry_the_keys_namespace() {
        let r = request((), "k8s.io/sha256:abc");
        assert_eq!(r.metadata().get(NAMESPACE_HEADER).unwrap(), "k8s.io");
        let r = request((), "no namespace here");
        assert!(r.metadata().get(NAMESPACE_HEADER).is_none());
    }

    #[test]
    fn a_stuck_plugin_costs_one_deadline_then_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("stuck.sock");
        // Connections are queued by the kernel and never answered.
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let plugin = ProxyPlugin {
            name: "stuck".into(),
            address: socket,
            timeout: Duration::from_millis(300),
            exports: Default::default(),
            capabilities: vec![],
        };
        let s = ProxySnapshotter::new(&plugin).unwrap();
        let first = s.stat("default/x").unwrap_err().to_string();
        assert!(first.contains("no answer within 300ms"), "{first}");
        let next = s.usage("default/x").unwrap_err();
        assert!(matches!(next, Error::Unavailable(_)), "{next:?}");
        assert!(
            next.to_string().contains("missed its 300ms deadline"),
            "{next}"
        );
    }

    #[test]
    fn a_missing_socket_is_unavailable_naming_plugin_and_socket() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = ProxyPlugin {
            name: "gone".into(),
            address: dir.path().join("none.sock"),
            timeout: Duration::from_secs(5),
            exports: Default::default(),
            capabilities: vec![],
        };
        let s = ProxySnapshotter::new(&plugin).unwrap();
        let e = s.stat("default/x").unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("\"gone\""), "{text}");
        assert!(text.contains("none.sock"), "{text}");
    }
}
