//! The build cache's bound and its prune. A policy (`[build] cache_max_bytes`, optionally
//! `cache_max_age`) is enforced at start and after every build, and `builder prune` asks
//! for the same on demand; records go least recently used first (a hit or a write marks one
//! used), and one a running build has read or written is never taken.
//!
//! Nothing can be left half-removed: a record is one file, written whole (a rename) and
//! removed whole (an unlink). It names the layer and snapshot it found without holding them
//! (no lease, no GC label): the images built with them hold them, and they go to GC with the
//! last of those images. So dropping a record releases nothing, and a record whose layer is
//! gone is only a miss (`builder prune` without `-a` drops exactly those).

use super::Builder;
use crate::core::error::{blocking, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// `[build] cache_max_bytes` when unset: records are ~4 KiB on disk each (one block), so
/// this keeps about four thousand RUN steps and images — far more than one project's
/// Dockerfiles reuse — while a stream of builds with changing args stops growing at it.
/// (BuildKit keeps 10% of the disk because its cache holds the layers themselves; berth's
/// records only name layers images hold.)
pub const DEFAULT_MAX_BYTES: u64 = 16 << 20;

/// How big and how old the cache may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Bytes the cache directory may take as `du` counts them (directories included).
    pub max_bytes: u64,
    /// Records unused for longer go; None: no age limit.
    pub max_age: Option<Duration>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: None,
        }
    }
}

/// What one prune removes (Docker's `builder prune` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Every record not in use; without it only records that can no longer hit (their
    /// layer or image is gone from the content store).
    pub all: bool,
    /// Stop once the cache takes at most this many bytes.
    pub keep_bytes: Option<u64>,
    /// Only records unused for at least this long.
    pub unused_for: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub records: u64,
    pub bytes: u64,
}

/// The records running builds have read or written, with how many builds hold each; the
/// policy and what prunes share with the builds.
#[derive(Clone, Default)]
pub struct CacheState {
    policy: Arc<Mutex<CachePolicy>>,
    held: Arc<Mutex<HashMap<PathBuf, usize>>>,
}

impl CacheState {
    pub fn set_policy(&self, policy: CachePolicy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    pub fn policy(&self) -> CachePolicy {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes `file` unless a build holds it; the check and the unlink under one lock, so
    /// a build either holds the record before it is checked or finds it gone (a miss).
    fn remove_unheld(&self, file: &Path) -> bool {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        !held.contains_key(file) && std::fs::remove_file(file).is_ok()
    }
}

/// The records one build holds until it ends.
pub(super) struct BuildHolds {
    state: CacheState,
    files: Mutex<Vec<PathBuf>>,
}

impl BuildHolds {
    pub fn new(state: &CacheState) -> Self {
        BuildHolds {
            state: state.clone(),
            files: Mutex::default(),
        }
    }

    /// Holds `file` for the rest of the build: call before reading or writing it.
    pub fn hold(&self, file: &Path) {
        let mut held = self
            .state
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *held.entry(file.to_path_buf()).or_default() += 1;
        drop(held);
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.push(file.to_path_buf());
    }
}

impl Drop for BuildHolds {
    fn drop(&mut self) {
        let files = std::mem::take(self.files.get_mut().unwrap_or_else(PoisonError::into_inner));
        let mut held = self
            .state
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for f in files {
            if let Some(n) = held.get_mut(&f) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&f);
                }
            }
        }
    }
}

/// One record on disk.
#[derive(Debug, Clone)]
struct Record {
    path: PathBuf,
    used: SystemTime,
    bytes: u64,
}

/// Every record under `root`, and the bytes `du` counts for the whole tree: one walk.
fn records_under(root: &Path) -> Result<(Vec<Record>, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dirs = super::usage::RECORD_DIRS.map(|sub| root.join(sub));
    let mut records = vec![];
    let total = super::usage::walk(root, |path, meta| {
        let in_record_dir = path.parent().is_some_and(|p| dirs.iter().any(|d| d == p));
        if in_record_dir && path.extension().is_some_and(|x| x == "json") {
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let bytes = meta.blocks() * 512;
            records.push(Record { path, used, bytes });
        }
    })?
    .bytes;
    Ok((records, total))
}

/// The records to remove, least recently used first: those `eligible` lets go, until
/// (with `keep_bytes`) the tree's `total` fits. Records held are never chosen.
fn choose(
    mut records: Vec<Record>,
    mut total: u64,
    keep_bytes: Option<u64>,
    eligible: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    records.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
    let mut chosen = vec![];
    for r in records {
        if keep_bytes.is_some_and(|k| total <= k) {
            break;
        }
        if eligible(&r) {
            total = total.saturating_sub(r.bytes);
            chosen.push(r);
        }
    }
    chosen
}

