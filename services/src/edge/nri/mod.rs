//! berthd's NRI face (Node Resource Interface, NRI v0.12): the socket plugins dial
//! (`[nri] socket_path`), their registration and Configure ([`plugin`]) and Synchronize
//! ([`sync`]), the pod and container lifecycle relayed to them in index order
//! ([`events`]), and their adjustments applied to a container's OCI spec ([`adjust`]).
//! The wire is ttrpc over a multiplexed connection ([`mux`]); plugins may also be started
//! by berthd ([`launch`]).
//!
//! What NRI needs from the CRI (the pods and containers that exist, applying resource
//! updates) comes through [`Host`], which the CRI implements: this face names no CRI type.
//!
//! One gate orders plugins joining against lifecycle events: every event is relayed, and a
//! created pod or container made visible, under a read hold; a plugin's Synchronize runs
//! under the write hold, so nothing created meanwhile escapes both its Synchronize and its
//! events.

pub mod adjust;
pub mod config;
mod events;
mod launch;
mod mux;
mod plugin;
mod sync;

pub use config::NriConfig;
pub use events::Held;

use crate::core::error::{Error, Result};
use berth_proto::nri as api;
use futures::future::BoxFuture;
use plugin::Plugin;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The NRI version berthd speaks, told to plugins in Configure.
pub const NRI_VERSION: &str = "v0.12.1";
/// Every event a plugin may subscribe to (bits 0..=13).
const ALL_EVENTS: i32 = (1 << (api::Event::Last as i32 - 1)) - 1;

/// What NRI asks of the runtime it runs in.
pub trait Host: Send + Sync + 'static {
    /// The pods and containers that exist, for a joining plugin's Synchronize.
    fn snapshot(&self) -> BoxFuture<'_, (Vec<api::PodSandbox>, Vec<api::Container>)>;
    /// Applies resource updates to existing containers; answers those that failed.
    fn update(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> BoxFuture<'_, Vec<api::ContainerUpdate>>;
}

/// NRI in berthd: cheap to clone.
#[derive(Clone)]
pub struct Nri {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    cfg: NriConfig,
    runtime_version: String,
    host: Arc<dyn Host>,
    /// Connected, configured and synchronized plugins, in call order.
    plugins: Mutex<Vec<Arc<Plugin>>>,
    gate: tokio::sync::RwLock<()>,
    /// Pods whose RunPodSandbox is being relayed: not listed, not usable yet.
    hidden: Mutex<HashSet<String>>,
    /// Pods and containers whose stop was relayed (it is relayed once).
    stopped: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// The configuration file for plugin `idx`-`name`, if `plugin_config_path` has one.
    fn plugin_config(&self, idx: &str, name: &str) -> String {
        let dir = &self.cfg.plugin_config_path;
        if dir.as_os_str().is_empty() {
            return String::new();
        }
        [format!("{idx}-{name}.conf"), format!("{name}.conf")]
            .iter()
            .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
            .unwrap_or_default()
    }

    fn plugins(&self) -> Vec<Arc<Plugin>> {
        lock(&self.plugins).clone()
    }

    /// Drops a plugin that failed: it gets no more events and its connection closes.
    fn drop_plugin(&self, p: &Plugin, why: &str) {
        p.close();
        if self.forget_plugin(p) {
            tracing::warn!(plugin = p.name, reason = why, "NRI plugin dropped");
        }
    }

    /// Takes a plugin off the list; whether it was on it.
    fn forget_plugin(&self, p: &Plugin) -> bool {
        let mut list = lock(&self.plugins);
        let before = list.len();
        list.retain(|q| !std::ptr::eq(q.as_ref(), p));
        list.len() != before
    }
}

impl Nri {
    /// Listens on `socket_path` (unless connections are disabled) and starts the plugins
    /// under `plugin_path`.
    pub fn start(cfg: NriConfig, runtime_version: String, host: Arc<dyn Host>) -> Result<Self> {
        let inner = Arc::new(Inner {
            cfg,
            runtime_version,
            host,
            plugins: Mutex::default(),
            gate: tokio::sync::RwLock::new(()),
            hidden: Mutex::default(),
            stopped: Mutex::default(),
        });
        if !inner.cfg.disable_connections {
            let path = inner.cfg.socket_path.clone();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            }
            let listener = crate::edge::shim::ttrpc::bind_private(&path)?;
            let weak = Arc::downgrade(&inner);
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let Some(inner) = weak.upgrade() else { return };
                    tokio::spawn(join(conn, inner));
                }
            });
            tracing::info!(socket = %path.display(), "NRI: listening for plugins");
        }
        launch::start_all(&inner)?;
        Ok(Nri { inner })
    }

    /// Holds the gate for relaying events (and making what they announce visible).
    pub async fn hold(&self) -> Held<'_> {
        Held::new(&self.inner).await
    }

    /// Whether pod `id` is still being announced to plugins (not to be listed or used).
    pub fn hidden(&self, id: &str) -> bool {
        lock(&self.inner.hidden).contains(id)
    }

    /// Names of the plugins connected now, in call order.
    pub fn plugin_names(&self) -> Vec<String> {
        self.inner
            .plugins()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }
}

/// A plugin that dialled in: registered, configured, synchronized under the gate's write
/// hold and then added in index order; dropped when its connection goes.
async fn join(conn: tokio::net::UnixStream, inner: Arc<Inner>) {
    let plugin = match plugin::handshake(conn, &inner).await {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::warn!(error = %e, "NRI plugin refused");
            return;
        }
    };
    let updates = {
        let _w = inner.gate.write().await;
        let (pods, containers) = inner.host.snapshot().await;
        // Synchronize ends joining: it may take as long as registering may (a plugin
        // reconciling a busy node), not just one event's time.
        let allowance = inner
            .cfg
            .registration_timeout()
            .max(inner.cfg.request_timeout());
        match sync::synchronize(&plugin, pods, containers, allowance).await {
            Ok(updates) => {
                let mut list = lock(&inner.plugins);
                list.push(plugin.clone());
                list.sort_by(|a, b| a.name.cmp(&b.name));
                updates
            }
            Err(e) => {
                tracing::warn!(
                    plugin = plugin.name,
                    error = e,
                    "NRI plugin failed Synchronize"
                );
                return;
            }
        }
    };
    tracing::info!(plugin = plugin.name, "NRI plugin connected");
    if !updates.is_empty() {
        let failed = inner.host.update(updates).await;
        if !failed.is_empty() {
            tracing::warn!(
                plugin = plugin.name,
                failed = failed.len(),
                "NRI: updates from Synchronize failed"
            );
        }
    }
    plugin.gone().await;
    if inner.forget_plugin(&plugin) {
        tracing::info!(plugin = plugin.name, "NRI plugin disconnected");
    }
}
