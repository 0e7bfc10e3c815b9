//! Assembles berthd's core from its plugins, in dependency order, and serves it over gRPC.

use crate::core::containers::Containers;
use crate::core::content::local::LocalStore;
use crate::core::content::Content;
use crate::core::diff::Differ;
use crate::core::error::{Error, Result};
use crate::core::events::Exchange;
use crate::core::gc::{Gc, GcFence};
use crate::core::images::Images;
use crate::core::leases::Leases;
use crate::core::metadata::MetadataStore;
use crate::core::namespaces::Namespaces;
use crate::core::network::Networks;
use crate::core::plugins::{self, Plugin, PluginSet};
use crate::core::pull::Puller;
use crate::core::push::Pusher;
use crate::core::registry::RegistryConfig;
use crate::core::runtime::{RuntimeConfig, Tasks};
use crate::core::snapshots::Snapshots;
use crate::core::unpack::Unpacker;
use crate::edge::grpc;
use crate::edge::snapshotter_proxy::client::ProxySnapshotter;
use crate::edge::snapshotter_proxy::ProxyPlugin;
use berth_snapshotters::Snapshotter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest gRPC message accepted or sent; containerd's clients allow 16 MiB.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

pub use router::GrpcRouter;

mod router;

#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version: String,
    pub revision: String,
}

/// berthd's core. The fields berthd's own wiring (listeners, recovery, SIGHUP) reaches for
/// are public; the rest only feeds [`Daemon::router`].
pub struct Daemon {
    pub store: MetadataStore,
    pub events: Exchange,
    pub gc: Gc,
    pub tasks: Tasks,
    pub runtime: RuntimeConfig,
    /// Registry settings, replaced on SIGHUP.
    pub registry: crate::core::registry::SharedConfig,
    /// Container networks (`berth run --network`, `berth network`).
    pub networks: Networks,
    /// The Kubernetes CRI adapter, when enabled.
    pub cri: Option<crate::edge::cri::Cri>,
    root: PathBuf,
    content: Content,
    images: Images,
    namespaces: Namespaces,
    leases: Leases,
    containers: Containers,
    snapshots: Snapshots,
    differ: Differ,
    unpacker: Unpacker,
    puller: Puller,
    pusher: Pusher,
    archives: crate::core::archive::Archives,
    streams: grpc::streaming::OpenStreams,
    volumes: crate::core::volumes::Volumes,
    builder: crate::core::build::Builder,
    /// The plugins started, in the order they were (Introspection reports these).
    plugins: Vec<Plugin>,
    uuid: String,
    version: VersionInfo,
}

fn content_root(root: &Path) -> PathBuf {
    root.join("io.containerd.content.v1.content")
}

fn metadata_path(root: &Path) -> PathBuf {
    root.join("io.containerd.metadata.v1.redb/meta.redb")
}

/// The plugins berthd runs, each with the types it requires: [`Daemon::open`] starts them in
/// that order. The metadata plugin wraps content and the snapshotters and publishes through
/// the exchange, so it requires all three (as containerd's does).
fn plugin_set(root: &Path, proxies: &[ProxyPlugin]) -> Result<PluginSet> {
    let mut r = PluginSet::default();
    r.register(
        Plugin::new(plugins::CONTENT, "content", &[])
            .export("root", content_root(root).display().to_string()),
    )?;
    r.register(
        Plugin::new(
            plugins::METADATA,
            "redb",
            &[plugins::CONTENT, plugins::EVENT, plugins::SNAPSHOTTER],
        )
        .export("path", metadata_path(root).display().to_string()),
    )?;
    r.register(Plugin::new(plugins::EVENT, "exchange", &[]))?;
    for name in [
        berth_snapshotters::overlay::NAME,
        berth_snapshotters::native::NAME,
        berth_snapshotters::erofs::NAME,
    ] {
        let mut p = Plugin::new(plugins::SNAPSHOTTER, name, &[]).export(
            "root",
            crate::core::snapshots::snapshotter_root(root, name)
                .display()
                .to_string(),
        );
        // overlayfs stacks remapped snapshots on idmapped layers where the kernel can: a
        // containerd 2.x client that sees the capability passes the mapping labels instead
        // of chowning a copy of the image itself (which the mapping would then map again).
        if name == berth_snapshotters::overlay::NAME && berth_snapshotters::idmap::supported() {
            p.capabilities
                .push(berth_snapshotters::idmap::REMAP_IDS_CAPABILITY.into());
        }
        r.register(p)?;
    }
    // Proxy plugins are listed as containerd lists them: their socket exported as `address`.
    for proxy in proxies {
        let mut p = Plugin::new(plugins::SNAPSHOTTER, &proxy.name, &[]);
        p.exports = proxy.exports.clone();
        p.exports
            .insert("address".into(), proxy.address.display().to_string());
        p.capabilities = proxy.capabilities.clone();
        r.register(p)?;
    }
    r.register(Plugin::new(plugins::DIFF, "walking", &[plugins::METADATA]))?;
    r.register(Plugin::new(
        plugins::RUNTIME,
        "task",
        &[plugins::METADATA, plugins::EVENT],
    ))?;
    r.register(Plugin::new(plugins::LEASE, "manager", &[plugins::METADATA]))?;
    // Activations recorded in redb beside the metadata, mounted under <state>/mounts.
    r.register(Plugin::new(
        plugins::MOUNT_MANAGER,
        "redb",
        &[plugins::METADATA],
    ))?;
    for id in [
        "content-service",
        "images-service",
        "namespaces-service",
        "leases-service",
        "containers-service",
    ] {
        r.register(Plugin::new(
            plugins::SERVICE,
            id,
            &[plugins::METADATA, plugins::EVENT, plugins::LEASE],
        ))?;
    }
    for id in [
        "content",
        "images",
        "namespaces",
        "leases",
        "events",
        "introspection",
        "version",
        "transfer",
        "mounts",
        "sandboxes",
        "sandbox-controllers",
        "streaming",
        "volumes",
        "networks",
        "build",
        "check",
        "healthcheck",
        "cri",
    ] {
        r.register(Plugin::new(plugins::GRPC, id, &[plugins::SERVICE]))?;
    }
    Ok(r)
}

