//! berthd's Kubernetes CRI adapter (`runtime.v1`): pod sandboxes, containers and images for the
//! kubelet, on the same core stores the containerd API uses. Objects live in namespace
//! `k8s.io` as ordinary container and image records (so `ctr -n k8s.io` sees them); what the
//! CRI adds (its configs, times, exit, network) travels in the records' extensions and is
//! cached here in memory.
//!
//! This module is a wire edge like `grpc/`: the CRI's own messages are its vocabulary.

mod checkpoint;
mod checkpoint_archive;
pub mod config;
mod container;
mod create;
mod handler;

mod image;
mod image_volume;
pub mod logs;
mod metrics;
mod nri;
mod restore;
mod sandbox;
pub mod seccomp;
pub mod server;
mod spec;
mod stats;
mod store;
pub mod stream;

use crate::core::containers::Containers;
use crate::core::content::Content;
use crate::core::context::{Ctx, Namespace};
use crate::core::error::{Error, Result};
use crate::core::events::Exchange;
use crate::core::images::Images;
use crate::core::metadata::containers::{AnyValue, ContainerRecord};
use crate::core::pull::Puller;
use crate::core::runtime::Tasks;
use crate::core::snapshots::Snapshots;
use crate::core::unpack::Unpacker;
use berth_proto::cri::v1 as cri;
use config::CriConfig;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use store::Store;

/// Record label telling sandboxes and containers apart.
pub const KIND_LABEL: &str = "io.berth.cri.kind";
const META_EXT: &str = "io.berth.cri.v1.meta";
const CONFIG_EXT: &str = "io.berth.cri.v1.config";

/// What berth keeps about a pod sandbox beyond its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxMeta {
    pub name: String,
    pub created_at: i64,
    pub runtime_handler: String,
    /// The snapshotter of its handler when it was made, where its containers' root
    /// filesystems are; empty (pods made before handlers had their own): `[cri] snapshotter`.
    #[serde(default)]
    pub snapshotter: String,
    /// The pinned network namespace; empty for host-network pods.
    pub netns: String,
    pub ips: Vec<String>,
    /// The CNI ADD result, handed to DEL.
    pub cni_result: Option<serde_json::Value>,
    /// Whether the network is set up (ADD done, DEL not yet).
    pub network_ready: bool,
    /// The pause process, while it runs.
    pub pid: u32,
    pub stopped: bool,
}

/// What berth keeps about a container beyond its record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub name: String,
    pub sandbox_id: String,
    /// The image as the caller named it, and its id (the config digest).
    pub image_ref: String,
    pub image_id: String,
    pub log_path: String,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub pid: u32,
    /// The user the process runs as (uid, gid, supplementary groups).
    pub uid: i64,
    pub gid: i64,
    pub groups: Vec<i64>,
    /// The image's StopSignal, used when the config names none.
    #[serde(default)]
    pub stop_signal: String,
}

#[derive(Clone)]
pub struct Sandbox {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    pub meta: SandboxMeta,
}

#[derive(Clone)]
pub struct Container {
    pub id: String,
    pub config: cri::ContainerConfig,
    pub meta: ContainerMeta,
}

/// The CRI service core, shared by the RuntimeService and ImageService servers.
#[derive(Clone)]
pub struct Cri {
    pub cfg: Arc<CriConfig>,
    ns: Namespace,
    root: PathBuf,
    state_dir: PathBuf,
    content: Content,
    images: Images,
    puller: Puller,
    unpacker: Unpacker,
    /// The container records of sandboxes and containers.
    records: Containers,
    snapshots: Snapshots,
    tasks: Tasks,
    events: Exchange,
    sandboxes: Arc<Store<Sandbox>>,
    containers: Arc<Store<Container>>,
    names: Arc<store::Names>,
    logs: Arc<store::Logs>,
    oom: Arc<store::OomKills>,
    described: Arc<store::Described>,
    fs_usage: Arc<store::FsUsage>,
    cpu_samples: Arc<store::CpuSamples>,
    /// One lock per object id, so operations on one pod or container happen in order.
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Subscribers of GetContainerEvents.
    watchers: Arc<Mutex<Vec<tokio::sync::mpsc::Sender<cri::ContainerEventResponse>>>>,
    /// The streaming server, once started.
    streaming: Arc<std::sync::OnceLock<stream::StreamServer>>,
    /// NRI, once started (`[nri] enable`).
    nri: Arc<std::sync::OnceLock<crate::edge::nri::Nri>>,
    version: String,
}