/// Whether the layer or image a record names can still be found (any namespace).
fn can_hit(builder: &Builder, r: &Record) -> bool {
    let Ok(bytes) = std::fs::read(&r.path) else {
        return false;
    };
    let Ok(rec) = serde_json::from_slice::<Value>(&bytes) else {
        return false;
    };
    let Some(digest) = rec["digest"].as_str() else {
        return false;
    };
    // An unreadable store is not proof the layer is gone: keep the record.
    builder.content.bytes_present_sync(digest).unwrap_or(true)
}

impl Builder {
    /// Removes what `opts` asks for, never a record a running build holds.
    pub async fn prune(&self, opts: PruneOptions) -> Result<PruneReport> {
        let this = self.clone();
        blocking(move || this.prune_sync(opts)).await
    }

    fn prune_sync(&self, opts: PruneOptions) -> Result<PruneReport> {
        let (records, total) = records_under(&self.root)?;
        let now = SystemTime::now();
        let old_enough = |r: &Record| {
            opts.unused_for
                .is_none_or(|d| now.duration_since(r.used).unwrap_or_default() >= d)
        };
        let chosen = choose(records, total, opts.keep_bytes, |r| {
            old_enough(r) && (opts.all || !can_hit(self, r))
        });
        let mut report = PruneReport::default();
        for r in chosen {
            if self.cache.remove_unheld(&r.path) {
                report.records += 1;
                report.bytes += r.bytes;
            }
        }
        if opts
            == (PruneOptions {
                all: true,
                ..Default::default()
            })
        {
            // Emptied: the directories go too (only if empty: a record written meanwhile
            // keeps its directory), so the cache takes nothing, as before the first build.
            for sub in super::usage::RECORD_DIRS {
                let _ = std::fs::remove_dir(self.root.join(sub));
            }
            let _ = std::fs::remove_dir(&self.root);
        }
        Ok(report)
    }

    /// Brings the cache within its policy: records older than `max_age`, then the least
    /// recently used until it fits in `max_bytes`. Logged, never failing a build.
    pub async fn enforce_cache_policy(&self) {
        let policy = self.cache.policy();
        let mut removed = PruneReport::default();
        let passes = [
            policy.max_age.map(|age| PruneOptions {
                all: true,
                keep_bytes: None,
                unused_for: Some(age),
            }),
            Some(PruneOptions {
                all: true,
                keep_bytes: Some(policy.max_bytes),
                unused_for: None,
            }),
        ];
        for opts in passes.into_iter().flatten() {
            match self.prune(opts).await {
                Ok(r) => {
                    removed.records += r.records;
                    removed.bytes += r.bytes;
                }
                Err(e) => tracing::warn!(error = %e, "build cache: cannot apply its policy"),
            }
        }
        if removed.records > 0 {
            tracing::info!(
                records = removed.records,
                bytes = removed.bytes,
                max_bytes = policy.max_bytes,
                "build cache: least recently used records removed"
            );
        }
    }

    /// At start: records half-written by a daemon killed mid-write go (nothing reads a
    /// `.tmp`), then the policy is applied.
    pub async fn start_cache(&self) {
        let root = self.root.clone();
        let _ = blocking(move || {
            for sub in super::usage::RECORD_DIRS {
                let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
                    continue;
                };
                for e in entries.flatten() {
                    if e.path().extension().is_some_and(|x| x == "tmp") {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            Ok(())
        })
        .await;
        self.enforce_cache_policy().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, day: u64, bytes: u64) -> Record {
        Record {
            path: PathBuf::from(name),
            used: SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * day),
            bytes,
        }
    }

    fn names(rs: &[Record]) -> Vec<String> {
        rs.iter().map(|r| r.path.display().to_string()).collect()
    }

    #[test]
    fn the_least_recently_used_go_until_the_cache_fits() {
        let rs = vec![
            record("c", 3, 4096),
            record("a", 1, 4096),
            record("d", 4, 4096),
            record("b", 2, 4096),
        ];
        // 4 records and a 4 KiB directory: 20 KiB; fitting 12 KiB takes the two oldest.
        assert_eq!(
            names(&choose(rs.clone(), 20480, Some(12288), |_| true)),
            ["a", "b"]
        );
        // Already within: nothing goes.
        assert!(choose(rs.clone(), 20480, Some(20480), |_| true).is_empty());
        // A record that may not go (held, too young) is stepped over, the next one taken.
        assert_eq!(
            names(&choose(rs.clone(), 20480, Some(16384), |r| r.path != Path::new("a"))),
            ["b"]
        );
        // No bound: everything eligible.
        assert_eq!(
            names(&choose(rs, 20480, None, |_| true)),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn a_held_record_is_not_removed_and_is_free_once_its_build_ends() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.json");
        std::fs::write(&f, "{}").unwrap();
        let state = CacheState::default();
        let holds = BuildHolds::new(&state);
        holds.hold(&f);
        let other = BuildHolds::new(&state);
        other.hold(&f);
        assert!(!state.remove_unheld(&f));
        drop(holds);
        assert!(!state.remove_unheld(&f), "the other build still holds it");
        drop(other);
        assert!(state.remove_unheld(&f));
        assert!(!f.exists());
    }
}
