//! The runtime manager and the tasks it runs: one shim per container, started with the shim
//! v2 protocol and driven over ttrpc. The core API here speaks the runtime's own types
//! ([`types`]); the shim API's wire lives at the edge (`crate::edge::shim`), handed in as a
//! [`driver::ShimWire`].
//!
//! - [`bundle`]: where a task's files live, and the shim's log.
//! - [`checkpoint`]: a task dumped by CRIU, and a task created to be restored from a dump.
//! - [`create`]: a new task: bundle, shim start, Create; nothing half-made on failure.
//! - [`recover`]: reconnecting to the shims a previous daemon left.
//! - [`shim`]: launching a shim binary (`start`, `delete`).

pub mod bundle;
mod checkpoint;
mod create;
pub mod driver;
mod recover;
pub mod shim;
mod standby;
pub mod types;
pub mod warmup;

pub use bundle::RuntimeConfig;
pub use types::*;

use crate::core::context::Namespace;
use crate::core::error::{Error, Kind, Result};
use crate::core::events::{Event, Exchange};
use crate::core::metadata::containers::AnyValue;
use crate::core::metadata::MetadataStore;
use crate::core::snapshots::Snapshots;
use driver::{ShimApi, ShimWire};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long Wait waits for a dead shim's cleanup before giving up.
const DEAD_SHIM_CLEANUP: Duration = Duration::from_secs(30);

struct ShimTask {
    client: Box<dyn ShimApi>,
    bundle: PathBuf,
    binary: PathBuf,
    /// The low-level runtime its runc options named (`binary_name`): a shim that died is
    /// cleaned up with the same one.
    runtime: Option<String>,
    log: Option<tokio::task::JoinHandle<()>>,
    /// Set once a Delete began: the shim's connection closing after that is expected, and
    /// the exit is reported by whoever deletes, never a second time by the watcher.
    deleting: AtomicBool,
    /// Set when the shim died under a running task: how the task ended.
    dead: Mutex<Option<Exited>>,
    dead_tx: tokio::sync::watch::Sender<bool>,
}

impl Drop for ShimTask {
    fn drop(&mut self) {
        if let Some(l) = &self.log {
            l.abort();
        }
    }
}

impl ShimTask {
    fn new(
        client: Box<dyn ShimApi>,
        bundle: PathBuf,
        binary: PathBuf,
        runtime: Option<String>,
        log: Option<tokio::task::JoinHandle<()>>,
    ) -> Arc<Self> {
        let (dead_tx, _) = tokio::sync::watch::channel(false);
        Arc::new(ShimTask {
            client,
            bundle,
            binary,
            runtime,
            log,
            deleting: AtomicBool::new(false),
            dead: Mutex::new(None),
            dead_tx,
        })
    }

    fn dead(&self) -> Option<Exited> {
        self.dead.lock().ok().and_then(|d| *d)
    }
}

/// Running tasks by (namespace, container id).
type TaskTable = HashMap<(String, String), Arc<ShimTask>>;

#[derive(Clone)]
pub struct Tasks {
    cfg: Arc<RuntimeConfig>,
    store: MetadataStore,
    snapshots: Snapshots,
    events: Exchange,
    tasks: Arc<Mutex<TaskTable>>,
    /// Joins containers that ask for networks to them at create, leaves them at delete.
    networks: Option<crate::core::network::Networks>,
    /// The shims' wire (ttrpc, at the edge).
    shims: Arc<dyn ShimWire>,
}

fn init(id: &str) -> ProcessRef {
    ProcessRef {
        container_id: id.to_string(),
        exec_id: String::new(),
    }
}

impl Tasks {
    pub fn new(
        cfg: RuntimeConfig,
        store: MetadataStore,
        snapshots: Snapshots,
        events: Exchange,
        shims: Arc<dyn ShimWire>,
    ) -> Self {
        Tasks {
            cfg: Arc::new(cfg),
            store,
            snapshots,
            events,
            tasks: Arc::default(),
            networks: None,
            shims,
        }
    }

    /// Containers labelled with networks join them when their task is created.
    pub fn with_networks(mut self, networks: crate::core::network::Networks) -> Self {
        self.networks = Some(networks);
        self
    }

    /// Whether the container's task is there and its init has not exited.
    pub async fn is_running(&self, ns: &Namespace, id: &str) -> bool {
        match self.state(ns.clone(), init(id)).await {
            Ok(s) => !matches!(s.status, Status::Stopped | Status::Unknown),
            Err(_) => false,
        }
    }

