//! Volumes core: directories under `<root>/io.berth.volumes.v1/<namespace>/<name>/_data`
//! whose life is independent of any container. A volume is in use while a container's spec
//! mounts it (derived from the container records, so it survives restarts). The directory
//! exists before its record commits and is removed after its record is deleted: a crash
//! leaves only orphan directories, which `cleanup` removes at start.

use crate::core::context::Namespace;
use crate::core::error::{blocking, Error, Kind, Result};
use crate::core::filters::{label_field, Fields, Filter};
use crate::core::metadata::volumes::VolumeRecord;
use crate::core::metadata::{now, validate_labels, Labels, MetadataStore};
use berth_snapshotters::layer::root::{clean, Root};
use berth_snapshotters::mount::TempMount;
use berth_snapshotters::Mount;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A volume with what is derived at read time.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeInfo {
    pub record: VolumeRecord,
    pub mountpoint: PathBuf,
    pub used_by: Vec<String>,
    /// Apparent bytes stored; -1 when not computed.
    pub usage: i64,
}

impl Fields for VolumeInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.record.name.clone()),
            Some("anonymous") => Some(self.record.anonymous.to_string()),
            Some("labels") => label_field(&self.record.labels, path),
            _ => None,
        }
    }
}

/// Where and what to copy into a new volume.
#[derive(Debug, Clone)]
pub struct Seed {
    pub mounts: Vec<Mount>,
    pub path: String,
}

#[derive(Clone)]
pub struct Volumes {
    store: MetadataStore,
    root: PathBuf,
}

/// docker's rule for volume names: a letter or digit, then letters, digits, `_.-`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "volume name {:?} is invalid: use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit",
            name.chars().take(64).collect::<String>()
        )))
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let c = context.into();
    move |e| Error::io(c, e)
}

/// Apparent size of everything below `dir`, not following symlinks.
fn usage(dir: &Path) -> i64 {
    let mut total = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.len() as i64;
            }
        }
    }
    total
}