/// The core pieces the adapter works through.
pub struct Parts {
    pub root: PathBuf,
    pub state: PathBuf,
    pub content: Content,
    pub images: Images,
    pub puller: Puller,
    pub unpacker: Unpacker,
    pub containers: Containers,
    pub snapshots: Snapshots,
    pub tasks: Tasks,
    pub events: Exchange,
    pub version: String,
}

pub fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn ext_json<T: Serialize>(v: &T) -> Result<AnyValue> {
    Ok(AnyValue {
        type_url: META_EXT.into(),
        value: serde_json::to_vec(v)?,
    })
}

fn ext_proto<T: Message + prost::Name>(v: &T) -> AnyValue {
    AnyValue {
        type_url: T::full_name(),
        value: v.encode_to_vec(),
    }
}

impl Cri {
    pub fn new(cfg: CriConfig, p: Parts) -> Result<Self> {
        handler::warn_unavailable(&cfg, &p.snapshots.names());
        Ok(Cri {
            cfg: Arc::new(cfg),
            ns: Namespace::parse(config::NAMESPACE)?,
            root: p.root.join("io.berth.cri.v1"),
            state_dir: p.state.join("io.berth.cri.v1"),
            content: p.content,
            images: p.images,
            puller: p.puller,
            unpacker: p.unpacker,
            records: p.containers,
            snapshots: p.snapshots,
            tasks: p.tasks,
            events: p.events,
            sandboxes: Arc::new(Store::new("pod sandbox")),
            containers: Arc::new(Store::new("container")),
            names: Arc::default(),
            logs: Arc::default(),
            oom: Arc::default(),
            described: Arc::default(),
            fs_usage: Arc::default(),
            cpu_samples: Arc::default(),
            locks: Arc::default(),
            watchers: Arc::default(),
            streaming: Arc::default(),
            nri: Arc::default(),
            version: p.version,
        })
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            ns: self.ns.clone(),
            lease: None,
        }
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, v| Arc::strong_count(v) > 1);
        m.entry(id.to_string()).or_default().clone()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    fn sandbox_state_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(id)
    }

    fn container_state_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(id)
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.state_dir.join("netns").join(id)
    }

    /// Finds a sandbox by id or unique id prefix.
    fn sandbox(&self, id: &str) -> Result<Sandbox> {
        self.sandboxes.get(id)
    }

    /// Finds a container by id or unique id prefix.
    fn container(&self, id: &str) -> Result<Container> {
        self.containers.get(id)
    }

    /// The containers of a pod.
    fn members(&self, sandbox_id: &str) -> Vec<Container> {
        self.containers.filter(|c| c.meta.sandbox_id == sandbox_id)
    }

    async fn persist_sandbox(&self, s: &Sandbox) -> Result<()> {
        let mut rec = ContainerRecord {
            id: s.id.clone(),
            ..Default::default()
        };
        rec.extensions.insert(META_EXT.into(), ext_json(&s.meta)?);
        self.records
            .update(self.ns.clone(), rec, vec![format!("extensions.{META_EXT}")])
            .await?;
        self.sandboxes.insert(&s.id, s.clone());
        Ok(())
    }

    async fn persist_container(&self, c: &Container) -> Result<()> {
        let mut rec = ContainerRecord {
            id: c.id.clone(),
            ..Default::default()
        };
        rec.extensions.insert(META_EXT.into(), ext_json(&c.meta)?);
        self.records
            .update(self.ns.clone(), rec, vec![format!("extensions.{META_EXT}")])
            .await?;
        self.containers.insert(&c.id, c.clone());
        Ok(())
    }

    /// Loads every CRI object from the store, then reconciles it with what runs: exits
    /// missed while berthd was down are recorded, running containers get their log copiers
    /// and exit waiters back.
    pub async fn recover(&self) -> Result<()> {
        let records = self
            .records
            .list(self.ns.clone(), Default::default())
            .await?;
        for r in records {
            let kind = r.labels.get(KIND_LABEL).cloned().unwrap_or_default();
            let (Some(meta), Some(conf)) =
                (r.extensions.get(META_EXT), r.extensions.get(CONFIG_EXT))
            else {
                continue;
            };
            match kind.as_str() {
                "sandbox" => {
                    let (Ok(meta), Ok(config)) = (
                        serde_json::from_slice::<SandboxMeta>(&meta.value),
                        cri::PodSandboxConfig::decode(conf.value.as_slice()),
                    ) else {
                        tracing::warn!(id = r.id, "unreadable CRI sandbox record; skipped");
                        continue;
                    };
                    self.names.insert(&meta.name, &r.id);
                    self.sandboxes.insert(
                        &r.id.clone(),
                        Sandbox {
                            id: r.id,
                            config,
                            meta,
                        },
                    );
                }
                "container" => {
                    let (Ok(meta), Ok(config)) = (
                        serde_json::from_slice::<ContainerMeta>(&meta.value),
                        cri::ContainerConfig::decode(conf.value.as_slice()),
                    ) else {
                        tracing::warn!(id = r.id, "unreadable CRI container record; skipped");
                        continue;
                    };
                    self.names.insert(&meta.name, &r.id);
                    self.containers.insert(
                        &r.id.clone(),
                        Container {
                            id: r.id,
                            config,
                            meta,
                        },
                    );
                }
                _ => {}
            }
        }
        let running = self
            .containers
            .filter(|c| c.meta.started_at > 0 && c.meta.finished_at == 0);
        for c in running {
            self.reattach(&c).await;
        }
        let sandboxes = self.sandboxes.all();
        for s in sandboxes {
            if s.meta.stopped {
                continue;
            }
            let alive = self.tasks.state(self.ns.clone(), init_ref(&s.id)).await;
            match alive {
                Ok(p) if p.status == crate::core::runtime::Status::Running => {
                    self.watch_sandbox(&s.id)
                }
                _ => self.sandbox_exited(&s.id).await,
            }
        }
        self.watch_oom();
        Ok(())
    }

    /// Starts the streaming server on the configured address.
    pub async fn start_streaming(&self) -> Result<()> {
        let server = stream::StreamServer::start(
            self.clone(),
            &self.cfg.stream_server_address,
            &self.cfg.stream_server_port,
        )
        .await?;
        let _ = self.streaming.set(server);
        Ok(())
    }

    /// A single-use streaming URL for `p`.
    pub fn stream_url(&self, p: stream::Pending) -> Result<String> {
        self.streaming
            .get()
            .map(|s| s.url_for(p))
            .ok_or_else(|| Error::precondition("the streaming server is not running"))
    }

    /// Closes a process's stdin: the shim lets go of its end (CloseIO).
    async fn close_stdin(&self, p: crate::core::runtime::ProcessRef) {
        if let Err(e) = self.tasks.close_stdin(self.ns.clone(), p).await {
            tracing::debug!(error = %e, "close stdin");
        }
    }

    /// Tells every GetContainerEvents subscriber.
    fn notify(&self, ev: cri::ContainerEventResponse) {
        let mut w = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|tx| match tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("a container event subscriber is too slow; its stream is ended");
                false
            }
            Err(_) => false,
        });
    }

    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<cri::ContainerEventResponse> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        rx
    }

    /// Marks containers whose cgroup saw an OOM kill (the shims publish `/tasks/oom`).
    fn watch_oom(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let filter = match crate::core::filters::Filter::parse_all(&[
                    "topic==\"/tasks/oom\",namespace==\"k8s.io\"",
                ]) {
                    Ok(f) => f,
                    Err(_) => return,
                };
                let mut sub = this.events.subscribe(filter);
                while let Some(env) = sub.next().await {
                    if let crate::core::events::Event::Raw { value, .. } = &env.event {
                        if let Ok(oom) =
                            berth_proto::containerd::events::TaskOom::decode(value.as_slice())
                        {
                            this.oom.insert(oom.container_id);
                        }
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
    }
}

pub(crate) fn init_ref(id: &str) -> crate::core::runtime::ProcessRef {
    crate::core::runtime::ProcessRef {
        container_id: id.to_string(),
        exec_id: String::new(),
    }
}

/// Whether every `selector` label is on `labels` with the same value.
fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