    fn launch<'a>(
        &'a self,
        binary: &'a Path,
        ns: &'a Namespace,
        id: &'a str,
        bundle: &'a Path,
        runtime: Option<&'a str>,
    ) -> shim::Launch<'a> {
        shim::Launch {
            binary,
            namespace: ns.as_str(),
            id,
            bundle,
            address: &self.cfg.address,
            ttrpc_address: self.cfg.ttrpc_address(),
            runtime,
            shims: self.shims.as_ref(),
        }
    }

    /// `<shim> delete` for a task whose shim is gone, with the runtime it was created with.
    async fn shim_delete(&self, ns: &Namespace, id: &str, task: &ShimTask) -> Result<Exited> {
        self.launch(&task.binary, ns, id, &task.bundle, task.runtime.as_deref())
            .delete()
            .await
    }

    /// Registers a task and watches its shim: a shim that dies while the task is still
    /// registered (and not being deleted) is cleaned up with `<shim> delete`, and the task
    /// reported exited, once.
    fn register(&self, ns: &Namespace, id: &str, task: Arc<ShimTask>) -> Result<()> {
        self.tasks
            .lock()
            .map_err(|_| Error::new(Kind::Internal, "task table poisoned"))?
            .insert((ns.to_string(), id.to_string()), task.clone());
        let this = self.clone();
        let (ns, id) = (ns.clone(), id.to_string());
        tokio::spawn(async move {
            task.client.closed().await;
            let still_ours = this
                .get(&ns, &id)
                .map(|t| Arc::ptr_eq(&t, &task))
                .unwrap_or(false);
            if !still_ours || task.deleting.load(Ordering::SeqCst) {
                return; // deleted on purpose
            }
            tracing::warn!(namespace = %ns, id = %id, "shim died; cleaning up and reporting the task exited");
            let out = this.shim_delete(&ns, &id, &task).await.unwrap_or_default();
            let d = Exited {
                pid: out.pid,
                exit_status: if out.exit_status == 0 {
                    KILLED_EXIT_STATUS
                } else {
                    out.exit_status
                },
                exited_at: if out.exited_at == 0 {
                    crate::core::metadata::now()
                } else {
                    out.exited_at
                },
            };
            if let Ok(mut dead) = task.dead.lock() {
                *dead = Some(d);
            }
            let _ = task.dead_tx.send(true);
            this.events.publish(
                &ns,
                Event::TaskExit {
                    container_id: id.clone(),
                    id: id.clone(),
                    pid: d.pid,
                    exit_status: d.exit_status,
                    exited_at: d.exited_at,
                },
            );
        });
        Ok(())
    }

    fn get(&self, ns: &Namespace, id: &str) -> Result<Arc<ShimTask>> {
        self.tasks
            .lock()
            .map_err(|_| Error::new(Kind::Internal, "task table poisoned"))?
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no running task for container {id:?}")))
    }

    /// A live task (one whose shim has not died).
    fn live(&self, ns: &Namespace, id: &str) -> Result<Arc<ShimTask>> {
        let task = self.get(ns, id)?;
        if task.dead().is_some() {
            return Err(Error::not_found("process already finished: its shim died"));
        }
        Ok(task)
    }

    /// Takes the task out of the table and its bundle and work directory out of their places,
    /// a rename each on a blocking thread ([`bundle::retire`]): their names are free at once,
    /// and they are removed off the answer's path (on a loaded disk, a dozen unlinks waited
    /// for the journal for tens of milliseconds).
    async fn unregister(&self, ns: &Namespace, id: &str, task: &ShimTask) {
        if let Ok(mut m) = self.tasks.lock() {
            m.remove(&(ns.to_string(), id.to_string()));
        }
        let cfg = self.cfg.clone();
        let (bundle, work) = (task.bundle.clone(), self.cfg.work(ns.as_str(), id));
        let retired =
            crate::core::error::blocking(move || Ok(bundle::retire(&cfg, &bundle, &work)))
                .await
                .unwrap_or_default();
        tokio::task::spawn_blocking(move || bundle::remove_retired(&retired));
    }

    /// The ids of the namespace's tasks.
    pub fn running(&self, ns: &Namespace) -> Vec<String> {
        self.tasks
            .lock()
            .map(|m| {
                m.keys()
                    .filter(|(n, _)| n == ns.as_str())
                    .map(|(_, id)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn start(&self, ns: Namespace, p: ProcessRef) -> Result<u32> {
        let task = self.get(&ns, &p.container_id)?;
        if !p.exec_id.is_empty() {
            // An exec's process joins the container's cgroups while the shim sets it up: the
            // kernel's grace-period wait for that move starts now (the init's was at create).
            warmup::begin();
        }
        task.client.start(&p).await
    }

    pub async fn state(&self, ns: Namespace, p: ProcessRef) -> Result<ProcessState> {
        let task = self.get(&ns, &p.container_id)?;
        if let Some(d) = task.dead() {
            return Ok(ProcessState {
                container_id: p.container_id,
                exec_id: p.exec_id,
                pid: d.pid,
                status: Status::Stopped,
                exit_status: d.exit_status,
                exited_at: d.exited_at,
                ..Default::default()
            });
        }
        task.client.state(&p).await
    }

    /// Every task's state, asked of all their shims at once.
    pub async fn list(&self, ns: Namespace) -> Result<Vec<ProcessState>> {
        let mut ids = self.running(&ns);
        ids.sort();
        let states = futures::future::join_all(ids.iter().map(|id| {
            let ns = ns.clone();
            async move { (id, self.state(ns, init(id)).await) }
        }))
        .await;
        let mut out = vec![];
        for (id, s) in states {
            match s {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(id = %id, error = %e, "task state unavailable"),
            }
        }
        Ok(out)
    }

    /// Deletes a stopped task: the shim removes the container and goes; its bundle goes too.
    pub async fn delete(&self, ns: Namespace, id: String) -> Result<Exited> {
        let task = self.get(&ns, &id)?;
        let (exited, told) = match task.dead() {
            Some(d) => (d, false),
            None => self.delete_in_shim(&ns, &id, &task).await?,
        };
        // A shim that answered is told to go (the request is written at the first poll)
        // while its directories are moved aside.
        let shutdown = async {
            if told {
                task.client.shutdown(&id, false).await;
            }
        };
        tokio::join!(shutdown, self.unregister(&ns, &id, &task));
        self.leave_networks(&ns, &id).await;
        Ok(exited)
    }

    /// The shim deletes the task's init; true when the shim answered (it is then told to
    /// go). A shim that is gone is replaced by `<shim> delete`.
    async fn delete_in_shim(
        &self,
        ns: &Namespace,
        id: &str,
        task: &ShimTask,
    ) -> Result<(Exited, bool)> {
        task.deleting.store(true, Ordering::SeqCst);
        match task.client.delete(&init(id)).await {
            Ok(r) => Ok((r, true)),
            Err(e) if e.kind() == Kind::Unavailable => {
                Ok((self.shim_delete(ns, id, task).await?, false))
            }
            Err(e) => {
                task.deleting.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// A deleted task's container leaves its networks (if its exit did not already).
    async fn leave_networks(&self, ns: &Namespace, id: &str) {
        if let Some(n) = &self.networks {
            if let Err(e) = n.detach(ns.as_str(), id, None).await {
                tracing::warn!(namespace = %ns, id, error = %e, "cannot leave the networks");
            }
        }
    }

    pub async fn delete_process(&self, ns: Namespace, p: ProcessRef) -> Result<Exited> {
        if p.exec_id.is_empty() {
            return Err(Error::invalid(
                "exec id must be set; delete the task itself with Delete",
            ));
        }
        self.get(&ns, &p.container_id)?.client.delete(&p).await
    }

    pub async fn kill(&self, ns: Namespace, p: ProcessRef, signal: u32, all: bool) -> Result<()> {
        self.live(&ns, &p.container_id)?
            .client
            .kill(&p, signal, all)
            .await
    }

    pub async fn exec(&self, ns: Namespace, e: ExecProcess) -> Result<()> {
        if e.exec_id.is_empty() {
            return Err(Error::invalid("exec id must be set"));
        }
        self.get(&ns, &e.container_id)?.client.exec(e).await
    }

    pub async fn resize(&self, ns: Namespace, r: Resize) -> Result<()> {
        self.get(&ns, &r.process.container_id)?
            .client
            .resize(&r)
            .await
    }

    pub async fn close_stdin(&self, ns: Namespace, p: ProcessRef) -> Result<()> {
        self.get(&ns, &p.container_id)?.client.close_stdin(&p).await
    }

    pub async fn pause(&self, ns: Namespace, id: String) -> Result<()> {
        self.get(&ns, &id)?.client.pause(&id, true).await
    }

    pub async fn resume(&self, ns: Namespace, id: String) -> Result<()> {
        self.get(&ns, &id)?.client.pause(&id, false).await
    }

    pub async fn pids(&self, ns: Namespace, id: String) -> Result<Vec<ProcessInfo>> {
        self.get(&ns, &id)?.client.pids(&id).await
    }

    pub async fn update(&self, ns: Namespace, u: UpdateTask) -> Result<()> {
        self.get(&ns, &u.container_id)?.client.update(u).await
    }

    /// The task's metrics as the shim encodes them (containerd's cgroups v1/v2 Metrics).
    pub async fn stats(&self, ns: Namespace, id: String) -> Result<Option<AnyValue>> {
        self.get(&ns, &id)?.client.stats(&id).await
    }

    /// Waits for the process to exit; may take as long as the process runs.
    pub async fn wait(&self, ns: Namespace, p: ProcessRef) -> Result<Exited> {
        let task = self.get(&ns, &p.container_id)?;
        let mut dead_rx = task.dead_tx.subscribe();
        if let Some(d) = task.dead() {
            return Ok(d);
        }
        match task.client.wait(&p).await {
            Err(e) if e.kind() == Kind::Unavailable && p.exec_id.is_empty() => {
                // The shim died and took the task with it: report that once cleaned up.
                let _ = tokio::time::timeout(DEAD_SHIM_CLEANUP, dead_rx.wait_for(|d| *d)).await;
                task.dead().ok_or(e)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::filters::Filter;
    use crate::edge::shim::client::fake::{self, Mode};
    use crate::edge::shim::client::ShimClient;

    struct Fixture {
        dir: tempfile::TempDir,
        tasks: Tasks,
        events: Exchange,
        ns: Namespace,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(&dir.path().join("meta.redb")).unwrap();
        let events = Exchange::new();
        let snapshots = Snapshots::new(Default::default(), store.clone(), events.clone());
        let cfg = RuntimeConfig {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            address: dir.path().join("berthd.sock"),
        };
        let tasks = Tasks::new(
            cfg,
            store,
            snapshots,
            events.clone(),
            Arc::new(crate::edge::shim::TtrpcShims),
        );
        Fixture {
            dir,
            tasks,
            events,
            ns: Namespace::parse("default").unwrap(),
        }
    }

    /// Registers task `c1` on a fake shim behaving as `mode`.
    async fn task_on_fake_shim(f: &Fixture, mode: Mode) {
        let socket = f.dir.path().join("shim.sock");
        fake::serve(&socket, mode);
        let client: Box<dyn ShimApi> = Box::new(ShimClient::connect(&socket).await.unwrap());
        let bundle = f.dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        // A shim binary whose `delete` fails: the daemon falls back to its own report.
        let task = ShimTask::new(client, bundle, PathBuf::from("/bin/false"), None, None);
        f.tasks.register(&f.ns, "c1", task).unwrap();
    }

    async fn next_exit(
        sub: &mut crate::core::events::Subscription,
        within: Duration,
    ) -> Option<(u32, u32)> {
        loop {
            let env = tokio::time::timeout(within, sub.next()).await.ok()??;
            if let Event::TaskExit {
                pid, exit_status, ..
            } = env.event
            {
                return Some((pid, exit_status));
            }
        }
    }

    #[tokio::test]
    async fn a_dead_shim_reports_its_task_exited_once() {
        let f = fixture();
        let mut sub = f.events.subscribe(Filter::parse_all::<&str>(&[]).unwrap());
        task_on_fake_shim(&f, Mode::Die).await;
        let exit = next_exit(&mut sub, Duration::from_secs(5)).await;
        assert_eq!(exit, Some((0, KILLED_EXIT_STATUS)));
        assert_eq!(next_exit(&mut sub, Duration::from_millis(300)).await, None);

        let p = init("c1");
        let state = f.tasks.state(f.ns.clone(), p.clone()).await.unwrap();
        assert_eq!(
            (state.status, state.exit_status),
            (Status::Stopped, KILLED_EXIT_STATUS)
        );
        assert!(state.exited_at > 0);
        let waited = f.tasks.wait(f.ns.clone(), p.clone()).await.unwrap();
        assert_eq!(waited.exit_status, KILLED_EXIT_STATUS);
        assert!(f.tasks.kill(f.ns.clone(), p, 9, false).await.is_err());
        f.tasks.delete(f.ns.clone(), "c1".into()).await.unwrap();
        assert!(f.tasks.running(&f.ns).is_empty());
    }

    #[tokio::test]
    async fn a_deleted_task_is_not_reported_exited_by_its_closing_shim() {
        let f = fixture();
        let mut sub = f.events.subscribe(Filter::parse_all::<&str>(&[]).unwrap());
        task_on_fake_shim(&f, Mode::Serve).await;
        let state = f.tasks.state(f.ns.clone(), init("c1")).await.unwrap();
        assert_eq!((state.pid, state.status), (fake::PID, Status::Running));

        // The shim closes its connection on Shutdown, before the task leaves the table.
        let deleted = f.tasks.delete(f.ns.clone(), "c1".into()).await.unwrap();
        assert_eq!(deleted.pid, fake::PID);
        assert_eq!(next_exit(&mut sub, Duration::from_millis(500)).await, None);
        assert!(f.tasks.running(&f.ns).is_empty());
        let gone = f.tasks.state(f.ns.clone(), init("c1")).await.unwrap_err();
        assert_eq!(gone.kind(), Kind::NotFound);
    }
}
