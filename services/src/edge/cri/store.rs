//! The CRI's in-memory stores, one per kind of thing, each owning its map and its lock (as
//! containerd's CRI keeps a sandbox store, a container store and a name index): a verb takes
//! the store it needs and never holds another's lock.

use super::image::ImageInfo;
use super::logs::LogFile;
use super::new_id;
use crate::core::error::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Objects by id, found by id or unique id prefix; `what` names them in errors.
pub struct Store<T> {
    what: &'static str,
    items: Mutex<HashMap<String, T>>,
}

impl<T: Clone> Store<T> {
    pub fn new(what: &'static str) -> Self {
        Store {
            what,
            items: Mutex::default(),
        }
    }

    /// The object with id `id`, or the one whose id starts with `id`.
    pub fn get(&self, id: &str) -> Result<T> {
        let items = lock(&self.items);
        if let Some(v) = items.get(id) {
            return Ok(v.clone());
        }
        let found: Vec<&T> = if id.is_empty() {
            vec![]
        } else {
            items
                .iter()
                .filter(|(k, _)| k.starts_with(id))
                .map(|(_, v)| v)
                .collect()
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::not_found(format!("{} {id:?}", self.what))),
            _ => Err(Error::invalid(format!(
                "{} id prefix {id:?} is ambiguous",
                self.what
            ))),
        }
    }

    pub fn insert(&self, id: &str, v: T) {
        lock(&self.items).insert(id.to_string(), v);
    }

    pub fn remove(&self, id: &str) {
        lock(&self.items).remove(id);
    }

    /// Every object.
    pub fn all(&self) -> Vec<T> {
        lock(&self.items).values().cloned().collect()
    }

    /// Every object that `keep` accepts.
    pub fn filter(&self, keep: impl Fn(&T) -> bool) -> Vec<T> {
        lock(&self.items)
            .values()
            .filter(|v| keep(v))
            .cloned()
            .collect()
    }
}

/// Names in use (sandbox and container names share no space, containerd-style keys).
#[derive(Default)]
pub struct Names(Mutex<HashMap<String, String>>);

impl Names {
    /// Reserves `name` for a new sandbox or container (`what`); returns the new object's id.
    pub fn reserve(&self, what: &str, name: &str) -> Result<String> {
        let mut names = lock(&self.0);
        if let Some(other) = names.get(name) {
            return Err(Error::already_exists(format!(
                "{what} name {name:?} is reserved by {other}"
            )));
        }
        let id = new_id();
        names.insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// Records `name` as `id`'s (recovery).
    pub fn insert(&self, name: &str, id: &str) {
        lock(&self.0).insert(name.to_string(), id.to_string());
    }

    pub fn release(&self, name: &str) {
        lock(&self.0).remove(name);
    }
}

type Copiers = Vec<tokio::task::JoinHandle<()>>;

/// Log files (for rotation and attach) and copiers of running containers.
#[derive(Default)]
pub struct Logs(Mutex<HashMap<String, (LogFile, Copiers)>>);

impl Logs {
    pub fn insert(&self, id: &str, log: LogFile, copiers: Copiers) {
        lock(&self.0).insert(id.to_string(), (log, copiers));
    }

    /// The copiers of `id`, which no longer has a log here.
    pub fn remove(&self, id: &str) -> Option<Copiers> {
        lock(&self.0).remove(id).map(|(_, copiers)| copiers)
    }

    /// `f` of `id`'s log, if it has one.
    pub fn with<R>(&self, id: &str, f: impl FnOnce(&LogFile) -> R) -> Option<R> {
        lock(&self.0).get(id).map(|(log, _)| f(log))
    }
}

/// Containers whose cgroup reported an OOM kill.
#[derive(Default)]
pub struct OomKills(Mutex<HashSet<String>>);

impl OomKills {
    pub fn insert(&self, id: String) {
        lock(&self.0).insert(id);
    }

    /// Whether `id` was OOM-killed; forgets it.
    pub fn take(&self, id: &str) -> bool {
        lock(&self.0).remove(id)
    }
}

/// What each image target (a manifest or index digest) resolves to on this host.
#[derive(Default)]
pub struct Described(Mutex<HashMap<String, ImageInfo>>);

impl Described {
    pub fn get(&self, digest: &str) -> Option<ImageInfo> {
        lock(&self.0).get(digest).cloned()
    }

    pub fn insert(&self, digest: &str, info: ImageInfo) {
        lock(&self.0).insert(digest.to_string(), info);
    }

    /// Forgets the targets `keep` refuses.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.0).retain(|digest, _| keep(digest));
    }
}

/// Each image filesystem's (snapshotter's) last measured usage (when, bytes, inodes).
#[derive(Default)]
pub struct FsUsage(Mutex<HashMap<String, (Instant, u64, u64)>>);

impl FsUsage {
    pub fn get(&self, snapshotter: &str) -> Option<(Instant, u64, u64)> {
        lock(&self.0).get(snapshotter).copied()
    }

    pub fn set(&self, snapshotter: &str, bytes: u64, inodes: u64) {
        let measured = (Instant::now(), bytes, inodes);
        lock(&self.0).insert(snapshotter.to_string(), measured);
    }
}

/// The last CPU sample of each container (time, cumulative ns), for usage_nano_cores.
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

impl CpuSamples {
    /// Records `id`'s sample; returns the one before.
    pub fn replace(&self, id: &str, at: i64, cpu_ns: u64) -> Option<(i64, u64)> {
        lock(&self.0).insert(id.to_string(), (at, cpu_ns))
    }
}