/// The metadata plugin's parts (containerd's metadata DB): the store, the content and
/// snapshotters it wraps, and their collector, all behind one [`GcFence`].
#[derive(Clone)]
struct Metadata {
    store: MetadataStore,
    content: Content,
    snapshots: Snapshots,
    gc: Gc,
}

/// What the plugins started so far left: each plugin takes what the ones it requires made.
#[derive(Default)]
struct Started {
    plugins: Vec<Plugin>,
    local: Option<LocalStore>,
    events: Option<Exchange>,
    backends: BTreeMap<String, Arc<dyn Snapshotter>>,
    metadata: Option<Metadata>,
    differ: Option<Differ>,
    tasks: Option<(Tasks, Networks)>,
    leases: Option<Leases>,
    images: Option<Images>,
    containers: Option<Containers>,
    namespaces: Option<Namespaces>,
}

/// A part a started plugin left (the order of [`PluginSet::ordered`] guarantees it).
fn made<T: Clone>(part: &Option<T>, plugin: &str) -> Result<T> {
    part.clone()
        .ok_or_else(|| Error::precondition(format!("plugin {plugin} did not start")))
}

/// The parts the plugins made, which the daemon's others are built from.
struct Made {
    metadata: Metadata,
    events: Exchange,
    differ: Differ,
    tasks: Tasks,
    networks: Networks,
    leases: Leases,
    images: Images,
    containers: Containers,
    namespaces: Namespaces,
}

impl Made {
    fn from(started: &Started) -> Result<Made> {
        let metadata = made(&started.metadata, plugins::METADATA)?;
        let events = made(&started.events, plugins::EVENT)?;
        let differ = made(&started.differ, plugins::DIFF)?;
        let (tasks, networks) = made(&started.tasks, plugins::RUNTIME)?;
        Ok(Made {
            metadata,
            events,
            differ,
            tasks,
            networks,
            leases: made(&started.leases, plugins::LEASE)?,
            images: made(&started.images, "images-service")?,
            containers: made(&started.containers, "containers-service")?,
            namespaces: made(&started.namespaces, "namespaces-service")?,
        })
    }

    /// The image builder, keeping its work under `root` and `state`.
    fn builder(&self, movers: &Movers, root: &Path, state: &Path) -> crate::core::build::Builder {
        crate::core::build::Builder {
            content: self.metadata.content.clone(),
            images: self.images.clone(),
            snapshots: self.metadata.snapshots.clone(),
            unpacker: movers.unpacker.clone(),
            puller: movers.puller.clone(),
            differ: self.differ.clone(),
            containers: self.containers.clone(),
            tasks: self.tasks.clone(),
            root: root.join("io.berth.build.v1"),
            state: state.join("io.berth.build.v1"),
            cache: Default::default(),
        }
    }