/// The mount sources of a container spec (OCI runtime spec JSON).
fn spec_sources(spec: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(spec).unwrap_or_default();
    v["mounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["source"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Volumes {
    pub fn open(store: MetadataStore, root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(io(format!("create {}", root.display())))?;
        let v = Volumes {
            store,
            root: root.to_path_buf(),
        };
        v.cleanup()?;
        Ok(v)
    }

    fn dir(&self, ns: &Namespace, name: &str) -> PathBuf {
        self.root.join(ns.as_str()).join(name)
    }

    pub fn mountpoint(&self, ns: &Namespace, name: &str) -> PathBuf {
        self.dir(ns, name).join("_data")
    }

    /// Removes directories a crash left without a record.
    fn cleanup(&self) -> Result<()> {
        let Ok(namespaces) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for nsdir in namespaces.flatten() {
            let Ok(ns) = Namespace::parse(&nsdir.file_name().to_string_lossy()) else {
                continue;
            };
            let known: std::collections::HashSet<String> = self
                .store
                .volume_list(&ns)?
                .into_iter()
                .map(|v| v.name)
                .collect();
            for vol in std::fs::read_dir(nsdir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = vol.file_name().to_string_lossy().to_string();
                if !known.contains(&name) {
                    tracing::info!(namespace = %ns, volume = name, "removing an orphan volume directory");
                    let _ = std::fs::remove_dir_all(vol.path());
                }
            }
        }
        Ok(())
    }

    fn info(&self, ns: &Namespace, record: VolumeRecord, with_usage: bool) -> Result<VolumeInfo> {
        let mountpoint = self.mountpoint(ns, &record.name);
        let used_by = self.used_by(ns, &mountpoint)?;
        let usage = if with_usage { usage(&mountpoint) } else { -1 };
        Ok(VolumeInfo {
            record,
            mountpoint,
            used_by,
            usage,
        })
    }

    /// Containers of the namespace whose spec mounts `mountpoint` (or below it).
    fn used_by(&self, ns: &Namespace, mountpoint: &Path) -> Result<Vec<String>> {
        let mp = mountpoint.to_string_lossy().to_string();
        let below = format!("{mp}/");
        Ok(self
            .store
            .container_list(ns)?
            .into_iter()
            .filter(|c| {
                c.spec.as_ref().is_some_and(|s| {
                    spec_sources(&s.value)
                        .iter()
                        .any(|src| src == &mp || src.starts_with(&below))
                })
            })
            .map(|c| c.id)
            .collect())
    }

    pub async fn create(
        &self,
        ns: Namespace,
        name: String,
        labels: Labels,
        seed: Option<Seed>,
    ) -> Result<VolumeInfo> {
        let anonymous = name.is_empty();
        let name = if anonymous {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        } else {
            name
        };
        validate_name(&name)?;
        validate_labels(&labels)?;
        let this = self.clone();
        blocking(move || {
            if this.store.volume_get(&ns, &name).is_ok() {
                return Err(Error::already_exists(format!("volume {name:?}")));
            }
            let dir = this.dir(&ns, &name);
            if dir.exists() {
                // An orphan from a crash between mkdir and the record.
                std::fs::remove_dir_all(&dir).map_err(io("remove an orphan volume"))?;
            }
            let data = dir.join("_data");
            std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
            let record = VolumeRecord {
                name: name.clone(),
                labels,
                created_at: now(),
                anonymous,
            };
            let made = seed
                .map(|s| seed_volume(&s, &data))
                .unwrap_or(Ok(()))
                .and_then(|()| this.store.volume_create(&ns, &record));
            if let Err(e) = made {
                // Someone else's volume of that name must stay as it is.
                if e.kind() != Kind::AlreadyExists {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
            this.info(&ns, record, false)
        })
        .await
    }

    pub async fn get(&self, ns: Namespace, name: String, with_usage: bool) -> Result<VolumeInfo> {
        let this = self.clone();
        blocking(move || {
            let record = this.store.volume_get(&ns, &name)?;
            this.info(&ns, record, with_usage)
        })
        .await
    }

    pub async fn list(
        &self,
        ns: Namespace,
        filter: Filter,
        with_usage: bool,
    ) -> Result<Vec<VolumeInfo>> {
        let this = self.clone();
        blocking(move || {
            let mut out = vec![];
            for r in this.store.volume_list(&ns)? {
                let info = this.info(&ns, r, with_usage)?;
                if filter.matches(&info) {
                    out.push(info);
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn remove(&self, ns: Namespace, name: String, force: bool) -> Result<()> {
        let this = self.clone();
        blocking(move || this.remove_sync(&ns, &name, force).map(|_| ())).await
    }

    fn remove_sync(&self, ns: &Namespace, name: &str, force: bool) -> Result<i64> {
        let record = self.store.volume_get(ns, name)?;
        let info = self.info(ns, record, false)?;
        if !info.used_by.is_empty() && !force {
            return Err(Error::precondition(format!(
                "volume {name} is in use by container(s) {}; remove them first, or force",
                info.used_by.join(", ")
            )));
        }
        let size = usage(&info.mountpoint);
        self.store.volume_delete(ns, name)?;
        let dir = self.dir(ns, name);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(volume = name, error = %e, "volume removed, its directory not (cleaned at next start)");
            }
        }
        Ok(size)
    }

    /// Removes unused volumes: anonymous ones, or every one with `all`.
    pub async fn prune(&self, ns: Namespace, all: bool) -> Result<(Vec<String>, i64)> {
        let this = self.clone();
        blocking(move || {
            let mut removed = vec![];
            let mut reclaimed = 0;
            for r in this.store.volume_list(&ns)? {
                if !(all || r.anonymous) {
                    continue;
                }
                let info = this.info(&ns, r, false)?;
                if !info.used_by.is_empty() {
                    continue;
                }
                reclaimed += this.remove_sync(&ns, &info.record.name, false)?;
                removed.push(info.record.name);
            }
            Ok((removed, reclaimed))
        })
        .await
    }
}

/// Copies what `seed.path` holds inside the filesystem `seed.mounts` make up into `data`.
/// The path is resolved by the kernel inside that root (RESOLVE_IN_ROOT), so `..` and
/// symlinks cannot lead out of it; copied symlinks stay links.
fn seed_volume(seed: &Seed, data: &Path) -> Result<()> {
    let rel = clean(Path::new(&seed.path)).unwrap_or_default();
    let mounted = TempMount::new(&seed.mounts)?;
    let root = Root::open(mounted.path())?;
    let fd = match root.open_in(&rel, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) {
        Ok(fd) => fd,
        // Nothing there (or not a directory): the volume starts empty, as docker does.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(())
        }
        Err(e) => return Err(Error::io(format!("open {} in the image", seed.path), e)),
    };
    let src = format!("/proc/{}/fd/{}/.", std::process::id(), fd.as_raw_fd());
    let out = std::process::Command::new("cp")
        .args(["-a", "--no-dereference", &src])
        .arg(data)
        .output()
        .map_err(io("run cp"))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // cp speaks of a full disk in words only: the operator's to fix, not berth's fault.
        let kind = if why.contains("No space left on device") || why.contains("Disk quota exceeded")
        {
            Kind::ResourceExhausted
        } else {
            Kind::Internal
        };
        return Err(Error::new(
            kind,
            format!(
                "seeding the volume {} from {} failed: {why}",
                data.display(),
                seed.path,
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["data", "a1", "my_vol.v2-x", &"a".repeat(128)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", ".hidden", "a/b", "..", "a b", &"a".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spec_mount_sources() {
        let spec = br#"{"mounts":[{"destination":"/d","source":"/v/_data","type":"bind"},{"destination":"/proc","type":"proc"}]}"#;
        assert_eq!(spec_sources(spec), vec!["/v/_data".to_string()]);
        assert!(spec_sources(b"not json").is_empty());
    }
}