    /// What the CRI adapter works over: the same stores as the containerd API.
    fn cri_parts(
        &self,
        movers: &Movers,
        root: &Path,
        state: &Path,
        version: &VersionInfo,
    ) -> crate::edge::cri::Parts {
        crate::edge::cri::Parts {
            root: root.to_path_buf(),
            state: state.to_path_buf(),
            content: self.metadata.content.clone(),
            images: self.images.clone(),
            puller: movers.puller.clone(),
            unpacker: movers.unpacker.clone(),
            containers: self.containers.clone(),
            snapshots: self.metadata.snapshots.clone(),
            tasks: self.tasks.clone(),
            events: self.events.clone(),
            version: version.version.clone(),
        }
    }
}

/// What moves images into and out of the stores, and the registry settings they share.
struct Movers {
    unpacker: Unpacker,
    registry: crate::core::registry::SharedConfig,
    puller: Puller,
    pusher: Pusher,
    archives: crate::core::archive::Archives,
}

impl Movers {
    fn new(made: &Made, registry_config: RegistryConfig) -> Movers {
        let Metadata {
            store,
            content,
            snapshots,
            gc,
        } = &made.metadata;
        let unpacker = Unpacker::new(
            content.clone(),
            snapshots.clone(),
            store.clone(),
            gc.clone(),
        );
        let registry = crate::core::registry::SharedConfig::new(registry_config);
        let puller = Puller::new(
            content.clone(),
            made.images.clone(),
            made.leases.clone(),
            snapshots.clone(),
            unpacker.clone(),
            registry.clone(),
            gc.clone(),
        );
        let archives = crate::core::archive::Archives::new(
            content.clone(),
            made.images.clone(),
            made.leases.clone(),
            unpacker.clone(),
            gc.clone(),
        );
        Movers {
            pusher: Pusher::new(content.clone(), made.images.clone(), registry.clone()),
            unpacker,
            registry,
            puller,
            archives,
        }
    }
}

/// What [`Started::start`] needs besides the parts: berthd's settings.
struct Settings<'a> {
    root: &'a Path,
    runtime: &'a RuntimeConfig,
    network: &'a crate::core::network::NetworkConfig,
    cri_enabled: bool,
    proxies: &'a [ProxyPlugin],
}

impl Started {
    /// The metadata plugin: the store, and the content and snapshotters it wraps, fenced
    /// from their collector by one fence made first.
    fn open_metadata(&mut self, root: &Path) -> Result<Metadata> {
        let path = metadata_path(root);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let store = MetadataStore::open(&path)?;
        let events = made(&self.events, plugins::EVENT)?;
        let local = self
            .local
            .take()
            .ok_or_else(|| Error::precondition("plugin content did not start"))?;
        let fence = GcFence::default();
        let content =
            Content::new(local, store.clone(), events.clone()).with_gc_fence(fence.clone());
        let backends = std::mem::take(&mut self.backends);
        let snapshots =
            Snapshots::new(backends, store.clone(), events).with_gc_fence(fence.clone());
        let gc = Gc::new(fence, store.clone(), content.clone(), snapshots.clone());
        Ok(Metadata {
            store,
            content,
            snapshots,
            gc,
        })
    }

    /// A proxy plugin's client. Nothing is asked of the plugin now (it may start after
    /// berthd): its crash leftovers are its own to clean up when it starts.
    fn start_proxy(&mut self, p: &mut Plugin, proxies: &[ProxyPlugin]) {
        let Some(proxy) = proxies.iter().find(|x| x.name == p.id) else {
            return;
        };
        match ProxySnapshotter::new(proxy) {
            Ok(s) => {
                self.backends.insert(proxy.name.clone(), Arc::new(s));
            }
            Err(e) => p.init_err = Some(e.to_string()),
        }
    }

    /// Starts one plugin from the parts of those it requires; a plugin that is not wanted
    /// (the CRI when disabled) is left out, one that fails to start is kept with its error.
    fn start(&mut self, mut p: Plugin, cfg: &Settings) -> Result<()> {
        match (p.kind.as_str(), p.id.as_str()) {
            (plugins::CONTENT, _) => self.local = Some(LocalStore::open(&content_root(cfg.root))?),
            (plugins::EVENT, _) => self.events = Some(Exchange::new()),
            (plugins::SNAPSHOTTER, name) if cfg.proxies.iter().any(|x| x.name == name) => {
                self.start_proxy(&mut p, cfg.proxies)
            }
            (plugins::SNAPSHOTTER, name) => {
                let dir = crate::core::snapshots::snapshotter_root(cfg.root, name);
                let opened = berth_snapshotters::open(name, &dir).and_then(|s| {
                    // Directories left by a crash mid-create or mid-remove.
                    s.cleanup()?;
                    Ok(s)
                });
                match opened {
                    Ok(s) => {
                        self.backends.insert(name.to_string(), Arc::from(s));
                    }
                    Err(e) => {
                        tracing::warn!(snapshotter = name, error = %e, "snapshotter unavailable");
                        p.init_err = Some(e.to_string());
                    }
                }
            }
            (plugins::METADATA, _) => self.metadata = Some(self.open_metadata(cfg.root)?),
            (plugins::DIFF, _) => {
                self.differ = Some(Differ::new(
                    made(&self.metadata, plugins::METADATA)?.content,
                ))
            }
            (plugins::RUNTIME, _) => {
                let md = made(&self.metadata, plugins::METADATA)?;
                let events = made(&self.events, plugins::EVENT)?;
                let networks = Networks::open(cfg.network, cfg.root, &cfg.runtime.state)?;
                let shims = std::sync::Arc::new(crate::edge::shim::TtrpcShims);
                let tasks = Tasks::new(cfg.runtime.clone(), md.store, md.snapshots, events, shims)
                    .with_networks(networks.clone());
                self.tasks = Some((tasks, networks));
            }
            (plugins::LEASE, _) => {
                let md = made(&self.metadata, plugins::METADATA)?;
                self.leases = Some(Leases::new(md.store, md.gc.handle()));
            }
            (plugins::SERVICE, service) => {
                let md = made(&self.metadata, plugins::METADATA)?;
                let events = made(&self.events, plugins::EVENT)?;
                match service {
                    "images-service" => {
                        self.images = Some(Images::new(md.store, events, md.gc.handle()))
                    }
                    "containers-service" => {
                        self.containers = Some(Containers::new(md.store, events, md.gc.handle()))
                    }
                    "namespaces-service" => {
                        self.namespaces = Some(Namespaces::new(md.store, events))
                    }
                    _ => {} // content and leases: the metadata and lease plugins' parts
                }
            }
            (plugins::GRPC, "cri") if !cfg.cri_enabled => return Ok(()),
            _ => {}
        }
        self.plugins.push(p);
        Ok(())
    }
}

impl Daemon {
    /// Puts the build cache's bound (`[build]` in berthd's config) in force: applied now
    /// (after half-written records from a crash are cleared) and after every build.
    pub async fn start_build_cache(&self, policy: crate::core::build::CachePolicy) {
        self.builder.cache.set_policy(policy);
        self.builder.start_cache().await;
    }

    /// The build cache's policy, for SIGHUP to replace (applied after the next build).
    pub fn build_cache(&self) -> crate::core::build::CacheState {
        self.builder.cache.clone()
    }

    /// Opens (creating if needed) every store under `root`: the plugins in the order of
    /// what they require, then the parts built from them.
    pub fn open(
        runtime: RuntimeConfig,
        registry_config: RegistryConfig,
        cri: crate::edge::cri::config::CriConfig,
        network: crate::core::network::NetworkConfig,
        version: VersionInfo,
        proxies: &[ProxyPlugin],
    ) -> Result<Self> {
        let root = runtime.root.clone();
        let root = root.as_path();
        let settings = Settings {
            root,
            runtime: &runtime,
            network: &network,
            cri_enabled: cri.enable,
            proxies,
        };
        let mut started = Started::default();
        for p in plugin_set(root, proxies)?.ordered()? {
            started.start(p, &settings)?;
        }
        let made = Made::from(&started)?;
        let uuid = made.metadata.store.server_uuid()?;
        let movers = Movers::new(&made, registry_config);
        let builder = made.builder(&movers, root, &runtime.state);
        builder.remove_leftovers();
        let cri = if cri.enable {
            let parts = made.cri_parts(&movers, root, &runtime.state, &version);
            Some(crate::edge::cri::Cri::new(cri, parts)?)
        } else {
            None
        };
        let Made {
            metadata:
                Metadata {
                    store,
                    content,
                    snapshots,
                    gc,
                },
            events,
            differ,
            tasks,
            networks,
            leases,
            images,
            containers,
            namespaces,
        } = made;
        Ok(Daemon {
            cri,
            networks,
            root: root.to_path_buf(),
            differ,
            puller: movers.puller,
            builder,
            gc,
            pusher: movers.pusher,
            archives: movers.archives,
            registry: movers.registry,
            streams: Default::default(),
            volumes: crate::core::volumes::Volumes::open(
                store.clone(),
                &root.join("io.berth.volumes.v1"),
            )?,
            unpacker: movers.unpacker,
            tasks,
            runtime,
            snapshots,
            images,
            namespaces,
            leases,
            containers,
            content,
            events,
            store,
            plugins: started.plugins,
            uuid,
            version,
        })
    }
}
